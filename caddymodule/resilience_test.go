package caddymodule

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// End-to-end tests of the gateway's resilience: failover before the first
// byte, circuit breakers, health-aware weighted selection and the header
// and idle timeouts, through the real server with one public model served
// by two (or three) deployments on fake upstreams of our own.
//
// Every config runs its circuits on a fake clock (healthNow, replaced
// before the config is provisioned) that only moves when a test moves it.
// Requests go through settledClient (balance_test.go), which returns only
// once the server has closed the connection, so the request's ledger row
// is written by then. A deployment a test wants tried first gets the
// weight resFirst against 1: the selection then picks the other one first
// with a probability of one in a million.
//
// Each test ends by checking that nothing is left behind: no connection
// to any fake upstream stays open once the gateway's idle connections are
// closed, and the process's goroutines return to what they were once the
// config ran (assertNothingLeft).

// resFirst is the weight that makes a deployment the first pick.
const resFirst = "1000000"

// resClockStart is where the circuits' fake clock starts.
var resClockStart = time.Date(2031, 3, 1, 12, 0, 0, 0, time.UTC)

// resUpstream is a fakeUpstream that also tracks its connections, so a
// test can see that the gateway leaves none open.
type resUpstream struct {
	*fakeUpstream

	connMu sync.Mutex
	conns  map[net.Conn]http.ConnState
}

func newResUpstream(t testing.TB) *resUpstream {
	t.Helper()
	ru := &resUpstream{conns: make(map[net.Conn]http.ConnState)}
	u := &fakeUpstream{handler: replyWith(standardReply)}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(u.serve))
	u.Config.ConnState = ru.track
	u.Start()
	t.Cleanup(u.Close)
	ru.fakeUpstream = u
	return ru
}

func (ru *resUpstream) track(c net.Conn, s http.ConnState) {
	ru.connMu.Lock()
	defer ru.connMu.Unlock()
	if s == http.StateClosed || s == http.StateHijacked {
		delete(ru.conns, c)
		return
	}
	ru.conns[c] = s
}

// openConns counts the connections to the upstream that are not closed,
// by state.
func (ru *resUpstream) openConns() map[http.ConnState]int {
	ru.connMu.Lock()
	defer ru.connMu.Unlock()
	n := make(map[http.ConnState]int)
	for _, s := range ru.conns {
		n[s]++
	}
	return n
}

// resProvider is one provider of a test config: a fake upstream, or a
// base URL nothing listens on.
type resProvider struct {
	name string
	// model is the provider's id for the public model.
	model string
	// opts are extra lines of the provider block (timeouts).
	opts string
	up   *resUpstream
	base string
}

// deployment is the provider's deployment name, provider/model.
func (p *resProvider) deployment() string { return p.name + "/" + p.model }

// calls is how many requests reached the provider's fake upstream.
func (p *resProvider) calls() int64 {
	if p.up == nil {
		return 0
	}
	return p.up.calls.Load()
}

// resServed is a provider on a fake upstream of its own.
func resServed(t testing.TB, name, opts string) *resProvider {
	t.Helper()
	up := newResUpstream(t)
	return &resProvider{name: name, model: "model-" + name, opts: opts, up: up, base: up.URL + "/v1"}
}

// resRefused is a provider at an address that refuses connections: a port
// that was free a moment ago.
func resRefused(t testing.TB, name string) *resProvider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return &resProvider{name: name, model: "model-" + name, opts: "dial_timeout 200ms", base: "http://" + addr + "/v1"}
}

// resEnv is a running arcane whose gpt-5.2 is served by several
// deployments, with a funded account and a key.
type resEnv struct {
	cfg       string
	tester    *caddytest.Tester
	clock     *limitClock
	acct      testAccount
	key       testKey
	providers []*resProvider
	// baseline and baseStacks are the goroutines once the config ran:
	// their count and their count by stack.
	baseline   int
	baseStacks map[string]int
}

// resOptions vary the config.
type resOptions struct {
	// arcane is added to the arcane block (failover, breaker, timeouts).
	arcane string
	// deploys are the model's deploy lines, after "deploy"; empty deploys
	// each provider's model once, with weight 1.
	deploys []string
	// providerKeys are api_key lines per provider name.
	providerKeys map[string]string
}

// startResilience loads a config that serves gpt-5.2 from the providers,
// with arcane_balance in the route so every request writes a ledger row,
// and the circuits on a fake clock. It creates a funded account and a key
// and takes the goroutine baseline.
func startResilience(t *testing.T, opts resOptions, providers ...*resProvider) *resEnv {
	t.Helper()
	resetHealth()
	clock := &limitClock{base: resClockStart}
	saved := healthNow
	// Before loading: the proxy takes its clock when it is provisioned.
	healthNow = clock.now
	t.Cleanup(func() { healthNow = saved })

	var b strings.Builder
	for _, p := range providers {
		fmt.Fprintf(&b, "provider %s {\n\t\t\ttype openai\n\t\t\tbase_url %s\n", p.name, p.base)
		if k := opts.providerKeys[p.name]; k != "" {
			fmt.Fprintf(&b, "\t\t\tapi_key %s\n", k)
		}
		for line := range strings.SplitSeq(p.opts, "\n") {
			if line = strings.TrimSpace(line); line != "" {
				fmt.Fprintf(&b, "\t\t\t%s\n", line)
			}
		}
		b.WriteString("\t\t}\n\t\t")
	}
	fmt.Fprintf(&b, "model %s {\n", publicModel)
	deploys := opts.deploys
	if len(deploys) == 0 {
		for _, p := range providers {
			deploys = append(deploys, p.name+" "+p.model)
		}
	}
	for _, d := range deploys {
		fmt.Fprintf(&b, "\t\t\tdeploy %s\n", d)
	}
	b.WriteString("\t\t\tprice input 1.75 output 14.00 cached_input 0.175\n\t\t}\n\t\t")
	b.WriteString(opts.arcane)

	env := &resEnv{clock: clock, providers: providers}
	env.cfg = testCaddyfile(filepath.Join(t.TempDir(), "arcane.db"), b.String(), balanceRoutes)
	env.tester = caddytest.NewTester(t)
	env.tester.InitServer(env.cfg, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	env.acct, env.key = fundedKey(t, 1000*billing.Dollar)
	env.baseline, env.baseStacks = env.settledGoroutines(t)
	return env
}

// sdk is an OpenAI client for the gateway whose calls return once their
// request settled.
func (env *resEnv) sdk() openai.Client {
	return openai.NewClient(
		option.WithBaseURL(siteURL+"/v1/"),
		option.WithAPIKey(env.key.Key),
		option.WithHTTPClient(settledClient),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(2*streamWait),
	)
}

// streamCut posts a stream that the gateway must cut: it checks the 200,
// that the upstream saw its request cancelled, and that the cut came after
// at least after (and within 3s); want says what the wait should be.
func (env *resEnv) streamCut(t testing.TB, cancelled <-chan struct{}, after time.Duration, want string) chatResponse {
	t.Helper()
	start := time.Now()
	resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(publicModel, `,"stream":true`))
	took := time.Since(start)
	if resp.Status != http.StatusOK {
		t.Fatalf("status %d; body %s", resp.Status, resp.Body)
	}
	waitFor(t, cancelled, "a's handler seeing its request cancelled")
	if took < after || took > 3*time.Second {
		t.Errorf("the stream took %v, want %s", took, want)
	}
	return resp
}

// assertFailedOnce checks, in GET /arcane/upstreams, that p's deployment
// failed once, for cause, and has nothing in flight.
func (env *resEnv) assertFailedOnce(t testing.TB, p *resProvider, cause string) {
	t.Helper()
	deps, _, _ := env.upstreams(t)
	if d := deps[p.deployment()]; d.Failures != 1 || !strings.Contains(d.LastError, cause) || d.InFlight != 0 {
		t.Errorf("%s is %+v, want one failure for the %s and nothing in flight", p.name, d, cause)
	}
}

// sdkStreamed is what the openai-go SDK made of a stream.
type sdkStreamed struct {
	// text joins every chunk's content; chunks counts the chunks the
	// SDK returned and finishes their finish reasons.
	text     string
	chunks   int
	finishes []string
	raw      *http.Response
	err      error
}

// sdkStream streams p through the SDK to its end.
func (env *resEnv) sdkStream(p openai.ChatCompletionNewParams) sdkStreamed {
	var res sdkStreamed
	client := env.sdk()
	stream := client.Chat.Completions.NewStreaming(context.Background(), p, option.WithResponseInto(&res.raw))
	defer stream.Close()
	var text strings.Builder
	for stream.Next() {
		res.chunks++
		for _, c := range stream.Current().Choices {
			text.WriteString(c.Delta.Content)
			if c.FinishReason != "" {
				res.finishes = append(res.finishes, c.FinishReason)
			}
		}
	}
	res.text, res.err = text.String(), stream.Err()
	return res
}

var resParams = openai.ChatCompletionNewParams{
	Model:    publicModel,
	Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi.")},
}

// complete sends a completion through the SDK and returns it with its
// request id; it fails on any error.
func (env *resEnv) complete(t testing.TB) (*openai.ChatCompletion, string) {
	t.Helper()
	var raw *http.Response
	client := env.sdk()
	resp, err := client.Chat.Completions.New(context.Background(), resParams, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatalf("Chat.Completions.New: %v", err)
	}
	if resp.Model != publicModel || len(resp.Choices) != 1 || resp.Choices[0].Message.Content != standardReply.content() {
		t.Errorf("answer %s, want gpt-5.2 with %q", resp.RawJSON(), standardReply.content())
	}
	return resp, requestID(t, raw.Header)
}

// sdkError sends a completion through the SDK that must fail, and returns
// the error with the request id.
func (env *resEnv) sdkError(t testing.TB) (*openai.Error, string) {
	t.Helper()
	client := env.sdk()
	_, err := client.Chat.Completions.New(context.Background(), resParams)
	var apierr *openai.Error
	if !errors.As(err, &apierr) {
		t.Fatalf("error %v (%T) is not an *openai.Error", err, err)
	}
	if apierr.Response == nil {
		t.Fatal("the error carries no response")
	}
	return apierr, requestID(t, apierr.Response.Header)
}

// calls returns each provider's upstream request count.
func (env *resEnv) calls() []int64 {
	n := make([]int64, len(env.providers))
	for i, p := range env.providers {
		n[i] = p.calls()
	}
	return n
}

// row returns a request's one ledger row.
func (env *resEnv) row(t testing.TB, id string) ledgerRow {
	t.Helper()
	requestRow(t, env.acct.ID, id) // exactly one row, the same in both views
	var r ledgerRow
	adminOK(t, http.MethodGet, "/arcane/requests/"+id, nil, http.StatusOK, &r)
	if r.Kind != "charge" || r.Model != publicModel {
		t.Errorf("row %+v, want a charge for %s", r, publicModel)
	}
	return r
}

// assertRow checks a row's deployment, attempts, outcome and cost.
func (env *resEnv) assertRow(t testing.TB, id, deployment string, attempts int, outcome string, cost billing.Amount) ledgerRow {
	t.Helper()
	r := env.row(t, id)
	if r.Deployment != deployment || r.Attempts != attempts || r.Outcome != outcome {
		t.Errorf("row has deployment %q, attempts %d, outcome %q; want %q, %d, %q (%+v)",
			r.Deployment, r.Attempts, r.Outcome, deployment, attempts, outcome, r)
	}
	if got := r.cost(t); got != cost {
		t.Errorf("row charged %s, want %s (%+v)", got, cost, r)
	}
	return r
}

// standardCost is what standardReply's reported usage costs at gpt-5.2's
// price.
var standardCost = gptPrice.cost(11, 3, 7)

// upstreams reads GET /arcane/upstreams: gpt-5.2's deployments by name,
// in order, and the raw body.
func (env *resEnv) upstreams(t testing.TB) (map[string]deploymentView, []string, string) {
	t.Helper()
	var view struct {
		Data []struct {
			Model       string           `json:"model"`
			Deployments []deploymentView `json:"deployments"`
		} `json:"data"`
	}
	resp := adminOK(t, http.MethodGet, "/arcane/upstreams", nil, http.StatusOK, &view)
	if len(view.Data) != 1 || view.Data[0].Model != publicModel {
		t.Fatalf("GET /arcane/upstreams: %s, want gpt-5.2 alone", resp.Body)
	}
	byName := make(map[string]deploymentView)
	var names []string
	for _, d := range view.Data[0].Deployments {
		byName[d.Name] = d
		names = append(names, d.Name)
	}
	return byName, names, string(resp.Body)
}

// status reads /v1/status, which must answer want.
func (env *resEnv) status(t testing.TB, want int) (testStatus, string) {
	t.Helper()
	code, _, body := apiGet(t, env.tester, "/v1/status", "Bearer "+env.key.Key)
	if code != want {
		t.Fatalf("GET /v1/status: status %d, want %d; body %s", code, want, body)
	}
	var s testStatus
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	return s, body
}

// closeIdle closes the idle connections of every client the test used:
// the default transport's (admin calls, apiClient), the tester's, and the
// gateway's own pools to the providers. Connections in use stay open.
func (env *resEnv) closeIdle(t testing.TB) {
	t.Helper()
	if tr, ok := http.DefaultTransport.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
	env.tester.Client.CloseIdleConnections()
	for _, m := range activeApp(t).catalog.Models() {
		for _, d := range m.Deployments {
			d.Provider.Client.CloseIdleConnections()
		}
	}
}

// settledGoroutines closes idle connections and waits for the goroutine
// count to stop falling; it returns the count and the goroutines by stack.
func (env *resEnv) settledGoroutines(t testing.TB) (int, map[string]int) {
	t.Helper()
	env.closeIdle(t)
	best, since := runtime.NumGoroutine(), time.Now()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && time.Since(since) < 150*time.Millisecond; {
		time.Sleep(5 * time.Millisecond)
		if n := runtime.NumGoroutine(); n < best {
			best, since = n, time.Now()
		}
	}
	return best, goroutineStacks()
}

// goroutineStacks counts the goroutines other than the caller's by stack:
// the functions they are in, without arguments and lines.
func goroutineStacks() map[string]int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	stacks := make(map[string]int)
	// The caller's own goroutine comes first.
	for _, g := range strings.Split(string(buf), "\n\n")[1:] {
		var sig []string
		for _, line := range strings.Split(g, "\n")[1:] {
			if line == "" || strings.HasPrefix(line, "\t") {
				continue
			}
			if rest, ok := strings.CutPrefix(line, "created by "); ok {
				line, _, _ = strings.Cut(rest, " in goroutine")
			} else if i := strings.LastIndex(line, "("); i > 0 {
				line = line[:i]
			}
			sig = append(sig, line)
		}
		stacks[strings.Join(sig, " <- ")]++
	}
	return stacks
}

// assertNothingLeft checks that no connection to a fake upstream stays
// open and that the goroutines return to their baseline: no more of them,
// and none with a stack that has more goroutines than it had then (a
// goroutine of Caddy's that ends meanwhile must not hide a leak). It polls
// with a deadline; once idle connections are closed it takes about 10ms.
func (env *resEnv) assertNothingLeft(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		env.closeIdle(t)
		open := 0
		var states []string
		for _, p := range env.providers {
			if p.up == nil {
				continue
			}
			for s, n := range p.up.openConns() {
				open += n
				states = append(states, fmt.Sprintf("%s: %d %s", p.name, n, s))
			}
		}
		n := runtime.NumGoroutine()
		var extra []string
		for sig, c := range goroutineStacks() {
			if c > env.baseStacks[sig] {
				extra = append(extra, fmt.Sprintf("%d more (%d, was %d):\n\t%s", c-env.baseStacks[sig], c, env.baseStacks[sig], sig))
			}
		}
		if open == 0 && n <= env.baseline && len(extra) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: %d upstream connections open %v; %d goroutines, %d at the start; goroutines beyond the start's:\n%s",
				open, states, n, env.baseline, strings.Join(extra, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// firstDeploys are deploy lines that make first the first pick, the
// others weight 1.
func firstDeploys(first *resProvider, others ...*resProvider) []string {
	d := []string{first.name + " " + first.model + " " + resFirst}
	for _, p := range others {
		d = append(d, p.name+" "+p.model)
	}
	return d
}

// failWithStatus answers every request with an OpenAI error.
func failWithStatus(status int, header http.Header, typ, message string) upstreamHandler {
	return func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		for k, v := range header {
			w.Header()[k] = v
		}
		writeUpstreamError(w, status, typ, message)
	}
}

// onceCloser closes a channel at most once.
func onceCloser(ch chan struct{}) func() {
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// 1. A deployment that refuses connections is moved on from.
func TestResilienceConnectionRefusedFailsOver(t *testing.T) {
	a, b := resRefused(t, "a"), resServed(t, "b", "")
	env := startResilience(t, resOptions{deploys: firstDeploys(a, b)}, a, b)

	_, id := env.complete(t)
	if got := b.calls(); got != 1 {
		t.Errorf("b got %d requests, want 1", got)
	}
	env.assertRow(t, id, b.deployment(), 2, "ok", standardCost)

	deps, _, _ := env.upstreams(t)
	if d := deps[a.deployment()]; d.State != "closed" || d.Failures != 1 || d.ConsecutiveFailures != 1 ||
		!strings.Contains(d.LastError, "refused") {
		t.Errorf("a is %+v, want closed (one failure is below the breaker's 5) with one failure: connection refused", d)
	}
	if d := deps[b.deployment()]; d.State != "closed" || d.Requests != 1 || d.Failures != 0 || d.LatencyMS <= 0 {
		t.Errorf("b is %+v, want closed with one success and a latency", d)
	}
	env.assertNothingLeft(t)
}

// 2. A deployment that never sends its headers is cancelled after
// response_header_timeout and moved on from.
func TestResilienceHangBeforeHeadersFailsOver(t *testing.T) {
	a, b := resServed(t, "a", "response_header_timeout 200ms"), resServed(t, "b", "response_header_timeout 200ms")
	env := startResilience(t, resOptions{deploys: firstDeploys(a, b)}, a, b)
	cancelled := make(chan struct{})
	sawCancel := onceCloser(cancelled)
	stop, _ := releaser(t)
	a.up.handle(func(_ http.ResponseWriter, r *http.Request, _ []byte) {
		select {
		case <-r.Context().Done():
			sawCancel()
		case <-stop:
		}
	})

	start := time.Now()
	_, id := env.complete(t)
	took := time.Since(start)
	waitFor(t, cancelled, "a's handler seeing its request cancelled")
	if took < 200*time.Millisecond || took > 3*time.Second {
		t.Errorf("the request took %v, want the header timeout (200ms) and then b's answer", took)
	}
	if got := env.calls(); got[0] != 1 || got[1] != 1 {
		t.Errorf("requests a, b = %v, want 1 each", got)
	}
	env.assertRow(t, id, b.deployment(), 2, "ok", standardCost)
	env.assertFailedOnce(t, a, "response header timeout")
	env.assertNothingLeft(t)
}

// 3. A 500 moves the request on, for a completion and a stream alike.
func TestResilienceServerErrorFailsOver(t *testing.T) {
	a, b := resServed(t, "a", ""), resServed(t, "b", "")
	env := startResilience(t, resOptions{deploys: firstDeploys(a, b)}, a, b)
	a.up.handle(failWithStatus(http.StatusInternalServerError, nil, "server_error", "The server had an error while processing your request."))

	t.Run("a completion", func(t *testing.T) {
		_, id := env.complete(t)
		if got := env.calls(); got[0] != 1 || got[1] != 1 {
			t.Errorf("requests a, b = %v, want 1 each", got)
		}
		env.assertRow(t, id, b.deployment(), 2, "ok", standardCost)
	})
	t.Run("a stream through the SDK", func(t *testing.T) {
		p := resParams
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		res := env.sdkStream(p)
		if res.err != nil {
			t.Fatalf("stream: %v", res.err)
		}
		raw := res.raw
		if res.text != standardReply.content() {
			t.Errorf("streamed %q, want %q", res.text, standardReply.content())
		}
		if got := env.calls(); got[0] != 2 || got[1] != 2 {
			t.Errorf("requests a, b = %v, want 2 each", got)
		}
		env.assertRow(t, requestID(t, raw.Header), b.deployment(), 2, "ok", standardCost)
	})
	deps, _, _ := env.upstreams(t)
	if d := deps[a.deployment()]; d.Failures != 2 || d.ConsecutiveFailures != 2 || d.State != "closed" ||
		!strings.Contains(d.LastError, "HTTP 500") {
		t.Errorf("a is %+v, want closed with two failures for HTTP 500", d)
	}
	env.assertNothingLeft(t)
}

// 4. A 429 with Retry-After benches the deployment for that long on the
// circuits' clock; then it gets the probe.
func TestResilienceRateLimitBenchesTheDeployment(t *testing.T) {
	a, b := resServed(t, "a", ""), resServed(t, "b", "")
	env := startResilience(t, resOptions{deploys: firstDeploys(a, b)}, a, b)
	a.up.handle(failWithStatus(http.StatusTooManyRequests, http.Header{"Retry-After": {"30"}}, "requests", "Rate limit reached for requests."))

	_, id := env.complete(t)
	env.assertRow(t, id, b.deployment(), 2, "ok", standardCost)
	if got := env.calls(); got[0] != 1 || got[1] != 1 {
		t.Fatalf("requests a, b = %v, want 1 each", got)
	}

	deps, _, _ := env.upstreams(t)
	wantUntil := env.clock.now().Add(30 * time.Second)
	if d := deps[a.deployment()]; d.State != "open" || d.Reason != "rate_limited" || d.Until == nil || !d.Until.Equal(wantUntil) ||
		d.Failures != 1 || d.Recent.Failures != 0 {
		t.Errorf("a is %+v, want open for rate_limited until %v, the 429 counted once and not in the error rate", d, wantUntil)
	}
	if d := deps[b.deployment()]; d.State != "closed" {
		t.Errorf("b is %+v, want closed", d)
	}
	if s, _ := env.status(t, http.StatusOK); s.Status != "degraded" || s.Models[publicModel].Status != "degraded" {
		t.Errorf("status %+v, want degraded", s)
	}

	// Benched: however heavily weighted, a gets nothing until the clock
	// reaches Retry-After.
	a.up.handle(replyWith(standardReply))
	for _, step := range []time.Duration{0, 10 * time.Second, 19 * time.Second} {
		env.clock.advance(step)
		for range 3 {
			_, id := env.complete(t)
			env.assertRow(t, id, b.deployment(), 1, "ok", standardCost)
		}
	}
	if got := a.calls(); got != 1 {
		t.Fatalf("a got %d requests while benched, want only the first", got-1)
	}

	env.clock.advance(time.Second) // 30s after the 429
	if deps, _, _ := env.upstreams(t); deps[a.deployment()].State != "half_open" {
		t.Errorf("at Retry-After a is %+v, want half_open", deps[a.deployment()])
	}
	_, id = env.complete(t)
	if got := a.calls(); got != 2 {
		t.Fatalf("a got %d requests, want the probe", got)
	}
	env.assertRow(t, id, a.deployment(), 1, "ok", standardCost)
	deps, _, _ = env.upstreams(t)
	if d := deps[a.deployment()]; d.State != "closed" || d.Reason != "" || d.Until != nil {
		t.Errorf("after its probe a is %+v, want closed", d)
	}
	if s, _ := env.status(t, http.StatusOK); s.Status != "ok" {
		t.Errorf("status %+v, want ok", s)
	}
	env.assertNothingLeft(t)
}

// cutAfter streams the pieces, one content chunk each, and ends the
// response without [DONE].
func cutAfter(pieces []string) upstreamHandler {
	return func(w http.ResponseWriter, _ *http.Request, body []byte) {
		req, _ := parseUpstreamRequest(body)
		startUpstreamStream(w)
		for _, p := range pieces {
			writeUpstreamEvent(w, chunkJSON(req.Model, contentDelta(p), nil, true))
		}
	}
}

// countTokens is what the gateway counts for a delivered text.
func countTokens(pieces []string) int64 {
	return int64(tokenCounter.Count(publicModel, []byte(strings.Join(pieces, ""))))
}

// 5. A stream cut after some events ends with an in-band error and
// [DONE], is not retried, and is billed for what was delivered.
func TestResilienceStreamCutMidway(t *testing.T) {
	a, b := resServed(t, "a", ""), resServed(t, "b", "")
	env := startResilience(t, resOptions{deploys: firstDeploys(a, b)}, a, b)
	delivered := []string{"The", " answer", " is"}
	all := append([]string{}, delivered...)
	for range 40 {
		all = append(all, " and more")
	}
	body := chatBody(publicModel, `,"stream":true`)

	// The whole answer, counted: the yardstick.
	a.up.handle(func(w http.ResponseWriter, r *http.Request, b []byte) {
		cutAfter(all)(w, r, b)
		req, _ := parseUpstreamRequest(b)
		writeUpstreamEvent(w, finishChunkJSON(req.Model, true))
		writeUpstreamEvent(w, []byte("[DONE]"))
	})
	resp := settledChat(t, http.MethodPost, env.key.Key, body)
	if resp.Status != http.StatusOK {
		t.Fatalf("status %d; body %s", resp.Status, resp.Body)
	}
	whole := env.row(t, requestID(t, resp.Header))
	if whole.Basis != "counted" || whole.Outcome != "ok" || whole.CompletionTokens != countTokens(all) || whole.PromptTokens <= 0 {
		t.Fatalf("the whole answer's row is %+v, want ok, counted, %d completion tokens", whole, countTokens(all))
	}
	prompt := whole.PromptTokens
	wholeCost := whole.cost(t)
	cutCost := gptPrice.cost(prompt, 0, countTokens(delivered))
	if cutCost <= 0 || cutCost >= wholeCost {
		t.Fatalf("the test's figures: the cut answer costs %s, the whole %s", cutCost, wholeCost)
	}

	a.up.handle(cutAfter(delivered))
	t.Run("the raw stream carries the chunks, the in-band error and [DONE]", func(t *testing.T) {
		resp := settledChat(t, http.MethodPost, env.key.Key, body)
		if resp.Status != http.StatusOK {
			t.Fatalf("status %d; body %s", resp.Status, resp.Body)
		}
		events := splitEvents(t, resp.Body)
		if len(events) != len(delivered)+2 {
			t.Fatalf("%d events, want %d chunks, the error chunk and [DONE]: %q", len(events), len(delivered), events)
		}
		var first chunkFields
		for i, want := range delivered {
			c := decodeChunk(t, events[i])
			if c.Model != publicModel || len(c.Choices) != 1 || c.Choices[0].Delta.Content == nil || *c.Choices[0].Delta.Content != want {
				t.Errorf("event %d is %s, want %q", i, events[i], want)
			}
			if i == 0 {
				first = c
			}
		}
		var e struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Created int64  `json:"created"`
			Model   string `json:"model"`
			Choices []struct {
				Index        int             `json:"index"`
				Delta        json.RawMessage `json:"delta"`
				FinishReason *string         `json:"finish_reason"`
			} `json:"choices"`
			Error *struct {
				Message string  `json:"message"`
				Type    string  `json:"type"`
				Code    string  `json:"code"`
				Param   *string `json:"param"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(events[len(delivered)]), &e); err != nil {
			t.Fatalf("the error chunk is not JSON: %v", err)
		}
		if e.ID != testCompletionID || e.Object != "chat.completion.chunk" || e.Created != testCreated || e.Model != first.Model ||
			len(e.Choices) != 1 || e.Choices[0].FinishReason == nil || *e.Choices[0].FinishReason != "error" ||
			e.Error == nil || e.Error.Code != "upstream_error" || e.Error.Type != "server_error" || e.Error.Message == "" {
			t.Errorf("the error chunk is %s, want the stream's id, finish_reason error and an upstream_error", events[len(delivered)])
		}
		if events[len(events)-1] != "[DONE]" {
			t.Errorf("the stream ends with %q, want [DONE]", events[len(events)-1])
		}
		if strings.Contains(string(resp.Body), a.model) {
			t.Errorf("the stream names the upstream model:\n%s", resp.Body)
		}
		if got := env.calls(); got[0] != 2 || got[1] != 0 {
			t.Errorf("requests a, b = %v, want a's two and nothing to b: a started stream is not retried", got)
		}
		r := env.assertRow(t, requestID(t, resp.Header), a.deployment(), 1, "upstream_error", cutCost)
		if r.Basis != "counted" || r.PromptTokens != prompt || r.CompletionTokens != countTokens(delivered) {
			t.Errorf("row %+v, want counted with %d prompt and %d completion tokens", r, prompt, countTokens(delivered))
		}
	})

	t.Run("the SDK reads the delivered text, then reports the error", func(t *testing.T) {
		res := env.sdkStream(resParams)
		raw := res.raw
		if res.chunks != len(delivered) || res.text != strings.Join(delivered, "") {
			t.Errorf("the SDK read %d chunks with %q, want %d with %q", res.chunks, res.text, len(delivered), strings.Join(delivered, ""))
		}
		// The SDK turns any event with an "error" member into its error:
		// the chunk's finish_reason "error" never reaches the caller.
		if len(res.finishes) != 0 {
			t.Errorf("the SDK surfaced finish reasons %q", res.finishes)
		}
		err := res.err
		var se *ssestream.StreamError
		if !errors.As(err, &se) {
			t.Fatalf("stream.Err() is %v (%T), want an *ssestream.StreamError", err, err)
		}
		if !strings.Contains(se.Message, "received error while streaming") || !strings.Contains(se.Message, `"code":"upstream_error"`) ||
			!strings.Contains(string(se.Event.Data), `"finish_reason":"error"`) {
			t.Errorf("the SDK's error is %q with event %s, want the in-band upstream_error", se.Message, se.Event.Data)
		}
		t.Logf("openai-go reports: %v", err)
		if got := env.calls(); got[0] != 3 || got[1] != 0 {
			t.Errorf("requests a, b = %v, want nothing to b", got)
		}
		env.assertRow(t, requestID(t, raw.Header), a.deployment(), 1, "upstream_error", cutCost)
	})
	deps, _, _ := env.upstreams(t)
	if d := deps[a.deployment()]; d.Failures != 2 || !strings.Contains(d.LastError, "without [DONE]") {
		t.Errorf("a is %+v, want two failures: stream ended without [DONE]", d)
	}
	env.assertNothingLeft(t)
}

// 6. A 200 whose "events" are an HTML page is moved on from before the
// first byte reaches the client.
func TestResilienceGarbageStreamFailsOver(t *testing.T) {
	a, b := resServed(t, "a", ""), resServed(t, "b", "")
	env := startResilience(t, resOptions{deploys: firstDeploys(a, b)}, a, b)
	a.up.handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		startUpstreamStream(w)
		for _, line := range []string{"<html>", "<head><title>502 Bad Gateway</title></head>", "<body>nginx</body>", "</html>"} {
			_, _ = io.WriteString(w, "data: "+line+"\n\n")
		}
	})

	resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(publicModel, `,"stream":true`))
	if resp.Status != http.StatusOK {
		t.Fatalf("status %d; body %s", resp.Status, resp.Body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q, want text/event-stream", ct)
	}
	events := splitEvents(t, resp.Body)
	// b's answer: role, pieces, finish, [DONE]; no usage chunk, the client
	// did not ask for one.
	if len(events) != len(standardReply.Pieces)+3 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("events %q, want b's stream", events)
	}
	var text strings.Builder
	for _, e := range events[:len(events)-1] {
		c := decodeChunk(t, e)
		if c.Model != publicModel || c.Error != nil || c.Usage != nil {
			t.Errorf("event %s, want b's chunk for gpt-5.2", e)
		}
		for _, ch := range c.Choices {
			if ch.Delta.Content != nil {
				text.WriteString(*ch.Delta.Content)
			}
		}
	}
	if text.String() != standardReply.content() {
		t.Errorf("streamed %q, want %q", text.String(), standardReply.content())
	}
	if strings.Contains(string(resp.Body), "html") {
		t.Errorf("a's page reached the client:\n%s", resp.Body)
	}
	if got := env.calls(); got[0] != 1 || got[1] != 1 {
		t.Errorf("requests a, b = %v, want 1 each", got)
	}
	r := env.assertRow(t, requestID(t, resp.Header), b.deployment(), 2, "ok", standardCost)
	if r.Basis != "upstream" {
		t.Errorf("row basis %q, want upstream (the gateway asks b for usage)", r.Basis)
	}
	deps, _, _ := env.upstreams(t)
	if d := deps[a.deployment()]; d.Failures != 1 || !strings.Contains(d.LastError, "not JSON") {
		t.Errorf("a is %+v, want one failure for a stream that is not JSON", d)
	}

	// The same page as a completion's 200 is moved on from too.
	a.up.handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<html><body>502 Bad Gateway</body></html>")
	})
	_, id := env.complete(t)
	if got := env.calls(); got[0] != 2 || got[1] != 2 {
		t.Errorf("requests a, b = %v, want 2 each", got)
	}
	env.assertRow(t, id, b.deployment(), 2, "ok", standardCost)
	deps, _, _ = env.upstreams(t)
	if d := deps[a.deployment()]; d.Failures != 2 || !strings.Contains(d.LastError, "not a JSON object") {
		t.Errorf("a is %+v, want two failures for answers that are not JSON objects", d)
	}
	env.assertNothingLeft(t)
}

// 7. A stream that stalls after two chunks ends with an in-band
// upstream_timeout after idle_timeout, and its upstream request is
// cancelled.
func TestResilienceStalledStreamTimesOut(t *testing.T) {
	const timeouts = "response_header_timeout 300ms\nidle_timeout 200ms"
	a, b := resServed(t, "a", timeouts), resServed(t, "b", timeouts)
	env := startResilience(t, resOptions{deploys: firstDeploys(a, b)}, a, b)
	delivered := []string{"Half", " an"}
	cancelled := make(chan struct{})
	sawCancel := onceCloser(cancelled)
	stop, _ := releaser(t)
	a.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		cutAfter(delivered)(w, r, body)
		select {
		case <-r.Context().Done():
			sawCancel()
		case <-stop:
		}
	})

	resp := env.streamCut(t, cancelled, 200*time.Millisecond, "about the idle timeout (200ms)")
	events := splitEvents(t, resp.Body)
	if len(events) != len(delivered)+2 {
		t.Fatalf("%d events, want %d chunks, the error chunk and [DONE]: %q", len(events), len(delivered), events)
	}
	for i, want := range delivered {
		if c := decodeChunk(t, events[i]); len(c.Choices) != 1 || c.Choices[0].Delta.Content == nil || *c.Choices[0].Delta.Content != want {
			t.Errorf("event %d is %s, want %q", i, events[i], want)
		}
	}
	e := decodeChunk(t, events[len(delivered)])
	if e.Error == nil || e.Error["code"] != "upstream_timeout" || len(e.Choices) != 1 || e.Choices[0].FinishReason == nil ||
		*e.Choices[0].FinishReason != "error" {
		t.Errorf("the error chunk is %s, want finish_reason error and code upstream_timeout", events[len(delivered)])
	}
	if msg, _ := e.Error["message"].(string); !strings.Contains(msg, "200ms") {
		t.Errorf("the message %q does not say how long the provider was silent", msg)
	}
	if events[len(events)-1] != "[DONE]" {
		t.Errorf("the stream ends with %q, want [DONE]", events[len(events)-1])
	}
	if got := env.calls(); got[0] != 1 || got[1] != 0 {
		t.Errorf("requests a, b = %v, want nothing to b", got)
	}
	r := env.row(t, requestID(t, resp.Header))
	cost := gptPrice.cost(r.PromptTokens, 0, countTokens(delivered))
	env.assertRow(t, r.RequestID, a.deployment(), 1, "upstream_error", cost)
	if r.Basis != "counted" || r.PromptTokens <= 0 || r.CompletionTokens != countTokens(delivered) || cost <= 0 {
		t.Errorf("row %+v, want counted, billed for the %d delivered tokens", r, countTokens(delivered))
	}
	env.assertFailedOnce(t, a, "idle timeout")
	env.assertNothingLeft(t)
}

// request_timeout caps a request's whole time upstream: a stream still
// running then ends in band, and a request still waiting for headers is
// answered 504 without trying another deployment.
func TestResilienceRequestTimeout(t *testing.T) {
	a, b := resServed(t, "a", "idle_timeout 200ms"), resServed(t, "b", "idle_timeout 200ms")
	env := startResilience(t, resOptions{deploys: firstDeploys(a, b), arcane: "request_timeout 300ms"}, a, b)

	t.Run("a stream that never stops is cut at the request timeout", func(t *testing.T) {
		cancelled := make(chan struct{})
		sawCancel := onceCloser(cancelled)
		stop, _ := releaser(t)
		a.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
			req, _ := parseUpstreamRequest(body)
			startUpstreamStream(w)
			tick := time.NewTicker(40 * time.Millisecond)
			defer tick.Stop()
			for {
				writeUpstreamEvent(w, chunkJSON(req.Model, contentDelta(" more"), nil, true))
				select {
				case <-tick.C:
				case <-r.Context().Done():
					sawCancel()
					return
				case <-stop:
					return
				}
			}
		})
		resp := env.streamCut(t, cancelled, 300*time.Millisecond, "the request timeout (300ms)")
		events := splitEvents(t, resp.Body)
		if len(events) < 4 || events[len(events)-1] != "[DONE]" {
			t.Fatalf("events %q, want chunks, an error chunk and [DONE]", events)
		}
		e := decodeChunk(t, events[len(events)-2])
		msg, _ := e.Error["message"].(string)
		if e.Error == nil || e.Error["code"] != "upstream_timeout" || !strings.Contains(msg, "longer than this gateway allows") {
			t.Errorf("the error chunk is %s, want upstream_timeout for the request timeout", events[len(events)-2])
		}
		pieces := make([]string, len(events)-2)
		for i := range pieces {
			pieces[i] = " more"
		}
		r := env.row(t, requestID(t, resp.Header))
		env.assertRow(t, r.RequestID, a.deployment(), 1, "upstream_error", gptPrice.cost(r.PromptTokens, 0, countTokens(pieces)))
		if r.Basis != "counted" || r.CompletionTokens != countTokens(pieces) {
			t.Errorf("row %+v, want the %d delivered chunks counted", r, len(pieces))
		}
		if got := b.calls(); got != 0 {
			t.Errorf("b got %d requests, want none", got)
		}
	})

	t.Run("a request still waiting for headers gets 504 and no other deployment", func(t *testing.T) {
		cancelled := make(chan struct{})
		sawCancel := onceCloser(cancelled)
		stop, _ := releaser(t)
		a.up.handle(func(_ http.ResponseWriter, r *http.Request, _ []byte) {
			select {
			case <-r.Context().Done():
				sawCancel()
			case <-stop:
			}
		})
		apierr, id := env.sdkError(t)
		waitFor(t, cancelled, "a's handler seeing its request cancelled")
		if apierr.StatusCode != http.StatusGatewayTimeout || apierr.Code != "upstream_timeout" ||
			!strings.Contains(apierr.Message, "longer than this gateway allows") {
			t.Errorf("error %d %q %q, want 504 upstream_timeout for the request timeout", apierr.StatusCode, apierr.Code, apierr.Message)
		}
		env.assertRow(t, id, a.deployment(), 1, "upstream_error", 0)
		if got := b.calls(); got != 0 {
			t.Errorf("b got %d requests, want none: the request's time is up", got)
		}
	})
	deps, _, _ := env.upstreams(t)
	t.Logf("after two request timeouts a is %s with %d failures (last: %q)", deps[a.deployment()].State,
		deps[a.deployment()].Failures, deps[a.deployment()].LastError)
	env.assertNothingLeft(t)
}

// 8. With every deployment down the client gets 503; once the circuits
// are open no upstream is called at all.
func TestResilienceAllDeploymentsDown(t *testing.T) {
	a, b := resRefused(t, "a"), resRefused(t, "b")
	env := startResilience(t, resOptions{arcane: "breaker {\n\t\t\tfailures 1\n\t\t}"}, a, b)
	names := map[string]bool{a.deployment(): true, b.deployment(): true}

	apierr, id := env.sdkError(t)
	if apierr.StatusCode != http.StatusServiceUnavailable || apierr.Code != "upstream_unavailable" || apierr.Type != "server_error" {
		t.Errorf("status %d, code %q, type %q; want 503 upstream_unavailable server_error", apierr.StatusCode, apierr.Code, apierr.Type)
	}
	r := env.row(t, id)
	if r.Attempts != 2 || r.cost(t) != 0 || r.Outcome != "upstream_error" || !names[r.Deployment] || r.Basis != "" {
		t.Errorf("row %+v, want 2 attempts, nothing charged, upstream_error, on the last deployment tried", r)
	}
	deps, _, _ := env.upstreams(t)
	for name := range names {
		if d := deps[name]; d.State != "open" || d.Reason != "consecutive_failures" || d.Requests != 1 || d.Failures != 1 ||
			d.Until == nil || !d.Until.Equal(env.clock.now().Add(30*time.Second)) {
			t.Errorf("%s is %+v, want open for 30s after one failure", name, d)
		}
	}

	// Both circuits open: no call, 503 with Retry-After the cool-down.
	resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(publicModel, ""))
	assertChatError(t, resp, http.StatusServiceUnavailable, "server_error", "upstream_unavailable", "")
	if ra := resp.Header.Get("Retry-After"); ra != "30" {
		t.Errorf("Retry-After %q, want 30", ra)
	}
	env.assertRow(t, requestID(t, resp.Header), "", 0, "upstream_error", 0)
	apierr, id = env.sdkError(t)
	if apierr.StatusCode != http.StatusServiceUnavailable || apierr.Response.Header.Get("Retry-After") != "30" {
		t.Errorf("the SDK got %d with Retry-After %q, want 503 and 30", apierr.StatusCode, apierr.Response.Header.Get("Retry-After"))
	}
	env.assertRow(t, id, "", 0, "upstream_error", 0)
	deps, _, _ = env.upstreams(t)
	for name := range names {
		if d := deps[name]; d.Requests != 1 {
			t.Errorf("%s counts %d requests, want still 1: an open circuit is not called", name, d.Requests)
		}
	}
	s, body := env.status(t, http.StatusServiceUnavailable)
	m := s.Models[publicModel]
	if s.Status != "down" || m.Status != "down" || len(m.Deployments) != 2 {
		t.Fatalf("status %s, want down overall and for gpt-5.2", body)
	}
	for _, d := range m.Deployments {
		if d.Status != "open" {
			t.Errorf("deployment %+v, want open", d)
		}
	}

	// After the cool-down both are probed; the failed probes reopen the
	// circuits for twice as long.
	env.clock.advance(30 * time.Second)
	if s, body := env.status(t, http.StatusOK); s.Status != "degraded" || s.Models[publicModel].Status != "degraded" {
		t.Errorf("after the cool-down the status is %s, want degraded with both half_open", body)
	}
	apierr, id = env.sdkError(t)
	if apierr.StatusCode != http.StatusServiceUnavailable || apierr.Code != "upstream_unavailable" {
		t.Errorf("the probes: status %d code %q, want 503 upstream_unavailable", apierr.StatusCode, apierr.Code)
	}
	if r := env.row(t, id); r.Attempts != 2 || r.cost(t) != 0 {
		t.Errorf("the probes' row %+v, want 2 attempts and nothing charged", r)
	}
	deps, _, _ = env.upstreams(t)
	for name := range names {
		if d := deps[name]; d.State != "open" || d.Reason != "probe_failed" || d.Until == nil ||
			!d.Until.Equal(env.clock.now().Add(60*time.Second)) {
			t.Errorf("%s is %+v, want open for 60s after its failed probe", name, d)
		}
	}
	resp = settledChat(t, http.MethodPost, env.key.Key, chatBody(publicModel, ""))
	if resp.Status != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "60" {
		t.Errorf("status %d with Retry-After %q, want 503 and 60", resp.Status, resp.Header.Get("Retry-After"))
	}
	env.assertNothingLeft(t)
}

// resLoad sends n completions, concurrency at a time, and fails on any
// answer other than 200.
func resLoad(t *testing.T, key string, n, concurrency int) {
	t.Helper()
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				req := newChatRequest(t, context.Background(), http.MethodPost, key, chatBody(publicModel, ""), nil)
				resp, err := settledClient.Do(req)
				if err != nil {
					failed.Store(err.Error())
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Store(fmt.Sprintf("status %d: %s", resp.StatusCode, body))
					return
				}
			}
		})
	}
	wg.Wait()
	if msg := failed.Load(); msg != nil {
		t.Fatalf("a request failed: %s", msg)
	}
}

// delayed answers with standardReply after d (or when the gateway gives
// up).
func delayed(d time.Duration) upstreamHandler {
	reply := replyWith(standardReply)
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		if d > 0 {
			timer := time.NewTimer(d)
			defer timer.Stop()
			select {
			case <-timer.C:
			case <-r.Context().Done():
				return
			}
		}
		reply(w, r, body)
	}
}

// 9. Selection: weights are respected, a slow deployment gets less
// traffic, an open circuit gets none until its probe.
func TestResilienceSelectionUnderLoad(t *testing.T) {
	share := func(before, after []int64) (float64, int64) {
		a, b := after[0]-before[0], after[1]-before[1]
		return float64(a) / float64(a+b), a + b
	}

	t.Run("weights 3 and 1 share the traffic 3 to 1", func(t *testing.T) {
		a, b := resServed(t, "a", ""), resServed(t, "b", "")
		env := startResilience(t, resOptions{deploys: []string{"a model-a 3", "b model-b weight 1"}}, a, b)
		// Equally fast: both answer after 5ms. Local answers in well under
		// a millisecond make the latency estimates the score multiplies
		// mostly scheduling noise, which moves the shares by more than the
		// weights' tolerance (0.68 to 0.82 in 25 runs).
		a.up.handle(delayed(5 * time.Millisecond))
		b.up.handle(delayed(5 * time.Millisecond))
		const n = 400
		before := env.calls()
		resLoad(t, env.key.Key, n, 8)
		got, total := share(before, env.calls())
		t.Logf("a's share of %d requests: %.3f", total, got)
		if total != n || got < 0.75-0.07 || got > 0.75+0.07 {
			t.Errorf("a served %.3f of %d requests, want 0.75 ± 0.07 of %d", got, total, n)
		}
		// The ledger agrees with the upstreams.
		byDeployment := map[string]int64{}
		for _, r := range chargeRows(t, env.acct.ID) {
			byDeployment[r.Deployment]++
		}
		if c := env.calls(); byDeployment[a.deployment()] != c[0] || byDeployment[b.deployment()] != c[1] {
			t.Errorf("ledger rows by deployment %v, upstream requests %v", byDeployment, c)
		}
		env.assertNothingLeft(t)
	})

	t.Run("a slow deployment gets clearly less traffic", func(t *testing.T) {
		a, b := resServed(t, "a", ""), resServed(t, "b", "")
		env := startResilience(t, resOptions{}, a, b)
		a.up.handle(delayed(30 * time.Millisecond))
		// Warm up until both have a latency estimate.
		for i := 0; ; i++ {
			resLoad(t, env.key.Key, 4, 1)
			deps, _, _ := env.upstreams(t)
			if deps[a.deployment()].LatencyMS > 0 && deps[b.deployment()].LatencyMS > 0 {
				t.Logf("latency estimates: a %.2fms, b %.2fms", deps[a.deployment()].LatencyMS, deps[b.deployment()].LatencyMS)
				break
			}
			if i == 25 {
				t.Fatalf("no latency estimate for both after %d requests: %+v", 4*i, deps)
			}
		}
		before := env.calls()
		resLoad(t, env.key.Key, 200, 8)
		got, total := share(before, env.calls())
		t.Logf("the slow deployment's share of %d requests: %.3f", total, got)
		if got >= 0.3 {
			t.Errorf("the slow deployment served %.3f of the traffic, want less than 0.3", got)
		}
		env.assertNothingLeft(t)
	})

	t.Run("an open circuit gets nothing until its probe", func(t *testing.T) {
		a, b := resServed(t, "a", ""), resServed(t, "b", "")
		env := startResilience(t, resOptions{arcane: "breaker {\n\t\t\tfailures 1\n\t\t\tcooldown 10s\n\t\t}"}, a, b)
		a.up.handle(failWithStatus(http.StatusInternalServerError, nil, "server_error", "The server had an error."))
		for i := 0; a.calls() == 0; i++ {
			if i == 100 {
				t.Fatal("a was never picked")
			}
			resLoad(t, env.key.Key, 1, 1)
		}
		a.up.handle(replyWith(standardReply))
		deps, _, _ := env.upstreams(t)
		if d := deps[a.deployment()]; d.State != "open" || d.Reason != "consecutive_failures" {
			t.Fatalf("after one failure a is %+v, want open", d)
		}

		before := env.calls()
		resLoad(t, env.key.Key, 100, 8)
		env.clock.advance(9 * time.Second)
		resLoad(t, env.key.Key, 20, 4)
		if after := env.calls(); after[0] != before[0] || after[1] != before[1]+120 {
			t.Fatalf("requests a, b went from %v to %v, want all 120 to b", before, after)
		}

		env.clock.advance(time.Second)
		resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(publicModel, ""))
		if resp.Status != http.StatusOK {
			t.Fatalf("the probe: status %d; %s", resp.Status, resp.Body)
		}
		if got := a.calls(); got != before[0]+1 {
			t.Fatalf("a got %d requests after its cool-down, want the one probe", got-before[0])
		}
		env.assertRow(t, requestID(t, resp.Header), a.deployment(), 1, "ok", standardCost)
		if deps, _, _ := env.upstreams(t); deps[a.deployment()].State != "closed" {
			t.Errorf("after its probe a is %+v, want closed", deps[a.deployment()])
		}
		before = env.calls()
		resLoad(t, env.key.Key, 100, 8)
		if got, _ := share(before, env.calls()); got < 0.2 {
			t.Errorf("after it recovered a served %.3f of the traffic, want its share back", got)
		}
		env.assertNothingLeft(t)
	})
}

// 10. Deployments of one provider model that differ only by key.
func TestResilienceDeploymentsByAPIKey(t *testing.T) {
	const (
		k0env = "ARCANE_RES_KEY_0"
		k1env = "ARCANE_RES_KEY_1"
		k2env = "ARCANE_RES_KEY_2"
	)
	k0, k1, k2 := "sk-res-provider-0-"+hexSecret(t), "sk-res-first-1-"+hexSecret(t), "sk-res-second-2-"+hexSecret(t)
	t.Setenv(k0env, k0)
	t.Setenv(k1env, k1)
	t.Setenv(k2env, k2)
	up := resServed(t, "up", "")
	up.model = "m"
	var mu sync.Mutex
	var seen []string
	up.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		auth := r.Header.Get("Authorization")
		mu.Lock()
		seen = append(seen, auth)
		mu.Unlock()
		if auth == "Bearer "+k2 {
			replyWith(standardReply)(w, r, body)
			return
		}
		// OpenAI's answer to a bad key quotes part of it.
		writeUpstreamError(w, http.StatusUnauthorized, "invalid_request_error",
			"Incorrect API key provided: "+strings.TrimPrefix(auth, "Bearer ")[:12]+"****.")
	})
	env := startResilience(t, resOptions{
		deploys:      []string{"up m weight " + resFirst + " api_key {env." + k1env + "}", "up m api_key {env." + k2env + "}"},
		providerKeys: map[string]string{"up": "{env." + k0env + "}"},
	}, up)

	_, id := env.complete(t)
	mu.Lock()
	got := append([]string{}, seen...)
	mu.Unlock()
	if len(got) != 2 || got[0] != "Bearer "+k1 || got[1] != "Bearer "+k2 {
		t.Errorf("the upstream saw %q, want the first deployment's key, then the second's", got)
	}
	env.assertRow(t, id, "up/m#2", 2, "ok", standardCost)

	deps, names, body := env.upstreams(t)
	if len(names) != 2 || names[0] != "up/m" || names[1] != "up/m#2" {
		t.Errorf("deployments %q, want up/m and up/m#2", names)
	}
	if d := deps["up/m"]; d.Provider != "up" || d.Model != "m" || d.Weight != 1000000 || d.Failures != 1 ||
		!strings.Contains(d.LastError, "HTTP 401") {
		t.Errorf("up/m is %+v, want one failure for HTTP 401", d)
	}
	if d := deps["up/m#2"]; d.Weight != 1 || d.Requests != 1 || d.Failures != 0 {
		t.Errorf("up/m#2 is %+v, want one success", d)
	}
	_, statusBody := env.status(t, http.StatusOK)
	for _, secret := range []string{k0, k1, k2, k0[:12], k1[:12], k2[:12], "Incorrect API key"} {
		for what, b := range map[string]string{"/arcane/upstreams": body, "/v1/status": statusBody} {
			if strings.Contains(b, secret) {
				t.Errorf("%s shows %q: %s", what, secret, b)
			}
		}
	}
	for _, auth := range got {
		if auth == "Bearer "+k0 {
			t.Errorf("the provider's own key was sent although each deployment has its own")
		}
	}
	env.assertNothingLeft(t)
}

// hexSecret is a random suffix for a test key.
func hexSecret(t testing.TB) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

// 11. An upstream 400 is the client's answer, with the provider's words
// and the public model, and is not retried.
func TestResilienceRequestRefusalIsNotRetried(t *testing.T) {
	a, b := resServed(t, "a", ""), resServed(t, "b", "")
	env := startResilience(t, resOptions{deploys: firstDeploys(a, b)}, a, b)
	a.up.handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":{"message":"The model 'model-a' does not support 'logit_bias' with this value.",`+
			`"type":"invalid_request_error","param":"logit_bias","code":"unsupported_value"}}`)
	})

	apierr, id := env.sdkError(t)
	if apierr.StatusCode != http.StatusBadRequest || apierr.Type != "invalid_request_error" || apierr.Code != "unsupported_value" ||
		apierr.Param != "logit_bias" {
		t.Errorf("error %d %q %q %q, want 400 invalid_request_error unsupported_value logit_bias",
			apierr.StatusCode, apierr.Type, apierr.Code, apierr.Param)
	}
	if want := "The model '" + publicModel + "' does not support 'logit_bias' with this value."; apierr.Message != want {
		t.Errorf("message %q, want %q", apierr.Message, want)
	}
	if strings.Contains(apierr.RawJSON(), a.model) {
		t.Errorf("the answer names the upstream model: %s", apierr.RawJSON())
	}
	if got := env.calls(); got[0] != 1 || got[1] != 0 {
		t.Errorf("requests a, b = %v, want a's one and nothing to b", got)
	}
	env.assertRow(t, id, a.deployment(), 1, "invalid_request", 0)
	deps, _, _ := env.upstreams(t)
	if d := deps[a.deployment()]; d.State != "closed" || d.Requests != 1 || d.Failures != 0 {
		t.Errorf("a is %+v, want one request and no failure: a refused request says nothing against the deployment", d)
	}
	env.assertNothingLeft(t)
}

// adaptArcane adapts a Caddyfile and returns its arcane app's JSON.
func adaptArcane(t testing.TB, caddyfile string) (json.RawMessage, error) {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		return nil, err
	}
	var cfg struct {
		Apps map[string]json.RawMessage `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("the adapted config is not JSON: %v; %s", err, out)
	}
	return cfg.Apps["arcane"], nil
}

func sameJSON(t testing.TB, got, want []byte) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("not JSON: %v; %s", err, got)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("the expected JSON is not JSON: %v; %s", err, want)
	}
	return reflect.DeepEqual(g, w)
}

// resArcaneCaddyfile wraps arcane options in a Caddyfile with one site.
func resArcaneCaddyfile(options string) string {
	return "{\n\tarcane {\n" + options + "\n\t}\n}\n\n:8080 {\n\trespond ok\n}\n"
}

const resAdaptProviders = `
		provider a {
			type openai
			base_url https://a.example/v1
			api_key {env.A_KEY}
			dial_timeout 2s
			response_header_timeout 250ms
			idle_timeout 300ms
		}`

// 12. The Caddyfile syntax of failover, breakers and timeouts.
func TestResilienceCaddyfileAdapt(t *testing.T) {
	t.Run("the new options adapt to the expected JSON", func(t *testing.T) {
		got, err := adaptArcane(t, resArcaneCaddyfile(`
		request_timeout 90s
		overload_wait 20s
		failover {
			attempts 2
			try_duration 15s
		}
		breaker {
			failures 3
			error_rate 0.25
			window 10
			cooldown 5s
			max_cooldown 1m
		}`+resAdaptProviders+`
		model m {
			deploy a a-1 3
			deploy a a-1 weight 2 api_key {env.A_KEY_2}
			deploy a a-2 api_key {env.A_KEY_3} weight 5
			deploy a a-3 4 api_key {env.A_KEY_4}
			deploy a a-4
			price input 1 output 2
		}`))
		if err != nil {
			t.Fatalf("adapting: %v", err)
		}
		const want = `{
			"request_timeout": 90000000000,
			"overload_wait": 20000000000,
			"failover": {"attempts": 2, "try_duration": 15000000000},
			"breaker": {"failures": 3, "error_rate": 0.25, "window": 10, "cooldown": 5000000000, "max_cooldown": 60000000000},
			"providers": {"a": {"type": "openai", "base_url": "https://a.example/v1", "api_key": "{env.A_KEY}",
				"dial_timeout": 2000000000, "response_header_timeout": 250000000, "idle_timeout": 300000000}},
			"models": [{"id": "m", "deployments": [
				{"provider": "a", "model": "a-1", "weight": 3},
				{"provider": "a", "model": "a-1", "weight": 2, "api_key": "{env.A_KEY_2}"},
				{"provider": "a", "model": "a-2", "weight": 5, "api_key": "{env.A_KEY_3}"},
				{"provider": "a", "model": "a-3", "weight": 4, "api_key": "{env.A_KEY_4}"},
				{"provider": "a", "model": "a-4"}
			], "price": {"input": "1.000000", "output": "2.000000"}}]
		}`
		if !sameJSON(t, got, []byte(want)) {
			t.Errorf("adapted arcane app\n%s\nwant\n%s", got, want)
		}
	})

	t.Run("empty blocks adapt to the defaults", func(t *testing.T) {
		got, err := adaptArcane(t, resArcaneCaddyfile("\t\tfailover\n\t\tbreaker"))
		if err != nil {
			t.Fatalf("adapting: %v", err)
		}
		if !sameJSON(t, got, []byte(`{"failover": {}, "breaker": {}}`)) {
			t.Errorf("adapted arcane app %s, want empty failover and breaker", got)
		}
	})

	model := func(deploy string) string {
		return resAdaptProviders + "\n\t\tmodel m {\n\t\t\tdeploy " + deploy + "\n\t\t\tprice input 1 output 2\n\t\t}"
	}
	for _, tc := range []struct {
		name, options, want string
	}{
		{"failover attempts 0", "failover {\n attempts 0\n}", `failover: attempts "0": expected a whole number from 1 to 64`},
		{"failover attempts over 64", "failover {\n attempts 65\n}", `failover: attempts "65": expected a whole number from 1 to 64`},
		{"failover attempts not a number", "failover {\n attempts many\n}", `failover: attempts "many"`},
		{"failover try_duration 0", "failover {\n try_duration 0s\n}", `failover: try_duration "0s": expected a positive duration`},
		{"failover try_duration negative", "failover {\n try_duration -5s\n}", `failover: try_duration "-5s"`},
		{"failover option twice", "failover {\n attempts 2\n attempts 3\n}", "failover: attempts already specified"},
		{"failover unknown option", "failover {\n retries 2\n}", `failover: unrecognized option "retries"`},
		{"failover without a value", "failover {\n attempts\n}", "wrong argument count"},
		{"failover with an argument", "failover 3", "wrong argument count"},
		{"failover twice", "failover\n failover", "failover already specified"},
		{"breaker failures 0", "breaker {\n failures 0\n}", `breaker: failures "0": expected a positive whole number`},
		{"breaker window over 64", "breaker {\n window 65\n}", `breaker: window "65": expected a positive whole number (window: at most 64)`},
		{"breaker error_rate over 1", "breaker {\n error_rate 1.5\n}", `breaker: error_rate "1.5": expected a fraction above 0, at most 1`},
		{"breaker error_rate 0", "breaker {\n error_rate 0\n}", `breaker: error_rate "0"`},
		{"breaker error_rate as a percentage", "breaker {\n error_rate 50%\n}", `breaker: error_rate "50%"`},
		{"breaker cooldown 0", "breaker {\n cooldown 0s\n}", `breaker: cooldown "0s": expected a positive duration`},
		{"breaker max_cooldown not a duration", "breaker {\n max_cooldown soon\n}", `breaker: max_cooldown "soon"`},
		{"breaker unknown option", "breaker {\n threshold 3\n}", `breaker: unrecognized option "threshold"`},
		{"breaker option twice", "breaker {\n window 5\n window 6\n}", "breaker: window already specified"},
		{"request_timeout 0", "request_timeout 0s", `request_timeout "0s": expected a positive duration`},
		{"request_timeout not a duration", "request_timeout forever", `request_timeout "forever"`},
		{"request_timeout twice", "request_timeout 1m\n request_timeout 2m", "request_timeout already specified"},
		{"overload_wait 0", "overload_wait 0s", `overload_wait "0s": expected a positive duration`},
		{"overload_wait not a duration", "overload_wait long", `overload_wait "long"`},
		{"provider idle_timeout negative", "provider p {\n type openai\n idle_timeout -1s\n}", `provider p: idle_timeout "-1s": expected a duration`},
		{"provider response_header_timeout not a duration", "provider p {\n type openai\n response_header_timeout later\n}",
			`provider p: response_header_timeout "later"`},
		{"provider dial_timeout not a duration", "provider p {\n type openai\n dial_timeout x\n}", `provider p: dial_timeout "x"`},
		{"deploy weight 0", model("a a-1 weight 0"), `model m: deploy weight "0": expected a whole number from 1 to 1000000`},
		{"deploy weight too large", model("a a-1 weight 1000001"), `deploy weight "1000001"`},
		{"deploy weight given twice", model("a a-1 2 weight 3"), "model m: deploy weight given twice"},
		{"deploy api_key given twice", model("a a-1 api_key {env.X} api_key {env.Y}"), "model m: deploy api_key given twice"},
		{"deploy unknown keyword", model("a a-1 region eu"), `model m: deploy option "region"`},
		{"deploy api_key without a value after a weight", model("a a-1 weight 2 api_key"), `model m: deploy options weight and api_key each need one value`},
		{"deploy api_key without a value", model("a a-1 api_key"), `model m: deploy options weight and api_key each need one value`},
		{"deploy weight without a value", model("a a-1 api_key {env.X} weight"), `model m: deploy options weight and api_key each need one value`},
	} {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			_, err := adaptArcane(t, resArcaneCaddyfile(tc.options))
			if err == nil {
				t.Fatalf("adapting succeeded; want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}

	// JSON configs skip the Caddyfile's checks; the app validates them.
	for _, tc := range []struct {
		name string
		app  App
		want string
	}{
		{"failover attempts over 64", App{Failover: &FailoverConfig{Attempts: 65}}, "failover: attempts must be 1 to 64"},
		{"failover attempts negative", App{Failover: &FailoverConfig{Attempts: -1}}, "failover"},
		{"failover try_duration negative", App{Failover: &FailoverConfig{TryDuration: -1}}, "try_duration not negative"},
		{"breaker failures negative", App{Breaker: &BreakerConfig{Failures: -1}}, "breaker: failures"},
		{"breaker error_rate over 1", App{Breaker: &BreakerConfig{ErrorRate: 1.5}}, "breaker: error_rate must be 0 to 1"},
		{"breaker window over 64", App{Breaker: &BreakerConfig{Window: 65}}, "breaker: window must be 1 to 64"},
		{"breaker cooldown negative", App{Breaker: &BreakerConfig{Cooldown: -1}}, "breaker: cooldown"},
		{"request_timeout negative", App{RequestTimeout: -1}, "request_timeout must not be negative"},
		{"overload_wait negative", App{OverloadWait: -1}, "overload_wait must not be negative"},
	} {
		t.Run("JSON with "+tc.name+" is refused", func(t *testing.T) {
			err := tc.app.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// stream_keepalive: while a stream's first event is slow, the client gets
// SSE comments, which the openai-go SDK skips; a failover after them
// still serves the stream, and a failure after them ends in band.
func TestResilienceStreamKeepAlive(t *testing.T) {
	a, b := resServed(t, "a", "response_header_timeout 250ms"), resServed(t, "b", "")
	env := startResilience(t, resOptions{deploys: firstDeploys(a, b), arcane: "stream_keepalive 60ms"}, a, b)
	cancelled := make(chan struct{})
	sawCancel := onceCloser(cancelled)
	stop, _ := releaser(t)
	a.up.handle(func(w http.ResponseWriter, r *http.Request, _ []byte) {
		select {
		case <-r.Context().Done():
			sawCancel()
		case <-stop:
		}
	})
	b.up.handle(replyWith(standardReply))

	t.Run("the SDK skips the comments and gets b's stream", func(t *testing.T) {
		res := env.sdkStream(resParams)
		if res.err != nil {
			t.Fatalf("stream: %v", res.err)
		}
		raw := res.raw
		if res.text != standardReply.content() {
			t.Errorf("streamed %q, want %q", res.text, standardReply.content())
		}
		waitFor(t, cancelled, "a's handler seeing its request cancelled")
		env.assertRow(t, requestID(t, raw.Header), b.deployment(), 2, "ok", standardCost)
	})

	t.Run("raw framing: comments, then the stream", func(t *testing.T) {
		resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(publicModel, `,"stream":true`))
		if resp.Status != http.StatusOK || !strings.HasPrefix(string(resp.Body), ": keep-alive\n\n: keep-alive\n\n") {
			t.Fatalf("status %d, body %q: want 200 opening with comments", resp.Status, head(string(resp.Body)))
		}
		events := splitEvents(t, withoutComments(resp.Body))
		if events[len(events)-1] != "[DONE]" || strings.Contains(string(resp.Body), "finish_reason\":\"error") {
			t.Fatalf("events %q, want b's stream ending with [DONE]", events)
		}
	})

	t.Run("every deployment failing after the comments ends in band", func(t *testing.T) {
		b.up.handle(func(w http.ResponseWriter, r *http.Request, _ []byte) {
			select {
			case <-r.Context().Done():
			case <-time.After(150 * time.Millisecond): // slow enough for a comment
			}
			writeUpstreamError(w, http.StatusInternalServerError, "server_error", "The server had an error.")
		})
		resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(publicModel, `,"stream":true`))
		if resp.Status != http.StatusOK || !strings.HasPrefix(string(resp.Body), ": keep-alive\n\n") {
			t.Fatalf("status %d, body %q: want 200 opening with a comment", resp.Status, head(string(resp.Body)))
		}
		events := splitEvents(t, withoutComments(resp.Body))
		if len(events) != 2 || events[1] != "[DONE]" {
			t.Fatalf("events %q, want the error chunk and [DONE]", events)
		}
		e := decodeChunk(t, events[0])
		if e.Error == nil || e.Error["code"] != "upstream_error" || len(e.Choices) != 1 || e.Choices[0].FinishReason == nil ||
			*e.Choices[0].FinishReason != "error" {
			t.Errorf("the error chunk is %s", events[0])
		}
		env.assertRow(t, requestID(t, resp.Header), b.deployment(), 2, "upstream_error", 0)
	})
	env.assertNothingLeft(t)
}

func withoutComments(body []byte) []byte {
	return bytes.ReplaceAll(body, []byte(": keep-alive\n\n"), nil)
}
