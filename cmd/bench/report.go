package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// machine is what a run or a soak ran on, as -json writes it.
type machine struct {
	Go         string `json:"go"`
	OS         string `json:"os"`
	Caddy      string `json:"caddy"`
	CPUs       int    `json:"cpus"`
	Pinned     bool   `json:"pinned"`
	PinNote    string `json:"pinning"`
	LoadCPUs   string `json:"load_generator_cpus"`
	ServerCPUs string `json:"server_cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
}

func newMachine(pin pinning, env *environment) machine {
	return machine{
		Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH, Caddy: env.caddyVersion,
		CPUs: pin.cpus, Pinned: pin.on, PinNote: pin.note, LoadCPUs: pin.selfAllowed, ServerCPUs: env.serverAllowed,
		GOMAXPROCS: runtime.GOMAXPROCS(0),
	}
}

// report is a whole run, as -json writes it.
type report struct {
	machine
	MockProcs int `json:"mock_gomaxprocs"`
	// CaddyIdleConns is the stock reverse_proxy's
	// keepalive_idle_conns_per_host; 0 leaves Caddy's default.
	CaddyIdleConns int `json:"caddy_idle_conns_per_host"`
	// FileLimit is the soft RLIMIT_NOFILE of this process and its children.
	FileLimit    uint64 `json:"file_limit"`
	Rounds       int    `json:"rounds"`
	OpenRounds   int    `json:"open_rounds"`
	Duration     string `json:"duration"`
	OpenDuration string `json:"open_duration"`
	Warmup       string `json:"warmup"`
	Elapsed      string `json:"elapsed"`

	Scenarios []*scenarioResult `json:"scenarios"`
	Slow      *slowResult       `json:"slow_streams,omitempty"`
	Settle    *settleResult     `json:"settlement,omitempty"`
	// Goals are issue 9's targets, judged on the numbers above.
	Goals []goal `json:"goals"`
}

// scenarioResult is one scenario on every target.
type scenarioResult struct {
	Scenario scenario        `json:"scenario"`
	Rounds   int             `json:"rounds"`
	Duration float64         `json:"duration_seconds"`
	Targets  []*targetResult `json:"targets"`
	// Compared holds caddy against direct, and arcane against caddy.
	Compared []comparison `json:"compared"`
	// Profiles are Caddy CPU profiles taken with -profile.
	Profiles []string `json:"profiles,omitempty"`
}

// targetResult sums up a target's windows.
type targetResult struct {
	Target  string    `json:"target"`
	URL     string    `json:"url"`
	Windows []*window `json:"windows"`

	// ReqPerSec is completed requests (or streams) per second over all
	// windows; Min and Max are the slowest and fastest window.
	ReqPerSec    float64 `json:"req_per_sec"`
	ReqPerSecMin float64 `json:"req_per_sec_min"`
	ReqPerSecMax float64 `json:"req_per_sec_max"`
	// Stream only: data events (chunks, not [DONE]) per second and per stream.
	EventsPerSec    float64 `json:"events_per_sec,omitempty"`
	EventsPerStream float64 `json:"events_per_stream,omitempty"`
	// Latency is the whole request, or the whole stream.
	LatencyP50Ms float64 `json:"latency_p50_ms"`
	LatencyP99Ms float64 `json:"latency_p99_ms"`
	// TTFB is the time to the first data event (stream only).
	TTFBP50Ms float64 `json:"ttfb_p50_ms,omitempty"`
	TTFBP99Ms float64 `json:"ttfb_p99_ms,omitempty"`

	Attempts   int     `json:"attempts"`
	Errors     int     `json:"errors"`
	ErrorRate  float64 `json:"error_rate"`
	FirstError string  `json:"first_error,omitempty"`

	// Open loop only: the starts the schedule made, how many of them were
	// missed (a whole interval late or more), and the latest one.
	Scheduled int     `json:"scheduled,omitempty"`
	Late      int     `json:"late_starts,omitempty"`
	MaxLateMs float64 `json:"max_late_ms,omitempty"`

	// CPU of the server process (the mock for direct, Caddy otherwise):
	// per 1000 requests, and per forwarded chunk for streams. -1 when
	// /proc could not be read.
	CPUSeconds float64 `json:"cpu_seconds"`
	// ServerCPUPct and LoadCPUPct are how busy the server process and the
	// load generator were, in percent of one CPU, while measuring.
	ServerCPUPct  float64 `json:"server_cpu_pct"`
	LoadCPUPct    float64 `json:"load_cpu_pct"`
	CPUMsPer1kReq float64 `json:"cpu_ms_per_1k_req"`
	CPUUsPerChunk float64 `json:"cpu_us_per_chunk,omitempty"`
}

// comparison is one target against a baseline: ratios for rates and CPU,
// differences for latencies. Closed-loop scenarios compare caddy with
// direct and arcane with caddy; open-loop ones compare both with direct,
// their added latencies.
type comparison struct {
	Target          string  `json:"target"`
	Baseline        string  `json:"baseline"`
	ReqPerSecRatio  float64 `json:"req_per_sec_ratio"`
	LatencyP50AddMs float64 `json:"latency_p50_added_ms"`
	LatencyP99AddMs float64 `json:"latency_p99_added_ms"`
	TTFBP50AddMs    float64 `json:"ttfb_p50_added_ms,omitempty"`
	TTFBP99AddMs    float64 `json:"ttfb_p99_added_ms,omitempty"`
	CPURatio        float64 `json:"cpu_ratio"`
}

func (s *scenarioResult) summarize() {
	for _, t := range s.Targets {
		t.summarize(s.Scenario.Stream)
	}
	pairs := [][2]string{{targetCaddy, targetDirect}, {targetArcane, targetCaddy}}
	if s.Scenario.Rate > 0 {
		pairs = [][2]string{{targetCaddy, targetDirect}, {targetArcane, targetDirect}}
	}
	for _, pair := range pairs {
		t, base := s.target(pair[0]), s.target(pair[1])
		if t == nil || base == nil {
			continue
		}
		c := comparison{
			Target: t.Target, Baseline: base.Target,
			ReqPerSecRatio:  ratio(t.ReqPerSec, base.ReqPerSec),
			LatencyP50AddMs: t.LatencyP50Ms - base.LatencyP50Ms,
			LatencyP99AddMs: t.LatencyP99Ms - base.LatencyP99Ms,
		}
		if s.Scenario.Stream {
			c.TTFBP50AddMs = t.TTFBP50Ms - base.TTFBP50Ms
			c.TTFBP99AddMs = t.TTFBP99Ms - base.TTFBP99Ms
			c.CPURatio = ratio(t.CPUUsPerChunk, base.CPUUsPerChunk)
		} else {
			c.CPURatio = ratio(t.CPUMsPer1kReq, base.CPUMsPer1kReq)
		}
		s.Compared = append(s.Compared, c)
	}
}

// target returns the named target's result, or nil.
func (s *scenarioResult) target(name string) *targetResult {
	for _, t := range s.Targets {
		if t.Target == name {
			return t
		}
	}
	return nil
}

func ratio(a, b float64) float64 {
	if b <= 0 || a < 0 {
		return 0
	}
	return a / b
}

func (t *targetResult) summarize(stream bool) {
	var (
		secs               float64
		requests           int
		events, completedE int64
		completed          int
		latency, ttfb      []time.Duration
		cpuOK              = true
		wall, loadCPU      float64
	)
	t.ReqPerSecMin, t.ReqPerSecMax = math.Inf(1), 0
	for _, w := range t.Windows {
		w.LatencyP99Ms, w.TTFBP99Ms = p99(w.latency), p99(w.ttfb)
		secs += w.Seconds
		requests += w.Requests
		events += w.Events
		completed += w.Completed
		completedE += w.CompletedEvents
		t.Errors += w.Errors
		if t.FirstError == "" {
			t.FirstError = w.FirstError
		}
		t.Scheduled += w.Scheduled
		t.Late += w.Late
		t.MaxLateMs = max(t.MaxLateMs, w.MaxLateMs)
		if w.CPUSeconds < 0 {
			cpuOK = false
		} else {
			t.CPUSeconds += w.CPUSeconds
		}
		wall += w.WallSeconds
		if w.LoadCPUSeconds < 0 || loadCPU < 0 {
			loadCPU = -1
		} else {
			loadCPU += w.LoadCPUSeconds
		}
		latency = append(latency, w.latency...)
		ttfb = append(ttfb, w.ttfb...)
		r := float64(w.Requests) / w.Seconds
		t.ReqPerSecMin, t.ReqPerSecMax = min(t.ReqPerSecMin, r), max(t.ReqPerSecMax, r)
	}
	if len(t.Windows) == 0 || secs == 0 {
		t.ReqPerSecMin = 0
		return
	}
	t.ReqPerSec = float64(requests) / secs
	t.Attempts = completed + t.Errors
	if t.Attempts > 0 {
		t.ErrorRate = float64(t.Errors) / float64(t.Attempts)
	}
	slices.Sort(latency)
	t.LatencyP50Ms, t.LatencyP99Ms = ms(percentile(latency, 50)), ms(percentile(latency, 99))
	if stream {
		slices.Sort(ttfb)
		t.TTFBP50Ms, t.TTFBP99Ms = ms(percentile(ttfb, 50)), ms(percentile(ttfb, 99))
		t.EventsPerSec = float64(events) / secs
		if requests > 0 {
			t.EventsPerStream = float64(events) / float64(requests)
		}
	}
	t.LoadCPUPct = -1
	if loadCPU >= 0 && wall > 0 {
		t.LoadCPUPct = 100 * loadCPU / wall
	}
	switch {
	case !cpuOK:
		t.CPUSeconds, t.CPUMsPer1kReq, t.CPUUsPerChunk, t.ServerCPUPct = -1, -1, -1, -1
	default:
		if wall > 0 {
			t.ServerCPUPct = 100 * t.CPUSeconds / wall
		}
		if completed > 0 {
			t.CPUMsPer1kReq = t.CPUSeconds * 1e3 / float64(completed) * 1e3
		}
		if stream && completedE > 0 {
			t.CPUUsPerChunk = t.CPUSeconds * 1e6 / float64(completedE)
		}
	}
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted durations: the smallest value with at least p% of the values at
// or below it. It returns 0 for no values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (r *report) printHeader(w io.Writer) {
	fmt.Fprintf(w, "arcane bench: %s %s, caddy %s\n", r.Go, r.OS, r.Caddy)
	fmt.Fprintf(w, "CPUs: %d; taskset %s (allowed CPUs: load generator %s, caddy %s)\n",
		r.CPUs, r.PinNote, r.LoadCPUs, r.ServerCPUs)
	fmt.Fprintf(w, "GOMAXPROCS: load generator %d, mocks %d, caddy from its CPU affinity\n", r.GOMAXPROCS, r.MockProcs)
	fmt.Fprintf(w, "rounds: %d x %s per target (open loop: %d x %s), interleaved (direct, caddy, arcane); warm-up %s per target and scenario\n",
		r.Rounds, r.Duration, r.OpenRounds, r.OpenDuration, r.Warmup)
	fmt.Fprintf(w, "open loop: each request starts on schedule in a goroutine of its own; latency from its actual start; a start one interval late is missed\n")
	fmt.Fprintf(w, "CPU: user+system from /proc/<pid>/stat (10 ms ticks); srv = the mock for direct, Caddy for caddy and arcane; gen = this load generator\n")
	idle := "Caddy's default (32)"
	if r.CaddyIdleConns > 0 {
		idle = fmt.Sprint(r.CaddyIdleConns)
	}
	fmt.Fprintf(w, "stock reverse_proxy: keepalive_idle_conns_per_host %s; arcane's provider pool keeps 256; open files limit %d\n", idle, r.FileLimit)
}

func (s *scenarioResult) print(w io.Writer) {
	sc := s.Scenario
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	switch {
	case sc.Rate > 0 && sc.Stream:
		fmt.Fprintf(w, "== stream, open loop: %d-token replies paced 1 ms, %g streams/s started on a fixed schedule\n",
			sc.Tokens, sc.Rate)
		fmt.Fprintln(tw, "target\tstreams/s\tTTFB p50\tTTFB p99\tstream p50\tstream p99\terrors\tmissed starts\tCPU µs/chunk\tsrv CPU\tgen CPU\t")
		for _, t := range s.Targets {
			fmt.Fprintf(tw, "%s\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.Target, t.ReqPerSec,
				fmtMs(t.TTFBP50Ms), fmtMs(t.TTFBP99Ms), fmtMs(t.LatencyP50Ms), fmtMs(t.LatencyP99Ms),
				fmtErrors(t), fmtLate(t), fmtCPU(t.CPUUsPerChunk, 2), fmtPct(t.ServerCPUPct), fmtPct(t.LoadCPUPct))
		}
	case sc.Rate > 0:
		fmt.Fprintf(w, "== non-stream, open loop: %d-token replies, %g req/s started on a fixed schedule\n", sc.Tokens, sc.Rate)
		fmt.Fprintln(tw, "target\treq/s\tp50\tp99\terrors\tmissed starts\tCPU ms/1k req\tsrv CPU\tgen CPU\t")
		for _, t := range s.Targets {
			fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.Target, t.ReqPerSec,
				fmtMs(t.LatencyP50Ms), fmtMs(t.LatencyP99Ms), fmtErrors(t), fmtLate(t),
				fmtCPU(t.CPUMsPer1kReq, 1), fmtPct(t.ServerCPUPct), fmtPct(t.LoadCPUPct))
		}
	case sc.Stream:
		fmt.Fprintf(w, "== stream: %d-token replies paced 1 ms (%d tokens/s), %d concurrent streams, closed loop\n",
			sc.Tokens, streamTPS, sc.Concurrency)
		fmt.Fprintln(tw, "target\tstreams/s\t(min..max)\tevents/s\tev/stream\tTTFB p50\tTTFB p99\tstream p50\tstream p99\terrors\tCPU µs/chunk\tsrv CPU\tgen CPU\t")
		for _, t := range s.Targets {
			fmt.Fprintf(tw, "%s\t%.1f\t(%.0f..%.0f)\t%.0f\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.Target,
				t.ReqPerSec, t.ReqPerSecMin, t.ReqPerSecMax, t.EventsPerSec, t.EventsPerStream,
				fmtMs(t.TTFBP50Ms), fmtMs(t.TTFBP99Ms), fmtMs(t.LatencyP50Ms), fmtMs(t.LatencyP99Ms),
				fmtErrors(t), fmtCPU(t.CPUUsPerChunk, 2), fmtPct(t.ServerCPUPct), fmtPct(t.LoadCPUPct))
		}
	default:
		fmt.Fprintf(w, "== non-stream: %d-token replies, %d concurrent workers, closed loop\n", sc.Tokens, sc.Concurrency)
		fmt.Fprintln(tw, "target\treq/s\t(min..max)\tp50\tp99\terrors\tCPU ms/1k req\tsrv CPU\tgen CPU\t")
		for _, t := range s.Targets {
			fmt.Fprintf(tw, "%s\t%.0f\t(%.0f..%.0f)\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.Target,
				t.ReqPerSec, t.ReqPerSecMin, t.ReqPerSecMax, fmtMs(t.LatencyP50Ms), fmtMs(t.LatencyP99Ms),
				fmtErrors(t), fmtCPU(t.CPUMsPer1kReq, 1), fmtPct(t.ServerCPUPct), fmtPct(t.LoadCPUPct))
		}
	}
	tw.Flush()
	for _, c := range s.Compared {
		var b strings.Builder
		fmt.Fprintf(&b, "  %s vs %s:", c.Target, c.Baseline)
		switch {
		case sc.Rate > 0 && sc.Stream:
			fmt.Fprintf(&b, " added TTFB p50 %s p99 %s, stream p50 %s p99 %s",
				fmtAdd(c.TTFBP50AddMs), fmtAdd(c.TTFBP99AddMs), fmtAdd(c.LatencyP50AddMs), fmtAdd(c.LatencyP99AddMs))
		case sc.Rate > 0:
			fmt.Fprintf(&b, " added p50 %s, p99 %s", fmtAdd(c.LatencyP50AddMs), fmtAdd(c.LatencyP99AddMs))
		case sc.Stream:
			fmt.Fprintf(&b, " streams/s x%.2f, TTFB p50 %s p99 %s, stream p50 %s p99 %s, CPU/chunk %s",
				c.ReqPerSecRatio, fmtAdd(c.TTFBP50AddMs), fmtAdd(c.TTFBP99AddMs),
				fmtAdd(c.LatencyP50AddMs), fmtAdd(c.LatencyP99AddMs), fmtRatio(c.CPURatio))
		default:
			fmt.Fprintf(&b, " req/s x%.2f, p50 %s, p99 %s, CPU/req %s",
				c.ReqPerSecRatio, fmtAdd(c.LatencyP50AddMs), fmtAdd(c.LatencyP99AddMs), fmtRatio(c.CPURatio))
		}
		fmt.Fprintln(w, b.String())
	}
	if sc.Rate > 0 {
		// The pooled p99 of an open loop is its worst few starts: by round
		// shows whether one round made it or every round agrees.
		name := "p99"
		if sc.Stream {
			name = "TTFB p99"
		}
		var b strings.Builder
		fmt.Fprintf(&b, "  %s by round:", name)
		for i, t := range s.Targets {
			if i > 0 {
				b.WriteString(";")
			}
			fmt.Fprintf(&b, " %s", t.Target)
			for _, win := range t.Windows {
				v := win.LatencyP99Ms
				if sc.Stream {
					v = win.TTFBP99Ms
				}
				fmt.Fprintf(&b, " %.2f", v)
			}
		}
		fmt.Fprintln(w, b.String()+" (ms)")
	}
	for _, t := range s.Targets {
		if t.Errors > 0 {
			fmt.Fprintf(w, "  %s: first error: %s\n", t.Target, t.FirstError)
		}
	}
	for _, p := range s.Profiles {
		fmt.Fprintf(w, "  CPU profile of Caddy: %s (go tool pprof -top bin/caddy-bench %s)\n", p, p)
	}
	fmt.Fprintln(w)
}

func fmtMs(v float64) string { return fmt.Sprintf("%.2fms", v) }

func fmtAdd(v float64) string { return fmt.Sprintf("%+.2fms", v) }

// fmtLate is an open-loop target's missed starts and its latest start.
func fmtLate(t *targetResult) string {
	return fmt.Sprintf("%d/%d (max %.1fms)", t.Late, t.Scheduled, t.MaxLateMs)
}

func fmtRatio(v float64) string {
	if v <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("x%.2f", v)
}

func fmtCPU(v float64, prec int) string {
	if v < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

func fmtPct(v float64) string {
	if v < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%", v)
}

func fmtErrors(t *targetResult) string {
	if t.Errors == 0 {
		return fmt.Sprintf("0/%d", t.Attempts)
	}
	return fmt.Sprintf("%d/%d (%.2f%%)", t.Errors, t.Attempts, 100*t.ErrorRate)
}

// tooManyErrors lists the targets, and the settlement run, above 1% errors.
func (r *report) tooManyErrors() []string {
	var bad []string
	for _, s := range r.Scenarios {
		for _, t := range s.Targets {
			if t.ErrorRate > 0.01 {
				bad = append(bad, fmt.Sprintf("%s %s: %d of %d requests failed (%.2f%%); first: %s",
					s.Scenario.Name, t.Target, t.Errors, t.Attempts, 100*t.ErrorRate, t.FirstError))
			}
		}
	}
	if s := r.Slow; s != nil {
		for _, t := range s.Targets {
			if t.Errors > 0 {
				bad = append(bad, fmt.Sprintf("slow streams %s: %d of %d streams failed; first: %s", t.Target, t.Errors, s.Streams, t.FirstError))
			}
		}
	}
	if s := r.Settle; s != nil && s.Errors > 0 && float64(s.Errors) > 0.01*float64(s.Settlements+s.Errors) {
		bad = append(bad, fmt.Sprintf("settlement: %d of %d failed; first: %s", s.Errors, s.Settlements+s.Errors, s.FirstError))
	}
	return bad
}

func (r *report) writeJSON(path string) error { return writeJSON(path, r) }
