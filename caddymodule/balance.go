package caddymodule

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/arcaneapi/caddy-arcane/billing"
	"github.com/arcaneapi/caddy-arcane/upstream"
	"github.com/arcaneapi/caddy-arcane/upstream/openai"
)

func init() {
	caddy.RegisterModule(Balance{})
	httpcaddyfile.RegisterHandlerDirective("arcane_balance", parseBalance)
	httpcaddyfile.RegisterDirectiveOrder("arcane_balance", httpcaddyfile.Before, "forward_auth")
}

// Balance charges chat completions to the prepaid balance of the account
// whose key arcane_auth accepted.
//
// Before the request goes on it places a hold for the request's worst-case
// cost: the body's size in bytes as an upper bound of its prompt tokens at
// the dearest price a prompt token can have (the highest of the input,
// cached-input and cache-write prices: the provider decides which part of
// a prompt it reads from or writes to its cache), and for each image (by
// URL or inline) the model's image_tokens (else the app's
// default_image_tokens) at that price too (with a file part, at least the
// model's context_length, else the app's default_context_length, as
// nothing else bounds what a document costs), plus n times the output
// cap (max_completion_tokens or max_tokens, at most the model's
// max_output_tokens; else the model's max_output_tokens; else the app's
// default_max_output_tokens) at the output price. If the account's balance minus its open holds does not
// cover it, the request is refused with 403 insufficient_balance and goes
// no further.
//
// When the request is done, however it ended, the hold settles: the cost
// of the tokens actually delivered (nothing, if nothing was), never more
// than the hold, is debited and one ledger row written, durably, after the
// response has been flushed to the client. Requests other than
// `POST …/chat/completions` pass through untouched.
type Balance struct {
	app    *App
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Balance) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.arcane_balance",
		New: func() caddy.Module { return new(Balance) },
	}
}

// Provision finds the arcane app.
func (h *Balance) Provision(ctx caddy.Context) error {
	app, err := arcaneApp(ctx)
	if err != nil {
		return err
	}
	h.app, h.logger = app, ctx.Logger()
	return nil
}

func (h *Balance) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !billable(r) {
		return next.ServeHTTP(w, r)
	}
	c := h.hold(w, r)
	if c == nil {
		return nil
	}
	// Settle however the chain ends; a panic is detected without recover,
	// so it goes on with its own stack.
	completed := false
	defer func() { h.settle(w, r, c, !completed) }()
	err := next.ServeHTTP(w, r)
	completed = true
	return err
}

// hold places the request's hold and returns its call, or answers 403 (or
// an error) and returns nil. Out of line, like Limit.admit.
//
//go:noinline
func (h *Balance) hold(w http.ResponseWriter, r *http.Request) *call {
	c := keyedChat(w, r, h.app, h.logger, "arcane_balance")
	if c == nil {
		return nil
	}
	if err := h.app.db.store.Admit(r.Context(), h.app.overloadWait); err != nil {
		// Settlement is behind (billing.BoltStore.Admit), or the store
		// is closing: the request goes no further, having reserved no
		// money, and costs its key no request.
		c.Uncharged = true
		switch {
		case errors.Is(err, billing.ErrClosed):
			h.logger.Error("refusing request: the store is closed", zap.String("request_id", c.ID), zap.Error(err))
			c.refuse(w, r, errServer, "gateway_error")
		case r.Context().Err() != nil:
			c.Status, c.Outcome = 499, "client_closed"
		default:
			h.logger.Warn("refusing request: settlements are behind", zap.String("request_id", c.ID), zap.Error(err))
			h.app.metrics.reject("gateway_overloaded")
			w.Header().Set("Retry-After", "1")
			c.refuse(w, r, errOverloaded, "gateway_overloaded")
		}
		return nil
	}
	c.Price = h.app.prices[c.Model.ID]
	worst := c.Price.Worst().Cost(c.worstCase(h.app))
	hold, err := h.app.bank().Hold(c.Principal.Key.AccountID, worst)
	if err != nil {
		var short *billing.InsufficientError
		if errors.As(err, &short) {
			h.app.metrics.reject("insufficient_balance")
			c.refuse(w, r, insufficient(short), "insufficient_balance")
			return nil
		}
		h.logger.Error("placing hold", zap.String("account", c.Principal.Key.AccountID), zap.Error(err))
		c.refuse(w, r, errServer, "gateway_error")
		return nil
	}
	c.Hold = hold
	return c
}

// insufficient is the 403 for a hold that does not fit.
func insufficient(e *billing.InsufficientError) apiError {
	return apiError{Status: http.StatusForbidden, Type: "insufficient_balance", Code: "insufficient_balance",
		Message: fmt.Sprintf("Your balance is insufficient for this request: it may cost up to $%s and $%s is available. "+
			"Add credit, or lower max_tokens (the hold is sized by the prompt and the longest answer the request allows).",
			e.Needed, e.Available)}
}

// satMul multiplies non-negative counts, saturating instead of wrapping.
func satMul(a, b int64) int64 {
	if a != 0 && b > (1<<63-1)/a {
		return 1<<63 - 1
	}
	return a * b
}

// settle charges what the request delivered and writes its ledger row. It
// runs after the response has been written; flushing first means the
// client has every byte before the ledger's disk write starts.
func (h *Balance) settle(w http.ResponseWriter, r *http.Request, c *call, panicked bool) {
	if x := c.Exchange; x != nil && x.Refused && !panicked {
		// Bad input that only the provider's translation could see:
		// like any other bad input, it changes nothing.
		c.Hold.Release()
		return
	}
	ch := billing.Charge{RequestID: c.ID, KeyID: c.Principal.Key.ID, Model: c.Model.ID, Outcome: "not_forwarded"}
	if x := c.Exchange; x != nil {
		ch.Deployment, ch.Outcome, ch.Attempts = deploymentName(x), string(x.Outcome), x.Attempts
		if x.Delivered {
			ch.Usage = billingUsage(x.Usage)
			ch.Basis = string(x.Basis)
			ch.Cost = c.Price.Cost(ch.Usage)
		}
	}
	if panicked {
		ch.Outcome = "gateway_error"
	} else {
		_ = http.NewResponseController(w).Flush()
	}
	e, err := c.Hold.Settle(ch)
	c.Charged = e.Cost()
	if panicked {
		c.Status, c.Outcome = http.StatusInternalServerError, "gateway_error"
	}
	if extra := accessLogFields(r); extra != nil {
		extra.Add(zap.String("arcane_cost", e.Cost().String()))
	}
	if err != nil {
		h.logger.Error("settling request: the ledger may not show this charge",
			zap.String("request_id", c.ID), zap.String("account", c.Hold.AccountID),
			zap.String("cost", ch.Cost.String()), zap.Error(err))
	}
}

// appendCost appends what the client is charged for u, as usage.cost shows
// it: the same figure the ledger row will carry.
func (c *call) appendCost(dst []byte, u openai.Usage) []byte {
	cost := c.Price.Cost(billingUsage(u))
	return c.Hold.Cap(cost).AppendNumber(dst)
}

// billingUsage is the part of an upstream's usage that is billed.
func billingUsage(u openai.Usage) billing.Usage {
	return billing.Usage{PromptTokens: u.PromptTokens, CachedTokens: u.CachedTokens,
		CacheWriteTokens: u.CacheWriteTokens, CompletionTokens: u.CompletionTokens}
}

// worstCase bounds the tokens a chat request can use, for its balance
// hold: requestBound, and, with a file part, at least the model's context
// length for the prompt (a file_id names a document the provider holds, and
// a PDF is billed by its pages: only the context bounds what a file costs).
// It says nothing of the cache: priced with Price.Worst, every prompt token
// is at its dearest.
func (c *call) worstCase(a *App) billing.Usage {
	u := c.requestBound(a)
	if c.Chat.Files > 0 {
		u.PromptTokens = max(u.PromptTokens, a.contextLength(c.Model))
	}
	return u
}

// requestBound is what the request itself bounds: for the prompt, its
// body's bytes (a token is at least one byte of text, and the JSON around
// the messages outweighs the chat template's few tokens per message) plus
// the image bound for each image part (one given by URL is a few bytes the
// provider fetches and bills by its pixels, and even an inline one can cost
// more tokens than its base64: a 1x1 PNG is a whole tile); n times the
// output cap for the completion. arcane_limit reserves it: the limiter's
// reservation is corrected to the tokens used, so it needs no context
// floor, which would take a key's whole per-minute budget for every
// request with a file.
func (c *call) requestBound(a *App) billing.Usage {
	images := satMul(int64(c.Chat.Images), a.imageTokens(c.Model))
	return billing.Usage{
		PromptTokens:     satAdd(int64(len(c.Body)), images),
		CompletionTokens: satMul(max(c.Chat.N, 1), a.outputCap(c.Model, c.Chat.MaxTokens)),
	}
}

// contextLength is the most prompt tokens a request to m can have: the
// model's context_length, else the default.
func (a *App) contextLength(m *upstream.Model) int64 {
	if m.ContextLength > 0 {
		return m.ContextLength
	}
	return a.defaultContext
}

// imageTokens is the most prompt tokens one image may cost on m:
// the model's image_tokens, else the default.
func (a *App) imageTokens(m *upstream.Model) int64 {
	if m.ImageTokens > 0 {
		return m.ImageTokens
	}
	return a.defaultImageTokens
}

// outputCap is the most output tokens a request for m may produce: what it
// asked for, at most the model's cap; the model's cap; else the default.
func (a *App) outputCap(m *upstream.Model, asked int64) int64 {
	switch {
	case asked > 0 && m.MaxOutputTokens > 0:
		return min(asked, m.MaxOutputTokens)
	case asked > 0:
		return asked
	case m.MaxOutputTokens > 0:
		return m.MaxOutputTokens
	}
	return a.defaultMaxOutput
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	arcane_balance
func (h *Balance) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("arcane_balance takes no options, found %q", d.Val())
	}
	return nil
}

func parseBalance(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var b Balance
	err := b.UnmarshalCaddyfile(h.Dispenser)
	return &b, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Balance)(nil)
	_ caddyhttp.MiddlewareHandler = (*Balance)(nil)
	_ caddyfile.Unmarshaler       = (*Balance)(nil)
)
