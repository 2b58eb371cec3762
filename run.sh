#!/usr/bin/env bash
# The main job: builds Caddy with adaptive_throttle (xcaddy) and the demo
# upstream, then serves Caddyfile.example on :8080 in front of llmsim on
# 127.0.0.1:8000, with an nvidia-smi stand-in fed by llmsim so the GPU level
# works on a machine without a GPU. Ctrl-C stops both.
#
#   DEMO_LOAD=1 ./run.sh   also drives a 3× overload for 40 s so you can
#                          watch the module shed (see README).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p .tmp
export PATH="$PWD/demo:$(go env GOPATH)/bin:$PATH"   # demo/nvidia-smi first on PATH
export LLMSIM_SMI_FILE="$PWD/.tmp/llmsim-nvidia-smi.csv"

[ -x ./caddy ] && [ -z "${REBUILD:-}" ] || ./xcaddy-build.sh
go build -o .tmp/llmsim ./cmd/llmsim

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

.tmp/llmsim -listen 127.0.0.1:8000 -smi-file "$LLMSIM_SMI_FILE" &
pids+=($!)
./caddy run --config Caddyfile.example --adapter caddyfile &
pids+=($!)

for _ in $(seq 50); do
	curl -fsS localhost:2019/throttle/status >/dev/null 2>&1 && break
	sleep 0.2
done
cat <<'MSG'

adaptive_throttle is up: Caddy on http://localhost:8080 -> llmsim on 127.0.0.1:8000
  curl -s localhost:8080/v1/chat/completions -H 'X-Priority: low' \
       -d '{"model":"demo-llm","messages":[{"role":"user","content":"hi"}]}'
  curl -s localhost:2019/throttle/status | jq .
MSG
if [ -n "${DEMO_LOAD:-}" ]; then
	go run ./cmd/loadgen -target http://localhost:8080 -profile step -base 5 -peak 30 -duration 60s -step-at 10s -step-for 40s
fi
wait
