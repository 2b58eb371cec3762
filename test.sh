#!/usr/bin/env bash
# The test command (README): formatting, vet and staticcheck (with and
# without cgo), the xcaddy build, the race-enabled suite — unit tests, a real Caddy in-process
# (caddytest) and the xcaddy binary, in front of real upstreams on
# 127.0.0.1 — the suite again built without cgo, and a smoke of the lab.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="/usr/local/go/bin:$PATH"
export PATH="$(go env GOPATH)/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

# skipped prints a line for each part of the suite this machine cannot run,
# which the suite then skips: the dashboard's queries against a real
# Prometheus (tests/prometheus_test.go) need prometheus and promtool on
# PATH, unless ADAPTIVE_THROTTLE_REQUIRE_PROMETHEUS makes their absence a
# failure. `./test.sh --skips` prints them and runs nothing.
skipped() {
	local missing="" b
	[ -z "${ADAPTIVE_THROTTLE_REQUIRE_PROMETHEUS:-}" ] || return 0
	for b in prometheus promtool; do
		command -v "$b" >/dev/null || missing="$missing $b"
	done
	[ -z "$missing" ] || echo "skipped: the dashboard's queries against a real Prometheus (tests/prometheus_test.go):$missing not on PATH (Debian: apt-get install prometheus)"
}
if [ "${1:-}" = --skips ]; then
	skipped
	exit 0
fi
skips=$(skipped)
[ -z "$skips" ] || printf '%s\n' "$skips"

step gofmt
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

step "go vet (cgo and CGO_ENABLED=0)"
go vet ./...
CGO_ENABLED=0 go vet ./...

step "staticcheck (cgo and CGO_ENABLED=0)"
STATICCHECK_VERSION=v0.8.2 # honnef.co/go/tools, pinned
if ! command -v staticcheck >/dev/null || ! staticcheck -version 2>/dev/null | grep -q "${STATICCHECK_VERSION#v}"; then
	go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"
fi
staticcheck ./...
CGO_ENABLED=0 staticcheck ./...

step "xcaddy build"
./xcaddy-build.sh

step "go test -race ./..."
CADDY_BIN="$PWD/caddy" go test -race -count=1 ./...

step "CGO_ENABLED=0 go test ./..."
CGO_ENABLED=0 go test -count=1 ./...

step "lab smoke (every part of the overload lab, seconds long; figures meaningless)"
go run ./cmd/lab -smoke

echo
if [ -n "$skips" ]; then
	printf '%s\n' "$skips"
	echo "all other tests passed"
else
	echo "all tests passed"
fi
