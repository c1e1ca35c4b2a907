package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// scenario is one kind of request, sent by a closed loop of workers.
type scenario struct {
	Name        string `json:"name"`
	Stream      bool   `json:"stream"`
	Concurrency int    `json:"concurrency"`
	Tokens      int    `json:"reply_tokens"`
	// Ramp staggers the workers' first requests over this long before
	// the window opens, so long streams do not all start, and end, in
	// waves. Completions during the ramp count only for CPU cost.
	Ramp time.Duration `json:"ramp_ns"`
	body []byte
}

func nonStreamScenario(c int) scenario {
	return scenario{Name: "non-stream", Concurrency: c, Tokens: shortTokens,
		body: []byte(`{"model":"` + model16 + `","messages":[{"role":"user","content":"Hello, world!"}]}`)}
}

func streamScenario(c int) scenario {
	return scenario{Name: "stream", Stream: true, Concurrency: c, Tokens: streamTokens,
		Ramp: streamTokens * time.Second / streamTPS, // one unloaded stream
		body: []byte(`{"model":"` + model200 + `","messages":[{"role":"user","content":"Hello, world!"}],"stream":true}`)}
}

// target is one way to reach the mock. The same body works for all: the
// mock echoes any model, arcane knows bench-16 and bench-200.
type target struct {
	name string
	url  string
	auth string // Authorization header value, or empty
	pid  int    // the process whose CPU time the target costs
}

// The targets, in the order each round measures them.
const (
	targetDirect = "direct"
	targetCaddy  = "caddy"
	targetArcane = "arcane"
)

const chatPath = "/v1/chat/completions"

// bencher drives the targets of an environment.
type bencher struct {
	env    *environment
	client *http.Client
}

func newBencher(env *environment) *bencher {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableCompression:    true,
	}
	return &bencher{env: env, client: &http.Client{Transport: tr, Timeout: time.Minute}}
}

func (b *bencher) targets(sc scenario) []target {
	e := b.env
	mock, plain := e.mock16, e.params.Plain16
	if sc.Stream {
		mock, plain = e.mock200, e.params.Plain200
	}
	return []target{
		{name: targetDirect, url: "http://" + mock.addr + chatPath, pid: mock.pid()},
		{name: targetCaddy, url: "http://127.0.0.1:" + strconv.Itoa(plain) + chatPath, pid: e.caddy.pid()},
		{name: targetArcane, url: "http://127.0.0.1:" + strconv.Itoa(e.params.Arcane) + chatPath, auth: "Bearer " + e.key, pid: e.caddy.pid()},
	}
}

// measure runs a scenario: a warm-up per target, then the rounds, each
// measuring every target once in turn.
func (b *bencher) measure(ctx context.Context, sc scenario, o *options) (*scenarioResult, error) {
	targets := b.targets(sc)
	res := &scenarioResult{Scenario: sc, Rounds: o.rounds, Duration: o.duration.Seconds()}
	for _, t := range targets {
		res.Targets = append(res.Targets, &targetResult{Target: t.name, URL: t.url})
	}
	for _, t := range targets {
		w := b.window(ctx, sc, t, o.warmup)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if w.Completed == 0 {
			return nil, setupError{fmt.Errorf("%s %s: not one request succeeded in the warm-up (%d errors; first: %s)",
				sc.Name, t.name, w.Errors, w.FirstError)}
		}
	}
	for r := 1; r <= o.rounds; r++ {
		for i, t := range targets {
			w := b.window(ctx, sc, t, o.duration)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			w.Round = r
			res.Targets[i].Windows = append(res.Targets[i].Windows, w)
		}
	}
	res.summarize()
	if o.profileDir != "" {
		for _, t := range targets[1:] {
			path, err := b.profile(ctx, sc, t, o)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err != nil {
				return nil, setupError{err}
			}
			res.Profiles = append(res.Profiles, path)
		}
	}
	return res, nil
}

// profile runs one more window on a Caddy target while fetching a CPU
// profile of Caddy from its admin endpoint, and saves it.
func (b *bencher) profile(ctx context.Context, sc scenario, t target, o *options) (string, error) {
	if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
		return "", err
	}
	secs := max(1, int((sc.Ramp + o.duration).Seconds()))
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", b.env.params.Admin, secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	type result struct {
		data []byte
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := (&http.Client{Timeout: time.Duration(secs+30) * time.Second}).Do(req)
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, snippet(data))
		}
		got <- result{data, err}
	}()
	b.window(ctx, sc, t, time.Duration(secs)*time.Second-sc.Ramp)
	r := <-got
	if r.err != nil {
		return "", fmt.Errorf("profiling caddy: %w", r.err)
	}
	path := filepath.Join(o.profileDir, sc.Name+"-"+t.name+".pprof")
	return path, os.WriteFile(path, r.data, 0o644)
}

// window is one measurement: C workers in a closed loop for a duration.
// Requests finishing after the deadline (the tail) count for CPU cost and
// errors but not for rates and latencies.
type window struct {
	Round int `json:"round"`
	// Seconds is the window's length, the denominator of the rates.
	Seconds float64 `json:"seconds"`
	// TailSeconds is how long the last requests took to finish after it.
	TailSeconds float64 `json:"tail_seconds"`
	// Requests and Events finished within the window; Completed and
	// CompletedEvents include the tail.
	Requests        int    `json:"requests"`
	Events          int64  `json:"events"`
	Completed       int    `json:"completed"`
	CompletedEvents int64  `json:"completed_events"`
	Errors          int    `json:"errors"`
	FirstError      string `json:"first_error,omitempty"`
	// CPUSeconds is the user+system CPU time of the target's server
	// process (the mock for direct, Caddy otherwise) from the start of the
	// ramp until the last request finished, WallSeconds; LoadCPUSeconds is
	// the load generator's (this process) over the same time.
	CPUSeconds     float64 `json:"cpu_seconds"`
	LoadCPUSeconds float64 `json:"load_cpu_seconds"`
	WallSeconds    float64 `json:"wall_seconds"`

	latency []time.Duration // non-stream: the request; stream: the whole stream
	ttfb    []time.Duration // stream only
}

// outcome is one request's result.
type outcome struct {
	latency, ttfb time.Duration
	events        int64
	err           error
}

func (b *bencher) window(ctx context.Context, sc scenario, t target, d time.Duration) *window {
	self := os.Getpid()
	cpu0, cpuErr := cpuTime(t.pid)
	load0, loadErr := cpuTime(self)
	start := time.Now()
	opens := start.Add(sc.Ramp)
	deadline := opens.Add(d)
	w := &window{Seconds: d.Seconds()}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for i := range sc.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local window
			var buf bytes.Buffer
			br := bufio.NewReaderSize(nil, 16<<10)
			if sc.Ramp > 0 {
				select {
				case <-time.After(sc.Ramp * time.Duration(i) / time.Duration(sc.Concurrency)):
				case <-ctx.Done():
				}
			}
			for ctx.Err() == nil { // at least one request, even for d == 0
				var o outcome
				if sc.Stream {
					o = b.stream(ctx, t, sc.body, br)
				} else {
					o = b.single(ctx, t, sc.body, &buf)
				}
				if ctx.Err() != nil {
					break // interrupted: not the target's fault
				}
				now := time.Now()
				in := !now.After(deadline) && !now.Before(opens)
				if o.err != nil {
					local.Errors++
					if local.FirstError == "" {
						local.FirstError = o.err.Error()
					}
				} else {
					local.Completed++
					local.CompletedEvents += o.events
					if in {
						local.Requests++
						local.Events += o.events
						local.latency = append(local.latency, o.latency)
						if sc.Stream {
							local.ttfb = append(local.ttfb, o.ttfb)
						}
					}
				}
				if now.After(deadline) {
					break
				}
			}
			mu.Lock()
			defer mu.Unlock()
			w.Requests += local.Requests
			w.Events += local.Events
			w.Completed += local.Completed
			w.CompletedEvents += local.CompletedEvents
			w.Errors += local.Errors
			if w.FirstError == "" {
				w.FirstError = local.FirstError
			}
			w.latency = append(w.latency, local.latency...)
			w.ttfb = append(w.ttfb, local.ttfb...)
		}()
	}
	wg.Wait()
	end := time.Now()
	w.TailSeconds = max(0, end.Sub(deadline).Seconds())
	w.WallSeconds = end.Sub(start).Seconds()
	w.CPUSeconds, w.LoadCPUSeconds = -1, -1
	if cpu1, err := cpuTime(t.pid); err == nil && cpuErr == nil {
		w.CPUSeconds = (cpu1 - cpu0).Seconds()
	}
	if load1, err := cpuTime(self); err == nil && loadErr == nil {
		w.LoadCPUSeconds = (load1 - load0).Seconds()
	}
	return w
}

func (b *bencher) newRequest(ctx context.Context, t target, body []byte) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if t.auth != "" {
		req.Header.Set("Authorization", t.auth)
	}
	return req
}

// single sends one non-streamed request and reads the whole answer.
func (b *bencher) single(ctx context.Context, t target, body []byte, buf *bytes.Buffer) outcome {
	start := time.Now()
	resp, err := b.client.Do(b.newRequest(ctx, t, body))
	if err != nil {
		return outcome{err: err}
	}
	buf.Reset()
	_, err = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	lat := time.Since(start)
	switch {
	case err != nil:
		return outcome{err: fmt.Errorf("reading the answer: %w", err)}
	case resp.StatusCode != http.StatusOK:
		return outcome{err: fmt.Errorf("HTTP %d: %s", resp.StatusCode, snippet(buf.Bytes()))}
	case !bytes.Contains(buf.Bytes(), []byte(`"finish_reason"`)):
		return outcome{err: fmt.Errorf("not a chat completion: %s", snippet(buf.Bytes()))}
	}
	return outcome{latency: lat}
}

var (
	dataField = []byte("data:")
	doneData  = []byte("[DONE]")
	errorData = []byte(`{"error"`)
)

// stream sends one streamed request and reads it to the end, counting
// data events (not [DONE]) and timing the first one.
func (b *bencher) stream(ctx context.Context, t target, body []byte, br *bufio.Reader) outcome {
	start := time.Now()
	resp, err := b.client.Do(b.newRequest(ctx, t, body))
	if err != nil {
		return outcome{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return outcome{err: fmt.Errorf("HTTP %d: %s", resp.StatusCode, snippet(data))}
	}
	br.Reset(resp.Body)
	defer br.Reset(nil)
	var (
		o       outcome
		done    bool
		inBand  []byte
		readErr error
	)
	for {
		line, err := br.ReadSlice('\n')
		if data, ok := bytes.CutPrefix(line, dataField); ok {
			data = bytes.TrimSpace(data)
			if o.ttfb == 0 {
				o.ttfb = time.Since(start)
			}
			switch {
			case bytes.Equal(data, doneData):
				done = true
			case bytes.HasPrefix(data, errorData):
				inBand = append(inBand[:0], data...)
				o.events++
			default:
				o.events++
			}
		}
		for err == bufio.ErrBufferFull { // a long line: skip its rest
			_, err = br.ReadSlice('\n')
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				readErr = err
			}
			break
		}
	}
	o.latency = time.Since(start)
	switch {
	case readErr != nil:
		o.err = fmt.Errorf("reading the stream after %d events: %w", o.events, readErr)
	case inBand != nil:
		o.err = fmt.Errorf("error in the stream: %s", snippet(inBand))
	case !done:
		o.err = fmt.Errorf("stream ended without [DONE] after %d events", o.events)
	}
	return o
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat's
// utime and stime: 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuTime returns a process's user+system CPU time, all threads, from
// /proc/<pid>/stat (10ms resolution).
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatCPU(data)
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/<pid>/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last ')'.
func parseStatCPU(data []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("malformed /proc stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed /proc stat")
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}
