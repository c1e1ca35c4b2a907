package upstream

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// State is a deployment's circuit state.
type State int32

// Circuit states.
const (
	// StateClosed: the deployment takes traffic.
	StateClosed State = iota
	// StateOpen: the deployment failed (or its provider asked for a pause
	// with 429 and Retry-After) and takes no traffic until its cool-down
	// ends.
	StateOpen
	// StateHalfOpen: the cool-down is over; the next request to the model
	// is the probe, and its outcome closes or reopens the circuit.
	StateHalfOpen
)

func (s State) String() string {
	switch s {
	case StateOpen:
		return "open"
	case StateHalfOpen:
		return "half_open"
	}
	return "closed"
}

// Breaker is the policy that opens a deployment's circuit. The zero value
// is the default policy.
type Breaker struct {
	// Failures in a row that open the circuit. Default 5.
	Failures int
	// ErrorRate, 0 to 1, opens the circuit when that fraction of the last
	// Window requests failed. Default 0.5; a value above 1 never opens.
	ErrorRate float64
	// Window is how many recent requests ErrorRate is taken over, 1 to 64.
	// Default 20.
	Window int
	// Cooldown is how long an opened circuit stays open before its probe.
	// Each failed probe doubles it, up to MaxCooldown. Default 30s.
	Cooldown time.Duration
	// MaxCooldown bounds the doubling. Default 5m.
	MaxCooldown time.Duration
}

func (b *Breaker) failures() int {
	if b.Failures > 0 {
		return b.Failures
	}
	return 5
}

func (b *Breaker) errorRate() float64 {
	if b.ErrorRate > 0 {
		return b.ErrorRate
	}
	return 0.5
}

func (b *Breaker) window() int {
	if b.Window > 0 {
		return min(b.Window, 64)
	}
	return 20
}

func (b *Breaker) cooldown() time.Duration {
	if b.Cooldown > 0 {
		return b.Cooldown
	}
	return 30 * time.Second
}

func (b *Breaker) maxCooldown() time.Duration {
	if b.MaxCooldown > 0 {
		return max(b.MaxCooldown, b.cooldown())
	}
	return max(5*time.Minute, b.cooldown())
}

// Health is a deployment's passive health: its circuit, requests in
// flight, latency estimate and recent failures, learnt from real traffic.
// The gateway keeps one per deployment across config reloads. Safe for
// concurrent use; the selection path reads it without locking.
type Health struct {
	state atomic.Int32
	// until is when an open circuit may half-open, in Unix nanoseconds.
	until atomic.Int64
	// inflight counts requests sent and not yet finished.
	inflight atomic.Int64
	// latency is the EWMA of time to first byte in nanoseconds; 0 until
	// the first success.
	latency atomic.Int64

	mu          sync.Mutex
	consecutive int
	// ring holds the last n outcomes, a set bit for a failure; fails
	// counts the set bits among them.
	ring     uint64
	n, fails int
	// cooldown is the next opening's length; it doubles on failed probes
	// of a circuit that failures opened. benched says the circuit is open
	// only because the provider asked for a pause (a 429): its probe
	// failing is the first failure-made opening, of the cool-down itself.
	cooldown time.Duration
	benched  bool
	// probing is set while the half-open circuit's probe is in flight;
	// ticket identifies it, so that only the probe's own outcome settles
	// the circuit, not that of a request sent before the circuit opened.
	probing   bool
	ticket    uint64
	requests  uint64
	failed    uint64
	lastError string
	lastFail  time.Time
	reason    string
}

// Outcome kinds a finished attempt reports to its deployment's health.
type verdict int

const (
	// verdictNone: nothing was learnt (the client left first, the request
	// ran out of time, the gateway failed). The zero value, so that only
	// an explicit answer counts.
	verdictNone verdict = iota
	// verdictOK: the deployment answered (a refusal of the request itself,
	// such as a 400, counts: the deployment works).
	verdictOK
	// verdictFailed: the deployment failed (connection, timeout, 5xx, a
	// broken answer, rejected credentials).
	verdictFailed
	// verdictLimited: the provider answered 429; the deployment is benched
	// for its Retry-After.
	verdictLimited
)

// ewmaWeight is the weight of a new latency sample, in 1/8ths.
const ewmaWeight = 2

// available reports whether the deployment may take a request at now, and
// whether that request would be the half-open circuit's probe.
func (h *Health) available(now time.Time) (ok, probe bool) {
	switch State(h.state.Load()) {
	case StateClosed:
		return true, false
	case StateOpen:
		return now.UnixNano() >= h.until.Load(), true
	default:
		h.mu.Lock()
		defer h.mu.Unlock()
		return !h.probing, true
	}
}

// claimProbe makes the caller the half-open circuit's probe, opening the
// half-open state first if the cool-down is over, and returns the probe's
// ticket for endProbe or abandon. ok false means the deployment cannot
// take the request (another probe got there first); a ticket of 0 with ok
// means the circuit closed meanwhile and the request is an ordinary one.
func (h *Health) claimProbe(now time.Time) (ticket uint64, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch State(h.state.Load()) {
	case StateClosed:
		return 0, true
	case StateOpen:
		if now.UnixNano() < h.until.Load() {
			return 0, false
		}
		h.state.Store(int32(StateHalfOpen))
	}
	if h.probing {
		return 0, false
	}
	h.probing = true
	h.ticket++
	return h.ticket, true
}

// begin counts a request in flight.
func (h *Health) begin() { h.inflight.Add(1) }

// end counts a request finished, with what it showed about the deployment.
// latency is its time to first byte (successes only); benched is how long a
// 429 asked to wait; cause describes a failure for operators.
func (h *Health) end(now time.Time, v verdict, latency, benched time.Duration, cause string, b *Breaker) {
	h.finish(0, now, v, latency, benched, cause, b)
}

// endProbe is end for the probe holding ticket: its outcome closes or
// reopens the circuit.
func (h *Health) endProbe(ticket uint64, now time.Time, v verdict, latency, benched time.Duration, cause string, b *Breaker) {
	h.finish(ticket, now, v, latency, benched, cause, b)
}

func (h *Health) finish(ticket uint64, now time.Time, v verdict, latency, benched time.Duration, cause string, b *Breaker) {
	h.inflight.Add(-1)
	if v == verdictOK && latency > 0 {
		old := h.latency.Load()
		if old == 0 {
			h.latency.Store(int64(latency))
		} else {
			h.latency.Store(old + (int64(latency)-old)*ewmaWeight/8)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	probe := ticket != 0 && ticket == h.ticket && h.probing && State(h.state.Load()) == StateHalfOpen
	if v == verdictNone {
		if probe {
			h.probing = false
		}
		return
	}
	h.requests++
	if v == verdictOK {
		h.consecutive = 0
		h.push(false, b.window())
		if probe {
			h.probing = false
			h.closeLocked(b)
		}
		return
	}
	h.failed++
	h.lastError, h.lastFail = cause, now
	if v == verdictLimited {
		// The provider asked for a pause: honour it, without counting
		// against the deployment's error rate.
		if State(h.state.Load()) == StateClosed {
			h.benched = true
		}
		h.openLocked(now, max(benched, time.Second), "rate_limited")
		return
	}
	h.consecutive++
	h.push(true, b.window())
	switch {
	case probe:
		h.probing = false
		if !h.benched {
			h.cooldown = min(2*h.cooldownLocked(b), b.maxCooldown())
		}
		h.benched = false
		h.openLocked(now, h.cooldownLocked(b), "probe_failed")
	case State(h.state.Load()) != StateClosed:
		// A request sent before the circuit opened has failed too; the
		// probe, not it, decides a half-open circuit.
	case h.consecutive >= b.failures():
		h.benched = false
		h.openLocked(now, h.cooldownLocked(b), "consecutive_failures")
	case h.n >= b.window() && float64(h.fails) >= b.errorRate()*float64(h.n):
		h.benched = false
		h.openLocked(now, h.cooldownLocked(b), "error_rate")
	}
}

func (h *Health) cooldownLocked(b *Breaker) time.Duration {
	if h.cooldown <= 0 {
		h.cooldown = b.cooldown()
	}
	return h.cooldown
}

// openLocked opens the circuit until now+d, unless it is already open
// for longer (which keeps its reason). A probe in flight is forgotten: its
// outcome no longer decides anything.
func (h *Health) openLocked(now time.Time, d time.Duration, reason string) {
	until := now.Add(d).UnixNano()
	h.probing = false
	if State(h.state.Load()) == StateOpen && h.until.Load() >= until {
		return
	}
	h.until.Store(until)
	h.reason = reason
	h.state.Store(int32(StateOpen))
}

func (h *Health) closeLocked(b *Breaker) {
	h.state.Store(int32(StateClosed))
	h.benched = false
	h.consecutive, h.ring, h.n, h.fails = 0, 0, 0, 0
	h.cooldown = b.cooldown()
	h.reason = ""
}

// push records an outcome in the window of the last w.
func (h *Health) push(failed bool, w int) {
	var bit uint64
	if failed {
		bit = 1
	}
	h.ring = h.ring<<1 | bit
	if w < 64 {
		h.ring &= 1<<w - 1
	}
	h.n = min(h.n+1, w)
	h.fails = bits.OnesCount64(h.ring)
}

// Latency is the estimate of the deployment's time to first byte; 0 until
// it has answered once.
func (h *Health) Latency() time.Duration { return time.Duration(h.latency.Load()) }

// InFlight is how many requests the deployment is serving now.
func (h *Health) InFlight() int64 { return h.inflight.Load() }

// HealthSnapshot is what the admin API shows of a deployment's health.
type HealthSnapshot struct {
	State State
	// Reason says why an open circuit opened: consecutive_failures,
	// error_rate, probe_failed or rate_limited.
	Reason string
	// Until is when an open circuit lets its probe through.
	Until               time.Time
	InFlight            int64
	Latency             time.Duration
	ConsecutiveFailures int
	// RecentRequests and RecentFailures cover the breaker's window.
	RecentRequests, RecentFailures int
	// Requests and Failures count every finished request since start.
	Requests, Failures uint64
	LastError          string
	LastFailure        time.Time
}

// Snapshot reads the health at now; an open circuit whose cool-down is over
// reads as half-open.
func (h *Health) Snapshot(now time.Time) HealthSnapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := HealthSnapshot{
		State: State(h.state.Load()), Reason: h.reason, InFlight: h.inflight.Load(), Latency: h.Latency(),
		ConsecutiveFailures: h.consecutive, RecentRequests: h.n, RecentFailures: h.fails,
		Requests: h.requests, Failures: h.failed, LastError: h.lastError, LastFailure: h.lastFail,
	}
	if s.State == StateOpen {
		s.Until = time.Unix(0, h.until.Load())
		if !now.Before(s.Until) {
			s.State = StateHalfOpen
		}
	}
	return s
}

// Available reports whether a request at now could be sent to the
// deployment: its circuit is closed, or half-open with its probe free.
func (h *Health) Available(now time.Time) bool {
	ok, _ := h.available(now)
	return ok
}

// abandon gives back the probe holding ticket, for a request that was
// never sent.
func (h *Health) abandon(ticket uint64) {
	h.mu.Lock()
	if ticket != 0 && ticket == h.ticket && State(h.state.Load()) == StateHalfOpen {
		h.probing = false
	}
	h.mu.Unlock()
}

// Reset forgets everything the health learnt: the circuit closes and the
// counters and latency estimate start again. Requests in flight stay
// counted.
func (h *Health) Reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.state.Store(int32(StateClosed))
	h.until.Store(0)
	h.latency.Store(0)
	h.consecutive, h.ring, h.n, h.fails, h.cooldown, h.probing = 0, 0, 0, 0, 0, false
	h.requests, h.failed, h.lastError, h.lastFail, h.reason = 0, 0, "", time.Time{}, ""
}
