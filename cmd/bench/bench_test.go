package main

import (
	"encoding/json"
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
			{Seconds: 1, WallSeconds: 1, Requests: 40, Completed: 50, CPUSeconds: 1, latency: lat(40, 2*time.Millisecond)},
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
		p := caddyfileParams{Admin: 20190, Plain16: 20191, Plain200: 20192, Arcane: 20193,
			Mock16: "127.0.0.1:20194", Mock200: "127.0.0.1:20195",
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
			`"127.0.0.1:20195"`, `"bench-16"`, `"bench-200"`, `"grace_period":1000000000`} {
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
