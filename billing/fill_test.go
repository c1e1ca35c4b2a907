package billing

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

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
	// Rows reach bbolt when a journal half fills, not on a timer: the
	// same transactions, and so the same pages, every run.
	s.applyAfter = time.Hour
	charged := mustCreateAccount(t, s, "charged", 1_000_000*Dollar)
	credited := mustCreateAccount(t, s, "credited", 0)

	// Settlements through the journal, as a gateway makes them: request
	// n's id sorts by when it began, n; most settle within 20 requests of
	// it, and one in 20 (a stream) up to 2,000 requests later.
	const rows = 8000
	r := rand.New(rand.NewPCG(1, 2))
	order := make([]int, rows)
	settles := make([]int, rows)
	for n := range order {
		late := r.IntN(20)
		if r.IntN(20) == 0 {
			late = r.IntN(2000)
		}
		order[n], settles[n] = n, n+late
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(settles[a], settles[b]) })
	for _, n := range order {
		mustSettle(t, s, Charge{RequestID: fmt.Sprintf("req_%08d%08x", n, r.Uint32()), AccountID: charged.ID, KeyID: "key_0123456789",
			Model: "gpt-4o-mini", Deployment: "openai-east", Usage: Usage{PromptTokens: 1200, CompletionTokens: 160}, Basis: "upstream",
			Outcome: "ok", Attempts: 1, Cost: 44})
	}
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
			// Split full, a page of the index would split again, into a
			// full one and an almost empty one, for the first id that
			// arrives late: 46% used here, bbolt's default 51%.
			{"request index", tx.Bucket(bucketRequests), 0.8},
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
