package ratelimit

import (
	"math"
	"math/bits"
	"time"
)

// Limit is a budget of Count units per Window (e.g. 600 requests per minute,
// 1e6 tokens per minute). Units are restored continuously, one every
// Window/Count, and a key with nothing in use may spend all Count at once.
// Any interval of length L therefore admits at most Count + L·Count/Window
// units: a sliding window of length Window can see up to 2·Count (a full
// burst, then the steady refill), never more. The zero Limit is invalid.
type Limit struct {
	Count  int64
	Window time.Duration
}

// MaxWindow is the longest valid Window, a hundred years. The bound keeps
// every admission comparison within an int64 of nanoseconds, so the state
// can saturate on overflow (a huge debt from Adjust) without ever admitting
// a request it should refuse.
const MaxWindow = 100 * 365 * 24 * time.Hour

// Valid reports whether l can limit anything: Count > 0 and 0 < Window <=
// MaxWindow. Every such pair is representable, including windows that are
// not a whole number of nanoseconds per unit (3 per second) and units
// shorter than a nanosecond (1e12 tokens per second): the arithmetic is
// exact in 1/Count-ths of a nanosecond.
func (l Limit) Valid() bool { return l.Count > 0 && l.Window > 0 && l.Window <= MaxWindow }

// Decision is the outcome of Allow or Peek for one key, with what the
// x-ratelimit-* and Retry-After headers need.
type Decision struct {
	// Allowed reports whether the request fits (Allow consumed its units).
	Allowed bool
	// Limit is the budget's Count (x-ratelimit-limit-*).
	Limit int64
	// Remaining is how many units are available right after this decision,
	// in [0, Limit] (x-ratelimit-remaining-*). A key in debt has 0.
	Remaining int64
	// Reset is the time until the budget is fully restored, rounded up to
	// the nanosecond (x-ratelimit-reset-*, see FormatReset).
	Reset time.Duration
	// RetryAfter is, for a refused request, the time until a request of the
	// same weight would be admitted if nothing else happens, rounded up to the
	// nanosecond (Retry-After, see RetryAfterSeconds). 0 when allowed or
	// TooLarge.
	RetryAfter time.Duration
	// TooLarge reports a weight above Limit: such a request is never
	// admitted, so RetryAfter is 0 and the caller should answer without
	// suggesting a retry.
	TooLarge bool
}

// state is one key's GCRA state: the theoretical arrival time (TAT), the
// instant at which the key's budget is fully restored, as whole nanoseconds
// since the Limiter's epoch plus frac/count of a nanosecond, and the Limit it
// is expressed in. With T = Window/Count, a request of weight n at time t
// moves the TAT to max(TAT, t) + n·T and fits when that is at most t +
// Window. n·T = n·Window/Count is computed as a 128-bit quotient and
// remainder, so boundaries are exact; a TAT that would pass math.MaxInt64
// saturates there (with frac 0) instead of wrapping.
//
// 32 bytes, no pointers: the shard maps hold it inline.
type state struct {
	tat    int64
	frac   uint64 // < uint64(count)
	count  int64
	window int64
}

const maxTAT = math.MaxInt64

// fresh is the state of a key with nothing in use at t under lim:
// indistinguishable from a key never seen.
func fresh(t int64, lim Limit) state {
	return state{tat: t, count: lim.Count, window: int64(lim.Window)}
}

// saturated returns s at the furthest TAT representable.
func (s state) saturated() state {
	s.tat, s.frac = maxTAT, 0
	return s
}

// restored reports whether the budget is full at t: the TAT is not after t.
func (s state) restored(t int64) bool {
	return s.tat < t || (s.tat == t && s.frac == 0)
}

// at returns s as seen at t under lim. A restored state becomes fresh. A
// state kept under another Limit (a reload, a per-key override) keeps its
// time until fully restored, rounded up to the next whole nanosecond because
// frac is in units of the old Count, and capped at the new Window so that a
// change never holds a key longer than one new window.
func (s state) at(t int64, lim Limit) state {
	if s.tat < t {
		return fresh(t, lim)
	}
	if s.count != lim.Count || s.window != int64(lim.Window) {
		if s.frac > 0 && s.tat < maxTAT {
			s.tat++
		}
		s.frac = 0
		if since(s.tat, t) > uint64(lim.Window) {
			s.tat = t + int64(lim.Window)
		}
		s.count, s.window = lim.Count, int64(lim.Window)
	}
	return s
}

// since returns a-b for a >= b without overflow: the true difference of two
// int64 is below 2^64.
func since(a, b int64) uint64 { return uint64(a) - uint64(b) }

// span returns n units of lim as time, n·Window/Count nanoseconds, as a
// whole part q and a remainder r in 1/Count-ths of a nanosecond. ok is false
// when q does not fit in an int64 (the caller saturates).
func span(n uint64, lim Limit) (q, r uint64, ok bool) {
	c := uint64(lim.Count)
	hi, lo := bits.Mul64(n, uint64(lim.Window))
	if hi >= c {
		return 0, 0, false
	}
	q, r = bits.Div64(hi, lo, c)
	if q > maxTAT {
		return 0, 0, false
	}
	return q, r, true
}

// plus moves the TAT later by n units, saturating.
func (s state) plus(n uint64, lim Limit) state {
	q, r, ok := span(n, lim)
	if !ok || q > since(maxTAT, s.tat) {
		return s.saturated()
	}
	s.tat += int64(q)
	s.frac += r // both below count < 2^63: no overflow
	if s.frac >= uint64(s.count) {
		s.frac -= uint64(s.count)
		if s.tat == maxTAT {
			return s.saturated()
		}
		s.tat++
	}
	return s
}

// minus moves the TAT earlier by n units, never before t (a fully restored
// budget). s must be as seen at t (s.tat >= t).
func (s state) minus(n uint64, lim Limit, t int64) state {
	q, r, ok := span(n, lim)
	d := since(s.tat, t)
	if !ok || q > d || (q == d && s.frac <= r) {
		return fresh(t, lim)
	}
	borrow := uint64(0)
	if s.frac >= r {
		s.frac -= r
	} else {
		s.frac += uint64(s.count) - r
		borrow = 1
	}
	s.tat -= int64(q + borrow) // q < d, or q == d without borrow: stays >= t
	return s
}

// fits reports whether s (a TAT after a request at t) is at most t + Window.
func (s state) fits(t int64, lim Limit) bool {
	d, w := since(s.tat, t), uint64(lim.Window)
	return d < w || (d == w && s.frac == 0)
}

// remaining returns the whole units available at t: floor((t + Window -
// TAT)·Count/Window), 0 for a key in debt. s must be as seen at t.
func (s state) remaining(t int64, lim Limit) int64 {
	d, w := since(s.tat, t), uint64(lim.Window)
	if d >= w {
		return 0
	}
	hi, lo := bits.Mul64(w-d, uint64(lim.Count))
	lo, borrow := bits.Sub64(lo, s.frac, 0)
	hi -= borrow
	q, _ := bits.Div64(hi, lo, w) // hi < w because Count < 2^63
	return int64(q)
}

// reset returns the time from t until the TAT, rounded up, saturating.
func (s state) reset(t int64) time.Duration {
	d := since(s.tat, t)
	if s.frac > 0 {
		d++
	}
	return duration(d)
}

// over returns how far a refused TAT lies beyond t + Window, rounded up,
// saturating: the wait before the same request fits.
func (s state) over(t int64, lim Limit) time.Duration {
	d := since(s.tat, t) - uint64(lim.Window) // refused: d >= Window
	if s.frac > 0 {
		d++
	}
	return duration(d)
}

func duration(d uint64) time.Duration {
	if d > math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(d)
}

// decide applies a request of weight n at t to s (as seen at t). It returns
// the decision, the state after it (s itself unless admitted), and whether
// the request consumed units.
func decide(s state, t int64, lim Limit, n int64) (dec Decision, next state, store bool) {
	dec.Limit = lim.Count
	switch {
	case n > lim.Count:
		dec.TooLarge = true
	case n <= 0:
		dec.Allowed = true
	default:
		next = s.plus(uint64(n), lim)
		if next.fits(t, lim) {
			dec.Allowed = true
			s, store = next, true
		} else {
			dec.RetryAfter = next.over(t, lim)
		}
	}
	dec.Remaining = s.remaining(t, lim)
	dec.Reset = s.reset(t)
	return dec, s, store
}

// adjust applies a correction of delta units at t to s (as seen at t).
func adjust(s state, t int64, lim Limit, delta int64) state {
	if delta > 0 {
		return s.plus(uint64(delta), lim)
	}
	return s.minus(uint64(-delta), lim, t) // -MinInt64 wraps to 2^63 as uint64: exact
}
