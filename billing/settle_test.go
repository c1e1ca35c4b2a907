package billing

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// stallClock is a fake clock that can stall the commit loop. Armed, the
// next call to Now reports on stalled and waits for release before it
// answers (with the time it read on entry). The loop reads the clock once
// per batch, after it has drained the queue, so a stalled loop sits on one
// batch while later settlements pile up in the queue; released, it
// commits all of those in the next batch. Nothing else may read the clock
// while it is armed.
type stallClock struct {
	*fakeClock
	armed   atomic.Bool
	mu      sync.Mutex
	stalled chan struct{}
	resume  chan struct{}
}

func (c *stallClock) Now() time.Time {
	t := c.fakeClock.Now()
	if c.armed.CompareAndSwap(true, false) {
		c.mu.Lock()
		stalled, resume := c.stalled, c.resume
		c.mu.Unlock()
		stalled <- struct{}{}
		<-resume
	}
	return t
}

// openStallStore opens a store in a fresh temporary folder on a stallClock.
func openStallStore(t testing.TB) (*BoltStore, *stallClock, string) {
	t.Helper()
	clock := &stallClock{fakeClock: newFakeClock()}
	path := filepath.Join(t.TempDir(), "billing.db")
	s, err := OpenBolt(path, BoltOptions{Now: clock.Now})
	if err != nil {
		t.Fatalf("OpenBolt: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, clock, path
}

// stall parks the commit loop on a batch of its own (one charge for an
// unknown account, which commits nothing) and returns the function that
// lets it go on. The test's cleanup releases it too, so a failing test
// does not leave Close waiting forever.
func (c *stallClock) stall(t testing.TB, s *BoltStore) (release func()) {
	t.Helper()
	stalled, resume := make(chan struct{}), make(chan struct{})
	c.mu.Lock()
	c.stalled, c.resume = stalled, resume
	c.mu.Unlock()
	c.armed.Store(true)
	plug := make(chan error, 1)
	go func() {
		_, err := s.Settle(Charge{RequestID: "plug", AccountID: "acct_plug"})
		plug <- err
	}()
	<-stalled
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(resume)
			if err := <-plug; !errors.Is(err, ErrNotFound) {
				t.Errorf("the plug charge for an unknown account settled with %v, want ErrNotFound", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// waitQueued waits until n settlements wait in the queue of a stalled
// commit loop.
func waitQueued(s *BoltStore, n int) {
	for len(s.gc.queue) < n {
		runtime.Gosched()
	}
}

// testCharge is a complete charge of cost for request id.
func testCharge(accountID, requestID string, cost Amount) Charge {
	return Charge{
		RequestID: requestID, AccountID: accountID, KeyID: "key_test", Model: "gpt-test", Deployment: "openai-1",
		Usage: Usage{PromptTokens: 120, CachedTokens: 20, CacheWriteTokens: 30, CompletionTokens: 45},
		Basis: "upstream", Outcome: "ok", Cost: cost,
	}
}

// replayLedger checks that an account's rows, oldest first, have
// contiguous sequence numbers from 1, that each row's balance is the
// running sum of amounts, that no row leaves the balance negative, and
// that the sum is the stored balance. It returns the rows oldest first.
func replayLedger(t testing.TB, s Store, accountID string) []Entry {
	t.Helper()
	rows := allLedger(t, s, accountID)
	slices.Reverse(rows)
	var running Amount
	for i, r := range rows {
		if r.Seq != uint64(i+1) {
			t.Fatalf("row %d of %s has seq %d; sequence numbers: %v", i, accountID, r.Seq, seqs(rows))
		}
		if r.AccountID != accountID {
			t.Fatalf("row %d of %s names account %s", r.Seq, accountID, r.AccountID)
		}
		running += r.Amount
		if r.Balance != running {
			t.Fatalf("row %d of %s: balance %s, but the rows up to it sum to %s", r.Seq, accountID, r.Balance, running)
		}
		if running < 0 {
			t.Fatalf("row %d of %s leaves the balance negative: %s", r.Seq, accountID, running)
		}
	}
	acct, err := s.Account(accountID)
	if err != nil {
		t.Fatalf("Account(%s): %v", accountID, err)
	}
	bal, seq, err := s.Balance(accountID)
	if err != nil {
		t.Fatalf("Balance(%s): %v", accountID, err)
	}
	if acct.Balance != running || bal != running || seq != uint64(len(rows)) {
		t.Fatalf("account %s: stored balance %s, Balance() = %s at seq %d; the ledger replays to %s over %d rows",
			accountID, acct.Balance, bal, seq, running, len(rows))
	}
	return rows
}

func TestSettleDebitsAndWritesAChargeRow(t *testing.T) {
	s, clock, _ := openStallStore(t)
	a := mustCreateAccount(t, s, "acme", 10*Dollar)
	at := clock.Advance(time.Minute)

	c := testCharge(a.ID, "req_1", 1_234_567)
	e, err := s.Settle(c)
	if err != nil {
		t.Fatalf("Settle: %v", err)
	}
	want := Entry{
		Seq: 2, Time: at, AccountID: a.ID, Kind: EntryCharge, Amount: -1_234_567, Balance: 10*Dollar - 1_234_567,
		RequestID: "req_1", KeyID: "key_test", Model: "gpt-test", Deployment: "openai-1",
		PromptTokens: 120, CachedTokens: 20, CacheWriteTokens: 30, CompletionTokens: 45, Basis: "upstream", Outcome: "ok",
	}
	if !e.Time.Equal(want.Time) {
		t.Fatalf("row time %s, want the clock's %s", e.Time, want.Time)
	}
	e.Time = want.Time
	if e != want {
		t.Fatalf("Settle row:\n got %+v\nwant %+v", e, want)
	}
	if e.Cost() != 1_234_567 {
		t.Fatalf("Cost() = %s", e.Cost())
	}
	got, err := s.Request("req_1")
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	got.Time = want.Time
	if got != want {
		t.Fatalf("Request row:\n got %+v\nwant %+v", got, want)
	}
	if _, err := s.Request("req_unknown"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Request of an unsettled id: %v, want ErrNotFound", err)
	}

	later := clock.Advance(time.Hour)
	e2, err := s.Settle(testCharge(a.ID, "req_2", 0))
	if err != nil {
		t.Fatalf("Settle of a zero charge: %v", err)
	}
	if e2.Seq != 3 || e2.Amount != 0 || e2.Balance != want.Balance || !e2.Time.Equal(later) {
		t.Fatalf("a zero charge still writes its row at the clock's time: %+v", e2)
	}
	replayLedger(t, s, a.ID)
}

func TestSettleRefusesInvalidCharges(t *testing.T) {
	s, _, _ := openTestStore(t)
	a := mustCreateAccount(t, s, "acme", Dollar)
	cases := []struct {
		name   string
		charge Charge
	}{
		{"a charge without a request id is refused", testCharge(a.ID, "", 1)},
		{"a request id longer than 200 bytes is refused", testCharge(a.ID, strings.Repeat("r", 201), 1)},
		{"a charge without an account is refused", testCharge("", "req_1", 1)},
		{"a negative charge is refused", testCharge(a.ID, "req_2", -1)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, err := s.Settle(tc.charge)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Settle = %+v, %v; want ErrInvalid", e, err)
			}
		})
	}
	if _, err := s.Settle(testCharge(a.ID, strings.Repeat("r", 200), 1)); err != nil {
		t.Fatalf("a 200-byte request id is allowed: %v", err)
	}
	if rows := replayLedger(t, s, a.ID); len(rows) != 2 {
		t.Fatalf("refused charges wrote rows: %+v", rows)
	}
}

func TestSettleTwiceChargesOnce(t *testing.T) {
	s, _, _ := openTestStore(t)
	a := mustCreateAccount(t, s, "acme", 10*Dollar)
	b := mustCreateAccount(t, s, "other", 10*Dollar)
	first, err := s.Settle(testCharge(a.ID, "req_1", 300))
	if err != nil {
		t.Fatal(err)
	}
	for _, again := range []Charge{
		testCharge(a.ID, "req_1", 300),
		testCharge(a.ID, "req_1", 999),
		testCharge(b.ID, "req_1", 5),
	} {
		e, err := s.Settle(again)
		if !errors.Is(err, ErrSettled) {
			t.Fatalf("settling %+v again: %v, want ErrSettled", again, err)
		}
		if e != first {
			t.Fatalf("settling again returned %+v, want the first row %+v", e, first)
		}
	}
	if rows := replayLedger(t, s, a.ID); rows[len(rows)-1].Balance != 10*Dollar-300 || len(rows) != 2 {
		t.Fatalf("account charged more than once: %+v", rows)
	}
	if rows := replayLedger(t, s, b.ID); len(rows) != 1 {
		t.Fatalf("another account was charged for a settled request id: %+v", rows)
	}
}

func TestSettlingAHoldTwiceChargesOnce(t *testing.T) {
	s, _, _ := openTestStore(t)
	a := mustCreateAccount(t, s, "acme", 10*Dollar)
	bank := NewBank(s)

	t.Run("one after the other", func(t *testing.T) {
		h, err := bank.Hold(a.ID, Dollar)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Settle(testCharge("", "req_seq", 400_000)); err != nil {
			t.Fatalf("first Settle: %v", err)
		}
		for _, c := range []Charge{testCharge("", "req_seq", 400_000), testCharge("", "req_seq_other", 1)} {
			if _, err := h.Settle(c); !errors.Is(err, ErrSettled) {
				t.Fatalf("settling a settled hold again (%s): %v, want ErrSettled", c.RequestID, err)
			}
		}
		if held := bank.Held(a.ID); held != 0 {
			t.Fatalf("Held = %s after the hold settled", held)
		}
		if _, err := s.Request("req_seq_other"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a second Settle of the same hold under a new request id was recorded: %v", err)
		}
	})

	t.Run("concurrently", func(t *testing.T) {
		h, err := bank.Hold(a.ID, Dollar)
		if err != nil {
			t.Fatal(err)
		}
		const n = 32
		var (
			wg      sync.WaitGroup
			ok      atomic.Int32
			settled atomic.Int32
			start   = make(chan struct{})
		)
		for i := range n {
			wg.Go(func() {
				<-start
				_, err := h.Settle(testCharge("", fmt.Sprintf("req_conc_%d", i), 250_000))
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, ErrSettled):
					settled.Add(1)
				default:
					t.Errorf("Settle: %v", err)
				}
			})
		}
		close(start)
		wg.Wait()
		if ok.Load() != 1 || settled.Load() != n-1 {
			t.Fatalf("%d settlements succeeded and %d said ErrSettled; want 1 and %d", ok.Load(), settled.Load(), n-1)
		}
		if held := bank.Held(a.ID); held != 0 {
			t.Fatalf("Held = %s after the hold settled", held)
		}
	})

	rows := replayLedger(t, s, a.ID)
	if len(rows) != 3 || rows[2].Balance != 10*Dollar-400_000-250_000 {
		t.Fatalf("want one charge per hold: %+v", rows)
	}
}

func TestHoldsSharingARequestIDChargeOnce(t *testing.T) {
	t.Run("on one account, one after the other", func(t *testing.T) {
		s, _, _ := openTestStore(t)
		a := mustCreateAccount(t, s, "acme", 10*Dollar)
		bank := NewBank(s)
		h1, _ := bank.Hold(a.ID, Dollar)
		h2, _ := bank.Hold(a.ID, Dollar)
		first, err := h1.Settle(testCharge("", "req_1", 100))
		if err != nil {
			t.Fatal(err)
		}
		e, err := h2.Settle(testCharge("", "req_1", 200))
		if !errors.Is(err, ErrSettled) || e != first {
			t.Fatalf("second hold with the same request id: %+v, %v; want the first row and ErrSettled", e, err)
		}
		if held := bank.Held(a.ID); held != 0 {
			t.Fatalf("Held = %s: the hold refused as already settled was not released", held)
		}
		rows := replayLedger(t, s, a.ID)
		if len(rows) != 2 || rows[1].Balance != 10*Dollar-100 {
			t.Fatalf("want one charge of 100: %+v", rows)
		}
		if _, err := bank.Hold(a.ID, 10*Dollar-100); err != nil {
			t.Fatalf("the whole balance is available again: %v", err)
		}
	})

	t.Run("on one account, in one batch", func(t *testing.T) {
		s, clock, _ := openStallStore(t)
		a := mustCreateAccount(t, s, "acme", 100*Dollar)
		bank := NewBank(s)
		const n = 40
		holds := make([]*Hold, n)
		for i := range holds {
			h, err := bank.Hold(a.ID, Dollar)
			if err != nil {
				t.Fatal(err)
			}
			holds[i] = h
		}
		before := s.SettleStats()
		release := clock.stall(t, s)
		entries := make([]Entry, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, h := range holds {
			wg.Go(func() { entries[i], errs[i] = h.Settle(testCharge("", "req_shared", Amount(1000+i))) })
		}
		waitQueued(s, n)
		release()
		wg.Wait()
		if d := s.SettleStats().Batches - before.Batches; d != 2 {
			t.Fatalf("the settlements took %d batches besides the plug's, want them all in one", d-1)
		}
		winners := 0
		var first Entry
		for i, err := range errs {
			if err == nil {
				winners++
				first = entries[i]
			} else if !errors.Is(err, ErrSettled) {
				t.Fatalf("Settle: %v", err)
			}
		}
		if winners != 1 {
			t.Fatalf("%d holds with one request id were charged, want 1", winners)
		}
		for i := range entries {
			if entries[i] != first {
				t.Fatalf("hold %d got row %+v, want the one charge %+v", i, entries[i], first)
			}
		}
		rows := replayLedger(t, s, a.ID)
		if len(rows) != 2 || rows[1] != first {
			t.Fatalf("want the one charge in the ledger: %+v", rows)
		}
		if held := bank.Held(a.ID); held != 0 {
			t.Fatalf("Held = %s after every hold settled", held)
		}
	})

	t.Run("on two accounts", func(t *testing.T) {
		s, _, _ := openTestStore(t)
		a := mustCreateAccount(t, s, "acme", 10*Dollar)
		b := mustCreateAccount(t, s, "other", 3*Dollar)
		bank := NewBank(s)
		ha, _ := bank.Hold(a.ID, Dollar)
		hb, _ := bank.Hold(b.ID, Dollar)
		first, err := ha.Settle(testCharge("", "req_1", 5*Dollar/10))
		if err != nil {
			t.Fatal(err)
		}
		e, err := hb.Settle(testCharge("", "req_1", 700))
		if !errors.Is(err, ErrSettled) || e != first {
			t.Fatalf("the other account's hold with the same request id: %+v, %v; want %+v and ErrSettled", e, err, first)
		}
		if rows := replayLedger(t, s, b.ID); len(rows) != 1 {
			t.Fatalf("the other account was charged: %+v", rows)
		}
		// The first row belongs to another account: its balance must not
		// leak into this account's mirror.
		if held := bank.Held(b.ID); held != 0 {
			t.Fatalf("Held(other) = %s", held)
		}
		h, err := bank.Hold(b.ID, 3*Dollar)
		if err != nil {
			t.Fatalf("holding the other account's whole balance: %v", err)
		}
		if _, err := bank.Hold(b.ID, 1); !errors.Is(err, ErrInsufficientBalance) {
			t.Fatalf("holding past the other account's balance: %v", err)
		}
		if _, err := h.Settle(testCharge("", "req_2", 0)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSettleAfterCloseFails(t *testing.T) {
	s, _, _ := openTestStore(t)
	a := mustCreateAccount(t, s, "acme", 10*Dollar)
	bank := NewBank(s)
	h, err := bank.Hold(a.ID, Dollar)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.Settle(testCharge(a.ID, "req_1", 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Settle after Close: %v, want ErrClosed", err)
	}
	if _, err := h.Settle(testCharge("", "req_2", 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Hold.Settle after Close: %v, want ErrClosed", err)
	}
	// The money may have been spent although nothing was recorded: the
	// hold stays.
	if held := bank.Held(a.ID); held != Dollar {
		t.Fatalf("Held = %s after a settlement that could not commit, want the hold kept", held)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
}

func TestCloseDrainsQueuedSettlements(t *testing.T) {
	s, clock, path := openStallStore(t)
	a := mustCreateAccount(t, s, "acme", 1000*Dollar)
	const n = 200
	before := s.SettleStats()
	release := clock.stall(t, s)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = s.Settle(testCharge(a.ID, fmt.Sprintf("req_%d", i), Amount(i+1))) })
	}
	waitQueued(s, n)

	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	for {
		s.gc.mu.RLock()
		c := s.gc.closed
		s.gc.mu.RUnlock()
		if c {
			break
		}
		runtime.Gosched()
	}
	if _, err := s.Settle(testCharge(a.ID, "req_late", 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Settle once Close has begun: %v, want ErrClosed", err)
	}
	release()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("settlement %d was queued before Close and failed: %v", i, err)
		}
	}
	if st := s.SettleStats(); st.Batches-before.Batches != 2 || st.Settlements-before.Settlements != n+1 {
		t.Fatalf("SettleStats went from %+v to %+v; want the plug's batch and one batch of %d", before, st, n)
	}

	s2, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	defer s2.Close()
	for i := range n {
		e, err := s2.Request(fmt.Sprintf("req_%d", i))
		if err != nil || e.Cost() != Amount(i+1) {
			t.Fatalf("settlement %d after reopening: %+v, %v", i, e, err)
		}
	}
	if _, err := s2.Request("req_late"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the settlement refused with ErrClosed was recorded: %v", err)
	}
	rows := replayLedger(t, s2, a.ID)
	if want := 1000*Dollar - n*(n+1)/2; rows[len(rows)-1].Balance != want {
		t.Fatalf("balance after reopening %s, want %s", rows[len(rows)-1].Balance, want)
	}
}

func TestSettleRacingCloseEitherCommitsOrFails(t *testing.T) {
	s, _, path := openTestStore(t)
	a := mustCreateAccount(t, s, "acme", 1000*Dollar)
	const workers, each = 16, 20
	var (
		wg   sync.WaitGroup
		done atomic.Int32
		errs [workers][each]error
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				_, errs[w][i] = s.Settle(testCharge(a.ID, fmt.Sprintf("req_%d_%d", w, i), 1))
				done.Add(1)
			}
		})
	}
	for done.Load() < workers*each/3 {
		runtime.Gosched()
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()

	s2, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	defer s2.Close()
	var committed Amount
	for w := range workers {
		for i := range each {
			id := fmt.Sprintf("req_%d_%d", w, i)
			_, found := s2.Request(id)
			switch err := errs[w][i]; {
			case err == nil:
				committed++
				if found != nil {
					t.Fatalf("%s settled before Close returned but is missing after reopening: %v", id, found)
				}
			case errors.Is(err, ErrClosed):
				if !errors.Is(found, ErrNotFound) {
					t.Fatalf("%s failed with ErrClosed but was recorded: %v", id, found)
				}
			default:
				t.Fatalf("%s: %v, want success or ErrClosed", id, err)
			}
		}
	}
	if committed < workers*each/3 {
		t.Fatalf("only %d settlements committed, but %d had returned before Close", committed, workers*each/3)
	}
	rows := replayLedger(t, s2, a.ID)
	if got, want := rows[len(rows)-1].Balance, 1000*Dollar-committed; got != want {
		t.Fatalf("balance after reopening %s, want %s", got, want)
	}
}

func TestReopenedBalancesEqualTheLedgerReplay(t *testing.T) {
	s, _, path := openTestStore(t)
	bank := NewBank(s)
	const accounts, workers, each, credits = 6, 12, 40, 30
	ids := make([]string, accounts)
	want := make([]atomic.Int64, accounts)
	for i := range ids {
		ids[i] = mustCreateAccount(t, s, fmt.Sprintf("acct %d", i), 5*Dollar).ID
		want[i].Store(int64(5 * Dollar))
	}
	var (
		wg       sync.WaitGroup
		requests sync.Map // request id -> Entry
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				k := (w + i) % accounts
				amount := Amount(1 + (w*7919+i*104729)%900_000)
				h, err := bank.Hold(ids[k], amount)
				if errors.Is(err, ErrInsufficientBalance) {
					continue
				}
				if err != nil {
					t.Errorf("Hold: %v", err)
					return
				}
				id := fmt.Sprintf("req_%d_%d", w, i)
				cost := amount * Amount(i%3) / 2
				e, err := h.Settle(testCharge("", id, cost))
				if err != nil {
					t.Errorf("Settle: %v", err)
					return
				}
				want[k].Add(-int64(min(cost, amount)))
				requests.Store(id, e)
			}
		})
	}
	wg.Go(func() {
		for i := range credits {
			k := i % accounts
			if _, _, err := bank.Credit(ids[k], Amount(i+1)*100_000, "top-up"); err != nil {
				t.Errorf("Credit: %v", err)
				return
			}
			want[k].Add(int64(i+1) * 100_000)
		}
	})
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	defer s2.Close()
	for i, id := range ids {
		rows := replayLedger(t, s2, id)
		if got := rows[len(rows)-1].Balance; got != Amount(want[i].Load()) {
			t.Fatalf("account %s replays to %s after reopening, want %s", id, got, Amount(want[i].Load()))
		}
	}
	n := 0
	requests.Range(func(k, v any) bool {
		n++
		e, err := s2.Request(k.(string))
		if err != nil {
			t.Fatalf("Request(%s) after reopening: %v", k, err)
		}
		if e.Seq != v.(Entry).Seq || e.Amount != v.(Entry).Amount || e.AccountID != v.(Entry).AccountID {
			t.Fatalf("Request(%s) after reopening = %+v, Settle returned %+v", k, e, v)
		}
		return true
	})
	if n == 0 {
		t.Fatal("no hold was admitted")
	}
}

func TestUnknownAccountFailsAloneInItsBatch(t *testing.T) {
	s, clock, _ := openStallStore(t)
	a := mustCreateAccount(t, s, "acme", 100*Dollar)
	b := mustCreateAccount(t, s, "other", 100*Dollar)
	const n = 64
	charges := make([]Charge, n)
	var spentA, spentB Amount
	for i := range charges {
		id := fmt.Sprintf("req_%d", i)
		switch i % 4 {
		case 0:
			charges[i] = testCharge(fmt.Sprintf("acct_missing_%d", i), id, 1)
		case 1:
			charges[i] = testCharge(b.ID, id, Amount(i))
			spentB += Amount(i)
		default:
			charges[i] = testCharge(a.ID, id, Amount(i))
			spentA += Amount(i)
		}
	}
	before := s.SettleStats()
	release := clock.stall(t, s)
	entries := make([]Entry, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, c := range charges {
		wg.Go(func() { entries[i], errs[i] = s.Settle(c) })
	}
	waitQueued(s, n)
	release()
	wg.Wait()

	after := s.SettleStats()
	if d := after.Batches - before.Batches; d != 2 {
		t.Fatalf("%d batches committed; want the plug's and one holding all %d charges", d, n)
	}
	if d := after.Settlements - before.Settlements; d != n+1 {
		t.Fatalf("SettleStats counts %d settlements, want %d", d, n+1)
	}
	for i, c := range charges {
		if i%4 == 0 {
			if !errors.Is(errs[i], ErrNotFound) {
				t.Fatalf("charge %d for an unknown account: %v, want ErrNotFound", i, errs[i])
			}
			if _, err := s.Request(c.RequestID); !errors.Is(err, ErrNotFound) {
				t.Fatalf("the charge for an unknown account was recorded: %v", err)
			}
			continue
		}
		if errs[i] != nil {
			t.Fatalf("charge %d failed with its batch-mate: %v", i, errs[i])
		}
		if entries[i].AccountID != c.AccountID || entries[i].Cost() != c.Cost {
			t.Fatalf("charge %d: row %+v", i, entries[i])
		}
	}
	if rows := replayLedger(t, s, a.ID); rows[len(rows)-1].Balance != 100*Dollar-spentA {
		t.Fatalf("acme's balance %s, want %s", rows[len(rows)-1].Balance, 100*Dollar-spentA)
	}
	if rows := replayLedger(t, s, b.ID); rows[len(rows)-1].Balance != 100*Dollar-spentB {
		t.Fatalf("other's balance %s, want %s", rows[len(rows)-1].Balance, 100*Dollar-spentB)
	}
}

func TestConcurrentSettlementsShareBatches(t *testing.T) {
	s, _, _ := openTestStore(t)
	a := mustCreateAccount(t, s, "acme", 100*Dollar)
	const n = 300
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			if _, err := s.Settle(testCharge(a.ID, fmt.Sprintf("req_%d", i), 1)); err != nil {
				t.Errorf("Settle: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	st := s.SettleStats()
	if st.Settlements != n || st.Batches == 0 || st.Batches > n {
		t.Fatalf("SettleStats = %+v after %d settlements", st, n)
	}
	t.Logf("%d settlements in %d batches", st.Settlements, st.Batches)
	if rows := replayLedger(t, s, a.ID); len(rows) != n+1 {
		t.Fatalf("%d rows, want %d", len(rows), n+1)
	}
}

// tickingClock advances a microsecond on every reading, so every
// transaction that reads it gets a distinct time.
type tickingClock struct{ n atomic.Int64 }

func (c *tickingClock) Now() time.Time {
	return time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(c.n.Add(1)) * time.Microsecond)
}

// Ledger queries find a period's rows by binary search over sequence
// numbers, which is only right if rows are in time order. A settlement
// batch must therefore read the clock inside its transaction: read before
// waiting for bbolt's writer lock, a credit committed in between would
// carry a later time than the batch's rows that follow it.
func TestLedgerRowTimesNeverGoBackwards(t *testing.T) {
	clock := new(tickingClock)
	s, err := OpenBolt(filepath.Join(t.TempDir(), "billing.db"), BoltOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := mustCreateAccount(t, s, "acme", 1000*Dollar)
	const workers, each, credits = 8, 40, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if _, err := s.Settle(testCharge(a.ID, fmt.Sprintf("req_%d_%d", w, i), 1)); err != nil {
					t.Errorf("Settle: %v", err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range credits {
			if _, _, err := s.Credit(a.ID, 1, ""); err != nil {
				t.Errorf("Credit: %v", err)
				return
			}
		}
	})
	wg.Wait()
	rows := replayLedger(t, s, a.ID)
	for i := 1; i < len(rows); i++ {
		if rows[i].Time.Before(rows[i-1].Time) {
			t.Fatalf("row %d (%s, %s) is older than row %d (%s, %s)",
				rows[i].Seq, rows[i].Kind, rows[i].Time.Format(time.StampMicro),
				rows[i-1].Seq, rows[i-1].Kind, rows[i-1].Time.Format(time.StampMicro))
		}
	}
}

// TestCorruptAccountFailsAloneInItsBatch: an account record that does not
// decode fails its own charges, not the batch they share with others.
func TestCorruptAccountFailsAloneInItsBatch(t *testing.T) {
	s, clock, _ := openStallStore(t)
	good := mustCreateAccount(t, s, "good", 100*Dollar)
	bad := mustCreateAccount(t, s, "bad", 100*Dollar)
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAccounts).Put([]byte(bad.ID), []byte("{not json"))
	}); err != nil {
		t.Fatal(err)
	}
	release := clock.stall(t, s)
	var wg sync.WaitGroup
	var goodErr, badErr error
	wg.Go(func() { _, goodErr = s.Settle(testCharge(good.ID, "req_good", 5)) })
	wg.Go(func() { _, badErr = s.Settle(testCharge(bad.ID, "req_bad", 5)) })
	waitQueued(s, 2)
	release()
	wg.Wait()
	if goodErr != nil {
		t.Fatalf("the good account's charge failed with its batch: %v", goodErr)
	}
	if badErr == nil || !strings.Contains(badErr.Error(), "decoding account") {
		t.Fatalf("the corrupt account's charge: err = %v", badErr)
	}
	if bal, _, err := s.Balance(good.ID); err != nil || bal != 100*Dollar-5 {
		t.Fatalf("good balance = %s, %v", bal, err)
	}
}

func TestObserveCommitsSeesEveryBatch(t *testing.T) {
	s, _, _ := openTestStore(t)
	acct := mustCreateAccount(t, s, "acme", 100*Dollar)
	var mu sync.Mutex
	var batches, settled int
	s.ObserveCommits(func(batch int, took time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		if batch <= 0 || took < 0 {
			t.Errorf("observed batch %d in %v", batch, took)
		}
		batches++
		settled += batch
	})
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, err := s.Settle(Charge{RequestID: fmt.Sprintf("req_obs_%d", i), AccountID: acct.ID, Cost: 1}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	if settled != n || batches < 1 || batches > n {
		t.Fatalf("observed %d settlements in %d batches, want %d settlements", settled, batches, n)
	}
	mu.Unlock()
	s.ObserveCommits(nil)
	if _, err := s.Settle(Charge{RequestID: "req_obs_after", AccountID: acct.ID, Cost: 1}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if settled != n {
		t.Fatalf("observed a commit after ObserveCommits(nil): %d", settled)
	}
}

// fillBacklog stalls the commit loop on a plug charge and queues
// backlogHigh charges of 1 for accountID behind it: a backlog of
// backlogHigh+1. It returns the function that lets the loop go on and the
// settling goroutines to wait for.
func fillBacklog(t *testing.T, s *BoltStore, clock *stallClock, accountID string) (release func(), wg *sync.WaitGroup) {
	t.Helper()
	release = clock.stall(t, s)
	wg = new(sync.WaitGroup)
	for i := range backlogHigh {
		wg.Go(func() {
			if _, err := s.Settle(testCharge(accountID, fmt.Sprintf("req_%d", i), 1)); err != nil {
				t.Errorf("settling behind the stalled loop: %v", err)
			}
		})
	}
	waitQueued(s, backlogHigh)
	return release, wg
}

// TestAdmitHoldsBackWhileSettlementsAreBehind stalls the commit loop, lets
// more than backlogHigh settlements queue behind it, and checks that Admit
// then holds new work back (until its wait or its context ends, with
// ErrBacklog) and lets it go once the loop has caught up.
func TestAdmitHoldsBackWhileSettlementsAreBehind(t *testing.T) {
	s, clock, _ := openStallStore(t)
	a := mustCreateAccount(t, s, "acme", 100*Dollar)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Admit(canceled, 0); err != nil {
		t.Fatalf("Admit with no backlog: %v, want nil at once", err)
	}

	release, wg := fillBacklog(t, s, clock, a.ID)
	if got := s.SettleStats().Backlog; got != backlogHigh+1 {
		t.Fatalf("backlog %d, want %d (the plug and the queue)", got, backlogHigh+1)
	}

	err := s.Admit(canceled, time.Hour)
	if !errors.Is(err, ErrBacklog) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Admit with a canceled context behind the backlog: %v, want ErrBacklog and context.Canceled", err)
	}
	if err := s.Admit(context.Background(), time.Nanosecond); !errors.Is(err, ErrBacklog) {
		t.Fatalf("Admit whose wait ends behind the backlog: %v, want ErrBacklog", err)
	}
	// The waiter notes whether the loop had been let go when Admit
	// returned: an Admit that returns while the loop is stalled fails
	// the test however the goroutines are scheduled.
	type admission struct {
		err      error
		released bool
	}
	var released atomic.Bool
	admitted := make(chan admission, 1)
	go func() {
		err := s.Admit(context.Background(), time.Hour)
		admitted <- admission{err, released.Load()}
	}()
	for s.SettleStats().Throttled < 3 {
		runtime.Gosched()
	}

	released.Store(true)
	release()
	select {
	case a := <-admitted:
		if a.err != nil || !a.released {
			t.Fatalf("Admit returned %v, the commit loop let go before: %v; want nil once the backlog cleared, not before", a.err, a.released)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Admit still waits after the commit loop caught up")
	}
	wg.Wait()
	if st := s.SettleStats(); st.Backlog != 0 || st.Throttled != 3 {
		t.Fatalf("after the backlog: %+v, want backlog 0 and 3 throttled", st)
	}
	if err := s.Admit(canceled, 0); err != nil {
		t.Fatalf("Admit after the backlog cleared: %v, want nil at once", err)
	}
	acct, err := s.Account(a.ID)
	if err != nil || acct.Balance != 100*Dollar-backlogHigh {
		t.Fatalf("account after the backlog: %+v, %v; want every queued charge settled", acct, err)
	}
}

// A closing store admits nothing: an Admit that waits when Close begins
// wakes to ErrClosed once the queued settlements have committed, and every
// later one is refused at once.
func TestAdmitRefusesOnceTheStoreCloses(t *testing.T) {
	s, clock, _ := openStallStore(t)
	a := mustCreateAccount(t, s, "acme", 100*Dollar)
	release, wg := fillBacklog(t, s, clock, a.ID)
	admitted := make(chan error, 1)
	go func() { admitted <- s.Admit(context.Background(), time.Hour) }()
	for s.SettleStats().Throttled < 1 {
		runtime.Gosched()
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	for deadline := time.Now().Add(10 * time.Second); !s.gc.shut.Load(); runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("Close did not start refusing admissions while settlements were still queued")
		}
	}
	release()
	if err := <-admitted; !errors.Is(err, ErrClosed) {
		t.Errorf("Admit waiting when the store closed: %v, want ErrClosed", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	if err := s.Admit(context.Background(), time.Hour); !errors.Is(err, ErrClosed) {
		t.Errorf("Admit after Close: %v, want ErrClosed", err)
	}
}

// Admit and the commit loop race at the thresholds: an Admit reads a
// backlog over backlogHigh, then the loop drains it to nothing and, seeing
// no one throttled yet, relieves no one. The Admit must see that and pass,
// not wait for a batch that will never come (and leave every later Admit
// waiting too).
func TestAdmitIsNotLeftThrottledWithNothingQueued(t *testing.T) {
	s, clock, _ := openStallStore(t)
	a := mustCreateAccount(t, s, "acme", 100*Dollar)
	release, wg := fillBacklog(t, s, clock, a.ID)
	testHookBehind = func() {
		release()
		wg.Wait()
		for s.SettleStats().Backlog != 0 {
			runtime.Gosched()
		}
	}
	t.Cleanup(func() { testHookBehind = func() {} })
	if err := s.Admit(context.Background(), time.Second); err != nil {
		t.Fatalf("Admit whose backlog drained while it looked: %v, want nil", err)
	}
	testHookBehind = func() {}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Admit(canceled, time.Hour); err != nil {
		t.Fatalf("Admit with nothing queued: %v, want nil at once (throttling left on)", err)
	}
}
