package caddymodule

import (
	"errors"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/arcaneapi/caddy-arcane/upstream"
)

func init() {
	caddy.RegisterModule(Proxy{})
	httpcaddyfile.RegisterHandlerDirective("arcane_proxy", parseProxy)
	httpcaddyfile.RegisterDirectiveOrder("arcane_proxy", httpcaddyfile.Before, "reverse_proxy")
}

// Proxy answers `POST /v1/chat/completions`: it validates the request,
// sends it to a deployment of the requested model with the model id
// rewritten to the provider's, and streams the answer back event by event
// with the public id restored, metering the tokens used. It is a terminal
// handler; errors are answered in OpenAI's envelope.
type Proxy struct {
	app    *App
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Proxy) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.arcane_proxy",
		New: func() caddy.Module { return new(Proxy) },
	}
}

// Provision finds the arcane app.
func (h *Proxy) Provision(ctx caddy.Context) error {
	app, err := arcaneApp(ctx)
	if err != nil {
		return err
	}
	h.app, h.logger = app, ctx.Logger()
	return nil
}

func (h *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	c, x := h.prepare(w, r)
	if c != nil && c.Principal == nil {
		// No arcane_auth before this handler (keyless serving): no one
		// else will record the request's metrics.
		defer func() { h.app.metrics.finish(c, time.Now()) }()
	}
	if x == nil {
		return nil
	}
	err := h.app.proxy.Forward(r.Context(), w, x)
	return h.finish(w, r, c, x, err)
}

// prepare reads and checks the request and returns its call and the
// exchange to forward, or answers it and returns a nil exchange (and a nil
// call when it is no chat completion at all). Out of
// line, like Limit.admit: the handler's frame stays small while a stream
// lasts.
//
//go:noinline
func (h *Proxy) prepare(w http.ResponseWriter, r *http.Request) (*call, *upstream.Exchange) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, r, apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
			Message: "Use POST for /v1/chat/completions."})
		return nil, nil
	}
	c := callFrom(w, r)
	if e := c.chatRequest(r, h.app); e != nil {
		c.refuse(w, r, *e, "invalid_request")
		return c, nil
	}
	x := &upstream.Exchange{Body: c.Body, Request: c.Chat, Model: c.Model, Header: r.Header}
	if c.Hold != nil {
		x.Cost = c.appendCost
	}
	c.Exchange = x
	return c, x
}

// finish records how the exchange went and answers the errors Forward
// left to the handler.
//
//go:noinline
func (h *Proxy) finish(w http.ResponseWriter, r *http.Request, c *call, x *upstream.Exchange, err error) error {
	c.Status, c.Outcome = http.StatusOK, string(x.Outcome)
	if x.Outcome == upstream.OutcomeClientClosed {
		c.Status = 499 // the client left, before or after the first byte
	}
	logExchange(r, c)
	for i, t := range x.Tries {
		// The last try is the request's answer when no later attempt
		// was made; the WARN below reports it.
		if i+1 < x.Attempts {
			h.logger.Warn("deployment failed; request moved to the next",
				zap.String("request_id", c.ID), zap.String("model", c.Model.ID), zap.String("deployment", t.Deployment.Name()),
				zap.Int("attempt", i+1), zap.Int("status", t.Err.Status), zap.String("code", t.Err.Code),
				zap.Duration("duration", t.Duration), zap.Error(t.Err.Err))
		}
	}
	if err == nil {
		return nil
	}
	var ue *upstream.Error
	if !errors.As(err, &ue) {
		h.logger.Error("proxying chat completion", zap.Error(err))
		c.refuse(w, r, errServer, "gateway_error")
		return nil
	}
	if x.Outcome == upstream.OutcomeClientClosed {
		// Nobody is listening; the access log still says what happened.
		c.Status = 499
		return caddyhttp.Error(499, err)
	}
	outcome := string(x.Outcome)
	if x.Refused {
		outcome = "invalid_request"
	}
	h.logger.Warn("upstream refused chat completion",
		zap.String("request_id", c.ID), zap.String("model", c.Model.ID), zap.String("deployment", deploymentName(x)),
		zap.Int("attempts", x.Attempts), zap.Error(err))
	if ue.RetryAfter != "" {
		w.Header().Set("Retry-After", ue.RetryAfter)
	}
	c.refuse(w, r, apiError{Status: ue.Status, Type: ue.Type, Code: ue.Code, Param: ue.Param, Message: ue.Message}, outcome)
	return nil
}

// logExchange puts what the proxy did on the request's access log line,
// beside Caddy's own fields (user_id is the account, from arcane_auth).
func logExchange(r *http.Request, c *call) {
	extra := accessLogFields(r)
	if extra == nil {
		return
	}
	x := c.Exchange
	if c.Principal != nil {
		extra.Add(zap.String("arcane_key_id", c.Principal.Key.ID))
		extra.Add(zap.String("arcane_account_id", c.Principal.Key.AccountID))
	}
	extra.Add(zap.String("arcane_model", x.Model.ID))
	extra.Add(zap.String("arcane_deployment", deploymentName(x)))
	extra.Add(zap.Int("arcane_attempts", x.Attempts))
	extra.Add(zap.String("arcane_outcome", string(x.Outcome)))
	if x.Delivered {
		extra.Add(zap.Duration("arcane_ttft", x.FirstByte))
	}
	extra.Add(zap.Duration("arcane_upstream_duration", x.Upstream))
	if x.Basis != "" {
		extra.Add(zap.String("arcane_usage_basis", string(x.Basis)))
		extra.Add(zap.Int64("arcane_prompt_tokens", x.Usage.PromptTokens))
		extra.Add(zap.Int64("arcane_cached_tokens", x.Usage.CachedTokens))
		extra.Add(zap.Int64("arcane_cache_write_tokens", x.Usage.CacheWriteTokens))
		extra.Add(zap.Int64("arcane_completion_tokens", x.Usage.CompletionTokens))
		extra.Add(zap.Int64("arcane_reasoning_tokens", x.Usage.ReasoningTokens))
	}
}

// accessLogFields returns the fields Caddy adds to r's access log line,
// or nil when the server keeps no access log: then nobody reads them, and
// formatting them would cost every request a dozen appends for nothing.
func accessLogFields(r *http.Request) *caddyhttp.ExtraLogFields {
	if srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv.Logs == nil {
		return nil
	}
	extra, _ := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields)
	return extra
}

func deploymentName(x *upstream.Exchange) string {
	if x.Deployment == nil {
		return ""
	}
	return x.Deployment.Name()
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	arcane_proxy
func (h *Proxy) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("arcane_proxy takes no options, found %q", d.Val())
	}
	return nil
}

func parseProxy(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var p Proxy
	err := p.UnmarshalCaddyfile(h.Dispenser)
	return &p, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Proxy)(nil)
	_ caddyhttp.MiddlewareHandler = (*Proxy)(nil)
	_ caddyfile.Unmarshaler       = (*Proxy)(nil)
)
