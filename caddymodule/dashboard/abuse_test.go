package dashboard_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/arcaneapi/caddy-arcane/billing"
	"github.com/arcaneapi/caddy-arcane/caddymodule/dashboard"
	"github.com/arcaneapi/caddy-arcane/ratelimit"
)

// The limits that keep one client from taking the gateway's sign-ups,
// CPUs or store.

func TestAnIPv6ClientIsLimitedByItsSlash64(t *testing.T) {
	limit := ratelimit.Limit{Count: 2, Window: 15 * time.Minute}
	e := start(t, dashboard.Config{AddressLimit: limit, LoginLimit: ratelimit.Limit{Count: 100, Window: time.Minute}}, byHeader)
	for i, addr := range []string{"2001:db8:1:2::1", "2001:db8:1:2:ffff::3c"} {
		b := e.browser()
		b.addr = addr
		b.submit("/dashboard/login", "/dashboard/login", loginFields(fmt.Sprintf("u%d@example.com", i), "wrong password")).want(t, http.StatusUnauthorized)
	}
	b := e.browser()
	b.addr = "2001:db8:1:2::99"
	before := e.snapshot()
	b.submit("/dashboard/signup", "/dashboard/signup", signupFields("new@example.com")).want(t, http.StatusTooManyRequests)
	e.unchanged(before)
	// Another /64, and IPv4, have their own budgets.
	for _, addr := range []string{"2001:db8:1:3::1", "192.0.2.7"} {
		b := e.browser()
		b.addr = addr
		b.submit("/dashboard/login", "/dashboard/login", loginFields("x@example.com", "wrong password")).want(t, http.StatusUnauthorized)
	}
}

func TestWhatIsNotAnEmailSpendsNoEmailBudget(t *testing.T) {
	e := start(t, dashboard.Config{LoginLimit: ratelimit.Limit{Count: 1, Window: time.Hour},
		AddressLimit: ratelimit.Limit{Count: 100, Window: time.Minute}}, byHeader)
	for i := range 3 {
		b := e.browser()
		b.addr = fmt.Sprintf("192.0.2.%d", i+1)
		b.submit("/dashboard/login", "/dashboard/login", loginFields("not an email", "wrong password")).want(t, http.StatusUnauthorized, "Wrong email or password.")
	}
}

func TestTheGatewaysSignUpsAreLimited(t *testing.T) {
	e := start(t, dashboard.Config{StartingBalance: 5 * billing.Dollar, SignupLimit: ratelimit.Limit{Count: 2, Window: time.Hour}}, byHeader)
	for i := range 2 {
		b := e.browser()
		b.addr = fmt.Sprintf("192.0.2.%d", i+1)
		b.submit("/dashboard/signup", "/dashboard/signup", signupFields(fmt.Sprintf("u%d@example.com", i))).wantRedirect(t, "/dashboard/")
	}
	b := e.browser()
	b.addr = "198.51.100.1"
	before := e.snapshot()
	r := b.submit("/dashboard/signup", "/dashboard/signup", signupFields("late@example.com"))
	r.want(t, http.StatusTooManyRequests, "Too many attempts. Try again in 30 minutes.")
	if got := r.Header.Get("Retry-After"); got != "1800" {
		t.Errorf("Retry-After %q, want 1800", got)
	}
	e.unchanged(before)
	// Log-ins are not sign-ups.
	b.logIn("u0@example.com")
	e.clock.Advance(30 * time.Minute)
	b2 := e.browser()
	b2.addr = "198.51.100.2"
	b2.submit("/dashboard/signup", "/dashboard/signup", signupFields("late@example.com")).wantRedirect(t, "/dashboard/")
}

// busyStore is the store with every password-hashing slot taken.
type busyStore struct{ *spyStore }

func (busyStore) Login(string, string) (billing.User, error) { return billing.User{}, billing.ErrBusy }
func (busyStore) CreateUser(string, string, billing.Amount, string) (billing.User, billing.Account, error) {
	return billing.User{}, billing.Account{}, billing.ErrBusy
}

func TestBusyHashingIsA503ToRetry(t *testing.T) {
	var e *env
	busy := func(d *dashboard.Deps) { d.Store = busyStore{d.Store.(*spyStore)} }
	e = start(t, dashboard.Config{}, busy)
	before := e.snapshot()
	for _, form := range []struct {
		path   string
		fields url.Values
	}{{"/dashboard/login", loginFields("ada@example.com", password)}, {"/dashboard/signup", signupFields("ada@example.com")}} {
		r := e.browser().submit(form.path, form.path, form.fields)
		r.want(t, http.StatusServiceUnavailable, "Try again in a moment.")
		if got := r.Header.Get("Retry-After"); got != "1" {
			t.Errorf("%s: Retry-After %q, want 1", form.path, got)
		}
		if r.cookie("arcane_session") != nil {
			t.Errorf("%s: a busy answer set a session", form.path)
		}
	}
	e.unchanged(before)
}

func TestAnOversizedFormIs413(t *testing.T) {
	e := start(t, dashboard.Config{})
	b, _ := e.signedIn("ada@example.com", 0)
	before := e.snapshot()
	for _, path := range []string{"/dashboard/login", "/dashboard/signup", "/dashboard/keys", "/dashboard/logout"} {
		b.post(path, url.Values{"name": {strings.Repeat("x", 70<<10)}}).want(t, http.StatusRequestEntityTooLarge, "This form is too large.")
	}
	e.unchanged(before)
}

func TestKeyCreationIsLimitedPerAccount(t *testing.T) {
	e := start(t, dashboard.Config{MaxKeys: 100})
	b, u := e.signedIn("ada@example.com", 0)
	for i := range 20 {
		b.submit("/dashboard/keys", "/dashboard/keys", url.Values{"name": {fmt.Sprint("k", i)}}).want(t, http.StatusOK, "Copy it now")
	}
	before := e.snapshot()
	r := b.submit("/dashboard/keys", "/dashboard/keys", url.Values{"name": {"one more"}})
	r.want(t, http.StatusTooManyRequests, "Too many attempts. Try again in 3 minutes.")
	e.unchanged(before)
	// Another account has its own budget.
	other, _ := e.signedIn("bob@example.com", 0)
	other.submit("/dashboard/keys", "/dashboard/keys", url.Values{"name": {"bob's"}}).want(t, http.StatusOK, "Copy it now")
	e.clock.Advance(3 * time.Minute)
	b.submit("/dashboard/keys", "/dashboard/keys", url.Values{"name": {"one more"}}).want(t, http.StatusOK, "Copy it now")
	if n := len(e.accountKeys(u.AccountID)); n != 21 {
		t.Errorf("%d keys, want 21", n)
	}
}

func TestTheKeysPageListsTwentyInactiveKeys(t *testing.T) {
	e := start(t, dashboard.Config{})
	b, u := e.signedIn("ada@example.com", 0)
	active, _ := e.key(u.AccountID, "live")
	for i := range 23 {
		k, _ := e.key(u.AccountID, fmt.Sprint("old", i))
		if _, err := e.keys.RevokeKey(k.ID); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Second)
	}
	r := b.get("/dashboard/keys")
	r.want(t, http.StatusOK, "3 older revoked or expired keys are not listed.")
	if n := strings.Count(r.Body, "data-key-id="); n != 21 {
		t.Errorf("%d keys listed, want the active one and 20 revoked", n)
	}
	if !strings.Contains(r.Body, `data-key-id="`+active.ID+`"`) || !strings.Contains(r.Body, ">old22<") || strings.Contains(r.Body, ">old2<") {
		t.Errorf("the keys page does not list the active key and the newest revoked ones:\n%s", r.Body)
	}
}

func TestTheChartsAndTheMonthShowAChargeAtOnce(t *testing.T) {
	e := start(t, dashboard.Config{})
	b, u := e.signedIn("ada@example.com", 10*billing.Dollar)
	b.get("/dashboard/usage").want(t, http.StatusOK, "No usage in the last 30 days.")
	b.get("/dashboard/").want(t, http.StatusOK, "0 requests · 0 tokens")
	// Within the same second: a scan this cheap is never reused once the
	// ledger has moved.
	e.settle(billing.Charge{RequestID: "req-1", AccountID: u.AccountID, Model: "gpt-5.2",
		Usage: billing.Usage{PromptTokens: 1000, CompletionTokens: 500}, Cost: 8_750})
	b.get("/dashboard/usage").want(t, http.StatusOK, "gpt-5.2: 1,500 tokens, 1 request")
	b.get("/dashboard/").want(t, http.StatusOK, "1 request · 1,500 tokens", "$0.00875")
}
