package dashboard_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcaneapi/caddy-arcane/billing"
	"github.com/arcaneapi/caddy-arcane/caddymodule/dashboard"
	"github.com/arcaneapi/caddy-arcane/ratelimit"
)

// The dashboard's tests run the real handler over a real bbolt store,
// served by httptest and driven by an http.Client with a cookie jar that
// reads each form's CSRF token from the page, as a browser does.

// t0 is when every test starts: a Tuesday, mid-month, on the second.
var t0 = time.Date(2026, time.March, 10, 9, 0, 0, 0, time.UTC)

const (
	password      = "correct horse battery"
	sessionCookie = "arcane_session"
	csrfCookie    = "arcane_csrf"
)

// testModels is the catalog the dashboard shows.
var testModels = []dashboard.Model{
	{ID: "gpt-5.2", OwnedBy: "openai", ContextLength: 400_000,
		Price: billing.Price{Input: 1_750_000, Output: 14 * billing.Dollar, CachedInput: amount(175_000)}},
	{ID: "claude-sonnet-4-6", OwnedBy: "anthropic", ContextLength: 200_000,
		Price: billing.Price{Input: 3 * billing.Dollar, Output: 15 * billing.Dollar, CachedInput: amount(300_000), CacheWrite: amount(3_750_000)}},
}

func amount(a billing.Amount) *billing.Amount { return &a }

// clock is a fake clock the server's goroutines may read.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// spyStore is the real store, counting the sessions it starts: the
// Store interface cannot list them.
type spyStore struct {
	*billing.BoltStore
	sessions atomic.Int64
}

func (s *spyStore) CreateSession(userID string, lifetime time.Duration) (billing.Session, string, error) {
	sess, token, err := s.BoltStore.CreateSession(userID, lifetime)
	if err == nil {
		s.sessions.Add(1)
	}
	return sess, token, err
}

// env is a dashboard served over HTTP with everything it stands on.
type env struct {
	t     *testing.T
	clock *clock
	store *spyStore
	keys  *billing.Keyring
	bank  *billing.Bank
	srv   *httptest.Server
}

// start serves a dashboard with cfg over plain HTTP; opts adjust its
// dependencies.
func start(t *testing.T, cfg dashboard.Config, opts ...func(*dashboard.Deps)) *env {
	t.Helper()
	return serve(t, cfg, false, opts)
}

// startTLS serves a dashboard with cfg over HTTPS.
func startTLS(t *testing.T, cfg dashboard.Config, opts ...func(*dashboard.Deps)) *env {
	t.Helper()
	return serve(t, cfg, true, opts)
}

func serve(t *testing.T, cfg dashboard.Config, tls bool, opts []func(*dashboard.Deps)) *env {
	t.Helper()
	clk := &clock{t: t0}
	bolt, err := billing.OpenBolt(filepath.Join(t.TempDir(), "arcane.db"), billing.BoltOptions{
		Now: clk.Now, NoSync: true, Password: &billing.PasswordParams{Time: 1, Memory: 64, Threads: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	store := &spyStore{BoltStore: bolt}
	keys, err := billing.NewKeyring(bolt, billing.KeyringOptions{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(keys.Close)
	deps := dashboard.Deps{
		Store: store, Keyring: keys, Bank: billing.NewBank(bolt), Models: testModels,
		Limiter: ratelimit.New(ratelimit.Options{Now: clk.Now}), Now: clk.Now,
	}
	for _, o := range opts {
		o(&deps)
	}
	h, err := dashboard.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return &env{t: t, clock: clk, store: store, keys: keys, bank: deps.Bank, srv: srv}
}

// byHeader makes the client address the X-Client-Addr header's, so one
// test can be several clients.
func byHeader(d *dashboard.Deps) {
	d.ClientAddr = func(r *http.Request) string { return r.Header.Get("X-Client-Addr") }
}

// user adds a user with password and a balance, as the operator's tools
// would.
func (e *env) user(email string, balance billing.Amount) billing.User {
	e.t.Helper()
	u, _, err := e.store.CreateUser(email, password, balance, "")
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

// key mints a key for an account, as the admin API would.
func (e *env) key(accountID, name string) (billing.Key, string) {
	e.t.Helper()
	k, secret, err := e.store.CreateKey(accountID, billing.KeySpec{Name: name})
	if err != nil {
		e.t.Fatal(err)
	}
	return k, secret
}

// snapshot is everything a refused form must leave alone.
type snapshot struct {
	Users    []billing.User
	Accounts []billing.Account
	Keys     []billing.Key
	Ledger   []billing.Entry
	Invites  []billing.Invite
	Sessions int64
}

func (e *env) snapshot() snapshot {
	e.t.Helper()
	var s snapshot
	var err error
	if s.Users, err = e.store.Users(); err != nil {
		e.t.Fatal(err)
	}
	if s.Accounts, err = e.store.Accounts(); err != nil {
		e.t.Fatal(err)
	}
	for _, a := range s.Accounts {
		keys, err := e.store.Keys(a.ID)
		if err != nil {
			e.t.Fatal(err)
		}
		rows, _, err := e.store.Ledger(a.ID, billing.LedgerQuery{Limit: 10_000})
		if err != nil {
			e.t.Fatal(err)
		}
		s.Keys, s.Ledger = append(s.Keys, keys...), append(s.Ledger, rows...)
	}
	if s.Invites, err = e.store.Invites(); err != nil {
		e.t.Fatal(err)
	}
	s.Sessions = e.store.sessions.Load()
	return s
}

// unchanged fails the test if the store moved since before.
func (e *env) unchanged(before snapshot) {
	e.t.Helper()
	after := e.snapshot()
	if !reflect.DeepEqual(before, after) {
		e.t.Errorf("the store changed:\nbefore %+v\nafter  %+v", before, after)
	}
}

// browser is one person's browser: a cookie jar, no automatic redirects,
// and the Origin and Sec-Fetch-Site headers a browser sends with a form.
type browser struct {
	t      *testing.T
	e      *env
	client *http.Client
	// origin and fetchSite are sent with every POST; empty sends none.
	origin, fetchSite string
	// addr, when set, is sent as X-Client-Addr (see byHeader).
	addr string
}

func (e *env) browser() *browser {
	e.t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return &browser{t: e.t, e: e, origin: e.srv.URL, fetchSite: "same-origin", client: &http.Client{
		Transport: e.srv.Client().Transport, Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// response is what the browser got.
type response struct {
	Status int
	Header http.Header
	Body   string
	// Cookies are the ones this response set.
	Cookies []*http.Cookie
}

func (b *browser) do(method, path string, form url.Values, header http.Header) *response {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.e.srv.URL+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if method == http.MethodPost {
		if b.origin != "" {
			req.Header.Set("Origin", b.origin)
		}
		if b.fetchSite != "" {
			req.Header.Set("Sec-Fetch-Site", b.fetchSite)
		}
	}
	if b.addr != "" {
		req.Header.Set("X-Client-Addr", b.addr)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: string(data), Cookies: resp.Cookies()}
}

func (b *browser) get(path string) *response {
	b.t.Helper()
	return b.do(http.MethodGet, path, nil, nil)
}

func (b *browser) post(path string, form url.Values) *response {
	b.t.Helper()
	return b.do(http.MethodPost, path, form, nil)
}

// submit opens the page at pagePath, reads the CSRF token of its forms and
// posts fields with it to action.
func (b *browser) submit(pagePath, action string, fields url.Values) *response {
	b.t.Helper()
	p := b.get(pagePath)
	if p.Status != http.StatusOK {
		b.t.Fatalf("GET %s: status %d, want 200\n%s", pagePath, p.Status, p.Body)
	}
	return b.post(action, withCSRF(fields, p.csrf(b.t)))
}

// withCSRF returns a copy of fields with the csrf field set to token
// (none when token is empty).
func withCSRF(fields url.Values, token string) url.Values {
	out := url.Values{}
	for k, v := range fields {
		out[k] = append([]string(nil), v...)
	}
	if token != "" {
		out.Set("csrf", token)
	}
	return out
}

var csrfInput = regexp.MustCompile(`<input type="hidden" name="csrf" value="([^"]*)">`)

// csrf is the token the page's forms carry.
func (r *response) csrf(t *testing.T) string {
	t.Helper()
	m := csrfInput.FindStringSubmatch(r.Body)
	if m == nil || m[1] == "" {
		t.Fatalf("no CSRF token in the page:\n%s", r.Body)
	}
	return m[1]
}

var errorText = regexp.MustCompile(`(?s)<p class="error" id="error"[^>]*>(.*?)</p>`)

// errorText is the refusal the page shows, "" when none.
func (r *response) errorText() string {
	if m := errorText.FindStringSubmatch(r.Body); m != nil {
		return m[1]
	}
	return ""
}

// cookie is the cookie the response set under name, or nil.
func (r *response) cookie(name string) *http.Cookie {
	for _, c := range r.Cookies {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// want fails the test unless the response has status and, when given,
// shows each of texts.
func (r *response) want(t *testing.T, status int, texts ...string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d\n%s", r.Status, status, r.Body)
	}
	for _, s := range texts {
		if !strings.Contains(r.Body, s) {
			t.Errorf("the page does not say %q:\n%s", s, r.Body)
		}
	}
}

// wantRedirect fails the test unless the response is a 303 to location.
func (r *response) wantRedirect(t *testing.T, location string) {
	t.Helper()
	if r.Status != http.StatusSeeOther || r.Header.Get("Location") != location {
		t.Fatalf("got %d to %q, want 303 to %q\n%s", r.Status, r.Header.Get("Location"), location, r.Body)
	}
}

// dashboardURL is the URL cookies are scoped to.
func (b *browser) dashboardURL() *url.URL {
	u, err := url.Parse(b.e.srv.URL + "/dashboard/")
	if err != nil {
		b.t.Fatal(err)
	}
	return u
}

// cookie is the value of the browser's cookie name, "" when it has none.
func (b *browser) cookie(name string) string {
	for _, c := range b.client.Jar.Cookies(b.dashboardURL()) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// setCookie puts a cookie in the browser, as if the server had set it.
func (b *browser) setCookie(name, value string) {
	b.client.Jar.SetCookies(b.dashboardURL(), []*http.Cookie{{Name: name, Value: value, Path: "/dashboard/"}})
}

// logIn logs the browser in through the log-in form.
func (b *browser) logIn(email string) {
	b.t.Helper()
	r := b.submit("/dashboard/login", "/dashboard/login", url.Values{"email": {email}, "password": {password}})
	r.wantRedirect(b.t, "/dashboard/")
}

// signedIn is a new user with balance, logged in in a new browser.
func (e *env) signedIn(email string, balance billing.Amount) (*browser, billing.User) {
	e.t.Helper()
	u := e.user(email, balance)
	b := e.browser()
	b.logIn(email)
	return b, u
}

// host is the server's host:port, as requests name it.
func (e *env) host() string {
	u, err := url.Parse(e.srv.URL)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		e.t.Fatal(err)
	}
	return u.Host
}

// settle records a charge made at the clock's time.
func (e *env) settle(c billing.Charge) billing.Entry {
	e.t.Helper()
	if c.Outcome == "" {
		c.Outcome, c.Basis = "ok", "upstream"
	}
	row, err := e.store.Settle(c)
	if err != nil {
		e.t.Fatal(err)
	}
	return row
}

// section is the page's text from the element with the given id to the
// end of that element's tag name's first closing tag after it.
func (r *response) section(t *testing.T, id, closing string) string {
	t.Helper()
	i := strings.Index(r.Body, fmt.Sprintf(`id=%q`, id))
	if i < 0 {
		t.Fatalf("no element #%s in the page:\n%s", id, r.Body)
	}
	j := strings.Index(r.Body[i:], closing)
	if j < 0 {
		t.Fatalf("element #%s does not end with %s", id, closing)
	}
	return r.Body[i : i+j]
}

// forgedToken is a CSRF token a forged form might carry.
type forgedToken struct {
	name  string
	token func(e *env) string
}

// forgedTokens are the tokens a form must refuse: none, a made-up one, and
// the one page gave another browser (signed in as another user when
// signedIn).
func forgedTokens(page string, signedIn bool) []forgedToken {
	other := forgedToken{"a form with another browser's CSRF token is refused", func(e *env) string {
		return e.browser().get(page).csrf(e.t)
	}}
	if signedIn {
		other = forgedToken{"a form with another session's CSRF token is refused", func(e *env) string {
			b, _ := e.signedIn("mallory@example.com", 0)
			return b.get(page).csrf(e.t)
		}}
	}
	return []forgedToken{
		{"a form without its CSRF token is refused", func(*env) string { return "" }},
		{"a form with a made-up CSRF token is refused", func(*env) string { return otherToken }},
		other,
	}
}
