// Package arcane is the import path operators give xcaddy: importing it adds
// every arcane module to Caddy.
//
//	xcaddy build --with github.com/arcaneapi/caddy-arcane
//
// The modules themselves live in caddymodule; this file only names them
// (the caddy-l4 pattern), because xcaddy imports the package at the root of
// a module it is given.
package arcane

import _ "github.com/arcaneapi/caddy-arcane/caddymodule"
