package billing

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

func mustHold(t testing.TB, b *Bank, accountID string, amount Amount) *Hold {
	t.Helper()
	h, err := b.Hold(accountID, amount)
	if err != nil {
		t.Fatalf("Hold(%s, %s): %v", accountID, amount, err)
	}
	return h
}

func mustSettleHold(t testing.TB, h *Hold, requestID string, cost Amount) Entry {
	t.Helper()
	e, err := h.Settle(testCharge("", requestID, cost))
	if err != nil {
		t.Fatalf("Settle(%s, %s): %v", requestID, cost, err)
	}
	return e
}

// ledgerSums returns the sum of all an account's row amounts and the sum
// of its charges.
func ledgerSums(t testing.TB, s Store, accountID string) (total, charged Amount, charges int) {
	t.Helper()
	for _, r := range allLedger(t, s, accountID) {
		total += r.Amount
		if r.Kind == EntryCharge {
			charged += r.Cost()
			charges++
		}
	}
	return total, charged, charges
}

func TestHoldAdmitsExactlyWhatTheBalanceCovers(t *testing.T) {
	s, _, _ := openTestStore(t)
	bank := NewBank(s)
	const (
		k     = 12
		n     = 50 * k
		worst = Amount(1_234_567)
	)
	// One micro-dollar short of a (k+1)th hold.
	opening := k*worst + worst - 1
	a := mustCreateAccount(t, s, "acme", opening)

	holds := make([]*Hold, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			holds[i], errs[i] = bank.Hold(a.ID, worst)
		})
	}
	close(start)
	wg.Wait()

	var admitted []*Hold
	for i, err := range errs {
		if err == nil {
			admitted = append(admitted, holds[i])
			continue
		}
		if !errors.Is(err, ErrInsufficientBalance) {
			t.Fatalf("Hold %d: %v, want ErrInsufficientBalance", i, err)
		}
		var ie *InsufficientError
		if !errors.As(err, &ie) {
			t.Fatalf("Hold %d: %T is not an *InsufficientError", i, err)
		}
		if ie.AccountID != a.ID || ie.Needed != worst || ie.Available != worst-1 {
			t.Fatalf("Hold %d: %+v; want account %s, needed %s, available %s", i, ie, a.ID, worst, worst-1)
		}
	}
	if len(admitted) != k {
		t.Fatalf("%d of %d concurrent holds were admitted, want exactly %d", len(admitted), n, k)
	}
	if held := bank.Held(a.ID); held != k*worst {
		t.Fatalf("Held = %s, want %s", held, k*worst)
	}

	r := rand.New(rand.NewPCG(5, 6))
	costs := make([]Amount, k)
	var debit Amount
	for i := range costs {
		switch i {
		case 0:
			costs[i] = 0
		case 1:
			costs[i] = worst
		default:
			costs[i] = Amount(r.Int64N(int64(worst) + 1))
		}
		debit += costs[i]
	}
	for i, h := range admitted {
		wg.Go(func() {
			e, err := h.Settle(testCharge("", fmt.Sprintf("req_%d", i), costs[i]))
			if err != nil {
				t.Errorf("Settle %d: %v", i, err)
				return
			}
			if e.Cost() != costs[i] || e.Balance < 0 {
				t.Errorf("Settle %d: row %+v, want a cost of %s and no overdraft", i, e, costs[i])
			}
		})
	}
	wg.Wait()

	bal, _, err := s.Balance(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if bal < 0 || bal != opening-debit {
		t.Fatalf("balance %s, want %s - %s = %s", bal, opening, debit, opening-debit)
	}
	total, charged, charges := ledgerSums(t, s, a.ID)
	if charged != debit || total != opening-debit || charges != k {
		t.Fatalf("ledger: %d charges summing to %s, rows summing to %s; want %d charges of %s leaving %s",
			charges, charged, total, k, debit, opening-debit)
	}
	replayLedger(t, s, a.ID)
	if held := bank.Held(a.ID); held != 0 {
		t.Fatalf("Held = %s after every hold settled", held)
	}
	// The mirror agrees with the store: exactly the balance can be held.
	h := mustHold(t, bank, a.ID, bal)
	if _, err := bank.Hold(a.ID, 1); !errors.Is(err, ErrInsufficientBalance) {
		t.Fatalf("holding one micro-dollar past the balance: %v", err)
	}
	mustSettleHold(t, h, "req_last", 0)
}

// TestConcurrentHoldsSettlesAndCreditsNeverOverdraw runs holds, settlements
// and credits on one account at once. Every committed ledger row is a
// moment of the account's history, so checking that no row leaves the
// balance negative checks that committed debits never exceeded committed
// credits at any moment.
func TestConcurrentHoldsSettlesAndCreditsNeverOverdraw(t *testing.T) {
	s, _, _ := openTestStore(t)
	bank := NewBank(s)
	const (
		workers = 8
		each    = 150
		credits = 40
		worst   = Amount(100_000)
		opening = 5 * worst
	)
	a := mustCreateAccount(t, s, "acme", opening)

	type step struct{ hold, cost Amount }
	plans := make([][]step, workers)
	var demand Amount
	for w := range plans {
		r := rand.New(rand.NewPCG(7, uint64(w)))
		plans[w] = make([]step, each)
		for i := range plans[w] {
			hold := 1 + Amount(r.Int64N(int64(worst)))
			cost := hold
			if r.IntN(2) == 0 {
				cost = Amount(r.Int64N(int64(hold) + 1))
			}
			plans[w][i] = step{hold, cost}
			demand += cost
		}
	}
	r := rand.New(rand.NewPCG(8, 9))
	topUps := make([]Amount, credits)
	supply := opening
	for i := range topUps {
		topUps[i] = 1 + Amount(r.Int64N(int64(3*worst)))
		supply += topUps[i]
	}
	if demand <= supply {
		t.Fatalf("the plan must ask for more (%s) than the account ever holds (%s)", demand, supply)
	}

	var (
		wg       sync.WaitGroup
		spent    atomic.Int64
		admitted atomic.Int64
		refused  atomic.Int64
		start    = make(chan struct{})
	)
	for w := range workers {
		wg.Go(func() {
			<-start
			for i, st := range plans[w] {
				h, err := bank.Hold(a.ID, st.hold)
				if errors.Is(err, ErrInsufficientBalance) {
					refused.Add(1)
					runtime.Gosched()
					continue
				}
				if err != nil {
					t.Errorf("Hold: %v", err)
					return
				}
				admitted.Add(1)
				e, err := h.Settle(testCharge("", fmt.Sprintf("req_%d_%d", w, i), st.cost))
				if err != nil {
					t.Errorf("Settle: %v", err)
					return
				}
				if e.Balance < 0 {
					t.Errorf("settlement left the balance at %s", e.Balance)
				}
				spent.Add(int64(st.cost))
			}
		})
	}
	wg.Go(func() {
		<-start
		for _, amount := range topUps {
			if _, e, err := bank.Credit(a.ID, amount, "top-up"); err != nil {
				t.Errorf("Credit: %v", err)
				return
			} else if e.Balance < 0 {
				t.Errorf("a credit left the balance at %s", e.Balance)
			}
			runtime.Gosched()
		}
	})
	close(start)
	wg.Wait()
	if t.Failed() {
		return
	}

	rows := replayLedger(t, s, a.ID)
	final := rows[len(rows)-1].Balance
	if want := supply - Amount(spent.Load()); final != want {
		t.Fatalf("final balance %s, want credits %s - spent %s = %s", final, supply, Amount(spent.Load()), want)
	}
	total, charged, _ := ledgerSums(t, s, a.ID)
	if total != final || charged != Amount(spent.Load()) {
		t.Fatalf("ledger sums to %s with %s charged; want %s and %s", total, charged, final, Amount(spent.Load()))
	}
	if held := bank.Held(a.ID); held != 0 {
		t.Fatalf("Held = %s after every hold settled", held)
	}
	if refused.Load() == 0 {
		t.Fatal("no hold was refused although the plan asks for more than the account ever holds")
	}
	t.Logf("%d holds admitted, %d refused; %s spent of %s", admitted.Load(), refused.Load(), Amount(spent.Load()), supply)
	h := mustHold(t, bank, a.ID, final)
	if _, err := bank.Hold(a.ID, 1); !errors.Is(err, ErrInsufficientBalance) {
		t.Fatalf("holding one micro-dollar past the balance: %v", err)
	}
	mustSettleHold(t, h, "req_last", 0)
}

func TestHoldOnAnUnknownAccountIsNotFound(t *testing.T) {
	s, _, _ := openTestStore(t)
	bank := NewBank(s)
	h, err := bank.Hold("acct_missing", 1)
	if !errors.Is(err, ErrNotFound) || h != nil {
		t.Fatalf("Hold on an unknown account = %v, %v; want ErrNotFound", h, err)
	}
	if errors.Is(err, ErrInsufficientBalance) {
		t.Fatalf("an unknown account is not a balance problem: %v", err)
	}
	if held := bank.Held("acct_missing"); held != 0 {
		t.Fatalf("Held = %s", held)
	}
}

func TestHoldAmounts(t *testing.T) {
	s, _, _ := openTestStore(t)
	bank := NewBank(s)
	a := mustCreateAccount(t, s, "acme", Dollar)
	empty := mustCreateAccount(t, s, "empty", 0)

	if _, err := bank.Hold(a.ID, -1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a negative hold: %v, want ErrInvalid", err)
	}
	zero := mustHold(t, bank, empty.ID, 0)
	if zero.Amount != 0 || zero.AccountID != empty.ID {
		t.Fatalf("zero hold = %+v", zero)
	}
	if _, err := bank.Hold(empty.ID, 1); !errors.Is(err, ErrInsufficientBalance) {
		t.Fatalf("holding on an empty account: %v", err)
	}
	whole := mustHold(t, bank, a.ID, Dollar)
	_, err := bank.Hold(a.ID, 1)
	var ie *InsufficientError
	if !errors.As(err, &ie) || ie.Available != 0 || ie.Needed != 1 {
		t.Fatalf("holding past a fully held balance: %v", err)
	}
	if msg := err.Error(); msg != fmt.Sprintf("account %s: hold of 0.000001 exceeds available 0.000000: insufficient balance", a.ID) {
		t.Fatalf("error message %q", msg)
	}
	mustSettleHold(t, whole, "req_1", 0)
	mustSettleHold(t, zero, "req_2", 0)
	if bank.Held(a.ID) != 0 || bank.Held(empty.ID) != 0 {
		t.Fatalf("holds remain: %s, %s", bank.Held(a.ID), bank.Held(empty.ID))
	}
}

func TestCreditWhileHoldsAreOpenRaisesWhatCanBeHeld(t *testing.T) {
	s, _, _ := openTestStore(t)
	bank := NewBank(s)
	a := mustCreateAccount(t, s, "acme", 10*Dollar)
	open := mustHold(t, bank, a.ID, 8*Dollar)

	_, err := bank.Hold(a.ID, 5*Dollar)
	var ie *InsufficientError
	if !errors.As(err, &ie) || ie.Available != 2*Dollar {
		t.Fatalf("holding 5 of 10 with 8 held: %v; want available 2", err)
	}
	acct, e, err := bank.Credit(a.ID, 5*Dollar, "top-up")
	if err != nil {
		t.Fatalf("Credit: %v", err)
	}
	if acct.Balance != 15*Dollar || e.Balance != 15*Dollar || e.Kind != EntryCredit {
		t.Fatalf("Credit = %+v, %+v", acct, e)
	}
	second := mustHold(t, bank, a.ID, 5*Dollar)
	if held := bank.Held(a.ID); held != 13*Dollar {
		t.Fatalf("Held = %s, want 13", held)
	}
	if _, err := bank.Hold(a.ID, 2*Dollar+1); !errors.Is(err, ErrInsufficientBalance) {
		t.Fatalf("holding past what the credit added: %v", err)
	}

	mustSettleHold(t, open, "req_1", 7*Dollar)
	mustSettleHold(t, second, "req_2", Dollar)
	if _, _, err := bank.Credit(a.ID, 0, ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a zero credit: %v", err)
	}
	if _, _, err := bank.Credit("acct_missing", Dollar, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("crediting an unknown account: %v", err)
	}
	rows := replayLedger(t, s, a.ID)
	if final := rows[len(rows)-1].Balance; final != 7*Dollar {
		t.Fatalf("balance %s, want 15 - 7 - 1 = 7", final)
	}
	mustHold(t, bank, a.ID, 7*Dollar)
}

func TestHoldSettleCapsTheCostAtTheHold(t *testing.T) {
	s, _, _ := openTestStore(t)
	bank := NewBank(s)
	a := mustCreateAccount(t, s, "acme", 10*Dollar)
	h := mustHold(t, bank, a.ID, Dollar)
	for _, tc := range []struct{ cost, want Amount }{
		{-5, 0}, {0, 0}, {1, 1}, {Dollar - 1, Dollar - 1}, {Dollar, Dollar}, {Dollar + 1, Dollar}, {1 << 62, Dollar},
	} {
		if got := h.Cap(tc.cost); got != tc.want {
			t.Errorf("Cap(%d) = %d, want %d", tc.cost, got, tc.want)
		}
	}
	e := mustSettleHold(t, h, "req_1", 3*Dollar)
	if e.Cost() != Dollar || e.Balance != 9*Dollar {
		t.Fatalf("a 3-dollar cost on a 1-dollar hold charged %s leaving %s; want 1 leaving 9", e.Cost(), e.Balance)
	}
	if held := bank.Held(a.ID); held != 0 {
		t.Fatalf("Held = %s", held)
	}
	replayLedger(t, s, a.ID)
}

func TestReleaseGivesTheHoldBackWithoutARow(t *testing.T) {
	s, _, _ := openTestStore(t)
	acct := mustCreateAccount(t, s, "acme", 10*Dollar)
	bank := NewBank(s)
	h := mustHold(t, bank, acct.ID, 10*Dollar)
	if _, err := bank.Hold(acct.ID, 1); !errors.Is(err, ErrInsufficientBalance) {
		t.Fatalf("a second hold with the balance held: err = %v", err)
	}
	h.Release()
	h.Release() // twice is harmless
	if got := bank.Held(acct.ID); got != 0 {
		t.Fatalf("held after release = %s", got)
	}
	if _, err := h.Settle(Charge{RequestID: "req_after_release", Cost: 1}); !errors.Is(err, ErrSettled) {
		t.Fatalf("settling a released hold: err = %v, want ErrSettled", err)
	}
	rows, _, err := s.Ledger(acct.ID, LedgerQuery{Limit: 10, Kind: EntryCharge})
	if err != nil || len(rows) != 0 {
		t.Fatalf("charge rows after release = %v, %v; want none", rows, err)
	}
	mustHold(t, bank, acct.ID, 10*Dollar) // the whole balance is available again
}

func TestOpenHoldsCountsHoldsUntilSettledOrReleased(t *testing.T) {
	s, _, _ := openTestStore(t)
	acct := mustCreateAccount(t, s, "acme", 10*Dollar)
	bank := NewBank(s)
	if n := bank.OpenHolds(); n != 0 {
		t.Fatalf("open holds at start = %d", n)
	}
	a, b := mustHold(t, bank, acct.ID, Dollar), mustHold(t, bank, acct.ID, Dollar)
	if _, err := bank.Hold(acct.ID, 100*Dollar); err == nil {
		t.Fatal("a hold beyond the balance was placed")
	}
	if n := bank.OpenHolds(); n != 2 {
		t.Fatalf("open holds = %d, want 2 (a refused hold is not one)", n)
	}
	mustSettleHold(t, a, "req_open_a", 1)
	if _, err := a.Settle(Charge{RequestID: "req_open_a2", Cost: 1}); !errors.Is(err, ErrSettled) {
		t.Fatalf("settling twice: %v", err)
	}
	b.Release()
	b.Release()
	if n := bank.OpenHolds(); n != 0 {
		t.Fatalf("open holds after settle and release (each twice) = %d, want 0", n)
	}
}
