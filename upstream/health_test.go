package upstream

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// epoch is the fake clock's start in the health, selection and failover
// tests: every time they pass is an explicit offset from it.
var epoch = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return epoch.Add(d) }

// failOnce and succeedOnce run one request on h that fails or succeeds at
// now.
func failOnce(h *Health, now time.Time, b *Breaker) {
	h.begin()
	h.end(now, verdictFailed, 0, 0, "boom", b)
}

func succeedOnce(h *Health, now time.Time, b *Breaker, latency time.Duration) {
	h.begin()
	h.end(now, verdictOK, latency, 0, "", b)
}

// claimed reports whether h's probe could be claimed at now; probe claims
// it and returns its ticket, failing the test when it cannot.
func claimed(h *Health, now time.Time) bool {
	_, ok := h.claimProbe(now)
	return ok
}

func probe(t *testing.T, h *Health, now time.Time) uint64 {
	t.Helper()
	ticket, ok := h.claimProbe(now)
	if !ok || ticket == 0 {
		t.Fatalf("no probe at %v (ticket %d)", now.Sub(epoch), ticket)
	}
	return ticket
}

// probeOnce runs the probe holding ticket to its end with verdict v.
func probeOnce(h *Health, ticket uint64, now time.Time, v verdict, b *Breaker) {
	h.begin()
	h.endProbe(ticket, now, v, time.Millisecond, 0, "still down", b)
}

// wantSnapshot compares two snapshots, times by Equal (an open circuit's
// Until is in the local zone).
func wantSnapshot(t *testing.T, got, want HealthSnapshot) {
	t.Helper()
	g, w := got, want
	g.Until, g.LastFailure, w.Until, w.LastFailure = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if g != w || !got.Until.Equal(want.Until) || !got.LastFailure.Equal(want.LastFailure) {
		t.Fatalf("snapshot\n got %+v\nwant %+v", got, want)
	}
}

func wantState(t *testing.T, h *Health, now time.Time, state State, reason string, until time.Time) {
	t.Helper()
	s := h.Snapshot(now)
	if s.State != state || s.Reason != reason || !s.Until.Equal(until) {
		t.Fatalf("at %v: state %s reason %q until %v; want %s %q %v", now.Sub(epoch), s.State, s.Reason, s.Until, state, reason, until)
	}
}

func TestHealthOpensAfterConsecutiveFailures(t *testing.T) {
	t.Run("the default policy opens on the fifth failure in a row, not before", func(t *testing.T) {
		h, b := new(Health), &Breaker{}
		for i := range 4 {
			failOnce(h, at(time.Duration(i)*time.Second), b)
			if s := h.Snapshot(at(time.Hour)); s.State != StateClosed || s.ConsecutiveFailures != i+1 {
				t.Fatalf("after %d failures: %+v", i+1, s)
			}
			if !h.Available(at(5 * time.Second)) {
				t.Fatalf("unavailable after %d failures", i+1)
			}
		}
		failOnce(h, at(10*time.Second), b)
		wantState(t, h, at(11*time.Second), StateOpen, "consecutive_failures", at(40*time.Second))
		if h.Available(at(11 * time.Second)) {
			t.Fatal("an open circuit is available")
		}
	})
	t.Run("a success in between starts the count again", func(t *testing.T) {
		h, b := new(Health), &Breaker{}
		for range 4 {
			failOnce(h, epoch, b)
		}
		succeedOnce(h, epoch, b, time.Millisecond)
		if s := h.Snapshot(epoch); s.ConsecutiveFailures != 0 {
			t.Fatalf("consecutive failures after a success: %d", s.ConsecutiveFailures)
		}
		for range 4 {
			failOnce(h, epoch, b)
		}
		wantState(t, h, epoch, StateClosed, "", time.Time{})
		failOnce(h, epoch, b)
		wantState(t, h, epoch, StateOpen, "consecutive_failures", at(30*time.Second))
	})
	t.Run("a policy of 3 opens on the third", func(t *testing.T) {
		h, b := new(Health), &Breaker{Failures: 3, Cooldown: 10 * time.Second}
		failOnce(h, epoch, b)
		failOnce(h, epoch, b)
		wantState(t, h, epoch, StateClosed, "", time.Time{})
		failOnce(h, epoch, b)
		wantState(t, h, epoch, StateOpen, "consecutive_failures", at(10*time.Second))
	})
}

func TestHealthOpensOnErrorRate(t *testing.T) {
	b := &Breaker{Failures: 1000, Window: 10, ErrorRate: 0.5}
	t.Run("half the window failed opens it once the window is full", func(t *testing.T) {
		h := new(Health)
		// S F S F S F S F S: nine outcomes, four failures.
		for i := range 9 {
			if i%2 == 0 {
				succeedOnce(h, epoch, b, time.Millisecond)
			} else {
				failOnce(h, epoch, b)
			}
		}
		s := h.Snapshot(epoch)
		if s.State != StateClosed || s.RecentRequests != 9 || s.RecentFailures != 4 {
			t.Fatalf("after 9 outcomes: %+v", s)
		}
		// The tenth, a failure: 5 of 10 failed.
		failOnce(h, at(time.Second), b)
		wantState(t, h, at(time.Second), StateOpen, "error_rate", at(31*time.Second))
		if s := h.Snapshot(epoch); s.RecentRequests != 10 || s.RecentFailures != 5 || s.ConsecutiveFailures != 1 {
			t.Fatalf("window %d/%d, consecutive %d", s.RecentFailures, s.RecentRequests, s.ConsecutiveFailures)
		}
	})
	t.Run("a window not yet full does not open, however bad", func(t *testing.T) {
		h := new(Health)
		for range 9 {
			failOnce(h, epoch, b)
		}
		wantState(t, h, epoch, StateClosed, "", time.Time{})
	})
	t.Run("the check runs on a failure: F S F S ... fills the window on a success, the next failure opens", func(t *testing.T) {
		h := new(Health)
		for i := range 10 {
			if i%2 == 0 {
				failOnce(h, epoch, b)
			} else {
				succeedOnce(h, epoch, b, time.Millisecond)
			}
		}
		if s := h.Snapshot(epoch); s.State != StateClosed || s.RecentRequests != 10 || s.RecentFailures != 5 {
			t.Fatalf("after F S x5: %+v", s)
		}
		failOnce(h, epoch, b)
		wantState(t, h, epoch, StateOpen, "error_rate", at(30*time.Second))
	})
	t.Run("fewer than half never opens", func(t *testing.T) {
		h := new(Health)
		// S S F repeated: any 10 consecutive outcomes hold at most 4 failures.
		for i := range 300 {
			if i%3 == 2 {
				failOnce(h, epoch, b)
			} else {
				succeedOnce(h, epoch, b, time.Millisecond)
			}
			if s := h.Snapshot(epoch); s.State != StateClosed {
				t.Fatalf("opened after %d outcomes: %+v", i+1, s)
			}
		}
		if s := h.Snapshot(epoch); s.RecentRequests != 10 || s.RecentFailures != 4 || s.Requests != 300 || s.Failures != 100 {
			t.Fatalf("%+v", s)
		}
	})
	t.Run("an error rate above 1 never opens", func(t *testing.T) {
		h, b := new(Health), &Breaker{Failures: 1000, Window: 10, ErrorRate: 1.5}
		for range 50 {
			failOnce(h, epoch, b)
		}
		wantState(t, h, epoch, StateClosed, "", time.Time{})
	})
	t.Run("the window is at most 64", func(t *testing.T) {
		h, b := new(Health), &Breaker{Failures: 1000, Window: 1000, ErrorRate: 1.5}
		for range 100 {
			failOnce(h, epoch, b)
		}
		if s := h.Snapshot(epoch); s.RecentRequests != 64 || s.RecentFailures != 64 {
			t.Fatalf("window %d/%d", s.RecentFailures, s.RecentRequests)
		}
	})
}

func TestHealthProbe(t *testing.T) {
	b := &Breaker{Failures: 1}
	t.Run("an open circuit waits for its cool-down, then lets exactly one probe through", func(t *testing.T) {
		h := new(Health)
		failOnce(h, epoch, b)
		until := at(30 * time.Second)
		wantState(t, h, at(29*time.Second), StateOpen, "consecutive_failures", until)
		before := until.Add(-time.Nanosecond)
		if ok, probe := h.available(before); ok || !probe {
			t.Fatalf("available just before until: ok=%v probe=%v", ok, probe)
		}
		if claimed(h, before) {
			t.Fatal("claimed a probe before the cool-down ended")
		}
		if st := State(h.state.Load()); st != StateOpen {
			t.Fatalf("an early claim moved the state to %s", st)
		}
		if ok, probe := h.available(until); !ok || !probe {
			t.Fatalf("available at until: ok=%v probe=%v", ok, probe)
		}
		// Once its cool-down is over an open circuit reads as half-open.
		if s := h.Snapshot(until); s.State != StateHalfOpen || !s.Until.Equal(until) {
			t.Fatalf("snapshot at until: %+v", s)
		}
		ticket := probe(t, h, until)
		if st := State(h.state.Load()); st != StateHalfOpen {
			t.Fatalf("state after the claim: %s", st)
		}
		if claimed(h, until) || claimed(h, until.Add(time.Hour)) {
			t.Fatal("a second probe was let through while the first is in flight")
		}
		if ok, probe := h.available(until); ok || !probe {
			t.Fatalf("available with the probe in flight: ok=%v probe=%v", ok, probe)
		}
		h.begin()
		h.endProbe(ticket, until.Add(time.Second), verdictOK, 40*time.Millisecond, 0, "", b)
		want := HealthSnapshot{State: StateClosed, Latency: 40 * time.Millisecond, Requests: 2, Failures: 1, LastError: "boom", LastFailure: epoch}
		wantSnapshot(t, h.Snapshot(until.Add(time.Second)), want)
		if tk, ok := h.claimProbe(until); !h.Available(until) || !ok || tk != 0 {
			t.Fatal("a closed circuit is not available, or its request was made a probe")
		}
	})
	t.Run("each failed probe doubles the cool-down up to MaxCooldown", func(t *testing.T) {
		h := new(Health)
		failOnce(h, epoch, b)
		until := at(30 * time.Second)
		for _, d := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 5 * time.Minute, 5 * time.Minute} {
			now := until.Add(3 * time.Second) // the probe comes a little after the cool-down
			probeOnce(h, probe(t, h, now), now, verdictFailed, b)
			until = now.Add(d)
			wantState(t, h, now, StateOpen, "probe_failed", until)
		}
		// A successful probe closes and resets the cool-down.
		probeOnce(h, probe(t, h, until), until, verdictOK, b)
		s := h.Snapshot(until)
		if s.State != StateClosed || s.ConsecutiveFailures != 0 || s.RecentRequests != 0 || s.RecentFailures != 0 || s.Reason != "" {
			t.Fatalf("after the probe succeeded: %+v", s)
		}
		failOnce(h, until, b)
		wantState(t, h, until, StateOpen, "consecutive_failures", until.Add(30*time.Second))
	})
	t.Run("MaxCooldown bounds a custom cool-down", func(t *testing.T) {
		h, b := new(Health), &Breaker{Failures: 1, Cooldown: 10 * time.Second, MaxCooldown: 25 * time.Second}
		failOnce(h, epoch, b)
		until := at(10 * time.Second)
		for _, d := range []time.Duration{20 * time.Second, 25 * time.Second, 25 * time.Second} {
			probeOnce(h, probe(t, h, until), until, verdictFailed, b)
			until = until.Add(d)
			wantState(t, h, epoch, StateOpen, "probe_failed", until)
		}
	})
	t.Run("a request picked before the circuit opened fails without extending it", func(t *testing.T) {
		h := new(Health)
		h.begin() // in flight before the circuit opens
		failOnce(h, epoch, b)
		h.end(at(10*time.Second), verdictFailed, 0, 0, "late", b)
		wantState(t, h, at(10*time.Second), StateOpen, "consecutive_failures", at(30*time.Second))
		if s := h.Snapshot(epoch); s.Requests != 2 || s.Failures != 2 || s.LastError != "late" || s.InFlight != 0 {
			t.Fatalf("%+v", s)
		}
	})
}

func TestHealthProbeReleasedWithoutVerdict(t *testing.T) {
	b := &Breaker{Failures: 1}
	open := func() (*Health, time.Time, uint64) {
		h := new(Health)
		failOnce(h, epoch, b)
		until := at(30 * time.Second)
		return h, until, probe(t, h, until)
	}
	t.Run("a probe whose client left frees the slot and teaches nothing", func(t *testing.T) {
		h, until, ticket := open()
		h.begin()
		h.endProbe(ticket, until, verdictNone, 0, 0, "", b)
		s := h.Snapshot(until)
		if s.State != StateHalfOpen || s.Requests != 1 || s.Failures != 1 || s.InFlight != 0 || !s.Until.IsZero() {
			t.Fatalf("after a neutral probe: %+v", s)
		}
		if !h.Available(until) || !claimed(h, until) {
			t.Fatal("the probe slot was not freed")
		}
		if claimed(h, until) {
			t.Fatal("two probes")
		}
	})
	t.Run("abandon frees the slot", func(t *testing.T) {
		h, until, ticket := open()
		h.abandon(ticket + 1) // not the probe's ticket: changes nothing
		if claimed(h, until) {
			t.Fatal("a wrong ticket freed the slot")
		}
		h.abandon(ticket)
		if st := State(h.state.Load()); st != StateHalfOpen {
			t.Fatalf("state after abandon: %s", st)
		}
		if !claimed(h, until) {
			t.Fatal("the probe slot was not freed")
		}
		if claimed(h, until) {
			t.Fatal("two probes")
		}
	})
	t.Run("abandon on a closed or open circuit changes nothing", func(t *testing.T) {
		h := new(Health)
		h.abandon(0)
		wantState(t, h, epoch, StateClosed, "", time.Time{})
		failOnce(h, epoch, b)
		h.abandon(1)
		wantState(t, h, epoch, StateOpen, "consecutive_failures", at(30*time.Second))
	})
}

// A request that began while the circuit was closed and ends while the
// half-open circuit's probe is in flight is not the probe: its outcome must
// not settle the circuit or free the probe slot.
func TestHealthStaleRequestDoesNotSettleTheProbe(t *testing.T) {
	b := &Breaker{Failures: 1}
	setup := func() (*Health, time.Time) {
		h := new(Health)
		h.begin() // the stale request: a long stream sent while closed
		failOnce(h, epoch, b)
		until := at(30 * time.Second)
		probe(t, h, until)
		h.begin() // the probe is in flight
		return h, until
	}
	t.Run("its client leaving does not let a second probe through", func(t *testing.T) {
		h, until := setup()
		h.end(until, verdictNone, 0, 0, "", b)
		if claimed(h, until) {
			t.Fatal("a second probe was let through while the first is still in flight")
		}
	})
	t.Run("its failure is not the probe's failure", func(t *testing.T) {
		h, until := setup()
		h.end(until, verdictFailed, 0, 0, "stale", b)
		if s := h.Snapshot(until); s.State != StateHalfOpen || s.Reason == "probe_failed" {
			t.Fatalf("a request sent before the circuit opened decided the probe: %+v", s)
		}
	})
}

func TestHealthRateLimited(t *testing.T) {
	b := &Breaker{Failures: 1000, Window: 10}
	t.Run("a 429 benches the deployment for Retry-After without touching the error rate", func(t *testing.T) {
		h := new(Health)
		succeedOnce(h, epoch, b, 5*time.Millisecond)
		succeedOnce(h, epoch, b, 5*time.Millisecond)
		failOnce(h, epoch, b)
		failOnce(h, epoch, b)
		failOnce(h, epoch, b)
		h.begin()
		h.end(at(time.Second), verdictLimited, 0, 7*time.Second, "upstream answered HTTP 429", b)
		want := HealthSnapshot{
			State: StateOpen, Reason: "rate_limited", Until: at(8 * time.Second), Latency: 5 * time.Millisecond,
			ConsecutiveFailures: 3, RecentRequests: 5, RecentFailures: 3, Requests: 6, Failures: 4,
			LastError: "upstream answered HTTP 429", LastFailure: at(time.Second),
		}
		wantSnapshot(t, h.Snapshot(at(2*time.Second)), want)
		if h.Available(at(8*time.Second - 1)) {
			t.Fatal("available while benched")
		}
		if !h.Available(at(8 * time.Second)) {
			t.Fatal("not available once the bench ended")
		}
	})
	for _, bench := range []time.Duration{0, 500 * time.Millisecond} {
		t.Run("a bench of "+bench.String()+" lasts a second", func(t *testing.T) {
			h := new(Health)
			h.begin()
			h.end(epoch, verdictLimited, 0, bench, "429", b)
			wantState(t, h, epoch, StateOpen, "rate_limited", at(time.Second))
		})
	}
	t.Run("a longer bench on an open circuit extends it as rate_limited", func(t *testing.T) {
		h := new(Health)
		h.begin() // sent before the circuit opened
		for range 5 {
			failOnce(h, epoch, &Breaker{})
		}
		h.end(at(time.Second), verdictLimited, 0, time.Minute, "429", &Breaker{})
		wantState(t, h, at(time.Second), StateOpen, "rate_limited", at(61*time.Second))
	})
	t.Run("a failed probe after a bench opens for the cool-down, then doubles", func(t *testing.T) {
		h := new(Health)
		h.begin()
		h.end(epoch, verdictLimited, 0, 7*time.Second, "429", b)
		now := at(7 * time.Second)
		probeOnce(h, probe(t, h, now), now, verdictFailed, b)
		wantState(t, h, now, StateOpen, "probe_failed", now.Add(30*time.Second))
		now = now.Add(30 * time.Second)
		probeOnce(h, probe(t, h, now), now, verdictFailed, b)
		wantState(t, h, now, StateOpen, "probe_failed", now.Add(time.Minute))
	})
	t.Run("a failed probe of a failure-opened circuit a 429 extended still doubles", func(t *testing.T) {
		h := new(Health)
		h.begin() // sent before the circuit opened
		for range 5 {
			failOnce(h, epoch, &Breaker{})
		}
		h.end(at(time.Second), verdictLimited, 0, time.Minute, "429", &Breaker{})
		now := at(61 * time.Second)
		probeOnce(h, probe(t, h, now), now, verdictFailed, &Breaker{})
		wantState(t, h, now, StateOpen, "probe_failed", now.Add(time.Minute))
	})
	t.Run("429s never open the circuit by error rate", func(t *testing.T) {
		h, b := new(Health), &Breaker{Failures: 1000, Window: 2, ErrorRate: 0.5}
		now := epoch
		for range 10 {
			ticket, ok := h.claimProbe(now)
			if !ok {
				t.Fatalf("no probe at %v", now.Sub(epoch))
			}
			h.begin()
			h.endProbe(ticket, now, verdictLimited, 0, time.Second, "429", b)
			now = now.Add(time.Second)
		}
		if s := h.Snapshot(epoch); s.RecentRequests != 0 || s.RecentFailures != 0 || s.Reason != "rate_limited" {
			t.Fatalf("%+v", s)
		}
	})
}

// A 429 on a circuit already open for longer (a request sent before it
// opened) does not shorten the opening, and must not relabel it either:
// the admin API and Forward's "every deployment is rate limited" answer
// read the reason.
func TestHealthShortBenchKeepsTheOpeningsReason(t *testing.T) {
	h := new(Health)
	h.begin() // sent before the circuit opened
	for range 5 {
		failOnce(h, epoch, &Breaker{})
	}
	h.end(at(time.Second), verdictLimited, 0, time.Second, "429", &Breaker{})
	// The circuit stays open until 30s because of the failures, not
	// because of the 429 (which asked for a pause until 2s).
	wantState(t, h, at(time.Second), StateOpen, "consecutive_failures", at(30*time.Second))
}

func TestHealthLatencyEWMA(t *testing.T) {
	h, b := new(Health), &Breaker{}
	if h.Latency() != 0 {
		t.Fatal("latency before any sample")
	}
	steps := []struct {
		v       verdict
		sample  time.Duration
		want    time.Duration
		comment string
	}{
		{verdictOK, 100 * time.Millisecond, 100 * time.Millisecond, "the first sample is taken as is"},
		{verdictOK, 200 * time.Millisecond, 125 * time.Millisecond, "100 + (200-100)*2/8"},
		{verdictOK, 100 * time.Millisecond, 118_750 * time.Microsecond, "125 + (100-125)*2/8"},
		{verdictFailed, 10 * time.Second, 118_750 * time.Microsecond, "a failure is no sample"},
		{verdictLimited, 10 * time.Second, 118_750 * time.Microsecond, "a 429 is no sample"},
		{verdictNone, 10 * time.Second, 118_750 * time.Microsecond, "nothing learnt"},
		{verdictOK, 0, 118_750 * time.Microsecond, "a success without a measure"},
		{verdictOK, 918_750 * time.Microsecond, 318_750 * time.Microsecond, "118.75 + 800*2/8"},
	}
	for _, s := range steps {
		h.begin()
		h.end(epoch, s.v, s.sample, time.Second, "x", b)
		if got := h.Latency(); got != s.want {
			t.Fatalf("%s: latency %v, want %v", s.comment, got, s.want)
		}
	}
}

func TestHealthSnapshotAndReset(t *testing.T) {
	h, b := new(Health), &Breaker{}
	succeedOnce(h, epoch, b, 50*time.Millisecond)
	failOnce(h, at(time.Second), b)
	h.begin()
	h.end(at(2*time.Second), verdictFailed, 0, 0, "second", b)
	h.begin()
	h.begin()
	wantSnapshot(t, h.Snapshot(at(3*time.Second)), HealthSnapshot{
		State: StateClosed, InFlight: 2, Latency: 50 * time.Millisecond, ConsecutiveFailures: 2,
		RecentRequests: 3, RecentFailures: 2, Requests: 3, Failures: 2, LastError: "second", LastFailure: at(2 * time.Second),
	})
	for range 3 {
		failOnce(h, at(3*time.Second), b)
	}
	open := HealthSnapshot{
		State: StateOpen, Reason: "consecutive_failures", Until: at(33 * time.Second), InFlight: 2, Latency: 50 * time.Millisecond,
		ConsecutiveFailures: 5, RecentRequests: 6, RecentFailures: 5, Requests: 6, Failures: 5, LastError: "boom", LastFailure: at(3 * time.Second),
	}
	wantSnapshot(t, h.Snapshot(at(4*time.Second)), open)
	open.State = StateHalfOpen
	wantSnapshot(t, h.Snapshot(at(33*time.Second)), open)
	if h.InFlight() != 2 {
		t.Fatalf("InFlight() = %d", h.InFlight())
	}
	if !claimed(h, at(33*time.Second)) {
		t.Fatal("no probe")
	}

	h.Reset()
	wantSnapshot(t, h.Snapshot(at(4*time.Second)), HealthSnapshot{InFlight: 2})
	if !h.Available(at(4 * time.Second)) {
		t.Fatal("not available after Reset")
	}
	// The cool-down starts again from the policy's.
	h.end(at(5*time.Second), verdictFailed, 0, 0, "a", &Breaker{Failures: 2})
	h.end(at(5*time.Second), verdictFailed, 0, 0, "b", &Breaker{Failures: 2})
	wantState(t, h, at(5*time.Second), StateOpen, "consecutive_failures", at(35*time.Second))
	if h.InFlight() != 0 {
		t.Fatalf("InFlight() = %d", h.InFlight())
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{StateClosed: "closed", StateOpen: "open", StateHalfOpen: "half_open"} {
		if s.String() != want {
			t.Fatalf("%d.String() = %q", s, s.String())
		}
	}
}

// Many requests at once: under -race this checks the health's
// synchronisation; in-flight requests are all counted back out, and every
// finished request is counted once.
func TestHealthConcurrentUse(t *testing.T) {
	h := new(Health)
	b := &Breaker{Failures: 2, Window: 8, Cooldown: time.Second, MaxCooldown: 4 * time.Second}
	var clock atomic.Int64
	clock.Store(epoch.UnixNano())
	var requests, failures atomic.Uint64
	var wg sync.WaitGroup
	const workers, ops = 16, 2000
	for range workers {
		wg.Go(func() {
			for range ops {
				now := time.Unix(0, clock.Add(int64(50*time.Millisecond)))
				ok, isProbe := h.available(now)
				var ticket uint64
				if ok && isProbe {
					ticket, ok = h.claimProbe(now)
				}
				if !ok {
					_ = h.Snapshot(now)
					continue
				}
				if ticket != 0 && rand.IntN(4) == 0 {
					h.abandon(ticket)
					continue
				}
				h.begin()
				v := verdict(rand.IntN(4))
				h.endProbe(ticket, now, v, time.Duration(1+rand.IntN(1000))*time.Microsecond, time.Second, "x", b)
				if v != verdictNone {
					requests.Add(1)
				}
				if v == verdictFailed || v == verdictLimited {
					failures.Add(1)
				}
			}
		})
	}
	wg.Wait()
	s := h.Snapshot(time.Unix(0, clock.Load()))
	if s.InFlight != 0 || s.Requests != requests.Load() || s.Failures != failures.Load() {
		t.Fatalf("in flight %d, requests %d (want %d), failures %d (want %d)", s.InFlight, s.Requests, requests.Load(), s.Failures, failures.Load())
	}
	if s.RecentFailures > s.RecentRequests || s.RecentRequests > 8 {
		t.Fatalf("window %d/%d", s.RecentFailures, s.RecentRequests)
	}
}

// Many requests racing for a half-open circuit's probe: at most one is ever
// in flight. Only probes are sent here (see
// TestHealthStaleRequestDoesNotSettleTheProbe for requests sent before the
// circuit opened).
func TestHealthConcurrentProbeIsExclusive(t *testing.T) {
	h := new(Health)
	b := &Breaker{Failures: 1, Cooldown: time.Second, MaxCooldown: 2 * time.Second}
	failOnce(h, epoch, b)
	var clock atomic.Int64
	clock.Store(epoch.UnixNano())
	var inFlight, most, probes atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 3000 {
				now := time.Unix(0, clock.Add(int64(10*time.Millisecond)))
				ok, isProbe := h.available(now)
				if !ok || !isProbe {
					continue
				}
				ticket, ok := h.claimProbe(now)
				if !ok || ticket == 0 {
					continue
				}
				probes.Add(1)
				n := inFlight.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				switch rand.IntN(4) {
				case 0:
					inFlight.Add(-1)
					h.abandon(ticket)
				case 1:
					h.begin()
					inFlight.Add(-1)
					h.endProbe(ticket, now, verdictLimited, 0, time.Second, "429", b)
				case 2:
					h.begin()
					inFlight.Add(-1)
					h.endProbe(ticket, now, verdictNone, 0, 0, "", b)
				default:
					h.begin()
					inFlight.Add(-1)
					h.endProbe(ticket, now, verdictFailed, 0, 0, "down", b)
				}
			}
		})
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Fatalf("at most %d probes in flight at once, want 1", most.Load())
	}
	if probes.Load() < 100 {
		t.Fatalf("only %d probes: the test did not exercise the half-open circuit", probes.Load())
	}
	if h.InFlight() != 0 {
		t.Fatalf("InFlight() = %d", h.InFlight())
	}
	if st := State(h.state.Load()); st == StateClosed {
		t.Fatalf("state %s: no probe succeeded", st)
	}
}
