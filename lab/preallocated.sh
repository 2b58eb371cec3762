#!/usr/bin/env bash
# A GPU host whose server reserves its memory at start, as vLLM does: llmsim
# with 72 GiB of its 80 GiB taken before the first request (90% flat), read
# through demo/nvidia-smi, behind the module at its defaults (one line in
# the Caddyfile). Plays each load of LOADS (× llmsim's capacity) for
# DURATION with ARRIVALS (uniform or poisson), then prints the module's
# refusals by cause and what its GPU level said.
#
#   lab/preallocated.sh                    # 0.3× and 0.9×, uniform, 60 s each
#   ARRIVALS=poisson lab/preallocated.sh
#
# Needs ./caddy (./xcaddy-build.sh). Listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
LOADS=${LOADS:-"0.3 0.9"}
DURATION=${DURATION:-60s}
ARRIVALS=${ARRIVALS:-uniform}
PORT=${PORT:-19180}
SIM_PORT=${SIM_PORT:-19181}
ADMIN_PORT=${ADMIN_PORT:-19299}
[ -x ./caddy ] || { echo "preallocated.sh: ./caddy not found: run ./xcaddy-build.sh" >&2; exit 1; }
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
go build -o "$tmp/llmsim" ./cmd/llmsim
go build -o "$tmp/loadgen" ./cmd/loadgen
export LLMSIM_SMI_FILE="$tmp/smi.csv"
export PATH="$PWD/demo:$PATH"
cat >"$tmp/Caddyfile" <<EOF
{
	admin 127.0.0.1:$ADMIN_PORT
	persist_config off
	auto_https off
}
http://127.0.0.1:$PORT {
	bind 127.0.0.1
	adaptive_throttle {
		persist off
	}
	reverse_proxy 127.0.0.1:$SIM_PORT {
		flush_interval -1
	}
}
EOF
for load in $LOADS; do
	"$tmp/llmsim" -listen "127.0.0.1:$SIM_PORT" -smi-file "$LLMSIM_SMI_FILE" -base-mem 72GiB >"$tmp/llmsim.log" 2>&1 &
	sim=$!
	pids+=("$sim")
	XDG_DATA_HOME="$tmp/xdg" XDG_CONFIG_HOME="$tmp/xdg" ./caddy run --config "$tmp/Caddyfile" >"$tmp/caddy.log" 2>&1 &
	cad=$!
	pids+=("$cad")
	for _ in $(seq 100); do
		grep -q 'capacity ≈' "$tmp/llmsim.log" 2>/dev/null &&
			curl -fsS "http://127.0.0.1:$ADMIN_PORT/throttle/status" >/dev/null 2>&1 && break
		sleep 0.1
	done
	# The capacity llmsim states when it starts, at its default answer length.
	capacity=$(sed -n 's/.*capacity ≈ \([0-9.]*\) req\/s.*/\1/p' "$tmp/llmsim.log" | head -1)
	rate=$(awk -v c="$capacity" -v l="$load" 'BEGIN { printf "%.2f", c * l }')
	echo "== ${load}× capacity ($rate req/s), $ARRIVALS arrivals, $DURATION"
	"$tmp/loadgen" -target "http://127.0.0.1:$PORT" -base "$rate" -duration "$DURATION" -arrivals "$ARRIVALS" -json "$tmp/load.json" 2>&1 | grep -E '^ +(priority|high|medium|low|all) '
	curl -fsS "http://127.0.0.1:$ADMIN_PORT/throttle/status" | python3 -c '
import json, sys
i = json.load(sys.stdin)["instances"][0]
g = i["levels"]["gpu"]
print("refused by cause:", json.dumps(i["shed"]))
print("gpu: %.1f%% (threshold %.1f%%), tripped %s, transitions %d" % (100 * g["value"], 100 * g["threshold"], g["tripped"], g["transitions"]))
print("gpu note:", g.get("note", ""))'
	kill "$cad" "$sim" 2>/dev/null || true
	wait "$cad" "$sim" 2>/dev/null || true
done
