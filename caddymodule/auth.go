package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/arcaneapi/caddy-arcane/billing"
)

func init() {
	caddy.RegisterModule(Auth{})
	httpcaddyfile.RegisterHandlerDirective("arcane_auth", parseAuth)
	httpcaddyfile.RegisterDirectiveOrder("arcane_auth", httpcaddyfile.Before, "basic_auth")
}

// Auth authenticates API requests by their `Authorization: Bearer ak_…`
// key. A missing, malformed, unknown, revoked or expired key is answered
// with 401 and a disabled account with 403, both in OpenAI's error
// envelope; the key is never echoed, logged or passed on.
//
// On success it sets `{http.auth.user.id}` to the account id (so the access
// log's user_id is filled) and `{http.auth.user.key_id}` to the key id,
// starts the request's call for the handlers after it, and removes the
// Authorization header from the request.
type Auth struct {
	app    *App
	logger *zap.Logger
	now    func() time.Time
}

// CaddyModule returns the Caddy module information.
func (Auth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.arcane_auth",
		New: func() caddy.Module { return new(Auth) },
	}
}

// Provision finds the arcane app.
func (h *Auth) Provision(ctx caddy.Context) error {
	app, err := arcaneApp(ctx)
	if err != nil {
		return err
	}
	h.app, h.logger, h.now = app, ctx.Logger(), time.Now
	return nil
}

// arcaneApp returns this config's arcane app, which must be configured (an
// empty `arcane` global option will do): a handler silently opening a
// default database would surprise an operator.
func arcaneApp(ctx caddy.Context) (*App, error) {
	v, err := ctx.AppIfConfigured("arcane")
	if err != nil {
		return nil, fmt.Errorf("arcane handlers need the arcane app (the `arcane` global option in a Caddyfile): %w", err)
	}
	return v.(*App), nil
}

var (
	errNoKey = apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
		Message: "You didn't provide an API key. Send it in the Authorization header as: Authorization: Bearer ak_..."}
	errNotBearer = apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
		Message: "The Authorization header must use the Bearer scheme: Authorization: Bearer ak_..."}
	errBadKey = apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
		Message: "Incorrect API key provided. Keys start with ak_ and are 52 characters long; check that it was copied whole."}
	errUnknownKey = apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
		Message: "Incorrect API key provided."}
	errRevokedKey = apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
		Message: "This API key has been revoked."}
	errExpiredKey = apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
		Message: "This API key has expired."}
	errDisabled = apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "account_disabled",
		Message: "This account is disabled. Contact the operator of this API."}
)

func (h *Auth) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	c := h.authenticate(w, r)
	if c == nil {
		return nil
	}
	err := next.ServeHTTP(w, r)
	h.app.metrics.finish(c, h.now())
	return err
}

// authenticate checks the request's key and starts its call, or answers
// 401 (or an error) and returns nil. Out of line, like Limit.admit.
//
//go:noinline
func (h *Auth) authenticate(w http.ResponseWriter, r *http.Request) *call {
	start := h.now()
	secret, fail := bearer(r.Header.Get("Authorization"))
	if fail != nil {
		h.app.metrics.reject(fail.Code)
		writeError(w, r, *fail)
		return nil
	}
	p, err := h.app.keyring().Authenticate(secret)
	if err != nil {
		e := errServer
		switch {
		case errors.Is(err, billing.ErrMalformedKey), errors.Is(err, billing.ErrKeyChecksum):
			e = errBadKey
		case errors.Is(err, billing.ErrUnknownKey):
			e = errUnknownKey
		case errors.Is(err, billing.ErrKeyRevoked):
			e = errRevokedKey
		case errors.Is(err, billing.ErrKeyExpired):
			e = errExpiredKey
		case errors.Is(err, billing.ErrAccountDisabled):
			e = errDisabled
		default:
			h.logger.Error("authenticating request", zap.Error(err))
		}
		if c := h.logger.Check(zapcore.DebugLevel, "refused API key"); c != nil {
			c.Write(zap.String("reason", e.Message))
		}
		reason := e.Code
		if reason == "" {
			reason = "gateway_error"
		}
		h.app.metrics.reject(reason)
		writeError(w, r, e)
		return nil
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set("http.auth.user.id", p.Key.AccountID)
	repl.Set("http.auth.user.key_id", p.Key.ID)
	c := newCall(w, r, p, start)
	r.Header.Del("Authorization")
	return c
}

// bearer extracts the token from an Authorization header value. The scheme
// is case-insensitive (RFC 9110); surrounding blanks are tolerated.
func bearer(header string) (string, *apiError) {
	header = strings.TrimSpace(header)
	if header == "" {
		return "", &errNoKey
	}
	scheme, token, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", &errNotBearer
	}
	if token = strings.TrimSpace(token); token == "" {
		return "", &errNoKey
	}
	return token, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	arcane_auth
func (h *Auth) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("arcane_auth takes no options, found %q", d.Val())
	}
	return nil
}

func parseAuth(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var a Auth
	err := a.UnmarshalCaddyfile(h.Dispenser)
	return &a, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Auth)(nil)
	_ caddyhttp.MiddlewareHandler = (*Auth)(nil)
	_ caddyfile.Unmarshaler       = (*Auth)(nil)
)
