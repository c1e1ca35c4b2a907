package caddymodule

import (
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

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

// callFrom returns the request's call, or nil if arcane_auth did not run.
func callFrom(r *http.Request) *call {
	c, _ := caddyhttp.GetVar(r.Context(), callVar).(*call)
	return c
}
