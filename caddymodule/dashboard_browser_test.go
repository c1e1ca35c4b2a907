package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// The dashboard's end-to-end test: a real arcane in this process, and a
// client's whole story in Debian's chromium driven by playwright-core
// (testdata/browser/dashboard.mjs): sign up, log out and in, create a key,
// copy it, call the API with it, find the request in usage and the balance
// lower, revoke the key, get 401, log out. `make test` installs the npm
// packages first; `make screenshots` runs it with ARCANE_SCREENSHOTS set,
// which saves a picture of every page for the README.

const (
	// browserDir holds the script and its npm packages.
	browserDir = "testdata/browser"
	// browserStartingBalance is the configured starting_balance, and
	// browserBalanceShown how the overview shows it.
	browserStartingBalance = "5"
	browserBalanceShown    = "$5.00"
	// browserRunLimit bounds the script; it has limits of its own, each
	// shorter (150s in all), and fails with a clearer message.
	browserRunLimit = 3 * time.Minute
)

// dashboardArcane is the catalog: publicModel on the fake upstream, as the
// chat tests have it, and an Anthropic-shaped mock beside it, so the key
// form and the models page offer more than one model.
const dashboardArcane = `provider mock-anthropic {
			type mock
			format anthropic
			reply_tokens 24
		}
		model claude-sonnet-4-6 {
			deploy mock-anthropic claude-sonnet-4-6
			price input 3.00 output 15.00 cached_input 0.30
			context_length 200000
			max_output_tokens 64000
			owned_by anthropic
		}`

// dashboardCaddyfile is Caddyfile.example's site on the test ports: the API
// behind arcane_auth, arcane_limit and arcane_balance, and the dashboard at
// /dashboard with open sign-up and a starting balance.
func dashboardCaddyfile(storage, upstreamURL string) string {
	return testGlobals(storage, chatArcane(upstreamURL+"/v1", dashboardArcane)) + fmt.Sprintf(`
http://localhost:9080 {
	handle /v1/* {
		route {
			arcane_auth
			arcane_limit {
				requests 600 1m
				tokens 2000000 1m
			}
			arcane_balance
			handle /v1/chat/completions {
				arcane_proxy
			}
			handle /v1/models {
				arcane_models
			}
			handle {
				header Content-Type application/json
				respond `+"`"+`{"error":{"message":"Unknown endpoint.","type":"invalid_request_error","param":null,"code":"unknown_url"}}`+"`"+` 404
			}
		}
	}
	handle /dashboard* {
		arcane_dashboard {
			starting_balance %s
			billing "Write to billing@example.com with your account id."
		}
	}
}
`, browserStartingBalance)
}

// browserTools finds node, the script's npm packages and chromium, and
// fails the test with what to run when one is missing: CI installs them
// (.ci/run, make test), so a missing one is an error, never a skip.
func browserTools(t *testing.T) (node, dir, chromium string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed; the dashboard's browser test needs Node.js 20 or newer with npm: " +
			"apt-get install nodejs npm, then run make test, which installs the npm packages")
	}
	dir, err = filepath.Abs(browserDir)
	if err != nil {
		t.Fatal(err)
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err == nil {
		err = json.Unmarshal(data, &lock)
	}
	if err != nil {
		t.Fatalf("reading %s/package-lock.json: %v", browserDir, err)
	}
	want := lock.Packages["node_modules/playwright-core"].Version
	var installed struct {
		Version string `json:"version"`
	}
	data, err = os.ReadFile(filepath.Join(dir, "node_modules", "playwright-core", "package.json"))
	if err == nil {
		err = json.Unmarshal(data, &installed)
	}
	switch {
	case err != nil:
		t.Fatalf("the browser test's npm packages are not installed (%v): run make test, which installs them "+
			"(npm ci --prefix caddymodule/%s)", err, browserDir)
	case installed.Version != want:
		t.Fatalf("caddymodule/%s/node_modules holds playwright-core %s, but package-lock.json pins %s: "+
			"run make test, which installs them (npm ci --prefix caddymodule/%s)", browserDir, installed.Version, want, browserDir)
	}
	chromium = os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if info, err := os.Stat(chromium); err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
		t.Fatalf("no chromium at %s: apt-get install -y chromium (Debian's; the test never downloads a browser), "+
			"or set CHROMIUM to another Chromium", chromium)
	}
	return node, dir, chromium
}

// browserResult is what the script reports on its last line.
type browserResult struct {
	Email     string `json:"email"`
	KeyID     string `json:"keyId"`
	RequestID string `json:"requestId"`
	Last4     string `json:"last4"`
	// AccountID is the id the overview shows, if it shows one.
	AccountID string `json:"accountId"`
}

func TestDashboardInBrowser(t *testing.T) {
	node, dir, chromium := browserTools(t)
	var screenshots string
	if s := os.Getenv("ARCANE_SCREENSHOTS"); s != "" {
		abs, err := filepath.Abs(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(abs, 0o755); err != nil {
			t.Fatal(err)
		}
		screenshots = abs
	}

	t.Setenv(upstreamKeyEnv, "sk-upstream-browser-test")
	up := newFakeUpstream(t)
	tester := caddytest.NewTester(t)
	tester.InitServer(dashboardCaddyfile(filepath.Join(t.TempDir(), "arcane.db"), up.URL), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}

	// A fresh store each run; the pictures show a person's address.
	email := fmt.Sprintf("browser-%d@example.com", time.Now().UnixNano())
	if screenshots != "" {
		email = "ada@example.com"
	}
	ctx, cancel := context.WithTimeout(context.Background(), browserRunLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "dashboard.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BASE="+siteURL, "SCREENSHOTS="+screenshots, "CHROMIUM="+chromium,
		"EMAIL="+email, "BALANCE="+browserBalanceShown, "MODEL="+publicModel)
	// At the deadline, SIGINT first: playwright closes chromium on it.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	out := &lineLog{t: t}
	cmd.Stdout, cmd.Stderr = out, out
	started := time.Now()
	err := cmd.Run()
	out.flush()
	t.Logf("the browser script ran for %v", time.Since(started).Round(time.Millisecond))
	if ctx.Err() != nil {
		t.Fatalf("the browser script did not finish within %v", browserRunLimit)
	}
	if err != nil {
		t.Fatalf("the browser script failed (%v): its FAIL line above says which step and why", err)
	}
	res := out.result(t)
	if res.Email != email || !strings.HasPrefix(res.KeyID, "key_") || res.RequestID == "" {
		t.Fatalf("the script's result is incomplete: %+v", res)
	}

	// The browser's story, as the store tells it.
	var accts list[testAccount]
	adminOK(t, http.MethodGet, "/arcane/accounts", nil, http.StatusOK, &accts)
	idx := slices.IndexFunc(accts.Data, func(a testAccount) bool { return a.Name == email })
	if len(accts.Data) != 1 || idx != 0 {
		t.Fatalf("the store has accounts %+v, want the one signed up as %s", accts.Data, email)
	}
	acct := accts.Data[0]
	if res.AccountID != "" && res.AccountID != acct.ID {
		t.Errorf("the overview shows account id %s, but the store has %s", res.AccountID, acct.ID)
	}

	var ledger testLedgerPage
	adminOK(t, http.MethodGet, "/arcane/accounts/"+acct.ID+"/ledger", nil, http.StatusOK, &ledger)
	var charges []testEntry
	for _, e := range ledger.Data {
		if e.Kind == string(billing.EntryCharge) {
			charges = append(charges, e)
		}
	}
	if len(ledger.Data) != 2 || len(charges) != 1 {
		t.Fatalf("the ledger holds %+v, want the opening credit and one charge", ledger.Data)
	}
	charge := charges[0]
	if charge.RequestID != res.RequestID || charge.KeyID != res.KeyID || charge.Model != publicModel || charge.Outcome != "ok" {
		t.Errorf("the charge is %+v, want request %s with key %s on %s, ok", charge, res.RequestID, res.KeyID, publicModel)
	}
	u := standardReply.Usage
	if charge.PromptTokens != u.PromptTokens || charge.CompletionTokens != u.CompletionTokens {
		t.Errorf("the charge counts %d+%d tokens, want the upstream's %d+%d",
			charge.PromptTokens, charge.CompletionTokens, u.PromptTokens, u.CompletionTokens)
	}
	start := mustAmount(t, browserStartingBalance)
	cost := -mustAmount(t, charge.Amount)
	if cost <= 0 || mustAmount(t, acct.Balance) != start-cost || mustAmount(t, acct.Held) != 0 {
		t.Errorf("the account holds %s (held %s) after a charge of %s, want %s less it and nothing held",
			acct.Balance, acct.Held, charge.Amount, start)
	}

	var key testKey
	adminOK(t, http.MethodGet, "/arcane/keys/"+res.KeyID, nil, http.StatusOK, &key)
	if key.AccountID != acct.ID || key.State != "revoked" || key.RevokedAt == nil || key.Last4 != res.Last4 ||
		!slices.Equal(key.Models, []string{publicModel}) {
		t.Errorf("the key is %+v, want account %s's, revoked, ending %s, limited to %s", key, acct.ID, res.Last4, publicModel)
	}
	// The revoked key's call never reached the provider.
	if n := up.calls.Load(); n != 1 {
		t.Errorf("the upstream got %d requests, want the one made before the key was revoked", n)
	}
	if screenshots != "" {
		for _, name := range []string{"login", "signup", "overview", "keys", "usage", "models"} {
			info, err := os.Stat(filepath.Join(screenshots, name+".png"))
			if err != nil || info.Size() == 0 || info.ModTime().Before(started.Add(-time.Second)) {
				t.Errorf("no new screenshot %s.png in %s", name, screenshots)
			}
		}
	}
}

// lineLog writes a command's output to the test log a line at a time, and
// keeps the line that starts with RESULT.
type lineLog struct {
	t       *testing.T
	mu      sync.Mutex
	partial []byte
	last    string
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.line(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
}

func (l *lineLog) line(s string) {
	if r, ok := strings.CutPrefix(s, "RESULT "); ok {
		l.last = r
	}
	l.t.Log("browser: " + s)
}

func (l *lineLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.line(string(l.partial))
		l.partial = nil
	}
}

// result decodes the script's RESULT line.
func (l *lineLog) result(t *testing.T) browserResult {
	t.Helper()
	if l.last == "" {
		t.Fatal("the browser script exited 0 without its RESULT line")
	}
	var res browserResult
	if err := json.Unmarshal([]byte(l.last), &res); err != nil {
		t.Fatalf("the RESULT line %q: %v", l.last, err)
	}
	return res
}
