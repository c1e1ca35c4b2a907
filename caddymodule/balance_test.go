package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/arcaneapi/caddy-arcane/billing"
	"github.com/arcaneapi/caddy-arcane/upstream"
	wire "github.com/arcaneapi/caddy-arcane/upstream/openai"
)

// End-to-end tests of arcane_balance: holds, refusals, settlement and the
// ledger, through the real server with the fake upstream behind it.
//
// A request settles after its response has been flushed, so a client that
// has read a whole answer may still be ahead of its ledger row. The tests
// therefore send requests through settledClient, which returns only once
// the server has closed the request's connection: net/http does that after
// the handler chain, and with it arcane_balance's settlement, has returned.
// Nothing sleeps or polls; the upstream handlers report over channels.

// balanceModels adds to chatArcane's catalog two models with round prices
// (2 and 10 micro-dollars a token), one with an output cap, an image bound
// and a context length and one with none, and sets the output cap assumed
// for the latter (its image bound and context length are the built-in
// defaults, 2000 and 2,097,152).
const balanceModels = `model metered {
			deploy up metered-up
			price input 2 output 10
			max_output_tokens 1000
			image_tokens 1000
			context_length 8000
		}
		model uncapped {
			deploy up uncapped-up
			price input 2 output 10
		}
		default_max_output_tokens 2000`

const (
	meteredModel  = "metered"
	uncappedModel = "uncapped"
)

// testPrice is a model's price in micro-dollars per million tokens. A
// model configured without a cached-input or cache-write price has the
// input price there.
type testPrice struct{ input, cachedInput, cacheWrite, output int64 }

var (
	// gptPrice is chatArcane's gpt-5.2: $1.75, $0.175 cached, $14 per 1M.
	gptPrice = testPrice{input: 1_750_000, cachedInput: 175_000, cacheWrite: 1_750_000, output: 14_000_000}
	// meteredPrice is balanceModels' metered and uncapped: $2 and $10.
	meteredPrice = testPrice{input: 2_000_000, cachedInput: 2_000_000, cacheWrite: 2_000_000, output: 10_000_000}
)

// cost is the price arithmetic as the docs state it, computed here
// independently of billing: uncached prompt tokens at the input price,
// cached ones at the cached-input price, completion tokens at the output
// price, summed exactly in 1e-12 dollars and rounded once, half up, to
// micro-dollars.
func (p testPrice) cost(prompt, cached, completion int64) billing.Amount {
	return p.costWithWrites(prompt, cached, 0, completion)
}

// costWithWrites is cost with written of the prompt tokens written to the
// provider's cache, at the cache-write price.
func (p testPrice) costWithWrites(prompt, cached, written, completion int64) billing.Amount {
	pico := (prompt-cached-written)*p.input + cached*p.cachedInput + written*p.cacheWrite + completion*p.output
	return billing.Amount((pico + 500_000) / 1_000_000)
}

// worst is the hold for a body: its bytes as prompt tokens at the dearest
// prompt price (input, cached input or cache write), and n times the
// output cap as completion tokens.
func (p testPrice) worst(body string, n, outputCap int64) billing.Amount {
	return p.worstWithImages(body, 0, n, outputCap)
}

// worstWithImages is worst for a body whose images are bounded by
// imageTokens prompt tokens in all.
func (p testPrice) worstWithImages(body string, imageTokens, n, outputCap int64) billing.Amount {
	return p.worstPrompt(int64(len(body))+imageTokens, n, outputCap)
}

// worstPrompt is the hold for prompt tokens and n times the output cap.
func (p testPrice) worstPrompt(prompt, n, outputCap int64) billing.Amount {
	perPrompt := max(p.input, p.cachedInput, p.cacheWrite)
	pico := prompt*perPrompt + n*outputCap*p.output
	return billing.Amount((pico + 500_000) / 1_000_000)
}

// fileBody is a chat request for model whose user message asks about the
// documents in parts, file content parts.
func fileBody(model string, parts ...string) string {
	return partsBody(model, "Summarize these documents.", parts...)
}

const (
	fileByID = `{"type":"file","file":{"file_id":"file-6F2ksmvXxt4VdoqmHRw6kL"}}`
	// filePDF is a one-page PDF inline: a few hundred bytes, billed as
	// the page's image and text.
	filePDF = `{"type":"file","file":{"filename":"page.pdf","file_data":"data:application/pdf;base64,JVBERi0xLjQKMSAwIG9iajw8L1R5cGUvQ2F0YWxvZy9QYWdlcyAyIDAgUj4+ZW5kb2JqCjIgMCBvYmo8PC9UeXBlL1BhZ2VzL0tpZHNbMyAwIFJdL0NvdW50IDE+PmVuZG9iagozIDAgb2JqPDwvVHlwZS9QYWdlL1BhcmVudCAyIDAgUi9NZWRpYUJveFswIDAgNjEyIDc5Ml0+PmVuZG9iagp0cmFpbGVyPDwvUm9vdCAxIDAgUj4+"}}`
)

// imageBody is a chat request for model whose user message asks about
// images at urls.
func imageBody(model string, urls ...string) string {
	parts := make([]string, len(urls))
	for i, u := range urls {
		parts[i] = `{"type":"image_url","image_url":{"url":"` + u + `"}}`
	}
	return partsBody(model, "What is in these images?", parts...)
}

// partsBody is a chat request for model whose user message is the text
// and then the content parts.
func partsBody(model, text string, parts ...string) string {
	content := `{"type":"text","text":"` + text + `"}`
	for _, p := range parts {
		content += "," + p
	}
	return `{"model":"` + model + `","messages":[{"role":"user","content":[` + content + `]}]}`
}

const (
	catURL = "https://example.com/cat.png"
	dogURL = "https://example.com/dog.jpg"
	// pixelURL is a 1x1 PNG inline: its bytes are in the body.
	pixelURL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

// settledTransport sends every request on a connection of its own with
// "Connection: close", reads the whole answer, and returns it only once
// the server has closed the connection: after its handlers returned, so
// after the request settled. It fails if the server does not close the
// connection within 2×streamWait.
type settledTransport struct {
	// primed and start, when set, line requests up: each sends all of
	// itself but its last byte, reports that on primed, and sends the
	// last byte once start is closed. The server has begun reading every
	// request by then, so they all complete their bodies at once.
	primed chan<- struct{}
	start  <-chan struct{}
}

func (tr settledTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	conn, err := net.DialTimeout("tcp", req.URL.Host, streamWait)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(2 * streamWait)); err != nil {
		return nil, err
	}
	out := req.Clone(req.Context())
	out.Close = true
	var wire bytes.Buffer
	if err := out.Write(&wire); err != nil {
		return nil, fmt.Errorf("encoding the request: %w", err)
	}
	raw := wire.Bytes()
	if tr.start != nil {
		if _, err := conn.Write(raw[:len(raw)-1]); err != nil {
			return nil, fmt.Errorf("sending the request: %w", err)
		}
		tr.primed <- struct{}{}
		<-tr.start
		raw = raw[len(raw)-1:]
	}
	if _, err := conn.Write(raw); err != nil {
		return nil, fmt.Errorf("sending the request: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, out)
	if err != nil {
		return nil, fmt.Errorf("reading the response: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading the response body: %w", err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("the server did not close the connection after answering (%v)", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// settledClient is an http.Client whose requests have settled when Do
// returns.
var settledClient = &http.Client{Transport: settledTransport{}}

// settledChat sends a request to /v1/chat/completions through
// settledClient.
func settledChat(t testing.TB, method, key, body string) chatResponse {
	t.Helper()
	resp, err := settledClient.Do(newChatRequest(t, context.Background(), method, key, body, nil))
	if err != nil {
		t.Fatalf("%s /v1/chat/completions: %v", method, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return chatResponse{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// requestID returns the response's X-Request-Id, failing unless it is one.
func requestID(t testing.TB, h http.Header) string {
	t.Helper()
	id := h.Get("X-Request-Id")
	if !strings.HasPrefix(id, "req_") || len(id) < 10 {
		t.Fatalf("X-Request-Id %q, want a req_ id", id)
	}
	return id
}

// ledgerRow is a ledger row as the admin API shows it.
type ledgerRow struct {
	Seq              uint64 `json:"seq"`
	AccountID        string `json:"account_id"`
	Kind             string `json:"kind"`
	Amount           string `json:"amount"`
	Balance          string `json:"balance"`
	RequestID        string `json:"request_id"`
	KeyID            string `json:"key_id"`
	Model            string `json:"model"`
	Deployment       string `json:"deployment"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CachedTokens     int64  `json:"cached_tokens"`
	CacheWriteTokens int64  `json:"cache_write_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	Basis            string `json:"basis"`
	Outcome          string `json:"outcome"`
	Attempts         int    `json:"attempts"`
}

// cost is what a charge row took from the balance.
func (r ledgerRow) cost(t testing.TB) billing.Amount {
	t.Helper()
	return -mustAmount(t, r.Amount)
}

func mustAmount(t testing.TB, s string) billing.Amount {
	t.Helper()
	a, err := billing.ParseAmount(s)
	if err != nil {
		t.Fatalf("amount %q: %v", s, err)
	}
	return a
}

// ledgerRows returns all of an account's ledger rows, newest first.
func ledgerRows(t testing.TB, accountID string) []ledgerRow {
	t.Helper()
	var rows []ledgerRow
	path := "/arcane/accounts/" + accountID + "/ledger?limit=1000"
	for {
		var page struct {
			Data       []ledgerRow `json:"data"`
			HasMore    bool        `json:"has_more"`
			NextBefore uint64      `json:"next_before"`
		}
		adminOK(t, http.MethodGet, path, nil, http.StatusOK, &page)
		rows = append(rows, page.Data...)
		if !page.HasMore {
			return rows
		}
		path = fmt.Sprintf("/arcane/accounts/%s/ledger?limit=1000&before=%d", accountID, page.NextBefore)
	}
}

// chargeRows returns an account's charge rows, newest first.
func chargeRows(t testing.TB, accountID string) []ledgerRow {
	t.Helper()
	var charges []ledgerRow
	for _, r := range ledgerRows(t, accountID) {
		if r.Kind == "charge" {
			charges = append(charges, r)
		}
	}
	return charges
}

// requestRow returns the one ledger row of a request, failing unless there
// is exactly one.
func requestRow(t testing.TB, accountID, requestID string) ledgerRow {
	t.Helper()
	var found []ledgerRow
	for _, r := range ledgerRows(t, accountID) {
		if r.RequestID == requestID {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("request %s has %d ledger rows, want 1: %+v", requestID, len(found), found)
	}
	// Where the admin API looks requests up by id, it must find the row.
	resp := adminCall(t, http.MethodGet, "/arcane/requests/"+requestID, nil)
	if !missingAdminRoute(resp) {
		var row ledgerRow
		if resp.Status != http.StatusOK {
			t.Fatalf("GET /arcane/requests/%s: status %d; %s", requestID, resp.Status, resp.Body)
		}
		resp.decode(t, &row)
		if row != found[0] {
			t.Errorf("GET /arcane/requests/%s answered\n%+v\nthe ledger holds\n%+v", requestID, row, found[0])
		}
	}
	return found[0]
}

// missingAdminRoute reports whether the admin API answered that it has no
// such route: an endpoint these tests use where it exists.
func missingAdminRoute(resp adminResponse) bool {
	return resp.Status == http.StatusNotFound && strings.Contains(string(resp.Body), "no such arcane admin route")
}

// assertAudit checks, where the admin API offers GET /arcane/audit, that
// every ledger replays to its stored balance and no request is charged
// twice.
func assertAudit(t testing.TB) {
	t.Helper()
	resp := adminCall(t, http.MethodGet, "/arcane/audit", nil)
	if missingAdminRoute(resp) {
		return
	}
	var report struct {
		OK          bool              `json:"ok"`
		Differences []json.RawMessage `json:"differences"`
	}
	if resp.Status != http.StatusOK {
		t.Fatalf("GET /arcane/audit: status %d; %s", resp.Status, resp.Body)
	}
	resp.decode(t, &report)
	if !report.OK || len(report.Differences) != 0 {
		t.Errorf("the audit found differences: %s", resp.Body)
	}
}

// funds returns an account's balance and open holds.
func funds(t testing.TB, accountID string) (balance, held billing.Amount) {
	t.Helper()
	var acct testAccount
	adminOK(t, http.MethodGet, "/arcane/accounts/"+accountID, nil, http.StatusOK, &acct)
	return mustAmount(t, acct.Balance), mustAmount(t, acct.Held)
}

// assertFunds checks an account's balance and that no hold is open.
func assertFunds(t testing.TB, accountID string, wantBalance billing.Amount) {
	t.Helper()
	balance, held := funds(t, accountID)
	if balance != wantBalance || held != 0 {
		t.Errorf("balance %s and held %s, want %s and 0", balance, held, wantBalance)
	}
}

// fundedKey creates an account with an opening balance and a key for it.
func fundedKey(t testing.TB, balance billing.Amount) (testAccount, testKey) {
	t.Helper()
	var acct testAccount
	adminOK(t, http.MethodPost, "/arcane/accounts", map[string]any{"name": "funded", "balance": balance.String()}, http.StatusCreated, &acct)
	return acct, createKey(t, acct.ID, nil)
}

// assertCharge checks a charge row against what the request was expected
// to record.
func assertCharge(t testing.TB, row ledgerRow, want ledgerRow, cost billing.Amount) {
	t.Helper()
	if row.Kind != "charge" {
		t.Errorf("row kind %q, want charge", row.Kind)
	}
	if got := row.cost(t); got != cost {
		t.Errorf("row charged %s, want %s", got, cost)
	}
	want.Seq, want.AccountID, want.Kind, want.Amount, want.Balance = row.Seq, row.AccountID, row.Kind, row.Amount, row.Balance
	if want.Attempts == 0 && want.Deployment != "" {
		// A row that names a deployment made at least one call; the tests
		// of one deployment expect exactly one.
		want.Attempts = 1
	}
	if row != want {
		t.Errorf("charge row\n%+v\nwant\n%+v", row, want)
	}
}

// costLiteral matches usage.cost: a JSON number of dollars, six decimals.
var costLiteral = regexp.MustCompile(`^[0-9]+\.[0-9]{6}$`)

// usageCost returns the usage.cost literal of a completion or chunk, or ""
// when its usage is absent or null; it fails if usage has no valid cost.
func usageCost(t testing.TB, obj string) string {
	t.Helper()
	var o struct {
		Usage map[string]json.RawMessage `json:"usage"`
	}
	if err := json.Unmarshal([]byte(obj), &o); err != nil {
		t.Fatalf("not a JSON object: %v; %s", err, head(obj))
	}
	if o.Usage == nil {
		return ""
	}
	raw, ok := o.Usage["cost"]
	if !ok || !costLiteral.Match(raw) {
		t.Fatalf("usage.cost is %s, want a JSON number with six decimals; %s", raw, obj)
	}
	if _, ok := o.Usage["cost_details"]; ok {
		t.Errorf("usage has the upstream's cost_details: %s", obj)
	}
	return string(raw)
}

// blockingReply is an upstream handler that reports its arrival, waits
// for gate (or the gateway giving up), then answers with replyWith(rep).
func blockingReply(arrived chan<- struct{}, gate <-chan struct{}, rep upstreamReply) upstreamHandler {
	reply := replyWith(rep)
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		arrived <- struct{}{}
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		reply(w, r, body)
	}
}

// Promise 1: concurrent requests never together hold more than the
// balance, and settle to exactly what the ledger says.
func TestBalanceConcurrentRequestsNeverOverdraw(t *testing.T) {
	env := startChat(t, chatOptions{balance: true, arcaneExtra: balanceModels})
	const (
		admitted  = 5
		total     = 4*admitted + 4
		maxTokens = 100
		prompt    = 20
	)
	body := chatBody(meteredModel, fmt.Sprintf(`,"max_tokens":%d`, maxTokens))
	worst := meteredPrice.worst(body, 1, maxTokens)
	// Enough for `admitted` worst cases, one micro-dollar short of one more.
	opening := billing.Amount(admitted+1)*worst - 1
	creditAccount(t, env.acct.ID, opening.String())

	arrived := make(chan struct{}, total)
	gate, release := releaser(t)
	var answered atomic.Int64
	env.up.handle(func(w http.ResponseWriter, r *http.Request, b []byte) {
		arrived <- struct{}{}
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		// The j-th answer reports 40·j output tokens: from the third on
		// more than max_tokens allows, as a misbehaving provider might;
		// the charge is capped at the hold.
		j := answered.Add(1)
		req, _ := parseUpstreamRequest(b)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(completionJSON(req.Model, "ok", usageOf(prompt, 40*j, 0)))
	})
	var wantSpent billing.Amount
	for j := int64(1); j <= admitted; j++ {
		wantSpent += min(meteredPrice.cost(prompt, 0, 40*j), worst)
	}

	type result struct {
		resp chatResponse
		err  error
	}
	results := make(chan result, total)
	reqs := make([]*http.Request, total)
	for i := range reqs {
		reqs[i] = newChatRequest(t, context.Background(), http.MethodPost, env.key.Key, body, nil)
	}
	// All requests reach the gateway before any of them is complete, and
	// are completed at once.
	primed, start := make(chan struct{}, total), make(chan struct{})
	client := &http.Client{Transport: settledTransport{primed: primed, start: start}}
	for _, req := range reqs {
		go func() {
			resp, err := client.Do(req)
			if err != nil {
				results <- result{err: err}
				return
			}
			data, _ := io.ReadAll(resp.Body)
			results <- result{resp: chatResponse{Status: resp.StatusCode, Header: resp.Header, Body: data}}
		}()
	}

	timeout := time.After(2 * streamWait)
	for i := range total {
		select {
		case <-primed:
		case r := <-results:
			t.Fatalf("request %d failed before it was complete: %v, %+v", i, r.err, r.resp)
		case <-timeout:
			t.Fatalf("only %d of %d requests were sent within %v", i, total, 2*streamWait)
		}
	}
	close(start)

	// Every request is decided once it has either reached the upstream
	// (admitted; it waits there) or been answered.
	var early []result
	reached := 0
	for reached+len(early) < total {
		select {
		case <-arrived:
			reached++
		case r := <-results:
			early = append(early, r)
		case <-timeout:
			t.Fatalf("after %v, %d requests reached the upstream and %d were answered, of %d", 2*streamWait, reached, len(early), total)
		}
	}
	if reached != admitted {
		t.Errorf("%d requests reached the upstream, want %d", reached, admitted)
	}
	if balance, held := funds(t, env.acct.ID); balance != opening || held != admitted*worst {
		t.Errorf("while the admitted requests wait: balance %s and held %s, want %s and %s", balance, held, opening, admitted*worst)
	}
	ids := map[string]bool{}
	for _, r := range early {
		if r.err != nil {
			t.Fatalf("request failed: %v", r.err)
		}
		assertOpenAIError(t, r.resp.Status, r.resp.Header, string(r.resp.Body), http.StatusForbidden, "insufficient_balance", "insufficient_balance")
		msg := errorMessage(t, string(r.resp.Body))
		// A refusal happens only once `admitted` holds are open, so it
		// always sees the same figures.
		for _, want := range []string{"insufficient", "$" + worst.String(), "$" + (opening - admitted*worst).String() + " is available"} {
			if !strings.Contains(msg, want) {
				t.Errorf("the refusal's message %q does not contain %q", msg, want)
			}
		}
		ids[requestID(t, r.resp.Header)] = true
	}

	release()
	okIDs := map[string]string{} // request id -> usage.cost
	for range total - len(early) {
		select {
		case r := <-results:
			if r.err != nil {
				t.Fatalf("request failed: %v", r.err)
			}
			if r.resp.Status != http.StatusOK {
				t.Fatalf("an admitted request answered %d: %s", r.resp.Status, r.resp.Body)
			}
			id := requestID(t, r.resp.Header)
			ids[id] = true
			okIDs[id] = usageCost(t, string(r.resp.Body))
		case <-time.After(streamWait):
			t.Fatalf("the admitted requests did not finish within %v", streamWait)
		}
	}
	if len(ids) != total {
		t.Errorf("%d distinct X-Request-Id values among %d answers", len(ids), total)
	}
	if n := env.up.calls.Load(); n != admitted {
		t.Errorf("the upstream saw %d requests, want %d", n, admitted)
	}

	balance, held := funds(t, env.acct.ID)
	if held != 0 || balance < 0 {
		t.Errorf("after settling: balance %s and held %s, want ≥ 0 and 0", balance, held)
	}
	rows := chargeRows(t, env.acct.ID)
	if len(rows) != admitted {
		t.Fatalf("%d charge rows, want one per admitted request (%d): %+v", len(rows), admitted, rows)
	}
	var spent billing.Amount
	for _, row := range rows {
		cost := row.cost(t)
		spent += cost
		if cost <= 0 || cost > worst {
			t.Errorf("request %s charged %s, want more than 0 and at most the hold %s", row.RequestID, cost, worst)
		}
		shown, ok := okIDs[row.RequestID]
		if !ok {
			t.Errorf("row for request %s, which no 200 answer carried as X-Request-Id", row.RequestID)
			continue
		}
		delete(okIDs, row.RequestID)
		if shown != cost.String() {
			t.Errorf("request %s showed usage.cost %s, its row charged %s", row.RequestID, shown, cost)
		}
		if row.KeyID != env.key.ID || row.Model != meteredModel || row.Deployment != "up/metered-up" ||
			row.Basis != "upstream" || row.Outcome != "ok" || row.PromptTokens != prompt || row.CompletionTokens%40 != 0 {
			t.Errorf("charge row %+v", row)
		}
	}
	if len(okIDs) != 0 {
		t.Errorf("admitted requests without a ledger row: %v", okIDs)
	}
	if spent != opening-balance {
		t.Errorf("the charges sum to %s, but the balance fell by %s", spent, opening-balance)
	}
	if spent != wantSpent {
		t.Errorf("the charges sum to %s, want %s (each reported usage priced, capped at the hold)", spent, wantSpent)
	}
	assertAudit(t)
}

// A refusal reaches clients the way the official SDK understands it.
func TestBalanceRefusalThroughTheOpenAISDK(t *testing.T) {
	env := startChat(t, chatOptions{balance: true})
	// Without max_tokens gpt-5.2 may answer 128,000 tokens: $1.792 at $14/M.
	creditAccount(t, env.acct.ID, "0.5")
	client := openai.NewClient(
		option.WithBaseURL(siteURL+"/v1/"),
		option.WithAPIKey(env.key.Key),
		option.WithHTTPClient(settledClient),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(2*streamWait),
	)
	params := openai.ChatCompletionNewParams{
		Model:    publicModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Write a long story.")},
	}
	check := func(t *testing.T, err error) {
		t.Helper()
		var apierr *openai.Error
		if !errors.As(err, &apierr) {
			t.Fatalf("error %v (%T) is not an *openai.Error", err, err)
		}
		if apierr.StatusCode != http.StatusForbidden || apierr.Code != "insufficient_balance" || apierr.Type != "insufficient_balance" {
			t.Errorf("status %d, code %q, type %q; want 403 and insufficient_balance twice", apierr.StatusCode, apierr.Code, apierr.Type)
		}
		if !strings.Contains(apierr.Message, "insufficient") || !strings.Contains(apierr.Message, "max_tokens") {
			t.Errorf("message %q does not say the balance is insufficient and how to lower the hold", apierr.Message)
		}
		if apierr.Response == nil {
			t.Fatal("the error carries no response")
		}
		requestID(t, apierr.Response.Header)
	}

	t.Run("a completion is refused with 403 insufficient_balance", func(t *testing.T) {
		_, err := client.Chat.Completions.New(context.Background(), params)
		check(t, err)
	})
	t.Run("a stream is refused with 403 insufficient_balance", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(context.Background(), params)
		defer stream.Close()
		for stream.Next() {
			t.Errorf("the refused stream has a chunk: %s", stream.Current().RawJSON())
		}
		check(t, stream.Err())
	})

	if n := env.up.calls.Load(); n != 0 {
		t.Errorf("refused requests reached the upstream (%d requests)", n)
	}
	if rows := chargeRows(t, env.acct.ID); len(rows) != 0 {
		t.Errorf("refused requests left ledger rows: %+v", rows)
	}
	assertFunds(t, env.acct.ID, 500_000)

	t.Run("with max_tokens the same request fits and the SDK reads usage.cost", func(t *testing.T) {
		p := params
		p.MaxCompletionTokens = openai.Int(1000)
		resp, err := client.Chat.Completions.New(context.Background(), p)
		if err != nil {
			t.Fatalf("Chat.Completions.New: %v", err)
		}
		want := gptPrice.cost(11, 3, 7) // standardReply's usage
		if got := resp.Usage.JSON.ExtraFields["cost"].Raw(); got != want.String() {
			t.Errorf("usage.cost %s, want %s", got, want)
		}
		assertFunds(t, env.acct.ID, 500_000-want)
	})
}

// usage.cost is the figure the ledger row carries, priced as documented.
func TestBalanceUsageCostMatchesTheLedger(t *testing.T) {
	env := startChat(t, chatOptions{balance: true})
	const opening = 10 * billing.Dollar
	creditAccount(t, env.acct.ID, opening.String())

	// 3 uncached prompt tokens at $1.75/M are 5.25 micro-dollars, 2
	// cached ones at $0.175/M 0.35 and 7 completion tokens at $14/M 98:
	// 103.6, rounded once to 104. Rounding each part (5+0+98) or
	// truncating gives 103; pricing cached tokens as input, 107.
	const prompt, cached, completion = 5, 2, 7
	const wantCost = "0.000104"
	if got := gptPrice.cost(prompt, cached, completion).String(); got != wantCost {
		t.Fatalf("the test's arithmetic gives %s, want %s", got, wantCost)
	}
	usage := usageOf(prompt, completion, cached)
	env.up.handle(replyWith(upstreamReply{Pieces: standardReply.Pieces, Usage: usage}))
	wantRow := func(id string) ledgerRow {
		return ledgerRow{RequestID: id, KeyID: env.key.ID, Model: publicModel, Deployment: "up/" + upstreamModel,
			PromptTokens: prompt, CachedTokens: cached, CompletionTokens: completion, Basis: "upstream", Outcome: "ok"}
	}
	// usageEvents returns a stream's events with a non-null usage.
	usageEvents := func(t *testing.T, body []byte) []string {
		t.Helper()
		events := splitEvents(t, body)
		if events[len(events)-1] != "[DONE]" {
			t.Fatalf("the stream ends with %q, want [DONE]", head(events[len(events)-1]))
		}
		var with []string
		for _, e := range events[:len(events)-1] {
			if c := decodeChunk(t, e); c.Usage != nil {
				with = append(with, e)
			}
		}
		return with
	}
	// upstreamCost is a usage object as OpenRouter reports it, with its
	// own price of the completion.
	upstreamUsage := json.RawMessage(`{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12,` +
		`"prompt_tokens_details":{"cached_tokens":2},"cost":0.4242,"is_byok":false,` +
		`"cost_details":{"upstream_inference_cost":0.4141}}`)
	reportsItsOwnCost := func(w http.ResponseWriter, r *http.Request, body []byte) {
		req, _ := parseUpstreamRequest(body)
		if !req.Stream {
			o := wireObject{ID: testCompletionID, Object: "chat.completion", Created: testCreated, Model: req.Model,
				Choices: []wireChoice{{Message: map[string]any{"role": "assistant", "content": "hi"}, Logprobs: json.RawMessage("null")}},
				Usage:   upstreamUsage}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(mustJSON(o))
			return
		}
		startUpstreamStream(w)
		writeUpstreamEvent(w, chunkJSON(req.Model, contentDelta("hi"), nil, true))
		writeUpstreamEvent(w, finishChunkJSON(req.Model, true))
		writeUpstreamEvent(w, mustJSON(wireObject{ID: testCompletionID, Object: "chat.completion.chunk", Created: testCreated,
			Model: req.Model, Choices: []wireChoice{}, Usage: upstreamUsage}))
		writeUpstreamEvent(w, []byte("[DONE]"))
	}
	leaksUpstreamCost := func(t *testing.T, body []byte) {
		t.Helper()
		for _, s := range []string{"0.4242", "0.4141", "cost_details", "upstream_inference_cost"} {
			if strings.Contains(string(body), s) {
				t.Errorf("the answer passes on the upstream's %q:\n%s", s, body)
			}
		}
	}

	var spent billing.Amount
	charged := func(t *testing.T, resp chatResponse) {
		t.Helper()
		id := requestID(t, resp.Header)
		assertCharge(t, requestRow(t, env.acct.ID, id), wantRow(id), mustAmount(t, wantCost))
		spent += mustAmount(t, wantCost)
		assertFunds(t, env.acct.ID, opening-spent)
	}

	t.Run("a completion's usage.cost is its ledger row's cost", func(t *testing.T) {
		resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(publicModel, ""))
		if resp.Status != http.StatusOK {
			t.Fatalf("status %d; body %s", resp.Status, resp.Body)
		}
		if got := usageCost(t, string(resp.Body)); got != wantCost {
			t.Errorf("usage.cost %s, want %s", got, wantCost)
		}
		charged(t, resp)
	})
	t.Run("a stream that asked for usage has the cost in its usage chunk", func(t *testing.T) {
		resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(publicModel, `,"stream":true,"stream_options":{"include_usage":true}`))
		if resp.Status != http.StatusOK {
			t.Fatalf("status %d; body %s", resp.Status, resp.Body)
		}
		with := usageEvents(t, resp.Body)
		if len(with) != 1 {
			t.Fatalf("%d chunks carry usage, want the one usage chunk: %q", len(with), with)
		}
		if got := usageCost(t, with[0]); got != wantCost {
			t.Errorf("usage.cost %s, want %s", got, wantCost)
		}
		charged(t, resp)
	})
	t.Run("a stream that did not ask for usage carries none and is charged all the same", func(t *testing.T) {
		resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(publicModel, `,"stream":true`))
		if resp.Status != http.StatusOK {
			t.Fatalf("status %d; body %s", resp.Status, resp.Body)
		}
		if with := usageEvents(t, resp.Body); len(with) != 0 {
			t.Errorf("chunks carry usage the client did not ask for: %q", with)
		}
		if strings.Contains(string(resp.Body), `"cost"`) {
			t.Errorf("the stream carries a cost:\n%s", resp.Body)
		}
		charged(t, resp)
	})

	env.up.handle(reportsItsOwnCost)
	t.Run("a completion shows the gateway's cost, never the upstream's", func(t *testing.T) {
		resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(publicModel, ""))
		if resp.Status != http.StatusOK {
			t.Fatalf("status %d; body %s", resp.Status, resp.Body)
		}
		if got := usageCost(t, string(resp.Body)); got != wantCost {
			t.Errorf("usage.cost %s, want %s", got, wantCost)
		}
		leaksUpstreamCost(t, resp.Body)
		charged(t, resp)
	})
	t.Run("a stream's usage chunk shows the gateway's cost, never the upstream's", func(t *testing.T) {
		resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(publicModel, `,"stream":true,"stream_options":{"include_usage":true}`))
		if resp.Status != http.StatusOK {
			t.Fatalf("status %d; body %s", resp.Status, resp.Body)
		}
		with := usageEvents(t, resp.Body)
		if len(with) != 1 {
			t.Fatalf("%d chunks carry usage, want the one usage chunk: %q", len(with), with)
		}
		if got := usageCost(t, with[0]); got != wantCost {
			t.Errorf("usage.cost %s, want %s", got, wantCost)
		}
		leaksUpstreamCost(t, resp.Body)
		charged(t, resp)
	})
}

// streamPieces starts an upstream stream and writes the role chunk and a
// content chunk per piece, with no usage.
func streamPieces(w http.ResponseWriter, model string, pieces []string) {
	startUpstreamStream(w)
	writeUpstreamEvent(w, chunkJSON(model, roleDelta, nil, true))
	for _, p := range pieces {
		writeUpstreamEvent(w, chunkJSON(model, contentDelta(p), nil, true))
	}
}

// Promise 2 for streams that do not end well: what was delivered is
// charged, counted, and nothing more; nothing delivered, nothing charged.
func TestBalancePartialStreamsChargeWhatWasDelivered(t *testing.T) {
	env := startChat(t, chatOptions{balance: true})
	const opening = 10 * billing.Dollar
	creditAccount(t, env.acct.ID, opening.String())
	var spent billing.Amount

	body := chatBody(publicModel, `,"stream":true,"max_tokens":2000`)
	delivered := []string{"Once", " upon", " a", " time"}
	all := slices.Clone(delivered)
	for range 60 {
		all = append(all, " and then")
	}
	count := func(pieces []string) int64 {
		return int64(tokenCounter.Count(publicModel, []byte(strings.Join(pieces, ""))))
	}
	counted := func(id, outcome string, prompt, completion int64) ledgerRow {
		return ledgerRow{RequestID: id, KeyID: env.key.ID, Model: publicModel, Deployment: "up/" + upstreamModel,
			PromptTokens: prompt, CompletionTokens: completion, Basis: "counted", Outcome: outcome}
	}

	// The whole reply, counted: the yardstick for the partial ones.
	env.up.handle(func(w http.ResponseWriter, r *http.Request, b []byte) {
		req, _ := parseUpstreamRequest(b)
		streamPieces(w, req.Model, all)
		writeUpstreamEvent(w, finishChunkJSON(req.Model, true))
		writeUpstreamEvent(w, []byte("[DONE]"))
	})
	resp := settledChat(t, http.MethodPost, env.key.Key, body)
	if resp.Status != http.StatusOK {
		t.Fatalf("status %d; body %s", resp.Status, resp.Body)
	}
	id := requestID(t, resp.Header)
	whole := requestRow(t, env.acct.ID, id)
	if whole.PromptTokens <= 0 {
		t.Fatalf("the counted prompt has %d tokens", whole.PromptTokens)
	}
	prompt := whole.PromptTokens
	wholeCost := gptPrice.cost(prompt, 0, count(all))
	assertCharge(t, whole, counted(id, "ok", prompt, count(all)), wholeCost)
	spent += wholeCost
	assertFunds(t, env.acct.ID, opening-spent)

	t.Run("a client that leaves mid-stream pays for the events it got", func(t *testing.T) {
		cancelled := make(chan struct{})
		gate, _ := releaser(t)
		env.up.handle(func(w http.ResponseWriter, r *http.Request, b []byte) {
			req, _ := parseUpstreamRequest(b)
			streamPieces(w, req.Model, delivered)
			select {
			case <-r.Context().Done():
				close(cancelled)
			case <-gate:
			}
		})

		var id string
		leaveAfter(t, env.key.Key, body, nil, cancelled, func(req *http.Request, br *bufio.Reader) {
			resp := readStreamStart(t, req, br)
			id = requestID(t, resp.Header)
			er := newEventReader(resp.Body)
			er.next(t) // the role chunk
			for _, want := range delivered {
				c := decodeChunk(t, er.next(t))
				if len(c.Choices) != 1 || c.Choices[0].Delta.Content == nil || *c.Choices[0].Delta.Content != want {
					t.Fatalf("chunk %+v, want content %q", c, want)
				}
			}
		})

		row := requestRow(t, env.acct.ID, id)
		completion := count(delivered)
		cost := gptPrice.cost(prompt, 0, completion)
		assertCharge(t, row, counted(id, "client_closed", prompt, completion), cost)
		if completion <= 0 || cost <= 0 || cost >= wholeCost {
			t.Errorf("charged %s for %d tokens; want more than 0, and less than the whole reply's %s", cost, completion, wholeCost)
		}
		spent += row.cost(t)
		assertFunds(t, env.acct.ID, opening-spent)
	})

	for _, tc := range []struct {
		name    string
		stream  bool
		handler upstreamHandler
		status  int
	}{
		{name: "a completion the upstream fails with 500", status: http.StatusBadGateway,
			handler: func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				writeUpstreamError(w, http.StatusInternalServerError, "server_error", "The server had an error.")
			}},
		{name: "a stream the upstream fails with 500", stream: true, status: http.StatusBadGateway,
			handler: func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				writeUpstreamError(w, http.StatusInternalServerError, "server_error", "The server had an error.")
			}},
		{name: "a completion the upstream rate limits", status: http.StatusTooManyRequests,
			handler: func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Retry-After", "3")
				writeUpstreamError(w, http.StatusTooManyRequests, "requests", "Rate limit reached.")
			}},
		{name: "a stream the upstream rate limits", stream: true, status: http.StatusTooManyRequests,
			handler: func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				writeUpstreamError(w, http.StatusTooManyRequests, "requests", "Rate limit reached.")
			}},
		{name: "a stream the upstream ends before its first event", stream: true, status: http.StatusBadGateway,
			handler: func(w http.ResponseWriter, _ *http.Request, _ []byte) { startUpstreamStream(w) }},
	} {
		t.Run(tc.name+" is not charged", func(t *testing.T) {
			resetHealth()
			env.up.handle(tc.handler)
			b := chatBody(publicModel, "")
			if tc.stream {
				b = body
			}
			resp := settledChat(t, http.MethodPost, env.key.Key, b)
			if resp.Status != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.Status, tc.status, resp.Body)
			}
			id := requestID(t, resp.Header)
			assertCharge(t, requestRow(t, env.acct.ID, id),
				ledgerRow{RequestID: id, KeyID: env.key.ID, Model: publicModel, Deployment: "up/" + upstreamModel, Outcome: "upstream_error"}, 0)
			assertFunds(t, env.acct.ID, opening-spent)
		})
	}

	for _, tc := range []struct {
		name string
		end  func(w http.ResponseWriter)
	}{
		{name: "a stream the upstream ends without [DONE]", end: func(http.ResponseWriter) {}},
		{name: "a stream whose upstream connection drops", end: func(w http.ResponseWriter) {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
		}},
	} {
		t.Run(tc.name+" is charged for what was delivered", func(t *testing.T) {
			resetHealth()
			env.up.handle(func(w http.ResponseWriter, r *http.Request, b []byte) {
				req, _ := parseUpstreamRequest(b)
				streamPieces(w, req.Model, delivered)
				tc.end(w)
			})
			resp := settledChat(t, http.MethodPost, env.key.Key, body)
			if resp.Status != http.StatusOK {
				t.Fatalf("status %d; body %s", resp.Status, resp.Body)
			}
			events := splitEvents(t, resp.Body)
			if n := len(delivered) + 3; len(events) != n {
				t.Fatalf("%d events, want the role chunk, %d pieces, an error chunk and [DONE]: %q", len(events), len(delivered), events)
			}
			if e := decodeChunk(t, events[len(events)-2]); e.Error == nil || e.Error["code"] != "upstream_error" {
				t.Errorf("the last chunk is %s, want the in-band upstream_error", events[len(events)-2])
			}
			id := requestID(t, resp.Header)
			completion := count(delivered)
			cost := gptPrice.cost(prompt, 0, completion)
			assertCharge(t, requestRow(t, env.acct.ID, id), counted(id, "upstream_error", prompt, completion), cost)
			if cost <= 0 || cost >= wholeCost {
				t.Errorf("charged %s; want more than 0, and less than the whole reply's %s", cost, wholeCost)
			}
			spent += cost
			assertFunds(t, env.acct.ID, opening-spent)
		})
	}
	assertAudit(t)
}

// Promise 6: a refused request holds nothing and leaves no ledger row.
func TestBalanceBadInputChangesNothing(t *testing.T) {
	env := startChat(t, chatOptions{balance: true, arcaneExtra: "max_request_body 2KiB\n\t\t" + balanceModels})
	const opening = 5 * billing.Dollar
	creditAccount(t, env.acct.ID, opening.String())
	limited := createKey(t, env.acct.ID, map[string]any{"models": []string{meteredModel}})
	oversized := chatBody(publicModel, `,"user":"`+strings.Repeat("a", 3000)+`"`)

	for _, tc := range []struct {
		name, method, key, body string
		status                  int
		code                    string
	}{
		{name: "malformed JSON", body: `{"model":"gpt-5.2","messages":[`, status: 400},
		{name: "a body that is not JSON", body: `model=gpt-5.2`, status: 400},
		{name: "an empty body", body: "", status: 400},
		{name: "a JSON array", body: `[` + chatBody(publicModel, "") + `]`, status: 400, code: "invalid_type"},
		{name: "max_tokens of the wrong type", body: chatBody(publicModel, `,"max_tokens":"ten"`), status: 400, code: "invalid_type"},
		{name: "max_tokens 0", body: chatBody(publicModel, `,"max_tokens":0`), status: 400, code: "invalid_value"},
		{name: "n 0", body: chatBody(publicModel, `,"n":0`), status: 400, code: "invalid_value"},
		{name: "n 1000", body: chatBody(publicModel, `,"n":1000`), status: 400, code: "invalid_value"},
		{name: "a temperature of 3", body: chatBody(publicModel, `,"temperature":3`), status: 400, code: "invalid_value"},
		{name: "an unknown model", body: chatBody("gpt-9", ""), status: 404, code: "model_not_found"},
		{name: "a model outside the key's allow-list", key: limited.Key, body: chatBody(publicModel, ""), status: 404, code: "model_not_found"},
		{name: "an oversized body", body: oversized, status: 413, code: "request_too_large"},
		{name: "GET", method: http.MethodGet, status: 405, code: "method_not_allowed"},
		{name: "PUT with a valid body", method: http.MethodPut, body: chatBody(publicModel, ""), status: 405, code: "method_not_allowed"},
	} {
		t.Run(tc.name+" changes nothing", func(t *testing.T) {
			method, key := tc.method, tc.key
			if method == "" {
				method = http.MethodPost
			}
			if key == "" {
				key = env.key.Key
			}
			rows, calls := len(ledgerRows(t, env.acct.ID)), env.up.calls.Load()
			resp := settledChat(t, method, key, tc.body)
			if resp.Status != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.Status, tc.status, resp.Body)
			}
			var e struct {
				Error struct {
					Type string  `json:"type"`
					Code *string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(resp.Body, &e); err != nil || e.Error.Type != "invalid_request_error" {
				t.Errorf("body %s, want an invalid_request_error envelope", resp.Body)
			}
			if tc.code != "" && (e.Error.Code == nil || *e.Error.Code != tc.code) {
				t.Errorf("body %s, want code %s", resp.Body, tc.code)
			}
			requestID(t, resp.Header)
			if n := len(ledgerRows(t, env.acct.ID)); n != rows {
				t.Errorf("the ledger has %d rows, had %d: %+v", n, rows, ledgerRows(t, env.acct.ID)[0])
			}
			if n := env.up.calls.Load(); n != calls {
				t.Errorf("the request reached the upstream")
			}
			assertFunds(t, env.acct.ID, opening)
		})
	}

	t.Run("a good request after them is charged", func(t *testing.T) {
		resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(publicModel, ""))
		if resp.Status != http.StatusOK {
			t.Fatalf("status %d; body %s", resp.Status, resp.Body)
		}
		cost := gptPrice.cost(11, 3, 7) // standardReply's usage
		row := requestRow(t, env.acct.ID, requestID(t, resp.Header))
		if row.cost(t) != cost {
			t.Errorf("charged %s, want %s", row.cost(t), cost)
		}
		assertFunds(t, env.acct.ID, opening-cost)
	})
}

// forceReload posts cfg to the admin endpoint's /load the way
// `caddy reload --force` does, so an unchanged config is loaded anew.
func forceReload(t testing.TB, cfg string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, adminURL+"/load", strings.NewReader(cfg))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	req.Header.Set("Origin", adminURL)
	req.Header.Set("Cache-Control", "must-revalidate")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("POST /load: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /load: status %d; %s", resp.StatusCode, body)
	}
}

// activeApp returns the running config's arcane app.
func activeApp(t testing.TB) *App {
	t.Helper()
	app, err := caddy.ActiveContext().App("arcane")
	if err != nil {
		t.Fatalf("the running config has no arcane app: %v", err)
	}
	return app.(*App)
}

// Promise 8 for billing: requests in flight across a reload keep their
// holds and settle; requests after it are charged.
func TestBalanceReloadSettlesInFlightRequests(t *testing.T) {
	env := startChat(t, chatOptions{balance: true})
	const opening = 20 * billing.Dollar
	creditAccount(t, env.acct.ID, opening.String())
	const inFlight = 4
	body := chatBody(publicModel, `,"stream":true,"stream_options":{"include_usage":true},"max_tokens":1000`)
	worst := gptPrice.worst(body, 1, 1000)
	cost := gptPrice.cost(11, 3, 7) // standardReply's usage

	started := make(chan struct{}, inFlight+1)
	gate, release := releaser(t)
	env.up.handle(func(w http.ResponseWriter, r *http.Request, b []byte) {
		req, _ := parseUpstreamRequest(b)
		streamPieces(w, req.Model, standardReply.Pieces[:1])
		started <- struct{}{}
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		for _, p := range standardReply.Pieces[1:] {
			writeUpstreamEvent(w, chunkJSON(req.Model, contentDelta(p), nil, true))
		}
		writeUpstreamEvent(w, finishChunkJSON(req.Model, true))
		writeUpstreamEvent(w, usageChunkJSON(req.Model, standardReply.Usage))
		writeUpstreamEvent(w, []byte("[DONE]"))
	})
	type result struct {
		resp *http.Response
		body []byte
		err  error
	}
	results := make(chan result, inFlight)
	for range inFlight {
		req := newChatRequest(t, context.Background(), http.MethodPost, env.key.Key, body, nil)
		go func() {
			resp, err := settledClient.Do(req)
			if err != nil {
				results <- result{err: err}
				return
			}
			data, _ := io.ReadAll(resp.Body)
			results <- result{resp: resp, body: data}
		}()
	}
	for i := range inFlight {
		receive(t, started, fmt.Sprintf("request %d reaching the upstream", i+1))
	}
	if balance, held := funds(t, env.acct.ID); balance != opening || held != inFlight*worst {
		t.Fatalf("before the reload: balance %s and held %s, want %s and %s", balance, held, opening, inFlight*worst)
	}

	before := activeApp(t)
	forceReload(t, env.cfg)
	if activeApp(t) == before {
		t.Fatal("the config was not reloaded: the same arcane app is running")
	}
	if balance, held := funds(t, env.acct.ID); balance != opening || held != inFlight*worst {
		t.Errorf("after the reload: balance %s and held %s, want %s and %s", balance, held, opening, inFlight*worst)
	}

	release()
	ids := map[string]bool{}
	for range inFlight {
		var r result
		select {
		case r = <-results:
		case <-time.After(2 * streamWait):
			t.Fatal("the requests in flight did not finish")
		}
		if r.err != nil {
			t.Fatalf("a request in flight failed: %v", r.err)
		}
		if r.resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d; body %s", r.resp.StatusCode, r.body)
		}
		events := splitEvents(t, r.body)
		if len(events) < 2 || events[len(events)-1] != "[DONE]" {
			t.Fatalf("the stream does not end with [DONE]:\n%s", r.body)
		}
		if got := usageCost(t, events[len(events)-2]); got != cost.String() {
			t.Errorf("the usage chunk's cost %q, want %s", got, cost)
		}
		ids[requestID(t, r.resp.Header)] = true
	}
	rows := chargeRows(t, env.acct.ID)
	if len(rows) != inFlight {
		t.Fatalf("%d charge rows, want %d: %+v", len(rows), inFlight, rows)
	}
	for _, row := range rows {
		if !ids[row.RequestID] || row.Outcome != "ok" || row.Basis != "upstream" || row.cost(t) != cost {
			t.Errorf("charge row %+v, want one of the requests in flight, ok, charged %s", row, cost)
		}
		delete(ids, row.RequestID)
	}
	assertFunds(t, env.acct.ID, opening-inFlight*cost)

	resp := settledChat(t, http.MethodPost, env.key.Key, body)
	if resp.Status != http.StatusOK {
		t.Fatalf("after the reload: status %d; body %s", resp.Status, resp.Body)
	}
	if row := requestRow(t, env.acct.ID, requestID(t, resp.Header)); row.cost(t) != cost || row.Outcome != "ok" {
		t.Errorf("the request after the reload: row %+v, want ok and charged %s", row, cost)
	}
	assertFunds(t, env.acct.ID, opening-(inFlight+1)*cost)
	assertAudit(t)
}

// receive waits, at most streamWait, for one value from ch.
func receive(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(streamWait):
		t.Fatalf("%s did not happen within %v", what, streamWait)
	}
}

// The hold is the prompt's bytes plus n times the output cap: max_tokens
// (or max_completion_tokens) bounded by the model's max_output_tokens,
// else the model's, else default_max_output_tokens.
func TestBalanceHoldFollowsTheOutputCap(t *testing.T) {
	env := startChat(t, chatOptions{balance: true, arcaneExtra: balanceModels})
	// Answers report no tokens: charges are 0, balances stay as funded.
	free := upstreamReply{Pieces: []string{"ok"}, Usage: usageOf(0, 0, 0)}

	// fits checks that body is admitted by an account funded with exactly
	// want, and that while it waits upstream, want is what is held.
	fits := func(t *testing.T, body string, want billing.Amount) {
		t.Helper()
		acct, key := fundedKey(t, want)
		arrived := make(chan struct{}, 1)
		gate, release := releaser(t)
		env.up.handle(blockingReply(arrived, gate, free))
		done := make(chan chatResponse, 1)
		req := newChatRequest(t, context.Background(), http.MethodPost, key.Key, body, nil)
		go func() {
			resp, err := settledClient.Do(req)
			if err != nil {
				done <- chatResponse{Body: []byte(err.Error())}
				return
			}
			data, _ := io.ReadAll(resp.Body)
			done <- chatResponse{Status: resp.StatusCode, Header: resp.Header, Body: data}
		}()
		select {
		case <-arrived:
		case resp := <-done:
			t.Fatalf("an account with exactly the worst case %s: status %d; body %s", want, resp.Status, resp.Body)
		case <-time.After(streamWait):
			t.Fatal("the request did not reach the upstream")
		}
		if balance, held := funds(t, acct.ID); balance != want || held != want {
			t.Errorf("while the request waits: balance %s and held %s, want both %s", balance, held, want)
		}
		release()
		if resp := <-done; resp.Status != http.StatusOK {
			t.Fatalf("status %d; body %s", resp.Status, resp.Body)
		}
		assertFunds(t, acct.ID, want)
	}
	// short checks that body is refused by an account one micro-dollar
	// short of want, and that the refusal names both figures.
	short := func(t *testing.T, body string, want billing.Amount) {
		t.Helper()
		acct, key := fundedKey(t, want-1)
		calls := env.up.calls.Load()
		resp := settledChat(t, http.MethodPost, key.Key, body)
		assertOpenAIError(t, resp.Status, resp.Header, string(resp.Body), http.StatusForbidden, "insufficient_balance", "insufficient_balance")
		msg := errorMessage(t, string(resp.Body))
		for _, s := range []string{"$" + want.String(), "$" + (want - 1).String()} {
			if !strings.Contains(msg, s) {
				t.Errorf("message %q does not name %s", msg, s)
			}
		}
		if env.up.calls.Load() != calls {
			t.Error("the refused request reached the upstream")
		}
		assertFunds(t, acct.ID, want-1)
		if rows := chargeRows(t, acct.ID); len(rows) != 0 {
			t.Errorf("the refused request left ledger rows: %+v", rows)
		}
	}

	for _, tc := range []struct {
		name, model, extra string
		body               string // instead of chatBody(model, extra)
		price              testPrice
		n, outputCap       int64
		imageTokens        int64
		prompt             int64 // the prompt tokens held, instead of the body's bytes and imageTokens
	}{
		{name: "without max_tokens the model's max_output_tokens is held", model: meteredModel, price: meteredPrice, n: 1, outputCap: 1000},
		{name: "max_tokens lowers the hold", model: meteredModel, extra: `,"max_tokens":10`, price: meteredPrice, n: 1, outputCap: 10},
		{name: "max_completion_tokens lowers the hold", model: meteredModel, extra: `,"max_completion_tokens":10`, price: meteredPrice, n: 1, outputCap: 10},
		{name: "max_completion_tokens wins over max_tokens", model: meteredModel, extra: `,"max_tokens":900,"max_completion_tokens":10`, price: meteredPrice, n: 1, outputCap: 10},
		{name: "max_tokens above the model's cap holds the cap", model: meteredModel, extra: `,"max_tokens":5000`, price: meteredPrice, n: 1, outputCap: 1000},
		{name: "n=3 triples the output held", model: meteredModel, extra: `,"max_tokens":10,"n":3`, price: meteredPrice, n: 3, outputCap: 10},
		{name: "n=3 without max_tokens holds three times the model's cap", model: meteredModel, extra: `,"n":3`, price: meteredPrice, n: 3, outputCap: 1000},
		{name: "a model without max_output_tokens holds default_max_output_tokens", model: uncappedModel, price: meteredPrice, n: 1, outputCap: 2000},
		{name: "a model without max_output_tokens holds max_tokens above the default", model: uncappedModel, extra: `,"max_tokens":50000`, price: meteredPrice, n: 1, outputCap: 50000},
		{name: "gpt-5.2's hold is priced exactly", model: publicModel, price: gptPrice, n: 1, outputCap: 128000},
		{name: "gpt-5.2's hold with a stream and max_tokens", model: publicModel, extra: `,"stream":true,"max_tokens":333`, price: gptPrice, n: 1, outputCap: 333},
		{name: "two images by URL add the model's image_tokens each", body: imageBody(meteredModel, catURL, dogURL), price: meteredPrice, n: 1, outputCap: 1000, imageTokens: 2 * 1000},
		{name: "an image inline as a data: URL adds image_tokens to its bytes: a tiny one costs more than them", body: imageBody(meteredModel, pixelURL), price: meteredPrice, n: 1, outputCap: 1000, imageTokens: 1000},
		{name: "inline and URL images add alike", body: imageBody(meteredModel, pixelURL, catURL), price: meteredPrice, n: 1, outputCap: 1000, imageTokens: 2 * 1000},
		{name: "a model without image_tokens adds the default 2000 per image", body: imageBody(uncappedModel, catURL), price: meteredPrice, n: 1, outputCap: 2000, imageTokens: 2000},
		{name: "a file by id holds the model's context_length of prompt", body: fileBody(meteredModel, fileByID), price: meteredPrice, n: 1, outputCap: 1000, prompt: 8000},
		{name: "an inline file holds the context_length too: a PDF is billed by its pages, not its bytes", body: fileBody(meteredModel, filePDF), price: meteredPrice, n: 1, outputCap: 1000, prompt: 8000},
		{name: "two files hold one context: together they cannot exceed it", body: fileBody(meteredModel, fileByID, filePDF), price: meteredPrice, n: 1, outputCap: 1000, prompt: 8000},
		{name: "a file on a model without context_length holds default_context_length", body: fileBody(uncappedModel, fileByID), price: meteredPrice, n: 1, outputCap: 2000, prompt: 2_097_152},
		{name: "a file whose body outweighs the context holds the body's bytes", body: fileBody(meteredModel, fileByID, `{"type":"text","text":"`+strings.Repeat("x", 9000)+`"}`), price: meteredPrice, n: 1, outputCap: 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.body
			if body == "" {
				body = chatBody(tc.model, tc.extra)
			}
			want := tc.price.worstWithImages(body, tc.imageTokens, tc.n, tc.outputCap)
			if tc.prompt > 0 {
				want = tc.price.worstPrompt(tc.prompt, tc.n, tc.outputCap)
			}
			t.Run("an account with exactly the hold is admitted", func(t *testing.T) { fits(t, body, want) })
			t.Run("an account one micro-dollar short is refused", func(t *testing.T) { short(t, body, want) })
		})
	}

	t.Run("a request that does not fit with the model's cap fits with a small max_tokens", func(t *testing.T) {
		env.up.handle(replyWith(free))
		uncapped := chatBody(meteredModel, "")
		capped := chatBody(meteredModel, `,"max_tokens":10`)
		acct, key := fundedKey(t, meteredPrice.worst(uncapped, 1, 1000)-1)
		if resp := settledChat(t, http.MethodPost, key.Key, uncapped); resp.Status != http.StatusForbidden {
			t.Errorf("without max_tokens: status %d, want 403; body %s", resp.Status, resp.Body)
		}
		if resp := settledChat(t, http.MethodPost, key.Key, capped); resp.Status != http.StatusOK {
			t.Errorf("with max_tokens 10: status %d, want 200; body %s", resp.Status, resp.Body)
		}
		if rows := chargeRows(t, acct.ID); len(rows) != 1 {
			t.Errorf("%d charge rows, want 1 (the admitted request)", len(rows))
		}
	})
	t.Run("an account that covers the body's bytes but not the images is refused and nothing changes", func(t *testing.T) {
		env.up.handle(replyWith(free))
		body := imageBody(meteredModel, catURL, dogURL)
		funded := meteredPrice.worstWithImages(body, 2*1000, 1, 1000) - 1
		if bytesOnly := meteredPrice.worst(body, 1, 1000); bytesOnly > funded {
			t.Fatalf("the balance %s does not cover the bytes-only hold %s", funded, bytesOnly)
		}
		acct, key := fundedKey(t, funded)
		rows, calls := len(ledgerRows(t, acct.ID)), env.up.calls.Load()
		resp := settledChat(t, http.MethodPost, key.Key, body)
		assertOpenAIError(t, resp.Status, resp.Header, string(resp.Body), http.StatusForbidden, "insufficient_balance", "insufficient_balance")
		if env.up.calls.Load() != calls {
			t.Error("the refused request reached the upstream")
		}
		if n := len(ledgerRows(t, acct.ID)); n != rows {
			t.Errorf("the ledger has %d rows, had %d", n, rows)
		}
		assertFunds(t, acct.ID, funded)
	})
	t.Run("a request that fits with n=1 is refused with n=3", func(t *testing.T) {
		env.up.handle(replyWith(free))
		one := chatBody(meteredModel, `,"max_tokens":10,"n":1`)
		three := chatBody(meteredModel, `,"max_tokens":10,"n":3`)
		acct, key := fundedKey(t, meteredPrice.worst(one, 1, 10))
		if resp := settledChat(t, http.MethodPost, key.Key, three); resp.Status != http.StatusForbidden {
			t.Errorf("n=3: status %d, want 403; body %s", resp.Status, resp.Body)
		}
		if resp := settledChat(t, http.MethodPost, key.Key, one); resp.Status != http.StatusOK {
			t.Errorf("n=1: status %d, want 200; body %s", resp.Status, resp.Body)
		}
		if rows := chargeRows(t, acct.ID); len(rows) != 1 {
			t.Errorf("%d charge rows, want 1 (the admitted request)", len(rows))
		}
	})
}

func TestWorstCaseBoundsImagesByURL(t *testing.T) {
	a := &App{defaultImageTokens: 1500, defaultMaxOutput: 10}
	bounded := &upstream.Model{ID: "bounded", ImageTokens: 700}
	unbounded := &upstream.Model{ID: "unbounded"}
	for _, tc := range []struct {
		name       string
		model      *upstream.Model
		body       string
		images     int
		wantPrompt int64
	}{
		{"no images: the body's bytes", bounded, "0123456789", 0, 10},
		{"each image adds the model's image_tokens", bounded, "0123456789", 3, 10 + 3*700},
		{"a model without image_tokens adds the default", unbounded, "0123456789", 2, 10 + 2*1500},
		{"a huge bound saturates instead of wrapping", &upstream.Model{ImageTokens: 1 << 62}, "0123456789", 4, 1<<63 - 1},
		{"a bound just short of the limit saturates when the bytes are added", &upstream.Model{ImageTokens: 1<<63 - 5}, "0123456789", 1, 1<<63 - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &call{Body: []byte(tc.body), Model: tc.model, Chat: &wire.Request{N: 1, Images: tc.images}}
			w := c.worstCase(a)
			if w.PromptTokens != tc.wantPrompt || w.CompletionTokens != 10 {
				t.Errorf("worst case %d prompt and %d completion tokens, want %d and 10", w.PromptTokens, w.CompletionTokens, tc.wantPrompt)
			}
		})
	}
}

func TestWorstCaseBoundsFilesByContext(t *testing.T) {
	a := &App{defaultImageTokens: 1500, defaultMaxOutput: 10, defaultContext: 100_000}
	known := &upstream.Model{ID: "known", ContextLength: 8000, ImageTokens: 700}
	unknown := &upstream.Model{ID: "unknown"}
	for _, tc := range []struct {
		name          string
		model         *upstream.Model
		body          string
		images, files int
		wantPrompt    int64
	}{
		{"no files: the body's bytes", known, "0123456789", 0, 0, 10},
		{"a file: the model's context_length", known, "0123456789", 0, 1, 8000},
		{"files share one context", known, "0123456789", 0, 3, 8000},
		{"a file on a model without context_length: the default", unknown, "0123456789", 0, 1, 100_000},
		{"bytes and images above the context are kept", known, "0123456789", 12, 1, 10 + 12*700},
		{"no files: the context does not lower the bound", known, strings.Repeat("x", 9000), 0, 0, 9000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &call{Body: []byte(tc.body), Model: tc.model, Chat: &wire.Request{N: 1, Images: tc.images, Files: tc.files}}
			if w := c.worstCase(a); w.PromptTokens != tc.wantPrompt {
				t.Errorf("worst case %d prompt tokens, want %d", w.PromptTokens, tc.wantPrompt)
			}
		})
	}
}

// Settlements behind the disk: with more than 1,024 waiting for a stalled
// commit loop, a chat request waits at admission for overload_wait and is
// refused with 503 gateway_overloaded, having held nothing, charged
// nothing, reached no upstream and spent none of its key's requests per
// minute. A request that is waiting when the loop catches up goes through
// and is charged.
func TestBalanceWaitsWhileSettlementsAreBehind(t *testing.T) {
	env := startChat(t, chatOptions{balance: true, arcaneExtra: "overload_wait 2s", limit: "requests 2 1m"})
	const opening = 5 * billing.Dollar
	creditAccount(t, env.acct.ID, opening.String())
	store := activeApp(t).db.store

	// Park the commit loop on its next batch (the observer runs in it),
	// then queue more settlements behind it than it lets wait. They are
	// for an account that does not exist, so they write nothing.
	stalled, gate := make(chan struct{}), make(chan struct{})
	var parked sync.Once
	store.ObserveCommits(func(int, time.Duration) { parked.Do(func() { close(stalled); <-gate }) })
	release := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(func() { release(); store.ObserveCommits(nil) })
	var wg sync.WaitGroup
	settle := func(id string) {
		wg.Go(func() {
			if _, err := store.Settle(billing.Charge{RequestID: id, AccountID: "acct_nobody"}); !errors.Is(err, billing.ErrNotFound) {
				t.Errorf("settling %s for no account: %v, want ErrNotFound", id, err)
			}
		})
	}
	settle("plug")
	<-stalled
	for i := range 1024 {
		settle(fmt.Sprintf("queued_%d", i))
	}
	deadline := time.Now().Add(10 * time.Second)
	for store.SettleStats().Backlog <= 1024 {
		if time.Now().After(deadline) {
			t.Fatalf("backlog %d, want more than 1024", store.SettleStats().Backlog)
		}
		runtime.Gosched()
	}

	calls := env.up.calls.Load()
	refused := settledChat(t, http.MethodPost, env.key.Key, chatBody(publicModel, ""))
	if refused.Status != http.StatusServiceUnavailable || refused.Header.Get("Retry-After") != "1" {
		t.Fatalf("status %d, Retry-After %q; want 503 and 1; body %s", refused.Status, refused.Header.Get("Retry-After"), refused.Body)
	}
	var e struct {
		Error struct {
			Type string `json:"type"`
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(refused.Body, &e); err != nil || e.Error.Type != "server_error" || e.Error.Code != "gateway_overloaded" {
		t.Errorf("body %s, want a server_error with code gateway_overloaded", refused.Body)
	}
	requestID(t, refused.Header)
	if env.up.calls.Load() != calls {
		t.Errorf("the refused request reached the upstream")
	}
	if rows := ledgerRows(t, env.acct.ID); len(rows) != 1 {
		t.Errorf("the ledger has %d rows, want the opening credit alone: %+v", len(rows), rows)
	}
	assertFunds(t, env.acct.ID, opening)

	// One more waits at admission; letting the loop go serves it.
	throttled := store.SettleStats().Throttled
	served := make(chan chatResponse, 1)
	req := newChatRequest(t, context.Background(), http.MethodPost, env.key.Key, chatBody(publicModel, ""), nil)
	go func() {
		resp, err := settledClient.Do(req)
		if err != nil {
			t.Errorf("the request that waited: %v", err)
			served <- chatResponse{}
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		served <- chatResponse{Status: resp.StatusCode, Header: resp.Header, Body: body}
	}()
	for store.SettleStats().Throttled == throttled {
		if time.Now().After(deadline) {
			t.Fatal("the second request never waited at admission")
		}
		runtime.Gosched()
	}
	release()
	resp := <-served
	if resp.Status != http.StatusOK {
		t.Fatalf("the request that waited: status %d; body %s", resp.Status, resp.Body)
	}
	cost := gptPrice.cost(11, 3, 7) // standardReply's usage
	if row := requestRow(t, env.acct.ID, requestID(t, resp.Header)); row.cost(t) != cost {
		t.Errorf("charged %s, want %s", row.cost(t), cost)
	}
	assertFunds(t, env.acct.ID, opening-cost)
	// The key may make two requests a minute: the refused one did not
	// count, so this second counted one still goes through.
	if again := settledChat(t, http.MethodPost, env.key.Key, chatBody(publicModel, "")); again.Status != http.StatusOK {
		t.Errorf("the key's second counted request: status %d, want 200 (the refused one spent a request); body %s", again.Status, again.Body)
	}
	assertFunds(t, env.acct.ID, opening-2*cost)
	wg.Wait()
	if st := store.SettleStats(); st.Backlog != 0 {
		t.Errorf("backlog %d after the loop caught up, want 0", st.Backlog)
	}
	m := scrapeMetrics(t)
	for _, c := range []struct {
		name  string
		pairs []string
		want  float64
	}{
		{"caddy_arcane_rejections_total", []string{"reason", "gateway_overloaded"}, 1},
		{"caddy_arcane_ledger_throttled_total", nil, 2},
		{"caddy_arcane_ledger_backlog", nil, 0},
		{"caddy_arcane_holds_open", nil, 0},
	} {
		if got := m.value(c.name, c.pairs...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.pairs, got, c.want)
		}
	}
}
