package upstream

import (
	"net/http"
	"sync"
	"time"
)

// keepAlive writes SSE comments to a streaming client while the answer's
// first event is slow to come, so that clients and proxies that drop idle
// connections keep waiting. Its first comment sends the response headers
// (200, text/event-stream): from then on an error before the first event
// can no longer be a status code and goes in band. Failover still works
// until the first event: a comment is no part of an answer.
type keepAlive struct {
	w        http.ResponseWriter
	interval time.Duration
	// timer runs tick; no goroutine waits for it between comments, so a
	// stream waiting for its first event costs a timer, not a goroutine.
	timer *time.Timer

	mu sync.Mutex
	// started is set once a comment went out (and with it the headers).
	started bool
	stopped bool
}

// keepAliveComment is what a keep-alive writes: an SSE comment, which
// every SSE client ignores.
var keepAliveComment = []byte(": keep-alive\n\n")

// startKeepAlive writes a comment to w every interval until stop.
func startKeepAlive(w http.ResponseWriter, interval time.Duration) *keepAlive {
	k := &keepAlive{w: w, interval: interval}
	k.mu.Lock() // tick waits for the timer to be set
	k.timer = time.AfterFunc(interval, k.tick)
	k.mu.Unlock()
	return k
}

// tick writes one comment, the headers first if none went out yet, and
// arms the timer for the next; a failed write ends the comments.
func (k *keepAlive) tick() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped {
		return
	}
	if !k.started {
		startStream(k.w)
		k.started = true
	}
	_, err := k.w.Write(keepAliveComment)
	if err == nil {
		err = http.NewResponseController(k.w).Flush()
	}
	if err != nil {
		k.stopped = true
		return
	}
	k.timer.Reset(k.interval)
}

// stop ends the comments: once it returns none is being written or will
// be. It reports whether the headers went out. Safe to call more than
// once and on a nil keepAlive; it does not wait for another goroutine to
// be scheduled, only for a comment being written to finish.
func (k *keepAlive) stop() (started bool) {
	if k == nil {
		return false
	}
	k.mu.Lock()
	if !k.stopped {
		k.stopped = true
		k.timer.Stop()
	}
	started = k.started
	k.mu.Unlock()
	return started
}
