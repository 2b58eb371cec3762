#!/usr/bin/env bash
# The main job: builds Caddy with adaptive_throttle (xcaddy) and the demo
# upstream, then serves Caddyfile.example on 127.0.0.1:8080 in front of
# llmsim on 127.0.0.1:8000, with an nvidia-smi stand-in fed by llmsim so the
# GPU level works on a machine without a GPU. Both listen on the loopback
# interface only. Ctrl-C, or a TERM to this script (kill PID), stops
# everything within a few seconds. If Caddy or llmsim cannot start (a port
# taken, a bad Caddyfile), it says why and exits non-zero.
#
#   DEMO_LOAD=1 ./run.sh   also drives load with cmd/loadgen for 88 s, a line
#                          a second: 33 s calm at 5 req/s (the QPS level
#                          learns its baseline for 30 s first), 20 s at
#                          30 req/s (3× what llmsim serves), 35 s calm again
#                          to show the recovery; then a table, and it stops.
#
# Logs: .tmp/caddy.log and .tmp/llmsim.log. Caddy's storage, where the
# module keeps what it learned across restarts, is this checkout's own:
# .tmp/data/caddy (rm -rf .tmp/data to start clean).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p .tmp
export XDG_DATA_HOME="$PWD/.tmp/data" XDG_CONFIG_HOME="$PWD/.tmp/config"
export PATH="$PWD/demo:$(go env GOPATH)/bin:$PATH"   # demo/nvidia-smi first on PATH
export LLMSIM_SMI_FILE="$PWD/.tmp/llmsim-nvidia-smi.csv"

[ -x ./caddy ] && [ -z "${REBUILD:-}" ] || ./xcaddy-build.sh
go build -o .tmp/llmsim ./cmd/llmsim
[ -z "${DEMO_LOAD:-}" ] || go build -o .tmp/loadgen ./cmd/loadgen

pids=""   # what this script started, stopped on exit; also in .tmp/run.pids
started() { pids="$pids $1"; echo "$pids" >.tmp/run.pids; }
cleanup() {
	local rc=$? alive="" p a
	trap - EXIT
	trap '' INT TERM   # a second Ctrl-C must not cut the cleanup short
	for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
	if [ -n "$alive" ]; then
		kill -TERM $alive 2>/dev/null || true
		for _ in $(seq 30); do   # 3 s to stop cleanly, then KILL
			p=""
			for a in $alive; do kill -0 "$a" 2>/dev/null && p=1; done
			[ -z "$p" ] && break
			sleep 0.1
		done
		kill -KILL $alive 2>/dev/null || true
	fi
	wait 2>/dev/null || true
	rm -f .tmp/run.pids
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# fail NAME PID LOG WHY: report that NAME did not start, with the error
# lines of its log (all of its last lines when none is marked as an error).
fail() {
	local name=$1 pid=$2 log=$3 why=$4 errs
	echo >&2
	echo "run.sh: $name $why:" >&2
	errs=$(grep -E '"level":"(error|fatal)"|^Error|^'"$name"': ' "$log" | grep -v ' listening on http://' |
		sed -E 's/.*"msg":"(([^"\\]|\\.)*)".*/\1/' | tail -n 5 || true)
	[ -n "$errs" ] || errs=$(tail -n 5 "$log")
	printf '%s\n' "$errs" | sed 's/^/    /' >&2
	echo "  (full log: $log)" >&2
	exit 1
}

# await NAME PID LOG READY: wait until LOG shows the line READY (NAME has
# bound its ports), or fail if NAME exits first or takes over 15 s.
await() {
	local name=$1 pid=$2 log=$3 ready=$4 rc
	for _ in $(seq 150); do
		grep -q "$ready" "$log" && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			rc=0; wait "$pid" || rc=$?
			fail "$name" "$pid" "$log" "failed to start (exit $rc)"
		fi
		sleep 0.1
	done
	fail "$name" "$pid" "$log" "did not start within 15 s"
}

.tmp/llmsim -listen 127.0.0.1:8000 -smi-file "$LLMSIM_SMI_FILE" >.tmp/llmsim.log 2>&1 &
llmsim=$!
started "$llmsim"
await llmsim "$llmsim" .tmp/llmsim.log "listening on http://"

./caddy run --config Caddyfile.example --adapter caddyfile >.tmp/caddy.log 2>&1 &
caddy=$!
started "$caddy"
await Caddy "$caddy" .tmp/caddy.log '"msg":"serving initial configuration"'

cat <<MSG

adaptive_throttle is up: Caddy on http://127.0.0.1:8080/v1/ -> llmsim on 127.0.0.1:8000
  curl -s 127.0.0.1:8080/v1/chat/completions -H 'X-Priority: low' \\
       -d '{"model":"demo-llm","messages":[{"role":"user","content":"hi"}]}'
  curl -s localhost:2019/throttle/status | jq .
Logs: .tmp/caddy.log, .tmp/llmsim.log. Stop: Ctrl-C, or kill $$.
Learned state: .tmp/data/caddy/adaptive_throttle/ (rm -rf .tmp/data to start clean).
MSG

if [ -n "${DEMO_LOAD:-}" ]; then
	cat <<'MSG'

Load for 88 s: 33 s calm at 5 req/s (the QPS level learns its baseline for
30 s), 20 s at 30 req/s (3× what llmsim serves), 35 s calm. X-Priority: 10%
high, 30% medium, 60% low. A line a second: requests sent, passed and shed by
the gateway (high/medium/low), failed answers, llmsim's queue, the gateway.

MSG
	.tmp/loadgen -target http://127.0.0.1:8080 -profile step -base 5 -peak 30 \
		-duration 88s -step-at 33s -step-for 20s -drain 10s \
		-throttle-status http://localhost:2019/throttle/status -upstream http://127.0.0.1:8000 -live &
	loadgen=$!
	started "$loadgen"
	rc=0; wait "$loadgen" || rc=$?
	exit "$rc"
fi

# Serve until stopped; if Caddy or llmsim dies on its own, say so.
while :; do
	for p in $caddy $llmsim; do
		if ! kill -0 "$p" 2>/dev/null; then
			rc=0; wait "$p" || rc=$?
			if [ "$p" = "$caddy" ]; then n=Caddy l=.tmp/caddy.log; else n=llmsim l=.tmp/llmsim.log; fi
			fail "$n" "$p" "$l" "exited (status $rc)"
		fi
	done
	sleep 1 &
	wait $! || true
done
