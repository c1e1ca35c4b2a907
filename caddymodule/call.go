package caddymodule

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

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
	// ID is the request id: sent to the client as X-Request-Id and kept on
	// the request's ledger row.
	ID string
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

	// Hold is the balance reserved for this request by arcane_balance,
	// and Price the model's price it settles at; nil when nothing is
	// charged. Charged is what settlement took.
	Hold    *billing.Hold
	Price   billing.Price
	Charged billing.Amount

	// Status and Outcome say how a chat completion was answered, for the
	// metrics: the HTTP status, and ok, client_closed, upstream_error,
	// invalid_request, rate_limited, insufficient_balance,
	// gateway_overloaded or gateway_error. Status stays 0 for other
	// requests.
	Status  int
	Outcome string
	// Uncharged is set when the gateway turned the request away for its
	// own reasons (settlements behind): it costs the key no request.
	Uncharged bool

	// reserved is what arcane_limit took from each budget, kept here
	// (not on the handler's stack) until it corrects them.
	reserved [4]reservation
}

// refuse answers a chat completion with an error and records how it ended.
func (c *call) refuse(w http.ResponseWriter, r *http.Request, e apiError, outcome string) {
	c.Status, c.Outcome = e.Status, outcome
	writeError(w, r, e)
}

// newCall starts a request's call: it takes a request id, announces it in
// the X-Request-Id response header and the access log, and stores the call
// in the request's vars.
func newCall(w http.ResponseWriter, r *http.Request, p *billing.Principal, start time.Time) *call {
	c := &call{ID: newRequestID(), Principal: p, Start: start}
	w.Header().Set("X-Request-Id", c.ID)
	if extra := accessLogFields(r); extra != nil {
		extra.Add(zap.String("arcane_request_id", c.ID))
	}
	caddyhttp.SetVar(r.Context(), callVar, c)
	return c
}

// newRequestID returns "req_", the time in milliseconds and 64 random bits,
// in URL-safe base64 with the time first. Ids made later sort later, so the
// ledger's index of request ids grows at its end, one page at a time,
// instead of touching a random page for every request.
func newRequestID() string {
	var raw [14]byte
	ms := uint64(time.Now().UnixMilli())
	for i := 5; i >= 0; i-- {
		raw[i] = byte(ms)
		ms >>= 8
	}
	_, _ = rand.Read(raw[6:]) // never fails (crypto/rand, Go 1.24+)
	var b [4 + 19]byte
	copy(b[:], "req_")
	sortableBase64.Encode(b[4:], raw[:])
	return string(b[:])
}

// sortableBase64 is URL-safe base64 with its alphabet in byte order, so the
// encoding sorts as the bytes do.
var sortableBase64 = base64.NewEncoding("-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz").WithPadding(base64.NoPadding)

// callFrom returns the request's call, starting one if no arcane_auth ran
// before (an operator may serve a model without keys).
func callFrom(w http.ResponseWriter, r *http.Request) *call {
	if c, ok := caddyhttp.GetVar(r.Context(), callVar).(*call); ok {
		return c
	}
	return newCall(w, r, nil, time.Now())
}

// chatRequest reads and scans a chat completion body once per request,
// whichever handler asks first, and finds the model it names. Bad input is
// refused here, before any limit or hold is touched.
func (c *call) chatRequest(r *http.Request, app *App) *apiError {
	if c.Chat != nil {
		return nil
	}
	body, err := readBody(r, app.maxBody)
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

// readBody reads a request body of at most limit bytes: into a buffer of
// exactly its size when the client gave it (Content-Length), which a
// stream then keeps for as long as it lasts; with io.ReadAll's doubling
// otherwise.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	body := http.MaxBytesReader(nil, r.Body, limit)
	if n := r.ContentLength; n >= 0 && n <= limit {
		b := make([]byte, n)
		if _, err := io.ReadFull(body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	return io.ReadAll(body)
}

// billable reports whether r is a request arcane limits and charges: a
// POST to …/chat/completions. Everything else passes arcane_limit and
// arcane_balance untouched.
func billable(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/chat/completions")
}

// keyedChat returns the call of a billable request with its body scanned,
// for the handlers that act for an authenticated key. When there is no key
// (arcane_auth is missing before handler: a configuration mistake, logged)
// or the body is bad, it answers the request itself and returns nil.
func keyedChat(w http.ResponseWriter, r *http.Request, app *App, logger *zap.Logger, handler string) *call {
	c := callFrom(w, r)
	if c.Principal == nil {
		logger.Error("refusing request: " + handler + " found no authenticated key: put arcane_auth before it")
		writeError(w, r, errServer)
		return nil
	}
	if e := c.chatRequest(r, app); e != nil {
		c.refuse(w, r, *e, "invalid_request")
		return nil
	}
	return c
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
