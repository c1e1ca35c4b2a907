package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/arcaneapi/caddy-arcane/caddymodule"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", ms(7), 50, 7 * time.Millisecond},
		{"one p99", ms(7), 99, 7 * time.Millisecond},
		{"two p50", ms(1, 2), 50, time.Millisecond},
		{"two p99", ms(1, 2), 99, 2 * time.Millisecond},
		{"four p50", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"hundred p50", hundred, 50, 50 * time.Millisecond},
		{"hundred p99", hundred, 99, 99 * time.Millisecond},
		{"hundred p100", hundred, 100, 100 * time.Millisecond},
		{"tiny p", hundred, 0.001, time.Millisecond},
	} {
		if got := percentile(tc.sorted, tc.p); got != tc.want {
			t.Errorf("%s: percentile(p%v) = %v, want %v", tc.name, tc.p, got, tc.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	lat := func(n int, d time.Duration) []time.Duration { return slices.Repeat([]time.Duration{d}, n) }
	s := &scenarioResult{Scenario: nonStreamScenario(4), Targets: []*targetResult{
		{Target: targetDirect, Windows: []*window{{Seconds: 1, WallSeconds: 1, Requests: 100, Completed: 100, CPUSeconds: 0.5, LoadCPUSeconds: 1, latency: lat(100, time.Millisecond)}}},
		{Target: targetCaddy, Windows: []*window{
			{Seconds: 1, WallSeconds: 1, Requests: 40, Completed: 50, CPUSeconds: 1, latency: append(lat(39, 2*time.Millisecond), 9*time.Millisecond)},
			{Seconds: 1, WallSeconds: 1, Requests: 60, Completed: 50, Errors: 2, FirstError: "boom", CPUSeconds: 1, latency: lat(60, 2*time.Millisecond)},
		}},
		{Target: targetArcane, Windows: []*window{{Seconds: 2, WallSeconds: 2, Requests: 50, Completed: 50, CPUSeconds: 1, latency: lat(50, 5*time.Millisecond)}}},
	}}
	s.summarize()
	caddyT := s.Targets[1]
	if caddyT.ReqPerSec != 50 || caddyT.ReqPerSecMin != 40 || caddyT.ReqPerSecMax != 60 {
		t.Errorf("caddy req/s %v (%v..%v), want 50 (40..60)", caddyT.ReqPerSec, caddyT.ReqPerSecMin, caddyT.ReqPerSecMax)
	}
	if caddyT.Attempts != 102 || caddyT.Errors != 2 || caddyT.FirstError != "boom" {
		t.Errorf("caddy errors %d/%d %q", caddyT.Errors, caddyT.Attempts, caddyT.FirstError)
	}
	if caddyT.CPUMsPer1kReq != 20000 || caddyT.ServerCPUPct != 100 {
		t.Errorf("caddy CPU %v ms/1k req at %v%%, want 20000 at 100%%", caddyT.CPUMsPer1kReq, caddyT.ServerCPUPct)
	}
	if w := caddyT.Windows; w[0].LatencyP99Ms != 9 || w[1].LatencyP99Ms != 2 || caddyT.LatencyP99Ms != 2 {
		t.Errorf("caddy p99 %v ms over its windows' %v and %v, want 2 over 9 and 2", caddyT.LatencyP99Ms, w[0].LatencyP99Ms, w[1].LatencyP99Ms)
	}
	if len(s.Compared) != 2 {
		t.Fatalf("compared %+v", s.Compared)
	}
	c := s.Compared[1]
	if c.Target != targetArcane || c.Baseline != targetCaddy || c.ReqPerSecRatio != 0.5 || c.LatencyP50AddMs != 3 || c.CPURatio != 1 {
		t.Errorf("arcane vs caddy: %+v", c)
	}
	r := &report{Scenarios: []*scenarioResult{s}}
	if bad := r.tooManyErrors(); len(bad) != 1 || !strings.Contains(bad[0], "caddy") {
		t.Errorf("tooManyErrors = %q, want the caddy target only", bad)
	}
}

func TestParseCPUList(t *testing.T) {
	got, err := parseCPUList("0-2,5,7-8\n")
	if err != nil || !slices.Equal(got, []int{0, 1, 2, 5, 7, 8}) {
		t.Errorf("parseCPUList = %v, %v", got, err)
	}
	for _, bad := range []string{"", "x", "3-1", "1-"} {
		if _, err := parseCPUList(bad); err == nil {
			t.Errorf("parseCPUList(%q) accepted", bad)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime ...
	line := []byte("4242 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 8 0\n")
	got, err := parseStatCPU(line)
	if err != nil || got != 1750*time.Millisecond {
		t.Errorf("parseStatCPU = %v, %v; want 1.75s", got, err)
	}
	if _, err := parseStatCPU([]byte("4242 (x) S 1 2")); err == nil {
		t.Error("parseStatCPU accepted a short line")
	}
}

// TestCaddyfile checks that the generated Caddyfile adapts, with both
// stock sites and the arcane site, and that the arcane app it configures
// provisions (bbolt in a temp dir, providers, models).
func TestCaddyfile(t *testing.T) {
	for _, idle := range []int{0, 128} {
		p := caddyfileParams{Admin: 20190, Plain16: 20191, Plain200: 20192, PlainSlow: 20196, Arcane: 20193,
			Mock16: "127.0.0.1:20194", Mock200: "127.0.0.1:20195", MockSlow: "127.0.0.1:20197",
			Storage: filepath.Join(t.TempDir(), "bench.db"), IdleConns: idle}
		src := p.caddyfile()
		cfgJSON, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
		if err != nil {
			t.Fatalf("adapting:\n%s\n%v", src, err)
		}
		for _, w := range warnings {
			t.Errorf("warning: %s", w)
		}
		var cfg caddy.Config
		if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`"arcane_auth"`, `"arcane_limit"`, `"arcane_balance"`, `"arcane_proxy"`, `"reverse_proxy"`, `"127.0.0.1:20194"`,
			`"127.0.0.1:20195"`, `"127.0.0.1:20197"`, `"bench-16"`, `"bench-200"`, `"bench-slow"`, `"grace_period":1000000000`} {
			if !strings.Contains(string(cfgJSON), want) {
				t.Errorf("adapted config lacks %s:\n%s", want, cfgJSON)
			}
		}
		if got := strings.Contains(string(cfgJSON), `"max_idle_conns_per_host":128`); got != (idle > 0) {
			t.Errorf("idle conns %d: max_idle_conns_per_host in config = %v", idle, got)
		}
		if err := caddy.Validate(&cfg); err != nil {
			t.Fatalf("validating: %v", err)
		}
	}
}

// goalScenario is a summarized scenario of the three targets with the
// given numbers, for the goal checks.
func goalScenario(name string, rate float64, direct, caddy, arcane targetResult) *scenarioResult {
	s := &scenarioResult{Scenario: scenario{Name: name, Rate: rate}}
	for _, t := range []targetResult{direct, caddy, arcane} {
		t.Attempts = max(t.Attempts, 1000)
		if t.ReqPerSec == 0 {
			t.ReqPerSec = 100
		}
		s.Targets = append(s.Targets, &t)
	}
	s.Targets[0].Target, s.Targets[1].Target, s.Targets[2].Target = targetDirect, targetCaddy, targetArcane
	return s
}

func TestGoalNonStream(t *testing.T) {
	for _, tc := range []struct {
		name              string
		caddy, arcane     targetResult
		wantRate, wantCPU string
	}{
		{name: "equal", caddy: targetResult{ReqPerSec: 1000, CPUMsPer1kReq: 100}, arcane: targetResult{ReqPerSec: 1000, CPUMsPer1kReq: 100},
			wantRate: resultPass, wantCPU: resultPass},
		{name: "within", caddy: targetResult{ReqPerSec: 1000, CPUMsPer1kReq: 100}, arcane: targetResult{ReqPerSec: 901, CPUMsPer1kReq: 109},
			wantRate: resultPass, wantCPU: resultPass},
		{name: "slower and costlier", caddy: targetResult{ReqPerSec: 1000, CPUMsPer1kReq: 100}, arcane: targetResult{ReqPerSec: 899, CPUMsPer1kReq: 111},
			wantRate: resultFail, wantCPU: resultFail},
		{name: "faster than caddy", caddy: targetResult{ReqPerSec: 1000, CPUMsPer1kReq: 100}, arcane: targetResult{ReqPerSec: 2000, CPUMsPer1kReq: 50},
			wantRate: resultPass, wantCPU: resultPass},
		{name: "no CPU from /proc", caddy: targetResult{ReqPerSec: 1000, CPUMsPer1kReq: -1}, arcane: targetResult{ReqPerSec: 1000, CPUMsPer1kReq: -1},
			wantRate: resultPass, wantCPU: resultNotMeasured},
		{name: "arcane errors", caddy: targetResult{ReqPerSec: 1000, CPUMsPer1kReq: 100},
			arcane:   targetResult{ReqPerSec: 5000, CPUMsPer1kReq: 10, Attempts: 1000, Errors: 20, ErrorRate: 0.02},
			wantRate: resultFail, wantCPU: resultFail},
		{name: "caddy errors", caddy: targetResult{ReqPerSec: 1000, CPUMsPer1kReq: 100, Attempts: 1000, Errors: 20, ErrorRate: 0.02},
			arcane:   targetResult{ReqPerSec: 1000, CPUMsPer1kReq: 100},
			wantRate: resultNotMeasured, wantCPU: resultNotMeasured},
	} {
		s := goalScenario(scenarioNonStream, 0, targetResult{ReqPerSec: 5000, CPUMsPer1kReq: 40}, tc.caddy, tc.arcane)
		if g := goalNonStreamRate(s); g.Result != tc.wantRate {
			t.Errorf("%s: req/s goal %+v, want %s", tc.name, g, tc.wantRate)
		}
		if g := goalNonStreamCPU(s); g.Result != tc.wantCPU {
			t.Errorf("%s: CPU goal %+v, want %s", tc.name, g, tc.wantCPU)
		}
	}
}

func TestGoalStreamCPU(t *testing.T) {
	direct := targetResult{CPUUsPerChunk: 10}
	for _, tc := range []struct {
		caddy, arcane float64
		want          string
	}{
		{20, 21.9, resultPass},
		{20, 22.1, resultFail},
		{20, 10, resultPass},
		{20, -1, resultNotMeasured},
		{0, 10, resultNotMeasured},
	} {
		s := goalScenario(scenarioStream, 0, direct, targetResult{CPUUsPerChunk: tc.caddy}, targetResult{CPUUsPerChunk: tc.arcane})
		if g := goalStreamCPU(s); g.Result != tc.want {
			t.Errorf("caddy %v µs, arcane %v µs: %+v, want %s", tc.caddy, tc.arcane, g, tc.want)
		}
	}
}

func TestGoalOpenLoop(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		direct, caddy, arcane float64 // p99 in ms
		late                  int     // arcane's missed starts of 1000
		wantP99, wantTTFB     string
	}{
		// direct 1.0, caddy adds 0.5: arcane may add 0.6 (p99 0.1 more
		// than caddy's) for latency, 0.65 for TTFB.
		{name: "same as caddy", direct: 1, caddy: 1.5, arcane: 1.5, wantP99: resultPass, wantTTFB: resultPass},
		{name: "within both", direct: 1, caddy: 1.5, arcane: 1.59, wantP99: resultPass, wantTTFB: resultPass},
		{name: "within TTFB's slack only", direct: 1, caddy: 1.5, arcane: 1.62, wantP99: resultFail, wantTTFB: resultPass},
		{name: "beyond both", direct: 1, caddy: 1.5, arcane: 1.7, wantP99: resultFail, wantTTFB: resultFail},
		{name: "faster than caddy", direct: 1, caddy: 3, arcane: 2, wantP99: resultPass, wantTTFB: resultPass},
		{name: "schedule missed", direct: 1, caddy: 1.5, arcane: 1.5, late: 11, wantP99: resultNotMeasured, wantTTFB: resultNotMeasured},
		{name: "a few late starts", direct: 1, caddy: 1.5, arcane: 1.5, late: 10, wantP99: resultPass, wantTTFB: resultPass},
	} {
		open := func(p99 float64, late int) targetResult {
			return targetResult{LatencyP99Ms: p99, TTFBP99Ms: p99, Scheduled: 1000, Late: late}
		}
		s := goalScenario(scenarioNonStreamOpen, 200, open(tc.direct, 0), open(tc.caddy, 0), open(tc.arcane, tc.late))
		if g := goalOpenP99(s); g.Result != tc.wantP99 {
			t.Errorf("%s: added p99 %+v, want %s", tc.name, g, tc.wantP99)
		}
		if g := goalOpenTTFB(s); g.Result != tc.wantTTFB {
			t.Errorf("%s: added TTFB p99 %+v, want %s", tc.name, g, tc.wantTTFB)
		}
	}

	// A near-full server CPU is noted, and decides nothing.
	busy := func(p99, cpu float64) targetResult {
		return targetResult{LatencyP99Ms: p99, TTFBP99Ms: p99, Scheduled: 1000, ServerCPUPct: cpu}
	}
	s := goalScenario(scenarioStreamOpen, 100, busy(1, 30), busy(1.5, 50), busy(1.5, 65))
	if g := goalOpenTTFB(s); g.Result != resultPass || !strings.Contains(g.Note, "near full") {
		t.Errorf("busy server: %+v, want PASS with a note", g)
	}
	s = goalScenario(scenarioStreamOpen, 100, busy(1, 30), busy(1.5, 50), busy(1.5, 55))
	if g := goalOpenTTFB(s); g.Note != "" {
		t.Errorf("server at 85%%: note %q", g.Note)
	}
}

func TestGoalSettle(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    *settleResult
		want string
	}{
		{"not run", nil, resultNotMeasured},
		{"nothing settled", &settleResult{}, resultNotMeasured},
		{"fast", &settleResult{Settlements: 75000, PerSec: 25000}, resultPass},
		{"exactly", &settleResult{Settlements: 60000, PerSec: 20000}, resultPass},
		{"slow", &settleResult{Settlements: 45000, PerSec: 15000}, resultFail},
		{"fast with errors", &settleResult{Settlements: 75000, PerSec: 25000, Errors: 1000}, resultFail},
	} {
		if g := goalSettle(tc.s); g.Result != tc.want {
			t.Errorf("%s: %+v, want %s", tc.name, g, tc.want)
		}
	}
}

// TestGoalsUnmeasured checks that a run that measured nothing passes
// nothing, and that every goal of the issue has its row.
func TestGoalsUnmeasured(t *testing.T) {
	goals := (&report{}).goals()
	if len(goals) != 8 {
		t.Errorf("%d goals, want 8", len(goals))
	}
	for _, g := range goals {
		if g.Result != resultNotMeasured {
			t.Errorf("%s: %s with nothing measured", g.Name, g.Result)
		}
	}
	var b strings.Builder
	printGoals(&b, goals)
	if !strings.Contains(b.String(), "0 PASS, 0 FAIL, 8 not measured") {
		t.Errorf("printGoals:\n%s", b.String())
	}
}

// TestGoalsFromSummary runs the closed-loop goals on windows through
// summarize, as a run does.
func TestGoalsFromSummary(t *testing.T) {
	win := func(requests int, cpu float64) []*window {
		return []*window{{Seconds: 1, WallSeconds: 1, Requests: requests, Completed: requests, CPUSeconds: cpu,
			latency: slices.Repeat([]time.Duration{time.Millisecond}, requests)}}
	}
	s := &scenarioResult{Scenario: nonStreamScenario(64), Targets: []*targetResult{
		{Target: targetDirect, Windows: win(4000, 0.2)},
		{Target: targetCaddy, Windows: win(1000, 0.5)},
		{Target: targetArcane, Windows: win(950, 0.5)}, // x0.95 req/s, x1.05 CPU/req
	}}
	s.summarize()
	r := &report{Scenarios: []*scenarioResult{s}}
	goals := r.goals()
	if goals[0].Result != resultPass || goals[1].Result != resultPass {
		t.Errorf("closed-loop goals %+v %+v, want both PASS", goals[0], goals[1])
	}
	if goals[2].Result != resultNotMeasured {
		t.Errorf("open-loop goal %+v without the scenario", goals[2])
	}
}

// TestOpenLoop checks the open-loop generator against a server that is
// slower than the schedule's interval: the starts keep to the schedule
// (requests overlap), and every request counts.
func TestOpenLoop(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(30 * time.Millisecond)
		w.Write([]byte(`{"choices":[{"finish_reason":"stop"}]}`))
	}))
	defer srv.Close()
	b := &bencher{client: srv.Client()}
	sc := nonStreamOpenScenario(200)
	start := time.Now()
	w := b.openLoop(context.Background(), sc, target{name: targetDirect, url: srv.URL + chatPath}, start, 250*time.Millisecond)
	took := time.Since(start)
	if w.Scheduled != 50 || w.Requests != 50 || w.Completed != 50 || w.Errors != 0 || len(w.latency) != 50 {
		t.Fatalf("window %+v, want 50 requests started and answered (first error %q)", w, w.FirstError)
	}
	// In a closed loop of one, 50 requests of 30ms would take 1.5s.
	if took > time.Second {
		t.Errorf("took %s: the starts waited for the answers", took)
	}
	if w.Late > 5 {
		t.Errorf("%d of 50 starts missed (latest %.1fms)", w.Late, w.MaxLateMs)
	}
}

func TestParseStatusKiB(t *testing.T) {
	status := []byte("Name:\tcaddy\nVmPeak:\t  900000 kB\nVmRSS:\t   45678 kB\nThreads:\t9\n")
	if got, err := parseStatusKiB(status, "VmRSS:"); err != nil || got != 45678 {
		t.Errorf("VmRSS = %d, %v; want 45678", got, err)
	}
	for _, bad := range []string{"Name:\tx\n", "VmRSS:\t12 MB\n", "VmRSS:\tx kB\n"} {
		if _, err := parseStatusKiB([]byte(bad), "VmRSS:"); err == nil {
			t.Errorf("parseStatusKiB(%q) accepted", bad)
		}
	}
}

func TestGoalSlowStreams(t *testing.T) {
	slow := func(streams int, arcane slowTarget) *slowResult {
		arcane.Target = targetArcane
		return &slowResult{Streams: streams, Targets: []*slowTarget{
			{Target: targetDirect, Opened: streams, OpenAtEnd: streams, KiBPerStream: 10},
			{Target: targetCaddy, Opened: streams, OpenAtEnd: streams, KiBPerStream: 40},
			&arcane,
		}}
	}
	for _, tc := range []struct {
		name string
		s    *slowResult
		want string
	}{
		{"not run", nil, resultNotMeasured},
		{"skipped", &slowResult{Streams: 5000, Skipped: "RLIMIT_NOFILE 1024"}, resultNotMeasured},
		{"small", slow(5000, slowTarget{Opened: 5000, OpenAtEnd: 5000, KiBPerStream: 50}), resultPass},
		{"at the limit", slow(5000, slowTarget{Opened: 5000, OpenAtEnd: 5000, KiBPerStream: 64}), resultPass},
		{"large", slow(5000, slowTarget{Opened: 5000, OpenAtEnd: 5000, KiBPerStream: 65}), resultFail},
		{"errors", slow(5000, slowTarget{Opened: 5000, OpenAtEnd: 4999, Errors: 1, KiBPerStream: 50}), resultFail},
		{"not all open", slow(5000, slowTarget{Opened: 5000, OpenAtEnd: 4000, KiBPerStream: 50}), resultFail},
		{"no /proc", slow(5000, slowTarget{Opened: 5000, OpenAtEnd: 5000, KiBPerStream: -1}), resultNotMeasured},
		{"too few streams", slow(1000, slowTarget{Opened: 1000, OpenAtEnd: 1000, KiBPerStream: 50}), resultNotMeasured},
	} {
		if g := goalSlowStreams(tc.s); g.Result != tc.want {
			t.Errorf("%s: %+v, want %s", tc.name, g, tc.want)
		}
	}
}

func TestPrintByRound(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	win := func(round int, ttfb []time.Duration) *window {
		return &window{Round: round, Seconds: 1, WallSeconds: 1, Requests: len(ttfb), Completed: len(ttfb), Events: 200,
			CPUSeconds: 0.1, latency: ms(300), ttfb: ttfb}
	}
	s := &scenarioResult{Scenario: streamOpenScenario(100), Targets: []*targetResult{
		{Target: targetDirect, Windows: []*window{win(1, ms(1)), win(2, ms(2))}},
		{Target: targetCaddy, Windows: []*window{win(1, ms(3)), win(2, ms(4))}},
		{Target: targetArcane, Windows: []*window{win(1, ms(5)), win(2, ms(1, 6))}},
	}}
	s.summarize()
	var out strings.Builder
	s.print(&out)
	want := "  TTFB p99 by round: direct 1.00 2.00; caddy 3.00 4.00; arcane 5.00 6.00 (ms)\n"
	if !strings.Contains(out.String(), want) {
		t.Fatalf("output:\n%s\nwant the line %q", out.String(), want)
	}
}
