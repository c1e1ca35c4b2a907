// Package billing owns the money side of the gateway: accounts and their
// prepaid balances, API keys (generation, checksums, hashing, the cached
// lookup behind authentication), amounts and their exact decimal form, and
// the ledger, all persisted in a bbolt file through the Store interface. It
// also keeps the people who manage accounts in the dashboard: users, their
// argon2id password hashes, sessions and sign-up invites, in the same file.
//
// It deliberately knows nothing about Caddy or HTTP: the caddymodule package
// adapts it to handlers, the admin API, the dashboard and the CLI (cookies,
// CSRF checks on forms and log-in rate limits are the dashboard's). Keeping
// the store behind an interface lets a shared engine replace the embedded
// bbolt file when several gateway instances must share accounts, keys and
// the ledger.
package billing
