package caddymodule

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/arcaneapi/caddy-arcane/ratelimit"
)

func init() {
	caddy.RegisterModule(Limit{})
	httpcaddyfile.RegisterHandlerDirective("arcane_limit", parseLimit)
	httpcaddyfile.RegisterDirectiveOrder("arcane_limit", httpcaddyfile.After, "basic_auth")
}

// Limit holds every API key (and optionally every account) to a number of
// requests and of tokens per window. A key's own `rpm` and `tpm` replace
// the per-key defaults for that key, as per-minute budgets.
//
// Tokens are reserved when a request is admitted: the same worst case a
// balance hold assumes (the body's bytes for the prompt plus n times the
// output cap), at most the whole budget. When the request is over, the
// reservation is corrected to the tokens it really used (prompt plus
// completion; nothing if nothing was delivered), so unused tokens flow back
// and a burst overshoots by at most one request's estimate.
//
// A refused request gets 429 in OpenAI's envelope with Retry-After, and
// every answer to a limited request carries OpenAI's x-ratelimit-* headers.
// Only `POST …/chat/completions` is limited; other requests pass.
//
// Counters live in a zone that outlives config reloads; changed limits
// apply to the counters from the reload on.
type Limit struct {
	// Requests is the default per-key request budget.
	Requests *Rate `json:"requests,omitempty"`
	// Tokens is the default per-key token budget.
	Tokens *Rate `json:"tokens,omitempty"`
	// AccountRequests and AccountTokens, when set, also limit all the keys
	// of an account together.
	AccountRequests *Rate `json:"account_requests,omitempty"`
	AccountTokens   *Rate `json:"account_tokens,omitempty"`
	// Zone names the counters. Handlers with the same zone share them,
	// across reloads too. Default: "default".
	Zone string `json:"zone,omitempty"`

	app    *App
	logger *zap.Logger
	zone   *limitZone
	held   string // the zone key this handler holds in limitZones
}

// Rate is Count units per Window.
type Rate struct {
	Count  int64          `json:"count"`
	Window caddy.Duration `json:"window"`
}

func (r *Rate) limit() ratelimit.Limit {
	if r == nil {
		return ratelimit.Limit{}
	}
	return ratelimit.Limit{Count: r.Count, Window: time.Duration(r.Window)}
}

// CaddyModule returns the Caddy module information.
func (Limit) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.arcane_limit",
		New: func() caddy.Module { return new(Limit) },
	}
}

// limitZones holds each zone's counters, keyed by zone name, so a reload
// keeps them.
var limitZones = caddy.NewUsagePool()

// limitNow is the limiters' clock; tests replace it before a zone is made.
var limitNow = time.Now

// limitZone is the counters of one zone: requests and tokens, per key and
// per account.
type limitZone struct {
	keyRequests, keyTokens, accountRequests, accountTokens *ratelimit.Limiter
	stop                                                   []func()
}

func (z *limitZone) Destruct() error {
	for _, stop := range z.stop {
		stop()
	}
	return nil
}

func newLimitZone() *limitZone {
	z := new(limitZone)
	for _, l := range []**ratelimit.Limiter{&z.keyRequests, &z.keyTokens, &z.accountRequests, &z.accountTokens} {
		*l = ratelimit.New(ratelimit.Options{Now: limitNow})
		z.stop = append(z.stop, (*l).StartSweeper(time.Minute))
	}
	return z
}

// Provision finds the arcane app and the zone's counters.
func (h *Limit) Provision(ctx caddy.Context) error {
	app, err := arcaneApp(ctx)
	if err != nil {
		return err
	}
	h.app, h.logger = app, ctx.Logger()
	if h.Zone == "" {
		h.Zone = "default"
	}
	val, _, err := limitZones.LoadOrNew(h.Zone, func() (caddy.Destructor, error) { return newLimitZone(), nil })
	if err != nil {
		return err
	}
	h.zone, h.held = val.(*limitZone), h.Zone
	return nil
}

// Validate checks the budgets.
func (h *Limit) Validate() error {
	for name, r := range map[string]*Rate{"requests": h.Requests, "tokens": h.Tokens,
		"account_requests": h.AccountRequests, "account_tokens": h.AccountTokens} {
		if r != nil && !r.limit().Valid() {
			return fmt.Errorf("arcane_limit %s: need a positive count and a window from 1ns to 100 years, got %d per %s",
				name, r.Count, time.Duration(r.Window))
		}
	}
	return nil
}

// Cleanup releases the zone.
func (h *Limit) Cleanup() error {
	if h.held == "" {
		return nil
	}
	_, err := limitZones.Delete(h.held)
	h.held = ""
	return err
}

// budget is one limiter a request must pass: what it takes from it, and
// what admission needs besides.
type budget struct {
	reservation
	account bool
	dec     ratelimit.Decision
}

func (h *Limit) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !billable(r) {
		return next.ServeHTTP(w, r)
	}
	c := h.admit(w, r)
	if c == nil {
		return nil
	}
	defer h.correct(c)
	return next.ServeHTTP(w, r)
}

// admit reserves the request against its budgets and returns its call,
// or answers 429 (or an error) and returns nil. It is a function of its
// own, kept out of line, so that its locals are not on the handler's
// stack for as long as a stream lasts (see Performance in the README).
//
//go:noinline
func (h *Limit) admit(w http.ResponseWriter, r *http.Request) *call {
	c := keyedChat(w, r, h.app, h.logger, "arcane_limit")
	if c == nil {
		return nil
	}
	key := &c.Principal.Key
	bound := c.requestBound(h.app)
	estimate := satAdd(bound.PromptTokens, bound.CompletionTokens)

	keyReq, keyTok := h.Requests.limit(), h.Tokens.limit()
	if key.RPM > 0 {
		keyReq = ratelimit.Limit{Count: key.RPM, Window: time.Minute}
	}
	if key.TPM > 0 {
		keyTok = ratelimit.Limit{Count: key.TPM, Window: time.Minute}
	}
	budgets := &[4]budget{
		{reservation: reservation{store: h.zone.keyRequests, id: key.ID, lim: keyReq, n: 1}},
		{reservation: reservation{store: h.zone.keyTokens, id: key.ID, lim: keyTok, n: min(estimate, keyTok.Count), tokens: true}},
		{reservation: reservation{store: h.zone.accountRequests, id: key.AccountID, lim: h.AccountRequests.limit(), n: 1}, account: true},
		{reservation: reservation{store: h.zone.accountTokens, id: key.AccountID, lim: h.AccountTokens.limit(),
			n: min(estimate, h.AccountTokens.limit().Count), tokens: true}, account: true},
	}
	for i := range budgets {
		b := &budgets[i]
		if !b.lim.Valid() {
			continue
		}
		b.dec = b.store.Allow(b.id, b.lim, b.n)
		if b.dec.Allowed {
			continue
		}
		// Give back what the earlier budgets took, and report every
		// budget as it now stands.
		for j := range budgets {
			p := &budgets[j]
			if j == i || !p.lim.Valid() {
				continue
			}
			if j < i {
				p.store.Adjust(p.id, p.lim, -p.n)
			}
			p.dec = p.store.Peek(p.id, p.lim, 0)
		}
		setLimitHeaders(w.Header(), budgets)
		reason := "rate_limit_requests"
		if b.tokens {
			reason = "rate_limit_tokens"
		}
		h.app.metrics.reject(reason)
		c.Status, c.Outcome = http.StatusTooManyRequests, "rate_limited"
		refuse(w, r, b)
		return nil
	}
	setLimitHeaders(w.Header(), budgets)
	for i, b := range budgets {
		c.reserved[i] = b.reservation
	}
	return c
}

// reservation is what arcane_limit took from one budget, kept with the
// call until it corrects it.
type reservation struct {
	store  *ratelimit.Limiter
	id     string
	lim    ratelimit.Limit
	n      int64
	tokens bool
}

// correct sets the token reservations to what was really used. It runs
// after arcane_balance (inside) has settled.
func (h *Limit) correct(c *call) {
	var used int64
	x := c.Exchange
	if x != nil && x.Delivered {
		used = satAdd(max(x.Usage.PromptTokens, 0), max(x.Usage.CompletionTokens, 0))
	}
	for i := range c.reserved {
		b := &c.reserved[i]
		switch {
		case !b.lim.Valid():
		case b.tokens && used != b.n:
			b.store.Adjust(b.id, b.lim, used-b.n)
		case !b.tokens && (c.Uncharged || x != nil && x.Refused):
			// Bad input costs no request either, nor a request the
			// gateway turned away for its own reasons.
			b.store.Adjust(b.id, b.lim, -b.n)
		}
	}
}

// limitHeaders are OpenAI's x-ratelimit-* names (canonical form), for
// requests and for tokens: limit, remaining, reset.
var limitHeaders = [2][3]string{
	{"X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset-Requests"},
	{"X-Ratelimit-Limit-Tokens", "X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Tokens"},
}

// setLimitHeaders writes OpenAI's x-ratelimit-* headers: for requests and
// for tokens, the key's budget when it has one, else the account's.
func setLimitHeaders(h http.Header, budgets *[4]budget) {
	for kind, names := range limitHeaders {
		var d *ratelimit.Decision
		for i := range budgets {
			if b := &budgets[i]; b.tokens == (kind == 1) && b.lim.Valid() && b.dec.Limit > 0 {
				d = &b.dec
				break
			}
		}
		if d == nil {
			continue
		}
		h[names[0]] = []string{strconv.FormatInt(d.Limit, 10)}
		h[names[1]] = []string{strconv.FormatInt(d.Remaining, 10)}
		h[names[2]] = []string{ratelimit.FormatReset(d.Reset)}
	}
}

// refuse answers a request a budget turned down: 429 as OpenAI words it.
func refuse(w http.ResponseWriter, r *http.Request, b *budget) {
	kind, budgetName := "requests", "requests per min (RPM)"
	if b.tokens {
		kind, budgetName = "tokens", "tokens per min (TPM)"
	}
	if b.lim.Window != time.Minute {
		budgetName = kind + " per " + b.lim.Window.String()
	}
	who := "this API key"
	if b.account {
		who = "this account"
	}
	h := w.Header()
	h.Set("Retry-After", strconv.FormatInt(ratelimit.RetryAfterSeconds(b.dec.RetryAfter), 10))
	h.Set("Retry-After-Ms", strconv.FormatInt(ratelimit.RetryAfterMillis(b.dec.RetryAfter), 10))
	writeError(w, r, apiError{Status: http.StatusTooManyRequests, Type: kind, Code: "rate_limit_exceeded",
		Message: fmt.Sprintf("Rate limit reached for %s on %s: Limit %d, Remaining %d, Requested %d. Please try again in %s.",
			who, budgetName, b.dec.Limit, b.dec.Remaining, b.n, ratelimit.FormatReset(b.dec.RetryAfter))})
}

// satAdd adds non-negative counts, saturating instead of wrapping.
func satAdd(a, b int64) int64 {
	if a > (1<<63-1)-b {
		return 1<<63 - 1
	}
	return a + b
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	arcane_limit {
//		requests         <count> <window>
//		tokens           <count> <window>
//		account_requests <count> <window>
//		account_tokens   <count> <window>
//		zone             <name>
//	}
func (h *Limit) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "zone":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if h.Zone != "" {
				return d.Errf("arcane_limit zone already specified")
			}
			h.Zone = d.Val()
		case "requests", "tokens", "account_requests", "account_tokens":
			var count, window string
			if !d.Args(&count, &window) {
				return d.Errf("arcane_limit %s: expected <count> <window>, such as 600 1m", opt)
			}
			n, err := strconv.ParseInt(count, 10, 64)
			if err != nil || n <= 0 {
				return d.Errf("arcane_limit %s: count %q: expected a positive whole number", opt, count)
			}
			dur, err := caddy.ParseDuration(window)
			if err != nil || dur <= 0 {
				return d.Errf("arcane_limit %s: window %q: expected a duration such as 1m", opt, window)
			}
			rate := &Rate{Count: n, Window: caddy.Duration(dur)}
			dst := map[string]**Rate{"requests": &h.Requests, "tokens": &h.Tokens,
				"account_requests": &h.AccountRequests, "account_tokens": &h.AccountTokens}[opt]
			if *dst != nil {
				return d.Errf("arcane_limit %s already specified", opt)
			}
			*dst = rate
		default:
			return d.Errf("arcane_limit: unrecognized option %q", opt)
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

func parseLimit(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var l Limit
	err := l.UnmarshalCaddyfile(h.Dispenser)
	return &l, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Limit)(nil)
	_ caddy.Validator             = (*Limit)(nil)
	_ caddy.CleanerUpper          = (*Limit)(nil)
	_ caddyhttp.MiddlewareHandler = (*Limit)(nil)
	_ caddyfile.Unmarshaler       = (*Limit)(nil)
)
