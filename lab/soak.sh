#!/usr/bin/env bash
# Soak: a bounded load at twice the upstream's capacity through Caddy with
# adaptive_throttle, for SOAK_SECONDS (default 300), sampling Caddy's RSS,
# goroutines and open file descriptors every 10 s. Passes when, after a
# 60 s warm-up, none grows by more than 10% over its value at the end of
# the warm-up. Writes results/soak.md.
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
	}
}
CF
XDG_DATA_HOME=$dir XDG_CONFIG_HOME=$dir ./caddy run --config "$dir/Caddyfile" --adapter caddyfile >"$dir/caddy.log" 2>&1 &
caddy=$!
pids+=($caddy)
for _ in $(seq 50); do curl -fsS "$admin/throttle/status" >/dev/null 2>&1 && break; sleep 0.2; done

# Twice the demo upstream's capacity (≈ 10.5 req/s), the usual priority mix.
"$dir/loadgen" -target "http://$site" -profile constant -base 21 -duration "${secs}s" -drain 30s >"$dir/loadgen.log" 2>&1 &
load=$!
pids+=($load)

sample() {
	local rss fds gor
	rss=$(awk '/^VmRSS/ {print $2}' /proc/$caddy/status)
	fds=$(ls /proc/$caddy/fd | wc -l)
	gor=$(curl -fsS "$admin/metrics" | awk '/^go_goroutines / {print $2}')
	echo "$1 $rss $gor $fds"
}
: >"$dir/samples"
for ((t = 10; t <= secs; t += 10)); do
	sleep 10
	sample $t >>"$dir/samples"
done
wait $load || true

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

verdict=$(awk -v warm=$warm '
	$1 == warm {r0 = $2; g0 = $3; f0 = $4}
	$1 > warm {if ($2 > rm) rm = $2; if ($3 > gm) gm = $3; if ($4 > fm) fm = $4}
	END {
		gr = (rm - r0) / r0; gg = (gm - g0) / g0; gf = (fm - f0) / f0
		printf "growth after warm-up: RSS %+.1f%%, goroutines %+.1f%%, fds %+.1f%%", 100*gr, 100*gg, 100*gf
		if (gr > 0.10 || gg > 0.10 || gf > 0.10) print " — FAIL (limit +10%)"; else print " — flat (limit +10%)"
	}' "$dir/samples")
echo >>"$out"
echo "$verdict" >>"$out"
cat "$out"
case "$verdict" in *FAIL*) exit 1 ;; esac
