package main

// End-to-end tests of the built binary: they build Caddy with arcane once,
// run it the way `make run` does (Caddyfile.example, ARCANE_* environment),
// and drive it over HTTP and through `caddy arcane ...`, as an operator
// would.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// caddyBin is the binary TestMain built; empty with -short.
var caddyBin string

// keyRE matches an API key secret: ak_ and 49 base62 characters.
var keyRE = regexp.MustCompile(`ak_[0-9A-Za-z]{49}`)

const (
	startupTimeout = 30 * time.Second // a server becoming ready
	commandTimeout = 30 * time.Second // one CLI command
	stopTimeout    = 20 * time.Second // a server exiting once told to
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run() // the tests skip themselves
	}
	dir, err := os.MkdirTemp("", "arcane-caddy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating build directory:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	goCmd := os.Getenv("GO")
	if goCmd == "" {
		goCmd = "go"
	}
	bin := filepath.Join(dir, "caddy")
	build := exec.Command(goCmd, "build", "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building caddy:", err)
		return 1
	}
	caddyBin = bin
	return m.Run()
}

func needBinary(t *testing.T) {
	t.Helper()
	if caddyBin == "" {
		t.Skip("builds and runs the caddy binary; skipped with -short")
	}
}

func TestListModules(t *testing.T) {
	needBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, caddyBin, "list-modules").CombinedOutput()
	if err != nil {
		t.Fatalf("caddy list-modules: %v\n%s", err, out)
	}
	lines := make(map[string]bool)
	for line := range strings.Lines(string(out)) {
		lines[strings.TrimSpace(line)] = true
	}
	for _, id := range []string{"arcane", "http.handlers.arcane_auth", "http.handlers.arcane_status", "admin.api.arcane"} {
		if !lines[id] {
			t.Errorf("caddy list-modules does not list %s:\n%s", id, out)
		}
	}
}

func TestMakeRunPath(t *testing.T) {
	needBinary(t)
	h := newHarness(t)

	// First start, demo on: the `make run` path.
	srv := h.startServer("run 1 (demo on)", true)
	demoKey := srv.demoKey()

	t.Run("API", func(t *testing.T) {
		status, body := srv.get(t, "/v1/status", demoKey)
		if status != http.StatusOK {
			t.Fatalf("GET /v1/status with the demo key: %d %s", status, body)
		}
		var st struct {
			Status  string `json:"status"`
			Version string `json:"version"`
			Store   struct {
				Status string `json:"status"`
			} `json:"store"`
		}
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("GET /v1/status: %v: %s", err, body)
		}
		if st.Status != "ok" || st.Store.Status != "ok" || st.Version == "" {
			t.Errorf("GET /v1/status = %s, want status ok, store ok and a version", body)
		}

		status, body = srv.get(t, "/v1/status", "")
		wantAPIError(t, "GET /v1/status without a key", status, body, http.StatusUnauthorized, "invalid_api_key")

		status, body = srv.get(t, "/v1/nope", demoKey)
		wantAPIError(t, "GET /v1/nope", status, body, http.StatusNotFound, "unknown_url")

		status, body = srv.get(t, "/", "")
		wantAPIError(t, "GET /", status, body, http.StatusNotFound, "unknown_url")
	})

	// The CLI against the running server. Later steps need the account and
	// key made here, so failures stop the test.
	out := srv.arcaneOK(t, "accounts", "create", "Acme Corp", "--balance", "25.00")
	acme := firstField(t, out, "Acme Corp")
	if !strings.HasPrefix(acme, "acct_") || !strings.Contains(out, "25.000000") {
		t.Fatalf("accounts create: want an acct_ id and balance 25.000000:\n%s", out)
	}

	out = srv.arcaneOK(t, "accounts", "create", "Acme Corp", "--balance", "25.00", "--json")
	var second struct {
		ID, Name, Balance string
	}
	if err := json.Unmarshal([]byte(out), &second); err != nil {
		t.Fatalf("accounts create --json: %v:\n%s", err, out)
	}
	if !strings.HasPrefix(second.ID, "acct_") || second.ID == acme || second.Name != "Acme Corp" || second.Balance != "25.000000" {
		t.Errorf("accounts create --json = %+v, want a new acct_ id, name Acme Corp, balance 25.000000", second)
	}

	out = srv.arcaneOK(t, "accounts", "list")
	for _, want := range []string{acme, second.ID, "demo"} {
		if !strings.Contains(out, want) {
			t.Errorf("accounts list does not show %s:\n%s", want, out)
		}
	}

	out = srv.arcaneOK(t, "accounts", "show", acme)
	if !strings.Contains(out, acme) || !strings.Contains(out, "Acme Corp") || !strings.Contains(out, "25.000000") {
		t.Errorf("accounts show %s:\n%s", acme, out)
	}

	out = srv.arcaneOK(t, "accounts", "credit", acme, "10.5", "--note", "test")
	if !strings.Contains(out, "35.500000") {
		t.Errorf("accounts credit 10.5 after 25.00: want balance 35.500000:\n%s", out)
	}

	out = srv.arcaneOK(t, "keys", "create", acme, "--name", "ci", "--models", "gpt-5.2", "--rpm", "60", "--expires", "30d")
	m := regexp.MustCompile(`(?m)^key: (ak_[0-9A-Za-z]{49})$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("keys create: no line \"key: ak_...\":\n%s", redact(out))
	}
	ciKey := m[1]
	if !strings.Contains(out, "only time the key is shown") {
		t.Errorf("keys create does not say the key is shown once:\n%s", redact(out))
	}
	ciKeyID := firstField(t, out, "gpt-5.2")
	if !strings.HasPrefix(ciKeyID, "key_") || !strings.Contains(out, " 60 ") || strings.Contains(out, "never") {
		t.Errorf("keys create: want a key_ id, models gpt-5.2, rpm 60 and an expiry:\n%s", redact(out))
	}
	if status, body := srv.get(t, "/v1/status", ciKey); status != http.StatusOK {
		t.Errorf("GET /v1/status with the new key: %d %s", status, body)
	}

	out = srv.arcaneOK(t, "keys", "list", acme)
	if strings.Contains(out, ciKey) {
		t.Errorf("keys list shows the secret:\n%s", redact(out))
	}
	if !strings.Contains(out, ciKeyID) || !strings.Contains(out, ciKey[len(ciKey)-4:]) {
		t.Errorf("keys list: want key %s and its last 4 characters %s:\n%s", ciKeyID, ciKey[len(ciKey)-4:], out)
	}

	out = srv.arcaneOK(t, "ledger", acme)
	credit, opening := lineWith(out, "10.500000"), lineWith(out, "25.000000")
	if credit < 0 || opening < 0 || credit > opening || !strings.Contains(out, "test") {
		t.Errorf("ledger: want the credit row (10.500000, note test) above the opening balance row (25.000000):\n%s", out)
	}

	out = srv.arcaneOK(t, "accounts", "disable", acme)
	if !strings.Contains(out, "disabled") {
		t.Errorf("accounts disable:\n%s", out)
	}
	status, body := srv.get(t, "/v1/status", ciKey)
	wantAPIError(t, "GET /v1/status, account disabled", status, body, http.StatusForbidden, "account_disabled")
	srv.arcaneOK(t, "accounts", "enable", acme)
	if status, body := srv.get(t, "/v1/status", ciKey); status != http.StatusOK {
		t.Errorf("GET /v1/status, account enabled again: %d %s", status, body)
	}

	srv.arcaneOK(t, "keys", "revoke", ciKeyID)
	status, body = srv.get(t, "/v1/status", ciKey)
	wantAPIError(t, "GET /v1/status, key revoked", status, body, http.StatusUnauthorized, "invalid_api_key")

	t.Run("CLI errors", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string // in the output; "" for any failure
		}{
			{[]string{"accounts", "show", "acct_nope"}, "404"},
			// pflag reads -5 as a flag; either way it must fail.
			{[]string{"accounts", "credit", acme, "-5"}, ""},
			{[]string{"accounts", "credit", acme, "--", "-5"}, "400"},
			{[]string{"accounts", "credit", acme, "1e3"}, "400"},
		} {
			stdout, stderr, err := srv.arcane(t, tc.args...)
			if err == nil || !strings.Contains(stdout+stderr, tc.want) {
				t.Errorf("caddy arcane %s: err %v, want an exit status != 0 and %q in the output:\n%s%s",
					strings.Join(tc.args, " "), err, tc.want, stdout, stderr)
			}
		}
		if a := srv.account(t, acme); a.Balance != "35.500000" {
			t.Errorf("balance after refused credits = %s, want 35.500000", a.Balance)
		}
	})

	t.Run("admin address from --config", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "Caddyfile")
		if err := os.WriteFile(cfg, fmt.Appendf(nil, "{\n\tadmin %s\n}\n", srv.admin), 0o644); err != nil {
			t.Fatal(err)
		}
		stdout, stderr, err := h.run(t, commandTimeout, nil, "arcane", "--config", cfg, "--adapter", "caddyfile", "accounts", "list")
		if err != nil || !strings.Contains(stdout, acme) {
			t.Errorf("caddy arcane --config %s accounts list: %v:\n%s%s", cfg, err, stdout, stderr)
		}
	})

	// A second process on the same database fails fast and says what to
	// do instead.
	t.Run("validate beside the server", func(t *testing.T) {
		start := time.Now()
		stdout, stderr, err := h.run(t, 20*time.Second, srv.serverEnv(true),
			"validate", "--config", h.config, "--adapter", "caddyfile")
		h.record("caddy validate", stdout, stderr)
		elapsed := time.Since(start)
		if err == nil || elapsed > 10*time.Second || !strings.Contains(stdout+stderr, "caddy reload") {
			t.Errorf("caddy validate beside a running server: err %v after %v, want a failure within 10s that mentions caddy reload:\n%s%s",
				err, elapsed.Round(time.Millisecond), stdout, stderr)
		}
	})
	t.Run("second run on the same database", func(t *testing.T) {
		env := h.serverEnvFor(freePort(t), freePort(t), true)
		start := time.Now()
		stdout, stderr, err := h.run(t, 20*time.Second, env, "run", "--config", h.config, "--adapter", "caddyfile")
		h.record("second caddy run", stdout, stderr)
		elapsed := time.Since(start)
		if err == nil || elapsed > 10*time.Second || !strings.Contains(stdout+stderr, "caddy reload") {
			t.Errorf("second caddy run on the same database: err %v after %v, want a failure within 10s that mentions caddy reload:\n%s%s",
				err, elapsed.Round(time.Millisecond), stdout, stderr)
		}
		if status, body := srv.get(t, "/v1/status", demoKey); status != http.StatusOK {
			t.Errorf("the first server after the second one failed: GET /v1/status %d %s", status, body)
		}
	})

	// Restart, demo still on: a new demo key, the old one revoked, the
	// accounts kept, the demo account not duplicated.
	srv.stop(t)
	srv = h.startServer("run 2 (demo on, restarted)", true)
	newDemoKey := srv.demoKey()
	t.Run("restart", func(t *testing.T) {
		if newDemoKey == demoKey {
			t.Fatal("the restarted server printed the same demo key")
		}
		status, body := srv.get(t, "/v1/status", demoKey)
		wantAPIError(t, "GET /v1/status with the previous demo key", status, body, http.StatusUnauthorized, "invalid_api_key")
		if status, body := srv.get(t, "/v1/status", newDemoKey); status != http.StatusOK {
			t.Errorf("GET /v1/status with the new demo key: %d %s", status, body)
		}
		status, body = srv.get(t, "/v1/status", ciKey)
		wantAPIError(t, "GET /v1/status with the revoked key after a restart", status, body, http.StatusUnauthorized, "invalid_api_key")

		var accts struct {
			Data []struct{ ID, Name, Balance string }
		}
		out := srv.arcaneOK(t, "accounts", "list", "--json")
		if err := json.Unmarshal([]byte(out), &accts); err != nil {
			t.Fatalf("accounts list --json: %v:\n%s", err, out)
		}
		demos, balances := 0, make(map[string]string)
		for _, a := range accts.Data {
			if a.Name == "demo" {
				demos++
			}
			balances[a.ID] = a.Balance
		}
		if demos != 1 {
			t.Errorf("%d accounts named demo after a restart, want 1:\n%s", demos, out)
		}
		if balances[acme] != "35.500000" || balances[second.ID] != "25.000000" {
			t.Errorf("after a restart, want %s at 35.500000 and %s at 25.000000:\n%s", acme, second.ID, out)
		}
	})

	// Demo off, the production default: no key is minted or printed.
	srv.stop(t)
	srv = h.startServer("run 3 (demo off)", false)
	if a := srv.account(t, acme); a.Balance != "35.500000" {
		t.Errorf("after a restart with demo off: balance %s, want 35.500000", a.Balance)
	}
	srv.stop(t)
	if out := srv.stdout.String() + srv.stderr.String(); strings.Contains(out, "ak_") {
		t.Errorf("with demo off, the server printed ak_:\n%s", redact(out))
	}
}

// harness runs caddy processes for one test in a private directory, with a
// private database and Caddy config/data directories, and keeps what every
// server process printed for the secrets check.
type harness struct {
	t      *testing.T
	dir    string   // working directory of every process
	config string   // Caddyfile.example, absolute
	db     string   // ARCANE_DB
	env    []string // the inherited environment without ARCANE_*, with private XDG directories

	mu      sync.Mutex
	outputs []output
}

type output struct{ name, text string }

func newHarness(t *testing.T) *harness {
	config, err := filepath.Abs(filepath.Join("..", "..", "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	h := &harness{t: t, dir: dir, config: config, db: filepath.Join(dir, "arcane.db")}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "ARCANE_") || name == "XDG_CONFIG_HOME" || name == "XDG_DATA_HOME" {
			continue
		}
		h.env = append(h.env, kv)
	}
	// Caddy autosaves its config and keeps TLS data there: not in $HOME.
	h.env = append(h.env, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_DATA_HOME="+filepath.Join(dir, "data"))
	// Registered first, so it runs last: after every server was stopped or
	// killed and all its output collected.
	t.Cleanup(h.checkSecrets)
	return h
}

// record keeps a process's output for the secrets check.
func (h *harness) record(name, stdout, stderr string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.outputs = append(h.outputs, output{name + " stdout", stdout}, output{name + " stderr", stderr})
}

// checkSecrets fails the test if a key secret appears in any server
// output anywhere but on the demo banner's key line.
func (h *harness) checkSecrets() {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, o := range h.outputs {
		n += len(o.text)
		for i, line := range strings.Split(o.text, "\n") {
			if keyRE.MatchString(line) && !strings.HasPrefix(line, "  key ") {
				h.t.Errorf("secrets check: %s line %d has an API key secret outside the demo banner's key line: %s",
					o.name, i+1, redact(line))
			}
		}
	}
	h.t.Logf("secrets check: %d bytes of output from %d server processes", n, len(h.outputs)/2)
}

func (h *harness) serverEnvFor(sitePort, adminPort int, demo bool) []string {
	env := append(h.env[:len(h.env):len(h.env)],
		"ARCANE_DB="+h.db,
		"ARCANE_SITE=:"+strconv.Itoa(sitePort),
		"ARCANE_ADMIN=localhost:"+strconv.Itoa(adminPort))
	if demo {
		env = append(env, "ARCANE_DEMO=on")
	}
	return env
}

// run runs caddy with args to completion; env nil means h.env.
func (h *harness) run(t *testing.T, timeout time.Duration, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddyBin, args...)
	cmd.Dir = h.dir
	cmd.Env = env
	if env == nil {
		cmd.Env = h.env
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Errorf("caddy %s: still running after %v", strings.Join(args, " "), timeout)
	}
	return o.String(), e.String(), err
}

// server is one `caddy run` of Caddyfile.example.
type server struct {
	h              *harness
	name           string
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	sitePort       int
	adminPort      int
	admin          string // the admin address, for --address
	demo           bool
	done           chan struct{} // closed when the process has exited
	err            error         // from Wait, once done is closed
}

// startServer runs caddy as `make run` does and waits until it serves.
func (h *harness) startServer(name string, demo bool) *server {
	t := h.t
	t.Helper()
	s := &server{h: h, name: name, stdout: new(syncBuffer), stderr: new(syncBuffer),
		sitePort: freePort(t), adminPort: freePort(t), demo: demo, done: make(chan struct{})}
	s.admin = "localhost:" + strconv.Itoa(s.adminPort)
	s.cmd = exec.Command(caddyBin, "run", "--config", h.config, "--adapter", "caddyfile")
	s.cmd.Dir = h.dir
	s.cmd.Env = s.serverEnv(demo)
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		h.record(name, s.stdout.String(), s.stderr.String())
	})
	s.waitReady(t)
	return s
}

func (s *server) serverEnv(demo bool) []string {
	return s.h.serverEnvFor(s.sitePort, s.adminPort, demo)
}

// waitReady polls until the admin endpoint answers, the site answers and,
// with demo on, the demo banner is out.
func (s *server) waitReady(t *testing.T) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	ready := func(url string, want int) bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == want
	}
	deadline := time.Now().Add(startupTimeout)
	for {
		select {
		case <-s.done:
			t.Fatalf("%s exited during startup: %v\nstdout:\n%s\nstderr:\n%s", s.name, s.err, s.stdout, redact(s.stderr.String()))
		default:
		}
		if ready(fmt.Sprintf("http://127.0.0.1:%d/config/", s.adminPort), http.StatusOK) &&
			ready(s.url("/"), http.StatusNotFound) &&
			(!s.demo || keyRE.MatchString(s.stderr.String())) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v\nstdout:\n%s\nstderr:\n%s", s.name, startupTimeout, s.stdout, redact(s.stderr.String()))
		}
		time.Sleep(50 * time.Millisecond) // process startup only
	}
}

// demoKey returns the demo key the server printed, checking that it was
// printed exactly once, to standard error only.
func (s *server) demoKey() string {
	t := s.h.t
	t.Helper()
	stderr := s.stderr.String()
	key := keyRE.FindString(stderr)
	if key == "" {
		t.Fatalf("%s: no demo key on stderr:\n%s", s.name, stderr)
	}
	if n := strings.Count(stderr, key); n != 1 {
		t.Errorf("%s: the demo key appears %d times on stderr, want 1:\n%s", s.name, n, redact(stderr))
	}
	if n := len(keyRE.FindAllString(stderr, -1)); n != strings.Count(stderr, key) {
		t.Errorf("%s: %d key secrets on stderr besides the demo key:\n%s", s.name, n-strings.Count(stderr, key), redact(stderr))
	}
	if n := len(keyRE.FindAllString(s.stdout.String(), -1)); n != 0 {
		t.Errorf("%s: %d key secrets on stdout, want 0", s.name, n)
	}
	return key
}

// stop stops the server with `caddy stop` and waits for a clean exit.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if stdout, stderr, err := s.h.run(t, commandTimeout, nil, "stop", "--address", s.admin); err != nil {
		t.Fatalf("caddy stop --address %s: %v\n%s%s", s.admin, err, stdout, stderr)
	}
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		t.Fatalf("%s still running %v after caddy stop", s.name, stopTimeout)
	}
	if s.err != nil {
		t.Errorf("%s exited with %v after caddy stop\nstderr:\n%s", s.name, s.err, redact(s.stderr.String()))
	}
}

func (s *server) url(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", s.sitePort, path)
}

// get sends GET path to the site, with key as the Bearer token if given.
func (s *server) get(t *testing.T, path, key string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.url(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", path, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("GET %s: Content-Type %q, want application/json", path, ct)
	}
	return resp.StatusCode, body
}

// arcane runs `caddy arcane --address <admin> args...`.
func (s *server) arcane(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return s.h.run(t, commandTimeout, nil, append([]string{"arcane", "--address", s.admin}, args...)...)
}

// arcaneOK is arcane for commands that must succeed; it returns stdout.
func (s *server) arcaneOK(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr, err := s.arcane(t, args...)
	if err != nil {
		t.Fatalf("caddy arcane %s: %v\n%s%s", strings.Join(args, " "), err, redact(stdout), stderr)
	}
	return stdout
}

type account struct{ ID, Name, Balance, State string }

func (s *server) account(t *testing.T, id string) account {
	t.Helper()
	out := s.arcaneOK(t, "accounts", "show", id, "--json")
	var a account
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatalf("accounts show --json: %v:\n%s", err, out)
	}
	return a
}

// wantAPIError checks an answer in OpenAI's error envelope.
func wantAPIError(t *testing.T, what string, status int, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("%s: status %d, want %d: %s", what, status, wantStatus, body)
		return
	}
	var env map[string]map[string]any
	if err := json.Unmarshal(body, &env); err != nil {
		t.Errorf("%s: not an error envelope: %v: %s", what, err, body)
		return
	}
	e := env["error"]
	msg, _ := e["message"].(string)
	typ, _ := e["type"].(string)
	param, hasParam := e["param"]
	if msg == "" || typ == "" || !hasParam || param != nil || e["code"] != wantCode {
		t.Errorf("%s: want {\"error\":{\"message\",\"type\",\"param\":null,\"code\":%q}}, got %s", what, wantCode, body)
	}
}

// firstField returns the first field of the first line of out containing
// substr.
func firstField(t *testing.T, out, substr string) string {
	t.Helper()
	for line := range strings.Lines(out) {
		if strings.Contains(line, substr) {
			if f := strings.Fields(line); len(f) > 0 {
				return f[0]
			}
		}
	}
	t.Fatalf("no line with %q in:\n%s", substr, redact(out))
	return ""
}

// lineWith returns the number of the first line of out containing substr,
// or -1.
func lineWith(out, substr string) int {
	for i, line := range strings.Split(out, "\n") {
		if strings.Contains(line, substr) {
			return i
		}
	}
	return -1
}

// redact shortens key secrets to their last 4 characters for test output.
func redact(s string) string {
	return keyRE.ReplaceAllStringFunc(s, func(k string) string { return "ak_…" + k[len(k)-4:] })
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
