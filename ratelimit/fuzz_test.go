package ratelimit

import (
	"encoding/binary"
	"math"
	"math/big"
	"testing"
	"time"
)

// model is the GCRA of one key in exact rational arithmetic, written from
// the documentation rather than from gcra.go: FuzzAllow checks the Limiter
// against it decision by decision.
type model struct {
	tat *big.Rat // nil: never seen
	lim Limit
	// gen counts the times the state was kept under another Limit than
	// before or saturated: GCRA's bound holds within one generation.
	gen int
}

func (m *model) keep(x *big.Rat, lim Limit, saturated bool) {
	if m.lim != lim || saturated {
		m.gen++
	}
	m.tat, m.lim = x, lim
}

func ratInt(n int64) *big.Rat { return new(big.Rat).SetInt64(n) }

// units returns n units of lim as time: n·Window/Count nanoseconds.
func units(n uint64, lim Limit) *big.Rat {
	x := new(big.Rat).SetFrac(new(big.Int).SetUint64(n), big.NewInt(lim.Count))
	return x.Mul(x, ratInt(int64(lim.Window)))
}

func ceilRat(x *big.Rat) *big.Int {
	q, m := new(big.Int).DivMod(x.Num(), x.Denom(), new(big.Int))
	if m.Sign() != 0 {
		q.Add(q, big.NewInt(1))
	}
	return q
}

func floorRat(x *big.Rat) *big.Int {
	return new(big.Int).Div(x.Num(), x.Denom()) // Euclidean: floor for a positive denominator
}

// clampDuration converts a non-negative integer to a Duration, saturating.
func clampDuration(x *big.Int) time.Duration {
	if x.Sign() < 0 {
		panic("negative duration in model")
	}
	if !x.IsInt64() {
		return math.MaxInt64
	}
	return time.Duration(x.Int64())
}

// saturate clamps a TAT whose whole part passes the int64 range.
func saturate(x *big.Rat) (*big.Rat, bool) {
	if floorRat(x).Cmp(big.NewInt(math.MaxInt64)) > 0 {
		return ratInt(math.MaxInt64), true
	}
	return x, false
}

// at is the TAT as seen at t under lim (max(TAT, t), rebased on a change).
func (m *model) at(t int64, lim Limit) (x *big.Rat, rebased bool) {
	now := ratInt(t)
	if m.tat == nil || m.tat.Cmp(now) < 0 {
		return now, false
	}
	x = new(big.Rat).Set(m.tat)
	if m.lim != lim {
		x.SetInt(ceilRat(x))
		if end := new(big.Rat).Add(now, ratInt(int64(lim.Window))); x.Cmp(end) > 0 {
			x = end
		}
		return x, true
	}
	return x, false
}

func (m *model) report(d *Decision, x *big.Rat, t int64, lim Limit) {
	left := new(big.Rat).Sub(new(big.Rat).Add(ratInt(t), ratInt(int64(lim.Window))), x)
	if left.Sign() > 0 {
		left.Mul(left, ratInt(lim.Count))
		left.Quo(left, ratInt(int64(lim.Window)))
		d.Remaining = floorRat(left).Int64()
	}
	d.Reset = clampDuration(ceilRat(new(big.Rat).Sub(x, ratInt(t))))
}

// decide mirrors Allow (consume) and Peek; saturated reports a TAT clamped
// at the int64 range.
func (m *model) decide(t int64, lim Limit, n int64, consume bool) (d Decision, saturated bool) {
	d.Limit = lim.Count
	x, rebased := m.at(t, lim)
	switch {
	case n > lim.Count:
		d.TooLarge = true
	case n <= 0:
		d.Allowed = true
	default:
		nx, sat := saturate(new(big.Rat).Add(x, units(uint64(n), lim)))
		over := new(big.Rat).Sub(nx, ratInt(t))
		over.Sub(over, ratInt(int64(lim.Window)))
		if over.Sign() <= 0 {
			d.Allowed, x, rebased, saturated = true, nx, true, sat
		} else {
			d.RetryAfter = clampDuration(ceilRat(over))
		}
	}
	m.report(&d, x, t, lim)
	if consume && rebased {
		m.keep(x, lim, saturated)
	}
	return d, saturated
}

func (m *model) adjust(t int64, lim Limit, delta int64) (saturated bool) {
	if delta == 0 || (m.tat == nil && delta < 0) {
		return false
	}
	x, _ := m.at(t, lim)
	if delta > 0 {
		x, saturated = saturate(x.Add(x, units(uint64(delta), lim)))
	} else if x.Sub(x, units(uint64(-delta), lim)); x.Cmp(ratInt(t)) < 0 {
		x = ratInt(t)
	}
	m.keep(x, lim, saturated)
	return saturated
}

// event is a change to a key's consumption: an admitted request (+n) or a
// correction (±delta, as requested even when a refund was capped).
type event struct {
	t     int64
	units *big.Int
	gen   int
}

// checkWindow checks GCRA's bound on the events of one Limit that end with
// an admitted request at time t_j: for every earlier event i, the net units
// from i to j are at most Count + (t_j - t_i)·Count/Window (a full budget at
// t_i plus the refill since). That is the exact guarantee of burst Count:
// any interval of length Window admits at most 2·Count, and at most Count
// beyond what the continuous refill allows.
func checkWindow(t *testing.T, lim Limit, events []event) {
	t.Helper()
	j := len(events) - 1
	net := new(big.Int)
	for i := j; i >= 0; i-- {
		net.Add(net, events[i].units)
		lhs := new(big.Int).Sub(net, big.NewInt(lim.Count))
		lhs.Mul(lhs, big.NewInt(int64(lim.Window)))
		rhs := new(big.Int).Mul(big.NewInt(events[j].t-events[i].t), big.NewInt(lim.Count))
		if lhs.Cmp(rhs) > 0 {
			t.Fatalf("%s units from t=%d to t=%d exceed %d + refill under %d/%v", net, events[i].t, events[j].t, lim.Count, lim.Count, lim.Window)
		}
	}
}

// fuzzLimit maps arbitrary integers onto a valid Limit, keeping small values
// small so that the interesting boundaries stay reachable.
func fuzzLimit(count, window int64) Limit {
	c := count & math.MaxInt64
	if c == 0 {
		c = 1
	}
	return Limit{c, time.Duration((window&math.MaxInt64)%int64(MaxWindow) + 1)}
}

// fuzzOps encodes operations for the seed corpus: each is an opcode byte and
// a uvarint argument.
func fuzzOps(ops ...uint64) []byte {
	var b []byte
	for i := 0; i+1 < len(ops); i += 2 {
		b = append(b, byte(ops[i]))
		b = binary.AppendUvarint(b, ops[i+1])
	}
	return b
}

// Opcodes: the low three bits choose the operation, bit 3 takes the argument
// raw instead of reduced to the Limit's scale, bit 6 chooses the second
// Limit, bit 7 the second key.
const (
	fzAllow   = 0 // and 1
	fzRaw     = 2 // Allow with the raw argument as weight
	fzPeek    = 3
	fzTake    = 4 // Adjust(+v)
	fzGive    = 5 // Adjust(-v)
	fzAdvance = 6 // move the clock v nanoseconds
	fzSweep   = 7
	fzRawArg  = 1 << 3
	fzLimB    = 1 << 6
	fzKeyB    = 1 << 7
)

const maxClock = 1 << 62

// FuzzAllow drives a Limiter with arbitrary sequences of Allow, Peek,
// Adjust, clock moves and sweeps over two keys and two Limits, and checks
// every decision against the exact rational model, plus invariants that
// hold whatever the model says: no negative or out-of-range fields, Peek
// equal to the Allow that follows it, RetryAfter exact to the nanosecond
// (refused a nanosecond earlier, admitted then), and GCRA's bound on the
// units admitted in any interval.
func FuzzAllow(f *testing.F) {
	s, m := uint64(time.Second), uint64(time.Minute)
	f.Add(int64(3), int64(time.Second), int64(7), int64(time.Minute),
		fuzzOps(0, 1, 0, 1, 0, 1, 0, 1, fzAdvance, s/3, 0, 1, fzAdvance, 1, 0, 1, fzAdvance, s, 0, 3, 0, 1))
	f.Add(int64(7), int64(time.Minute), int64(60), int64(time.Minute),
		fuzzOps(0, 7, 0, 1, fzAdvance, m/7, 0, 1, fzAdvance, 1, 0, 1, fzLimB, 1, fzLimB|fzKeyB, 60, 0, 1))
	f.Add(int64(1_000_000), int64(time.Minute), int64(100_000), int64(time.Second),
		fuzzOps(0, 400_000, 0, 700_000, fzAdvance, 6*s-1, fzPeek, 700_000, 0, 700_000, fzAdvance, 1, 0, 700_000,
			fzTake, 300_000, 0, 1, fzGive, 900_000, 0, 1, fzLimB, 50_000, fzSweep, 0, fzAdvance, m, fzSweep, 0, 0, 1_000_000))
	f.Add(int64(3), int64(time.Second), int64(1), int64(10*time.Second),
		fuzzOps(0, 2, fzLimB, 1, 0, 1, fzAdvance, 1, 0, 1, fzPeek|fzLimB, 1))
	f.Add(int64(math.MaxInt64), int64(MaxWindow-1), int64(1), int64(MaxWindow-1),
		fuzzOps(fzRaw|fzRawArg, math.MaxInt64, fzTake|fzRawArg, math.MaxInt64, fzTake|fzRawArg, math.MaxInt64,
			0, 1, fzLimB|fzTake|fzRawArg, math.MaxInt64, fzGive|fzRawArg, 1<<63, 0, 1, fzLimB, 1, fzRaw|fzRawArg, 1<<63))
	f.Add(int64(3_000_000_000), int64(time.Second), int64(1), int64(0),
		fuzzOps(0, 3_000_000_000, 0, 1, fzAdvance, 1, 0, 4, 0, 3, fzLimB, 1, fzAdvance, 1, fzLimB, 1, fzSweep, 0))
	f.Add(int64(10), int64(time.Second), int64(10), int64(time.Second),
		fuzzOps(fzKeyB, 5, 0, 11, fzRaw|fzRawArg, 0, fzRaw|fzRawArg, 1<<63+5, fzGive, 3, fzTake, 30, 0, 1, fzAdvance|fzRawArg, math.MaxUint64, 0, 10))

	f.Fuzz(func(t *testing.T, countA, windowA, countB, windowB int64, ops []byte) {
		lims := [2]Limit{fuzzLimit(countA, windowA), fuzzLimit(countB, windowB)}
		clock := newClock()
		l := New(Options{Now: clock.Now, Shards: 2})
		var now int64
		var models [2]model
		var history [2][]event
		// record adds an event to a key's history, which starts over with
		// each generation of its model; a saturating event is left out (its
		// nominal units exceed what the clamped state took).
		record := func(k int, t int64, units int64, saturated bool) {
			h := history[k]
			if len(h) > 0 && h[len(h)-1].gen != models[k].gen {
				h = h[:0]
			}
			if !saturated {
				h = append(h, event{t, big.NewInt(units), models[k].gen})
			}
			history[k] = h
		}
		// exactRetry checks that a refused request is refused until
		// RetryAfter and admitted then.
		exactRetry := func(key string, lim Limit, n int64, d Decision) {
			if d.Allowed || d.TooLarge || d.RetryAfter > maxClock-time.Duration(now) {
				return
			}
			clock.Set(time.Duration(now) + d.RetryAfter - 1)
			if p := l.Peek(key, lim, n); p.Allowed {
				t.Fatalf("admitted a nanosecond before RetryAfter %v: %+v", d.RetryAfter, p)
			}
			clock.Set(time.Duration(now) + d.RetryAfter)
			if p := l.Peek(key, lim, n); !p.Allowed {
				t.Fatalf("still refused after RetryAfter %v: %+v", d.RetryAfter, p)
			}
			clock.Set(time.Duration(now))
		}
		for steps := 0; len(ops) > 0 && steps < 200; steps++ {
			op := ops[0]
			v, size := binary.Uvarint(ops[1:])
			if size <= 0 {
				v, size = 0, len(ops)-1
			}
			ops = ops[1+size:]
			k := int(op >> 7)
			key := [2]string{"a", "b"}[k]
			lim := lims[(op>>6)&1]
			arg := int64(v) // may be negative
			if scale := 2*uint64(lim.Count) + 2; op&fzRawArg == 0 && scale != 0 {
				arg = int64(v % scale) // mostly within the budget, sometimes TooLarge
			}
			clock.Set(time.Duration(now))

			switch op & 7 {
			case fzAllow, 1, fzRaw, fzPeek:
				n := arg
				if op&7 == fzRaw {
					n = int64(v)
				}
				p := l.Peek(key, lim, n)
				wantPeek, _ := models[k].decide(now, lim, n, false)
				if p != wantPeek {
					t.Fatalf("Peek(%s, %d/%v, %d) at %d = %+v, model %+v", key, lim.Count, lim.Window, n, now, p, wantPeek)
				}
				checkDecision(t, p, lim, n)
				if op&7 == fzPeek {
					// A Peek under a new Limit rebases afresh at each
					// instant, so RetryAfter is exact only without one.
					if m := models[k]; m.tat == nil || m.lim == lim {
						exactRetry(key, lim, n, p)
					}
					continue
				}
				d := l.Allow(key, lim, n)
				if d != p {
					t.Fatalf("Allow %+v differs from the Peek before it %+v", d, p)
				}
				_, saturated := models[k].decide(now, lim, n, true)
				if d.Allowed && n > 0 {
					record(k, now, n, saturated)
					if !saturated {
						checkWindow(t, lim, history[k])
					}
				}
				exactRetry(key, lim, n, d)
			case fzTake, fzGive:
				delta := arg
				if op&7 == fzGive {
					delta = -delta // -MinInt64 stays MinInt64: still a refund
				}
				l.Adjust(key, lim, delta)
				saturated := models[k].adjust(now, lim, delta)
				if delta != 0 {
					record(k, now, delta, saturated)
				}
			case fzAdvance:
				now += int64(min(v, uint64(maxClock-now)))
			case fzSweep:
				before := l.Len()
				if dropped := l.Sweep(); dropped < 0 || dropped > before || l.Len() != before-dropped {
					t.Fatalf("Sweep dropped %d of %d keys, %d left", dropped, before, l.Len())
				}
			}
		}
	})
}

// checkDecision checks what holds for every decision.
func checkDecision(t *testing.T, d Decision, lim Limit, n int64) {
	t.Helper()
	switch {
	case d.Limit != lim.Count:
		t.Fatalf("Limit %d, want %d", d.Limit, lim.Count)
	case d.Remaining < 0 || d.Remaining > lim.Count:
		t.Fatalf("Remaining %d outside [0, %d]", d.Remaining, lim.Count)
	case d.Reset < 0 || d.RetryAfter < 0:
		t.Fatalf("negative duration: %+v", d)
	case d.TooLarge != (n > lim.Count):
		t.Fatalf("TooLarge %v for weight %d of %d", d.TooLarge, n, lim.Count)
	case d.TooLarge && (d.Allowed || d.RetryAfter != 0):
		t.Fatalf("TooLarge yet allowed or with a retry: %+v", d)
	case d.Allowed && d.RetryAfter != 0:
		t.Fatalf("allowed with a retry: %+v", d)
	case !d.Allowed && !d.TooLarge && d.RetryAfter == 0:
		t.Fatalf("refused without a retry: %+v", d)
	case d.Allowed && n > 0 && d.Reset == 0:
		t.Fatalf("admitted units without a reset: %+v", d)
	}
}
