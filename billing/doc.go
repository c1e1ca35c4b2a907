// Package billing owns the money side of the gateway: accounts and their
// prepaid balances, API keys (generation, checksums, hashing, the cached
// lookup behind authentication), amounts and their exact decimal form, and
// the ledger, all persisted in a bbolt file through the Store interface.
//
// It deliberately knows nothing about Caddy or HTTP: the caddymodule package
// adapts it to handlers, the admin API and the CLI. Keeping the store behind
// an interface lets a shared engine replace the embedded bbolt file when
// several gateway instances must share accounts, keys and the ledger.
package billing
