package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// The soak (-soak, make soak) is issue 9's last target: arcane for
// -soak-duration (10 minutes) at half the maximum rate this run measures,
// with Caddy's resident memory and its own goroutines flat, nothing left
// behind, no error, and the books consistent afterwards.
//
// The maximum rate is the soak's own load's: an open loop, the rate
// raised step by step (soakRamp) until a step is not served (an error,
// missed starts, or a p99 over soakStepP99); the highest step served is
// the maximum. The closed-loop rate of the non-stream scenario (-concurrency
// workers for -duration, after -warmup) is measured first, for the
// report and to set the ramp's first step and ceiling: it is not a rate an
// open loop can be run at, because 64 requests always waiting make the
// ledger's group commits 60 settlements each, where an open loop at the
// same rate makes batches of a few, each a durable write (see the README's
// Performance section). Then it starts a fresh Caddy and runs an open loop
// at half the maximum (or -soak-rate, which skips the ramp) through its
// arcane site with its key: one request in soakStreamEvery is a paced
// stream of the bench-200 model (200 chunks, one a millisecond; one in
// soakAbandonEvery of them left by its client after soakAbandonAfter),
// the others the non-stream bench-16 request. Every few seconds it reads
// Caddy's memory from /proc and its goroutines and open balance holds from
// the admin endpoint's /metrics. After the load it waits for Caddy to
// finish with every request, and reads the audit, the account's usage and
// its balance from the admin API.
//
// Goroutines are judged twice. During the load, less those of the open
// connections (one a client connection, two a provider connection) and
// of the requests in flight (one each): the connections follow the
// pools, not arcane. A stall of the machine
// starts its late requests all at once, each on a connection of its own,
// and the pools keep those until their idle timeouts (90s) close them;
// so the goroutines in all, compared a minute against a minute, measure
// the machine's stalls (nine soaks moved them between -44% and +205%),
// and a stall also leaves more requests in flight. After the load, once
// every connection has closed, the goroutines in all must be back to
// their count before it, and no connection may be left in any state:
// that is the check a leak cannot pass, since a goroutine a request
// leaves behind stays, and so does a connection Caddy never closes.
//
// Resident memory is judged without the ledger's database file: bbolt
// reads the file through a shared memory map, so the file's pages that
// Caddy has touched count in its VmRSS, and the file grows by a row per
// request. Those pages are the kernel's page cache, which it can drop at
// will, not memory Caddy holds; VmRSS with them is printed beside.

const (
	// soakStreamEvery makes one request in this many a paced stream. A
	// stream of 200 chunks costs Caddy about as much CPU as 50 non-stream
	// requests, so at one in 200 the streams are about a fifth of the
	// work.
	soakStreamEvery = 200
	// soakAbandonEvery makes one stream in this many one its client
	// leaves after soakAbandonAfter events (of 200), closing the
	// connection: the path of a user who stops a reply, where the
	// gateway must settle what it delivered and let go of everything
	// else, is taken a few hundred times in a soak.
	soakAbandonEvery = 3
	soakAbandonAfter = 50
	// soakFlatTolerance is how far the mean of the last window may be
	// from the mean of the first window after the warm-up, either way,
	// for a quantity to count as flat.
	soakFlatTolerance = 0.10
	// soakLateSlack is how late a start may be before it counts as
	// missed, when the schedule's interval is shorter. At a thousand
	// requests a second or more the interval is a millisecond or less,
	// about a Go timer's own wake-up delay (more on a busy CPU); a start
	// late by that much, with the ones after it on time again, is the
	// clock, not a slipped schedule.
	soakLateSlack = 10 * time.Millisecond
	// soakSettleWait is how long Caddy gets to finish with the requests,
	// before the soak and after it.
	soakSettleWait = 30 * time.Second
	// soakDrainWait is how long, after the load and Caddy's settling,
	// the soak waits for Caddy's connections to close before it counts
	// the goroutines left: the load generator closes its own idle
	// connections at once, and arcane's provider pool closes a
	// connection idle for 90s (caddymodule/catalog.go, newTransport);
	// the mocks keep theirs for 2 minutes, so the pool closes them first.
	soakDrainWait = 2 * time.Minute
	// soakMinDuration is the shortest soak: its windows need samples.
	soakMinDuration = 30 * time.Second

	// The ramp that measures the maximum rate (soakRamp): steps of
	// soakStepDuration from a quarter of the closed-loop rate, each
	// soakStepFactor times the last, up to the closed-loop rate. A step
	// is served when it has no error, at most 1% missed starts and a
	// non-stream p99 of at most soakStepP99.
	soakStepDuration = 5 * time.Second
	soakStepFactor   = 1.2
	soakStepP99      = 100 * time.Millisecond
)

// soakPlan is how a soak of a given length is cut up.
type soakPlan struct {
	Duration time.Duration `json:"duration_ns"`
	// SampleEvery is how often Caddy is read: every 5s, or more often for
	// a soak under 10 minutes.
	SampleEvery time.Duration `json:"sample_every_ns"`
	// RowEvery is the span of one line of the time series: a minute, or
	// a tenth of a soak under 10 minutes.
	RowEvery time.Duration `json:"row_every_ns"`
	// Warmup is left out of the comparison: the first 10% of the soak or
	// its first minute, whichever is shorter.
	Warmup time.Duration `json:"warmup_ns"`
	// Window is the span of the two means compared: the first Window
	// after Warmup, and the last Window of the soak. A minute, or a third
	// of what follows the warm-up when that is shorter.
	Window time.Duration `json:"window_ns"`
}

// newSoakPlan cuts up a soak of d (at least soakMinDuration).
func newSoakPlan(d time.Duration) soakPlan {
	p := soakPlan{Duration: d}
	p.SampleEvery = min(max(d/120, time.Second), 5*time.Second).Truncate(time.Second)
	p.RowEvery = max(min(time.Minute, d/10).Truncate(p.SampleEvery), p.SampleEvery)
	p.Warmup = min(d/10, time.Minute)
	p.Window = min(time.Minute, (d-p.Warmup)/3)
	return p
}

// soakSample is one reading of Caddy during the soak. Each value is -1
// when it could not be read.
type soakSample struct {
	// Seconds is when it was due, since the soak began; ReadSeconds
	// when /proc was read, later by the sampler's own delay.
	Seconds     float64 `json:"seconds"`
	ReadSeconds float64 `json:"read_seconds"`
	// RSSKiB is VmRSS, all resident memory; AnonKiB its anonymous part
	// (heap, stacks) and FileKiB its file-backed part (the binary, the
	// ledger). LedgerKiB is the resident pages of the ledger's database
	// file, which bbolt maps (from /proc/<pid>/smaps).
	RSSKiB    int64 `json:"rss_kib"`
	AnonKiB   int64 `json:"rss_anon_kib"`
	FileKiB   int64 `json:"rss_file_kib"`
	LedgerKiB int64 `json:"ledger_map_kib"`
	// CPUSeconds is Caddy's user+system CPU time so far, LoadCPUSeconds
	// this load generator's.
	CPUSeconds     float64 `json:"cpu_seconds"`
	LoadCPUSeconds float64 `json:"load_cpu_seconds"`
	// Goroutines is go_goroutines, HoldsOpen caddy_arcane_holds_open,
	// both from the admin endpoint's /metrics.
	Goroutines int64 `json:"goroutines"`
	HoldsOpen  int64 `json:"holds_open"`
	// ClientConns and ProviderConns are Caddy's established connections
	// from the load generator to arcane's site and to the mocks (from
	// /proc/<pid>/fd and /proc/<pid>/net/tcp). Go's server spends a
	// goroutine on each client connection, its client two on each
	// provider connection.
	ClientConns   int64 `json:"client_conns"`
	ProviderConns int64 `json:"provider_conns"`
	// ClientSockets and ProviderSockets are the same connections in any
	// state but listening: established, or closing with Caddy still
	// holding the descriptor.
	ClientSockets   int64 `json:"client_sockets"`
	ProviderSockets int64 `json:"provider_sockets"`
}

// ownGoroutines is a sample's goroutines less those its connections and
// requests account for: one a client connection (which runs the
// handler), two a provider connection (its read and write loops), and
// one a request in flight (Go's server watches the client's connection
// from a second goroutine while a handler runs), counted by its open
// balance hold. -1 when any was not read. What is left is Caddy's and
// arcane's own: a goroutine that outlives its request stays in it.
func (s soakSample) ownGoroutines() int64 {
	if s.Goroutines < 0 || s.ClientConns < 0 || s.ProviderConns < 0 || s.HoldsOpen < 0 {
		return -1
	}
	return s.Goroutines - s.ClientConns - 2*s.ProviderConns - s.HoldsOpen
}

// memoryKiB is the resident memory the soak judges: VmRSS without the
// ledger's mapped file; -1 when either was not read.
func (s soakSample) memoryKiB() int64 {
	if s.RSSKiB < 0 || s.LedgerKiB < 0 {
		return -1
	}
	return s.RSSKiB - s.LedgerKiB
}

// soakRow is one span of the soak: the requests that started in it, by
// kind, and the starts the schedule made and missed.
type soakRow struct {
	Start     float64 `json:"start_seconds"`
	Seconds   float64 `json:"seconds"`
	Scheduled int     `json:"scheduled"`
	// Late is the starts a whole interval or soakLateSlack late, whichever
	// is more (missed); MaxLateMs the latest start.
	Late      int     `json:"late_starts"`
	MaxLateMs float64 `json:"max_late_ms"`
	NonStream *window `json:"non_stream"`
	Stream    *window `json:"stream"`
}

// soakTotals sums the rows: the error accounting.
type soakTotals struct {
	Scheduled int     `json:"scheduled"`
	Late      int     `json:"late_starts"`
	MaxLateMs float64 `json:"max_late_ms"`
	// NonStream and Stream are the requests of each kind that succeeded;
	// Errors those that failed (any status but 200, a transport error, an
	// answer that is not a completion, a stream without [DONE] or with an
	// error event), FirstError the first of them.
	NonStream  int    `json:"non_stream"`
	Stream     int    `json:"stream"`
	Errors     int    `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	// Abandoned is the streams the load generator left mid-stream on
	// purpose (soakAbandonEvery).
	Abandoned int `json:"abandoned"`
	// Unaccounted is the starts that recorded no outcome: none, unless
	// the soak was interrupted.
	Unaccounted int `json:"unaccounted"`
}

// totalRows sums the rows' requests.
func totalRows(rows []*soakRow) soakTotals {
	var t soakTotals
	for _, r := range rows {
		t.Scheduled += r.Scheduled
		t.Late += r.Late
		t.MaxLateMs = max(t.MaxLateMs, r.MaxLateMs)
		t.NonStream += r.NonStream.Completed
		t.Stream += r.Stream.Completed
		t.Abandoned += r.Stream.Abandoned
		for _, w := range []*window{r.NonStream, r.Stream} {
			t.Errors += w.Errors
			if t.FirstError == "" {
				t.FirstError = w.FirstError
			}
		}
	}
	t.Unaccounted = t.Scheduled - t.NonStream - t.Stream - t.Abandoned - t.Errors
	return t
}

// ledgerState is what the admin API says of the books at one moment.
type ledgerState struct {
	// The audit of every account: ok, its differences, its rows and
	// charge rows.
	AuditOK     bool  `json:"audit_ok"`
	Differences int   `json:"audit_differences"`
	Rows        int64 `json:"rows"`
	Charges     int64 `json:"charges"`
	// Requests is the bench account's charge rows per model (its usage),
	// Cost their sum; Balance and Held its balance and open holds.
	Requests map[string]int64 `json:"requests"`
	Cost     billing.Amount   `json:"cost"`
	Balance  billing.Amount   `json:"balance"`
	Held     billing.Amount   `json:"held"`
}

// soakCheck is one pass criterion of the soak.
type soakCheck struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Result   string `json:"result"` // resultPass or resultFail
}

// soakResult is a whole soak, as -json writes it.
type soakResult struct {
	machine

	Plan soakPlan `json:"plan"`
	// ClosedRate is arcane's non-stream closed-loop rate, measured first;
	// Closed the window that measured it.
	ClosedRate float64 `json:"closed_loop_rate"`
	Closed     *window `json:"closed_loop_window"`
	// Ramp is the open loop's steps (none with -soak-rate); MaxRate the
	// highest rate a step was served at.
	Ramp    []soakStep `json:"ramp,omitempty"`
	MaxRate float64    `json:"max_rate"`
	// Rate is the soak's: half MaxRate unless -soak-rate says otherwise;
	// one request in StreamEvery a stream.
	Rate        float64 `json:"rate"`
	StreamEvery int     `json:"stream_every"`

	Rows    []*soakRow   `json:"rows"`
	Samples []soakSample `json:"samples"`
	Totals  soakTotals   `json:"totals"`
	// HoldsAfter is caddy_arcane_holds_open once the load stopped and
	// Caddy had up to soakSettleWait to finish (-1: not read);
	// SettleSeconds how long that took.
	HoldsAfter    int64   `json:"holds_after"`
	SettleSeconds float64 `json:"settle_seconds"`
	// Idle is a reading of Caddy right before the load; Drained one
	// after it, once its connections closed (or soakDrainWait passed),
	// DrainSeconds after the load's requests were settled.
	Idle         soakSample  `json:"idle"`
	Drained      soakSample  `json:"drained"`
	DrainSeconds float64     `json:"drain_seconds"`
	Before       ledgerState `json:"ledger_before"`
	After        ledgerState `json:"ledger_after"`

	Checks  []soakCheck `json:"checks"`
	Verdict string      `json:"verdict"`
	Elapsed string      `json:"elapsed"`
}

// runSoak is the -soak mode, in the environment run started; it returns
// the exit code.
func runSoak(ctx context.Context, o *options, pin pinning, env *environment, began time.Time) int {
	res := &soakResult{machine: newMachine(pin, env), Plan: newSoakPlan(o.soakDuration), StreamEvery: soakStreamEvery}
	res.printHeader(os.Stdout)
	fmt.Printf("setup: %s (mocks, caddy, account and key)\n", time.Since(began).Round(time.Millisecond))
	code, err := res.run(ctx, o, newBencher(env))
	if err != nil {
		if ctx.Err() != nil {
			return exitInterrupted
		}
		fmt.Fprintln(os.Stderr, "bench -soak:", err)
		env.dumpLogs(os.Stderr)
		return exitSetup
	}
	res.Elapsed = time.Since(began).Round(time.Millisecond).String()
	fmt.Printf("total time: %s\n", res.Elapsed)
	if o.jsonOut != "" {
		if err := writeJSON(o.jsonOut, res); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return exitSetup
		}
		fmt.Printf("raw numbers: %s\n", o.jsonOut)
	}
	if code != exitOK {
		env.dumpLogs(os.Stderr)
	}
	return code
}

// run measures the maximum rate, soaks, checks the books and prints it
// all. An error is a setup failure or an interruption.
func (res *soakResult) run(ctx context.Context, o *options, b *bencher) (int, error) {
	e := b.env
	t := arcaneTarget(e.caddy)

	// The closed-loop rate, as the non-stream scenario measures it.
	sc := nonStreamScenario(o.concurrency)
	if w := b.window(ctx, sc, t, o.warmup); ctx.Err() == nil && w.Completed == 0 {
		return 0, fmt.Errorf("measuring the closed-loop rate: not one request succeeded in the warm-up (%d errors; first: %s)", w.Errors, w.FirstError)
	}
	res.Closed = b.window(ctx, sc, t, o.duration)
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if res.Closed.Errors > 0 || res.Closed.Requests == 0 {
		return 0, fmt.Errorf("measuring the closed-loop rate: %d requests, %d errors (first: %s)", res.Closed.Requests, res.Closed.Errors, res.Closed.FirstError)
	}
	res.ClosedRate = float64(res.Closed.Requests) / res.Closed.Seconds
	fmt.Printf("closed-loop rate: %.0f req/s (arcane, non-stream, closed loop of %d for %s after %s warm-up; caddy CPU %s)\n",
		res.ClosedRate, o.concurrency, o.duration, o.warmup, fmtPct(100*res.Closed.CPUSeconds/res.Closed.WallSeconds))

	how := "half the maximum"
	if o.soakRate > 0 {
		res.Rate, how = o.soakRate, "-soak-rate"
	} else {
		fmt.Printf("maximum rate: the soak's load, open loop, in steps of %s from a quarter of the closed-loop rate, x%.1f each, until one is not served (an error, over 1%% missed starts, or p99 over %s)\n",
			soakStepDuration, soakStepFactor, soakStepP99)
		res.Ramp = b.soakRamp(ctx, t, res.ClosedRate)
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		printRamp(os.Stdout, res.Ramp)
		for _, st := range res.Ramp {
			if st.Served {
				res.MaxRate = st.Rate
			}
		}
		if res.MaxRate == 0 {
			return 0, fmt.Errorf("measuring the maximum rate: not even %.0f req/s was served", res.Ramp[0].Rate)
		}
		res.Rate = res.MaxRate / 2
		fmt.Printf("maximum rate: %.0f req/s (%.2f x the closed-loop rate)\n", res.MaxRate, res.MaxRate/res.ClosedRate)
	}

	// The soak runs on a Caddy of its own, as the slow streams do: the
	// closed loop leaves Caddy connections that sit idle until their
	// timeout (90s) closes them, and a heap sized for 64 requests at once,
	// both of which would show in the soak's first minute.
	e.stop(e.caddy.proc)
	b.client.CloseIdleConnections()
	c, err := e.startCaddy(ctx, "caddy-soak")
	if err != nil {
		return 0, fmt.Errorf("starting a Caddy for the soak: %w", err)
	}
	t = arcaneTarget(c)
	if _, _, err := waitSettled(ctx, c); err != nil {
		return 0, err
	}
	if res.Before, err = readLedger(ctx, c); err != nil {
		return 0, err
	}

	p := res.Plan
	fmt.Printf("soak: %.0f req/s (%s; one in %d a %d-chunk stream, one in %d of those left by the client after %d events; the rest non-stream) for %s, until %s\n\n",
		res.Rate, how, soakStreamEvery, streamTokens, soakAbandonEvery, soakAbandonAfter, p.Duration, time.Now().Add(p.Duration).Format(time.TimeOnly))
	res.Idle = sampleCaddy(ctx, c, time.Now(), 0)
	start := time.Now()
	samples := make(chan []soakSample, 1)
	go func() { samples <- soakWatch(ctx, c, start, p) }()
	res.Rows = b.soakLoad(ctx, t, res.Rate, start, p)
	res.Samples = <-samples
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	res.Totals = totalRows(res.Rows)

	// The books after, once Caddy is done: a request the client gave up
	// on may still be in Caddy, and its charge still to come.
	holds, waited, err := waitSettled(ctx, c)
	if err != nil && ctx.Err() != nil {
		return 0, err
	}
	res.HoldsAfter, res.SettleSeconds = holds, waited.Seconds()
	if res.After, err = readLedger(ctx, c); err != nil {
		return 0, err
	}
	// Then every connection closes, and what the load started is over.
	b.client.CloseIdleConnections()
	drainStart := time.Now()
	res.Drained = drainCaddy(ctx, c, drainStart)
	res.DrainSeconds = time.Since(drainStart).Seconds()
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}

	res.Checks = res.checks()
	res.Verdict = resultPass
	for _, ch := range res.Checks {
		if ch.Result != resultPass {
			res.Verdict = resultFail
		}
	}
	res.print(os.Stdout)
	if res.Verdict != resultPass {
		return exitSoakFailed, nil
	}
	return exitOK, nil
}

// drainCaddy reads Caddy every second from start until none of its
// connections to the load generator or the mocks is open in any state,
// or until soakDrainWait has passed, and returns its last reading: taken
// a second after the connections were all seen closed, so that their
// goroutines have returned.
func drainCaddy(ctx context.Context, c *caddyServer, start time.Time) soakSample {
	closed := false
	for {
		s := sampleCaddy(ctx, c, start, time.Since(start))
		if closed || time.Since(start) >= soakDrainWait {
			return s
		}
		closed = s.ClientSockets == 0 && s.ProviderSockets == 0
		select {
		case <-ctx.Done():
			return s
		case <-time.After(time.Second):
		}
	}
}

// arcaneTarget is the arcane site of a Caddy, with its key.
func arcaneTarget(c *caddyServer) target {
	return target{name: targetArcane, url: "http://127.0.0.1:" + strconv.Itoa(c.params.Arcane) + chatPath,
		auth: "Bearer " + c.key, pid: c.proc.pid()}
}

// soakStep is one step of the ramp that measures the maximum rate.
type soakStep struct {
	Rate      float64 `json:"rate"`
	Scheduled int     `json:"scheduled"`
	Late      int     `json:"late_starts"`
	Errors    int     `json:"errors"`
	P99Ms     float64 `json:"p99_ms"`
	// CPU is Caddy's, in percent of one CPU, from the step's start until
	// its last request finished.
	CPU    float64 `json:"caddy_cpu_pct"`
	Served bool    `json:"served"`
}

// soakRamp runs the soak's load against t in an open loop, one step of
// soakStepDuration at each rate from closed/4 up, soakStepFactor apart,
// until a step is not served or the next would pass closed.
func (b *bencher) soakRamp(ctx context.Context, t target, closed float64) []soakStep {
	var steps []soakStep
	p := soakPlan{Duration: soakStepDuration, RowEvery: soakStepDuration}
	for rate := closed / 4; rate <= closed && ctx.Err() == nil; rate *= soakStepFactor {
		cpu0, cpuErr := cpuTime(t.pid)
		start := time.Now()
		row := b.soakLoad(ctx, t, rate, start, p)[0]
		st := soakStep{Rate: rate, Scheduled: row.Scheduled, Late: row.Late, Errors: row.NonStream.Errors + row.Stream.Errors,
			P99Ms: p99(row.NonStream.latency), CPU: -1}
		if cpu1, err := cpuTime(t.pid); err == nil && cpuErr == nil {
			st.CPU = 100 * (cpu1 - cpu0).Seconds() / time.Since(start).Seconds()
		}
		st.Served = st.Errors == 0 && float64(st.Late) <= goalMaxLateRate*float64(st.Scheduled) && st.P99Ms <= ms(soakStepP99)
		steps = append(steps, st)
		if !st.Served {
			break
		}
	}
	return steps
}

// printRamp shows the ramp's steps.
func printRamp(w io.Writer, steps []soakStep) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "req/s\terrors\tmissed\tp99\tcaddy CPU\tserved\t")
	for _, st := range steps {
		served := "yes"
		if !st.Served {
			served = "no"
		}
		fmt.Fprintf(tw, "%.0f\t%d\t%d/%d\t%s\t%s\t%s\t\n", st.Rate, st.Errors, st.Late, st.Scheduled, fmtMs(st.P99Ms), fmtPct(st.CPU), served)
	}
	tw.Flush()
}

// soakLoad runs the soak's open loop against t: rate requests a second
// from start for p.Duration, on a fixed schedule, each in a goroutine of
// its own, the slot's number deciding its kind (every soakStreamEvery-th
// a stream, every soakAbandonEvery-th of those one the client leaves);
// then it waits for them all. A request counts in the row of
// its start, however late it finishes.
func (b *bencher) soakLoad(ctx context.Context, t target, rate float64, start time.Time, p soakPlan) []*soakRow {
	var rows []*soakRow
	for at := time.Duration(0); at < p.Duration; at += p.RowEvery {
		d := min(p.RowEvery, p.Duration-at)
		rows = append(rows, &soakRow{Start: at.Seconds(), Seconds: d.Seconds(),
			NonStream: &window{Seconds: d.Seconds()}, Stream: &window{Seconds: d.Seconds()}})
	}
	nonStream, stream := nonStreamOpenScenario(rate), streamOpenScenario(rate)
	abandoned := stream
	abandoned.AbandonAfter = soakAbandonAfter
	sched := newSchedule(start, rate)
	defer sched.stop()
	missed := max(sched.interval, soakLateSlack)
	n := max(1, int(p.Duration/sched.interval))
	starts := b.newStarter()
	for i := range n {
		late, ok := sched.wait(ctx, i)
		if !ok {
			break
		}
		row := rows[min(int(time.Duration(i)*sched.interval/p.RowEvery), len(rows)-1)]
		row.Scheduled++
		if late >= missed {
			row.Late++
		}
		row.MaxLateMs = max(row.MaxLateMs, ms(late))
		sc, w := nonStream, row.NonStream
		if i%soakStreamEvery == soakStreamEvery-1 {
			sc, w = stream, row.Stream
			if i/soakStreamEvery%soakAbandonEvery == soakAbandonEvery-1 {
				sc = abandoned
			}
		}
		starts.start(ctx, sc, t, w)
	}
	starts.wait()
	return rows
}

// soakWatch samples Caddy at start and every p.SampleEvery after it until
// the soak ends (or ctx does).
func soakWatch(ctx context.Context, c *caddyServer, start time.Time, p soakPlan) []soakSample {
	out := []soakSample{sampleCaddy(ctx, c, start, 0)}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for at := p.SampleEvery; at <= p.Duration; at += p.SampleEvery {
		timer.Reset(time.Until(start.Add(at)))
		select {
		case <-timer.C:
		case <-ctx.Done():
			return out
		}
		out = append(out, sampleCaddy(ctx, c, start, at))
	}
	return out
}

// sampleCaddy reads Caddy's memory and CPU from /proc, and its goroutines
// and open holds from /metrics, for the sample due at at.
func sampleCaddy(ctx context.Context, c *caddyServer, start time.Time, at time.Duration) soakSample {
	s := soakSample{Seconds: at.Seconds(), ReadSeconds: time.Since(start).Seconds(),
		RSSKiB: -1, AnonKiB: -1, FileKiB: -1, LedgerKiB: -1, CPUSeconds: -1, LoadCPUSeconds: -1, Goroutines: -1, HoldsOpen: -1,
		ClientConns: -1, ProviderConns: -1, ClientSockets: -1, ProviderSockets: -1}
	proc := "/proc/" + strconv.Itoa(c.proc.pid())
	if data, err := os.ReadFile(proc + "/status"); err == nil {
		s.RSSKiB, s.AnonKiB, s.FileKiB = statusKiB(data, "VmRSS:"), statusKiB(data, "RssAnon:"), statusKiB(data, "RssFile:")
	}
	if data, err := os.ReadFile(proc + "/smaps"); err == nil {
		if kib, err := mappedKiB(data, c.params.Storage); err == nil {
			s.LedgerKiB = kib
		}
	}
	if cpu, err := cpuTime(c.proc.pid()); err == nil {
		s.CPUSeconds = cpu.Seconds()
	}
	if cpu, err := cpuTime(os.Getpid()); err == nil {
		s.LoadCPUSeconds = cpu.Seconds()
	}
	if m, err := caddyMetrics(ctx, c); err == nil {
		s.Goroutines, s.HoldsOpen = metricInt(m, "go_goroutines"), metricInt(m, "caddy_arcane_holds_open")
	}
	mocks := []int{addrPort(c.params.Mock16), addrPort(c.params.Mock200), addrPort(c.params.MockSlow)}
	if est, open, err := tcpConns(c.proc.pid(), c.params.Arcane, mocks); err == nil {
		s.ClientConns, s.ProviderConns = est.in, est.out
		s.ClientSockets, s.ProviderSockets = open.in, open.out
	}
	return s
}

// statusKiB is a /proc/<pid>/status field in KiB, or -1.
func statusKiB(data []byte, field string) int64 {
	v, err := parseStatusKiB(data, field)
	if err != nil {
		return -1
	}
	return v
}

// mappedKiB sums the resident memory (Rss) of the mappings of the file
// path in a /proc/<pid>/smaps: 0 when the file is not mapped. A mapping's
// header line ends with the file's path; the field lines after it, up to
// the next header, each start with a name and a colon.
func mappedKiB(smaps []byte, path string) (int64, error) {
	var (
		total int64
		in    bool
	)
	for line := range bytes.Lines(smaps) {
		f := bytes.Fields(line)
		if len(f) == 0 {
			continue
		}
		if !bytes.HasSuffix(f[0], []byte(":")) {
			in = bytes.HasSuffix(bytes.TrimSpace(line), []byte(" "+path))
			continue
		}
		if !in || string(f[0]) != "Rss:" {
			continue
		}
		if len(f) != 3 || string(f[2]) != "kB" {
			return 0, fmt.Errorf("malformed smaps line %q", bytes.TrimSpace(line))
		}
		v, err := strconv.ParseInt(string(f[1]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed smaps line %q", bytes.TrimSpace(line))
		}
		total += v
	}
	return total, nil
}

// caddyMetrics fetches the admin endpoint's /metrics, in Prometheus's
// text format.
func caddyMetrics(ctx context.Context, c *caddyServer) ([]byte, error) {
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", c.params.Admin)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: HTTP %d: %s", resp.StatusCode, snippet(data))
	}
	return data, nil
}

// metricInt is the value of an unlabelled metric in Prometheus's text
// format ("name value [timestamp]"), or -1 when it is not there.
func metricInt(text []byte, name string) int64 {
	for line := range bytes.Lines(text) {
		rest, ok := bytes.CutPrefix(line, []byte(name))
		if !ok || len(rest) == 0 || rest[0] != ' ' {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) == 0 {
			return -1
		}
		v, err := strconv.ParseFloat(string(f[0]), 64)
		if err != nil || !(v >= 0) { // NaN too
			return -1
		}
		return int64(v)
	}
	return -1
}

// accountState is the part of an account the soak reads.
type accountState struct {
	Balance billing.Amount `json:"balance"`
	Held    billing.Amount `json:"held"`
}

// waitSettled waits, up to soakSettleWait, until Caddy is done with every
// request: caddy_arcane_holds_open 0, nothing held on the account, and its
// balance the same in two reads a second apart. It returns the holds read
// last (-1: never read) and how long it waited; the error says why it
// gave up.
func waitSettled(ctx context.Context, c *caddyServer) (holds int64, waited time.Duration, err error) {
	start := time.Now()
	holds = -1
	var (
		last    billing.Amount
		hadLast bool
	)
	for {
		var acct accountState
		m, merr := caddyMetrics(ctx, c)
		aerr := adminGet(ctx, c, "/arcane/accounts/"+c.account, &acct)
		if merr == nil {
			holds = metricInt(m, "caddy_arcane_holds_open")
		}
		if merr == nil && aerr == nil && holds == 0 && acct.Held == 0 && hadLast && acct.Balance == last {
			return 0, time.Since(start), nil
		}
		if aerr == nil {
			last, hadLast = acct.Balance, true
		}
		switch {
		case merr != nil:
			err = merr
		case aerr != nil:
			err = aerr
		default:
			err = fmt.Errorf("caddy not done with the requests after %s: caddy_arcane_holds_open %d, $%s held", soakSettleWait, holds, acct.Held)
		}
		if time.Since(start) >= soakSettleWait {
			return holds, time.Since(start), err
		}
		select {
		case <-ctx.Done():
			return holds, time.Since(start), ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// readLedger reads the audit, and the bench account's usage and balance,
// from the admin API.
func readLedger(ctx context.Context, c *caddyServer) (ledgerState, error) {
	var (
		st    ledgerState
		audit billing.AuditReport
		usage struct {
			Data []billing.UsageRow `json:"data"`
		}
		acct accountState
	)
	if err := adminGet(ctx, c, "/arcane/audit", &audit); err != nil {
		return st, err
	}
	if err := adminGet(ctx, c, "/arcane/usage?account="+c.account, &usage); err != nil {
		return st, err
	}
	if err := adminGet(ctx, c, "/arcane/accounts/"+c.account, &acct); err != nil {
		return st, err
	}
	st.AuditOK, st.Differences, st.Rows, st.Charges = audit.OK, len(audit.Differences), audit.Rows, audit.Charges
	st.Requests = map[string]int64{}
	for _, u := range usage.Data {
		st.Requests[u.Model] += u.Requests
		st.Cost += u.Cost
	}
	st.Balance, st.Held = acct.Balance, acct.Held
	return st, nil
}

// adminGet decodes what a GET of path on a Caddy's admin endpoint answers
// into out. The audit reads every ledger row, so it gets two minutes.
func adminGet(ctx context.Context, c *caddyServer, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	url := fmt.Sprintf("http://127.0.0.1:%d%s", c.params.Admin, path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d: %s", path, resp.StatusCode, snippet(data))
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// flatness is one quantity's steady state over a soak: its mean over the
// first window after the warm-up (Early, of EarlyN samples) and over the
// last window (Late, of LateN samples).
type flatness struct {
	Early, Late   float64
	EarlyN, LateN int
}

// flatOf measures a quantity's flatness in samples of a soak of plan p:
// the samples after Warmup up to Warmup+Window, and those after
// Duration-Window. value picks the quantity; a negative value is a sample
// not read, left out.
func flatOf(samples []soakSample, p soakPlan, value func(soakSample) float64) flatness {
	var f flatness
	earlyFrom, earlyTo := p.Warmup.Seconds(), (p.Warmup + p.Window).Seconds()
	lateFrom := (p.Duration - p.Window).Seconds()
	for _, s := range samples {
		v := value(s)
		if v < 0 {
			continue
		}
		if s.Seconds > earlyFrom && s.Seconds <= earlyTo {
			f.Early += v
			f.EarlyN++
		}
		if s.Seconds > lateFrom {
			f.Late += v
			f.LateN++
		}
	}
	if f.EarlyN > 0 {
		f.Early /= float64(f.EarlyN)
	}
	if f.LateN > 0 {
		f.Late /= float64(f.LateN)
	}
	return f
}

// change is how far Late is from Early, as a fraction of Early.
func (f flatness) change() float64 {
	if f.Early <= 0 {
		return 0
	}
	return f.Late/f.Early - 1
}

// flat says whether both windows have samples and Late is within
// soakFlatTolerance of Early, either way.
func (f flatness) flat() bool {
	c := f.change()
	return f.EarlyN > 0 && f.LateN > 0 && f.Early > 0 && c <= soakFlatTolerance && c >= -soakFlatTolerance
}

// sampleMemoryMiB is a sample's resident memory without the ledger's
// mapped file, in MiB; -1 when not read.
func sampleMemoryMiB(s soakSample) float64 { return mib(s.memoryKiB()) }

// sampleRSSMiB is a sample's VmRSS in MiB; -1 when not read.
func sampleRSSMiB(s soakSample) float64 { return mib(s.RSSKiB) }

// sampleLedgerMiB is a sample's resident pages of the ledger's mapped
// file, in MiB; -1 when not read.
func sampleLedgerMiB(s soakSample) float64 { return mib(s.LedgerKiB) }

// sampleGoroutines is a sample's goroutines; -1 when not read.
func sampleGoroutines(s soakSample) float64 { return float64(s.Goroutines) }

// sampleClientConns, sampleProviderConns and sampleOwnGoroutines are a
// sample's connections and the goroutines neither they nor the requests
// in flight account for; -1 when not read.
func sampleClientConns(s soakSample) float64   { return float64(s.ClientConns) }
func sampleProviderConns(s soakSample) float64 { return float64(s.ProviderConns) }
func sampleOwnGoroutines(s soakSample) float64 { return float64(s.ownGoroutines()) }

// sampleHolds is a sample's open holds; -1 when not read.
func sampleHolds(s soakSample) float64 { return float64(s.HoldsOpen) }

// mib is KiB in MiB, keeping -1 for a value not read.
func mib(kib int64) float64 {
	if kib < 0 {
		return -1
	}
	return float64(kib) / 1024
}

// checks judges the soak on its pass criteria.
func (res *soakResult) checks() []soakCheck {
	p, t := res.Plan, res.Totals
	attempts := t.NonStream + t.Stream + t.Abandoned + t.Errors
	flatTarget := fmt.Sprintf("last %s within %.0f%% of the first %s after %s", p.Window, 100*soakFlatTolerance, p.Window, p.Warmup)
	mem, own := flatOf(res.Samples, p, sampleMemoryMiB), flatOf(res.Samples, p, sampleOwnGoroutines)

	checks := []soakCheck{
		{Name: "errors", Target: "0",
			Measured: fmt.Sprintf("%d of %d (%d non-stream and %d streams answered, %d streams left by the client after %d events)",
				t.Errors+t.Unaccounted, attempts+t.Unaccounted, t.NonStream, t.Stream, t.Abandoned, soakAbandonAfter),
			Result: passIf(t.Errors == 0 && t.Unaccounted == 0 && attempts > 0)},
		{Name: "missed starts", Target: fmt.Sprintf("<= %.0f%%", 100*goalMaxLateRate),
			Measured: fmt.Sprintf("%d of %d (%s late or more; latest %.1fms)", t.Late, t.Scheduled, soakLateSlack, t.MaxLateMs),
			Result:   passIf(t.Scheduled > 0 && float64(t.Late) <= goalMaxLateRate*float64(t.Scheduled))},
		{Name: "resident memory flat (VmRSS without the ledger's mapped file)", Target: flatTarget,
			Measured: fmtFlat(mem, "%.1f MiB"), Result: passIf(mem.flat())},
		{Name: "goroutines flat, less one a client connection, two a provider connection and one a request in flight", Target: flatTarget,
			Measured: fmtFlat(own, "%.0f"), Result: passIf(own.flat())},
		{Name: "goroutines after the load", Target: fmt.Sprintf("every connection closed within %s; at most %.0f%% more than before the load", soakDrainWait, 100*soakFlatTolerance),
			Measured: res.fmtDrained(), Result: passIf(res.drained())},
		{Name: "holds open after the load", Target: "0",
			Measured: fmt.Sprintf("%s (Caddy done %.1fs after the load)", fmtMaybe(res.HoldsAfter), res.SettleSeconds), Result: passIf(res.HoldsAfter == 0)},
	}
	checks = append(checks, ledgerChecks(res.Before, res.After, t)...)
	return checks
}

// drained says whether the soak left Caddy as it found it: no
// connection open, in any state, once the load's have had time to close,
// and at most soakFlatTolerance more goroutines than before the load
// (fewer is no leak: a goroutine Caddy started with may have ended). It
// is the soak's leak check. A goroutine that a request leaves behind
// stays, and so does a connection that Caddy never closes, half closed
// once its peer has gone.
func (res *soakResult) drained() bool {
	before, after := res.Idle.Goroutines, res.Drained.Goroutines
	return before > 0 && after >= 0 && res.Drained.ClientSockets == 0 && res.Drained.ProviderSockets == 0 &&
		float64(after-before) <= soakFlatTolerance*float64(before)
}

// fmtDrained shows the goroutines before and after the load, and the
// connections still open after it.
func (res *soakResult) fmtDrained() string {
	d := res.Drained
	return fmt.Sprintf("%s -> %s; %s client and %s provider connections open %.0fs after the load generator closed its own",
		fmtMaybe(res.Idle.Goroutines), fmtMaybe(d.Goroutines), fmtMaybe(d.ClientSockets), fmtMaybe(d.ProviderSockets), res.DrainSeconds)
}

// ledgerChecks judges the books after the soak against the books before
// it and what the soak saw: the audit ok, one charge row per answered
// request of each kind and per stream its client left (it was sent part
// of the answer, which is charged), and the balance down by the charges'
// sum with no hold left. A request that failed may or may not have been
// charged, so each failure widens the charge count's range by one.
func ledgerChecks(before, after ledgerState, t soakTotals) []soakCheck {
	ok := int64(t.NonStream + t.Stream + t.Abandoned)
	charges := after.Charges - before.Charges
	non, str := after.Requests[model16]-before.Requests[model16], after.Requests[model200]-before.Requests[model200]
	chargesOK := charges == non+str && charges >= ok && charges <= ok+int64(t.Errors+t.Unaccounted)
	if t.Errors+t.Unaccounted == 0 {
		chargesOK = chargesOK && non == int64(t.NonStream) && str == int64(t.Stream+t.Abandoned)
	}
	cost := after.Cost - before.Cost
	drop := before.Balance - after.Balance
	return []soakCheck{
		{Name: "audit", Target: "ok",
			Measured: fmt.Sprintf("ok %t, %d differences (%d rows, %d charges)", after.AuditOK, after.Differences, after.Rows, after.Charges),
			Result:   passIf(after.AuditOK && after.Differences == 0)},
		{Name: "ledger charges", Target: "one per answered request and per stream left mid-way",
			Measured: fmt.Sprintf("%d new charge rows (usage: %s %d, %s %d) for %d (%d non-stream and %d streams answered, %d streams left)",
				charges, model16, non, model200, str, ok, t.NonStream, t.Stream, t.Abandoned),
			Result: passIf(chargesOK)},
		{Name: "balance", Target: "down by the charges' sum, nothing held",
			Measured: fmt.Sprintf("down $%s, charges $%s, held $%s", drop, cost, after.Held),
			Result:   passIf(drop == cost && cost > 0 && after.Held == 0)},
	}
}

// fmtFlat shows a flatness with its means in format.
func fmtFlat(f flatness, format string) string {
	if f.EarlyN == 0 || f.LateN == 0 {
		return fmt.Sprintf("not enough samples (%d early, %d late)", f.EarlyN, f.LateN)
	}
	return fmt.Sprintf(format+" -> "+format+" (%+.1f%%)", f.Early, f.Late, 100*f.change())
}

// fmtMaybe is a value read, or n/a for -1.
func fmtMaybe(v int64) string {
	if v < 0 {
		return "n/a"
	}
	return strconv.FormatInt(v, 10)
}

// printHeader shows the machine and the plan, before the soak.
func (res *soakResult) printHeader(w io.Writer) {
	fmt.Fprintf(w, "arcane soak: %s %s, caddy %s\n", res.Go, res.OS, res.Caddy)
	fmt.Fprintf(w, "CPUs: %d; taskset %s (allowed CPUs: load generator %s, caddy %s); GOMAXPROCS of the load generator %d\n",
		res.CPUs, res.PinNote, res.LoadCPUs, res.ServerCPUs, res.GOMAXPROCS)
	p := res.Plan
	fmt.Fprintf(w, "plan: %s; caddy read every %s; warm-up %s; flat: the mean of the last %s within %.0f%% of the first %s after the warm-up\n",
		p.Duration, p.SampleEvery, p.Warmup, p.Window, 100*soakFlatTolerance, p.Window)
}

// print shows the time series, the criteria and the verdict.
func (res *soakResult) print(w io.Writer) {
	fmt.Fprintf(w, "== soak: arcane at %.0f req/s for %s; each line the requests started in it, and caddy's readings in it (means)\n",
		res.Rate, res.Plan.Duration)
	fmt.Fprintln(w, "   left = streams the client left mid-way; memory = VmRSS without the ledger's mapped file (map); p99 of non-stream requests, TTFB p99 of streams; missed starts")
	fmt.Fprintln(w, "   conns in/out = Caddy's connections from the load generator and to the mocks; holds = requests in flight; own = goroutines less one an in, two an out and one a hold")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "until\treq/s\tstreams/s\tleft\terrors\tmissed\tp99\tTTFB p99\tcaddy CPU\tgen CPU\tmemory\tVmRSS\tmap\tgoroutines\tconns in\tout\tholds\town\t")
	caddyCPU := func(s soakSample) float64 { return s.CPUSeconds }
	loadCPU := func(s soakSample) float64 { return s.LoadCPUSeconds }
	for _, r := range res.Rows {
		end := r.Start + r.Seconds
		in := func(s soakSample) bool { return s.Seconds > r.Start && s.Seconds <= end }
		fmt.Fprintf(tw, "%s\t%.0f\t%.1f\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			time.Duration(end*float64(time.Second)).Round(time.Second),
			float64(r.NonStream.Completed+r.Stream.Completed)/r.Seconds, float64(r.Stream.Completed)/r.Seconds, r.Stream.Abandoned,
			r.NonStream.Errors+r.Stream.Errors, r.Late, fmtMs(p99(r.NonStream.latency)), fmtMs(p99(r.Stream.ttfb)),
			fmtPct(cpuBetween(res.Samples, r.Start, end, caddyCPU)), fmtPct(cpuBetween(res.Samples, r.Start, end, loadCPU)),
			fmtMean(res.Samples, in, sampleMemoryMiB, "%.1f MiB"), fmtMean(res.Samples, in, sampleRSSMiB, "%.1f MiB"),
			fmtMean(res.Samples, in, sampleLedgerMiB, "%.1f MiB"), fmtMean(res.Samples, in, sampleGoroutines, "%.0f"),
			fmtMean(res.Samples, in, sampleClientConns, "%.0f"), fmtMean(res.Samples, in, sampleProviderConns, "%.0f"),
			fmtMean(res.Samples, in, sampleHolds, "%.1f"), fmtMean(res.Samples, in, sampleOwnGoroutines, "%.0f"))
	}
	tw.Flush()
	if t := res.Totals; t.Errors > 0 {
		fmt.Fprintf(w, "  first error: %s\n", t.FirstError)
	}
	fmt.Fprintf(w, "  before the load: goroutines %s, conns in %s, out %s; %.0fs after the load generator closed its connections: goroutines %s, conns in %s, out %s (in any state)\n",
		fmtMaybe(res.Idle.Goroutines), fmtMaybe(res.Idle.ClientSockets), fmtMaybe(res.Idle.ProviderSockets), res.DrainSeconds,
		fmtMaybe(res.Drained.Goroutines), fmtMaybe(res.Drained.ClientSockets), fmtMaybe(res.Drained.ProviderSockets))
	fmt.Fprintln(w)

	fmt.Fprintln(w, "== soak criteria (issue 9)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  criterion\ttarget\tmeasured\tresult")
	for _, c := range res.Checks {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Name, c.Target, c.Measured, c.Result)
	}
	tw.Flush()
	rss, ledger := flatOf(res.Samples, res.Plan, sampleRSSMiB), flatOf(res.Samples, res.Plan, sampleLedgerMiB)
	fmt.Fprintf(w, "  (not judged: VmRSS %s, of which the ledger's mapped file %s)\n", fmtFlat(rss, "%.1f MiB"), fmtFlat(ledger, "%.1f MiB"))
	gr, cin, cout := flatOf(res.Samples, res.Plan, sampleGoroutines), flatOf(res.Samples, res.Plan, sampleClientConns), flatOf(res.Samples, res.Plan, sampleProviderConns)
	fmt.Fprintf(w, "  (not judged: goroutines in all %s, with client connections %s and provider connections %s)\n",
		fmtFlat(gr, "%.0f"), fmtFlat(cin, "%.0f"), fmtFlat(cout, "%.0f"))
	fmt.Fprintf(w, "soak: %s\n\n", res.Verdict)
}

// fmtMean is the mean of a quantity over the samples that in selects, in
// format; n/a when none was read.
func fmtMean(samples []soakSample, in func(soakSample) bool, value func(soakSample) float64, format string) string {
	var (
		sum float64
		n   int
	)
	for _, s := range samples {
		if v := value(s); in(s) && v >= 0 {
			sum += v
			n++
		}
	}
	if n == 0 {
		return "n/a"
	}
	return fmt.Sprintf(format, sum/float64(n))
}

// cpuBetween is a process's CPU, in percent of one CPU, between the
// samples due at from and at to (seconds into the soak), over the time
// between their reads; cpu picks the process's CPU time from a sample. It
// is -1 when either sample is missing.
func cpuBetween(samples []soakSample, from, to float64, cpu func(soakSample) float64) float64 {
	a, b := -1, -1
	for i, s := range samples {
		if math.Abs(s.Seconds-from) < 1e-6 && cpu(s) >= 0 {
			a = i
		}
		if math.Abs(s.Seconds-to) < 1e-6 && cpu(s) >= 0 {
			b = i
		}
	}
	if a < 0 || b < 0 || samples[b].ReadSeconds <= samples[a].ReadSeconds {
		return -1
	}
	return 100 * (cpu(samples[b]) - cpu(samples[a])) / (samples[b].ReadSeconds - samples[a].ReadSeconds)
}

// p99 is the 99th percentile of unsorted durations, in milliseconds; it
// sorts them.
func p99(d []time.Duration) float64 {
	slices.Sort(d)
	return ms(percentile(d, 99))
}

// writeJSON writes v, indented, to path.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
