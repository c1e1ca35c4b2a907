package ratelimit

import (
	"runtime"
	"strconv"
	"testing"
	"time"
)

func TestSweepDropsOnlyRestoredKeys(t *testing.T) {
	l, clock := newLimiter()
	lim := Limit{1, time.Second}
	l.Allow("restored at 1s", lim, 1)
	clock.Set(500 * time.Millisecond)
	l.Allow("restored at 1.5s", lim, 1)
	l.Adjust("in debt until 5.5s", lim, 5)

	clock.Set(time.Second)
	if n := l.Sweep(); n != 1 {
		t.Fatalf("Sweep at 1s dropped %d keys, want 1", n)
	}
	if n := l.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2", n)
	}
	if d := l.Allow("in debt until 5.5s", lim, 1); d.Allowed {
		t.Fatalf("a key in debt lost its debt: %+v", d)
	}
	if d := l.Allow("restored at 1.5s", lim, 1); d.Allowed {
		t.Fatalf("a key still in use lost its state: %+v", d)
	}

	clock.Set(5500 * time.Millisecond)
	if n := l.Sweep(); n != 2 {
		t.Fatalf("Sweep at 5.5s dropped %d keys, want 2", n)
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("Len = %d, want 0", n)
	}
	// A swept key decides like a key never seen.
	if got, want := l.Allow("in debt until 5.5s", lim, 1), l.Allow("never seen", lim, 1); got != want {
		t.Fatalf("swept key: %+v, new key: %+v", got, want)
	}
}

// TestMillionKeysKeepMemoryFlat passes a million distinct keys through the
// limiter with the clock advancing and Sweep running once per window: the
// number of keys with state and the live heap stay bounded by the keys
// active within a window or two.
func TestMillionKeysKeepMemoryFlat(t *testing.T) {
	const (
		keys     = 1_000_000
		step     = 100 * time.Microsecond // 10,000 new keys per window
		perSweep = 10_000
		warmup   = 200_000
	)
	l, clock := newLimiter()
	lim := Limit{10, time.Second}
	var before uint64
	maxLen := 0
	for i := range keys {
		if d := l.Allow("ak_"+strconv.Itoa(i), lim, lim.Count); !d.Allowed {
			t.Fatalf("key %d refused: %+v", i, d)
		}
		clock.Advance(step)
		if (i+1)%perSweep == 0 {
			l.Sweep()
			maxLen = max(maxLen, l.Len())
		}
		if i+1 == warmup {
			before = liveHeap()
		}
	}
	after := liveHeap()
	runtime.KeepAlive(l)
	if maxLen > 2*perSweep {
		t.Errorf("Len reached %d after sweeps, want at most %d", maxLen, 2*perSweep)
	}
	const margin = 4 << 20
	t.Logf("live heap after %d keys: %d KiB, after %d: %d KiB; max Len %d", warmup, before>>10, keys, after>>10, maxLen)
	if after > before+margin {
		t.Errorf("live heap grew from %d to %d bytes over %d keys (margin %d)", before, after, keys-warmup, margin)
	}
}

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func TestSweepShrinksShardsAfterASpike(t *testing.T) {
	l, clock := newLimiter()
	lim := Limit{1, time.Second}
	for i := range 200_000 {
		l.Allow("spike-"+strconv.Itoa(i), lim, 1)
	}
	l.Allow("stays", lim, 1)
	l.Adjust("stays", lim, 10)
	clock.Advance(time.Second)
	if n := l.Sweep(); n != 200_000 {
		t.Fatalf("Sweep dropped %d, want 200000", n)
	}
	for i := range l.shards {
		sh := &l.shards[i]
		if sh.peak >= shrinkPeak {
			t.Fatalf("shard %d kept its peak of %d keys after the spike was swept", i, sh.peak)
		}
	}
	if d := l.Allow("stays", lim, 1); d.Allowed || d.Reset != 10*time.Second {
		t.Fatalf("rebuilding a shard lost a key's state: %+v", d)
	}
}

// manualTicker replaces StartSweeper's ticker with a channel the test feeds.
func manualTicker(l *Limiter) (ticks chan time.Time, stopped *bool) {
	ticks = make(chan time.Time)
	stopped = new(bool)
	l.ticker = func(time.Duration) (<-chan time.Time, func()) {
		return ticks, func() { *stopped = true }
	}
	return ticks, stopped
}

func TestStartSweeperSweepsOnEachTickAndStopsCleanly(t *testing.T) {
	l, clock := newLimiter()
	ticks, stopped := manualTicker(l)
	lim := Limit{1, time.Second}
	stop := l.StartSweeper(time.Second)
	for i := range 100 {
		l.Allow(strconv.Itoa(i), lim, 1)
	}
	clock.Advance(time.Second)
	// The ticks channel is unbuffered: the second send completes only once
	// the sweeper has finished the Sweep the first one started.
	ticks <- time.Time{}
	ticks <- time.Time{}
	if n := l.Len(); n != 0 {
		t.Fatalf("Len = %d after a tick past every key's window, want 0", n)
	}
	stop()
	if !*stopped {
		t.Fatal("stop did not stop the ticker")
	}
	select {
	case ticks <- time.Time{}:
		t.Fatal("the sweeper goroutine still receives ticks after stop returned")
	default:
	}
	stop() // idempotent
}

func TestStartSweeperWithARealTicker(t *testing.T) {
	for _, interval := range []time.Duration{time.Millisecond, 0, -time.Second} {
		l := New(Options{})
		stop := l.StartSweeper(interval)
		stop()
		stop()
	}
}
