// Command caddy is Caddy with the standard modules and adaptive_throttle:
// what xcaddy-build.sh produces, buildable with plain `go build` for tests
// and `go run ./cmd/caddy run --config Caddyfile.example`.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/ai-guardian/adaptivethrottle"
)

func main() {
	caddycmd.Main()
}
