package ratelimit

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand; it is safe for concurrent use.
type fakeClock struct {
	base time.Time
	off  atomic.Int64
}

func newClock() *fakeClock {
	return &fakeClock{base: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}
}

func (c *fakeClock) Now() time.Time          { return c.base.Add(time.Duration(c.off.Load())) }
func (c *fakeClock) Set(d time.Duration)     { c.off.Store(int64(d)) }
func (c *fakeClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

func newLimiter() (*Limiter, *fakeClock) {
	c := newClock()
	return New(Options{Now: c.Now}), c
}

func TestConcurrentRequestsAdmitExactlyTheBudget(t *testing.T) {
	tests := []struct {
		name         string
		lim          Limit
		weight       int64
		goroutines   int
		attempts     int
		wantAdmitted int64
	}{
		{"requests: 1000 per minute, 32 goroutines × 200 attempts", Limit{1000, time.Minute}, 1, 32, 200, 1000},
		{"requests: 7 per minute, 64 goroutines × 10 attempts", Limit{7, time.Minute}, 1, 64, 10, 7},
		{"tokens: weight 7 of 1000 admits 142 requests", Limit{1000, time.Minute}, 7, 16, 100, 142},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := newLimiter() // the clock never moves
			var admitted atomic.Int64
			var wg sync.WaitGroup
			for range tt.goroutines {
				wg.Go(func() {
					for range tt.attempts {
						if l.Allow("hot", tt.lim, tt.weight).Allowed {
							admitted.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if got := admitted.Load(); got != tt.wantAdmitted {
				t.Fatalf("admitted %d, want %d", got, tt.wantAdmitted)
			}
			if rem := l.Peek("hot", tt.lim, 0).Remaining; rem != tt.lim.Count-tt.wantAdmitted*tt.weight {
				t.Fatalf("Remaining = %d after admitting %d×%d of %d", rem, tt.wantAdmitted, tt.weight, tt.lim.Count)
			}
		})
	}
}

func TestConcurrentAdjustmentsAddUp(t *testing.T) {
	l, _ := newLimiter()
	lim := Limit{1_000_000, time.Minute}
	l.Allow("k", lim, 500_000)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			for range 100 {
				if i%2 == 0 {
					l.Adjust("k", lim, 30)
				} else {
					l.Adjust("k", lim, -10)
				}
			}
		})
	}
	wg.Wait()
	// 25×100×30 taken, 25×100×10 given back: 50,000 net on top of 500,000.
	if got := l.Peek("k", lim, 0).Remaining; got != 450_000 {
		t.Fatalf("Remaining = %d, want 450000", got)
	}
}

func TestKeysAreIndependent(t *testing.T) {
	l, _ := newLimiter()
	lim := Limit{1, time.Minute}
	for _, k := range []string{"a", "b", "", "a\x00", "acct_1", "key_1"} {
		if d := l.Allow(k, lim, 1); !d.Allowed {
			t.Fatalf("key %q refused: %+v", k, d)
		}
	}
	if d := l.Allow("a", lim, 1); d.Allowed {
		t.Fatal("key a admitted twice")
	}
	if n := l.Len(); n != 6 {
		t.Fatalf("Len = %d, want 6", n)
	}
}

func TestShardsRoundUpToAPowerOfTwo(t *testing.T) {
	tests := []struct{ in, atLeast, exact int }{
		{0, 64, 0},
		{-3, 64, 0},
		{1, 1, 1},
		{3, 4, 4},
		{64, 64, 64},
		{100, 128, 128},
	}
	for _, tt := range tests {
		l := New(Options{Shards: tt.in})
		n := len(l.shards)
		if n&(n-1) != 0 || n < tt.atLeast || (tt.exact != 0 && n != tt.exact) || l.mask != uint64(n-1) {
			t.Errorf("Shards %d: got %d shards, mask %#x", tt.in, n, l.mask)
		}
	}
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	l, clock := newLimiter()
	lim := Limit{1_000_000, time.Minute}
	key := "ak_existing_key"
	l.Allow(key, lim, 1)
	allocs := testing.AllocsPerRun(1000, func() {
		clock.Advance(time.Millisecond)
		l.Allow(key, lim, 10)
		l.Peek(key, lim, 10)
		l.Adjust(key, lim, -5)
		l.Adjust(key, lim, 5)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per Allow+Peek+Adjust on an existing key, want 0", allocs)
	}
}
