package dashboard_test

import (
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/arcaneapi/caddy-arcane/billing"
	"github.com/arcaneapi/caddy-arcane/caddymodule/dashboard"
	"github.com/arcaneapi/caddy-arcane/ratelimit"
)

var (
	ledgerRow = regexp.MustCompile(`<tr class="ledger-row (charge|credit)" data-seq="(\d+)"(?: data-request-id="([^"]*)")?>`)
	olderLink = regexp.MustCompile(`<a href="(/dashboard/usage\?before=\d+)" id="older">`)
)

// ledgerRows are the request ids of the page's ledger rows, "credit" for
// credits, top to bottom.
func (r *response) ledgerRows() []string {
	var out []string
	for _, m := range ledgerRow.FindAllStringSubmatch(r.Body, -1) {
		if m[1] == "credit" {
			out = append(out, "credit")
		} else {
			out = append(out, m[3])
		}
	}
	return out
}

func TestUsagePage(t *testing.T) {
	t.Run("charges over two days show in the ledger and the charts", func(t *testing.T) {
		e := start(t, dashboard.Config{})
		// The ledger is written in time order: the accounts open first.
		e.clock.Set(t0.Add(-24 * time.Hour))
		u := e.user("ada@example.com", 10*billing.Dollar)
		k, _ := e.key(u.AccountID, "laptop")
		grace := e.user("grace@example.com", 10*billing.Dollar)
		e.settle(billing.Charge{RequestID: "req-1", AccountID: u.AccountID, KeyID: k.ID, Model: "gpt-5.2",
			Usage: billing.Usage{PromptTokens: 1000, CompletionTokens: 500}, Cost: 8_750})
		e.settle(billing.Charge{RequestID: "req-2", AccountID: u.AccountID, KeyID: k.ID, Model: "claude-sonnet-4-6",
			Usage: billing.Usage{PromptTokens: 2000, CompletionTokens: 100}, Cost: 7_500})
		e.clock.Set(t0)
		e.settle(billing.Charge{RequestID: "req-3", AccountID: u.AccountID, KeyID: k.ID, Model: "gpt-5.2",
			Usage: billing.Usage{PromptTokens: 10, CompletionTokens: 20}, Cost: 298, Outcome: "client_closed", Basis: "counted"})
		e.settle(billing.Charge{RequestID: "req-grace", AccountID: grace.AccountID, Model: "gpt-5.2",
			Usage: billing.Usage{PromptTokens: 1, CompletionTokens: 1}, Cost: 16})

		b := e.browser()
		b.logIn("ada@example.com")
		p := b.get("/dashboard/usage")
		p.want(t, http.StatusOK, "laptop (…"+k.Last4+")", "(client_closed)", "-$0.00875", "$9.983452", "1,000")
		if got, want := p.ledgerRows(), []string{"req-3", "req-2", "req-1", "credit"}; !slicesEqual(got, want) {
			t.Errorf("ledger rows %v, want %v", got, want)
		}
		if strings.Contains(p.Body, "req-grace") {
			t.Error("the page shows another account's request")
		}
		if olderLink.MatchString(p.Body) || strings.Contains(p.Body, `id="newest"`) {
			t.Error("one page of rows links to others")
		}
		// Three bars' segments per chart: gpt-5.2 and claude on the
		// first day, gpt-5.2 on the second.
		for _, id := range []string{"chart-tokens", "chart-cost"} {
			svg := p.section(t, id, "</svg>")
			if n := strings.Count(svg, "<rect x="); n != 3 {
				t.Errorf("#%s has %d bars' segments, want 3:\n%s", id, n, svg)
			}
			for _, title := range []string{"Mar 9 · gpt-5.2: ", "Mar 9 · claude-sonnet-4-6: ", "Mar 10 · gpt-5.2: "} {
				if !strings.Contains(svg, title) {
					t.Errorf("#%s has no segment titled %q…:\n%s", id, title, svg)
				}
			}
		}
		tokens := p.section(t, "chart-tokens", "</svg>")
		for _, s := range []string{"Mar 9 · gpt-5.2: 1,500 tokens, 1 request", "Mar 10 · gpt-5.2: 30 tokens"} {
			if !strings.Contains(tokens, s) {
				t.Errorf("the tokens chart does not say %q:\n%s", s, tokens)
			}
		}
		cost := p.section(t, "chart-cost", "</svg>")
		if !strings.Contains(cost, "Mar 9 · claude-sonnet-4-6: $0.0075, 1 request") {
			t.Errorf("the cost chart does not price claude's day:\n%s", cost)
		}
	})

	t.Run("an account without usage sees no chart", func(t *testing.T) {
		e := start(t, dashboard.Config{})
		b, _ := e.signedIn("ada@example.com", 0)
		p := b.get("/dashboard/usage")
		p.want(t, http.StatusOK, "No usage in the last 30 days.", "Nothing yet.")
		if strings.Contains(p.Body, "<rect") {
			t.Error("an empty chart has bars")
		}
	})

	t.Run("the ledger is paged, newest first", func(t *testing.T) {
		e := start(t, dashboard.Config{})
		b, u := e.signedIn("ada@example.com", 10*billing.Dollar)
		const charges = dashboard.UsagePage + 5
		for i := range charges {
			e.clock.Advance(time.Minute)
			e.settle(billing.Charge{RequestID: fmt.Sprintf("req-%02d", i), AccountID: u.AccountID, Model: "gpt-5.2",
				Usage: billing.Usage{PromptTokens: 10}, Cost: 1})
		}
		first := b.get("/dashboard/usage")
		first.want(t, http.StatusOK)
		rows := first.ledgerRows()
		if len(rows) != dashboard.UsagePage || rows[0] != fmt.Sprintf("req-%02d", charges-1) {
			t.Fatalf("the first page holds %v", rows)
		}
		m := olderLink.FindStringSubmatch(first.Body)
		if m == nil {
			t.Fatalf("the first page has no Older link:\n%s", first.Body)
		}
		second := b.get(m[1])
		second.want(t, http.StatusOK, `id="newest"`)
		want := []string{"req-04", "req-03", "req-02", "req-01", "req-00", "credit"}
		if got := second.ledgerRows(); !slicesEqual(got, want) {
			t.Errorf("the second page holds %v, want %v", got, want)
		}
		if olderLink.MatchString(second.Body) {
			t.Error("the last page links to an older one")
		}
	})

	for _, before := range []string{"garbage", "0", "-1", "1.5", "99999999999999999999"} {
		t.Run("a page cursor of "+before+" is refused", func(t *testing.T) {
			e := start(t, dashboard.Config{})
			b, _ := e.signedIn("ada@example.com", 0)
			b.get("/dashboard/usage?before="+before).want(t, http.StatusBadRequest, "That page of the ledger does not exist.")
		})
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, "\x00") == strings.Join(b, "\x00") }

func TestOverview(t *testing.T) {
	t.Run("it shows the balance, what is held and this month's spending", func(t *testing.T) {
		e := start(t, dashboard.Config{APIURL: "https://api.example.com/v1/", Billing: "Write to billing@example.com."})
		// Last month's spending does not count.
		e.clock.Set(time.Date(2026, time.February, 28, 23, 59, 0, 0, time.UTC))
		u := e.user("ada@example.com", 10*billing.Dollar)
		e.settle(billing.Charge{RequestID: "req-feb", AccountID: u.AccountID, Model: "gpt-5.2", Usage: billing.Usage{PromptTokens: 9}, Cost: billing.Dollar})
		e.clock.Set(t0)
		e.settle(billing.Charge{RequestID: "req-1", AccountID: u.AccountID, Model: "gpt-5.2",
			Usage: billing.Usage{PromptTokens: 1000, CompletionTokens: 200}, Cost: 500_000})
		e.settle(billing.Charge{RequestID: "req-2", AccountID: u.AccountID, Model: "claude-sonnet-4-6",
			Usage: billing.Usage{PromptTokens: 300, CompletionTokens: 34}, Cost: 250_000})
		e.key(u.AccountID, "one")
		hold, err := e.bank.Hold(u.AccountID, 1_250_000)
		if err != nil {
			t.Fatal(err)
		}
		defer hold.Release()

		b := e.browser()
		b.logIn("ada@example.com")
		p := b.get("/dashboard/")
		p.want(t, http.StatusOK,
			`id="balance">$8.25<`, `id="held">$1.25<`, `id="available">$7.00<`,
			"Spent in March 2026", `id="spent">$0.75<`, "2 requests · 1,534 tokens",
			"You have 1 active key;", "Write to billing@example.com. Your account id is <code id=\"account-id\">"+u.AccountID+"</code>")
		quickstart := p.section(t, "api-url", "</section>")
		if n := strings.Count(quickstart, "https://api.example.com/v1/chat/completions"); n != 3 {
			t.Errorf("the quickstart names the configured URL %d times, want 3 (curl, Python, JS):\n%s", n, quickstart)
		}
		for _, s := range []string{`"model": "gpt-5.2"`, `"model": "claude-sonnet-4-6"`, `model: "gpt-5.2"`, "GET https://api.example.com/v1/models"} {
			if !strings.Contains(quickstart, s) {
				t.Errorf("the quickstart does not say %q:\n%s", s, quickstart)
			}
		}
		hold.Release()
		b.get("/dashboard/").want(t, http.StatusOK, `id="held">$0.00<`, `id="available">$8.25<`)
	})

	for _, tls := range []bool{false, true} {
		scheme := map[bool]string{false: "http", true: "https"}[tls]
		t.Run("without a configured URL the quickstart uses the request's, over "+scheme, func(t *testing.T) {
			var e *env
			if tls {
				e = startTLS(t, dashboard.Config{})
			} else {
				e = start(t, dashboard.Config{})
			}
			b, _ := e.signedIn("ada@example.com", 0)
			url := scheme + "://" + e.host() + "/v1"
			p := b.get("/dashboard/")
			p.want(t, http.StatusOK, `<code id="api-url">`+url+`</code>`, "curl -X POST "+url+"/chat/completions",
				"To add credit, ask the operator of this gateway.")
		})
	}
}

func TestModelsPage(t *testing.T) {
	e := start(t, dashboard.Config{})
	b, _ := e.signedIn("ada@example.com", 0)
	p := b.get("/dashboard/models")
	p.want(t, http.StatusOK, "per million tokens")
	for _, want := range []string{
		`<tr data-model="gpt-5.2"><td><code>gpt-5.2</code></td><td>openai</td><td class="num">400,000</td>` +
			`<td class="num">$1.75</td><td class="num">$0.175</td><td class="num">–</td><td class="num">$14.00</td></tr>`,
		`<tr data-model="claude-sonnet-4-6"><td><code>claude-sonnet-4-6</code></td><td>anthropic</td><td class="num">200,000</td>` +
			`<td class="num">$3.00</td><td class="num">$0.30</td><td class="num">$3.75</td><td class="num">$15.00</td></tr>`,
	} {
		if !strings.Contains(strings.ReplaceAll(p.Body, "\n    ", ""), want) {
			t.Errorf("the models page has no row\n%s\nin\n%s", want, p.Body)
		}
	}
	if n := strings.Count(p.Body, "<tr data-model="); n != len(testModels) {
		t.Errorf("%d models listed, want %d", n, len(testModels))
	}
}

func TestSecurityHeaders(t *testing.T) {
	e := start(t, dashboard.Config{})
	signedOut := e.browser()
	signedIn, _ := e.signedIn("ada@example.com", 0)
	pages := []struct {
		b      *browser
		path   string
		status int
	}{
		{signedOut, "/dashboard/login", http.StatusOK},
		{signedOut, "/dashboard/signup", http.StatusOK},
		{signedOut, "/dashboard/nowhere", http.StatusNotFound},
		{signedOut, "/dashboard/", http.StatusSeeOther},
		{signedIn, "/dashboard/", http.StatusOK},
		{signedIn, "/dashboard/keys", http.StatusOK},
		{signedIn, "/dashboard/usage", http.StatusOK},
		{signedIn, "/dashboard/usage?before=x", http.StatusBadRequest},
		{signedIn, "/dashboard/models", http.StatusOK},
		{signedIn, "/dashboard/static/style.css", http.StatusOK},
	}
	for _, p := range pages {
		r := p.b.get(p.path)
		if r.Status != p.status {
			t.Errorf("GET %s: status %d, want %d", p.path, r.Status, p.status)
		}
		csp := r.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") ||
			!strings.Contains(csp, "form-action 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: Content-Security-Policy %q", p.path, csp)
		}
		if got := r.Header.Get("X-Frame-Options"); got != "DENY" {
			t.Errorf("GET %s: X-Frame-Options %q", p.path, got)
		}
		if got := r.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q", p.path, got)
		}
		if strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") && r.Status != http.StatusSeeOther {
			if got := r.Header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("GET %s: Cache-Control %q, want no-store", p.path, got)
			}
			if strings.Contains(r.Body, "<script>") || strings.Contains(r.Body, "style=") || strings.Contains(r.Body, " onclick") {
				t.Errorf("GET %s: inline script or style, which the policy blocks", p.path)
			}
		}
	}
	// A refused form is a page too.
	r := signedIn.post("/dashboard/keys", nil)
	if r.Status != http.StatusForbidden || r.Header.Get("X-Frame-Options") != "DENY" || r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("a refused form: %d, headers %v", r.Status, r.Header)
	}
}

func TestStaticAssets(t *testing.T) {
	e := start(t, dashboard.Config{})
	b := e.browser()
	for _, name := range []string{"style.css", "app.js"} {
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile("static/" + name)
			if err != nil {
				t.Fatal(err)
			}
			r := b.get("/dashboard/static/" + name)
			r.want(t, http.StatusOK)
			if r.Body != string(want) {
				t.Error("the asset is not the embedded file")
			}
			etag := r.Header.Get("ETag")
			if !regexp.MustCompile(`^"[0-9a-f]+"$`).MatchString(etag) || r.Header.Get("Cache-Control") != "no-cache" {
				t.Errorf("ETag %q, Cache-Control %q", etag, r.Header.Get("Cache-Control"))
			}
			kind := map[string]string{"style.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}[name]
			if got := r.Header.Get("Content-Type"); got != kind {
				t.Errorf("Content-Type %q, want %q", got, kind)
			}

			again := b.do(http.MethodGet, "/dashboard/static/"+name, nil, http.Header{"If-None-Match": {etag}})
			if again.Status != http.StatusNotModified || again.Body != "" || again.Header.Get("ETag") != etag {
				t.Errorf("revalidation: %d, ETag %q, %d bytes", again.Status, again.Header.Get("ETag"), len(again.Body))
			}
			stale := b.do(http.MethodGet, "/dashboard/static/"+name, nil, http.Header{"If-None-Match": {`"0000"`}})
			if stale.Status != http.StatusOK || stale.Body != string(want) {
				t.Errorf("a stale ETag got %d", stale.Status)
			}

			// Pages link the asset by a versioned URL, cached for good.
			link := regexp.MustCompile(`"(/dashboard/static/` + regexp.QuoteMeta(name) + `\?v=[0-9a-f]+)"`).
				FindStringSubmatch(b.get("/dashboard/login").Body)
			if link == nil {
				t.Fatal("the log-in page does not link the asset")
			}
			if cc := b.get(link[1]).Header.Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
				t.Errorf("the versioned asset has Cache-Control %q", cc)
			}
		})
	}
	b.get("/dashboard/static/nothing.css").want(t, http.StatusNotFound)
}

func TestBasePath(t *testing.T) {
	e := start(t, dashboard.Config{Base: "/portal"})
	e.user("ada@example.com", 0)
	b := e.browser()
	r := b.get("/portal")
	if r.Status != http.StatusMovedPermanently || r.Header.Get("Location") != "/portal/" {
		t.Errorf("GET /portal: %d to %q, want 301 to /portal/", r.Status, r.Header.Get("Location"))
	}
	b.get("/portal/").wantRedirect(t, "/portal/login")
	p := b.get("/portal/login")
	p.want(t, http.StatusOK, `action="/portal/login"`, `href="/portal/signup"`, `href="/portal/static/style.css?v=`)
	r = b.post("/portal/login", withCSRF(loginFields("ada@example.com", password), p.csrf(t)))
	r.wantRedirect(t, "/portal/")
	if c := r.cookie(sessionCookie); c == nil || c.Path != "/portal/" {
		t.Errorf("session cookie %+v, want Path=/portal/", c)
	}
	b.get("/portal/keys").want(t, http.StatusOK, `action="/portal/keys"`)
	b.get("/dashboard/login").want(t, http.StatusNotFound)
}

func TestNewRefusesBadConfig(t *testing.T) {
	e := start(t, dashboard.Config{})
	deps := dashboard.Deps{Store: e.store, Keyring: e.keys, Bank: e.bank, Limiter: ratelimit.New(ratelimit.Options{})}
	bad := []struct {
		name string
		cfg  dashboard.Config
	}{
		{"a base path without a leading slash", dashboard.Config{Base: "dashboard"}},
		{"a base path with a trailing slash", dashboard.Config{Base: "/dashboard/"}},
		{"an unknown sign-up mode", dashboard.Config{Signup: "closed"}},
		{"a negative starting balance", dashboard.Config{StartingBalance: -1}},
		{"a negative session lifetime", dashboard.Config{SessionLifetime: -time.Second}},
		{"a negative key count", dashboard.Config{MaxKeys: -1}},
		{"a negative rpm cap", dashboard.Config{MaxRPM: -1}},
		{"a log-in limit without a window", dashboard.Config{LoginLimit: ratelimit.Limit{Count: 5}}},
		{"an address limit without a count", dashboard.Config{AddressLimit: ratelimit.Limit{Window: time.Minute}}},
		{"an API URL that is not http", dashboard.Config{APIURL: "ftp://example.com/v1"}},
	}
	for _, tc := range bad {
		if _, err := dashboard.New(tc.cfg, deps); err == nil {
			t.Errorf("%s was accepted", tc.name)
		}
	}
	if _, err := dashboard.New(dashboard.Config{}, dashboard.Deps{Store: e.store}); err == nil {
		t.Error("missing dependencies were accepted")
	}
}
