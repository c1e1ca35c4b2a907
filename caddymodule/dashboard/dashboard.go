// Package dashboard is the clients' web dashboard: sign-up and log-in,
// the account's balance, API keys, usage and the model catalog, rendered on
// the server with html/template from templates and assets embedded in the
// binary. It is a plain net/http handler over the billing store; the
// caddymodule package mounts it as the arcane_dashboard directive.
//
// Security model, in short:
//   - passwords are hashed with argon2id (billing.HashPassword);
//   - a session is a random token in an HttpOnly, SameSite=Lax cookie
//     (Secure under TLS), stored only as its SHA-256, with an absolute
//     expiry, deleted at log-out;
//   - every form carries a CSRF token: the session's own once logged in,
//     a double-submit cookie before; cross-origin POSTs are refused
//     outright (http.CrossOriginProtection);
//   - log-in and sign-up are rate-limited per email and per client
//     address, and a failed log-in says the same whether or not the email
//     exists;
//   - pages are never cached and may not be framed; the Content Security
//     Policy allows only this dashboard's own scripts and styles.
package dashboard

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/arcaneapi/caddy-arcane/billing"
	"github.com/arcaneapi/caddy-arcane/ratelimit"
)

// Sign-up modes.
const (
	SignupOpen   = "open"   // anyone may create an account
	SignupInvite = "invite" // an invite code from the operator is needed
	SignupOff    = "off"    // accounts are made by the operator only
)

// Config is what the operator chooses; the zero value of each field means
// its default.
type Config struct {
	// Base is the path the dashboard is mounted at, without a trailing
	// slash: "/dashboard".
	Base string
	// Signup is SignupOpen, SignupInvite or SignupOff.
	Signup string
	// StartingBalance is credited to every account made by sign-up.
	StartingBalance billing.Amount
	// SessionLifetime is how long a log-in lasts. Default 7 days.
	SessionLifetime time.Duration
	// LoginLimit bounds log-in and sign-up attempts per email;
	// AddressLimit bounds them per client address (an IPv6 address's
	// /64); SignupLimit bounds the sign-ups of the whole gateway.
	LoginLimit, AddressLimit, SignupLimit ratelimit.Limit
	// MaxKeys bounds an account's active keys (however made) when one is
	// created in the dashboard.
	MaxKeys int
	// MaxRPM and MaxTPM, when positive, let clients give a key its own
	// request and token limits up to these; when zero, keys made in the
	// dashboard use the limits the routes configure.
	MaxRPM, MaxTPM int64
	// APIURL is the API's base URL in the quickstart; empty means this
	// request's scheme and host followed by /v1.
	APIURL string
	// Billing tells clients how to add credit (operator's words).
	Billing string
	// Title names the service in pages. Default "arcane".
	Title string
}

// Defaults for Config's zero fields.
const (
	DefaultSessionLifetime = 7 * 24 * time.Hour
	DefaultMaxKeys         = 20
)

// DefaultLoginLimit, DefaultAddressLimit and DefaultSignupLimit apply
// when Config leaves them zero: 5 attempts per email and 20 per address
// per 15 minutes, and 100 sign-ups an hour, each after a burst of that
// many.
var (
	DefaultLoginLimit   = ratelimit.Limit{Count: 5, Window: 15 * time.Minute}
	DefaultAddressLimit = ratelimit.Limit{Count: 20, Window: 15 * time.Minute}
	DefaultSignupLimit  = ratelimit.Limit{Count: 100, Window: time.Hour}
)

// Model is a catalog entry as the dashboard shows it.
type Model struct {
	ID            string
	OwnedBy       string
	ContextLength int64
	Price         billing.Price
}

// Handler serves the dashboard. Create it with New.
type Handler struct {
	cfg     Config
	store   billing.Store
	keys    *billing.Keyring
	bank    *billing.Bank
	models  []Model
	limiter ratelimit.Store
	now     func() time.Time
	logger  *zap.Logger
	// clientAddr is the address log-ins are limited by.
	clientAddr func(*http.Request) string
	cop        *http.CrossOriginProtection
	mux        *http.ServeMux
	scans      usageCache
}

// Deps are the services a Handler uses.
type Deps struct {
	Store   billing.Store
	Keyring *billing.Keyring
	Bank    *billing.Bank
	Models  []Model
	// Limiter keeps log-in attempt budgets; it should outlive config
	// reloads.
	Limiter ratelimit.Store
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *zap.Logger
	// ClientAddr returns the client's address for rate limits (a port,
	// if any, is ignored); nil means r.RemoteAddr.
	ClientAddr func(*http.Request) string
}

// New checks cfg, fills in its defaults and returns the handler.
func New(cfg Config, d Deps) (*Handler, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if d.Store == nil || d.Keyring == nil || d.Bank == nil || d.Limiter == nil {
		return nil, errors.New("dashboard: store, keyring, bank and limiter are required")
	}
	h := &Handler{
		cfg: cfg, store: d.Store, keys: d.Keyring, bank: d.Bank, models: d.Models,
		limiter: d.Limiter, now: d.Now, logger: d.Logger, clientAddr: d.ClientAddr,
		cop: http.NewCrossOriginProtection(),
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.logger == nil {
		h.logger = zap.NewNop()
	}
	if h.clientAddr == nil {
		h.clientAddr = func(r *http.Request) string { return r.RemoteAddr } // addressKey drops the port
	}
	h.routes()
	return h, nil
}

func (c *Config) validate() error {
	if c.Base != "" && (!strings.HasPrefix(c.Base, "/") || strings.HasSuffix(c.Base, "/")) {
		return fmt.Errorf("dashboard: base path %q must start with / and not end with one", c.Base)
	}
	switch c.Signup {
	case "", SignupOpen, SignupInvite, SignupOff:
	default:
		return fmt.Errorf("dashboard: signup must be %s, %s or %s, not %q", SignupOpen, SignupInvite, SignupOff, c.Signup)
	}
	switch {
	case c.StartingBalance < 0:
		return errors.New("dashboard: starting_balance must not be negative")
	case c.SessionLifetime < 0:
		return errors.New("dashboard: session_lifetime must not be negative")
	case c.MaxKeys < 0:
		return errors.New("dashboard: max_keys must not be negative")
	case c.MaxRPM < 0 || c.MaxTPM < 0:
		return errors.New("dashboard: key_max_rpm and key_max_tpm must not be negative")
	case c.LoginLimit != (ratelimit.Limit{}) && !c.LoginLimit.Valid(),
		c.AddressLimit != (ratelimit.Limit{}) && !c.AddressLimit.Valid(),
		c.SignupLimit != (ratelimit.Limit{}) && !c.SignupLimit.Valid():
		return errors.New("dashboard: login limits need a positive count and window")
	}
	if c.APIURL != "" && !strings.HasPrefix(c.APIURL, "http://") && !strings.HasPrefix(c.APIURL, "https://") {
		return fmt.Errorf("dashboard: api_url %q must be an http:// or https:// URL", c.APIURL)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Base == "" {
		c.Base = "/dashboard"
	}
	if c.Signup == "" {
		c.Signup = SignupOpen
	}
	if c.SessionLifetime == 0 {
		c.SessionLifetime = DefaultSessionLifetime
	}
	if c.LoginLimit == (ratelimit.Limit{}) {
		c.LoginLimit = DefaultLoginLimit
	}
	if c.AddressLimit == (ratelimit.Limit{}) {
		c.AddressLimit = DefaultAddressLimit
	}
	if c.SignupLimit == (ratelimit.Limit{}) {
		c.SignupLimit = DefaultSignupLimit
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = DefaultMaxKeys
	}
	if c.Title == "" {
		c.Title = "arcane"
	}
	c.APIURL = strings.TrimSuffix(c.APIURL, "/")
}

func (h *Handler) routes() {
	b := h.cfg.Base
	m := http.NewServeMux()
	m.HandleFunc("GET "+b+"/static/{file}", h.static)
	m.HandleFunc("GET "+b+"/login", h.loginPage)
	m.HandleFunc("POST "+b+"/login", h.login)
	m.HandleFunc("GET "+b+"/signup", h.signupPage)
	m.HandleFunc("POST "+b+"/signup", h.signup)
	m.HandleFunc("POST "+b+"/logout", h.logout)
	m.HandleFunc("GET "+b+"/{$}", h.signedIn(h.overview))
	m.HandleFunc("GET "+b+"/keys", h.signedIn(h.keysPage))
	m.HandleFunc("POST "+b+"/keys", h.signedIn(h.createKey))
	m.HandleFunc("POST "+b+"/keys/{id}/revoke", h.signedIn(h.revokeKey))
	m.HandleFunc("GET "+b+"/usage", h.signedIn(h.usage))
	m.HandleFunc("GET "+b+"/models", h.signedIn(h.modelsPage))
	m.HandleFunc("GET "+b, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, b+"/", http.StatusMovedPermanently)
	})
	m.HandleFunc(b+"/", h.notFound)
	h.mux = m
}

// ServeHTTP serves a dashboard request. Paths outside Base get 404.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "same-origin")
	hdr.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if err := h.cop.Check(r); err != nil {
			h.forbidden(w, r, "This form was sent from another site. Open the dashboard and try again.")
			return
		}
	}
	h.mux.ServeHTTP(w, r)
}
