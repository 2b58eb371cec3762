#!/usr/bin/env bash
# Soak: a bounded load at twice the upstream's capacity through Caddy with
# adaptive_throttle, for SOAK_SECONDS (default 300), sampling Caddy's RSS,
# goroutines and open file descriptors every 10 s. Passes when, after a
# 60 s warm-up, RSS grows by at most 10% (its trend, fitted by least
# squares, and its peak against the end of the warm-up), and goroutines and
# descriptors, idle again after the load, are within 10% of their idle
# values before it. Under load those two follow the connections in flight,
# which come and go with the queue; their trends are shown, not judged: a
# leak of one per request (thousands here) could not hide in the idle
# comparison. Writes results/soak.md.
#
#   lab/soak.sh                      5 minutes
#   SOAK_SECONDS=60 lab/soak.sh      a quick look (warm-up 20 s)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SOAK_SECONDS:-300}
warm=$(( secs >= 120 ? 60 : secs / 3 ))
out=${SOAK_OUT:-results/soak.md}
dir=$(mktemp -d /tmp/adaptivethrottle-soak-XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

[ -x ./caddy ] || ./xcaddy-build.sh
go build -o "$dir/llmsim" ./cmd/llmsim
go build -o "$dir/loadgen" ./cmd/loadgen

up=127.0.0.1:18900 site=127.0.0.1:18901 admin=localhost:18902
"$dir/llmsim" -listen $up >"$dir/llmsim.log" 2>&1 &
pids+=($!)
cat >"$dir/Caddyfile" <<CF
{
	admin $admin
	persist_config off
	auto_https off
}
http://$site {
	adaptive_throttle {
		gpu {
			source prometheus http://$up/metrics
		}
	}
	reverse_proxy $up {
		flush_interval -1
		# Idle upstream connections close after 5 s, so that the idle
		# comparison after the load is not counting Caddy's pool.
		transport http {
			keepalive 5s
		}
	}
}
CF
XDG_DATA_HOME=$dir XDG_CONFIG_HOME=$dir ./caddy run --config "$dir/Caddyfile" --adapter caddyfile >"$dir/caddy.log" 2>&1 &
caddy=$!
pids+=($caddy)
for _ in $(seq 50); do curl -fsS "$admin/throttle/status" >/dev/null 2>&1 && break; sleep 0.2; done

sample() {
	local rss fds gor
	rss=$(awk '/^VmRSS/ {print $2}' /proc/$caddy/status)
	fds=$(ls /proc/$caddy/fd | wc -l)
	gor=$(curl -fsS "$admin/metrics" | awk '/^go_goroutines / {print $2}')
	echo "$1 $rss $gor $fds"
}
sleep 2
idle0=$(sample 0)

# Twice the demo upstream's capacity (≈ 10.5 req/s), the usual priority mix.
"$dir/loadgen" -target "http://$site" -profile constant -base 21 -duration "${secs}s" -drain 30s >"$dir/loadgen.log" 2>&1 &
load=$!
pids+=($load)

: >"$dir/samples"
for ((t = 10; t <= secs; t += 10)); do
	sleep 10
	sample $t >>"$dir/samples"
done
wait $load || true
sleep 8 # the upstream pool's keepalive, and a little
idle1=$(sample 0)

{
	echo "## Soak: $secs s at 2× the upstream's capacity (21 req/s) through Caddy + adaptive_throttle"
	echo
	echo "$(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(go version | awk '{print $3}'); warm-up ${warm} s; sampled every 10 s."
	echo
	echo "| t (s) | RSS (MiB) | goroutines | open fds |"
	echo "|--:|--:|--:|--:|"
	awk '{printf "| %d | %.1f | %d | %d |\n", $1, $2/1024, $3, $4}' "$dir/samples"
	echo
	grep -E "^ +(high|medium|low|all) " "$dir/loadgen.log" | sed 's/^/    /'
} >"$out"

verdict=$(awk -v warm=$warm -v idle0="$idle0" -v idle1="$idle1" '
	$1 == warm {r0 = $2}
	$1 > warm {
		n++; sx += $1; sxx += $1*$1; if (!t0) t0 = $1; t1 = $1
		for (i = 2; i <= 4; i++) {sy[i] += $i; sxy[i] += $1*$i}
		if ($2 > rm) rm = $2
	}
	END {
		for (i = 2; i <= 4; i++) trend[i] = (n*sxy[i] - sx*sy[i]) / (n*sxx - sx*sx) * (t1 - t0) / (sy[i]/n)
		peak = (rm - r0) / r0
		split(idle0, a, " "); split(idle1, b, " ")
		ig = (b[3] - a[3]) / a[3]; iff = (b[4] - a[4]) / a[4]
		printf "after warm-up: RSS trend %+.1f%%, peak %+.1f%% over the end of warm-up", 100*trend[2], 100*peak
		printf " (goroutines trend %+.1f%%, fds %+.1f%%: they follow the connections in flight)\n", 100*trend[3], 100*trend[4]
		printf "idle before → after the load: goroutines %d → %d (%+.1f%%), fds %d → %d (%+.1f%%), RSS %.1f → %.1f MiB\n", a[3], b[3], 100*ig, a[4], b[4], 100*iff, a[2]/1024, b[2]/1024
		if (trend[2] > 0.10 || peak > 0.10 || ig > 0.10 || iff > 0.10) print "FAIL (limit +10%)"; else print "flat (limit +10%)"
	}' "$dir/samples")
{ echo; echo '```'; echo "$verdict"; echo '```'; } >>"$out"
cat "$out"
case "$verdict" in *FAIL*) exit 1 ;; esac
