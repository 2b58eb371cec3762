#!/usr/bin/env bash
# Builds ./caddy with this module through xcaddy and lists the non-standard
# modules. xcaddy and the Go build cache make a second run fast.
set -euo pipefail
cd "$(dirname "$0")"
CADDY_VERSION=${CADDY_VERSION:-v2.11.9}
XCADDY_VERSION=${XCADDY_VERSION:-v0.4.5}
export PATH="$(go env GOPATH)/bin:$PATH"
if ! command -v xcaddy >/dev/null || ! xcaddy version 2>/dev/null | grep -q "${XCADDY_VERSION#v}"; then
	go install "github.com/caddyserver/xcaddy/cmd/xcaddy@${XCADDY_VERSION}"
fi
# The module proxy here refuses a bare "=.": name a version and give the
# replacement as an absolute path.
# cgo on by default so the NVML source is in (it loads the driver at run time;
# a host without one just reports NVML unavailable).
export CGO_ENABLED=${CGO_ENABLED:-1}
xcaddy build "$CADDY_VERSION" \
	--with "github.com/ai-guardian/adaptivethrottle@v0.0.0=$PWD" \
	--output ./caddy
./caddy list-modules --skip-standard
