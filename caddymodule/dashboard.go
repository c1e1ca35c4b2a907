package caddymodule

import (
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/arcaneapi/caddy-arcane/billing"
	"github.com/arcaneapi/caddy-arcane/caddymodule/dashboard"
	"github.com/arcaneapi/caddy-arcane/ratelimit"
)

func init() {
	caddy.RegisterModule(Dashboard{})
	httpcaddyfile.RegisterHandlerDirective("arcane_dashboard", parseDashboard)
	httpcaddyfile.RegisterDirectiveOrder("arcane_dashboard", httpcaddyfile.Before, "respond")
}

// Dashboard serves the clients' web dashboard: sign-up and log-in with
// email and password, the account's balance and spend, API keys (create
// with an optional model allow-list and limits within the caps below, the
// secret shown once; revoke), usage (the ledger and daily charts) and the
// models with their prices. Users and sessions live in the arcane store.
// Mount it at its base path:
//
//	handle /dashboard* {
//		arcane_dashboard
//	}
//
// It is a terminal handler; paths under the base path that it does not
// serve get its 404 page.
type Dashboard struct {
	// BasePath is the path the dashboard is mounted at. Default:
	// /dashboard.
	BasePath string `json:"base_path,omitempty"`

	// Signup is who may create an account: "open" (anyone, the default),
	// "invite" (with an invite code from `caddy arcane invites create`) or "off".
	Signup string `json:"signup,omitempty"`

	// StartingBalance is credited to each account made by sign-up, in
	// US dollars as a decimal string. Default: "0".
	StartingBalance billing.Amount `json:"starting_balance,omitempty"`

	// SessionLifetime is how long a log-in lasts. Default: 7d.
	SessionLifetime caddy.Duration `json:"session_lifetime,omitempty"`

	// LoginLimit bounds log-in and sign-up attempts per email. Default:
	// 5 per 15m.
	LoginLimit *Rate `json:"login_limit,omitempty"`

	// AddressLimit bounds log-in and sign-up attempts per client address
	// (Caddy's client IP, which honours trusted_proxies; an IPv6 client's
	// /64). Default: 20 per 15m.
	AddressLimit *Rate `json:"address_limit,omitempty"`

	// SignupLimit bounds the sign-ups of the whole gateway, whoever makes
	// them: with a starting balance each one is credit. Default: 100 per
	// 1h.
	SignupLimit *Rate `json:"signup_limit,omitempty"`

	// MaxKeys bounds an account's active keys (however they were made)
	// when one is created in the dashboard. Default: 20.
	MaxKeys int `json:"max_keys,omitempty"`

	// KeyMaxRPM and KeyMaxTPM, when set, let clients give a key its own
	// requests and tokens per minute up to these values (a key's own
	// limits replace arcane_limit's per-key defaults). Unset, keys made in
	// the dashboard have no limits of their own.
	KeyMaxRPM int64 `json:"key_max_rpm,omitempty"`
	KeyMaxTPM int64 `json:"key_max_tpm,omitempty"`

	// APIURL is the API's base URL shown in the quickstart. Default: this
	// request's scheme and host followed by /v1.
	APIURL string `json:"api_url,omitempty"`

	// Billing tells clients how to add credit, for example "Email
	// billing@example.com with your account id."
	Billing string `json:"billing,omitempty"`

	// Title names the service in the pages. Default: arcane.
	Title string `json:"title,omitempty"`

	handler *dashboard.Handler
}

// CaddyModule returns the Caddy module information.
func (Dashboard) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.arcane_dashboard",
		New: func() caddy.Module { return new(Dashboard) },
	}
}

// dashboardAttempts keeps log-in budgets for the process's lifetime, so a
// reload does not give an attacker a fresh set of attempts.
var dashboardAttempts = sync.OnceValue(func() *ratelimit.Limiter {
	l := ratelimit.New(ratelimit.Options{})
	l.StartSweeper(time.Minute)
	return l
})

// Provision builds the dashboard over the arcane app's store and catalog.
func (h *Dashboard) Provision(ctx caddy.Context) error {
	app, err := arcaneApp(ctx)
	if err != nil {
		return err
	}
	cfg := dashboard.Config{
		Base: h.BasePath, Signup: h.Signup, StartingBalance: h.StartingBalance,
		SessionLifetime: time.Duration(h.SessionLifetime), MaxKeys: h.MaxKeys,
		MaxRPM: h.KeyMaxRPM, MaxTPM: h.KeyMaxTPM, APIURL: h.APIURL, Billing: h.Billing, Title: h.Title,
	}
	if r := h.LoginLimit; r != nil {
		cfg.LoginLimit = ratelimit.Limit{Count: r.Count, Window: time.Duration(r.Window)}
	}
	if r := h.AddressLimit; r != nil {
		cfg.AddressLimit = ratelimit.Limit{Count: r.Count, Window: time.Duration(r.Window)}
	}
	if r := h.SignupLimit; r != nil {
		cfg.SignupLimit = ratelimit.Limit{Count: r.Count, Window: time.Duration(r.Window)}
	}
	var models []dashboard.Model
	for _, m := range app.catalog.Models() {
		models = append(models, dashboard.Model{ID: m.ID, OwnedBy: m.OwnedBy, ContextLength: m.ContextLength, Price: app.prices[m.ID]})
	}
	h.handler, err = dashboard.New(cfg, dashboard.Deps{
		Store: app.store(), Keyring: app.keyring(), Bank: app.bank(), Models: models,
		Limiter: dashboardAttempts(), Now: dashboardNow, Logger: ctx.Logger(), ClientAddr: clientIP,
	})
	return err
}

// dashboardNow is the dashboard's clock; tests replace it before
// provisioning.
var dashboardNow = time.Now

// clientIP is the client's address as Caddy determined it (behind
// trusted_proxies, the forwarded one).
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	return r.RemoteAddr
}

func (h *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h.handler.ServeHTTP(w, r)
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	arcane_dashboard {
//		base_path        <path>
//		signup           open|invite|off
//		starting_balance <usd>
//		session_lifetime <duration>
//		login_limit      <count> <window>
//		address_limit    <count> <window>
//		signup_limit     <count> <window>
//		max_keys         <n>
//		key_max_rpm      <n>
//		key_max_tpm      <n>
//		api_url          <url>
//		billing          <text>
//		title            <text>
//	}
func (h *Dashboard) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("arcane_dashboard %s already specified", opt)
		}
		seen[opt] = true
		args := d.RemainingArgs()
		if dst := map[string]**Rate{"login_limit": &h.LoginLimit, "address_limit": &h.AddressLimit, "signup_limit": &h.SignupLimit}[opt]; dst != nil {
			rate, err := parseRate(args)
			if err != nil {
				return d.Errf("arcane_dashboard %s: %v", opt, err)
			}
			*dst = rate
			continue
		}
		if len(args) != 1 {
			return d.Errf("arcane_dashboard %s: expected one value", opt)
		}
		val := args[0]
		var err error
		switch opt {
		case "base_path":
			h.BasePath = val
		case "signup":
			h.Signup = val
		case "starting_balance":
			h.StartingBalance, err = billing.ParseAmount(val)
		case "session_lifetime":
			var dur time.Duration
			dur, err = caddy.ParseDuration(val)
			h.SessionLifetime = caddy.Duration(dur)
		case "max_keys":
			h.MaxKeys, err = strconv.Atoi(val)
		case "key_max_rpm":
			h.KeyMaxRPM, err = strconv.ParseInt(val, 10, 64)
		case "key_max_tpm":
			h.KeyMaxTPM, err = strconv.ParseInt(val, 10, 64)
		case "api_url":
			h.APIURL = val
		case "billing":
			h.Billing = val
		case "title":
			h.Title = val
		default:
			return d.Errf("arcane_dashboard: unrecognized option %q", opt)
		}
		if err != nil {
			return d.Errf("arcane_dashboard %s %q: %v", opt, val, err)
		}
	}
	return nil
}

// parseRate reads `<count> <window>`, such as `5 15m`.
func parseRate(args []string) (*Rate, error) {
	if len(args) != 2 {
		return nil, errRateSyntax
	}
	n, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil || n <= 0 {
		return nil, errRateSyntax
	}
	dur, err := caddy.ParseDuration(args[1])
	if err != nil || dur <= 0 {
		return nil, errRateSyntax
	}
	return &Rate{Count: n, Window: caddy.Duration(dur)}, nil
}

var errRateSyntax = errors.New("expected <count> <window> with a positive count and window, such as 5 15m")

func parseDashboard(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var m Dashboard
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return &m, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Dashboard)(nil)
	_ caddyhttp.MiddlewareHandler = (*Dashboard)(nil)
	_ caddyfile.Unmarshaler       = (*Dashboard)(nil)
)
