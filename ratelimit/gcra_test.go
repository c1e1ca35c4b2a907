package ratelimit

import (
	"math"
	"testing"
	"time"
)

const (
	opAllow  = "allow"
	opPeek   = "peek"
	opAdjust = "adjust"
)

// step is one call at a time since the limiter was created. lim overrides
// the case's Limit; want is checked for allow and peek (its Limit defaults
// to the Limit's Count).
type step struct {
	at   time.Duration
	op   string
	n    int64
	lim  *Limit
	want Decision
}

func ok(remaining int64, reset time.Duration) Decision {
	return Decision{Allowed: true, Remaining: remaining, Reset: reset}
}

func no(remaining int64, reset, retry time.Duration) Decision {
	return Decision{Remaining: remaining, Reset: reset, RetryAfter: retry}
}

func runSteps(t *testing.T, lim Limit, steps []step) {
	t.Helper()
	l, clock := newLimiter()
	for i, s := range steps {
		clock.Set(s.at)
		sl := lim
		if s.lim != nil {
			sl = *s.lim
		}
		var got Decision
		switch s.op {
		case opAllow, "":
			got = l.Allow("k", sl, s.n)
		case opPeek:
			got = l.Peek("k", sl, s.n)
		case opAdjust:
			l.Adjust("k", sl, s.n)
			continue
		default:
			t.Fatalf("step %d: unknown op %q", i, s.op)
		}
		want := s.want
		if want.Limit == 0 {
			want.Limit = sl.Count
		}
		if got != want {
			t.Fatalf("step %d (%s %d at %v under %d/%v):\n got %+v\nwant %+v", i, s.op, s.n, s.at, sl.Count, sl.Window, got, want)
		}
	}
}

func TestAdmissionIsExactAtWindowBoundaries(t *testing.T) {
	const ns = time.Nanosecond
	tests := []struct {
		name  string
		lim   Limit
		steps []step
	}{
		{
			name: "3 per second: the fourth request waits a third of a second rounded up to the nanosecond, never less",
			lim:  Limit{3, time.Second},
			steps: []step{
				{at: 0, n: 1, want: ok(2, 333333334)},
				{at: 0, n: 1, want: ok(1, 666666667)},
				{at: 0, n: 1, want: ok(0, time.Second)},
				{at: 0, n: 1, want: no(0, time.Second, 333333334)},
				{at: 333333333, n: 1, want: no(0, 666666667, 1*ns)},
				{at: 333333334, n: 1, want: ok(0, time.Second)},
				{at: 666666666, n: 1, want: no(0, 666666668, 1*ns)},
				{at: 666666667, n: 1, want: ok(0, time.Second)},
				{at: 999999999, n: 1, want: no(0, 666666668, 1*ns)},
				{at: time.Second, n: 1, want: ok(0, time.Second)},
				{at: 2 * time.Second, n: 3, want: ok(0, time.Second)},
			},
		},
		{
			name: "7 per minute: the eighth request is admitted exactly 60s/7 later, rounded up",
			lim:  Limit{7, time.Minute},
			steps: []step{
				{at: 0, n: 7, want: ok(0, time.Minute)},
				{at: 0, n: 1, want: no(0, time.Minute, 8571428572)},
				{at: 8571428571, n: 1, want: no(0, 51428571429, 1*ns)},
				{at: 8571428572, n: 1, want: ok(0, time.Minute)},
				{at: time.Minute, op: opPeek, n: 1, want: ok(5, 17142857143)},
				{at: time.Minute, n: 6, want: ok(0, time.Minute)},
				{at: time.Minute, n: 1, want: no(0, time.Minute, 8571428572)},
			},
		},
		{
			name: "1e6 tokens per minute: a weighted request is decided in one step and waits for its whole weight",
			lim:  Limit{1_000_000, time.Minute},
			steps: []step{
				{at: 0, n: 400_000, want: ok(600_000, 24*time.Second)},
				{at: 0, n: 700_000, want: no(600_000, 24*time.Second, 6*time.Second)},
				{at: 6*time.Second - 1, n: 700_000, want: no(699_999, 18*time.Second+1, 1*ns)},
				{at: 6 * time.Second, n: 700_000, want: ok(0, time.Minute)},
				{at: 6 * time.Second, n: 1, want: no(0, time.Minute, 60*time.Microsecond)},
				{at: 66 * time.Second, n: 1_000_000, want: ok(0, time.Minute)},
			},
		},
		{
			name: "3 tokens per second with weight 2: a non-integral interval times the weight",
			lim:  Limit{3, time.Second},
			steps: []step{
				{at: 0, n: 2, want: ok(1, 666666667)},
				{at: 0, n: 2, want: no(1, 666666667, 333333334)},
				{at: 333333333, n: 2, want: no(1, 333333334, 1*ns)},
				{at: 333333334, n: 2, want: ok(0, time.Second)},
			},
		},
		{
			name: "3e9 per second: a unit shorter than a nanosecond is still exact",
			lim:  Limit{3_000_000_000, time.Second},
			steps: []step{
				{at: 0, n: 3_000_000_000, want: ok(0, time.Second)},
				{at: 0, n: 1, want: no(0, time.Second, 1*ns)},
				{at: 1, n: 4, want: no(3, time.Second-1, 1*ns)},
				{at: 1, n: 3, want: ok(0, time.Second)},
			},
		},
		{
			name: "600 per minute: remaining and reset follow the steady refill",
			lim:  Limit{600, time.Minute},
			steps: []step{
				{at: 0, n: 1, want: ok(599, 100*time.Millisecond)},
				{at: 0, n: 599, want: ok(0, time.Minute)},
				{at: 0, n: 1, want: no(0, time.Minute, 100*time.Millisecond)},
				{at: 30 * time.Second, op: opPeek, n: 1, want: ok(299, 30*time.Second+100*time.Millisecond)},
				{at: 30 * time.Second, n: 300, want: ok(0, time.Minute)},
				{at: 30*time.Second + 50*time.Millisecond, n: 1, want: no(0, time.Minute-50*time.Millisecond, 50*time.Millisecond)},
				{at: 2 * time.Minute, op: opPeek, n: 0, want: ok(600, 0)},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { runSteps(t, tt.lim, tt.steps) })
	}
}

func TestTooLargeIsRefusedWithoutRetryAndConsumesNothing(t *testing.T) {
	l, _ := newLimiter()
	lim := Limit{3, time.Second}
	want := Decision{Limit: 3, Remaining: 3, TooLarge: true}
	if got := l.Allow("k", lim, 4); got != want {
		t.Fatalf("fresh key: got %+v, want %+v", got, want)
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("a TooLarge request on a new key left state: Len = %d", n)
	}
	l.Allow("k", lim, 1)
	want = Decision{Limit: 3, Remaining: 2, Reset: 333333334, TooLarge: true}
	if got := l.Allow("k", lim, math.MaxInt64); got != want {
		t.Fatalf("used key: got %+v, want %+v", got, want)
	}
	if got := l.Allow("k", lim, 2); !got.Allowed || got.Remaining != 0 {
		t.Fatalf("TooLarge consumed units: %+v", got)
	}
}

func TestPeekConsumesNothing(t *testing.T) {
	l, _ := newLimiter()
	lim := Limit{2, time.Second}
	for range 5 {
		if got := l.Peek("k", lim, 2); !got.Allowed || got.Remaining != 0 {
			t.Fatalf("peek: %+v", got)
		}
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("Peek created state: Len = %d", n)
	}
	first := l.Allow("k", lim, 1)
	if p := l.Peek("k", lim, 1); p != l.Allow("k", lim, 1) {
		t.Fatalf("Peek %+v differs from the Allow that follows it", p)
	}
	refusedPeek := l.Peek("k", lim, 1)
	if refusedPeek.Allowed || refusedPeek != l.Allow("k", lim, 1) {
		t.Fatalf("refused Peek %+v differs from Allow", refusedPeek)
	}
	if !first.Allowed {
		t.Fatalf("first Allow refused: %+v", first)
	}
}

func TestNonPositiveWeightIsAllowedAndConsumesNothing(t *testing.T) {
	l, _ := newLimiter()
	lim := Limit{3, time.Second}
	if got, want := l.Allow("k", lim, 0), (Decision{Allowed: true, Limit: 3, Remaining: 3}); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("weight 0 created state: Len = %d", n)
	}
	l.Allow("k", lim, 3)
	if got, want := l.Allow("k", lim, -5), (Decision{Allowed: true, Limit: 3, Remaining: 0, Reset: time.Second}); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestAdjustCorrectsAReservation(t *testing.T) {
	lim := Limit{1000, time.Minute} // one token every 60ms
	ms := time.Millisecond
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "a refund lets the next request in sooner",
			steps: []step{
				{at: 0, n: 1000, want: ok(0, time.Minute)},
				{at: 0, n: 700, want: no(0, time.Minute, 42*time.Second)},
				{at: 0, op: opAdjust, n: -700},
				{at: 0, n: 700, want: ok(0, time.Minute)},
			},
		},
		{
			name: "an extra charge delays the next request",
			steps: []step{
				{at: 0, n: 500, want: ok(500, 30*time.Second)},
				{at: 0, op: opAdjust, n: 700},
				{at: 0, n: 1, want: no(0, 72*time.Second, 12*time.Second+60*ms)},
				{at: 12*time.Second + 59*ms, n: 1, want: no(0, time.Minute-59*ms, ms)},
				{at: 12*time.Second + 60*ms, n: 1, want: ok(0, time.Minute)},
			},
		},
		{
			name: "a refund never gives more than a fully restored budget",
			steps: []step{
				{at: 0, n: 400, want: ok(600, 24*time.Second)},
				{at: 0, op: opAdjust, n: -1000},
				{at: 0, op: opPeek, n: 0, want: ok(1000, 0)},
				{at: 0, n: 1000, want: ok(0, time.Minute)},
				{at: 0, n: 1, want: no(0, time.Minute, 60*ms)},
			},
		},
		{
			name: "a refund after the budget has refilled gives nothing",
			steps: []step{
				{at: 0, n: 400, want: ok(600, 24*time.Second)},
				{at: 30 * time.Second, op: opAdjust, n: -400},
				{at: 30 * time.Second, n: 1000, want: ok(0, time.Minute)},
				{at: 30 * time.Second, n: 1, want: no(0, time.Minute, 60*ms)},
			},
		},
		{
			name: "an extra charge on an unseen key puts it in debt",
			steps: []step{
				{at: 0, op: opAdjust, n: 1500},
				{at: 0, n: 1, want: no(0, 90*time.Second, 30*time.Second+60*ms)},
				{at: 30 * time.Second, op: opPeek, n: 1, want: no(0, time.Minute, 60*ms)},
			},
		},
		{
			name: "a refund during debt repays it first",
			steps: []step{
				{at: 0, op: opAdjust, n: 1500},
				{at: 0, op: opAdjust, n: -1000},
				{at: 0, n: 500, want: ok(0, time.Minute)},
			},
		},
		{
			name: "a refund on an unseen key changes nothing",
			steps: []step{
				{at: 0, op: opAdjust, n: -500},
				{at: 0, n: 1000, want: ok(0, time.Minute)},
				{at: 0, n: 1, want: no(0, time.Minute, 60*ms)},
			},
		},
		{
			name: "a correction of zero changes nothing",
			steps: []step{
				{at: 0, n: 1000, want: ok(0, time.Minute)},
				{at: 0, op: opAdjust, n: 0},
				{at: 0, n: 1, want: no(0, time.Minute, 60*ms)},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { runSteps(t, lim, tt.steps) })
	}
}

func TestLimitChangeBetweenCalls(t *testing.T) {
	perMin60 := Limit{60, time.Minute}
	perMin600 := Limit{600, time.Minute}
	perHour := Limit{36000, time.Hour}
	perSec1000 := Limit{1000, time.Second}
	per10s := Limit{1, 10 * time.Second}
	ms := time.Millisecond
	tests := []struct {
		name  string
		lim   Limit
		steps []step
	}{
		{
			name: "raising the count keeps the time until the budget is restored",
			lim:  perMin60,
			steps: []step{
				{at: 0, n: 60, want: ok(0, time.Minute)},
				{at: 0, n: 1, lim: &perMin600, want: no(0, time.Minute, 100*ms)},
				{at: 30 * time.Second, n: 1, lim: &perMin600, want: ok(299, 30*time.Second+100*ms)},
			},
		},
		{
			name: "lowering the count keeps the share of the window in use",
			lim:  perMin600,
			steps: []step{
				{at: 0, n: 300, want: ok(300, 30*time.Second)},
				{at: 0, n: 1, lim: &perMin60, want: ok(29, 31*time.Second)},
			},
		},
		{
			name: "shrinking the window caps the wait at the new window",
			lim:  perHour,
			steps: []step{
				{at: 0, n: 18000, want: ok(18000, 30*time.Minute)},
				{at: 0, n: 1, lim: &perMin600, want: no(0, time.Minute, 100*ms)},
				{at: 100 * ms, n: 1, lim: &perMin600, want: ok(0, time.Minute)},
			},
		},
		{
			name: "a remainder in the old count's units rounds up to the next nanosecond",
			lim:  Limit{3, time.Second},
			steps: []step{
				{at: 0, n: 1, want: ok(2, 333333334)},
				{at: 0, n: 1, lim: &perSec1000, want: ok(665, 334333334)},
			},
		},
		{
			name: "the first request under a new limit rebases the state even when refused",
			lim:  Limit{3, time.Second},
			steps: []step{
				{at: 0, n: 2, want: ok(1, 666666667)},
				{at: 0, n: 1, lim: &per10s, want: Decision{Limit: 1, Reset: 666666667, RetryAfter: 666666667}},
				// Back under 3/s the remainder was rounded up: the third
				// request, due exactly at 0 before, now waits a nanosecond.
				{at: 0, n: 1, want: no(0, 666666667, 1)},
				{at: 1, n: 1, want: ok(0, time.Second)},
			},
		},
		{
			name: "a peek under a new limit rebases nothing",
			lim:  Limit{3, time.Second},
			steps: []step{
				{at: 0, n: 2, want: ok(1, 666666667)},
				{at: 0, op: opPeek, n: 1, lim: &per10s, want: Decision{Limit: 1, Reset: 666666667, RetryAfter: 666666667}},
				{at: 0, n: 1, want: ok(0, time.Second)},
			},
		},
		{
			name: "an adjustment under a new limit rebases the state",
			lim:  perHour,
			steps: []step{
				{at: 0, n: 18000, want: ok(18000, 30*time.Minute)},
				{at: 0, op: opAdjust, n: -1, lim: &perMin600},
				{at: 0, n: 1, lim: &perMin600, want: ok(0, time.Minute)},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { runSteps(t, tt.lim, tt.steps) })
	}
}

func TestLimitValid(t *testing.T) {
	tests := []struct {
		lim  Limit
		want bool
	}{
		{Limit{}, false},
		{Limit{0, time.Second}, false},
		{Limit{-1, time.Second}, false},
		{Limit{1, 0}, false},
		{Limit{1, -time.Second}, false},
		{Limit{1, MaxWindow + 1}, false},
		{Limit{1, time.Nanosecond}, true},
		{Limit{3, time.Second}, true},
		{Limit{math.MaxInt64, time.Nanosecond}, true},
		{Limit{1, MaxWindow}, true},
	}
	for _, tt := range tests {
		if got := tt.lim.Valid(); got != tt.want {
			t.Errorf("%+v.Valid() = %v, want %v", tt.lim, got, tt.want)
		}
	}
}

func TestInvalidLimitLimitsNothingAndKeepsNoState(t *testing.T) {
	l, _ := newLimiter()
	for _, lim := range []Limit{{}, {0, time.Second}, {5, 0}, {5, MaxWindow + 1}} {
		for range 3 {
			if got := l.Allow("k", lim, 10); got != (Decision{Allowed: true}) {
				t.Fatalf("Allow under %+v = %+v", lim, got)
			}
		}
		l.Adjust("k", lim, 10)
		if got := l.Peek("k", lim, 10); got != (Decision{Allowed: true}) {
			t.Fatalf("Peek under %+v = %+v", lim, got)
		}
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("Len = %d, want 0", n)
	}
}

func TestHugeValuesSaturateInsteadOfWrapping(t *testing.T) {
	t.Run("a debt beyond the int64 range is refused, then a huge refund restores the key", func(t *testing.T) {
		lim := Limit{1, MaxWindow}
		runSteps(t, lim, []step{
			{at: 0, op: opAdjust, n: math.MaxInt64},
			{at: 0, op: opAdjust, n: math.MaxInt64},
			{at: 0, op: opPeek, n: 1, want: no(0, math.MaxInt64, math.MaxInt64-MaxWindow)},
			{at: 0, n: 1, want: no(0, math.MaxInt64, math.MaxInt64-MaxWindow)},
			{at: time.Hour, op: opAdjust, n: math.MinInt64},
			{at: time.Hour, n: 1, want: ok(0, MaxWindow)},
		})
	})
	t.Run("the largest count takes its whole burst and then waits a nanosecond", func(t *testing.T) {
		runSteps(t, Limit{math.MaxInt64, time.Nanosecond}, []step{
			{at: 0, n: math.MaxInt64, want: ok(0, time.Nanosecond)},
			{at: 0, n: 1, want: no(0, time.Nanosecond, time.Nanosecond)},
			{at: 1, n: math.MaxInt64, want: ok(0, time.Nanosecond)},
		})
	})
	t.Run("the longest window with the largest count", func(t *testing.T) {
		runSteps(t, Limit{math.MaxInt64, MaxWindow}, []step{
			{at: 0, n: math.MaxInt64, want: ok(0, MaxWindow)},
			{at: 0, op: opAdjust, n: math.MaxInt64},
			{at: 0, n: 1, want: no(0, 2*MaxWindow, MaxWindow+1)},
		})
	})
}
