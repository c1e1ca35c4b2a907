package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// readCountingStore counts the key lookups that reach the store.
type readCountingStore struct {
	billing.Store
	keyByHash atomic.Int64
}

func (s *readCountingStore) KeyByHash(h billing.KeyHash) (billing.Key, billing.Account, error) {
	s.keyByHash.Add(1)
	return s.Store.KeyByHash(h)
}

// BenchmarkAuthServeHTTP measures arcane_auth accepting a key it has seen
// before: it must cost no store read.
func BenchmarkAuthServeHTTP(b *testing.B) {
	path := filepath.Join(b.TempDir(), "arcane.db")
	shared, err := acquireDatabase(path, time.Second, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := releaseDatabase(path); err != nil {
			b.Error(err)
		}
	})
	counted := &readCountingStore{Store: shared.store}
	keys, err := billing.NewKeyring(counted, billing.KeyringOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(keys.Close)
	app := &App{db: &database{path: path, store: shared.store, keys: keys}}
	h := &Auth{app: app, logger: zap.NewNop(), now: time.Now}

	acct, err := shared.store.CreateAccount("bench", billing.Dollar)
	if err != nil {
		b.Fatal(err)
	}
	_, secret, err := shared.store.CreateKey(acct.ID, billing.KeySpec{})
	if err != nil {
		b.Fatal(err)
	}

	w := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/v1/status", nil)
	req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, nil)
	// The handler deletes the header; putting this slice back costs no
	// allocation, so the numbers are the handler's own.
	authorization := []string{"Bearer " + secret}
	passed := 0
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		passed++
		return nil
	})
	serve := func() {
		req.Header["Authorization"] = authorization
		if err := h.ServeHTTP(w, req, next); err != nil {
			b.Fatal(err)
		}
	}

	// Warm up: the first request reads the store and fills the cache,
	// whose sets are applied asynchronously. Repeat until a request is
	// served without a read.
	serve()
	warm := false
	for range 1000 {
		runtime.Gosched()
		before := counted.keyByHash.Load()
		serve()
		if counted.keyByHash.Load() == before {
			warm = true
			break
		}
	}
	if !warm {
		b.Fatal("the key cache never served the key")
	}
	if passed == 0 || w.Code != http.StatusOK {
		b.Fatalf("the key was refused: status %d, body %s", w.Code, w.Body)
	}

	passed = 0
	reads := counted.keyByHash.Load()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		serve()
	}
	b.StopTimer()
	if passed != b.N {
		b.Fatalf("%d of %d requests passed", passed, b.N)
	}
	b.ReportMetric(float64(counted.keyByHash.Load()-reads)/float64(b.N), "store-reads/op")
}
