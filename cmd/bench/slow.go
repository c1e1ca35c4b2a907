package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
)

// slowOpenRate is how many slow streams a second the scenario opens: fast
// enough to be done in seconds, slow enough for the listen backlog
// (somaxconn, often 4096) never to overflow.
const slowOpenRate = 1000

var slowBody = []byte(`{"model":"` + modelSlow + `","messages":[{"role":"user","content":"Hello, world!"}],"stream":true}`)

// slowRamp is how long opening the slow streams takes.
func slowRamp(o *options) time.Duration {
	return time.Duration(o.slowStreams) * time.Second / slowOpenRate
}

// slowTokens is the slow mock's reply length: one token a second, for
// longer than a stream is held open (a stream the mock ends early is an
// error).
func slowTokens(o *options) int {
	return int((slowRamp(o) + o.slowHold).Seconds()) + 30
}

// slowResult is the many-slow-streams scenario: Streams streams open at
// once, the upstream sending one chunk a second, held open for a while,
// on each target in turn.
type slowResult struct {
	Streams     int           `json:"streams"`
	RampSeconds float64       `json:"ramp_seconds"`
	HoldSeconds float64       `json:"hold_seconds"`
	Targets     []*slowTarget `json:"targets,omitempty"`
	Skipped     string        `json:"skipped,omitempty"` // why the scenario did not run
}

// slowTarget is one target holding the slow streams.
type slowTarget struct {
	Target string `json:"target"`
	// Opened is the streams whose first event arrived; OpenAtEnd those
	// still open when the hold ended, as they all should be.
	Opened     int    `json:"opened"`
	OpenAtEnd  int    `json:"open_at_end"`
	Errors     int    `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	// The server's resident memory (VmRSS) before the first stream and
	// at its highest while they were all open (or the hold ended), and
	// the difference per stream. -1 when /proc could not be read.
	RSSBeforeKiB int64   `json:"rss_before_kib"`
	RSSPeakKiB   int64   `json:"rss_peak_kib"`
	KiBPerStream float64 `json:"kib_per_stream"`
}

// raiseFileLimit raises this process's soft RLIMIT_NOFILE to its hard
// limit. Set through syscall.Setrlimit, the raised limit is also what the
// children (Caddy and the mocks) inherit.
func raiseFileLimit() syscall.Rlimit {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return lim
	}
	if lim.Cur < lim.Max {
		raised := syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			lim = raised
		}
	}
	return lim
}

// measureSlow runs the slow-stream scenario: direct against the slow
// mock, then caddy and arcane each against a Caddy started for it alone,
// so that neither finds memory the other freed, and stopped after.
func (b *bencher) measureSlow(ctx context.Context, o *options, fileLimit syscall.Rlimit) (*slowResult, error) {
	n := o.slowStreams
	res := &slowResult{Streams: n, RampSeconds: slowRamp(o).Seconds(), HoldSeconds: o.slowHold.Seconds()}
	// Caddy holds two sockets per stream, this process one.
	if need := uint64(2*n + 1024); fileLimit.Cur < need {
		res.Skipped = fmt.Sprintf("RLIMIT_NOFILE %d, %d needed (ulimit -n)", fileLimit.Cur, need)
		return res, nil
	}
	e := b.env
	direct := target{name: targetDirect, url: "http://" + e.mockSlow.addr + chatPath, pid: e.mockSlow.pid()}
	res.Targets = append(res.Targets, b.slowStreams(ctx, direct, n, slowRamp(o), o.slowHold, nil))
	for _, name := range []string{targetCaddy, targetArcane} {
		c, err := e.startCaddy(ctx, "caddy-slow-"+name)
		if err != nil {
			return nil, setupError{fmt.Errorf("starting a Caddy for the slow streams: %w", err)}
		}
		t := target{name: targetCaddy, url: "http://127.0.0.1:" + strconv.Itoa(c.params.PlainSlow) + chatPath, pid: c.proc.pid()}
		if name == targetArcane {
			t = target{name: targetArcane, url: "http://127.0.0.1:" + strconv.Itoa(c.params.Arcane) + chatPath,
				auth: "Bearer " + c.key, pid: c.proc.pid()}
		}
		var atPeak func()
		if o.profileDir != "" {
			atPeak = func() { b.saveMemoryProfiles(ctx, c, o.profileDir, "slow-"+name) }
		}
		st := b.slowStreams(ctx, t, n, slowRamp(o), o.slowHold, atPeak)
		e.stop(c.proc)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		res.Targets = append(res.Targets, st)
	}
	return res, nil
}

// slowStreams opens n streams to a target, evenly over ramp, holds them
// for hold after that, watching the server's memory, then closes them
// all. A stream that fails, ends, or has not opened before the hold ends
// is an error. atPeak, when not nil, runs once the hold ends, while every
// stream is still open.
func (b *bencher) slowStreams(ctx context.Context, t target, n int, ramp, hold time.Duration, atPeak func()) *slowTarget {
	st := &slowTarget{Target: t.name, RSSBeforeKiB: -1, RSSPeakKiB: -1, KiBPerStream: -1}
	rss0, rssErr := rssKiB(t.pid)
	holdCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	client := &http.Client{Transport: b.client.Transport} // no overall timeout: the hold decides
	var (
		open, opened atomic.Int64
		mu           sync.Mutex
		wg           sync.WaitGroup
	)
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-time.After(ramp * time.Duration(i) / time.Duration(n)):
			case <-holdCtx.Done():
			}
			err := slowStream(holdCtx, client, b.newRequest(holdCtx, t, slowBody), &open, &opened)
			if err == nil || ctx.Err() != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			st.Errors++
			if st.FirstError == "" {
				st.FirstError = err.Error()
			}
		}()
	}
	// Watch the memory until the hold ends; the peak counts once every
	// stream has had its chance to open.
	peak := int64(-1)
	end := start.Add(ramp + hold)
	tick := time.NewTicker(250 * time.Millisecond)
	for now := time.Now(); now.Before(end) && ctx.Err() == nil; now = time.Now() {
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
		if rss, err := rssKiB(t.pid); err == nil && now.After(start.Add(ramp)) {
			peak = max(peak, rss)
		}
	}
	tick.Stop()
	st.OpenAtEnd = int(open.Load())
	if atPeak != nil {
		atPeak()
	}
	cancel()
	wg.Wait()
	st.Opened = int(opened.Load())
	if rssErr == nil && peak >= 0 {
		st.RSSBeforeKiB, st.RSSPeakKiB = rss0, peak
		st.KiBPerStream = float64(peak-rss0) / float64(n)
	}
	return st
}

// errNotOpen is a stream that had not opened when the hold ended.
var errNotOpen = errors.New("stream not open when the hold ended")

// slowStream opens one stream and reads it until ctx ends. It returns nil
// when the stream was open (its first event read) and still running then.
// open counts the streams open now, opened those that ever opened.
func slowStream(ctx context.Context, client *http.Client, req *http.Request, open, opened *atomic.Int64) error {
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return errNotOpen
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, snippet(data))
	}
	br := bufio.NewReaderSize(resp.Body, 4096)
	events := 0
	for {
		line, err := br.ReadSlice('\n')
		if data, ok := bytes.CutPrefix(line, dataField); ok {
			data = bytes.TrimSpace(data)
			switch {
			case bytes.HasPrefix(data, errorData):
				return fmt.Errorf("error in the stream: %s", snippet(data))
			case bytes.Equal(data, doneData):
				return fmt.Errorf("stream ended before the hold did, after %d events", events)
			}
			if events == 0 {
				open.Add(1)
				opened.Add(1)
				defer open.Add(-1)
			}
			events++
		}
		for err == bufio.ErrBufferFull {
			_, err = br.ReadSlice('\n')
		}
		switch {
		case err == nil:
		case ctx.Err() != nil && events > 0:
			return nil
		case ctx.Err() != nil:
			return errNotOpen
		case errors.Is(err, io.EOF):
			return fmt.Errorf("stream ended before the hold did, after %d events", events)
		default:
			return fmt.Errorf("reading the stream after %d events: %w", events, err)
		}
	}
}

// rssKiB returns a process's resident memory, VmRSS in /proc/<pid>/status.
func rssKiB(pid int) (int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return parseStatusKiB(data, "VmRSS:")
}

// parseStatusKiB reads a "Name:   1234 kB" line of /proc/<pid>/status.
func parseStatusKiB(data []byte, field string) (int64, error) {
	for line := range bytes.Lines(data) {
		v, ok := bytes.CutPrefix(line, []byte(field))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		v, ok = bytes.CutSuffix(v, []byte(" kB"))
		if !ok {
			break
		}
		return strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
	}
	return 0, fmt.Errorf("no %s in kB in /proc status", field)
}

func (s *slowResult) print(w io.Writer) {
	fmt.Fprintf(w, "== slow streams: %d streams at once, the upstream sending one chunk a second; opened over %.0fs, held %.0fs more; a fresh Caddy for caddy and for arcane\n",
		s.Streams, s.RampSeconds, s.HoldSeconds)
	if s.Skipped != "" {
		fmt.Fprintf(w, "  skipped: %s\n\n", s.Skipped)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\topened\topen at end\terrors\tRSS before\tRSS peak\tRSS/stream\t")
	for _, t := range s.Targets {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t\n", t.Target, t.Opened, t.OpenAtEnd, t.Errors,
			fmtMiB(t.RSSBeforeKiB), fmtMiB(t.RSSPeakKiB), fmtKiB(t.KiBPerStream))
	}
	tw.Flush()
	for _, t := range s.Targets {
		if t.Errors > 0 {
			fmt.Fprintf(w, "  %s: first error: %s\n", t.Target, t.FirstError)
		}
	}
	fmt.Fprintln(w)
}

func fmtMiB(kib int64) string {
	if kib < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB", float64(kib)/1024)
}

func fmtKiB(kib float64) string {
	if kib < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f KiB", kib)
}

// saveMemoryProfiles saves a Caddy's expvars (memstats), goroutine dump
// (debug=1: stacks grouped, with counts), live heap profile (after a
// collection) and expvars again into dir as name-vars.json,
// name-goroutines.txt, name-heap.pprof and name-vars-after-gc.json.
func (b *bencher) saveMemoryProfiles(ctx context.Context, c *caddyServer, dir, name string) {
	for _, p := range []struct{ path, file string }{
		{"/debug/vars", name + "-vars.json"},
		{"/debug/pprof/goroutine?debug=1", name + "-goroutines.txt"},
		// gc=1: the live heap, not the heap as of the last collection.
		{"/debug/pprof/heap?gc=1", name + "-heap.pprof"},
		{"/debug/vars", name + "-vars-after-gc.json"},
	} {
		if err := b.fetchTo(ctx, fmt.Sprintf("http://127.0.0.1:%d%s", c.params.Admin, p.path), filepath.Join(dir, p.file)); err != nil {
			fmt.Fprintf(os.Stderr, "bench: saving %s: %v\n", p.file, err)
		}
	}
}

// fetchTo saves what a GET of url answers into the file path.
func (b *bencher) fetchTo(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
