package caddymodule

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/arcaneapi/caddy-arcane/billing"
	"github.com/arcaneapi/caddy-arcane/upstream"
	"github.com/arcaneapi/caddy-arcane/upstream/openai"
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

	// Body and Chat are the request body, read once, and its scan; set by
	// the first handler that needs them (chatRequest).
	Body []byte
	Chat *openai.Request
	// Model is the public model asked for.
	Model *upstream.Model
	// Exchange is what the proxy did: deployment, usage and its basis,
	// outcome.
	Exchange *upstream.Exchange
}

// callFrom returns the request's call, starting one if no arcane_auth ran
// before (an operator may serve a model without keys).
func callFrom(r *http.Request) *call {
	if c, ok := caddyhttp.GetVar(r.Context(), callVar).(*call); ok {
		return c
	}
	c := &call{Start: time.Now()}
	caddyhttp.SetVar(r.Context(), callVar, c)
	return c
}

// chatRequest reads and scans a chat completion body once per request,
// whichever handler asks first, and finds the model it names. Bad input is
// refused here, before any limit or hold is touched.
func (c *call) chatRequest(r *http.Request, app *App) *apiError {
	if c.Chat != nil {
		return nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, app.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "request_too_large",
				Message: fmt.Sprintf("The request body is larger than this API accepts (%d bytes).", app.maxBody)}
		}
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "", Message: "The request body could not be read."}
	}
	req, err := openai.ScanRequest(body)
	if err != nil {
		var re *openai.RequestError
		if errors.As(err, &re) {
			return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: re.Code, Param: re.Param, Message: re.Message}
		}
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "", Message: "We could not parse the JSON body of your request."}
	}
	model, ok := app.catalog.Lookup(req.Model)
	if !ok || !keyMayUse(c.Principal, req.Model) {
		return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "model_not_found",
			Message: fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", req.Model)}
	}
	c.Body, c.Chat, c.Model = body, &req, model
	return nil
}

// keyMayUse applies a key's model allow-list.
func keyMayUse(p *billing.Principal, model string) bool {
	if p == nil || len(p.Key.Models) == 0 {
		return true
	}
	for _, m := range p.Key.Models {
		if m == model {
			return true
		}
	}
	return false
}
