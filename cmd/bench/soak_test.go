package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcaneapi/caddy-arcane/billing"
)

func TestNewSoakPlan(t *testing.T) {
	for _, tc := range []struct {
		d                           time.Duration
		sample, row, warmup, window time.Duration
		wantRows                    int
	}{
		{10 * time.Minute, 5 * time.Second, time.Minute, time.Minute, time.Minute, 10},
		{time.Hour, 5 * time.Second, time.Minute, time.Minute, time.Minute, 60},
		{time.Minute, time.Second, 6 * time.Second, 6 * time.Second, 18 * time.Second, 10},
		{30 * time.Second, time.Second, 3 * time.Second, 3 * time.Second, 9 * time.Second, 10},
		{5 * time.Minute, 2 * time.Second, 30 * time.Second, 30 * time.Second, time.Minute, 10},
	} {
		p := newSoakPlan(tc.d)
		if p.SampleEvery != tc.sample || p.RowEvery != tc.row || p.Warmup != tc.warmup || p.Window != tc.window {
			t.Errorf("%s: plan %+v, want samples every %s, rows of %s, warm-up %s, windows of %s", tc.d, p, tc.sample, tc.row, tc.warmup, tc.window)
		}
		if p.Warmup+2*p.Window > p.Duration {
			t.Errorf("%s: the windows overlap: %+v", tc.d, p)
		}
		if rows := int((p.Duration + p.RowEvery - 1) / p.RowEvery); rows != tc.wantRows {
			t.Errorf("%s: %d rows, want %d", tc.d, rows, tc.wantRows)
		}
	}
}

// series is a soak's samples every p.SampleEvery from 0, each with the
// goroutines and VmRSS (KiB) that value gives for its time, and no ledger
// mapped.
func series(p soakPlan, value func(at time.Duration) int64) []soakSample {
	var out []soakSample
	for at := time.Duration(0); at <= p.Duration; at += p.SampleEvery {
		v := value(at)
		out = append(out, soakSample{Seconds: at.Seconds(), Goroutines: v, RSSKiB: v, LedgerKiB: 0})
	}
	return out
}

func TestFlatness(t *testing.T) {
	p := newSoakPlan(10 * time.Minute) // warm-up 1m; windows (1m, 2m] and (9m, 10m]
	for _, tc := range []struct {
		name  string
		value func(at time.Duration) int64
		want  bool
	}{
		{"constant", func(time.Duration) int64 { return 1000 }, true},
		{"warm-up ignored", func(at time.Duration) int64 {
			if at <= time.Minute {
				return 100
			}
			return 1000
		}, true},
		{"up 9%", func(at time.Duration) int64 {
			if at > 9*time.Minute {
				return 1090
			}
			return 1000
		}, true},
		{"up 11%", func(at time.Duration) int64 {
			if at > 9*time.Minute {
				return 1110
			}
			return 1000
		}, false},
		{"down 11%", func(at time.Duration) int64 {
			if at > 9*time.Minute {
				return 890
			}
			return 1000
		}, false},
		// A leak of 1% of the start a minute stays within 10% over ten
		// minutes (+8%); three times that does not (+23%).
		{"slow leak", func(at time.Duration) int64 { return 1000 + int64(at/time.Second)/6 }, true},
		{"leak", func(at time.Duration) int64 { return 1000 + int64(at/time.Second)/2 }, false},
		{"a spike between the windows", func(at time.Duration) int64 {
			if at > 4*time.Minute && at < 6*time.Minute {
				return 5000
			}
			return 1000
		}, true},
		{"nothing read", func(time.Duration) int64 { return -1 }, false},
		{"nothing read at the end", func(at time.Duration) int64 {
			if at > 9*time.Minute {
				return -1
			}
			return 1000
		}, false},
		{"zero", func(time.Duration) int64 { return 0 }, false},
	} {
		s := series(p, tc.value)
		for _, q := range []struct {
			name  string
			value func(soakSample) float64
		}{{"goroutines", sampleGoroutines}, {"memory", sampleMemoryMiB}} {
			if f := flatOf(s, p, q.value); f.flat() != tc.want {
				t.Errorf("%s, %s: %+v (change %+.1f%%): flat %t, want %t", tc.name, q.name, f, 100*f.change(), f.flat(), tc.want)
			}
		}
	}

	// Every window gets its samples, the bounds as documented: twelve
	// samples of 5s in each minute.
	f := flatOf(series(p, func(time.Duration) int64 { return 1 }), p, sampleGoroutines)
	if f.EarlyN != 12 || f.LateN != 12 {
		t.Errorf("samples in the windows: %d and %d, want 12 and 12", f.EarlyN, f.LateN)
	}

	// Memory is judged without the ledger's mapped file: VmRSS growing
	// by the ledger's pages alone is flat.
	s := series(p, func(time.Duration) int64 { return 100 << 10 })
	for i := range s {
		s[i].LedgerKiB = int64(i) * 1024
		s[i].RSSKiB += s[i].LedgerKiB
	}
	if f := flatOf(s, p, sampleMemoryMiB); !f.flat() || f.Early != 100 {
		t.Errorf("memory without the ledger: %+v, want flat at 100 MiB", f)
	}
	if f := flatOf(s, p, sampleRSSMiB); f.flat() {
		t.Errorf("VmRSS with the ledger: %+v, want growing", f)
	}
	s[len(s)-1].LedgerKiB = -1 // smaps not read: the sample does not count
	if f := flatOf(s, p, sampleMemoryMiB); f.LateN != 11 {
		t.Errorf("a sample without smaps counted: %+v", f)
	}
}

// soakRows makes rows of one second from windows filled by outcomes:
// ok non-stream and streams answered, and the errors given, per row.
func soakRows(n, nonStream, streams int, errs ...error) []*soakRow {
	var rows []*soakRow
	for i := range n {
		r := &soakRow{Start: float64(i), Seconds: 1, Scheduled: nonStream + streams + len(errs),
			NonStream: &window{Seconds: 1}, Stream: &window{Seconds: 1}}
		for range nonStream {
			r.NonStream.record(outcome{latency: time.Millisecond}, true, false)
		}
		for range streams {
			r.Stream.record(outcome{latency: time.Millisecond, ttfb: time.Millisecond, events: 200}, true, true)
		}
		for _, err := range errs {
			r.Stream.record(outcome{err: err}, true, true)
		}
		rows = append(rows, r)
	}
	return rows
}

func TestSoakErrorAccounting(t *testing.T) {
	tot := totalRows(soakRows(3, 99, 1))
	if tot.Scheduled != 300 || tot.NonStream != 297 || tot.Stream != 3 || tot.Errors != 0 || tot.Unaccounted != 0 {
		t.Errorf("clean totals %+v", tot)
	}
	res := &soakResult{Totals: tot}
	if c := res.checks()[0]; c.Name != "errors" || c.Result != resultPass {
		t.Errorf("no error: %+v", c)
	}

	tot = totalRows(soakRows(2, 99, 0, errors.New("stream ended without [DONE] after 3 events")))
	if tot.Errors != 2 || tot.FirstError != "stream ended without [DONE] after 3 events" || tot.Unaccounted != 0 {
		t.Errorf("totals with errors %+v", tot)
	}
	res = &soakResult{Totals: tot}
	if c := res.checks()[0]; c.Result != resultFail || !strings.HasPrefix(c.Measured, "2 of 200 ") {
		t.Errorf("two errors: %+v", c)
	}

	// A start that recorded nothing is an error too.
	rows := soakRows(1, 10, 0)
	rows[0].Scheduled++
	tot = totalRows(rows)
	if tot.Unaccounted != 1 {
		t.Errorf("unaccounted %d, want 1", tot.Unaccounted)
	}
	res = &soakResult{Totals: tot}
	if c := res.checks()[0]; c.Result != resultFail {
		t.Errorf("unaccounted start: %+v", c)
	}

	// Nothing sent is no pass.
	res = &soakResult{}
	if c := res.checks()[0]; c.Result != resultFail {
		t.Errorf("nothing sent: %+v", c)
	}
}

func TestSoakMissedStarts(t *testing.T) {
	for _, tc := range []struct {
		late int
		want string
	}{{0, resultPass}, {10, resultPass}, {11, resultFail}} {
		rows := soakRows(1, 1000, 0)
		rows[0].Late = tc.late
		res := &soakResult{Totals: totalRows(rows)}
		if c := res.checks()[1]; c.Name != "missed starts" || c.Result != tc.want {
			t.Errorf("%d of 1000 late: %+v, want %s", tc.late, c, tc.want)
		}
	}
}

func TestLedgerChecks(t *testing.T) {
	before := ledgerState{AuditOK: true, Charges: 1000, Requests: map[string]int64{model16: 1000},
		Cost: 40 * billing.Dollar / 1000, Balance: 1_000_000 * billing.Dollar}
	// after is the books once n non-stream requests and s streams were
	// charged, at 44 and 440 micro-dollars.
	after := func(n, s int64) ledgerState {
		cost := billing.Amount(44*n + 440*s)
		return ledgerState{AuditOK: true, Charges: before.Charges + n + s,
			Requests: map[string]int64{model16: before.Requests[model16] + n, model200: s},
			Cost:     before.Cost + cost, Balance: before.Balance - cost}
	}
	results := func(cs []soakCheck) string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Result)
		}
		return strings.Join(out, " ")
	}
	clean := soakTotals{Scheduled: 1005, NonStream: 1000, Stream: 5}
	for _, tc := range []struct {
		name   string
		after  ledgerState
		totals soakTotals
		want   string // audit, charges, balance
	}{
		{"all charged", after(1000, 5), clean, "PASS PASS PASS"},
		{"a charge missing", after(999, 5), clean, "PASS FAIL PASS"},
		{"a charge too many", after(1001, 5), clean, "PASS FAIL PASS"},
		{"charges of the wrong kind", after(1001, 4), clean, "PASS FAIL PASS"},
		{"audit differences", func() ledgerState { a := after(1000, 5); a.AuditOK, a.Differences = false, 2; return a }(), clean, "FAIL PASS PASS"},
		{"balance off", func() ledgerState { a := after(1000, 5); a.Balance--; return a }(), clean, "PASS PASS FAIL"},
		{"still held", func() ledgerState { a := after(1000, 5); a.Held = 1; return a }(), clean, "PASS PASS FAIL"},
		{"usage and audit disagree", func() ledgerState { a := after(1000, 5); a.Charges++; return a }(), clean, "PASS FAIL PASS"},
		{"nothing charged", after(0, 0), soakTotals{}, "PASS PASS FAIL"},
		// A failed request may or may not have been charged.
		{"failed and charged", after(1001, 5), soakTotals{NonStream: 1000, Stream: 5, Errors: 1}, "PASS PASS PASS"},
		{"failed, not charged", after(1000, 5), soakTotals{NonStream: 1000, Stream: 5, Errors: 1}, "PASS PASS PASS"},
		{"more charged than sent", after(1002, 5), soakTotals{NonStream: 1000, Stream: 5, Errors: 1}, "PASS FAIL PASS"},
		// A stream its client left was sent part of its answer: charged.
		{"left streams charged", after(1000, 7), soakTotals{NonStream: 1000, Stream: 5, Abandoned: 2}, "PASS PASS PASS"},
		{"a left stream not charged", after(1000, 6), soakTotals{NonStream: 1000, Stream: 5, Abandoned: 2}, "PASS FAIL PASS"},
	} {
		if got := results(ledgerChecks(before, tc.after, tc.totals)); got != tc.want {
			t.Errorf("%s: %s, want %s: %+v", tc.name, got, tc.want, ledgerChecks(before, tc.after, tc.totals))
		}
	}
}

func TestSoakVerdictChecks(t *testing.T) {
	// A clean soak passes every check; holds left open fail theirs.
	p := newSoakPlan(time.Minute)
	res := &soakResult{Plan: p, Totals: totalRows(soakRows(1, 100, 1)),
		Samples: series(p, func(time.Duration) int64 { return 5000 }),
		Idle:    soakSample{Goroutines: 27}, Drained: soakSample{Goroutines: 26},
		Before: ledgerState{AuditOK: true, Requests: map[string]int64{}, Balance: 100},
		After:  ledgerState{AuditOK: true, Charges: 101, Requests: map[string]int64{model16: 100, model200: 1}, Cost: 7, Balance: 93}}
	for _, c := range res.checks() {
		if c.Result != resultPass {
			t.Errorf("clean soak: %+v", c)
		}
	}
	res.HoldsAfter = 3
	for _, c := range res.checks() {
		if (c.Name == "holds open after the load") != (c.Result == resultFail) {
			t.Errorf("holds left open: %+v", c)
		}
	}
}

// stallSeries is a 10-minute soak's samples with 27 goroutines of
// Caddy's own throughout and a stall in the last minute that grows both
// pools and the requests in flight: the goroutines in all go up 86%.
func stallSeries(p soakPlan) []soakSample {
	s := series(p, func(time.Duration) int64 { return 0 })
	for i := range s {
		in, out, holds := int64(30), int64(25), int64(4)
		if s[i].Seconds > 540 {
			in, out, holds = 60, 50, 20
		}
		s[i].ClientConns, s[i].ProviderConns, s[i].HoldsOpen = in, out, holds
		s[i].Goroutines = 27 + in + 2*out + holds
		s[i].RSSKiB = 70 << 10
	}
	return s
}

// TestSoakGoroutines: the goroutines are judged without those of the
// connections, which follow the pools, and by the count after the load
// once every connection closed, which catches what a leak leaves.
func TestSoakGoroutines(t *testing.T) {
	p := newSoakPlan(10 * time.Minute)
	// What the connections and the requests do not account for stays
	// flat through a stall.
	s := stallSeries(p)
	if f := flatOf(s, p, sampleGoroutines); f.flat() {
		t.Errorf("goroutines in all: %+v, want not flat", f)
	}
	if f := flatOf(s, p, sampleOwnGoroutines); !f.flat() || f.Early != 27 || f.Late != 27 {
		t.Errorf("goroutines less the connections' and the requests': %+v, want 27 throughout", f)
	}
	s[len(s)-1].HoldsOpen = -1 // /metrics not read: the sample does not count
	if f := flatOf(s, p, sampleOwnGoroutines); f.LateN != 11 {
		t.Errorf("a sample without holds counted: %+v", f)
	}
	s[len(s)-1].HoldsOpen = 20
	// One goroutine left behind every 10 seconds (1 request in 12,900
	// at the soak's 1,290 req/s) is not flat.
	for i := range s {
		s[i].Goroutines += int64(s[i].Seconds) / 10
	}
	if f := flatOf(s, p, sampleOwnGoroutines); f.flat() {
		t.Errorf("a leak: %+v, want not flat", f)
	}

	for _, tc := range []struct {
		name        string
		idle, after soakSample
		want        bool
	}{
		{"back", soakSample{Goroutines: 27}, soakSample{Goroutines: 26}, true},
		{"back, up 10%", soakSample{Goroutines: 30}, soakSample{Goroutines: 33}, true},
		{"fewer than before: no leak", soakSample{Goroutines: 30}, soakSample{Goroutines: 20}, true},
		{"goroutines left", soakSample{Goroutines: 27}, soakSample{Goroutines: 30}, false},
		{"a provider connection left", soakSample{Goroutines: 27}, soakSample{Goroutines: 27, ProviderSockets: 1}, false},
		{"a client connection left, half closed", soakSample{Goroutines: 27}, soakSample{Goroutines: 27, ClientSockets: 1}, false},
		{"not read before", soakSample{Goroutines: -1}, soakSample{Goroutines: 26}, false},
		{"not read after", soakSample{Goroutines: 27}, soakSample{Goroutines: -1, ClientSockets: -1, ProviderSockets: -1}, false},
		{"connections not read after", soakSample{Goroutines: 27}, soakSample{Goroutines: 27, ClientSockets: -1, ProviderSockets: -1}, false},
	} {
		res := &soakResult{Idle: tc.idle, Drained: tc.after}
		if got := res.drained(); got != tc.want {
			t.Errorf("%s: drained %t, want %t (%s)", tc.name, got, tc.want, res.fmtDrained())
		}
	}
}

// TestSoakGoroutineChecks runs the soak's verdict over a stall and over
// leaks: the checks judge what TestSoakGoroutines holds them to.
func TestSoakGoroutineChecks(t *testing.T) {
	p := newSoakPlan(10 * time.Minute)
	verdicts := func(res *soakResult) map[string]string {
		out := map[string]string{}
		for _, c := range res.checks() {
			out[c.Name] = c.Result
		}
		return out
	}
	const (
		during = "goroutines flat, less one a client connection, two a provider connection and one a request in flight"
		after  = "goroutines after the load"
	)
	soak := func(leakEvery10s bool, drained soakSample) *soakResult {
		s := stallSeries(p)
		for i := range s {
			if leakEvery10s {
				s[i].Goroutines += int64(s[i].Seconds) / 10
			}
		}
		return &soakResult{Plan: p, Samples: s, Idle: soakSample{Goroutines: 27}, Drained: drained}
	}
	clean := soakSample{Goroutines: 26}
	for _, tc := range []struct {
		name                  string
		res                   *soakResult
		wantDuring, wantAfter string
	}{
		{"a stall", soak(false, clean), resultPass, resultPass},
		{"a goroutine left every 10s", soak(true, soakSample{Goroutines: 27 + 60}), resultFail, resultFail},
		{"a connection left", soak(false, soakSample{Goroutines: 28, ClientSockets: 1}), resultPass, resultFail},
	} {
		v := verdicts(tc.res)
		if v[during] != tc.wantDuring || v[after] != tc.wantAfter {
			t.Errorf("%s: during the load %q, after it %q; want %q and %q", tc.name, v[during], v[after], tc.wantDuring, tc.wantAfter)
		}
	}
}

func TestMetricInt(t *testing.T) {
	text := []byte(`# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 245
go_goroutines_extra 7
caddy_arcane_holds_open{shard="x"} 9
caddy_arcane_holds_open 3 1700000000000
caddy_arcane_requests_total{model="bench-16",outcome="ok",code="200"} 1.5e+06
`)
	for _, tc := range []struct {
		name string
		want int64
	}{
		{"go_goroutines", 245},
		{"caddy_arcane_holds_open", 3},
		{"caddy_arcane_requests_total", -1}, // labelled only
		{"go_gorout", -1},
		{"missing", -1},
	} {
		if got := metricInt(text, tc.name); got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, got, tc.want)
		}
	}
	if got := metricInt([]byte("go_goroutines NaN\n"), "go_goroutines"); got != -1 {
		t.Errorf("NaN read as %d", got)
	}
}

func TestMappedKiB(t *testing.T) {
	const db = "/tmp/arcane-bench-1/caddy/bench.db"
	smaps := []byte(`00400000-02000000 r-xp 00000000 fd:00 11 /work/main/bin/caddy-bench
Size:              28672 kB
Rss:               20000 kB
VmFlags: rd ex mr mw me
7f0000000000-7f0002000000 r--s 00000000 fd:00 42 ` + db + `
Size:              32768 kB
Rss:                1234 kB
Pss:                1234 kB
VmFlags: rd sh mr me ms
7f0002000000-7f0002100000 rw-p 00000000 00:00 0
Size:               1024 kB
Rss:                 512 kB
7f1000000000-7f1040000000 r--s 00000000 fd:00 42 ` + db + `
Size:            1048576 kB
Rss:                 100 kB
`)
	if got, err := mappedKiB(smaps, db); err != nil || got != 1334 {
		t.Errorf("mappedKiB = %d, %v; want 1334", got, err)
	}
	if got, err := mappedKiB(smaps, "/elsewhere/bench.db"); err != nil || got != 0 {
		t.Errorf("a file not mapped: %d, %v; want 0", got, err)
	}
	bad := bytes.Replace(smaps, []byte("1234 kB"), []byte("12x4 kB"), 1)
	if _, err := mappedKiB(bad, db); err == nil {
		t.Error("mappedKiB accepted a malformed Rss line")
	}
}

// TestSoakLoad runs the soak's open loop against a fake arcane: the mix
// (every soakStreamEvery-th request a stream, every soakAbandonEvery-th
// stream left by its client), the rows by start time, failures of both
// kinds counted as errors, and a left stream left for real: the server
// sees its client go before the stream's end.
func TestSoakLoad(t *testing.T) {
	var nonStreams, streams atomic.Int64
	left := make(chan bool, 1)
	event := []byte("data: {\"choices\":[]}\n\n")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !bytes.Contains(body, []byte(`"stream":true`)) {
			if nonStreams.Add(1) == 7 {
				http.Error(w, `{"error":{"message":"busy"}}`, http.StatusServiceUnavailable)
				return
			}
			w.Write([]byte(`{"choices":[{"finish_reason":"stop"}]}`))
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		n := streams.Add(1)
		for range soakAbandonAfter {
			w.Write(event)
		}
		switch n {
		case 2: // the first stream ends without [DONE], the second with it
			w.Write([]byte("data: [DONE]\n\n"))
		case soakAbandonEvery: // its client leaves it
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				left <- true
			case <-time.After(10 * time.Second):
				left <- false
			}
		}
	}))
	defer srv.Close()
	b := &bencher{client: srv.Client()}
	p := soakPlan{Duration: 750 * time.Millisecond, RowEvery: 250 * time.Millisecond}
	rows := b.soakLoad(context.Background(), target{name: targetArcane, url: srv.URL + chatPath}, 800, time.Now(), p)
	if len(rows) != 3 || rows[0].Scheduled != 200 || rows[1].Scheduled != 200 || rows[2].Scheduled != 200 {
		t.Fatalf("%d rows, scheduled %d and %d; want 3 rows of 200", len(rows), rows[0].Scheduled, rows[len(rows)-1].Scheduled)
	}
	// 600 starts, slots 199, 399 and 599 streams: one in each row.
	for i, r := range rows {
		if got := r.Stream.Completed + r.Stream.Errors + r.Stream.Abandoned; got != 1 {
			t.Errorf("row %d: %d streams, want 1", i, got)
		}
	}
	if rows[2].Stream.Abandoned != 1 {
		t.Errorf("the third stream was not left: %+v", rows[2].Stream)
	}
	if !<-left {
		t.Error("the server did not see the client leave the third stream")
	}
	tot := totalRows(rows)
	if tot.NonStream != 596 || tot.Stream != 1 || tot.Abandoned != 1 || tot.Errors != 2 || tot.Unaccounted != 0 {
		t.Errorf("totals %+v, want 596 non-stream and 1 stream answered, 1 stream left, 2 errors (the 503, the stream without [DONE])", tot)
	}
}
