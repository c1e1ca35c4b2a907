package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// End-to-end tests of what README.md's "Observability" section promises:
// the caddy_arcane_* metrics on the admin endpoint's /metrics, counted by
// outcome, free of key material and of unbounded labels, alive across
// reloads; and the arcane_* fields of Caddy's access log.
//
// Requests go through settledClient (balance_test.go), which returns once
// the server has closed the connection: after the whole handler chain,
// settlement and arcane_auth's metrics included, has returned. So a scrape
// right after a request sees it counted. Each test loads its own config,
// whose registry starts from zero.

// The second model of startObservability: its one deployment, on an
// upstream of its own, answers every request with a 500.
const (
	obsFlakyModel      = "flaky-model"
	obsFlakyDeployment = "flaky/flaky-up"
)

// obsDeployment is chatArcane's gpt-5.2 deployment, by name.
const obsDeployment = "up/" + upstreamModel

// obsEnv is a running arcane (see startObservability).
type obsEnv struct {
	*limitEnv
	flaky *fakeUpstream
	// circuits is the fake clock the circuits run on.
	circuits *limitClock
}

// startObservability loads a chat config (startChat) with arcane_limit
// (`requests 1000 1m`, so only keys with an rpm or tpm of their own are
// ever limited), a second model, flaky-model, whose upstream fails every
// request with a 500, and `breaker { failures 1 }`, so one failure opens a
// circuit. Limits and circuits run on fake clocks that never move.
func startObservability(t *testing.T, opts chatOptions) *obsEnv {
	t.Helper()
	circuits := &limitClock{base: resClockStart}
	saved := healthNow
	// Before loading: the proxy takes its clock when it is provisioned.
	healthNow = circuits.now
	t.Cleanup(func() { healthNow = saved })
	flaky := newFakeUpstream(t)
	flaky.handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		writeUpstreamError(w, http.StatusInternalServerError, "server_error", "The server had an error.")
	})
	opts.arcaneExtra = fmt.Sprintf(`provider flaky {
			type openai
			base_url %s/v1
			api_key {env.%s}
		}
		model %s {
			deploy flaky flaky-up
			price input 1 output 1
		}
		breaker {
			failures 1
		}
		%s`, flaky.URL, upstreamKeyEnv, obsFlakyModel, opts.arcaneExtra)
	env := startLimit(t, "requests 1000 1m", opts)
	return &obsEnv{limitEnv: env, flaky: flaky, circuits: circuits}
}

// obsUsage is a usage an upstream reports.
type obsUsage struct{ prompt, completion, cached, reasoning int64 }

// wire is the usage as OpenAI writes it, reasoning tokens included.
func (u obsUsage) wire() []byte {
	return mustJSON(map[string]any{
		"prompt_tokens": u.prompt, "completion_tokens": u.completion, "total_tokens": u.prompt + u.completion,
		"prompt_tokens_details":     map[string]any{"cached_tokens": u.cached},
		"completion_tokens_details": map[string]any{"reasoning_tokens": u.reasoning},
	})
}

// cost is what u costs at gpt-5.2's price.
func (u obsUsage) cost() billing.Amount { return gptPrice.cost(u.prompt, u.cached, u.completion) }

// obsAnswer is how the fake upstream answers a chat completion.
type obsAnswer struct {
	usage obsUsage
	// arrived, when set, is sent to when the request arrives; gate, when
	// set, holds the answer back until it is closed.
	arrived chan<- struct{}
	gate    <-chan struct{}
	// delay holds the whole answer back; pause holds a stream back after
	// its first content event.
	delay, pause time.Duration
}

// handler answers as OpenAI does, as JSON or as a stream with the usage
// chunk when the request asked for it.
func (a obsAnswer) handler() upstreamHandler {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		if a.arrived != nil {
			a.arrived <- struct{}{}
		}
		wait := func(ch <-chan time.Time) bool {
			select {
			case <-ch:
				return true
			case <-r.Context().Done():
				return false
			}
		}
		if a.gate != nil {
			select {
			case <-a.gate:
			case <-r.Context().Done():
				return
			}
		}
		if a.delay > 0 && !wait(time.After(a.delay)) {
			return
		}
		req, err := parseUpstreamRequest(body)
		if err != nil {
			writeUpstreamError(w, http.StatusBadRequest, "invalid_request_error", "We could not parse the JSON body of your request.")
			return
		}
		if !req.Stream {
			stop := "stop"
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(mustJSON(wireObject{ID: testCompletionID, Object: "chat.completion", Created: testCreated, Model: req.Model,
				SystemFingerprint: "fp_test", Usage: a.usage.wire(),
				Choices: []wireChoice{{Index: 0, Message: map[string]any{"role": "assistant", "content": "Hello there.", "refusal": nil},
					Logprobs: []byte("null"), FinishReason: &stop}}}))
			return
		}
		include := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
		startUpstreamStream(w)
		writeUpstreamEvent(w, chunkJSON(req.Model, roleDelta, nil, include))
		writeUpstreamEvent(w, chunkJSON(req.Model, contentDelta("Hello"), nil, include))
		if a.pause > 0 && !wait(time.After(a.pause)) {
			return
		}
		writeUpstreamEvent(w, chunkJSON(req.Model, contentDelta(" there."), nil, include))
		writeUpstreamEvent(w, finishChunkJSON(req.Model, include))
		if include {
			writeUpstreamEvent(w, mustJSON(wireObject{ID: testCompletionID, Object: "chat.completion.chunk", Created: testCreated,
				Model: req.Model, SystemFingerprint: "fp_test", Choices: []wireChoice{}, Usage: a.usage.wire()}))
		}
		writeUpstreamEvent(w, []byte("[DONE]"))
	}
}

// obsStreamBody is a streamed gpt-5.2 request that asks for usage.
var obsStreamBody = chatBody(publicModel, `,"stream":true,"stream_options":{"include_usage":true}`)

// obsChat sends a request through settledClient with the extra headers and
// returns the answer once the request settled, and how long that took.
func obsChat(t testing.TB, key, body string, header http.Header) (chatResponse, time.Duration) {
	t.Helper()
	req := newChatRequest(t, context.Background(), http.MethodPost, key, body, header)
	start := time.Now()
	resp, err := settledClient.Do(req)
	wall := time.Since(start)
	if err != nil {
		t.Fatalf("POST /v1/chat/completions: %v", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return chatResponse{Status: resp.StatusCode, Header: resp.Header, Body: data}, wall
}

// obsExpect sends a request that settles and checks its status.
func obsExpect(t testing.TB, key, body string, header http.Header, status int) chatResponse {
	t.Helper()
	resp, _ := obsChat(t, key, body, header)
	if resp.Status != status {
		t.Fatalf("status %d, want %d; body %s", resp.Status, status, resp.Body)
	}
	return resp
}

// obsLeavingStream streams the role and one content event, then waits for
// the gateway to cancel the request and closes cancelled.
func obsLeavingStream(cancelled chan struct{}, stop <-chan struct{}) upstreamHandler {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		req, _ := parseUpstreamRequest(body)
		startUpstreamStream(w)
		writeUpstreamEvent(w, chunkJSON(req.Model, roleDelta, nil, true))
		writeUpstreamEvent(w, chunkJSON(req.Model, contentDelta("Hello"), nil, true))
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-stop:
		}
	}
}

// obsScrape is one read of the admin endpoint's /metrics.
type obsScrape struct {
	body     string
	families map[string]*dto.MetricFamily
}

// scrapeMetrics reads and parses the admin endpoint's /metrics as
// Prometheus would (a plain GET, the text format).
func scrapeMetrics(t testing.TB) obsScrape {
	t.Helper()
	resp, err := (&http.Client{Timeout: streamWait}).Get(adminURL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d; %s", resp.StatusCode, head(string(body)))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("GET /metrics is not the Prometheus text format: %v\n%s", err, obsArcaneLines(string(body)))
	}
	return obsScrape{body: string(body), families: families}
}

// obsArcaneLines are the lines of a /metrics body about caddy_arcane_*.
func obsArcaneLines(body string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(body, "\n") {
		if strings.Contains(line, "caddy_arcane_") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// obsSeries is one series: a counter's or gauge's value, or a
// histogram's count and sum.
type obsSeries struct {
	labels map[string]string
	value  float64
	count  uint64
	sum    float64
}

// series returns every series of a family; none when it is absent.
func (s obsScrape) series(name string) []obsSeries {
	f := s.families[name]
	if f == nil {
		return nil
	}
	var out []obsSeries
	for _, m := range f.GetMetric() {
		se := obsSeries{labels: make(map[string]string)}
		for _, lp := range m.GetLabel() {
			se.labels[lp.GetName()] = lp.GetValue()
		}
		switch {
		case m.GetCounter() != nil:
			se.value = m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			se.value = m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			se.count, se.sum = m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
		case m.GetUntyped() != nil:
			se.value = m.GetUntyped().GetValue()
		}
		out = append(out, se)
	}
	return out
}

// get returns the series of a family whose labels are exactly the
// name/value pairs given (a label missing from the exposition counts as
// empty).
func (s obsScrape) get(name string, pairs ...string) (obsSeries, bool) {
	want := make(map[string]string)
	for i := 0; i+1 < len(pairs); i += 2 {
		want[pairs[i]] = pairs[i+1]
	}
	for _, se := range s.series(name) {
		same := true
		for k, v := range se.labels {
			if want[k] != v {
				same = false
			}
		}
		for k, v := range want {
			if se.labels[k] != v {
				same = false
			}
		}
		if same {
			return se, true
		}
	}
	return obsSeries{}, false
}

// value is a counter's or gauge's value; 0 when the series is absent, as
// a counter never incremented is.
func (s obsScrape) value(name string, pairs ...string) float64 {
	se, _ := s.get(name, pairs...)
	return se.value
}

// table returns a family as "label1|label2|..." → value (a histogram's
// count), for the label names given in that order.
func (s obsScrape) table(name string, labels ...string) map[string]float64 {
	out := make(map[string]float64)
	for _, se := range s.series(name) {
		var key []string
		for _, l := range labels {
			key = append(key, se.labels[l])
		}
		v := se.value
		if s.families[name].GetType() == dto.MetricType_HISTOGRAM {
			v = float64(se.count)
		}
		out[strings.Join(key, "|")] = v
	}
	return out
}

// assertTable compares a family's table with what it should be, zero
// entries ignored on both sides.
func assertTable(t testing.TB, what string, got, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		if v != 0 && got[k] != v {
			t.Errorf("%s{%s} = %v, want %v", what, k, got[k], v)
		}
	}
	for k, v := range got {
		if v != 0 && want[k] == 0 {
			t.Errorf("%s{%s} = %v, want no such series (or 0)", what, k, v)
		}
	}
}

// assertValue checks a gauge's (or counter's) exact value, and that the
// series exists.
func (s obsScrape) assertValue(t testing.TB, want float64, name string, pairs ...string) {
	t.Helper()
	se, ok := s.get(name, pairs...)
	if !ok {
		t.Errorf("%s%v: no such series; the arcane metrics are:\n%s", name, pairs, obsArcaneLines(s.body))
		return
	}
	if se.value != want {
		t.Errorf("%s%v = %v, want %v", name, pairs, se.value, want)
	}
}

// assertState checks a deployment's circuit gauges: 1 for state, 0 for
// the two others.
func (s obsScrape) assertState(t testing.TB, modelID, deployment, state string) {
	t.Helper()
	for _, st := range []string{"closed", "open", "half_open"} {
		want := 0.0
		if st == state {
			want = 1
		}
		s.assertValue(t, want, "caddy_arcane_deployment_state", "model", modelID, "deployment", deployment, "state", st)
	}
}

// micro is a dollar figure of a metric in micro-dollars, to six decimals.
func micro(dollars float64) billing.Amount {
	return billing.Amount(math.Round(dollars * float64(billing.Dollar)))
}

// obsLedger sums an account's charge rows.
type obsLedger struct {
	rows                       int
	cost                       billing.Amount
	prompt, cached, completion int64
}

func ledgerSums(t testing.TB, accountID string) obsLedger {
	t.Helper()
	var l obsLedger
	for _, r := range chargeRows(t, accountID) {
		l.rows++
		l.cost += r.cost(t)
		l.prompt += r.PromptTokens
		l.cached += r.CachedTokens
		l.completion += r.CompletionTokens
	}
	return l
}

// Promise: every chat completion is counted once, by model, outcome and
// status, with its tokens, cost and times; refusals by reason; and the
// live state (circuits, requests in flight, holds) read when scraped.
func TestObservabilityMetricsByOutcome(t *testing.T) {
	env := startObservability(t, chatOptions{balance: true})
	creditAccount(t, env.acct.ID, "10.00")
	usageA := obsUsage{prompt: 11, completion: 7, cached: 3, reasoning: 2}
	usageB := obsUsage{prompt: 20, completion: 9, cached: 5, reasoning: 4}

	// What the metrics must say by the end, built up as requests are sent.
	requests := make(map[string]float64) // model|outcome|code
	count := func(modelID, outcome string, code int) {
		requests[modelID+"|"+outcome+"|"+strconv.Itoa(code)]++
	}
	rejections := make(map[string]float64)
	var reasoning float64
	// forwarded counts the requests that reached the proxy; of them,
	// gptForwarded those to gpt-5.2, gptDelivered those that got an answer.
	forwarded, gptForwarded, gptDelivered := 0, 0, 0

	t.Run("a completion and a stream that succeed", func(t *testing.T) {
		// The completion waits at the upstream while the live state is read.
		arrived := make(chan struct{}, 1)
		gate, release := releaser(t)
		env.up.handle(obsAnswer{usage: usageA, arrived: arrived, gate: gate}.handler())
		type result struct {
			resp *http.Response
			body []byte
			err  error
		}
		done := make(chan result, 1)
		go func() {
			resp, err := settledClient.Do(newChatRequest(t, context.Background(), http.MethodPost, env.key.Key, chatBody(publicModel, ""), nil))
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			done <- result{resp, body, err}
		}()
		waitFor(t, arrived, "the completion reaching the upstream")
		during := scrapeMetrics(t)
		during.assertValue(t, 1, "caddy_arcane_holds_open")
		during.assertValue(t, 1, "caddy_arcane_deployment_in_flight", "model", publicModel, "deployment", obsDeployment)
		release()
		var res result
		select {
		case res = <-done:
		case <-time.After(2 * streamWait):
			t.Fatal("the completion did not end")
		}
		if res.err != nil || res.resp.StatusCode != http.StatusOK {
			t.Fatalf("completion: %v; %s", res.err, res.body)
		}
		count(publicModel, "ok", 200)
		forwarded, gptForwarded, gptDelivered = forwarded+1, gptForwarded+1, gptDelivered+1
		reasoning += float64(usageA.reasoning)

		env.up.handle(obsAnswer{usage: usageB}.handler())
		obsExpect(t, env.key.Key, obsStreamBody, nil, http.StatusOK)
		count(publicModel, "ok", 200)
		forwarded, gptForwarded, gptDelivered = forwarded+1, gptForwarded+1, gptDelivered+1
		reasoning += float64(usageB.reasoning)

		s := scrapeMetrics(t)
		assertTable(t, "caddy_arcane_requests_total", s.table("caddy_arcane_requests_total", "model", "outcome", "code"), requests)
		assertTable(t, "caddy_arcane_tokens_total", s.table("caddy_arcane_tokens_total", "model", "kind"), map[string]float64{
			publicModel + "|prompt":      float64(usageA.prompt + usageB.prompt),
			publicModel + "|cached":      float64(usageA.cached + usageB.cached),
			publicModel + "|cache_write": 0, // an OpenAI-shaped upstream that reports none
			publicModel + "|completion":  float64(usageA.completion + usageB.completion),
			publicModel + "|reasoning":   float64(usageA.reasoning + usageB.reasoning),
		})
		ledger := ledgerSums(t, env.acct.ID)
		if ledger.rows != 2 || ledger.cost != usageA.cost()+usageB.cost() {
			t.Errorf("the ledger has %d charges for %s, want 2 for %s", ledger.rows, ledger.cost, usageA.cost()+usageB.cost())
		}
		if got := micro(s.value("caddy_arcane_cost_dollars_total", "model", publicModel)); got != ledger.cost {
			t.Errorf("caddy_arcane_cost_dollars_total{model=%q} = %s, want the ledger's %s", publicModel, got, ledger.cost)
		}
		for _, name := range []string{"caddy_arcane_time_to_first_token_seconds", "caddy_arcane_upstream_duration_seconds"} {
			h, ok := s.get(name, "model", publicModel, "deployment", obsDeployment)
			if !ok || h.count != 2 || h.sum <= 0 {
				t.Errorf("%s{%s,%s}: count %d and sum %v (found: %v), want 2 and more than 0", name, publicModel, obsDeployment, h.count, h.sum, ok)
			}
		}
		if h, ok := s.get("caddy_arcane_gateway_overhead_seconds"); !ok || h.count != 2 || h.sum <= 0 {
			t.Errorf("caddy_arcane_gateway_overhead_seconds: count %d and sum %v, want 2 and more than 0", h.count, h.sum)
		}
		assertTable(t, "caddy_arcane_upstream_attempts_total", s.table("caddy_arcane_upstream_attempts_total", "model", "deployment", "result"),
			map[string]float64{publicModel + "|" + obsDeployment + "|ok": 2})
		s.assertValue(t, 0, "caddy_arcane_holds_open")
		s.assertValue(t, 0, "caddy_arcane_deployment_in_flight", "model", publicModel, "deployment", obsDeployment)
		s.assertState(t, publicModel, obsDeployment, "closed")
		s.assertState(t, obsFlakyModel, obsFlakyDeployment, "closed")
		if v := s.value("caddy_arcane_deployment_latency_seconds", "model", publicModel, "deployment", obsDeployment); v <= 0 {
			t.Errorf("caddy_arcane_deployment_latency_seconds{%s} = %v after two answers, want more than 0", obsDeployment, v)
		}
		batch, _ := s.get("caddy_arcane_ledger_batch_size")
		commit, _ := s.get("caddy_arcane_ledger_commit_seconds")
		if batch.count == 0 || batch.sum != 2 || commit.count != batch.count || commit.sum <= 0 {
			t.Errorf("ledger_batch_size count %d sum %v, ledger_commit_seconds count %d sum %v; want the two settlements in as many commits as batches, taking time",
				batch.count, batch.sum, commit.count, commit.sum)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("rate limited requests", func(t *testing.T) {
		env.up.handle(obsAnswer{usage: usageA}.handler())
		body := chatBody(publicModel, "")
		perRequest := createKey(t, env.acct.ID, map[string]any{"rpm": 1})
		obsExpect(t, perRequest.Key, body, nil, http.StatusOK)
		obsExpect(t, perRequest.Key, body, nil, http.StatusTooManyRequests)
		// A budget of 10 tokens a minute: the first request may take it
		// all, and uses 18; the second finds it spent.
		perToken := createKey(t, env.acct.ID, map[string]any{"tpm": 10})
		obsExpect(t, perToken.Key, body, nil, http.StatusOK)
		obsExpect(t, perToken.Key, body, nil, http.StatusTooManyRequests)
		count(publicModel, "ok", 200)
		count(publicModel, "ok", 200)
		count(publicModel, "rate_limited", 429)
		count(publicModel, "rate_limited", 429)
		rejections["rate_limit_requests"]++
		rejections["rate_limit_tokens"]++
		forwarded, gptForwarded, gptDelivered = forwarded+2, gptForwarded+2, gptDelivered+2
		reasoning += 2 * float64(usageA.reasoning)

		s := scrapeMetrics(t)
		assertTable(t, "caddy_arcane_requests_total", s.table("caddy_arcane_requests_total", "model", "outcome", "code"), requests)
		assertTable(t, "caddy_arcane_rejections_total", s.table("caddy_arcane_rejections_total", "reason"), rejections)
	})

	t.Run("a request the balance does not cover", func(t *testing.T) {
		poor := createAccount(t, "poor")
		key := createKey(t, poor.ID, nil)
		obsExpect(t, key.Key, chatBody(publicModel, ""), nil, http.StatusForbidden)
		count(publicModel, "insufficient_balance", 403)
		rejections["insufficient_balance"]++

		s := scrapeMetrics(t)
		assertTable(t, "caddy_arcane_requests_total", s.table("caddy_arcane_requests_total", "model", "outcome", "code"), requests)
		assertTable(t, "caddy_arcane_rejections_total", s.table("caddy_arcane_rejections_total", "reason"), rejections)
	})

	// A free-text model id that must never become a label.
	unknownModel := "no-such-model-" + env.acct.ID

	t.Run("invalid requests", func(t *testing.T) {
		obsExpect(t, env.key.Key, `{"model":"gpt-5.2","messages":`, nil, http.StatusBadRequest)
		obsExpect(t, env.key.Key, chatBody(unknownModel, ""), nil, http.StatusNotFound)
		count("", "invalid_request", 400)
		count("", "invalid_request", 404)

		s := scrapeMetrics(t)
		assertTable(t, "caddy_arcane_requests_total", s.table("caddy_arcane_requests_total", "model", "outcome", "code"), requests)
		assertTable(t, "caddy_arcane_rejections_total", s.table("caddy_arcane_rejections_total", "reason"), rejections)
		if strings.Contains(s.body, unknownModel) {
			t.Errorf("/metrics names the model a client asked for that the catalog does not have:\n%s", obsArcaneLines(s.body))
		}
	})

	t.Run("requests with a bad key or of a disabled account", func(t *testing.T) {
		body := chatBody(publicModel, "")
		revoked := createKey(t, env.acct.ID, nil)
		adminOK(t, http.MethodDelete, "/arcane/keys/"+revoked.ID, nil, http.StatusOK, nil)
		obsExpect(t, "", body, nil, http.StatusUnauthorized)
		obsExpect(t, "", body, http.Header{"Authorization": {"Basic Zm9vOmJhcg=="}}, http.StatusUnauthorized)
		obsExpect(t, "ak_"+strings.Repeat("x", 49), body, nil, http.StatusUnauthorized)
		obsExpect(t, revoked.Key, body, nil, http.StatusUnauthorized)
		rejections["invalid_api_key"] += 4

		disabled := createAccount(t, "disabled")
		creditAccount(t, disabled.ID, "1.00")
		dkey := createKey(t, disabled.ID, nil)
		adminOK(t, http.MethodPatch, "/arcane/accounts/"+disabled.ID, `{"state":"disabled"}`, http.StatusOK, nil)
		obsExpect(t, dkey.Key, body, nil, http.StatusForbidden)
		rejections["account_disabled"]++

		s := scrapeMetrics(t)
		// Not a chat completion of any key: no requests_total series.
		assertTable(t, "caddy_arcane_requests_total", s.table("caddy_arcane_requests_total", "model", "outcome", "code"), requests)
		assertTable(t, "caddy_arcane_rejections_total", s.table("caddy_arcane_rejections_total", "reason"), rejections)
	})

	t.Run("an upstream that fails, then its open circuit", func(t *testing.T) {
		body := chatBody(obsFlakyModel, "")
		obsExpect(t, env.key.Key, body, nil, http.StatusBadGateway)
		count(obsFlakyModel, "upstream_error", 502)
		forwarded++
		s := scrapeMetrics(t)
		assertTable(t, "caddy_arcane_requests_total", s.table("caddy_arcane_requests_total", "model", "outcome", "code"), requests)
		s.assertState(t, obsFlakyModel, obsFlakyDeployment, "open")
		s.assertState(t, publicModel, obsDeployment, "closed")

		// The circuit is open: no deployment is tried, the client gets 503.
		obsExpect(t, env.key.Key, body, nil, http.StatusServiceUnavailable)
		count(obsFlakyModel, "upstream_error", 503)
		forwarded++
		if n := env.flaky.calls.Load(); n != 1 {
			t.Errorf("the flaky upstream got %d requests, want 1", n)
		}
		s = scrapeMetrics(t)
		assertTable(t, "caddy_arcane_requests_total", s.table("caddy_arcane_requests_total", "model", "outcome", "code"), requests)
		assertTable(t, "caddy_arcane_upstream_attempts_total", s.table("caddy_arcane_upstream_attempts_total", "model", "deployment", "result"),
			map[string]float64{publicModel + "|" + obsDeployment + "|ok": 4, obsFlakyModel + "|" + obsFlakyDeployment + "|failed": 1})
		if h, _ := s.get("caddy_arcane_time_to_first_token_seconds", "model", obsFlakyModel, "deployment", obsFlakyDeployment); h.count != 0 {
			t.Errorf("%d times to first token are recorded for a model that never answered", h.count)
		}
		if h, _ := s.get("caddy_arcane_upstream_duration_seconds", "model", obsFlakyModel, "deployment", obsFlakyDeployment); h.count != 1 || h.sum <= 0 {
			t.Errorf("caddy_arcane_upstream_duration_seconds{%s}: count %d sum %v, want the one call", obsFlakyModel, h.count, h.sum)
		}
		if got := s.value("caddy_arcane_cost_dollars_total", "model", obsFlakyModel); got != 0 {
			t.Errorf("failed requests cost $%v", got)
		}
	})

	t.Run("clients that leave", func(t *testing.T) {
		t.Run("while the completion is read", func(t *testing.T) {
			reading, cancelled := make(chan struct{}), make(chan struct{})
			stop, _ := releaser(t)
			env.up.handle(leavingCompletion(reading, cancelled, stop))
			leaveAfter(t, env.key.Key, chatBody(publicModel, ""), nil, cancelled, func(*http.Request, *bufio.Reader) {
				waitFor(t, reading, "the gateway reading the upstream's answer")
			})
			count(publicModel, "client_closed", 499)
			forwarded++
			gptForwarded++

			s := scrapeMetrics(t)
			assertTable(t, "caddy_arcane_requests_total", s.table("caddy_arcane_requests_total", "model", "outcome", "code"), requests)
			// The deployment was answering: the client's leaving is not its
			// failure, for the circuit (closed) nor for the attempts that
			// README.md says to alert on.
			s.assertState(t, publicModel, obsDeployment, "closed")
			if n := s.value("caddy_arcane_upstream_attempts_total", "model", publicModel, "deployment", obsDeployment, "result", "failed"); n != 0 {
				t.Errorf("caddy_arcane_upstream_attempts_total{%s,result=\"failed\"} = %v after a client left while the deployment answered; "+
					"want 0: the deployment did not fail (its circuit did not count it either)", obsDeployment, n)
			}
		})
		t.Run("mid-stream", func(t *testing.T) {
			cancelled := make(chan struct{})
			stop, _ := releaser(t)
			env.up.handle(obsLeavingStream(cancelled, stop))
			leaveAfter(t, env.key.Key, obsStreamBody, nil, cancelled, func(req *http.Request, br *bufio.Reader) {
				resp := readStreamStart(t, req, br)
				er := newEventReader(resp.Body)
				er.next(t) // the role
				er.next(t) // the first content
			})
			// README.md: code is the HTTP status, 499 when the client left.
			count(publicModel, "client_closed", 499)
			forwarded++
			gptForwarded++
			gptDelivered++

			s := scrapeMetrics(t)
			for _, se := range s.series("caddy_arcane_requests_total") {
				if se.labels["outcome"] == "client_closed" && se.labels["code"] != "499" && se.value != 0 {
					t.Errorf("caddy_arcane_requests_total %v = %v: a client that left mid-stream is counted with code %q; want 499, as README.md says (499: the client left)",
						se.labels, se.value, se.labels["code"])
				}
			}
			assertTable(t, "caddy_arcane_requests_total", s.table("caddy_arcane_requests_total", "model", "outcome", "code"), requests)
		})
	})

	t.Run("the totals", func(t *testing.T) {
		s := scrapeMetrics(t)
		assertTable(t, "caddy_arcane_requests_total", s.table("caddy_arcane_requests_total", "model", "outcome", "code"), requests)
		assertTable(t, "caddy_arcane_rejections_total", s.table("caddy_arcane_rejections_total", "reason"), rejections)
		// Every charge, counted or reported, is in the tokens and cost.
		ledger := ledgerSums(t, env.acct.ID)
		if ledger.rows != forwarded {
			t.Errorf("the ledger has %d charges, want one per forwarded request: %d", ledger.rows, forwarded)
		}
		assertTable(t, "caddy_arcane_tokens_total", s.table("caddy_arcane_tokens_total", "model", "kind"), map[string]float64{
			publicModel + "|prompt":      float64(ledger.prompt),
			publicModel + "|cached":      float64(ledger.cached),
			publicModel + "|cache_write": 0,
			publicModel + "|completion":  float64(ledger.completion),
			publicModel + "|reasoning":   reasoning,
		})
		if got := micro(s.value("caddy_arcane_cost_dollars_total", "model", publicModel)); got != ledger.cost {
			t.Errorf("caddy_arcane_cost_dollars_total{model=%q} = %s, want the ledger's %s", publicModel, got, ledger.cost)
		}
		assertTable(t, "caddy_arcane_time_to_first_token_seconds", s.table("caddy_arcane_time_to_first_token_seconds", "model", "deployment"),
			map[string]float64{publicModel + "|" + obsDeployment: float64(gptDelivered)})
		assertTable(t, "caddy_arcane_upstream_duration_seconds", s.table("caddy_arcane_upstream_duration_seconds", "model", "deployment"),
			map[string]float64{publicModel + "|" + obsDeployment: float64(gptForwarded), obsFlakyModel + "|" + obsFlakyDeployment: 1})
		// Every call to a deployment is an attempt: ok for those that
		// delivered, and the flaky deployment's one call failed.
		attempts := s.table("caddy_arcane_upstream_attempts_total", "model", "deployment", "result")
		if got, want := attempts[publicModel+"|"+obsDeployment+"|ok"], float64(gptDelivered); got < want {
			t.Errorf("caddy_arcane_upstream_attempts_total{%s,ok} = %v, want at least the %v answers delivered", obsDeployment, got, want)
		}
		if got, want := attempts[publicModel+"|"+obsDeployment+"|ok"]+attempts[publicModel+"|"+obsDeployment+"|failed"]+
			attempts[publicModel+"|"+obsDeployment+"|client_closed"], float64(env.up.calls.Load()); got != want {
			t.Errorf("caddy_arcane_upstream_attempts_total{%s} sums to %v, want the upstream's %v calls", obsDeployment, got, want)
		}
		if got := attempts[obsFlakyModel+"|"+obsFlakyDeployment+"|failed"]; got != 1 || attempts[obsFlakyModel+"|"+obsFlakyDeployment+"|ok"] != 0 {
			t.Errorf("caddy_arcane_upstream_attempts_total{%s}: %v failed, want the one call failed: %v", obsFlakyDeployment, got, attempts)
		}
		if h, _ := s.get("caddy_arcane_gateway_overhead_seconds"); h.count != uint64(forwarded) || h.sum <= 0 {
			t.Errorf("caddy_arcane_gateway_overhead_seconds: count %d sum %v, want %d forwarded requests and a positive sum", h.count, h.sum, forwarded)
		}
		s.assertValue(t, 0, "caddy_arcane_holds_open")
		s.assertValue(t, 0, "caddy_arcane_deployment_in_flight", "model", publicModel, "deployment", obsDeployment)
		// A client leaving is not the deployment's failure.
		s.assertState(t, publicModel, obsDeployment, "closed")
		s.assertState(t, obsFlakyModel, obsFlakyDeployment, "open")
		batch, _ := s.get("caddy_arcane_ledger_batch_size")
		commit, _ := s.get("caddy_arcane_ledger_commit_seconds")
		if batch.count == 0 || batch.sum != float64(ledger.rows) || commit.count != batch.count {
			t.Errorf("ledger_batch_size count %d sum %v, ledger_commit_seconds count %d; want the %d settlements in as many commits as batches",
				batch.count, batch.sum, commit.count, ledger.rows)
		}
	})
}

// obsLabels are the only labels an arcane series may have, and the values
// each may take (model and deployment: checked against the catalog).
var obsLabels = map[string][]string{
	"model":      nil,
	"deployment": nil,
	"outcome":    {"ok", "client_closed", "upstream_error", "invalid_request", "rate_limited", "insufficient_balance", "gateway_overloaded", "gateway_error"},
	"code":       nil,
	"kind":       {"prompt", "cached", "cache_write", "completion", "reasoning"},
	"result":     {"ok", "failed", "client_closed"},
	"reason":     {"invalid_api_key", "account_disabled", "rate_limit_requests", "rate_limit_tokens", "insufficient_balance", "gateway_overloaded", "gateway_error"},
	"state":      {"closed", "open", "half_open"},
}

// obsFamilies are the metrics README.md's table lists.
var obsFamilies = []string{
	"caddy_arcane_requests_total", "caddy_arcane_tokens_total", "caddy_arcane_cost_dollars_total",
	"caddy_arcane_time_to_first_token_seconds", "caddy_arcane_upstream_duration_seconds", "caddy_arcane_gateway_overhead_seconds",
	"caddy_arcane_upstream_attempts_total", "caddy_arcane_rejections_total", "caddy_arcane_deployment_state",
	"caddy_arcane_deployment_in_flight", "caddy_arcane_deployment_latency_seconds", "caddy_arcane_holds_open",
	"caddy_arcane_ledger_commit_seconds", "caddy_arcane_ledger_batch_size", "caddy_arcane_ledger_backlog",
	"caddy_arcane_ledger_throttled_total",
}

var statusCode = regexp.MustCompile(`^[1-5][0-9][0-9]$`)

// Promise: no key, key id, account id, request id, provider key or free
// text is ever in a metric; labels come from the catalog and from fixed
// vocabularies only.
func TestObservabilityMetricsHoldNoKeyMaterial(t *testing.T) {
	env := startObservability(t, chatOptions{balance: true})
	creditAccount(t, env.acct.ID, "10.00")
	env.up.handle(obsAnswer{usage: obsUsage{prompt: 11, completion: 7, cached: 3, reasoning: 2}}.handler())

	var requestIDs []string
	secrets := []string{env.key.Key, env.providerKey}
	ids := []string{env.key.ID, env.acct.ID}
	ok := obsExpect(t, env.key.Key, chatBody(publicModel, ""), nil, http.StatusOK)
	requestIDs = append(requestIDs, requestID(t, ok.Header))
	ok = obsExpect(t, env.key.Key, obsStreamBody, nil, http.StatusOK)
	requestIDs = append(requestIDs, requestID(t, ok.Header))
	failed := obsExpect(t, env.key.Key, chatBody(obsFlakyModel, ""), nil, http.StatusBadGateway)
	requestIDs = append(requestIDs, requestID(t, failed.Header))

	// Refused keys: revoked, malformed, never issued.
	revoked := createKey(t, env.acct.ID, nil)
	adminOK(t, http.MethodDelete, "/arcane/keys/"+revoked.ID, nil, http.StatusOK, nil)
	madeUp := "ak_" + hexSecret(t) + hexSecret(t) + hexSecret(t) + hexSecret(t)[:1]
	for _, k := range []string{revoked.Key, madeUp, "ak_short"} {
		obsExpect(t, k, chatBody(publicModel, ""), nil, http.StatusUnauthorized)
	}
	secrets = append(secrets, revoked.Key, madeUp, "ak_short")
	ids = append(ids, revoked.ID)

	// A poor account's key, and free text naming accounts and keys as the
	// model.
	poor := createAccount(t, "poor")
	poorKey := createKey(t, poor.ID, nil)
	obsExpect(t, poorKey.Key, chatBody(publicModel, ""), nil, http.StatusForbidden)
	secrets = append(secrets, poorKey.Key)
	ids = append(ids, poor.ID, poorKey.ID)
	freeText := "model-of-" + env.acct.ID + "-" + env.key.ID
	obsExpect(t, env.key.Key, chatBody(freeText, ""), nil, http.StatusNotFound)

	s := scrapeMetrics(t)
	for _, name := range obsFamilies {
		if s.families[name] == nil {
			t.Errorf("/metrics has no %s after every kind of request", name)
		}
	}
	for _, secret := range secrets {
		if strings.Contains(s.body, secret) {
			t.Errorf("/metrics holds the key %q", secret)
		}
	}
	for _, id := range append(append(ids, requestIDs...), freeText) {
		if strings.Contains(s.body, id) {
			t.Errorf("/metrics holds %q", id)
		}
	}
	for _, generic := range []string{"ak_", "Bearer", env.providerKey[:len("sk-upstream-")+8]} {
		if strings.Contains(s.body, generic) {
			t.Errorf("/metrics holds %q", generic)
		}
	}
	arcane := obsArcaneLines(s.body)
	for _, prefix := range []string{"key_", "acct_", "req_"} {
		if strings.Contains(arcane, prefix) {
			t.Errorf("the arcane metrics hold %q:\n%s", prefix, arcane)
		}
	}

	models := map[string]bool{publicModel: true, obsFlakyModel: true, "": true}
	deployments := map[string]bool{obsDeployment: true, obsFlakyDeployment: true}
	series := 0
	for name := range s.families {
		if !strings.HasPrefix(name, "caddy_arcane_") {
			continue
		}
		if !slices.Contains(obsFamilies, name) {
			t.Errorf("/metrics has %s, which README.md does not document", name)
		}
		for _, se := range s.series(name) {
			series++
			for label, value := range se.labels {
				allowed, known := obsLabels[label]
				switch {
				case !known:
					t.Errorf("%s has the label %s=%q; labels may only be model, outcome, code, kind, deployment, result, reason, state", name, label, value)
				case label == "model" && !models[value]:
					t.Errorf("%s{model=%q}: not a model of the catalog, nor empty", name, value)
				case label == "deployment" && !deployments[value]:
					t.Errorf("%s{deployment=%q}: not a deployment of the catalog", name, value)
				case label == "code" && !statusCode.MatchString(value):
					t.Errorf("%s{code=%q}: not an HTTP status", name, value)
				case allowed != nil && !slices.Contains(allowed, value):
					t.Errorf("%s{%s=%q}: not one of %q", name, label, value, allowed)
				}
			}
		}
	}
	if series == 0 {
		t.Fatal("no arcane series to check")
	}
}

// Promise: a reload registers a fresh set of metrics (counters start from
// zero) without a duplicate registration, and they go on counting; the
// ledger's commits are observed by the config that runs.
func TestObservabilityMetricsSurviveReload(t *testing.T) {
	env := startChat(t, chatOptions{balance: true})
	creditAccount(t, env.acct.ID, "10.00")
	usage := obsUsage{prompt: 11, completion: 7, cached: 3, reasoning: 2}
	env.up.handle(obsAnswer{usage: usage}.handler())

	// counted checks that the running config counted exactly one ok
	// completion of modelID and its settlement.
	counted := func(t *testing.T, modelID, deployment string) {
		t.Helper()
		s := scrapeMetrics(t)
		assertTable(t, "caddy_arcane_requests_total", s.table("caddy_arcane_requests_total", "model", "outcome", "code"),
			map[string]float64{modelID + "|ok|200": 1})
		assertTable(t, "caddy_arcane_tokens_total", s.table("caddy_arcane_tokens_total", "model", "kind"), map[string]float64{
			modelID + "|prompt": float64(usage.prompt), modelID + "|cached": float64(usage.cached), modelID + "|cache_write": 0,
			modelID + "|completion": float64(usage.completion), modelID + "|reasoning": float64(usage.reasoning),
		})
		assertTable(t, "caddy_arcane_time_to_first_token_seconds", s.table("caddy_arcane_time_to_first_token_seconds", "model", "deployment"),
			map[string]float64{modelID + "|" + deployment: 1})
		if h, _ := s.get("caddy_arcane_gateway_overhead_seconds"); h.count != 1 {
			t.Errorf("caddy_arcane_gateway_overhead_seconds count %d, want 1", h.count)
		}
		if batch, _ := s.get("caddy_arcane_ledger_batch_size"); batch.count != 1 || batch.sum != 1 {
			t.Errorf("ledger_batch_size count %d sum %v, want the one settlement of this config", batch.count, batch.sum)
		}
		if commit, _ := s.get("caddy_arcane_ledger_commit_seconds"); commit.count != 1 {
			t.Errorf("ledger_commit_seconds count %d, want the one commit of this config", commit.count)
		}
		s.assertState(t, modelID, deployment, "closed")
	}
	// fresh checks that nothing is counted yet.
	fresh := func(t *testing.T) obsScrape {
		t.Helper()
		s := scrapeMetrics(t)
		for _, name := range []string{"caddy_arcane_requests_total", "caddy_arcane_tokens_total", "caddy_arcane_cost_dollars_total",
			"caddy_arcane_time_to_first_token_seconds", "caddy_arcane_gateway_overhead_seconds", "caddy_arcane_ledger_batch_size"} {
			for _, se := range s.series(name) {
				if se.value != 0 || se.count != 0 {
					t.Errorf("%s%v = %v (count %d) after a reload, want a fresh count", name, se.labels, se.value, se.count)
				}
			}
		}
		for _, name := range obsFamilies {
			if n := strings.Count(s.body, "# TYPE "+name+" "); n > 1 {
				t.Errorf("/metrics has %d families %s", n, name)
			}
		}
		s.assertValue(t, 0, "caddy_arcane_holds_open")
		return s
	}

	obsExpect(t, env.key.Key, chatBody(publicModel, ""), nil, http.StatusOK)
	t.Run("before the reload", func(t *testing.T) { counted(t, publicModel, obsDeployment) })

	t.Run("the same config loaded again", func(t *testing.T) {
		forceReload(t, env.cfg)
		fresh(t).assertState(t, publicModel, obsDeployment, "closed")
		obsExpect(t, env.key.Key, chatBody(publicModel, ""), nil, http.StatusOK)
		counted(t, publicModel, obsDeployment)
	})

	t.Run("a changed config", func(t *testing.T) {
		storage := regexp.MustCompile(`storage "([^"]+)"`).FindStringSubmatch(env.cfg)
		if storage == nil {
			t.Fatalf("no storage in the config:\n%s", env.cfg)
		}
		const extra = "reloaded-model"
		cfg := testCaddyfile(storage[1], chatArcane(env.up.URL+"/v1", "model "+extra+" {\n\t\t\tdeploy up extra-up\n\t\t\tprice input 1.75 output 14.00 cached_input 0.175\n\t\t}"), balanceRoutes)
		forceReload(t, cfg)
		s := fresh(t)
		s.assertState(t, extra, "up/extra-up", "closed")
		s.assertState(t, publicModel, obsDeployment, "closed")
		obsExpect(t, env.key.Key, chatBody(extra, ""), nil, http.StatusOK)
		counted(t, extra, "up/extra-up")
		// And once more, as `caddy reload` run twice would.
		forceReload(t, cfg)
		fresh(t)
		obsExpect(t, env.key.Key, chatBody(extra, ""), nil, http.StatusOK)
		counted(t, extra, "up/extra-up")
	})
}

// Promise: the access log line of a chat completion carries its request
// id, key id, account (also as user_id), model, deployment, attempts,
// outcome, times, usage and cost; never a key.
func TestObservabilityAccessLog(t *testing.T) {
	env := startChat(t, chatOptions{accessLog: true, balance: true})
	creditAccount(t, env.acct.ID, "10.00")

	// line reads a request's access log line and checks what every chat
	// completion's carries.
	line := func(t *testing.T, marker string, resp chatResponse, status int) map[string]any {
		t.Helper()
		entry, raw := accessLogLine(t, env.logPath, marker)
		for _, secret := range []string{env.key.Key, env.providerKey, "ak_"} {
			if strings.Contains(raw, secret) {
				t.Errorf("the access log line holds %q: %s", secret, raw)
			}
		}
		want := map[string]any{
			"arcane_request_id": requestID(t, resp.Header),
			"arcane_key_id":     env.key.ID,
			"arcane_account_id": env.acct.ID,
			"user_id":           env.acct.ID,
			"arcane_model":      publicModel,
			"arcane_deployment": obsDeployment,
			"arcane_attempts":   float64(1),
			"status":            float64(status),
		}
		for k, v := range want {
			if entry[k] != v {
				t.Errorf("%s is %#v, want %#v; line %s", k, entry[k], v, raw)
			}
		}
		req, _ := entry["request"].(map[string]any)
		headers, _ := req["headers"].(map[string]any)
		if got := fmt.Sprint(headers["Authorization"]); got != "[REDACTED]" {
			t.Errorf("request.headers.Authorization is %s, want [REDACTED]; line %s", got, raw)
		}
		if headers["X-Arcane-Test"] == nil {
			t.Errorf("the line shows no request headers: %s", raw)
		}
		return entry
	}
	// seconds reads a duration field, in seconds.
	seconds := func(t *testing.T, entry map[string]any, field string) float64 {
		t.Helper()
		v, ok := entry[field].(float64)
		if !ok {
			t.Fatalf("%s is %#v, want seconds as a number", field, entry[field])
		}
		return v
	}
	// usage checks the usage fields and the cost.
	usage := func(t *testing.T, entry map[string]any, basis string, u obsUsage, cost billing.Amount) {
		t.Helper()
		want := map[string]any{
			"arcane_outcome":           "ok",
			"arcane_usage_basis":       basis,
			"arcane_prompt_tokens":     float64(u.prompt),
			"arcane_cached_tokens":     float64(u.cached),
			"arcane_completion_tokens": float64(u.completion),
			"arcane_reasoning_tokens":  float64(u.reasoning),
			"arcane_cost":              cost.String(),
		}
		for k, v := range want {
			if entry[k] != v {
				t.Errorf("%s is %#v, want %#v", k, entry[k], v)
			}
		}
	}

	t.Run("a completion", func(t *testing.T) {
		u := obsUsage{prompt: 11, completion: 7, cached: 3, reasoning: 2}
		const delay = 100 * time.Millisecond
		env.up.handle(obsAnswer{usage: u, delay: delay}.handler())
		resp, wall := obsChat(t, env.key.Key, chatBody(publicModel, ""), http.Header{"X-Arcane-Test": {"obs-completion"}})
		if resp.Status != http.StatusOK {
			t.Fatalf("status %d; %s", resp.Status, resp.Body)
		}
		entry := line(t, "obs-completion", resp, http.StatusOK)
		row := requestRow(t, env.acct.ID, requestID(t, resp.Header))
		if row.cost(t) != u.cost() {
			t.Errorf("the ledger charged %s, want %s", row.cost(t), u.cost())
		}
		usage(t, entry, "upstream", u, u.cost())
		// The whole answer is its first byte: after the upstream's delay.
		ttft, up, total := seconds(t, entry, "arcane_ttft"), seconds(t, entry, "arcane_upstream_duration"), seconds(t, entry, "duration")
		if ttft < delay.Seconds() || ttft > wall.Seconds() || ttft > total {
			t.Errorf("arcane_ttft %vs, want at least the upstream's %v, at most the request's %v (duration %vs)", ttft, delay, wall, total)
		}
		if up < delay.Seconds() || up > wall.Seconds() {
			t.Errorf("arcane_upstream_duration %vs, want at least %v, at most the request's %v", up, delay, wall)
		}
	})

	t.Run("a stream", func(t *testing.T) {
		u := obsUsage{prompt: 20, completion: 9, cached: 5, reasoning: 4}
		const pause = 300 * time.Millisecond
		env.up.handle(obsAnswer{usage: u, pause: pause}.handler())
		resp, wall := obsChat(t, env.key.Key, obsStreamBody, http.Header{"X-Arcane-Test": {"obs-stream"}})
		if resp.Status != http.StatusOK {
			t.Fatalf("status %d; %s", resp.Status, resp.Body)
		}
		entry := line(t, "obs-stream", resp, http.StatusOK)
		usage(t, entry, "upstream", u, u.cost())
		if row := requestRow(t, env.acct.ID, requestID(t, resp.Header)); row.cost(t) != u.cost() {
			t.Errorf("the ledger charged %s, want %s", row.cost(t), u.cost())
		}
		// The first event left before the upstream paused; the stream
		// ended after.
		ttft, up := seconds(t, entry, "arcane_ttft"), seconds(t, entry, "arcane_upstream_duration")
		if ttft <= 0 || ttft > wall.Seconds() || ttft > up-pause.Seconds()*2/3 {
			t.Errorf("arcane_ttft %vs, want more than 0 and well before the stream's end: upstream %vs, request %v, pause %v", ttft, up, wall, pause)
		}
		if up < pause.Seconds() || up > wall.Seconds() {
			t.Errorf("arcane_upstream_duration %vs, want at least the pause %v, at most the request's %v", up, pause, wall)
		}
	})

	t.Run("an upstream failure", func(t *testing.T) {
		env.up.handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			writeUpstreamError(w, http.StatusInternalServerError, "server_error", "The server had an error.")
		})
		resp, wall := obsChat(t, env.key.Key, chatBody(publicModel, ""), http.Header{"X-Arcane-Test": {"obs-failure"}})
		if resp.Status != http.StatusBadGateway {
			t.Fatalf("status %d, want 502; %s", resp.Status, resp.Body)
		}
		entry := line(t, "obs-failure", resp, http.StatusBadGateway)
		if entry["arcane_outcome"] != "upstream_error" {
			t.Errorf("arcane_outcome %#v, want upstream_error", entry["arcane_outcome"])
		}
		if v, ok := entry["arcane_ttft"]; ok {
			t.Errorf("arcane_ttft is %#v for an answer never delivered, want no such field", v)
		}
		if up := seconds(t, entry, "arcane_upstream_duration"); up <= 0 || up > wall.Seconds() {
			t.Errorf("arcane_upstream_duration %vs, want more than 0, at most the request's %v", up, wall)
		}
		if entry["arcane_cost"] != "0.000000" {
			t.Errorf("arcane_cost %#v, want 0.000000", entry["arcane_cost"])
		}
		for _, k := range []string{"arcane_prompt_tokens", "arcane_cached_tokens", "arcane_completion_tokens", "arcane_reasoning_tokens"} {
			if v, ok := entry[k]; ok && v != float64(0) {
				t.Errorf("%s is %#v for an answer never delivered, want none or 0", k, v)
			}
		}
	})
}
