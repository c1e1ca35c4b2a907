package billing

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// The ledger and the request index grow with every request: their pages
// must be filled, not split in half and left so (bbolt's default), or the
// file, the page cache and every apply's writes are twice what the rows
// need.
func TestLedgerFillsItsPages(t *testing.T) {
	s, err := OpenBolt(filepath.Join(t.TempDir(), "billing.db"), BoltOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	charged := mustCreateAccount(t, s, "charged", 1_000_000*Dollar)
	credited := mustCreateAccount(t, s, "credited", 0)

	// Settlements through the journal, as a gateway makes them: ids that
	// sort by when their request began, settled up to 500 requests later
	// and so out of order, from many goroutines at once.
	const rows, workers, late = 8000, 16, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for n := w; n < rows; n += workers {
				id := fmt.Sprintf("req_%08d%08x", max(0, n-r.IntN(late)), r.Uint32())
				if _, err := s.Settle(Charge{RequestID: id, AccountID: charged.ID, KeyID: "key_0123456789", Model: "gpt-4o-mini",
					Deployment: "openai-east", Usage: Usage{PromptTokens: 1200, CompletionTokens: 160}, Basis: "upstream", Outcome: "ok", Attempts: 1, Cost: 44}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// Credits, each a transaction of its own.
	for i := range 2000 {
		mustCredit(t, s, credited.ID, Dollar, fmt.Sprintf("top-up %d", i))
	}

	err = s.view(func(tx *bolt.Tx) error { // applies the journal first
		ledger := tx.Bucket(bucketLedger)
		for _, c := range []struct {
			name string
			b    *bolt.Bucket
			want float64
		}{
			{"ledger of " + charged.ID, ledger.Bucket([]byte(charged.ID)), 0.85},
			{"ledger of " + credited.ID, ledger.Bucket([]byte(credited.ID)), 0.85},
			{"request index", tx.Bucket(bucketRequests), 0.7},
		} {
			st := c.b.Stats()
			used := float64(st.LeafInuse) / float64(st.LeafAlloc)
			t.Logf("%s: %d keys in %d leaf pages, %.0f%% used", c.name, st.KeyN, st.LeafPageN, 100*used)
			if st.LeafPageN < 40 {
				t.Errorf("%s: %d leaf pages, too few to tell", c.name, st.LeafPageN)
			}
			if used < c.want {
				t.Errorf("%s: leaf pages %.0f%% used, want at least %.0f%%", c.name, 100*used, 100*c.want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := mustAudit(t, s); !r.OK {
		t.Fatalf("audit: %+v", r)
	}
}
