#!/usr/bin/env bash
# Builds Ollama from its Go module (cgo, CPU only) for the lab's real-server runs:
#   go run ./cmd/lab -upstream ollama -ollama-bin .tmp/ollama ...
# Everything comes from the Go module proxy and Debian packages; nothing is fetched at run time.
#
# The module zip lacks llama/llama.cpp/vendor/, which holds four third-party headers:
#   nlohmann/json.hpp, nlohmann/json_fwd.hpp   Debian nlohmann-json3-dev
#   stb/stb_image.h                             Debian libstb-dev
#   miniaudio/miniaudio.h (0.11.23)             Go module github.com/gen2brain/malgo v0.11.24
# They are copied into a writable copy of the module, which is then built with `go build`.
# About 15 minutes on two cores; it runs at the lowest CPU priority.
#
# Environment: OLLAMA_VERSION (v0.17.4), OLLAMA_BUILD_DIR (.tmp/ollama-build), OLLAMA_OUT (.tmp/ollama).
set -euo pipefail

VERSION=${OLLAMA_VERSION:-v0.17.4}
MALGO_VERSION=v0.11.24
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${OLLAMA_BUILD_DIR:-$ROOT/.tmp/ollama-build}
OUT=${OLLAMA_OUT:-$ROOT/.tmp/ollama}

# 1. The two header packages.
if [ ! -f /usr/include/nlohmann/json.hpp ] || [ ! -f /usr/include/stb/stb_image.h ]; then
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update
	$SUDO apt-get install -y nlohmann-json3-dev libstb-dev
fi

# 2. The two modules, from the Go module proxy (outside any module, so no go.mod changes).
moddir() { (cd / && GOFLAGS= GOWORK=off go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'); }
OLLAMA_MOD=$(moddir "github.com/ollama/ollama@$VERSION")
MALGO_MOD=$(moddir "github.com/gen2brain/malgo@$MALGO_VERSION")
[ -d "$OLLAMA_MOD" ] && [ -f "$MALGO_MOD/miniaudio.h" ] || { echo "module download failed" >&2; exit 1; }

# 3. A writable copy with the vendor headers in place.
SRC=$WORK/ollama-$VERSION
rm -rf "$SRC"
mkdir -p "$WORK"
cp -r "$OLLAMA_MOD" "$SRC"
chmod -R u+w "$SRC"
VENDOR=$SRC/llama/llama.cpp/vendor
mkdir -p "$VENDOR/stb" "$VENDOR/miniaudio"
cp -r /usr/include/nlohmann "$VENDOR/nlohmann"
cp /usr/include/stb/stb_image.h "$VENDOR/stb/"
cp "$MALGO_MOD/miniaudio.h" "$VENDOR/miniaudio/"

# 4. The build: cgo compiles llama.cpp and ggml's CPU backend into the binary.
cd "$SRC"
mkdir -p "$(dirname "$OUT")"
CGO_ENABLED=1 GOFLAGS=-buildvcs=false nice -n 19 \
	go build -trimpath -ldflags "-s -w -X github.com/ollama/ollama/version.Version=${VERSION#v}" -o "$OUT" .
"$OUT" --version 2>/dev/null || true
echo "built $OUT"
