package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// plainCaddyfile is a config without the arcane app.
const plainCaddyfile = `{
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns
}

http://localhost:9080 {
	respond "plain"
}
`

// pooledDatabase returns the *database the pool holds for path, or nil,
// without taking a reference.
func pooledDatabase(path string) *database {
	var db *database
	databases.Range(func(key, value any) bool {
		if key == path {
			db = value.(*database)
			return false
		}
		return true
	})
	return db
}

// loadCaddyfile posts a Caddyfile to the admin endpoint's /load, as
// `caddy reload` does, and returns the status and answer.
func loadCaddyfile(t testing.TB, cfg string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, adminURL+"/load", strings.NewReader(cfg))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	req.Header.Set("Origin", adminURL)
	// A fresh connection: a failed load restarts the admin endpoint, so a
	// kept-alive one may be dead (seen in CI as "POST /load: EOF").
	req.Close = true
	resp, err := (&http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatalf("POST /load: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestReloadSharesTheOpenDatabase(t *testing.T) {
	configured := filepath.Join(t.TempDir(), "arcane.db")
	path, err := databasePath(configured)
	if err != nil {
		t.Fatal(err)
	}
	tester := caddytest.NewTester(t)

	// Config A.
	tester.InitServer(testCaddyfile(configured, "", ""), "caddyfile")
	if refs, ok := databases.References(path); !ok || refs != 1 {
		t.Fatalf("after loading A the pool has %d references to %s (present: %v), want 1", refs, path, ok)
	}
	dbA := pooledDatabase(path)
	if dbA == nil {
		t.Fatal("the pool has no database for the storage path")
	}
	acct := createAccount(t, "survivor")
	key := createKey(t, acct.ID, nil)
	assertStatusOK(t, tester, key.Key)

	// Config B: same storage, another site.
	tester.InitServer(testCaddyfile(configured, "", `handle /v1/extra {
			respond "extra"
		}`), "caddyfile")
	status, _, body := apiGet(t, tester, "/v1/extra", "Bearer "+key.Key)
	if status != http.StatusOK || body != "extra" {
		t.Fatalf("config B is not running: GET /v1/extra answered %d %q", status, body)
	}
	if refs, ok := databases.References(path); !ok || refs != 1 {
		t.Errorf("after reloading the pool has %d references (present: %v), want 1", refs, ok)
	}
	if db := pooledDatabase(path); db != dbA {
		t.Errorf("reloading reopened the database: %p, was %p", db, dbA)
	}
	app, err := caddy.ActiveContext().App("arcane")
	if err != nil {
		t.Fatalf("the running config has no arcane app: %v", err)
	}
	if db := app.(*App).db; db != dbA {
		t.Errorf("the running app uses database %p, want the shared %p", db, dbA)
	}
	var got testAccount
	adminOK(t, http.MethodGet, "/arcane/accounts/"+acct.ID, nil, http.StatusOK, &got)
	if got.Name != "survivor" {
		t.Errorf("account after reload: %+v", got)
	}
	assertStatusOK(t, tester, key.Key)

	// Config C: no arcane app at all.
	tester.InitServer(plainCaddyfile, "caddyfile")
	tester.AssertGetResponse(siteURL+"/", http.StatusOK, "plain")
	if refs, ok := databases.References(path); ok || refs != 0 {
		t.Fatalf("after unloading the app the pool still has %d references to %s", refs, path)
	}
	store, err := billing.OpenBolt(path, billing.BoltOptions{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("the database file is still locked after unloading the app: %v", err)
	}
	defer store.Close()
	if a, err := store.Account(acct.ID); err != nil || a.Name != "survivor" {
		t.Errorf("the account is not in the file after unloading: %+v, %v", a, err)
	}
}

func TestLoadFailsFastWhenTheDatabaseIsLocked(t *testing.T) {
	tester, running := startArcane(t)
	acct := createAccount(t, "running")
	key := createKey(t, acct.ID, nil)

	locked := filepath.Join(t.TempDir(), "locked.db")
	holder, err := billing.OpenBolt(locked, billing.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			holder.Close()
		}
	}()

	start := time.Now()
	status, body := loadCaddyfile(t, testCaddyfile(locked, "open_timeout 200ms", ""))
	elapsed := time.Since(start)
	if status == http.StatusOK {
		t.Fatalf("loading a config whose database is locked succeeded")
	}
	if !strings.Contains(body, "caddy reload") {
		t.Errorf("the error does not point to caddy reload: %s", body)
	}
	if elapsed > 3*time.Second {
		t.Errorf("failing took %v; open_timeout is 200ms", elapsed)
	}
	lockedPath, _ := databasePath(locked)
	if _, ok := databases.References(lockedPath); ok {
		t.Error("the failed load left the locked path in the pool")
	}

	// The running config is untouched.
	runningPath, _ := databasePath(running)
	if refs, ok := databases.References(runningPath); !ok || refs != 1 {
		t.Errorf("the running config's database has %d references (present: %v), want 1", refs, ok)
	}
	adminOK(t, http.MethodGet, "/arcane/accounts/"+acct.ID, nil, http.StatusOK, nil)
	assertStatusOK(t, tester, key.Key)

	// Once the other holder lets go, the same config loads.
	holder.Close()
	closed = true
	tester.InitServer(testCaddyfile(locked, "open_timeout 200ms", ""), "caddyfile")
	adminOK(t, http.MethodGet, "/arcane/accounts", nil, http.StatusOK, nil)
	if _, ok := databases.References(runningPath); ok {
		t.Error("the replaced config's database is still open")
	}
}

// A config can fail after Caddy has already replaced the admin endpoint
// (the arcane admin routes are provisioned with the new config, before its
// apps): then Caddy keeps running the old config, and the arcane admin API
// must keep serving it.
func TestFailedReloadKeepsTheAdminAPIWorking(t *testing.T) {
	tester, path := startArcane(t)
	acct := createAccount(t, "kept")
	key := createKey(t, acct.ID, nil)

	// path_regexp compiles its pattern in Provision, after the arcane app
	// and the admin endpoint are set up.
	status, body := loadCaddyfile(t, testCaddyfile(path, "", `@bad path_regexp "("
		respond @bad 400`))
	if status == http.StatusOK {
		t.Fatalf("loading a config with a bad regexp succeeded")
	}
	t.Logf("load refused as expected: %s", body)

	assertStatusOK(t, tester, key.Key)
	abs, _ := databasePath(path)
	if refs, ok := databases.References(abs); !ok || refs != 1 {
		t.Errorf("after the failed load the database has %d references (present: %v), want 1", refs, ok)
	}
	var got testAccount
	adminOK(t, http.MethodGet, "/arcane/accounts/"+acct.ID, nil, http.StatusOK, &got)
	if got.Name != "kept" {
		t.Errorf("account after the failed load: %+v", got)
	}
	adminOK(t, http.MethodPost, "/arcane/accounts/"+acct.ID+"/credit", `{"amount":"1"}`, http.StatusOK, nil)
}

// dashboardLoginCaddyfile serves only the dashboard, with a log-in budget
// of two attempts an hour per email.
func dashboardLoginCaddyfile(storage string) string {
	return testGlobals(storage, "") + `
http://localhost:9080 {
	handle /dashboard* {
		arcane_dashboard {
			login_limit 2 1h
			address_limit 1000 1h
		}
	}
}
`
}

// Promise 8 for the dashboard: a reload keeps the log-in budgets, so it
// gives someone guessing passwords no fresh attempts.
func TestReloadKeepsDashboardLogInBudgets(t *testing.T) {
	cfg := dashboardLoginCaddyfile(filepath.Join(t.TempDir(), "arcane.db"))
	tester := caddytest.NewTester(t)
	tester.InitServer(cfg, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	// An email no test has used, so its budget is this test's alone.
	email := fmt.Sprintf("guess-%d@example.com", time.Now().UnixNano())
	token := strings.Repeat("t", 43) // a double-submit token: the cookie and the field agree
	login := func() int {
		t.Helper()
		form := url.Values{"email": {email}, "password": {"not the password"}, "csrf": {token}}
		req, err := http.NewRequest(http.MethodPost, siteURL+"/dashboard/login", strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: "arcane_csrf", Value: token})
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("POST /dashboard/login: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 2 {
		if got := login(); got != http.StatusUnauthorized {
			t.Fatalf("attempt %d: status %d, want 401 (a wrong password within the budget)", i+1, got)
		}
	}
	if got := login(); got != http.StatusTooManyRequests {
		t.Fatalf("third attempt: status %d, want 429 (the budget is spent)", got)
	}
	forceReload(t, cfg)
	if got := login(); got != http.StatusTooManyRequests {
		t.Errorf("after a reload: status %d, want 429 (the reload must not restore the budget)", got)
	}
}
