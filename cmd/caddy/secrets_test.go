package main

// The "No secrets anywhere" promise of README.md (Observability), end to
// end: a server with debug logging, an access log and two providers whose
// keys come from the environment serves a full scenario (successes, every
// kind of refusal, a revoked key, a provider rejecting the gateway's key),
// every admin answer is read, and then everything the server said
// anywhere is searched for every secret involved.

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// TestSecretsNeverLeak runs the scenario and searches every log line
// (debug included), the access log, every client and admin answer (bodies
// and headers), /metrics, Caddy's config and its autosave, and what the
// provider received, for each client key secret, its SHA-256 (hex and
// base64), both provider keys and the Authorization header values. A
// client key may appear only in the one answer that created it.
func TestSecretsNeverLeak(t *testing.T) {
	needBinary(t)
	began := time.Now()

	providerKey1 := "sk-proj-" + secRandHex(t, 16)
	providerKey2 := "sk-proj-" + secRandHex(t, 16)
	up := newSecUpstream(t, map[string]string{
		"/p1/v1/chat/completions": providerKey1,
		"/p2/v1/chat/completions": providerKey2,
	})

	h := newHarness(t)
	accessLog := filepath.Join(h.dir, "access.log")
	h.config = secWriteCaddyfile(t, up.srv.URL, accessLog)
	h.env = append(h.env, "ARCANE_TEST_PROVIDER_KEY="+providerKey1, "ARCANE_TEST_PROVIDER_KEY2="+providerKey2)

	srv := h.startServer("secrets run (debug)", false)
	c := &secCorpus{}
	admin := fmt.Sprintf("http://127.0.0.1:%d", srv.adminPort)
	keyIDRE := regexp.MustCompile(`key_[0-9A-Za-z]{16}`)

	// 1. An account and keys: k1 through the CLI (human output), k2
	// through the admin API, k3 (one model, 2 rpm) through the CLI's
	// --json, k4 on an account without money.
	var acct struct{ ID string }
	secUnmarshal(t, "accounts create --json", c.cli(t, srv, "accounts", "create", "Secrets Inc", "--balance", "10.00", "--json"), &acct)
	if !strings.HasPrefix(acct.ID, "acct_") {
		t.Fatalf("accounts create: no acct_ id: %+v", acct)
	}

	k1Out, k1Err := secArcane(t, srv, "keys", "create", acct.ID, "--name", "k1")
	m := regexp.MustCompile(`(?m)^key: (ak_[0-9A-Za-z]{49})$`).FindStringSubmatch(k1Out)
	if m == nil {
		t.Fatalf("keys create: no line \"key: ak_...\":\n%s", redact(k1Out))
	}
	k1 := m[1]
	k1ID := keyIDRE.FindString(k1Out)
	if k1ID == "" {
		t.Fatalf("keys create: no key id:\n%s", redact(k1Out))
	}
	c.add("caddy arcane keys create (k1's creation answer) stdout", k1Out, k1)
	c.add("caddy arcane keys create (k1's creation answer) stderr", k1Err)

	var k2View struct{ ID, Key string }
	status, hdr, body := c.do(t, "POST /arcane/accounts/{id}/keys (k2's creation answer)", http.MethodPost,
		admin+"/arcane/accounts/"+acct.ID+"/keys", "", `{"name":"k2"}`)
	if status != http.StatusCreated {
		t.Fatalf("POST /arcane/accounts/%s/keys: %d %s", acct.ID, status, redact(string(body)))
	}
	secUnmarshal(t, "POST keys", body, &k2View)
	k2 := k2View.Key
	if !keyRE.MatchString(k2) || !strings.HasPrefix(k2View.ID, "key_") {
		t.Fatalf("POST /arcane/accounts/%s/keys: want an id and a key: %s", acct.ID, redact(string(body)))
	}
	c.allowLast(k2)
	if cc := hdr.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("POST .../keys: Cache-Control %q, want no-store", cc)
	}

	k3Out, k3Err := secArcane(t, srv, "keys", "create", acct.ID, "--name", "k3", "--models", "sec-one", "--rpm", "2", "--json")
	var k3View struct{ ID, Key string }
	secUnmarshal(t, "keys create --json", []byte(k3Out), &k3View)
	k3 := k3View.Key
	if !keyRE.MatchString(k3) {
		t.Fatalf("keys create --json: no key:\n%s", redact(k3Out))
	}
	c.add("caddy arcane keys create --json (k3's creation answer) stdout", k3Out, k3)
	c.add("caddy arcane keys create --json (k3's creation answer) stderr", k3Err)

	var poor struct{ ID string }
	status, _, body = c.do(t, "POST /arcane/accounts", http.MethodPost, admin+"/arcane/accounts", "", `{"name":"Poor","balance":"0"}`)
	if status != http.StatusCreated {
		t.Fatalf("POST /arcane/accounts: %d %s", status, body)
	}
	secUnmarshal(t, "POST accounts", body, &poor)
	var k4View struct{ ID, Key string }
	status, _, body = c.do(t, "POST /arcane/accounts/{poor}/keys (k4's creation answer)", http.MethodPost,
		admin+"/arcane/accounts/"+poor.ID+"/keys", "", `{"name":"k4"}`)
	if status != http.StatusCreated {
		t.Fatalf("POST /arcane/accounts/%s/keys: %d %s", poor.ID, status, redact(string(body)))
	}
	secUnmarshal(t, "POST keys", body, &k4View)
	k4 := k4View.Key
	if !keyRE.MatchString(k4) {
		t.Fatalf("POST /arcane/accounts/%s/keys: no key: %s", poor.ID, redact(string(body)))
	}
	c.allowLast(k4)

	// Keys presented but never created: they must not be echoed either.
	wellFormedUnknown, err := billing.NewSecret(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	badChecksum := k1[:len(k1)-1] + secOtherBase62(k1[len(k1)-1])
	malformed := "ak_" + secRandHex(t, 12) + "-garbage"

	// 2. Successes with k1: JSON and streams, on both providers (the
	// second through its deployment's own key).
	var requestID string
	for _, model := range []string{"sec-one", "sec-two"} {
		status, hdr, body := c.do(t, "chat JSON "+model, http.MethodPost, srv.url("/v1/chat/completions"), "Bearer "+k1, secChat(model, false))
		if status != http.StatusOK || !bytes.Contains(body, []byte("Hello from the fake")) {
			t.Errorf("chat %s with k1: %d %s", model, status, body)
		}
		if requestID == "" {
			requestID = hdr.Get("X-Request-Id")
		}
		status, _, body = c.do(t, "chat stream "+model, http.MethodPost, srv.url("/v1/chat/completions"), "Bearer "+k1, secChat(model, true))
		if status != http.StatusOK || !bytes.Contains(body, []byte("data: [DONE]")) || !bytes.Contains(body, []byte("fake")) {
			t.Errorf("chat stream %s with k1: %d %s", model, status, body)
		}
	}
	if curl, err := exec.LookPath("curl"); err == nil {
		out, err := exec.Command(curl, "-sS", "-N", "--max-time", "10", "-i", srv.url("/v1/chat/completions"),
			"-H", "Authorization: Bearer "+k1, "-H", "Content-Type: application/json", "-d", secChat("sec-two", true)).CombinedOutput()
		c.add("curl stream sec-two (k1)", string(out))
		if err != nil || !bytes.Contains(out, []byte("data: [DONE]")) {
			t.Errorf("curl stream with k1: %v:\n%s", err, out)
		}
	}

	// 3. Refusals.
	chat := srv.url("/v1/chat/completions")
	for _, tc := range []struct {
		name, auth, body string
		want             int // 0: any 4xx
	}{
		{"no key", "", secChat("sec-one", false), http.StatusUnauthorized},
		{"k1 as Basic", "Basic " + k1, secChat("sec-one", false), http.StatusUnauthorized},
		{"k1 as lower-case bearer with blanks (accepted)", "bearer   " + k1 + "  ", secChat("sec-one", false), http.StatusOK},
		{"malformed key", "Bearer " + malformed, secChat("sec-one", false), http.StatusUnauthorized},
		{"bad checksum", "Bearer " + badChecksum, secChat("sec-one", false), http.StatusUnauthorized},
		{"well-formed unknown key", "Bearer " + wellFormedUnknown, secChat("sec-one", false), http.StatusUnauthorized},
		{"unknown model", "Bearer " + k1, secChat("gpt-nope", false), 0},
		{"malformed JSON", "Bearer " + k1, `{"model":"sec-one","messages":[`, 0},
		{"model not allowed for k3", "Bearer " + k3, secChat("sec-two", false), 0},
		{"no balance (k4)", "Bearer " + k4, secChat("sec-one", false), http.StatusForbidden},
	} {
		status, _, body := c.do(t, "refusal: "+tc.name, http.MethodPost, chat, tc.auth, tc.body)
		if tc.want == 0 && (status < 400 || status > 499) || tc.want != 0 && status != tc.want {
			t.Errorf("%s: status %d, want %v: %s", tc.name, status, tc.want, redact(string(body)))
		}
	}
	limited := false
	for i := 0; i < 5 && !limited; i++ {
		status, _, _ := c.do(t, "k3 chat (rate limit)", http.MethodPost, chat, "Bearer "+k3, secChat("sec-one", false))
		limited = status == http.StatusTooManyRequests
	}
	if !limited {
		t.Errorf("k3 (2 rpm): no 429 after 5 more chat completions")
	}

	// 4. Revoke k1, then use it.
	c.cli(t, srv, "keys", "revoke", k1ID)
	for _, path := range []string{"/v1/status", "/v1/chat/completions"} {
		method, reqBody := http.MethodGet, ""
		if path == "/v1/chat/completions" {
			method, reqBody = http.MethodPost, secChat("sec-one", false)
		}
		status, _, body := c.do(t, "revoked k1 "+path, method, srv.url(path), "Bearer "+k1, reqBody)
		if status != http.StatusUnauthorized {
			t.Errorf("%s with revoked k1: %d %s", path, status, redact(string(body)))
		}
	}

	// 5. The provider rejects the gateway's key, quoting it (401, as
	// OpenAI does; then 403).
	for _, tc := range []struct {
		fail        int32
		model, body string
	}{
		{http.StatusUnauthorized, "sec-one", secChat("sec-one", false)},
		{http.StatusUnauthorized, "sec-two", secChat("sec-two", false)},
		{http.StatusUnauthorized, "sec-one stream", secChat("sec-one", true)},
		{http.StatusForbidden, "sec-two stream", secChat("sec-two", true)},
	} {
		up.fail.Store(tc.fail)
		status, _, body := c.do(t, fmt.Sprintf("provider %d: %s", tc.fail, tc.model), http.MethodPost, chat, "Bearer "+k2, tc.body)
		if status != http.StatusBadGateway || !bytes.Contains(body, []byte(`"upstream_auth_failed"`)) {
			t.Errorf("%s with the provider refusing the gateway's key (%d): %d %s, want 502 upstream_auth_failed", tc.model, tc.fail, status, body)
		}
		if bytes.Contains(body, []byte("Incorrect API key provided")) {
			t.Errorf("%s: the provider's words reached the client: %s", tc.model, body)
		}
	}
	up.fail.Store(0)

	// 6. Every admin answer, the site's own reports, Caddy's config and
	// metrics.
	for _, path := range []string{
		"/arcane/accounts", "/arcane/accounts/" + acct.ID, "/arcane/accounts/" + acct.ID + "/keys",
		"/arcane/accounts/" + poor.ID + "/keys", "/arcane/keys/" + k1ID, "/arcane/keys/" + k2View.ID,
		"/arcane/keys/" + k3View.ID, "/arcane/accounts/" + acct.ID + "/ledger", "/arcane/usage", "/arcane/upstreams",
		"/arcane/audit", "/arcane/requests/" + requestID, "/config/", "/config/apps/arcane", "/metrics",
		"/arcane/nope", "/arcane/keys/key_nope",
	} {
		status, _, body := c.do(t, "admin GET "+path, http.MethodGet, admin+path, "", "")
		if status != http.StatusOK && !strings.Contains(path, "nope") {
			t.Errorf("admin GET %s: %d %s", path, status, body)
		}
		if path == "/config/" {
			for _, ph := range []string{"{env.ARCANE_TEST_PROVIDER_KEY}", "{env.ARCANE_TEST_PROVIDER_KEY2}"} {
				if !bytes.Contains(body, []byte(ph)) {
					t.Errorf("GET /config/ does not show the placeholder %s", ph)
				}
			}
		}
		if path == "/metrics" && !bytes.Contains(body, []byte("caddy_arcane_requests_total")) {
			t.Errorf("GET /metrics has no caddy_arcane_requests_total")
		}
	}
	for _, path := range []string{"/v1/status", "/v1/models"} {
		if status, _, body := c.do(t, "site GET "+path+" (k2)", http.MethodGet, srv.url(path), "Bearer "+k2, ""); status != http.StatusOK {
			t.Errorf("GET %s with k2: %d %s", path, status, body)
		}
	}
	accounts := c.cli(t, srv, "accounts", "list")
	if strings.Contains(string(accounts), "demo") {
		t.Errorf("a demo account exists with demo off:\n%s", accounts)
	}
	c.cli(t, srv, "accounts", "show", acct.ID)
	c.cli(t, srv, "keys", "list", acct.ID)
	c.cli(t, srv, "ledger", acct.ID)
	c.cli(t, srv, "usage")
	c.cli(t, srv, "audit")
	c.cli(t, srv, "upstreams")
	c.cli(t, srv, "request", requestID)

	srv.stop(t)

	// What the server wrote, and what it left on disk.
	stdout, stderr := srv.stdout.String(), srv.stderr.String()
	c.add("server stdout", stdout)
	c.add("server stderr", stderr)
	if strings.Contains(stderr, "arcane demo mode") || keyRE.MatchString(stderr) {
		t.Errorf("the demo banner (or a key) is on stderr with demo off")
	}
	if !strings.Contains(stderr, `"level":"debug"`) && !strings.Contains(stderr, "DEBUG") {
		t.Errorf("no debug-level line on stderr: is debug logging on?")
	}
	if b, err := os.ReadFile(accessLog); err != nil {
		t.Errorf("reading the access log: %v", err)
	} else {
		c.add("access log "+filepath.Base(accessLog), string(b))
		if !bytes.Contains(b, []byte(k1ID)) || !bytes.Contains(b, []byte("arcane_request_id")) {
			t.Errorf("the access log does not name k1 by id (%s) with arcane's fields: is it the right file?", k1ID)
		}
	}
	autosave := filepath.Join(h.dir, "config", "caddy", "autosave.json")
	if b, err := os.ReadFile(autosave); err == nil {
		c.add("autosave.json", string(b))
		for _, ph := range []string{"{env.ARCANE_TEST_PROVIDER_KEY}", "{env.ARCANE_TEST_PROVIDER_KEY2}"} {
			if !bytes.Contains(b, []byte(ph)) {
				t.Errorf("autosave.json does not hold the placeholder %s", ph)
			}
		}
	} else {
		t.Logf("no autosave.json (%v)", err)
	}
	for i, r := range up.received() {
		c.add(fmt.Sprintf("provider request %d (all but Authorization)", i+1), r)
	}

	// The secrets.
	var needles []secNeedle
	clientKeys := []struct{ name, secret string }{
		{"k1", k1}, {"k2", k2}, {"k3", k3}, {"k4", k4},
		{"the well-formed unknown key", wellFormedUnknown}, {"the bad-checksum key", badChecksum}, {"the malformed key", malformed},
	}
	for _, k := range clientKeys {
		needles = append(needles, secKeyNeedles(k.name, k.secret)...)
	}
	for _, pk := range []struct{ name, key string }{{"provider key 1", providerKey1}, {"provider key 2", providerKey2}} {
		needles = append(needles,
			secNeedle{pk.name, pk.key, false, ""},
			secNeedle{pk.name + " (random part)", strings.TrimPrefix(pk.key, "sk-proj-"), true, ""})
	}

	// Positive controls: the search finds what is there. First each
	// needle planted in a line of text (hex in upper case too)...
	for _, n := range needles {
		planted := "x\nlevel=debug " + n.value + " y\n"
		if n.fold {
			planted = "x\nlevel=debug " + strings.ToUpper(n.value) + " y\n"
		}
		if line, ok := secFind(planted, n); !ok || line != 2 {
			t.Errorf("positive control: the search does not find %s planted on line 2 (%d, %v)", n.what, line, ok)
		}
	}
	// ... then the secrets where they must be.
	for _, ctl := range []struct {
		what, text, value string
	}{
		{"k1 in its creation answer", c.text("caddy arcane keys create (k1's creation answer) stdout"), k1},
		{"k2 in its creation answer", c.text("POST /arcane/accounts/{id}/keys (k2's creation answer)"), k2},
		{"k3 in its creation answer", c.text("caddy arcane keys create --json (k3's creation answer) stdout"), k3},
		{"k4 in its creation answer", c.text("POST /arcane/accounts/{poor}/keys (k4's creation answer)"), k4},
		{"provider key 1 in the Authorization the provider received", strings.Join(up.auths(), "\n"), "Bearer " + providerKey1},
		{"provider key 2 in the Authorization the provider received", strings.Join(up.auths(), "\n"), "Bearer " + providerKey2},
	} {
		if _, ok := secFind(ctl.text, secNeedle{ctl.what, ctl.value, false, ""}); !ok {
			t.Errorf("positive control: did not find %s", ctl.what)
		}
	}
	if wrong := up.wrongAuths(); len(wrong) > 0 {
		t.Errorf("the provider received unexpected credentials: %s", strings.Join(wrong, "; "))
	}
	// The hash as computed here is the one the store indexes keys by.
	db, err := os.ReadFile(h.db)
	if err != nil {
		t.Fatalf("reading the database: %v", err)
	}
	for _, k := range clientKeys[:4] {
		sum := sha256.Sum256([]byte(k.secret))
		if !bytes.Contains(db, sum[:]) {
			t.Errorf("positive control: %s's SHA-256 is not in the database: the hash computed here is not the store's", k.name)
		}
	}

	// The search.
	found := 0
	for _, b := range c.blobs {
		for _, n := range needles {
			if n.secret != "" && b.allowed[n.secret] {
				continue
			}
			if line, ok := secFind(b.text, n); ok {
				found++
				t.Errorf("LEAK: %s in %s, line %d: %s", n.what, b.name, line, secMask(secLine(b.text, line), needles))
			}
		}
	}
	bytesN, lines := c.size()
	t.Logf("scanned %d bytes, %d lines in %d sources (server stdout %d bytes, stderr %d bytes / %d lines, access log %d bytes) for %d needles from %d client keys and 2 provider keys; %d leaks; %v",
		bytesN, lines, len(c.blobs), len(stdout), len(stderr), strings.Count(stderr, "\n"), len(c.text("access log "+filepath.Base(accessLog))),
		len(needles), len(clientKeys), found, time.Since(began).Round(time.Millisecond))
	if testing.Verbose() {
		for _, b := range c.blobs {
			t.Logf("  %7d bytes  %s", len(b.text), b.name)
		}
	}
}

// secNeedle is one form of one secret.
type secNeedle struct {
	what, value string
	fold        bool   // compare case-insensitively (hex)
	secret      string // for the key's secret and its body: the secret, whose creation answer may hold them
}

// secKeyNeedles are the forms of a client key secret that must not leak:
// the secret, its body without ak_, its SHA-256 in hex and base64 (raw
// forms are prefixes of the padded ones), and the hash's first 8 bytes
// in hex.
func secKeyNeedles(name, secret string) []secNeedle {
	sum := sha256.Sum256([]byte(secret))
	ns := []secNeedle{
		{name + " secret", secret, false, secret},
		{name + " SHA-256 (hex)", hex.EncodeToString(sum[:]), true, ""},
		{name + " SHA-256 (first 8 bytes, hex)", hex.EncodeToString(sum[:8]), true, ""},
		{name + " SHA-256 (base64)", base64.RawStdEncoding.EncodeToString(sum[:]), false, ""},
		{name + " SHA-256 (base64url)", base64.RawURLEncoding.EncodeToString(sum[:]), false, ""},
	}
	if body := strings.TrimPrefix(secret, billing.KeyPrefix); len(body) >= 16 {
		ns = append(ns, secNeedle{name + " secret without ak_", body, false, secret})
	}
	return ns
}

// secFind returns the 1-based line of text where n occurs.
func secFind(text string, n secNeedle) (int, bool) {
	hay, v := text, n.value
	if n.fold {
		hay, v = strings.ToLower(hay), strings.ToLower(v)
	}
	i := strings.Index(hay, v)
	if i < 0 {
		return 0, false
	}
	return strings.Count(hay[:i], "\n") + 1, true
}

func secLine(text string, line int) string {
	lines := strings.Split(text, "\n")
	if line-1 < len(lines) {
		return lines[line-1]
	}
	return ""
}

// secMask replaces every needle in s by its name, for reporting a leak
// without printing it.
func secMask(s string, needles []secNeedle) string {
	sorted := append([]secNeedle(nil), needles...)
	sort.Slice(sorted, func(i, j int) bool { return len(sorted[i].value) > len(sorted[j].value) })
	for _, n := range sorted {
		re := regexp.MustCompile(`(?i)` + regexp.QuoteMeta(n.value))
		if !n.fold {
			re = regexp.MustCompile(regexp.QuoteMeta(n.value))
		}
		s = re.ReplaceAllString(s, "<"+n.what+">")
	}
	if len(s) > 2000 {
		s = s[:2000] + "…"
	}
	return redact(s)
}

// secCorpus is everything the test saw, each piece with the secrets it
// may legitimately hold.
type secCorpus struct {
	blobs []secBlob
}

type secBlob struct {
	name, text string
	allowed    map[string]bool
}

func (c *secCorpus) add(name, text string, allowed ...string) {
	b := secBlob{name: name, text: text, allowed: make(map[string]bool)}
	for _, a := range allowed {
		b.allowed[a] = true
	}
	c.blobs = append(c.blobs, b)
}

// allowLast lets the last piece hold secret: it is its creation answer.
func (c *secCorpus) allowLast(secret string) {
	c.blobs[len(c.blobs)-1].allowed[secret] = true
}

func (c *secCorpus) text(name string) string {
	for _, b := range c.blobs {
		if b.name == name {
			return b.text
		}
	}
	return ""
}

func (c *secCorpus) size() (n, lines int) {
	for _, b := range c.blobs {
		n += len(b.text)
		lines += strings.Count(b.text, "\n")
		if b.text != "" && !strings.HasSuffix(b.text, "\n") {
			lines++
		}
	}
	return n, lines
}

// do sends a request (auth as the Authorization header, if any) and
// records the answer, status line, headers and body.
func (c *secCorpus) do(t *testing.T, name, method, url, auth, body string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, url, err)
	}
	var rec strings.Builder
	fmt.Fprintf(&rec, "%s\n", resp.Status)
	_ = resp.Header.Write(&rec)
	rec.WriteString("\n")
	rec.Write(b)
	c.add(name, rec.String())
	return resp.StatusCode, resp.Header, b
}

// cli runs `caddy arcane` with args, records both outputs and returns
// stdout; it must succeed.
func (c *secCorpus) cli(t *testing.T, s *server, args ...string) []byte {
	t.Helper()
	stdout, stderr := secArcane(t, s, args...)
	name := "caddy arcane " + strings.Join(args, " ")
	c.add(name+" stdout", stdout)
	c.add(name+" stderr", stderr)
	return []byte(stdout)
}

func secArcane(t *testing.T, s *server, args ...string) (string, string) {
	t.Helper()
	stdout, stderr, err := s.arcane(t, args...)
	if err != nil {
		t.Fatalf("caddy arcane %s: %v\n%s%s", strings.Join(args, " "), err, redact(stdout), redact(stderr))
	}
	return stdout, stderr
}

func secUnmarshal(t *testing.T, what string, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v: %s", what, err, redact(string(data)))
	}
}

func secChat(model string, stream bool) string {
	s := ""
	if stream {
		s = `,"stream":true`
	}
	return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"Say hello."}],"max_tokens":16%s}`, model, s)
}

func secRandHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// secOtherBase62 returns a base62 character other than c.
func secOtherBase62(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

// secWriteCaddyfile writes the test's Caddyfile: debug logging, an access
// log, the arcane chain of Caddyfile.example, and two OpenAI-type
// providers at the fake upstream whose keys come from the environment,
// the second one's through its deployment.
func secWriteCaddyfile(t *testing.T, upstreamURL, accessLog string) string {
	t.Helper()
	cfg := fmt.Sprintf(`{
	debug
	admin {$ARCANE_ADMIN}

	arcane {
		storage {$ARCANE_DB}

		provider fakeai {
			type openai
			base_url %[1]s/p1/v1
			api_key {env.ARCANE_TEST_PROVIDER_KEY}
		}
		provider fakeai2 {
			type openai
			base_url %[1]s/p2/v1
			api_key {env.ARCANE_TEST_PROVIDER_KEY}
		}

		model sec-one {
			deploy fakeai up-one
			price input 1.00 output 2.00
			max_output_tokens 1000
		}
		model sec-two {
			deploy fakeai2 up-two api_key {env.ARCANE_TEST_PROVIDER_KEY2}
			price input 1.00 output 2.00
			max_output_tokens 1000
		}
	}
}

{$ARCANE_SITE} {
	log {
		output file %[2]s
		format json
	}

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
			handle /v1/status {
				arcane_status
			}
			handle {
				header Content-Type application/json
				respond `+"`"+`{"error":{"message":"Unknown endpoint.","type":"invalid_request_error","param":null,"code":"unknown_url"}}`+"`"+` 404
			}
		}
	}

	handle {
		header Content-Type application/json
		respond `+"`"+`{"error":{"message":"Unknown endpoint. The API lives under /v1/.","type":"invalid_request_error","param":null,"code":"unknown_url"}}`+"`"+` 404
	}
}
`, upstreamURL, accessLog)
	path := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// secUpstream is a fake OpenAI: it answers chat completions (JSON and
// SSE) when it receives the key it expects on each path, and 401 quoting
// the key it received, as OpenAI does, when it does not; with fail set,
// it answers every request so, with that status.
type secUpstream struct {
	srv  *httptest.Server
	keys map[string]string // path -> the provider key it expects
	fail atomic.Int32      // when set, the status every request gets

	mu    sync.Mutex
	auth  []string // every Authorization header received
	reqs  []string // every request without its Authorization header
	wrong []string // unexpected credentials, as "path: description"
}

func newSecUpstream(t *testing.T, keys map[string]string) *secUpstream {
	u := &secUpstream{keys: keys}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *secUpstream) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	auth := r.Header.Get("Authorization")
	var rec strings.Builder
	fmt.Fprintf(&rec, "%s %s %s\n", r.Method, r.URL.RequestURI(), r.Proto)
	hdr := r.Header.Clone()
	hdr.Del("Authorization")
	_ = hdr.Write(&rec)
	rec.WriteString("\n")
	rec.Write(body)
	want, known := u.keys[r.URL.Path]
	u.mu.Lock()
	u.auth = append(u.auth, auth)
	u.reqs = append(u.reqs, rec.String())
	if known && auth != "Bearer "+want {
		u.wrong = append(u.wrong, fmt.Sprintf("%s: not the expected provider key (%d bytes)", r.URL.Path, len(auth)))
	}
	u.mu.Unlock()
	if !known {
		http.NotFound(w, r)
		return
	}
	if fail := int(u.fail.Load()); fail != 0 || auth != "Bearer "+want {
		if fail == 0 {
			fail = http.StatusUnauthorized
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(fail)
		fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`,
			strings.TrimPrefix(auth, "Bearer "))
		return
	}
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":{"message":"bad JSON","type":"invalid_request_error","param":null,"code":null}}`)
		return
	}
	model, _ := json.Marshal(req.Model)
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-sec","object":"chat.completion","created":1700000000,"model":%s,"choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the fake upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":6,"total_tokens":15}}`, model)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fl, _ := w.(http.Flusher)
	for _, chunk := range []string{
		`{"id":"chatcmpl-sec","object":"chat.completion.chunk","created":1700000000,"model":%s,"choices":[{"index":0,"delta":{"role":"assistant","content":"Hello from "},"finish_reason":null}]}`,
		`{"id":"chatcmpl-sec","object":"chat.completion.chunk","created":1700000000,"model":%s,"choices":[{"index":0,"delta":{"content":"the fake upstream."},"finish_reason":null}]}`,
		`{"id":"chatcmpl-sec","object":"chat.completion.chunk","created":1700000000,"model":%s,"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
		`{"id":"chatcmpl-sec","object":"chat.completion.chunk","created":1700000000,"model":%s,"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":6,"total_tokens":15}}`,
	} {
		fmt.Fprintf(w, "data: "+chunk+"\n\n", model)
		if fl != nil {
			fl.Flush()
		}
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}

func (u *secUpstream) auths() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.auth...)
}

func (u *secUpstream) received() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.reqs...)
}

func (u *secUpstream) wrongAuths() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.wrong...)
}
