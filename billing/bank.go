package billing

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ErrInsufficientBalance is wrapped by the error Hold returns when an
// account's available balance does not cover the amount.
var ErrInsufficientBalance = errors.New("insufficient balance")

// InsufficientError says by how much a hold did not fit.
type InsufficientError struct {
	AccountID string
	// Needed is the hold asked for; Available is the balance minus the
	// holds already open.
	Needed, Available Amount
}

func (e *InsufficientError) Error() string {
	return fmt.Sprintf("account %s: hold of %s exceeds available %s: %s", e.AccountID, e.Needed, e.Available, ErrInsufficientBalance)
}

func (e *InsufficientError) Unwrap() error { return ErrInsufficientBalance }

// Bank admits spending against prepaid balances and settles it.
//
// Admission places a hold: the request's worst-case cost, reserved against
// the balance minus the holds already open, atomically per account, so
// concurrent requests can never together spend more than the balance.
// Settlement commits the actual cost (never more than the hold) through the
// store, durably, and only then releases the hold: while the debit is on its
// way to disk the money stays reserved, so admission errs on the safe side.
//
// Holds live in memory: they are promises about requests in flight, and a
// process that dies takes its requests with it. Balances are mirrored from
// the store; every change the Bank makes or sees (a settlement, a credit)
// updates the mirror by ledger sequence number, so a stale read can never
// overwrite a newer one.
type Bank struct {
	store  Store
	shards [bankShards]bankShard
	// open counts the holds placed and not yet settled or released.
	open atomic.Int64
}

// OpenHolds is how many holds are open: requests in flight that reserved
// money.
func (b *Bank) OpenHolds() int64 { return b.open.Load() }

const bankShards = 64

type bankShard struct {
	mu      sync.Mutex
	wallets map[string]*wallet
	_       [40]byte // keep shards on separate cache lines
}

// wallet is one account's balance as of ledger row seq, and its open holds.
type wallet struct {
	balance Amount
	seq     uint64
	held    Amount
	holds   int64
}

// NewBank returns a Bank over store.
func NewBank(store Store) *Bank {
	b := &Bank{store: store}
	for i := range b.shards {
		b.shards[i].wallets = make(map[string]*wallet)
	}
	return b
}

func (b *Bank) shard(accountID string) *bankShard {
	// FNV-1a: allocation-free and good enough to spread account ids.
	h := uint32(2166136261)
	for i := 0; i < len(accountID); i++ {
		h ^= uint32(accountID[i])
		h *= 16777619
	}
	return &b.shards[h%bankShards]
}

// walletLocked returns the account's wallet, reading its balance from the
// store on first use. The caller holds sh.mu.
func (b *Bank) walletLocked(sh *bankShard, accountID string) (*wallet, error) {
	if w := sh.wallets[accountID]; w != nil {
		return w, nil
	}
	bal, seq, err := b.store.Balance(accountID)
	if err != nil {
		return nil, err
	}
	w := &wallet{balance: bal, seq: seq}
	sh.wallets[accountID] = w
	return w, nil
}

// Hold reserves amount (zero or more) of an account's balance. It fails
// with an *InsufficientError when the balance minus open holds is smaller.
// Every Hold must be settled.
func (b *Bank) Hold(accountID string, amount Amount) (*Hold, error) {
	if amount < 0 {
		return nil, fmt.Errorf("%w: a hold must not be negative", ErrInvalid)
	}
	sh := b.shard(accountID)
	sh.mu.Lock()
	w, err := b.walletLocked(sh, accountID)
	if err != nil {
		sh.mu.Unlock()
		return nil, fmt.Errorf("placing hold: %w", err)
	}
	if avail := w.balance - w.held; amount > avail {
		sh.mu.Unlock()
		return nil, &InsufficientError{AccountID: accountID, Needed: amount, Available: max(avail, 0)}
	}
	w.held += amount
	w.holds++
	sh.mu.Unlock()
	b.open.Add(1)
	return &Hold{bank: b, shard: sh, wallet: w, AccountID: accountID, Amount: amount}, nil
}

// Held returns the sum of an account's open holds.
func (b *Bank) Held(accountID string) Amount {
	sh := b.shard(accountID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if w := sh.wallets[accountID]; w != nil {
		return w.held
	}
	return 0
}

// Credit adds money to an account through the store and updates the
// mirrored balance.
func (b *Bank) Credit(accountID string, amount Amount, note string) (Account, Entry, error) {
	acct, e, err := b.store.Credit(accountID, amount, note)
	if err == nil {
		b.observe(accountID, e)
	}
	return acct, e, err
}

// observe applies a committed ledger row to the mirror, unless the mirror
// already reflects it or a later one.
func (b *Bank) observe(accountID string, e Entry) {
	sh := b.shard(accountID)
	sh.mu.Lock()
	if w := sh.wallets[accountID]; w != nil && e.Seq > w.seq {
		w.balance, w.seq = e.Balance, e.Seq
	}
	sh.mu.Unlock()
}

// Hold is money reserved for one request until it settles.
type Hold struct {
	bank   *Bank
	shard  *bankShard
	wallet *wallet
	// AccountID and Amount say what is held.
	AccountID string
	Amount    Amount
	settled   atomic.Bool
}

// Cap returns cost limited to the hold: a request is never charged more
// than was reserved for it.
func (h *Hold) Cap(cost Amount) Amount { return min(max(cost, 0), h.Amount) }

// Settle charges c.Cost, capped at the hold, to the hold's account, waits
// until the charge is durable, and releases the hold. A Hold settles once:
// later calls return ErrSettled and charge nothing, as does a request id
// the store has already settled.
//
// When the store cannot commit, the hold stays in place (the request may
// have spent the money although the ledger does not say so) and the error
// is returned; the hold disappears with the process.
func (h *Hold) Settle(c Charge) (Entry, error) {
	c.AccountID = h.AccountID
	c.Cost = h.Cap(c.Cost)
	if err := c.validate(); err != nil {
		// A caller's mistake: the hold stays open for a corrected call.
		return Entry{}, err
	}
	if !h.settled.CompareAndSwap(false, true) {
		return Entry{}, fmt.Errorf("request %s: %w", c.RequestID, ErrSettled)
	}
	e, err := h.bank.store.Settle(c)
	if err != nil && !errors.Is(err, ErrSettled) {
		return e, err
	}
	h.shard.mu.Lock()
	if e.AccountID == h.AccountID && e.Seq > h.wallet.seq {
		h.wallet.balance, h.wallet.seq = e.Balance, e.Seq
	}
	h.wallet.held -= h.Amount
	h.wallet.holds--
	h.shard.mu.Unlock()
	h.bank.open.Add(-1)
	return e, err
}

// Release gives the hold back without charging anything or writing a ledger
// row: for a request refused as bad input after its hold was placed, which
// must change nothing. A Hold that was settled or released before is left
// alone.
func (h *Hold) Release() {
	if !h.settled.CompareAndSwap(false, true) {
		return
	}
	h.shard.mu.Lock()
	h.wallet.held -= h.Amount
	h.wallet.holds--
	h.shard.mu.Unlock()
	h.bank.open.Add(-1)
}
