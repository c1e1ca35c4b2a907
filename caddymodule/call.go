package caddymodule

import (
	"time"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// callVar is the request var that holds the *call.
const callVar = "arcane_call"

// call is one API request's state as it walks the chain: the first handler
// (arcane_auth) starts it in the request's vars, later handlers read and
// extend it. It is never shared between requests.
type call struct {
	// Principal is the authenticated key and its account's state; shared
	// with the key cache, so read-only.
	Principal *billing.Principal
	// Start is when authentication began.
	Start time.Time
}
