// Package ratelimit owns request- and token-rate limiting for the gateway:
// a GCRA limiter over many keys (an API key, an account) with one small
// fixed-size state per key and sharded locks, exact integer arithmetic at
// window boundaries whatever the ratio of window to count, weighted requests
// decided in one step (a request reserving N tokens), corrections after the
// fact (Adjust gives back an unused reservation or charges usage above it),
// a sweeper that keeps memory bounded by the keys active within one window,
// and the arithmetic of OpenAI's rate-limit headers (x-ratelimit-reset-*,
// Retry-After).
//
// It deliberately knows nothing about Caddy, HTTP or configuration: the
// arcane_limit handler in caddymodule chooses the keys and limits, keeps the
// Limiter across reloads, and writes the headers and the 429 envelope. The
// Store interface is the seam where a shared engine (Redis, Valkey) can
// replace the in-memory Limiter when several instances must share counters.
package ratelimit
