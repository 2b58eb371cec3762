#!/usr/bin/env bash
# End-to-end overhead of adaptive_throttle on loopback: wrk against two
# Caddy processes (same binary) in front of the same trivial upstream
# (llmsim's /health: 200, empty body, no work) — one with a plain
# reverse_proxy, one with `adaptive_throttle` (all defaults) before it —
# alternating runs so that drift on a shared machine hits both alike.
# Reports, per round and as the median of rounds, requests/s, the ratio
# (module / plain) and the P99 difference. A second pass with one
# connection (LAT_DUR each) measures latency where the CPUs are not
# saturated: at 32 connections on a small machine P99 is mostly time spent
# waiting for a CPU, which hides a difference of tens of µs. About 3 minutes.
#
#   lab/overhead.sh                      # ROUNDS=5 DUR=10s THREADS=2 CONNS=32 LAT_DUR=5s
#   CADDY=… LLMSIM=… OUT=results/overhead.md lab/overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DUR=${DUR:-10s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
LAT_DUR=${LAT_DUR:-5s}
OUT=${OUT:-results/overhead.md}
UP_PORT=${UP_PORT:-18700}
PLAIN_PORT=${PLAIN_PORT:-18701}
ADAPT_PORT=${ADAPT_PORT:-18702}
PLAIN_ADMIN=${PLAIN_ADMIN:-18711}
ADAPT_ADMIN=${ADAPT_ADMIN:-18712}

if ! command -v wrk >/dev/null; then
	echo "overhead: installing wrk (Debian package)" >&2
	apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

CADDY=${CADDY:-./caddy}
[ -x "$CADDY" ] || ./xcaddy-build.sh
if [ -z "${LLMSIM:-}" ]; then
	go build -o "$tmp/llmsim" ./cmd/llmsim
	LLMSIM=$tmp/llmsim
fi

for p in $UP_PORT $PLAIN_PORT $ADAPT_PORT $PLAIN_ADMIN $ADAPT_ADMIN; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		echo "overhead: port $p is in use; set UP_PORT/PLAIN_PORT/ADAPT_PORT/PLAIN_ADMIN/ADAPT_ADMIN" >&2
		exit 1
	fi
done

caddyfile() { # name admin-port site-port extra-directive
	cat >"$tmp/$1.Caddyfile" <<EOF
{
	admin 127.0.0.1:$2
	persist_config off
	auto_https off
}
http://127.0.0.1:$3 {
	bind 127.0.0.1
	$4
	reverse_proxy 127.0.0.1:$UP_PORT
}
EOF
}
caddyfile plain "$PLAIN_ADMIN" "$PLAIN_PORT" ""
caddyfile adaptive "$ADAPT_ADMIN" "$ADAPT_PORT" "adaptive_throttle"

"$LLMSIM" -listen "127.0.0.1:$UP_PORT" >"$tmp/llmsim.log" 2>&1 &
pids+=($!)
export XDG_DATA_HOME=$tmp/xdg XDG_CONFIG_HOME=$tmp/xdg
"$CADDY" run --config "$tmp/plain.Caddyfile" --adapter caddyfile >"$tmp/plain.log" 2>&1 &
pids+=($!)
"$CADDY" run --config "$tmp/adaptive.Caddyfile" --adapter caddyfile >"$tmp/adaptive.log" 2>&1 &
pids+=($!)

ready() {
	for _ in $(seq 100); do
		curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "overhead: $1 not ready" >&2
	cat "$tmp"/*.log >&2
	exit 1
}
ready "http://127.0.0.1:$UP_PORT/health"
ready "http://127.0.0.1:$PLAIN_PORT/health"
ready "http://127.0.0.1:$ADAPT_PORT/health"
ready "http://127.0.0.1:$ADAPT_ADMIN/throttle/status"

# bench DURATION URL [THREADS CONNS] → "rps p50_us p99_us non2xx"
bench() {
	local out rps p50 p99 non2xx
	out=$(wrk -t"${3:-$THREADS}" -c"${4:-$CONNS}" -d"$1" --latency "$2/health")
	rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
	p50=$(pct_us 50% <<<"$out")
	p99=$(pct_us 99% <<<"$out")
	non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
	echo "$rps ${p50:-0} ${p99:-0} ${non2xx:-0}"
}

# pct_us LABEL: wrk's latency distribution line LABEL, in µs.
pct_us() {
	awk -v want="$1" '$1 == want {v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
		m = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1000000 : 0; print v * m}'
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo "overhead: warm-up (3 s each)" >&2
bench 3s "http://127.0.0.1:$PLAIN_PORT" >/dev/null
bench 3s "http://127.0.0.1:$ADAPT_PORT" >/dev/null

rows=()
ratios=() diffs=() prps=() arps=() pp99=() ap99=()
for i in $(seq "$ROUNDS"); do
	# Alternate which goes first, so neither always runs on a warmer machine.
	if ((i % 2)); then
		read -r p_rps _ p_p99 p_bad < <(bench "$DUR" "http://127.0.0.1:$PLAIN_PORT")
		read -r a_rps _ a_p99 a_bad < <(bench "$DUR" "http://127.0.0.1:$ADAPT_PORT")
	else
		read -r a_rps _ a_p99 a_bad < <(bench "$DUR" "http://127.0.0.1:$ADAPT_PORT")
		read -r p_rps _ p_p99 p_bad < <(bench "$DUR" "http://127.0.0.1:$PLAIN_PORT")
	fi
	ratio=$(awk -v a="$a_rps" -v p="$p_rps" 'BEGIN {printf "%.3f", a / p}')
	diff=$(awk -v a="$a_p99" -v p="$p_p99" 'BEGIN {printf "%.0f", a - p}')
	echo "overhead: round $i: plain $p_rps req/s p99 ${p_p99}µs | module $a_rps req/s p99 ${a_p99}µs | ratio $ratio, p99 +${diff}µs" >&2
	rows+=("| $i | $p_rps | $a_rps | $ratio | $p_p99 | $a_p99 | $diff | $p_bad / $a_bad |")
	ratios+=("$ratio") diffs+=("$diff") prps+=("$p_rps") arps+=("$a_rps") pp99+=("$p_p99") ap99+=("$a_p99")
done

# Latency pass: one connection, so that a request never waits for a CPU
# behind the others.
lrows=()
ldiffs=() ld50=() lpp99=() lap99=() lpp50=() lap50=()
for i in $(seq "$ROUNDS"); do
	if ((i % 2)); then
		read -r _ p_p50 p_p99 p_bad < <(bench "$LAT_DUR" "http://127.0.0.1:$PLAIN_PORT" 1 1)
		read -r _ a_p50 a_p99 a_bad < <(bench "$LAT_DUR" "http://127.0.0.1:$ADAPT_PORT" 1 1)
	else
		read -r _ a_p50 a_p99 a_bad < <(bench "$LAT_DUR" "http://127.0.0.1:$ADAPT_PORT" 1 1)
		read -r _ p_p50 p_p99 p_bad < <(bench "$LAT_DUR" "http://127.0.0.1:$PLAIN_PORT" 1 1)
	fi
	d50=$(awk -v a="$a_p50" -v p="$p_p50" 'BEGIN {printf "%.0f", a - p}')
	d99=$(awk -v a="$a_p99" -v p="$p_p99" 'BEGIN {printf "%.0f", a - p}')
	echo "overhead: latency round $i (1 connection): p50 ${p_p50}/${a_p50}µs, p99 ${p_p99}/${a_p99}µs (plain/module)" >&2
	lrows+=("| $i | $p_p50 | $a_p50 | $d50 | $p_p99 | $a_p99 | $d99 | $p_bad / $a_bad |")
	ld50+=("$d50") ldiffs+=("$d99") lpp50+=("$p_p50") lap50+=("$a_p50") lpp99+=("$p_p99") lap99+=("$a_p99")
done

m_ratio=$(printf '%s\n' "${ratios[@]}" | median)
m_diff=$(printf '%s\n' "${diffs[@]}" | median)
m_prps=$(printf '%s\n' "${prps[@]}" | median)
m_arps=$(printf '%s\n' "${arps[@]}" | median)
m_pp99=$(printf '%s\n' "${pp99[@]}" | median)
m_ap99=$(printf '%s\n' "${ap99[@]}" | median)
ml_d50=$(printf '%s\n' "${ld50[@]}" | median)
ml_d99=$(printf '%s\n' "${ldiffs[@]}" | median)
ml_pp50=$(printf '%s\n' "${lpp50[@]}" | median)
ml_ap50=$(printf '%s\n' "${lap50[@]}" | median)
ml_pp99=$(printf '%s\n' "${lpp99[@]}" | median)
ml_ap99=$(printf '%s\n' "${lap99[@]}" | median)
status=$(curl -fsS "http://127.0.0.1:$ADAPT_ADMIN/throttle/status" | tr -d '\n' | grep -o '"shed":{[^}]*}' || true)

mkdir -p "$(dirname "$OUT")"
{
	echo "## End-to-end overhead (wrk, loopback)"
	echo
	echo "wrk -t$THREADS -c$CONNS -d$DUR --latency, $ROUNDS rounds alternating (odd rounds plain first), after a 3 s warm-up each;"
	echo "upstream: llmsim /health (200, empty body). Same Caddy binary; the module's Caddyfile adds only \`adaptive_throttle\`."
	echo "$(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(go version | awk '{print $3}'), $(wrk --version 2>&1 | head -1 | awk '{print $1, $2}'); wrk, Caddy ×2 and the upstream share the CPUs."
	echo
	echo "| round | plain req/s | module req/s | ratio | plain p99 µs | module p99 µs | p99 added µs | non-2xx plain / module |"
	echo "|--:|--:|--:|--:|--:|--:|--:|--:|"
	printf '%s\n' "${rows[@]}"
	echo "| **median** | **$m_prps** | **$m_arps** | **$m_ratio** | **$m_pp99** | **$m_ap99** | **$m_diff** | |"
	echo
	echo "Median of per-round ratios: **$m_ratio** (target ≥ 0.97); median of per-round P99 differences: **${m_diff} µs** (target ≤ 50 µs)."
	echo
	echo "Latency with one connection (wrk -t1 -c1 -d$LAT_DUR --latency), $ROUNDS rounds alternating:"
	echo
	echo "| round | plain p50 µs | module p50 µs | p50 added µs | plain p99 µs | module p99 µs | p99 added µs | non-2xx plain / module |"
	echo "|--:|--:|--:|--:|--:|--:|--:|--:|"
	printf '%s\n' "${lrows[@]}"
	echo "| **median** | **$ml_pp50** | **$ml_ap50** | **$ml_d50** | **$ml_pp99** | **$ml_ap99** | **$ml_d99** | |"
	echo
	echo "Median of per-round differences with one connection: p50 **${ml_d50} µs**, P99 **${ml_d99} µs** (target ≤ 50 µs)."
	echo "Module refusals by cause at the end (/throttle/status): \`${status:-unavailable}\`."
} >"$OUT"
cat "$OUT"
