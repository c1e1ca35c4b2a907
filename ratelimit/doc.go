// Package ratelimit will own request- and token-rate limiting: GCRA
// limiters per key and account, reservations corrected when a request
// settles, and the Retry-After and x-ratelimit-* arithmetic. It imports no
// Caddy. It is empty until the rate-limit work lands; the arcane_limit
// handler in caddymodule will adapt it.
package ratelimit
