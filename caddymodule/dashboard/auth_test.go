package dashboard_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arcaneapi/caddy-arcane/billing"
	"github.com/arcaneapi/caddy-arcane/caddymodule/dashboard"
	"github.com/arcaneapi/caddy-arcane/ratelimit"
)

func signupFields(email string) url.Values {
	return url.Values{"email": {email}, "password": {password}, "password2": {password}}
}

func loginFields(email, pw string) url.Values {
	return url.Values{"email": {email}, "password": {pw}}
}

// badInvite is the one refusal of an invite code that cannot be used.
const badInvite = "This invite code is unknown, used, revoked or expired."

// otherToken is a well-formed CSRF token nobody was given.
const otherToken = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

func TestSignUpForm(t *testing.T) {
	t.Run("a valid form creates the user, its account and a session", func(t *testing.T) {
		e := start(t, dashboard.Config{})
		b := e.browser()
		r := b.submit("/dashboard/signup", "/dashboard/signup", signupFields(" Ada@Example.com "))
		r.wantRedirect(t, "/dashboard/")
		if r.cookie(sessionCookie) == nil {
			t.Fatal("sign-up set no session cookie")
		}
		s := e.snapshot()
		if len(s.Users) != 1 || s.Users[0].Email != "ada@example.com" || len(s.Accounts) != 1 ||
			s.Users[0].AccountID != s.Accounts[0].ID || s.Sessions != 1 {
			t.Fatalf("after sign-up the store holds %+v", s)
		}
		if len(s.Ledger) != 0 || s.Accounts[0].Balance != 0 {
			t.Errorf("the default starting balance is zero, got %+v and ledger %+v", s.Accounts[0], s.Ledger)
		}
		b.get("/dashboard/").want(t, http.StatusOK, "ada@example.com", `id="balance">$0.00<`)
	})

	refused := []struct {
		name   string
		fields url.Values
		status int
		says   string
	}{
		{"different passwords are refused", url.Values{"email": {"ada@example.com"}, "password": {password}, "password2": {password + "!"}},
			http.StatusBadRequest, "The two passwords differ."},
		{"a short password is refused", url.Values{"email": {"ada@example.com"}, "password": {"short"}, "password2": {"short"}},
			http.StatusBadRequest, "Password is shorter than 8 bytes."},
		{"an email without an @ is refused", signupFields("ada.example.com"), http.StatusBadRequest, "Email must look like name@example.com."},
		{"a missing email is refused", signupFields(""), http.StatusBadRequest, "Email is required."},
		{"a registered email is refused", signupFields("GRACE@example.com"), http.StatusConflict, "An account with this email exists already. Log in instead."},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, dashboard.Config{})
			e.user("grace@example.com", 0)
			b := e.browser()
			before := e.snapshot()
			r := b.submit("/dashboard/signup", "/dashboard/signup", tc.fields)
			r.want(t, tc.status)
			if got := r.errorText(); got != tc.says {
				t.Errorf("the page says %q, want %q", got, tc.says)
			}
			if r.cookie(sessionCookie) != nil {
				t.Error("a refused sign-up set a session cookie")
			}
			e.unchanged(before)
			// The form comes back, filled in, with a token that works.
			if email := tc.fields.Get("email"); email != "" && !strings.Contains(r.Body, `value="`+email+`"`) {
				t.Errorf("the form lost the email %q", email)
			}
			b.post("/dashboard/signup", withCSRF(signupFields("ada2@example.com"), r.csrf(t))).wantRedirect(t, "/dashboard/")
		})
	}

	forged := forgedTokens("/dashboard/signup", false)
	for _, tc := range forged {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, dashboard.Config{})
			b := e.browser()
			b.get("/dashboard/signup").want(t, http.StatusOK)
			before := e.snapshot()
			r := b.post("/dashboard/signup", withCSRF(signupFields("ada@example.com"), tc.token(e)))
			r.want(t, http.StatusForbidden, "This form has expired.")
			e.unchanged(before)
		})
	}

	t.Run("markup in an email is shown as text", func(t *testing.T) {
		e := start(t, dashboard.Config{})
		b := e.browser()
		b.submit("/dashboard/signup", "/dashboard/signup", signupFields(`a<b>"x"@example.com`)).wantRedirect(t, "/dashboard/")
		p := b.get("/dashboard/")
		p.want(t, http.StatusOK, `a&lt;b&gt;&#34;x&#34;@example.com`)
		if strings.Contains(p.Body, "<b>") {
			t.Error("the email's markup reached the page")
		}
	})

	t.Run("a form without the CSRF cookie is refused", func(t *testing.T) {
		e := start(t, dashboard.Config{})
		token := e.browser().get("/dashboard/signup").csrf(t)
		before := e.snapshot()
		e.browser().post("/dashboard/signup", withCSRF(signupFields("ada@example.com"), token)).want(t, http.StatusForbidden)
		e.unchanged(before)
	})

	t.Run("an expired session's cookie is replaced by the new account's", func(t *testing.T) {
		e := start(t, dashboard.Config{SessionLifetime: time.Hour})
		b := e.browser()
		b.submit("/dashboard/signup", "/dashboard/signup", signupFields("ada@example.com")).wantRedirect(t, "/dashboard/")
		stale := b.cookie(sessionCookie)
		e.clock.Advance(time.Hour)
		// The form opened after the session expired; it is sent a day
		// later: the CSRF cookie has no expiry.
		p := b.get("/dashboard/signup")
		p.want(t, http.StatusOK)
		e.clock.Advance(24 * time.Hour)
		b.post("/dashboard/signup", withCSRF(signupFields("grace@example.com"), p.csrf(t))).wantRedirect(t, "/dashboard/")
		if fresh := b.cookie(sessionCookie); fresh == "" || fresh == stale {
			t.Fatalf("the session cookie was not replaced: %q, was %q", fresh, stale)
		}
		b.get("/dashboard/").want(t, http.StatusOK, "grace@example.com")
		replay := e.browser()
		replay.setCookie(sessionCookie, stale)
		replay.get("/dashboard/").wantRedirect(t, "/dashboard/login")
	})
}

func TestLogInForm(t *testing.T) {
	t.Run("the right email and password start a session", func(t *testing.T) {
		e := start(t, dashboard.Config{})
		u := e.user("ada@example.com", 0)
		b := e.browser()
		r := b.submit("/dashboard/login", "/dashboard/login", loginFields("  ADA@example.com", password))
		r.wantRedirect(t, "/dashboard/")
		if r.cookie(sessionCookie) == nil || e.store.sessions.Load() != 1 {
			t.Fatalf("log-in made %d sessions and set cookies %v", e.store.sessions.Load(), r.Cookies)
		}
		b.get("/dashboard/").want(t, http.StatusOK, "ada@example.com")
		if got, _ := e.store.User(u.ID); got.LastLoginAt == nil || !got.LastLoginAt.Equal(t0) {
			t.Errorf("last log-in %v, want %v", got.LastLoginAt, t0)
		}
		// Signed in, the log-in and sign-up pages lead to the overview.
		b.get("/dashboard/login").wantRedirect(t, "/dashboard/")
		b.get("/dashboard/signup").wantRedirect(t, "/dashboard/")
	})

	refused := []struct {
		name   string
		fields url.Values
	}{
		{"a wrong password is refused", loginFields("ada@example.com", password+"!")},
		{"an unknown email is refused", loginFields("grace@example.com", password)},
		{"a malformed email is refused", loginFields("ada", password)},
		{"an empty password is refused", loginFields("ada@example.com", "")},
		{"an empty form is refused", url.Values{}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, dashboard.Config{})
			e.user("ada@example.com", 0)
			b := e.browser()
			before := e.snapshot()
			r := b.submit("/dashboard/login", "/dashboard/login", tc.fields)
			r.want(t, http.StatusUnauthorized)
			if got := r.errorText(); got != "Wrong email or password." {
				t.Errorf("the page says %q", got)
			}
			if r.cookie(sessionCookie) != nil {
				t.Error("a refused log-in set a session cookie")
			}
			e.unchanged(before)
			// The form comes back with a token that works.
			b.post("/dashboard/login", withCSRF(loginFields("ada@example.com", password), r.csrf(t))).wantRedirect(t, "/dashboard/")
		})
	}

	forged := forgedTokens("/dashboard/login", false)
	for _, tc := range forged {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, dashboard.Config{})
			e.user("ada@example.com", 0)
			b := e.browser()
			b.get("/dashboard/login").want(t, http.StatusOK)
			before := e.snapshot()
			r := b.post("/dashboard/login", withCSRF(loginFields("ada@example.com", password), tc.token(e)))
			r.want(t, http.StatusForbidden, "This form has expired.")
			if r.cookie(sessionCookie) != nil {
				t.Error("a forged log-in set a session cookie")
			}
			e.unchanged(before)
		})
	}

	t.Run("an expired session sends the browser to log in again, and its cookie is replaced", func(t *testing.T) {
		e := start(t, dashboard.Config{SessionLifetime: time.Hour})
		e.user("ada@example.com", 0)
		b := e.browser()
		b.logIn("ada@example.com")
		stale := b.cookie(sessionCookie)
		b.get("/dashboard/").want(t, http.StatusOK)
		e.clock.Advance(time.Hour)
		// The stale cookie is kept until the server says it expired.
		r := b.get("/dashboard/")
		r.wantRedirect(t, "/dashboard/login?expired=1")
		if c := r.cookie(sessionCookie); c == nil || c.MaxAge >= 0 {
			t.Errorf("the expired session's cookie was not cleared: %v", r.Cookies)
		}
		b.get("/dashboard/login?expired=1").want(t, http.StatusOK, "Your session expired. Log in again.")
		b.logIn("ada@example.com")
		if fresh := b.cookie(sessionCookie); fresh == "" || fresh == stale {
			t.Fatalf("the session cookie was not replaced: %q, was %q", fresh, stale)
		}
		b.get("/dashboard/").want(t, http.StatusOK)
	})

	t.Run("logging in over a stale session cookie replaces it", func(t *testing.T) {
		e := start(t, dashboard.Config{SessionLifetime: time.Hour})
		e.user("ada@example.com", 0)
		b := e.browser()
		b.logIn("ada@example.com")
		stale := b.cookie(sessionCookie)
		e.clock.Advance(2 * time.Hour)
		// The log-in page shows the form, not the overview, and the
		// browser still holds the stale cookie when it posts it.
		p := b.get("/dashboard/login")
		p.want(t, http.StatusOK)
		if b.cookie(sessionCookie) != stale {
			t.Fatal("the log-in page dropped the stale cookie; this case tests replacing it")
		}
		b.post("/dashboard/login", withCSRF(loginFields("ada@example.com", password), p.csrf(t))).wantRedirect(t, "/dashboard/")
		if fresh := b.cookie(sessionCookie); fresh == "" || fresh == stale {
			t.Fatalf("the session cookie was not replaced: %q, was %q", fresh, stale)
		}
		b.get("/dashboard/").want(t, http.StatusOK)
	})

	t.Run("logging in again ends the browser's previous session", func(t *testing.T) {
		e := start(t, dashboard.Config{})
		e.user("ada@example.com", 0)
		e.user("grace@example.com", 0)
		b := e.browser()
		// Two tabs open the log-in form; the first logs in as Ada, the
		// second, later, as Grace.
		token := b.get("/dashboard/login").csrf(t)
		b.post("/dashboard/login", withCSRF(loginFields("ada@example.com", password), token)).wantRedirect(t, "/dashboard/")
		first := b.cookie(sessionCookie)
		b.post("/dashboard/login", withCSRF(loginFields("grace@example.com", password), token)).wantRedirect(t, "/dashboard/")
		b.get("/dashboard/").want(t, http.StatusOK, "grace@example.com")
		replay := e.browser()
		replay.setCookie(sessionCookie, first)
		replay.get("/dashboard/").wantRedirect(t, "/dashboard/login")
	})
}

func TestLogOutForm(t *testing.T) {
	t.Run("logging out ends the session on the server", func(t *testing.T) {
		e := start(t, dashboard.Config{})
		b, _ := e.signedIn("ada@example.com", 0)
		old := b.cookie(sessionCookie)
		r := b.submit("/dashboard/", "/dashboard/logout", nil)
		r.wantRedirect(t, "/dashboard/login?out=1")
		if c := r.cookie(sessionCookie); c == nil || c.MaxAge >= 0 || c.Path != "/dashboard/" {
			t.Errorf("log-out did not delete the session cookie: %v", r.Cookies)
		}
		if b.cookie(sessionCookie) != "" {
			t.Error("the browser kept its session cookie")
		}
		b.get("/dashboard/login?out=1").want(t, http.StatusOK, "You are logged out.")
		// The old cookie, replayed, is worth nothing.
		replay := e.browser()
		replay.setCookie(sessionCookie, old)
		replay.get("/dashboard/").wantRedirect(t, "/dashboard/login")
		replay.get("/dashboard/keys").wantRedirect(t, "/dashboard/login")
	})

	noSession := []struct {
		name   string
		cookie string
	}{
		{"logging out without a session changes nothing", ""},
		{"logging out with a made-up session cookie changes nothing", otherToken},
		{"logging out with a malformed session cookie changes nothing", "x"},
	}
	for _, tc := range noSession {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, dashboard.Config{})
			signedIn, _ := e.signedIn("ada@example.com", 0)
			b := e.browser()
			if tc.cookie != "" {
				b.setCookie(sessionCookie, tc.cookie)
			}
			before := e.snapshot()
			b.post("/dashboard/logout", url.Values{"csrf": {otherToken}}).wantRedirect(t, "/dashboard/login?out=1")
			e.unchanged(before)
			signedIn.get("/dashboard/").want(t, http.StatusOK)
		})
	}

	forged := forgedTokens("/dashboard/", true)
	for _, tc := range forged {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, dashboard.Config{})
			b, _ := e.signedIn("ada@example.com", 0)
			token := tc.token(e)
			r := b.post("/dashboard/logout", withCSRF(nil, token))
			r.want(t, http.StatusForbidden, "This form has expired.")
			if r.cookie(sessionCookie) != nil {
				t.Errorf("a refused log-out touched the cookie: %v", r.Cookies)
			}
			b.get("/dashboard/").want(t, http.StatusOK, "ada@example.com")
		})
	}

	t.Run("logging out of an expired session clears its cookie", func(t *testing.T) {
		e := start(t, dashboard.Config{SessionLifetime: time.Hour})
		b, _ := e.signedIn("ada@example.com", 0)
		token := b.get("/dashboard/").csrf(t)
		e.clock.Advance(time.Hour)
		before := e.snapshot()
		r := b.post("/dashboard/logout", url.Values{"csrf": {token}})
		r.wantRedirect(t, "/dashboard/login?out=1")
		if b.cookie(sessionCookie) != "" {
			t.Error("the browser kept the expired session's cookie")
		}
		e.unchanged(before)
	})
}

func TestLogInAnswersDoNotTellWhichEmailsExist(t *testing.T) {
	e := start(t, dashboard.Config{})
	e.user("ada@example.com", 0)
	b := e.browser()
	// Same length, so the echoed address does not differ in size either.
	unknown := b.submit("/dashboard/login", "/dashboard/login", loginFields("bob@example.com", password))
	wrong := b.submit("/dashboard/login", "/dashboard/login", loginFields("ada@example.com", password+"!"))
	if unknown.Status != wrong.Status || unknown.Status != http.StatusUnauthorized {
		t.Errorf("statuses %d and %d, want 401 both", unknown.Status, wrong.Status)
	}
	if unknown.errorText() == "" || unknown.errorText() != wrong.errorText() {
		t.Errorf("the refusals differ: %q and %q", unknown.errorText(), wrong.errorText())
	}
	if a, b := strings.ReplaceAll(unknown.Body, "bob@", "ada@"), wrong.Body; a != b {
		t.Errorf("the pages differ beyond the echoed email:\n%s\n---\n%s", a, b)
	}
	if len(unknown.Cookies) != 0 || len(wrong.Cookies) != 0 {
		t.Errorf("refusals set cookies: %v and %v", unknown.Cookies, wrong.Cookies)
	}
	for _, h := range []string{"Content-Length", "Retry-After", "Set-Cookie"} {
		if unknown.Header.Get(h) != wrong.Header.Get(h) {
			t.Errorf("header %s differs: %q and %q", h, unknown.Header.Get(h), wrong.Header.Get(h))
		}
	}
}

func TestLogInRateLimits(t *testing.T) {
	limit := ratelimit.Limit{Count: 3, Window: 15 * time.Minute}
	generous := ratelimit.Limit{Count: 100, Window: 15 * time.Minute}

	t.Run("an email's attempts are limited, whoever makes them and whether it exists or not", func(t *testing.T) {
		for _, email := range []string{"ada@example.com", "nobody@example.com"} {
			t.Run(email, func(t *testing.T) {
				e := start(t, dashboard.Config{LoginLimit: limit, AddressLimit: generous}, byHeader)
				e.user("ada@example.com", 0)
				for i := range 3 {
					b := e.browser()
					b.addr = fmt.Sprintf("192.0.2.%d", i+1)
					b.submit("/dashboard/login", "/dashboard/login", loginFields(email, "wrong password")).want(t, http.StatusUnauthorized)
				}
				b := e.browser()
				b.addr = "198.51.100.7"
				before := e.snapshot()
				// Even the right password, in another case, from another
				// address: the budget is the email's.
				r := b.submit("/dashboard/login", "/dashboard/login", loginFields(strings.ToUpper(email), password))
				r.want(t, http.StatusTooManyRequests, "Too many attempts. Try again in 5 minutes.")
				if got := r.Header.Get("Retry-After"); got != "300" {
					t.Errorf("Retry-After %q, want 300", got)
				}
				if r.cookie(sessionCookie) != nil {
					t.Error("a refused log-in set a session cookie")
				}
				e.unchanged(before)
				// Another email from the same address is not held back.
				e.user("grace@example.com", 0)
				b.logIn("grace@example.com")

				e.clock.Advance(5 * time.Minute)
				r = e.browser().submit("/dashboard/login", "/dashboard/login", loginFields(email, password))
				if email == "ada@example.com" {
					r.wantRedirect(t, "/dashboard/")
				} else {
					r.want(t, http.StatusUnauthorized)
				}
			})
		}
	})

	t.Run("an address's attempts are limited across emails", func(t *testing.T) {
		e := start(t, dashboard.Config{LoginLimit: generous, AddressLimit: limit}, byHeader)
		e.user("ada@example.com", 0)
		b := e.browser()
		b.addr = "192.0.2.1"
		for _, email := range []string{"a@example.com", "b@example.com", "ada@example.com"} {
			b.submit("/dashboard/login", "/dashboard/login", loginFields(email, "wrong password")).want(t, http.StatusUnauthorized)
		}
		before := e.snapshot()
		r := b.submit("/dashboard/login", "/dashboard/login", loginFields("ada@example.com", password))
		r.want(t, http.StatusTooManyRequests, "Too many attempts.")
		if got := r.Header.Get("Retry-After"); got != "300" {
			t.Errorf("Retry-After %q, want 300", got)
		}
		// Sign-up spends from the same budget.
		b.submit("/dashboard/signup", "/dashboard/signup", signupFields("new@example.com")).want(t, http.StatusTooManyRequests)
		e.unchanged(before)

		other := e.browser()
		other.addr = "192.0.2.2"
		other.logIn("ada@example.com")

		e.clock.Advance(5 * time.Minute)
		b.logIn("ada@example.com")
	})

	t.Run("the client's address is the remote address by default", func(t *testing.T) {
		e := start(t, dashboard.Config{LoginLimit: generous, AddressLimit: limit})
		for _, email := range []string{"a@example.com", "b@example.com", "c@example.com"} {
			e.browser().submit("/dashboard/login", "/dashboard/login", loginFields(email, password)).want(t, http.StatusUnauthorized)
		}
		e.browser().submit("/dashboard/login", "/dashboard/login", loginFields("d@example.com", password)).want(t, http.StatusTooManyRequests)
	})

	t.Run("probing an email by sign-up spends that email's budget", func(t *testing.T) {
		e := start(t, dashboard.Config{LoginLimit: limit, AddressLimit: generous}, byHeader)
		e.user("ada@example.com", 0)
		for i := range 3 {
			b := e.browser()
			b.addr = fmt.Sprintf("192.0.2.%d", i+1)
			b.submit("/dashboard/signup", "/dashboard/signup", signupFields("ada@example.com")).want(t, http.StatusConflict)
		}
		b := e.browser()
		b.addr = "198.51.100.7"
		before := e.snapshot()
		b.submit("/dashboard/signup", "/dashboard/signup", signupFields("Ada@Example.com")).want(t, http.StatusTooManyRequests)
		b.submit("/dashboard/login", "/dashboard/login", loginFields("ada@example.com", password)).want(t, http.StatusTooManyRequests)
		e.unchanged(before)
		// Other emails sign up as before.
		b.submit("/dashboard/signup", "/dashboard/signup", signupFields("grace@example.com")).wantRedirect(t, "/dashboard/")
	})

	t.Run("refusals by the limit do not tell which emails exist", func(t *testing.T) {
		e := start(t, dashboard.Config{LoginLimit: ratelimit.Limit{Count: 1, Window: time.Minute}, AddressLimit: generous})
		e.user("ada@example.com", 0)
		b := e.browser()
		var pages []*response
		for _, email := range []string{"ada@example.com", "bob@example.com"} {
			b.submit("/dashboard/login", "/dashboard/login", loginFields(email, "wrong password")).want(t, http.StatusUnauthorized)
			pages = append(pages, b.submit("/dashboard/login", "/dashboard/login", loginFields(email, password)))
		}
		pages[0].want(t, http.StatusTooManyRequests)
		if strings.ReplaceAll(pages[1].Body, "bob@", "ada@") != pages[0].Body || pages[0].Header.Get("Retry-After") != pages[1].Header.Get("Retry-After") {
			t.Errorf("the refusals differ:\n%s\n---\n%s", pages[0].Body, pages[1].Body)
		}
	})
}

func TestDisabledUser(t *testing.T) {
	e := start(t, dashboard.Config{Billing: "Write to billing@example.com."})
	b, u := e.signedIn("ada@example.com", 0)
	token := b.get("/dashboard/keys").csrf(t)
	if _, err := e.store.SetUserState(u.ID, billing.UserDisabled); err != nil {
		t.Fatal(err)
	}
	before := e.snapshot()

	// Its session is over: pages and forms send it to log in.
	b.post("/dashboard/keys", url.Values{"csrf": {token}, "name": {"k"}}).wantRedirect(t, "/dashboard/login")
	e.unchanged(before)
	b.get("/dashboard/").wantRedirect(t, "/dashboard/login")

	// The right password is refused; a wrong one gets the usual answer.
	r := b.submit("/dashboard/login", "/dashboard/login", loginFields("ada@example.com", password))
	r.want(t, http.StatusForbidden, "This account is disabled. Write to billing@example.com.")
	if r.cookie(sessionCookie) != nil {
		t.Error("a disabled user got a session cookie")
	}
	b.submit("/dashboard/login", "/dashboard/login", loginFields("ada@example.com", "wrong password")).want(t, http.StatusUnauthorized)
	e.unchanged(before)

	if _, err := e.store.SetUserState(u.ID, billing.UserActive); err != nil {
		t.Fatal(err)
	}
	b.logIn("ada@example.com")
}

func TestSignUpModes(t *testing.T) {
	t.Run("open sign-up credits the starting balance", func(t *testing.T) {
		e := start(t, dashboard.Config{StartingBalance: 5 * billing.Dollar})
		b := e.browser()
		b.submit("/dashboard/signup", "/dashboard/signup", signupFields("ada@example.com")).wantRedirect(t, "/dashboard/")
		s := e.snapshot()
		if len(s.Accounts) != 1 || s.Accounts[0].Balance != 5*billing.Dollar {
			t.Fatalf("accounts %+v, want one with $5", s.Accounts)
		}
		if len(s.Ledger) != 1 || s.Ledger[0].Kind != billing.EntryCredit || s.Ledger[0].Amount != 5*billing.Dollar ||
			s.Ledger[0].Balance != 5*billing.Dollar {
			t.Errorf("ledger %+v, want one credit of $5", s.Ledger)
		}
		b.get("/dashboard/").want(t, http.StatusOK, `id="balance">$5.00<`)
		b.get("/dashboard/usage").want(t, http.StatusOK, "credit: opening balance")
	})

	t.Run("invite-only sign-up takes each code once", func(t *testing.T) {
		e := start(t, dashboard.Config{Signup: dashboard.SignupInvite, StartingBalance: billing.Dollar})
		invite := func(spec billing.InviteSpec) (billing.Invite, string) {
			t.Helper()
			inv, code, err := e.store.CreateInvite(spec)
			if err != nil {
				t.Fatal(err)
			}
			return inv, code
		}
		withInvite := func(email, code string) url.Values {
			f := signupFields(email)
			f.Set("invite", code)
			return f
		}
		later := t0.Add(time.Hour)
		_, code := invite(billing.InviteSpec{Note: "for Ada"})
		_, spare := invite(billing.InviteSpec{Note: "for Bob", ExpiresAt: &later})
		b := e.browser()
		b.get("/dashboard/signup?invite="+code).want(t, http.StatusOK, `name="invite" value="`+code+`"`)

		before := e.snapshot()
		b.submit("/dashboard/signup", "/dashboard/signup", signupFields("ada@example.com")).
			want(t, http.StatusForbidden, "Sign-up needs an invite code.")
		b.submit("/dashboard/signup", "/dashboard/signup", withInvite("ada@example.com", "inv_nottherightcodeatall0000000000")).
			want(t, http.StatusForbidden, badInvite)
		e.unchanged(before)

		b.submit("/dashboard/signup", "/dashboard/signup", withInvite("ada@example.com", code)).wantRedirect(t, "/dashboard/")
		if s := e.snapshot(); len(s.Users) != 1 || len(s.Accounts) != 1 || s.Accounts[0].Balance != billing.Dollar {
			t.Fatalf("users %+v and accounts %+v, want Ada's with $1", s.Users, s.Accounts)
		}

		before = e.snapshot()
		again := e.browser()
		again.submit("/dashboard/signup", "/dashboard/signup", withInvite("grace@example.com", code)).
			want(t, http.StatusForbidden, badInvite)
		// A refused sign-up does not use up its code.
		again.submit("/dashboard/signup", "/dashboard/signup", withInvite("ADA@example.com", spare)).
			want(t, http.StatusConflict, "An account with this email exists already.")
		e.unchanged(before)
		again.submit("/dashboard/signup", "/dashboard/signup", withInvite("bob@example.com", spare)).wantRedirect(t, "/dashboard/")
	})

	t.Run("open sign-up with an invite to an account joins it", func(t *testing.T) {
		e := start(t, dashboard.Config{StartingBalance: 5 * billing.Dollar})
		owner := e.user("ada@example.com", 2*billing.Dollar)
		_, code, err := e.store.CreateInvite(billing.InviteSpec{AccountID: owner.AccountID})
		if err != nil {
			t.Fatal(err)
		}
		// A wrong code is refused rather than ignored: the person would
		// otherwise get an account of their own without noticing.
		b := e.browser()
		f := signupFields("grace@example.com")
		f.Set("invite", "inv_nottherightcodeatall0000000000")
		before := e.snapshot()
		b.submit("/dashboard/signup", "/dashboard/signup", f).want(t, http.StatusForbidden, badInvite)
		e.unchanged(before)

		f.Set("invite", code)
		b.submit("/dashboard/signup", "/dashboard/signup", f).wantRedirect(t, "/dashboard/")
		s := e.snapshot()
		joined := slices.ContainsFunc(s.Users, func(u billing.User) bool {
			return u.Email == "grace@example.com" && u.AccountID == owner.AccountID
		})
		if len(s.Accounts) != 1 || len(s.Users) != 2 || !joined {
			t.Errorf("users %+v, accounts %+v: want Grace in Ada's account", s.Users, s.Accounts)
		}
	})

	t.Run("expired and revoked invite codes are refused", func(t *testing.T) {
		e := start(t, dashboard.Config{Signup: dashboard.SignupInvite})
		later := t0.Add(time.Hour)
		_, expiring, err := e.store.CreateInvite(billing.InviteSpec{ExpiresAt: &later})
		if err != nil {
			t.Fatal(err)
		}
		revoked, revokedCode, err := e.store.CreateInvite(billing.InviteSpec{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.RevokeInvite(revoked.ID); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Hour)
		before := e.snapshot()
		for _, code := range []string{expiring, revokedCode} {
			f := signupFields("eve@example.com")
			f.Set("invite", code)
			e.browser().submit("/dashboard/signup", "/dashboard/signup", f).want(t, http.StatusForbidden, badInvite)
		}
		e.unchanged(before)
	})

	t.Run("an invite to an account makes one more of its users, with no credit", func(t *testing.T) {
		e := start(t, dashboard.Config{Signup: dashboard.SignupInvite, StartingBalance: 5 * billing.Dollar})
		owner := e.user("ada@example.com", 2*billing.Dollar)
		key, _ := e.key(owner.AccountID, "shared")
		_, code, err := e.store.CreateInvite(billing.InviteSpec{AccountID: owner.AccountID})
		if err != nil {
			t.Fatal(err)
		}
		b := e.browser()
		f := signupFields("grace@example.com")
		f.Set("invite", code)
		b.submit("/dashboard/signup", "/dashboard/signup", f).wantRedirect(t, "/dashboard/")
		s := e.snapshot()
		if len(s.Accounts) != 1 || s.Accounts[0].Balance != 2*billing.Dollar || len(s.Ledger) != 1 {
			t.Errorf("accounts %+v and ledger %+v: want Ada's account alone, not credited again", s.Accounts, s.Ledger)
		}
		b.get("/dashboard/").want(t, http.StatusOK, "grace@example.com", `id="balance">$2.00<`)
		b.get("/dashboard/keys").want(t, http.StatusOK, `data-key-id="`+key.ID+`"`)
	})

	t.Run("with sign-up off nobody signs up", func(t *testing.T) {
		e := start(t, dashboard.Config{Signup: dashboard.SignupOff, Billing: "Ask sales@example.com."})
		b := e.browser()
		p := b.get("/dashboard/signup")
		p.want(t, http.StatusForbidden, "Sign-up is closed", "Ask sales@example.com.")
		if strings.Contains(p.Body, `id="signup"`) {
			t.Error("the closed sign-up page shows a form")
		}
		login := b.get("/dashboard/login")
		if strings.Contains(login.Body, "/dashboard/signup") {
			t.Error("the log-in page links to the closed sign-up")
		}
		before := e.snapshot()
		b.post("/dashboard/signup", withCSRF(signupFields("ada@example.com"), login.csrf(t))).
			want(t, http.StatusForbidden, "Sign-up is closed")
		e.unchanged(before)
	})
}

func TestSessionCookie(t *testing.T) {
	for _, tls := range []bool{false, true} {
		name := "over HTTP the cookies are not Secure"
		if tls {
			name = "over HTTPS the cookies are Secure"
		}
		t.Run(name, func(t *testing.T) {
			cfg := dashboard.Config{SessionLifetime: 12 * time.Hour}
			var e *env
			if tls {
				e = startTLS(t, cfg)
			} else {
				e = start(t, cfg)
			}
			e.user("ada@example.com", 0)
			b := e.browser()
			p := b.get("/dashboard/login")
			csrf := p.cookie(csrfCookie)
			if csrf == nil || !csrf.HttpOnly || csrf.SameSite != http.SameSiteStrictMode || csrf.Path != "/dashboard/" || csrf.Secure != tls {
				t.Errorf("CSRF cookie %+v", csrf)
			}
			r := b.post("/dashboard/login", withCSRF(loginFields("ada@example.com", password), p.csrf(t)))
			r.wantRedirect(t, "/dashboard/")
			c := r.cookie(sessionCookie)
			if c == nil {
				t.Fatalf("no session cookie in %v", r.Cookies)
			}
			if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/dashboard/" || c.Secure != tls {
				t.Errorf("session cookie %+v: want HttpOnly, SameSite=Lax, Path=/dashboard/, Secure=%v", c, tls)
			}
			if !c.Expires.Equal(t0.Add(12*time.Hour)) || c.MaxAge != 12*3600 {
				t.Errorf("session cookie expires %v (max-age %d), want %v", c.Expires, c.MaxAge, t0.Add(12*time.Hour))
			}
			if len(c.Value) < 43 {
				t.Errorf("session token %q is short", c.Value)
			}
			b.get("/dashboard/").want(t, http.StatusOK)
		})
	}
}

func TestCrossOriginPostsAreRefused(t *testing.T) {
	attackers := []struct {
		name              string
		origin, fetchSite string
	}{
		{"a cross-site fetch", "https://evil.example", "cross-site"},
		{"a same-site fetch from another origin", "", "same-site"},
		{"another origin without fetch metadata", "https://evil.example", ""},
	}
	forms := []struct {
		name         string
		signedIn     bool
		page, action string
		fields       func(e *env, u billing.User) url.Values
	}{
		{"sign-up", false, "/dashboard/signup", "/dashboard/signup",
			func(*env, billing.User) url.Values { return signupFields("new@example.com") }},
		{"log-in", false, "/dashboard/login", "/dashboard/login",
			func(*env, billing.User) url.Values { return loginFields("ada@example.com", password) }},
		{"log-out", true, "/dashboard/", "/dashboard/logout", func(*env, billing.User) url.Values { return nil }},
		{"create key", true, "/dashboard/keys", "/dashboard/keys",
			func(*env, billing.User) url.Values { return url.Values{"name": {"stolen"}} }},
		{"revoke key", true, "/dashboard/keys", "", nil},
	}
	for _, f := range forms {
		for _, a := range attackers {
			t.Run(a.name+" to "+f.name, func(t *testing.T) {
				e := start(t, dashboard.Config{})
				var b *browser
				var u billing.User
				if f.signedIn {
					b, u = e.signedIn("ada@example.com", 0)
				} else {
					u = e.user("ada@example.com", 0)
					b = e.browser()
				}
				k, secret := e.key(u.AccountID, "mine")
				action, fields := f.action, url.Values(nil)
				if f.fields != nil {
					fields = f.fields(e, u)
				}
				if action == "" {
					action = "/dashboard/keys/" + k.ID + "/revoke"
				}
				token := b.get(f.page).csrf(t)
				before := e.snapshot()
				b.origin, b.fetchSite = a.origin, a.fetchSite
				r := b.post(action, withCSRF(fields, token))
				r.want(t, http.StatusForbidden, "This form was sent from another site.")
				if r.cookie(sessionCookie) != nil {
					t.Errorf("a cross-origin post touched the session cookie: %v", r.Cookies)
				}
				e.unchanged(before)
				if _, err := e.keys.Authenticate(secret); err != nil {
					t.Errorf("the key stopped working: %v", err)
				}
				if f.signedIn {
					b.get("/dashboard/").want(t, http.StatusOK)
				}
			})
		}
	}
}
