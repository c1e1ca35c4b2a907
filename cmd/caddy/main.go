// Command caddy is Caddy with its standard modules plus arcane, for plain
// `go build ./cmd/caddy` and `go test`. Release builds use xcaddy (see the
// Makefile and xcaddy.json); both produce the same set of modules.
package main

import (
	_ "time/tzdata"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/arcaneapi/caddy-arcane/caddymodule"
)

func main() {
	caddycmd.Main()
}
