package caddymodule

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcaneapi/caddy-arcane/billing"
	"github.com/arcaneapi/caddy-arcane/upstream"
)

// metricsNamespace prefixes every arcane metric: caddy_arcane_*.
const metricsNamespace = "caddy_arcane"

// metrics are arcane's Prometheus metrics for one config, registered on
// Caddy's per-config registry (served by the admin endpoint's /metrics and
// by the metrics handler), as Caddy's own modules do: a reload registers a
// fresh set, so counters restart from zero with the config.
//
// Labels are bounded by the catalog: the public model (only models of the
// catalog; "" for a request whose model is not), the deployment name, and
// fixed vocabularies (outcome, code, kind, reason, state). No key, account
// or free text is ever a label.
type metrics struct {
	requests   *prometheus.CounterVec
	tokens     *prometheus.CounterVec
	cost       *prometheus.CounterVec
	ttft       *prometheus.HistogramVec
	upstream   *prometheus.HistogramVec
	overhead   prometheus.Histogram
	attempts   *prometheus.CounterVec
	rejections *prometheus.CounterVec
	commit     prometheus.Histogram
	batch      prometheus.Histogram

	// byModel holds each catalog model's series, made once, so that the
	// common path finds them without hashing label values.
	byModel map[*upstream.Model]*modelMetrics
}

// modelMetrics are one model's series.
type modelMetrics struct {
	ok                                                prometheus.Counter // requests_total{outcome="ok",code="200"}
	prompt, cached, cacheWrite, completion, reasoning prometheus.Counter
	cost                                              prometheus.Counter
	byDeployment                                      map[*upstream.Deployment]*deploymentMetrics
}

// deploymentMetrics are one deployment's series.
type deploymentMetrics struct {
	ttft, upstream prometheus.Observer
	ok, failed     prometheus.Counter
}

// latencyBuckets span a millisecond to ten minutes: time to first token
// and time upstream.
var latencyBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// overheadBuckets span ten microseconds to a second: arcane's own time.
var overheadBuckets = []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}

// newMetrics makes arcane's metrics and registers them, with the collector
// of the app's live state, on reg.
func newMetrics(reg prometheus.Registerer, a *App) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "requests_total",
			Help: "Chat completion requests by public model, outcome and HTTP status.",
		}, []string{"model", "outcome", "code"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "tokens_total",
			Help: "Tokens delivered by public model and kind (prompt, cached, cache_write, completion, reasoning); cached and cache_write are parts of prompt, reasoning of completion.",
		}, []string{"model", "kind"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "cost_dollars_total",
			Help: "Dollars charged to balances, by public model.",
		}, []string{"model"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "time_to_first_token_seconds",
			Help:    "Time from the proxy's start to the answer's first byte at the client, by public model and deployment.",
			Buckets: latencyBuckets,
		}, []string{"model", "deployment"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "upstream_duration_seconds",
			Help:    "Time spent in calls to deployments per request, failed attempts included, by public model and the deployment that served it.",
			Buckets: latencyBuckets,
		}, []string{"model", "deployment"}),
		overhead: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "gateway_overhead_seconds",
			Help:    "arcane's own time per forwarded request: the request's whole time in arcane's handlers, settlement included, minus its time upstream.",
			Buckets: overheadBuckets,
		}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "upstream_attempts_total",
			Help: "Calls to deployments by public model, deployment and result: ok (an answer was delivered), failed (the request moved on or failed there), client_closed (the client left before an answer).",
		}, []string{"model", "deployment", "result"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "rejections_total",
			Help: "Requests refused before reaching a provider, by reason: invalid_api_key, account_disabled, rate_limit_requests, rate_limit_tokens, insufficient_balance, gateway_error.",
		}, []string{"reason"}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "ledger_commit_seconds",
			Help:    "Time to make one batch of settlements durable (one write to the settlement journal).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "ledger_batch_size",
			Help:    "Settlements per durable batch (group commit).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096},
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.tokens, m.cost, m.ttft, m.upstream, m.overhead,
		m.attempts, m.rejections, m.commit, m.batch, stateCollector{a}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.byModel = make(map[*upstream.Model]*modelMetrics)
	for _, model := range a.catalog.Models() {
		id := model.ID
		mm := &modelMetrics{
			ok:     m.requests.WithLabelValues(id, "ok", "200"),
			prompt: m.tokens.WithLabelValues(id, "prompt"), cached: m.tokens.WithLabelValues(id, "cached"),
			cacheWrite: m.tokens.WithLabelValues(id, "cache_write"),
			completion: m.tokens.WithLabelValues(id, "completion"), reasoning: m.tokens.WithLabelValues(id, "reasoning"),
			cost:         m.cost.WithLabelValues(id),
			byDeployment: make(map[*upstream.Deployment]*deploymentMetrics, len(model.Deployments)),
		}
		for _, d := range model.Deployments {
			mm.byDeployment[d] = &deploymentMetrics{
				ttft: m.ttft.WithLabelValues(id, d.Name()), upstream: m.upstream.WithLabelValues(id, d.Name()),
				ok: m.attempts.WithLabelValues(id, d.Name(), "ok"), failed: m.attempts.WithLabelValues(id, d.Name(), "failed"),
			}
		}
		m.byModel[model] = mm
	}
	return m, nil
}

// observeCommit is the store's commit observer.
func (m *metrics) observeCommit(batch int, took time.Duration) {
	m.commit.Observe(took.Seconds())
	m.batch.Observe(float64(batch))
}

// reject counts a request refused before any provider call.
func (m *metrics) reject(reason string) {
	if m != nil {
		m.rejections.WithLabelValues(reason).Inc()
	}
}

// finish records a chat completion once every handler is done with it,
// settlement included.
func (m *metrics) finish(c *call, now time.Time) {
	if m == nil || c.Status == 0 {
		return // not a chat completion
	}
	mm := m.byModel[c.Model]
	switch {
	case mm != nil && c.Status == 200 && c.Outcome == "ok":
		mm.ok.Inc()
	case mm != nil:
		m.requests.WithLabelValues(c.Model.ID, c.Outcome, strconv.Itoa(c.Status)).Inc()
	default:
		// Not a model of the catalog: its id is the client's free text.
		m.requests.WithLabelValues("", c.Outcome, strconv.Itoa(c.Status)).Inc()
	}
	x := c.Exchange
	if x == nil || mm == nil {
		return
	}
	for _, t := range x.Tries {
		if dm := mm.byDeployment[t.Deployment]; dm != nil {
			dm.failed.Inc()
		}
	}
	dm := mm.byDeployment[x.Deployment]
	if extra := x.Attempts - len(x.Tries); extra > 0 && dm != nil {
		switch {
		case x.Delivered:
			dm.ok.Add(float64(extra))
		case x.Outcome == upstream.OutcomeClientClosed:
			// The client left before the deployment answered: no
			// verdict on it, as its circuit has none.
			m.attempts.WithLabelValues(c.Model.ID, x.Deployment.Name(), "client_closed").Add(float64(extra))
		default:
			dm.failed.Add(float64(extra))
		}
	}
	if x.Attempts > 0 && dm != nil {
		dm.upstream.Observe(x.Upstream.Seconds())
	}
	m.overhead.Observe(max(now.Sub(c.Start)-x.Upstream, 0).Seconds())
	if !x.Delivered {
		return
	}
	if dm != nil {
		dm.ttft.Observe(x.FirstByte.Seconds())
	}
	u := x.Usage
	mm.prompt.Add(float64(u.PromptTokens))
	mm.cached.Add(float64(u.CachedTokens))
	mm.cacheWrite.Add(float64(u.CacheWriteTokens))
	mm.completion.Add(float64(u.CompletionTokens))
	mm.reasoning.Add(float64(u.ReasoningTokens))
	if c.Charged > 0 {
		mm.cost.Add(float64(c.Charged) / float64(billing.Dollar))
	}
}

// stateCollector reports the app's live state when scraped: each
// deployment's circuit, requests in flight and latency estimate, and the
// balance holds open.
type stateCollector struct{ a *App }

var (
	descState = prometheus.NewDesc(metricsNamespace+"_deployment_state",
		"A deployment's circuit: 1 for its current state (closed, open, half_open), 0 for the others.",
		[]string{"model", "deployment", "state"}, nil)
	descInFlight = prometheus.NewDesc(metricsNamespace+"_deployment_in_flight",
		"Requests a deployment is serving now.", []string{"model", "deployment"}, nil)
	descLatency = prometheus.NewDesc(metricsNamespace+"_deployment_latency_seconds",
		"A deployment's moving average of time to first byte, as selection uses it (0 until its first answer).",
		[]string{"model", "deployment"}, nil)
	descHolds = prometheus.NewDesc(metricsNamespace+"_holds_open",
		"Balance holds open: requests in flight that reserved money.", nil, nil)
	descBacklog = prometheus.NewDesc(metricsNamespace+"_ledger_backlog",
		"Settlements waiting for the disk now. Over 1024, new chat requests wait for it to come down to 256 before they are admitted.", nil, nil)
	descThrottled = prometheus.NewDesc(metricsNamespace+"_ledger_throttled_total",
		"Chat requests that waited at admission for the settlement backlog to come down (since the storage was opened).", nil, nil)
)

func (stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descState
	ch <- descInFlight
	ch <- descLatency
	ch <- descHolds
	ch <- descBacklog
	ch <- descThrottled
}

func (s stateCollector) Collect(ch chan<- prometheus.Metric) {
	now := healthNow()
	for _, m := range s.a.catalog.Models() {
		for _, d := range m.Deployments {
			snap := d.Health.Snapshot(now)
			for _, st := range []upstream.State{upstream.StateClosed, upstream.StateOpen, upstream.StateHalfOpen} {
				v := 0.0
				if snap.State == st {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, m.ID, d.Name(), st.String())
			}
			ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(snap.InFlight), m.ID, d.Name())
			ch <- prometheus.MustNewConstMetric(descLatency, prometheus.GaugeValue, snap.Latency.Seconds(), m.ID, d.Name())
		}
	}
	if s.a.db != nil {
		ch <- prometheus.MustNewConstMetric(descHolds, prometheus.GaugeValue, float64(s.a.bank().OpenHolds()))
		st := s.a.db.store.SettleStats()
		ch <- prometheus.MustNewConstMetric(descBacklog, prometheus.GaugeValue, float64(st.Backlog))
		ch <- prometheus.MustNewConstMetric(descThrottled, prometheus.CounterValue, float64(st.Throttled))
	}
}
