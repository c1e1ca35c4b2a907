package dashboard_test

import (
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arcaneapi/caddy-arcane/billing"
	"github.com/arcaneapi/caddy-arcane/caddymodule/dashboard"
)

var secretInPage = regexp.MustCompile(`<code id="new-key-secret">(ak_[0-9A-Za-z]+)</code>`)

// keys lists an account's keys.
func (e *env) accountKeys(accountID string) []billing.Key {
	e.t.Helper()
	keys, err := e.store.Keys(accountID)
	if err != nil {
		e.t.Fatal(err)
	}
	return keys
}

func TestCreateKeyForm(t *testing.T) {
	capped := dashboard.Config{MaxRPM: 600, MaxTPM: 100_000, MaxKeys: 3}

	t.Run("a valid form makes a key and shows its secret once", func(t *testing.T) {
		e := start(t, capped)
		b, u := e.signedIn("ada@example.com", 0)
		r := b.submit("/dashboard/keys", "/dashboard/keys", url.Values{
			"name": {"laptop"}, "models": {"gpt-5.2", "claude-sonnet-4-6", "gpt-5.2"}, "rpm": {"600"}, "tpm": {" 1 "},
		})
		r.want(t, http.StatusOK, "Copy it now")
		if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("the secret came with Cache-Control %q", cc)
		}
		m := secretInPage.FindStringSubmatch(r.Body)
		if m == nil {
			t.Fatalf("no secret in the page:\n%s", r.Body)
		}
		secret := m[1]
		keys := e.accountKeys(u.AccountID)
		if len(keys) != 1 {
			t.Fatalf("keys %+v, want one", keys)
		}
		k := keys[0]
		if k.Name != "laptop" || !slices.Equal(k.Models, []string{"gpt-5.2", "claude-sonnet-4-6"}) || k.RPM != 600 || k.TPM != 1 ||
			k.Last4 != secret[len(secret)-4:] {
			t.Errorf("key %+v from secret …%s", k, secret[len(secret)-4:])
		}
		p, err := e.keys.Authenticate(secret)
		if err != nil || p.Key.ID != k.ID {
			t.Fatalf("the secret does not authenticate key %s: %v", k.ID, err)
		}

		// Never again: not on the keys page, nor anywhere else.
		for _, path := range []string{"/dashboard/keys", "/dashboard/", "/dashboard/usage"} {
			p := b.get(path)
			p.want(t, http.StatusOK)
			if strings.Contains(p.Body, secret) || strings.Contains(p.Body, secret[:20]) {
				t.Errorf("%s shows the secret again", path)
			}
		}
		list := b.get("/dashboard/keys")
		row := list.section(t, "keys", "</table>")
		for _, s := range []string{"laptop", "ak_…" + k.Last4, "gpt-5.2, claude-sonnet-4-6", "600", `class="state">active<`} {
			if !strings.Contains(row, s) {
				t.Errorf("the keys list does not show %q:\n%s", s, row)
			}
		}
	})

	t.Run("a key without a name, models or limits may call everything at the routes' limits", func(t *testing.T) {
		e := start(t, dashboard.Config{})
		b, u := e.signedIn("ada@example.com", 0)
		r := b.submit("/dashboard/keys", "/dashboard/keys", nil)
		r.want(t, http.StatusOK, `id="new-key-secret"`)
		if strings.Contains(r.Body, `name="rpm"`) || strings.Contains(r.Body, `name="tpm"`) {
			t.Error("the form offers limits the operator did not allow")
		}
		keys := e.accountKeys(u.AccountID)
		if len(keys) != 1 || len(keys[0].Models) != 0 || keys[0].RPM != 0 || keys[0].TPM != 0 {
			t.Errorf("keys %+v", keys)
		}
	})

	refused := []struct {
		name   string
		cfg    dashboard.Config
		fields url.Values
		says   string
	}{
		{"a model outside the catalog is refused", capped, url.Values{"models": {"gpt-5.2", "gpt-9"}}, "There is no model &#34;gpt-9&#34;."},
		{"a name over 200 characters is refused", capped, url.Values{"name": {strings.Repeat("n", 201)}}, "The name is too long: 200 bytes at most."},
		{"requests per minute above the cap are refused", capped, url.Values{"rpm": {"601"}},
			"The requests per minute limit must be a whole number from 1 to 600."},
		{"zero requests per minute are refused", capped, url.Values{"rpm": {"0"}},
			"The requests per minute limit must be a whole number from 1 to 600."},
		{"requests per minute that are not a number are refused", capped, url.Values{"rpm": {"lots"}},
			"The requests per minute limit must be a whole number from 1 to 600."},
		{"tokens per minute above the cap are refused", capped, url.Values{"tpm": {"100001"}},
			"The tokens per minute limit must be a whole number from 1 to 100000."},
		{"requests per minute are refused when the operator set no cap", dashboard.Config{}, url.Values{"rpm": {"10"}},
			"Keys made here use the gateway&#39;s requests per minute limit."},
		{"tokens per minute are refused when the operator set no cap", dashboard.Config{MaxRPM: 10}, url.Values{"tpm": {"10"}},
			"Keys made here use the gateway&#39;s tokens per minute limit."},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, tc.cfg)
			b, _ := e.signedIn("ada@example.com", 0)
			before := e.snapshot()
			r := b.submit("/dashboard/keys", "/dashboard/keys", tc.fields)
			r.want(t, http.StatusBadRequest)
			if got := r.errorText(); got != tc.says {
				t.Errorf("the page says %q, want %q", got, tc.says)
			}
			if secretInPage.MatchString(r.Body) {
				t.Error("a refused form shows a secret")
			}
			e.unchanged(before)
		})
	}

	t.Run("an account with the most keys may make another once it revokes one", func(t *testing.T) {
		e := start(t, capped)
		b, u := e.signedIn("ada@example.com", 0)
		for range 3 {
			b.submit("/dashboard/keys", "/dashboard/keys", url.Values{"name": {"k"}}).want(t, http.StatusOK)
		}
		before := e.snapshot()
		r := b.submit("/dashboard/keys", "/dashboard/keys", url.Values{"name": {"fourth"}})
		r.want(t, http.StatusBadRequest, "This account has 3 active keys, the most allowed. Revoke one first.")
		e.unchanged(before)

		k := e.accountKeys(u.AccountID)[0]
		b.submit("/dashboard/keys", "/dashboard/keys/"+k.ID+"/revoke", nil).wantRedirect(t, "/dashboard/keys?revoked="+k.ID)
		b.submit("/dashboard/keys", "/dashboard/keys", url.Values{"name": {"fourth"}}).want(t, http.StatusOK, `id="new-key-secret"`)
	})

	forged := append(forgedTokens("/dashboard/keys", true), forgedToken{"a form with the pre-log-in CSRF token is refused", func(e *env) string {
		return e.browser().get("/dashboard/login").csrf(e.t)
	}})
	for _, tc := range forged {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, capped)
			b, _ := e.signedIn("ada@example.com", 0)
			token := tc.token(e)
			before := e.snapshot()
			r := b.post("/dashboard/keys", withCSRF(url.Values{"name": {"forged"}}, token))
			r.want(t, http.StatusForbidden, "This form has expired.")
			if secretInPage.MatchString(r.Body) {
				t.Error("a forged form shows a secret")
			}
			e.unchanged(before)
		})
	}

	t.Run("a form sent after the session expired makes nothing", func(t *testing.T) {
		e := start(t, dashboard.Config{SessionLifetime: time.Hour})
		b, _ := e.signedIn("ada@example.com", 0)
		token := b.get("/dashboard/keys").csrf(t)
		e.clock.Advance(time.Hour)
		before := e.snapshot()
		b.post("/dashboard/keys", url.Values{"csrf": {token}, "name": {"late"}}).wantRedirect(t, "/dashboard/login?expired=1")
		e.unchanged(before)
	})
}

func TestRevokeKeyForm(t *testing.T) {
	// setup signs Ada in and gives her and Grace a key each, both already
	// in the keyring's cache.
	setup := func(t *testing.T, cfg dashboard.Config) (e *env, b *browser, mine, theirs billing.Key, mySecret, theirSecret string) {
		e = start(t, cfg)
		b, ada := e.signedIn("ada@example.com", 0)
		grace := e.user("grace@example.com", 0)
		mine, mySecret = e.key(ada.AccountID, "ada's")
		theirs, theirSecret = e.key(grace.AccountID, "grace's")
		for _, s := range []string{mySecret, theirSecret} {
			if _, err := e.keys.Authenticate(s); err != nil {
				t.Fatal(err)
			}
		}
		return e, b, mine, theirs, mySecret, theirSecret
	}
	stillActive := func(t *testing.T, e *env, k billing.Key, secret string) {
		t.Helper()
		if got, err := e.store.Key(k.ID); err != nil || got.RevokedAt != nil {
			t.Errorf("key %s: %+v, %v; want it active", k.ID, got, err)
		}
		if _, err := e.keys.Authenticate(secret); err != nil {
			t.Errorf("key %s no longer authenticates: %v", k.ID, err)
		}
	}

	t.Run("revoking one's own key stops it at once", func(t *testing.T) {
		e, b, mine, theirs, mySecret, theirSecret := setup(t, dashboard.Config{})
		b.submit("/dashboard/keys", "/dashboard/keys/"+mine.ID+"/revoke", nil).wantRedirect(t, "/dashboard/keys?revoked="+mine.ID)
		if _, err := e.keys.Authenticate(mySecret); !errors.Is(err, billing.ErrKeyRevoked) {
			t.Errorf("the revoked key authenticates: %v", err)
		}
		if got, _ := e.store.Key(mine.ID); got.RevokedAt == nil || !got.RevokedAt.Equal(t0) {
			t.Errorf("revoked at %v, want %v", got.RevokedAt, t0)
		}
		stillActive(t, e, theirs, theirSecret)
		p := b.get("/dashboard/keys?revoked=" + mine.ID)
		p.want(t, http.StatusOK, "Key "+mine.ID+" is revoked", `class="state">revoked<`)
		if strings.Contains(p.Body, "/keys/"+mine.ID+"/revoke") {
			t.Error("a revoked key can be revoked again from the page")
		}
		// Revoking twice is harmless and keeps the first time.
		e.clock.Advance(time.Minute)
		b.submit("/dashboard/keys", "/dashboard/keys/"+mine.ID+"/revoke", nil).wantRedirect(t, "/dashboard/keys?revoked="+mine.ID)
		if got, _ := e.store.Key(mine.ID); !got.RevokedAt.Equal(t0) {
			t.Errorf("revoked at %v after the second time, want %v", got.RevokedAt, t0)
		}
	})

	t.Run("another account's key is not found and stays active", func(t *testing.T) {
		e, b, mine, theirs, mySecret, theirSecret := setup(t, dashboard.Config{})
		before := e.snapshot()
		b.submit("/dashboard/keys", "/dashboard/keys/"+theirs.ID+"/revoke", nil).want(t, http.StatusNotFound, "There is no such page.")
		e.unchanged(before)
		stillActive(t, e, theirs, theirSecret)
		stillActive(t, e, mine, mySecret)
	})

	t.Run("an unknown key is not found", func(t *testing.T) {
		e, b, mine, _, mySecret, _ := setup(t, dashboard.Config{})
		before := e.snapshot()
		b.submit("/dashboard/keys", "/dashboard/keys/key_doesnotexist/revoke", nil).want(t, http.StatusNotFound)
		e.unchanged(before)
		stillActive(t, e, mine, mySecret)
	})

	forged := forgedTokens("/dashboard/keys", true)
	for _, tc := range forged {
		t.Run(tc.name, func(t *testing.T) {
			e, b, mine, _, mySecret, _ := setup(t, dashboard.Config{})
			token := tc.token(e)
			before := e.snapshot()
			b.post("/dashboard/keys/"+mine.ID+"/revoke", withCSRF(nil, token)).want(t, http.StatusForbidden, "This form has expired.")
			e.unchanged(before)
			stillActive(t, e, mine, mySecret)
		})
	}

	t.Run("a form sent after the session expired revokes nothing", func(t *testing.T) {
		e, b, mine, _, mySecret, _ := setup(t, dashboard.Config{SessionLifetime: time.Hour})
		token := b.get("/dashboard/keys").csrf(t)
		e.clock.Advance(time.Hour)
		before := e.snapshot()
		b.post("/dashboard/keys/"+mine.ID+"/revoke", url.Values{"csrf": {token}}).wantRedirect(t, "/dashboard/login?expired=1")
		e.unchanged(before)
		stillActive(t, e, mine, mySecret)
	})
}

func TestRevokedNoticeNamesOnlyTheAccountsRevokedKeys(t *testing.T) {
	e := start(t, dashboard.Config{})
	b, u := e.signedIn("ada@example.com", 0)
	active, _ := e.key(u.AccountID, "active")
	grace := e.user("grace@example.com", 0)
	theirs, _ := e.key(grace.AccountID, "theirs")
	if _, err := e.keys.RevokeKey(theirs.ID); err != nil {
		t.Fatal(err)
	}
	// A link anyone can send must not put its words in the dashboard's
	// mouth.
	for _, id := range []string{"all. Your account is suspended: call +1 555 0100", active.ID, theirs.ID} {
		p := b.get("/dashboard/keys?revoked=" + url.QueryEscape(id))
		p.want(t, http.StatusOK)
		if strings.Contains(p.Body, `id="notice"`) {
			t.Errorf("?revoked=%s shows a notice:\n%s", id, p.section(t, "notice", "</p>"))
		}
	}
}
