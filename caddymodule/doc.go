// Package caddymodule is arcane's Caddy glue: the arcane app (global
// option), the HTTP handlers, their Caddyfile syntax, the admin API and the
// `caddy arcane` command. It holds no domain logic: keys, accounts and money
// live in billing, limits in ratelimit, providers in upstream. Import it
// (or build with xcaddy --with github.com/arcaneapi/caddy-arcane/caddymodule)
// to add arcane to Caddy.
package caddymodule
