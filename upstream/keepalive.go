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
	mu sync.Mutex
	// started is set once a comment went out (and with it the headers).
	started bool
	stopped bool
	done    chan struct{}
	quit    chan struct{}
}

// keepAliveComment is what a keep-alive writes: an SSE comment, which
// every SSE client ignores.
var keepAliveComment = []byte(": keep-alive\n\n")

// startKeepAlive starts writing a comment to w every interval.
func startKeepAlive(w http.ResponseWriter, interval time.Duration) *keepAlive {
	k := &keepAlive{done: make(chan struct{}), quit: make(chan struct{})}
	rc := http.NewResponseController(w)
	go func() {
		defer close(k.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-k.quit:
				return
			case <-t.C:
			}
			k.mu.Lock()
			if k.stopped {
				k.mu.Unlock()
				return
			}
			if !k.started {
				startStream(w)
				k.started = true
			}
			_, err := w.Write(keepAliveComment)
			if err == nil {
				err = rc.Flush()
			}
			k.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return k
}

// stop ends the comments and waits until none can be written any more;
// it reports whether the headers went out. Safe to call more than once
// and on a nil keepAlive.
func (k *keepAlive) stop() (started bool) {
	if k == nil {
		return false
	}
	k.mu.Lock()
	if !k.stopped {
		k.stopped = true
		close(k.quit)
	}
	started = k.started
	k.mu.Unlock()
	<-k.done
	return started
}
