package main

// The durability promise under kill -9 (DESIGN.md, promise 3): a settled
// charge is committed before the handler returns, so a crash loses only
// the requests still in flight, and the ledger replays exactly to the
// stored balance.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcaneapi/caddy-arcane/billing"
)

const (
	crashWorkers   = 16  // concurrent clients, one connection each
	crashKillAfter = 400 // responses received in full before the kill
	crashBalance   = "1000.000000"
	crashWait      = 30 * time.Second // bounds the load before the kill
)

// TestCrashLosesOnlyInFlight kills the server with SIGKILL under load and
// checks, after a restart on the same database, that only requests still
// in flight went unbilled and that the ledger replays to the balance.
//
// The proof that a response was settled uses HTTP/1.1's order on one
// connection: Go's server reads a connection's next request only after
// the handler for the previous one has returned, and arcane_balance
// returns only once the settlement is durable. So when a client that uses
// a single keep-alive connection receives response i+1, the ledger row of
// response i is on disk: every response a worker received in full, except
// perhaps its last, must have its row after the crash.
//
// What this guards: settlement that stops being awaited (a `go settle`,
// a commit loop that acknowledges before its transaction commits, a
// buffered ledger write) loses the rows still queued at the kill, which
// the workers have already moved past: they show up as missing rows
// before a worker's last response. Double settlement or replays show up as
// repeated request ids, a wrong stored balance or a failing audit. A
// SIGKILL keeps what reached the kernel's page cache, so this test cannot
// tell a committed transaction from an fsynced one; the storage tests own
// that.
func TestCrashLosesOnlyInFlight(t *testing.T) {
	needBinary(t)
	h := newHarness(t)
	h.config = fastMockCaddyfile(t, h.dir)

	srv := h.startServer("crash run 1", false)
	acct, keyID, key := srv.crashAccount(t)

	// Load, then the kill.
	start := time.Now()
	load := runCrashLoad(t, srv, key)
	t.Logf("killed after %v: %d responses received in full, %d requests cut off",
		time.Since(start).Round(time.Millisecond), load.received(), load.cutOff())
	if load.received() < crashKillAfter {
		t.Fatalf("only %d responses before the kill, want %d", load.received(), crashKillAfter)
	}
	for _, w := range load.workers {
		if w.err != nil {
			t.Errorf("worker %d: %v", w.n, w.err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	load.checkOneConnection(t)

	// Restart on the same file: the old process's lock went with it.
	srv = h.startServer("crash run 2 (after kill -9)", false)

	srv.checkAudit(t)
	rows := srv.ledgerRows(t, acct)
	charges := checkLedgerReplay(t, srv, acct, rows)
	checkCharges(t, srv, load, charges, keyID)

	// The restarted server charges as before. The second response on the
	// same connection proves the first one settled, as above.
	before := amount(t, srv.account(t, acct).Balance)
	client := oneConnClient()
	r := srv.chat(t, client, key, 1)
	if next := srv.chat(t, client, key, 2); !next.reused || next.local != r.local {
		t.Fatalf("after the restart: the second request went on a new connection (%s, reused: %v), the first on %s", next.local, next.reused, r.local)
	}
	if !r.hasCost || r.cost <= 0 {
		t.Fatalf("a chat completion after the restart (%s): cost %s (shown: %v), want a positive usage.cost", r.id, r.cost, r.hasCost)
	}
	var row billing.Entry
	if status, body := srv.adminJSON(t, http.MethodGet, "/arcane/requests/"+r.id, nil, &row); status != http.StatusOK {
		t.Errorf("GET /arcane/requests/%s after the restart: %d %s", r.id, status, body)
	} else if row.Kind != billing.EntryCharge || row.Cost() != r.cost || row.Balance != before-r.cost {
		t.Errorf("GET /arcane/requests/%s: a %s of %s leaving %s, want a charge of %s leaving %s - %s = %s",
			r.id, row.Kind, row.Cost(), row.Balance, r.cost, before, r.cost, before-r.cost)
	}
	srv.checkAudit(t)
	srv.stop(t)
}

// fastMockCaddyfile writes Caddyfile.example with a mock that answers at
// once, so a worker's next response follows the previous one closely: a
// settlement left behind (not awaited) then has no time to catch up
// before the kill.
func fastMockCaddyfile(t *testing.T, dir string) string {
	t.Helper()
	example, err := os.ReadFile(filepath.Join("..", "..", "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	out := example
	// Fast mocks (both of them), and a request budget the load cannot
	// reach: this test is about settlement, not limits.
	for _, set := range []struct{ option, value string }{
		{"time_to_first_token", "0s"},
		{"tokens_per_second", "0"},
		{"requests", "1000000 1m"},
	} {
		re := regexp.MustCompile(`(?m)^(\s*)` + set.option + `\s+\S+.*$`)
		if len(re.FindAll(out, -1)) == 0 {
			t.Fatalf("Caddyfile.example: no %s line", set.option)
		}
		out = re.ReplaceAll(out, []byte("${1}"+set.option+" "+set.value))
	}
	for _, directive := range []string{"arcane_auth", "arcane_balance", "arcane_proxy"} {
		if !bytes.Contains(out, []byte("\t"+directive+"\n")) {
			t.Fatalf("Caddyfile.example: no %s on the chat path", directive)
		}
	}
	path := filepath.Join(dir, "Caddyfile.crash")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// crashAccount creates an account with crashBalance and a key for it
// through the admin API.
func (s *server) crashAccount(t *testing.T) (acct, keyID, key string) {
	t.Helper()
	var a struct{ ID, Balance string }
	if status, body := s.adminJSON(t, http.MethodPost, "/arcane/accounts",
		map[string]string{"name": "crash", "balance": crashBalance}, &a); status != http.StatusCreated {
		t.Fatalf("POST /arcane/accounts: %d %s", status, body)
	}
	var k struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	if status, body := s.adminJSON(t, http.MethodPost, "/arcane/accounts/"+a.ID+"/keys",
		map[string]string{"name": "crash"}, &k); status != http.StatusCreated || !keyRE.MatchString(k.Key) {
		t.Fatalf("POST /arcane/accounts/%s/keys: %d %s", a.ID, status, redact(string(body)))
	}
	return a.ID, k.ID, k.Key
}

// adminJSON sends a request to the admin API, with in as its JSON body if
// not nil, and decodes a 2xx answer into out if not nil.
func (s *server) adminJSON(t *testing.T, method, path string, in, out any) (int, []byte) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", s.adminPort, path), body)
	if err != nil {
		t.Fatal(err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{Timeout: commandTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, redact(string(b)))
		}
	}
	return resp.StatusCode, b
}

// crashResponse is one chat completion a worker received in full.
type crashResponse struct {
	id      string         // X-Request-Id
	cost    billing.Amount // usage.cost
	hasCost bool           // the response carried usage.cost
	stream  bool
	reused  bool   // the request went on a connection used before
	local   string // the connection's local address
}

// crashWorker is one client: one Transport limited to one connection,
// sending chat completions one after the other.
type crashWorker struct {
	n    int
	done []crashResponse // received in full, in order
	// cutID is the X-Request-Id of the request the kill cut off, when its
	// headers had arrived.
	cutID string
	cut   bool  // a request was on the connection at the kill
	err   error // a failure before the kill
}

type crashLoad struct {
	workers []*crashWorker
}

func (l *crashLoad) received() (n int) {
	for _, w := range l.workers {
		n += len(w.done)
	}
	return n
}

func (l *crashLoad) cutOff() (n int) {
	for _, w := range l.workers {
		if w.cut {
			n++
		}
	}
	return n
}

// runCrashLoad runs crashWorkers workers until crashKillAfter responses
// have been received in full, kills the server with SIGKILL while they are
// mid-request, and returns what each worker received.
func runCrashLoad(t *testing.T, s *server, key string) *crashLoad {
	t.Helper()
	var (
		completed atomic.Int64
		killed    atomic.Bool
		kill      = make(chan struct{})
		killOnce  sync.Once
		wg        sync.WaitGroup
	)
	load := &crashLoad{workers: make([]*crashWorker, crashWorkers)}
	for i := range load.workers {
		w := &crashWorker{n: i}
		load.workers[i] = w
		wg.Go(func() {
			client := oneConnClient()
			defer client.CloseIdleConnections()
			// Until the kill ends it: every request fails once the
			// server is gone.
			for j := 0; ; j++ {
				r, err := crashRequest(client, s, key, i, j)
				if err != nil {
					if killed.Load() {
						// Cut off, if it had a connection: it may have
						// reached the server and settled.
						w.cut, w.cutID = r.local != "", r.id
					} else {
						w.err = fmt.Errorf("request %d (%s): %w", j, r.id, err)
						killOnce.Do(func() { close(kill) }) // stop the test early
					}
					return
				}
				w.done = append(w.done, r)
				if completed.Add(1) == crashKillAfter {
					killOnce.Do(func() { close(kill) })
				}
			}
		})
	}
	select {
	case <-kill:
	case <-time.After(crashWait):
		t.Errorf("%d of %d responses after %v", completed.Load(), crashKillAfter, crashWait)
	}
	killed.Store(true)
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill -9 %s: %v", s.name, err)
	}
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		t.Fatalf("%s still running %v after SIGKILL", s.name, stopTimeout)
	}
	wg.Wait()
	return load
}

// crashRequest sends worker i's j-th chat completion and reads the answer
// in full: the whole body of a plain response, a stream up to data: [DONE]
// (then the rest of the body, so the connection can be reused). On error,
// r.id is the request id if the headers had arrived.
func crashRequest(client *http.Client, s *server, key string, i, j int) (r crashResponse, err error) {
	r.stream = (i+j)%2 == 0
	maxTokens := 8 + (i*7+j)%17 // costs differ between requests
	req, err := chatRequest(s, key, i, j, r.stream, maxTokens)
	if err != nil {
		return r, err
	}
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		r.reused, r.local = info.Reused, info.Conn.LocalAddr().String()
	}}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := client.Do(req)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	r.id = resp.Header.Get("X-Request-Id")
	if resp.ProtoMajor != 1 {
		return r, fmt.Errorf("answered over %s: the one-connection proof needs HTTP/1.1", resp.Proto)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return r, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	if !strings.HasPrefix(r.id, "req_") {
		return r, fmt.Errorf("X-Request-Id %q, want req_…", r.id)
	}
	var usage struct {
		Usage *struct {
			Cost *json.Number `json:"cost"`
		} `json:"usage"`
	}
	setCost := func() error {
		if usage.Usage == nil || usage.Usage.Cost == nil {
			return nil
		}
		c, err := billing.ParseAmount(usage.Usage.Cost.String())
		if err != nil {
			return fmt.Errorf("usage.cost: %w", err)
		}
		r.cost, r.hasCost = c, true
		return nil
	}
	if !r.stream {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return r, err
		}
		if err := json.Unmarshal(b, &usage); err != nil {
			return r, fmt.Errorf("decoding the response: %w: %s", err, b)
		}
		return r, setCost()
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return r, fmt.Errorf("stream ended before data: [DONE]: %w", err)
		}
		data, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			break
		}
		usage.Usage = nil
		if err := json.Unmarshal([]byte(data), &usage); err != nil {
			return r, fmt.Errorf("decoding a chunk: %w: %s", err, data)
		}
		if err := setCost(); err != nil {
			return r, err
		}
	}
	// Received in full. Reading on to the end lets the Transport reuse the
	// connection; a kill now does not undo what the client saw.
	_, _ = io.Copy(io.Discard, br)
	return r, nil
}

func chatRequest(s *server, key string, i, j int, stream bool, maxTokens int) (*http.Request, error) {
	body := map[string]any{
		"model":      "gpt-5.2",
		"messages":   []map[string]string{{"role": "user", "content": fmt.Sprintf("worker %d, request %d", i, j)}},
		"max_tokens": maxTokens,
	}
	if stream {
		body["stream"] = true
		body["stream_options"] = map[string]bool{"include_usage": true}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, s.url("/v1/chat/completions"), bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// chat sends the j-th chat completion of a client (streamed for even j).
func (s *server) chat(t *testing.T, client *http.Client, key string, j int) crashResponse {
	t.Helper()
	r, err := crashRequest(client, s, key, 0, j)
	if err != nil {
		t.Fatalf("chat completion: %v", err)
	}
	return r
}

// oneConnClient is a client that keeps one keep-alive connection and sends
// every request on it.
func oneConnClient() *http.Client {
	tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, DisableCompression: true}
	return &http.Client{Transport: tr, Timeout: crashWait}
}

// checkOneConnection fails the test unless every worker sent all its
// requests on one connection: the proof of settlement depends on it.
func (l *crashLoad) checkOneConnection(t *testing.T) {
	t.Helper()
	for _, w := range l.workers {
		for j, r := range w.done {
			if j > 0 && (!r.reused || r.local != w.done[0].local) {
				t.Fatalf("worker %d: request %d went on connection %s (reused: %v), request 0 on %s: "+
					"each worker must keep one connection for the settlement proof to hold",
					w.n, j, r.local, r.reused, w.done[0].local)
			}
		}
	}
}

// ledgerRows reads an account's whole ledger, oldest first.
func (s *server) ledgerRows(t *testing.T, acct string) []billing.Entry {
	t.Helper()
	var rows []billing.Entry
	path := "/arcane/accounts/" + acct + "/ledger?limit=1000"
	for {
		var page struct {
			Data       []billing.Entry `json:"data"`
			HasMore    bool            `json:"has_more"`
			NextBefore uint64          `json:"next_before"`
		}
		if status, body := s.adminJSON(t, http.MethodGet, path, nil, &page); status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, status, body)
		}
		rows = append(rows, page.Data...)
		if !page.HasMore {
			break
		}
		path = fmt.Sprintf("/arcane/accounts/%s/ledger?limit=1000&before=%d", acct, page.NextBefore)
	}
	for i, j := 0, len(rows)-1; i < j; i, j = i+1, j-1 {
		rows[i], rows[j] = rows[j], rows[i]
	}
	return rows
}

// checkLedgerReplay replays the rows from zero and compares the result
// with the stored balance: the opening credit, then charges only. It
// returns the charge rows by request id, failing on a repeated id.
func checkLedgerReplay(t *testing.T, s *server, acct string, rows []billing.Entry) map[string]billing.Entry {
	t.Helper()
	if len(rows) == 0 || rows[0].Kind != billing.EntryCredit || rows[0].Amount != amount(t, crashBalance) {
		t.Fatalf("ledger of %s does not open with a credit of %s", acct, crashBalance)
	}
	var (
		balance billing.Amount
		spent   billing.Amount
		charges = make(map[string]billing.Entry, len(rows))
	)
	for i, e := range rows {
		if e.Seq != uint64(i+1) {
			t.Errorf("ledger row %d has seq %d, want %d", i, e.Seq, i+1)
		}
		balance += e.Amount
		if e.Balance != balance {
			t.Errorf("ledger row %d (%s %s): balance %s, replay gives %s", e.Seq, e.Kind, e.RequestID, e.Balance, balance)
		}
		if i == 0 {
			continue
		}
		if e.Kind != billing.EntryCharge || e.RequestID == "" {
			t.Errorf("ledger row %d: %s with request id %q, want charges only after the opening credit", e.Seq, e.Kind, e.RequestID)
			continue
		}
		if prev, ok := charges[e.RequestID]; ok {
			t.Errorf("request %s charged twice: rows %d and %d", e.RequestID, prev.Seq, e.Seq)
		}
		charges[e.RequestID] = e
		spent += e.Cost()
	}
	a := s.account(t, acct)
	if got, want := amount(t, a.Balance), amount(t, crashBalance)-spent; got != balance || got != want {
		t.Errorf("stored balance %s; ledger replays to %s; opening %s - charges %s = %s", a.Balance, balance, crashBalance, spent, want)
	}
	var held struct {
		Held billing.Amount `json:"held"`
	}
	s.adminJSON(t, http.MethodGet, "/arcane/accounts/"+acct, nil, &held)
	if held.Held != 0 {
		t.Errorf("%s held after a restart, want 0: holds die with the process", held.Held)
	}
	t.Logf("ledger: %d charge rows totalling %s; balance %s", len(charges), spent, a.Balance)
	return charges
}

// checkCharges holds the ledger against what the clients received: every
// response a worker received in full has its row, except perhaps the
// worker's last, with the cost the client was shown; rows for requests no
// client received in full are at most one per worker.
func checkCharges(t *testing.T, s *server, load *crashLoad, charges map[string]billing.Entry, keyID string) {
	t.Helper()
	seen := make(map[string]bool, load.received())
	missingLast, extra := 0, 0
	var perWorker []string
	for _, w := range load.workers {
		missing := 0
		for j, r := range w.done {
			if seen[r.id] {
				t.Errorf("worker %d: request id %s seen twice", w.n, r.id)
			}
			seen[r.id] = true
			if !r.hasCost {
				t.Errorf("worker %d: response %d (%s, stream %v) carried no usage.cost", w.n, j, r.id, r.stream)
			}
			row, ok := charges[r.id]
			if !ok {
				missing++
				if j < len(w.done)-1 {
					t.Errorf("worker %d: response %d of %d (%s, stream %v) has no ledger row, but the worker received "+
						"another response on the same connection after it: the settlement was not durable when the handler returned",
						w.n, j, len(w.done), r.id, r.stream)
				}
				continue
			}
			if row.Cost() != r.cost {
				t.Errorf("worker %d: request %s: the client was shown cost %s, the ledger row charges %s", w.n, r.id, r.cost, row.Cost())
			}
			if row.Outcome != "ok" || row.KeyID != keyID {
				t.Errorf("worker %d: request %s: row outcome %q, key %q, want ok and %s", w.n, r.id, row.Outcome, row.KeyID, keyID)
			}
		}
		if missing > 0 {
			missingLast++
			last := w.done[len(w.done)-1].id
			if status, body := s.adminJSON(t, http.MethodGet, "/arcane/requests/"+last, nil, nil); status != http.StatusNotFound {
				t.Errorf("GET /arcane/requests/%s, a request without a ledger row: %d %s, want 404", last, status, body)
			}
		}
		perWorker = append(perWorker, fmt.Sprintf("%d:%d/%d", w.n, missing, len(w.done)))
	}
	cutSettled := 0
	for id := range charges {
		if !seen[id] {
			extra++
			for _, w := range load.workers {
				if w.cutID == id {
					cutSettled++
				}
			}
		}
	}
	if extra > len(load.workers) {
		t.Errorf("%d ledger rows for requests no client received in full; at most %d were in flight", extra, len(load.workers))
	}
	t.Logf("%d workers, %d responses received in full, %d requests cut off by the kill; "+
		"%d last responses without a row (settling at the kill); %d rows for cut-off requests (%d of them with headers seen)",
		len(load.workers), load.received(), load.cutOff(), missingLast, extra, cutSettled)
	t.Logf("missing rows per worker (worker:missing/received): %s", strings.Join(perWorker, " "))
}

// checkAudit asks the server whether its ledgers replay to its balances,
// through the admin API and through `caddy arcane audit`.
func (s *server) checkAudit(t *testing.T) {
	t.Helper()
	var audit struct {
		OK            bool              `json:"ok"`
		Differences   []json.RawMessage `json:"differences"`
		Rows, Charges int64
	}
	if status, body := s.adminJSON(t, http.MethodGet, "/arcane/audit", nil, &audit); status != http.StatusOK || !audit.OK || len(audit.Differences) != 0 {
		t.Errorf("GET /arcane/audit: %d, want 200 and ok with no differences: %s", status, body)
	} else {
		t.Logf("audit: ok, %d ledger rows, %d charges", audit.Rows, audit.Charges)
	}
	if stdout, stderr, err := s.arcane(t, "audit"); err != nil {
		t.Errorf("caddy arcane audit: %v, want exit status 0:\n%s%s", err, stdout, stderr)
	}
}

func amount(t *testing.T, s string) billing.Amount {
	t.Helper()
	a, err := billing.ParseAmount(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
