package ratelimit

import (
	"hash/maphash"
	"runtime"
	"sync"
	"time"
)

// Store is what a handler needs of a limiter. *Limiter keeps the state in
// this process's memory; a shared engine (Redis, Valkey) serving several
// gateway instances can implement it later without changing the handler.
type Store interface {
	Allow(key string, lim Limit, n int64) Decision
	Peek(key string, lim Limit, n int64) Decision
	Adjust(key string, lim Limit, delta int64)
}

// Options configures New. The zero value is ready to use.
type Options struct {
	// Now is the clock; nil means time.Now. Tests inject a fake clock.
	// Times are measured from Now() at New, so time.Now's monotonic reading
	// keeps wall-clock jumps out of the arithmetic.
	Now func() time.Time
	// Shards is the number of independently locked parts of the key table,
	// rounded up to a power of two (at most 65536); 0 means 64, or
	// 4×GOMAXPROCS rounded up when that is larger.
	Shards int
}

// Limiter is a GCRA limiter over many keys (one small fixed-size state per
// key), safe for concurrent use, with sharded locks.
//
// Each call names its Limit, so one Limiter serves keys with different
// budgets. A key's state is a time, the instant its budget will be fully
// restored, so when the Limit for a key changes between calls (a reload, a
// key's own override) the first Allow or Adjust under the new Limit rebases
// it, even when the request is refused: the time until fully restored
// carries over, rounded up to a whole nanosecond and capped at the new
// Window. Under an unchanged Window a key that spent half of 600/min has
// spent half of 1200/min after a raise, and no change holds a key for longer
// than one new Window. Peek computes the same rebase without keeping it.
// Apart from that, a refused, TooLarge or Peeked request changes nothing.
//
// Use a separate Limiter (or distinct keys) per kind of budget: requests and
// tokens for the same API key are two different states.
type Limiter struct {
	now    func() time.Time
	epoch  time.Time
	seed   maphash.Seed
	shards []shard
	mask   uint64
	// ticker makes StartSweeper's clock replaceable in tests.
	ticker func(time.Duration) (<-chan time.Time, func())
}

type shard struct {
	mu   sync.Mutex
	keys map[string]state
	// peak is the largest len(keys) since the map was last rebuilt: Go maps
	// never shrink, so Sweep rebuilds a map that has become sparse.
	peak int
	_    [104]byte // keep neighbouring shards' locks off one cache line
}

// shrinkPeak and shrinkRatio decide when Sweep rebuilds a shard's map: once
// it has held shrinkPeak keys and now holds at most 1/shrinkRatio of its peak.
const (
	shrinkPeak  = 1024
	shrinkRatio = 8
)

// New returns an empty Limiter.
func New(o Options) *Limiter {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	n := o.Shards
	if n <= 0 {
		n = max(64, 4*runtime.GOMAXPROCS(0))
	}
	p := 1
	for p < n && p < 1<<16 {
		p <<= 1
	}
	l := &Limiter{
		now:    now,
		epoch:  now(),
		seed:   maphash.MakeSeed(),
		shards: make([]shard, p),
		mask:   uint64(p - 1),
		ticker: func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		},
	}
	for i := range l.shards {
		l.shards[i].keys = make(map[string]state)
	}
	return l
}

// clock returns the current time in nanoseconds since the epoch.
func (l *Limiter) clock() int64 { return int64(l.now().Sub(l.epoch)) }

func (l *Limiter) shard(key string) *shard {
	return &l.shards[maphash.String(l.seed, key)&l.mask]
}

// Allow admits a request of weight n for key under lim, consuming n units if
// it fits; a refused request consumes nothing. A token budget decides a
// request reserving N tokens in one step (n = N), never unit by unit. n <= 0
// is allowed and consumes nothing (the decision reports the key's budget); n
// above lim.Count is refused as TooLarge. An invalid lim (see Limit.Valid)
// limits nothing: the request is allowed and nothing is recorded, so callers
// validate limits when they load configuration.
func (l *Limiter) Allow(key string, lim Limit, n int64) Decision {
	return l.decide(key, lim, n, true)
}

// Peek reports what Allow would decide, consuming nothing.
func (l *Limiter) Peek(key string, lim Limit, n int64) Decision {
	return l.decide(key, lim, n, false)
}

func (l *Limiter) decide(key string, lim Limit, n int64, consume bool) Decision {
	if !lim.Valid() {
		return Decision{Allowed: true}
	}
	t := l.clock()
	sh := l.shard(key)
	sh.mu.Lock()
	s, ok := sh.keys[key]
	if !ok {
		s = fresh(t, lim)
	}
	rebase := ok && (s.count != lim.Count || s.window != int64(lim.Window))
	dec, next, store := decide(s.at(t, lim), t, lim, n)
	if consume && (store || rebase) {
		sh.put(key, next, ok)
	}
	sh.mu.Unlock()
	return dec
}

// Adjust corrects an earlier consumption for key under lim by delta units.
// A negative delta gives units back (a reservation larger than the real
// use), never beyond a fully restored budget. A positive delta takes more (a
// real use above the reservation) without any admission check, so it may put
// the key in debt: later requests wait until the debt is repaid. It is how a
// token reservation is corrected when a request settles with its real usage.
// An invalid lim or a zero delta does nothing.
func (l *Limiter) Adjust(key string, lim Limit, delta int64) {
	if !lim.Valid() || delta == 0 {
		return
	}
	t := l.clock()
	sh := l.shard(key)
	sh.mu.Lock()
	s, ok := sh.keys[key]
	if ok || delta > 0 {
		if !ok {
			s = fresh(t, lim)
		}
		sh.put(key, adjust(s.at(t, lim), t, lim, delta), ok)
	}
	sh.mu.Unlock()
}

// put stores s under key; existed says whether key was already present.
// The caller holds sh.mu.
func (sh *shard) put(key string, s state, existed bool) {
	sh.keys[key] = s
	if !existed && len(sh.keys) > sh.peak {
		sh.peak = len(sh.keys)
	}
}

// Sweep drops the state of keys whose budget is fully restored (they are
// indistinguishable from new keys), returning how many were dropped. It
// locks one shard at a time, so requests on other shards proceed meanwhile.
// Run it about once per window (see StartSweeper): memory then stays bounded
// by the keys active within a window or so, whatever the number of distinct
// keys ever seen.
func (l *Limiter) Sweep() int {
	t := l.clock()
	dropped := 0
	for i := range l.shards {
		dropped += l.shards[i].sweep(t)
	}
	return dropped
}

func (sh *shard) sweep(t int64) int {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := 0
	for k, s := range sh.keys {
		if s.restored(t) {
			delete(sh.keys, k)
			n++
		}
	}
	if sh.peak >= shrinkPeak && len(sh.keys) <= sh.peak/shrinkRatio {
		m := make(map[string]state, len(sh.keys))
		for k, s := range sh.keys {
			m[k] = s
		}
		sh.keys, sh.peak = m, len(m)
	}
	return n
}

// Len is the number of keys with state.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.keys)
		sh.mu.Unlock()
	}
	return n
}

// StartSweeper runs Sweep every interval (a minute when interval <= 0) on a
// goroutine until stop is called. stop waits for the goroutine to exit and
// may be called more than once.
func (l *Limiter) StartSweeper(interval time.Duration) (stop func()) {
	if interval <= 0 {
		interval = time.Minute
	}
	ticks, stopTicker := l.ticker(interval)
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-quit:
				return
			case <-ticks:
				l.Sweep()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			<-exited
			stopTicker()
		})
	}
}

var _ Store = (*Limiter)(nil)
