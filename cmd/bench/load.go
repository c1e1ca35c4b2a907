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

// scenario is one kind of request, sent by a closed loop of workers or,
// when Rate is set, on a fixed schedule (open loop).
type scenario struct {
	Name        string `json:"name"`
	Stream      bool   `json:"stream"`
	Concurrency int    `json:"concurrency,omitempty"`
	Tokens      int    `json:"reply_tokens"`
	// Rate, when above 0, makes the scenario an open loop: a request
	// starts every 1/Rate seconds whatever the earlier ones are doing, each
	// in its own goroutine, so a slow answer delays nothing but itself.
	// Concurrency is then unused.
	Rate float64 `json:"rate_per_sec,omitempty"`
	// Ramp staggers the workers' first requests over this long before
	// the window opens, so long streams do not all start, and end, in
	// waves. Completions during the ramp count only for CPU cost.
	Ramp time.Duration `json:"ramp_ns"`
	// AbandonAfter, when above 0, makes the client of a stream leave
	// after that many events: it closes the connection mid-stream, as a
	// user who stops a reply does. The soak's leak check needs that path
	// taken.
	AbandonAfter int `json:"abandon_after_events,omitempty"`
	body         []byte
}

// The scenarios' names, which the goals look them up by.
const (
	scenarioNonStream     = "non-stream"
	scenarioStream        = "stream"
	scenarioNonStreamOpen = "non-stream-open"
	scenarioStreamOpen    = "stream-open"
)

var (
	nonStreamBody = []byte(`{"model":"` + model16 + `","messages":[{"role":"user","content":"Hello, world!"}]}`)
	streamBody    = []byte(`{"model":"` + model200 + `","messages":[{"role":"user","content":"Hello, world!"}],"stream":true}`)
)

func nonStreamScenario(c int) scenario {
	return scenario{Name: scenarioNonStream, Concurrency: c, Tokens: shortTokens, body: nonStreamBody}
}

func streamScenario(c int) scenario {
	return scenario{Name: scenarioStream, Stream: true, Concurrency: c, Tokens: streamTokens,
		Ramp: streamTokens * time.Second / streamTPS, // one unloaded stream
		body: streamBody}
}

// nonStreamOpenScenario sends the non-stream request at rate per second.
func nonStreamOpenScenario(rate float64) scenario {
	return scenario{Name: scenarioNonStreamOpen, Rate: rate, Tokens: shortTokens, body: nonStreamBody}
}

// streamOpenScenario starts a paced stream at rate per second.
func streamOpenScenario(rate float64) scenario {
	return scenario{Name: scenarioStreamOpen, Stream: true, Rate: rate, Tokens: streamTokens, body: streamBody}
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
	mock, plain := e.mock16, e.caddy.params.Plain16
	if sc.Stream {
		mock, plain = e.mock200, e.caddy.params.Plain200
	}
	return []target{
		{name: targetDirect, url: "http://" + mock.addr + chatPath, pid: mock.pid()},
		{name: targetCaddy, url: "http://127.0.0.1:" + strconv.Itoa(plain) + chatPath, pid: e.caddy.proc.pid()},
		{name: targetArcane, url: "http://127.0.0.1:" + strconv.Itoa(e.caddy.params.Arcane) + chatPath,
			auth: "Bearer " + e.caddy.key, pid: e.caddy.proc.pid()},
	}
}

// measure runs a scenario: a warm-up per target, then the rounds, each
// measuring every target once in turn. A window lasts -duration, or
// -open-duration for an open-loop scenario, which has -open-rounds rounds.
func (b *bencher) measure(ctx context.Context, sc scenario, o *options) (*scenarioResult, error) {
	targets := b.targets(sc)
	d, rounds := o.duration, o.rounds
	if sc.Rate > 0 {
		d, rounds = o.openDuration, o.openRounds
	}
	res := &scenarioResult{Scenario: sc, Rounds: rounds, Duration: d.Seconds()}
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
	for r := 1; r <= rounds; r++ {
		for i, t := range targets {
			w := b.window(ctx, sc, t, d)
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
			path, err := b.profile(ctx, sc, t, d, o.profileDir)
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
// profile of Caddy from its admin endpoint, and saves it, with allocation
// profiles from before and after the window; then one more with an
// execution trace (go tool trace), which shows what ran while a slow
// request waited.
func (b *bencher) profile(ctx context.Context, sc scenario, t target, d time.Duration, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	secs := max(1, int((sc.Ramp + d).Seconds()))
	// The allocation profile counts from Caddy's start: taken before and
	// after the window, the second read with -diff_base the first shows
	// the window's allocations.
	admin := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/allocs", b.env.caddy.params.Admin)
	if err := b.fetchTo(ctx, admin, filepath.Join(dir, sc.Name+"-"+t.name+"-allocs-before.pprof")); err != nil {
		return "", fmt.Errorf("profiling caddy's allocations: %w", err)
	}
	path := filepath.Join(dir, sc.Name+"-"+t.name+".pprof")
	if err := b.captureDuring(ctx, sc, t, secs, "/debug/pprof/profile", path); err != nil {
		return "", fmt.Errorf("profiling caddy: %w", err)
	}
	if err := b.fetchTo(ctx, admin, filepath.Join(dir, sc.Name+"-"+t.name+"-allocs.pprof")); err != nil {
		return "", fmt.Errorf("profiling caddy's allocations: %w", err)
	}
	if err := b.captureDuring(ctx, sc, t, secs, "/debug/pprof/trace", filepath.Join(dir, sc.Name+"-"+t.name+".trace")); err != nil {
		return "", fmt.Errorf("tracing caddy: %w", err)
	}
	return path, nil
}

// captureDuring runs one window of sc on t while Caddy's admin endpoint
// answers endpoint?seconds=secs, and saves the answer into path.
func (b *bencher) captureDuring(ctx context.Context, sc scenario, t target, secs int, endpoint, path string) error {
	url := fmt.Sprintf("http://127.0.0.1:%d%s?seconds=%d", b.env.caddy.params.Admin, endpoint, secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
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
		return r.err
	}
	return os.WriteFile(path, r.data, 0o644)
}

// starter runs open-loop requests, each in a goroutine of its own, and
// records each in its window.
type starter struct {
	b    *bencher
	mu   sync.Mutex // guards the windows
	wg   sync.WaitGroup
	pool sync.Pool // *buffers
}

func (b *bencher) newStarter() *starter {
	return &starter{b: b, pool: sync.Pool{New: func() any { return newBuffers() }}}
}

// start sends one request of sc to t now and records it in w when it ends,
// unless ctx ended first (not the target's fault).
func (s *starter) start(ctx context.Context, sc scenario, t target, w *window) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		bufs := s.pool.Get().(*buffers)
		defer s.pool.Put(bufs)
		o := s.b.send(ctx, sc, t, bufs)
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		w.record(o, true, sc.Stream)
	}()
}

// wait waits for every request started to end.
func (s *starter) wait() { s.wg.Wait() }

// window is one measurement: C workers in a closed loop for a duration, or
// requests started on a fixed schedule over it (open loop). Closed loop:
// requests finishing after the deadline (the tail) count for CPU cost and
// errors but not for rates and latencies. Open loop: every request started
// in the window counts, however late it finishes, so the slow ones are not
// left out of the latencies.
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
	// Abandoned is the streams the client left on purpose
	// (scenario.AbandonAfter): neither completed nor errors.
	Abandoned int `json:"abandoned,omitempty"`
	// Open loop only: Scheduled is how many requests the schedule started,
	// Late how many of those started a whole interval or more after their
	// time (missed starts: the schedule slipped a slot), and MaxLateMs the
	// latest start.
	Scheduled int     `json:"scheduled,omitempty"`
	Late      int     `json:"late_starts,omitempty"`
	MaxLateMs float64 `json:"max_late_ms,omitempty"`
	// CPUSeconds is the user+system CPU time of the target's server
	// process (the mock for direct, Caddy otherwise) from the start of the
	// ramp until the last request finished, WallSeconds; LoadCPUSeconds is
	// the load generator's (this process) over the same time.
	CPUSeconds     float64 `json:"cpu_seconds"`
	LoadCPUSeconds float64 `json:"load_cpu_seconds"`
	WallSeconds    float64 `json:"wall_seconds"`
	// LatencyP99Ms and TTFBP99Ms (streams) are the window's own p99s, to
	// show how the rounds of a target differ; the report pools the
	// samples of all rounds.
	LatencyP99Ms float64 `json:"latency_p99_ms"`
	TTFBP99Ms    float64 `json:"ttfb_p99_ms,omitempty"`

	latency []time.Duration // non-stream: the request; stream: the whole stream
	ttfb    []time.Duration // stream only
}

// record adds one request's outcome; in says whether it finished within
// the window, to count for rates and latencies.
func (w *window) record(o outcome, in, stream bool) {
	if o.err != nil {
		w.Errors++
		if w.FirstError == "" {
			w.FirstError = o.err.Error()
		}
		return
	}
	if o.abandoned {
		w.Abandoned++
		return
	}
	w.Completed++
	w.CompletedEvents += o.events
	if in {
		w.Requests++
		w.Events += o.events
		w.latency = append(w.latency, o.latency)
		if stream {
			w.ttfb = append(w.ttfb, o.ttfb)
		}
	}
}

// merge adds the counts and samples of a worker's own window.
func (w *window) merge(l *window) {
	w.Requests += l.Requests
	w.Events += l.Events
	w.Completed += l.Completed
	w.CompletedEvents += l.CompletedEvents
	w.Errors += l.Errors
	w.Abandoned += l.Abandoned
	if w.FirstError == "" {
		w.FirstError = l.FirstError
	}
	w.latency = append(w.latency, l.latency...)
	w.ttfb = append(w.ttfb, l.ttfb...)
}

// outcome is one request's result.
type outcome struct {
	latency, ttfb time.Duration
	events        int64
	err           error
	abandoned     bool // the client left the stream on purpose
}

// buffers are the read buffers one sender reuses from request to request.
type buffers struct {
	body bytes.Buffer  // a non-streamed answer
	br   *bufio.Reader // a stream
}

func newBuffers() *buffers { return &buffers{br: bufio.NewReaderSize(nil, 16<<10)} }

// send sends the scenario's request once.
func (b *bencher) send(ctx context.Context, sc scenario, t target, bufs *buffers) outcome {
	if sc.Stream {
		return b.stream(ctx, t, sc.body, bufs.br, sc.AbandonAfter)
	}
	return b.single(ctx, t, sc.body, &bufs.body)
}

// window measures a target for d, in a closed or an open loop as the
// scenario says, with the CPU time the target's server and this process
// spent on it.
func (b *bencher) window(ctx context.Context, sc scenario, t target, d time.Duration) *window {
	self := os.Getpid()
	cpu0, cpuErr := cpuTime(t.pid)
	load0, loadErr := cpuTime(self)
	start := time.Now()
	var w *window
	if sc.Rate > 0 {
		w = b.openLoop(ctx, sc, t, start, d)
	} else {
		w = b.closedLoop(ctx, sc, t, start, d)
	}
	w.WallSeconds = time.Since(start).Seconds()
	w.CPUSeconds, w.LoadCPUSeconds = -1, -1
	if cpu1, err := cpuTime(t.pid); err == nil && cpuErr == nil {
		w.CPUSeconds = (cpu1 - cpu0).Seconds()
	}
	if load1, err := cpuTime(self); err == nil && loadErr == nil {
		w.LoadCPUSeconds = (load1 - load0).Seconds()
	}
	return w
}

// closedLoop runs sc.Concurrency workers, each sending its next request as
// soon as the last one is answered, from start (after the ramp) for d.
func (b *bencher) closedLoop(ctx context.Context, sc scenario, t target, start time.Time, d time.Duration) *window {
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
			bufs := newBuffers()
			if sc.Ramp > 0 {
				select {
				case <-time.After(sc.Ramp * time.Duration(i) / time.Duration(sc.Concurrency)):
				case <-ctx.Done():
				}
			}
			for ctx.Err() == nil { // at least one request, even for d == 0
				o := b.send(ctx, sc, t, bufs)
				if ctx.Err() != nil {
					break // interrupted: not the target's fault
				}
				now := time.Now()
				local.record(o, !now.After(deadline) && !now.Before(opens), sc.Stream)
				if now.After(deadline) {
					break
				}
			}
			mu.Lock()
			defer mu.Unlock()
			w.merge(&local)
		}()
	}
	wg.Wait()
	w.TailSeconds = max(0, time.Since(deadline).Seconds())
	return w
}

// openLoop starts a request every 1/sc.Rate seconds from start for d (at
// least one), each in a goroutine of its own, so nothing but this
// dispatcher's own wake-ups can hold the schedule back; then it waits
// for them all to finish. The slots are fixed in advance, so a late start
// does not shift the ones after it. A request's latency runs from its
// actual start; a start a whole interval late or more counts as missed.
// (Go's timers wake up to about a millisecond late, as the runtime sleeps
// in whole milliseconds, so smaller delays are the clock, not a slip.)
func (b *bencher) openLoop(ctx context.Context, sc scenario, t target, start time.Time, d time.Duration) *window {
	w := &window{Seconds: d.Seconds()}
	sched := newSchedule(start, sc.Rate)
	defer sched.stop()
	n := max(1, int(d/sched.interval))
	starts := b.newStarter()
	for i := range n {
		late, ok := sched.wait(ctx, i)
		if !ok {
			break
		}
		w.Scheduled++
		if late >= sched.interval {
			w.Late++
		}
		w.MaxLateMs = max(w.MaxLateMs, ms(late))
		starts.start(ctx, sc, t, w)
	}
	starts.wait()
	w.TailSeconds = max(0, time.Since(start.Add(d)).Seconds())
	return w
}

// schedule is an open loop's timetable: slot i is due at start +
// i*interval, fixed in advance, so a late start does not shift the ones
// after it.
type schedule struct {
	start    time.Time
	interval time.Duration
	timer    *time.Timer
}

// newSchedule returns the timetable of rate slots a second from start.
// Its timer needs stop.
func newSchedule(start time.Time, rate float64) *schedule {
	return &schedule{start: start, interval: time.Duration(float64(time.Second) / rate), timer: time.NewTimer(time.Hour)}
}

// wait sleeps until slot i is due, unless it is already, and returns how
// late the slot starts; false when ctx ended first.
func (s *schedule) wait(ctx context.Context, i int) (late time.Duration, ok bool) {
	slot := s.start.Add(time.Duration(i) * s.interval)
	if wait := time.Until(slot); wait > 0 {
		s.timer.Reset(wait)
		select {
		case <-s.timer.C:
		case <-ctx.Done():
			return 0, false
		}
	}
	return time.Since(slot), true
}

func (s *schedule) stop() { s.timer.Stop() }

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
// data events (not [DONE]) and timing the first one; with abandonAfter
// above 0 it leaves after that many events, returning with the answer
// unread, so that closing its body closes the connection.
func (b *bencher) stream(ctx context.Context, t target, body []byte, br *bufio.Reader, abandonAfter int) outcome {
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
				if abandonAfter > 0 && o.events >= int64(abandonAfter) && inBand == nil {
					o.latency, o.abandoned = time.Since(start), true
					return o
				}
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
