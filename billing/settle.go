package billing

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrSettled is returned when a request id has been settled before. The
// first settlement stands; nothing is charged again.
var ErrSettled = errors.New("request already settled")

// ErrClosed is returned by a store that has been closed.
var ErrClosed = errors.New("store is closed")

// Charge is one API request's settlement: what it cost and what it used.
// RequestID makes it idempotent: a store records each request id once.
type Charge struct {
	RequestID  string
	AccountID  string
	KeyID      string
	Model      string
	Deployment string
	Usage      Usage
	Basis      string
	Outcome    string
	// Attempts is how many deployments were called for the request.
	Attempts int
	// Cost is taken from the balance; zero or more.
	Cost Amount
}

func (c *Charge) validate() error {
	switch {
	case c.RequestID == "" || len(c.RequestID) > 200:
		return fmt.Errorf("%w: a charge needs a request id of 1 to 200 bytes", ErrInvalid)
	case c.AccountID == "":
		return fmt.Errorf("%w: a charge needs an account", ErrInvalid)
	case c.Cost < 0:
		return fmt.Errorf("%w: a charge must not be negative", ErrInvalid)
	}
	return nil
}

// maxSettleBatch bounds how many settlements share one transaction.
const maxSettleBatch = 4096

// yieldBelow is the queue length under which the commit loop yields before
// it takes a batch (commitLoop).
const yieldBelow = 64

// settlement is one Settle call waiting for the commit loop.
type settlement struct {
	charge  Charge
	entry   Entry
	payload []byte // entry's JSON, as journaled
	err     error
	done    chan struct{} // receives once the batch is durable
}

var settlementPool = sync.Pool{New: func() any { return &settlement{done: make(chan struct{}, 1)} }}

// committer batches concurrent settlements into shared transactions:
// group commit. One goroutine commits; while it waits for the disk, new
// settlements queue, and the next transaction takes all of them. One fsync
// then makes a whole batch durable, so throughput grows with concurrency
// instead of being capped at one request per disk flush, and nobody waits
// for a timer.
type committer struct {
	mu      sync.RWMutex // guards closed against sends on a closed queue
	closed  bool
	queue   chan *settlement
	stopped chan struct{}

	batches     atomic.Uint64
	settlements atomic.Uint64
	applies     atomic.Uint64

	// backlog counts the settlements handed to Settle and not yet
	// answered. While it is over backlogHigh, Admit holds new work back
	// until the commit loop brings it down to backlogLow (see Admit):
	// relief is closed then, and throttling cleared.
	backlog    atomic.Int64
	throttling atomic.Bool
	reliefMu   sync.Mutex
	relief     chan struct{}
	throttled  atomic.Uint64
	// shut is set when the store starts closing: Admit refuses from
	// then on.
	shut atomic.Bool
	// observe, when set, sees each committed batch (ObserveCommits).
	observe atomic.Pointer[func(batch int, took time.Duration)]
}

// SettleStats counts the commit loop's work since the store opened.
type SettleStats struct {
	// Batches is the number of batches made durable (journal writes),
	// Settlements the number of charges they carried, Applies the number
	// of bbolt transactions that moved journaled rows into the ledger.
	Batches, Settlements, Applies uint64
	// Backlog is how many settlements wait for the disk now; Throttled
	// how many Admit calls have waited for it to come down.
	Backlog   int64
	Throttled uint64
}

// ObserveCommits makes f see every settlement transaction once it is on
// disk: how many settlements it carried and how long the commit took.
// A later call replaces f; nil stops the observations. f must be quick:
// settlements wait for it.
func (s *BoltStore) ObserveCommits(f func(batch int, took time.Duration)) {
	if f == nil {
		s.gc.observe.Store(nil)
		return
	}
	s.gc.observe.Store(&f)
}

// SettleStats reports how settlements have been batched.
func (s *BoltStore) SettleStats() SettleStats {
	return SettleStats{Batches: s.gc.batches.Load(), Settlements: s.gc.settlements.Load(), Applies: s.gc.applies.Load(),
		Backlog: s.gc.backlog.Load(), Throttled: s.gc.throttled.Load()}
}

func (s *BoltStore) startCommitter() {
	s.gc = &committer{queue: make(chan *settlement, maxSettleBatch), stopped: make(chan struct{})}
	go s.commitLoop()
}

// stopCommitter lets queued settlements commit, then stops the loop.
// From its start every Admit takes the slow path and is refused there,
// and those waiting wake to the same answer: a closing store admits
// nothing it could not settle.
func (s *BoltStore) stopCommitter() {
	s.gc.reliefMu.Lock()
	s.gc.shut.Store(true)
	s.gc.throttling.Store(true)
	s.gc.reliefMu.Unlock()
	s.gc.mu.Lock()
	if !s.gc.closed {
		s.gc.closed = true
		close(s.gc.queue)
	}
	s.gc.mu.Unlock()
	<-s.gc.stopped
	s.relieve()
}

// The settlement backlog at which Admit starts holding new work back, and
// the one at which it lets it go again. A gateway keeps far fewer than
// backlogHigh settlements waiting while the disk keeps up: each batch
// takes every settlement that queued during the previous write.
const (
	backlogHigh = 1024
	backlogLow  = 256
)

// ErrBacklog is returned by Admit when the settlement backlog did not come
// down in time.
var ErrBacklog = errors.New("settlements are behind")

// Admit returns at once while settlements keep up with the disk. When more
// than backlogHigh wait for it, the commit loop is behind: the CPU is
// spread over more requests than it can finish, and the one goroutine that
// settles them all gets a smaller share of it the more requests there are,
// so admitting more would only push it further behind (a gateway under such
// a backlog collapses instead of recovering). Admit then waits until the
// backlog is down to backlogLow, for at most wait or until ctx is done (an
// error wrapping ErrBacklog). Work admitted before goes on and settles as
// usual. A closed store admits nothing (ErrClosed).
func (s *BoltStore) Admit(ctx context.Context, wait time.Duration) error {
	if !s.gc.throttling.Load() && s.gc.backlog.Load() <= backlogHigh {
		return nil
	}
	return s.admitSlow(ctx, wait)
}

func (s *BoltStore) admitSlow(ctx context.Context, wait time.Duration) error {
	s.gc.reliefMu.Lock()
	if s.gc.shut.Load() {
		s.gc.reliefMu.Unlock()
		return fmt.Errorf("admitting a request: %w", ErrClosed)
	}
	if s.gc.relief == nil {
		if s.gc.backlog.Load() <= backlogHigh {
			s.gc.reliefMu.Unlock()
			return nil
		}
		testHookBehind()
		s.gc.relief = make(chan struct{})
		s.gc.throttling.Store(true)
		// The commit loop lowers the backlog before it looks at
		// throttling: if it drained the backlog just before the flag
		// went up, it saw no one to relieve and may never come back, so
		// look again now that the flag is up.
		if s.gc.backlog.Load() <= backlogLow {
			close(s.gc.relief)
			s.gc.relief = nil
			s.gc.throttling.Store(false)
			s.gc.reliefMu.Unlock()
			return nil
		}
	}
	relief := s.gc.relief
	s.gc.reliefMu.Unlock()
	s.gc.throttled.Add(1)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-relief:
		if s.gc.shut.Load() {
			return fmt.Errorf("admitting a request: %w", ErrClosed)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("%w: %d settlements still wait for the disk after %s", ErrBacklog, s.gc.backlog.Load(), wait)
	case <-ctx.Done():
		return fmt.Errorf("%w: %d settlements wait for the disk: %w", ErrBacklog, s.gc.backlog.Load(), context.Cause(ctx))
	}
}

// testHookBehind runs when Admit has found the backlog over backlogHigh and
// no one waiting yet; tests use it to let the commit loop drain the backlog
// in between.
var testHookBehind = func() {}

// relieve lets every Admit that waits go on (to ErrClosed, once the
// store is closing).
func (s *BoltStore) relieve() {
	s.gc.reliefMu.Lock()
	if s.gc.relief != nil {
		close(s.gc.relief)
		s.gc.relief = nil
	}
	if !s.gc.shut.Load() {
		s.gc.throttling.Store(false)
	}
	s.gc.reliefMu.Unlock()
}

// How the commit loop applies the journal to bbolt (journal.go): when it
// holds applyMax rows, or applyAfter after the first row it holds.
const (
	applyMax   = 4096
	applyAfter = time.Second
)

func (s *BoltStore) commitLoop() {
	defer close(s.gc.stopped)
	batch := make([]*settlement, 0, 64)
	apply := time.NewTimer(time.Hour)
	apply.Stop()
	armed := false
	for {
		var first *settlement
		select {
		case st, ok := <-s.gc.queue:
			if !ok {
				apply.Stop()
				return
			}
			first = st
		case <-apply.C:
			armed = false
			if s.applyJournal() {
				apply.Reset(s.applyAfter)
				armed = true
			}
			continue
		}
		batch = append(batch[:0], first)
		if len(s.gc.queue) < yieldBelow {
			// Let the goroutines that are ready run first: with one P (a
			// one-CPU machine), they could not run while the last commit
			// sat in fsync, and would otherwise each get a commit of their
			// own. Not when a batch's worth is already queued: Gosched puts
			// this goroutine on the global run queue, which under overload
			// holds thousands of goroutines, and the one goroutine that
			// finishes requests would wait behind all those starting new
			// ones (a soak found it parked there with 4,762 settlements
			// queued).
			runtime.Gosched()
		}
	drain:
		for len(batch) < maxSettleBatch {
			select {
			case st, ok := <-s.gc.queue:
				if !ok {
					break drain
				}
				batch = append(batch, st)
			default:
				break drain
			}
		}
		began := time.Now()
		pending := s.commitBatch(batch)
		if observe := s.gc.observe.Load(); observe != nil {
			(*observe)(len(batch), time.Since(began))
		}
		s.gc.batches.Add(1)
		s.gc.settlements.Add(uint64(len(batch)))
		for i, st := range batch {
			st.done <- struct{}{}
			batch[i] = nil
		}
		if s.gc.backlog.Add(-int64(len(batch))) <= backlogLow && s.gc.throttling.Load() {
			s.relieve()
		}
		if pending >= applyMax {
			s.applyJournal()
		}
		if !armed {
			// Rows wait, or an apply runs whose end is to be reaped.
			apply.Reset(s.applyAfter)
			armed = true
		}
	}
}

// applyJournal moves the current half's rows toward bbolt for the commit
// loop: it hands them to a goroutine and switches halves (rotateLocked)
// once the last such goroutine is done; a half that overflowed is applied
// in place. It reports whether anything is left to do: rows that wait, or
// an apply still running. An error is not lost: the rows stay journaled
// and the next operation that applies them (every other one of the store
// does) returns it.
func (s *BoltStore) applyJournal() (more bool) {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	j := s.journal
	if s.handOverLocked() {
		return true
	}
	switch done, err := s.reapLocked(false); {
	case err != nil || !done:
		return true
	case len(j.rows) == 0:
		return false
	}
	// The half overflowed (a batch larger than a half): in place.
	_ = s.applyLocked()
	return len(j.rows) > 0
}

// Settle records a charge: it debits the account and appends a ledger row
// in one transaction, and returns once that transaction is on disk.
// Concurrent calls share transactions (group commit). A request id that
// was settled before is not charged again: Settle returns its first row and
// an error wrapping ErrSettled.
func (s *BoltStore) Settle(c Charge) (Entry, error) {
	if err := c.validate(); err != nil {
		return Entry{}, err
	}
	st := settlementPool.Get().(*settlement)
	st.charge = c
	s.gc.mu.RLock()
	if s.gc.closed {
		s.gc.mu.RUnlock()
		settlementPool.Put(st)
		return Entry{}, fmt.Errorf("settling request %s: %w", c.RequestID, ErrClosed)
	}
	s.gc.backlog.Add(1)
	s.gc.queue <- st
	s.gc.mu.RUnlock()
	<-st.done
	e, err := st.entry, st.err
	*st = settlement{done: st.done}
	settlementPool.Put(st)
	return e, err
}

// commitBatch makes a batch durable: it works out each charge's ledger
// row from the account as bbolt and the journal leave it, and writes the
// rows to the journal in one write. A charge that cannot apply (unknown
// account, a repeated request id, an overflow) fails alone; a failing write
// fails them all, and nothing of the batch is kept. It returns how many
// journaled rows of the current half bbolt does not have yet (applyMax or
// more once half the half's bytes are used: time to hand it over).
func (s *BoltStore) commitBatch(batch []*settlement) int {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	j := s.journal
	// Read the clock under the journal's lock, which Credit holds while it
	// reads the clock too, so that rows are appended in time order:
	// Ledger's period queries binary-search on it.
	now := s.now().UTC()
	staged, buf := j.staged[:0], j.buf[:0]
	clear(j.stagedAccounts)
	clear(j.stagedRequests)
	err := s.db.View(func(tx *bolt.Tx) error {
		accounts, requests, ledger := tx.Bucket(bucketAccounts), tx.Bucket(bucketRequests), tx.Bucket(bucketLedger)
		for _, st := range batch {
			st.entry, st.payload, st.err = Entry{}, nil, nil
			c := &st.charge
			if e, ok := j.settled(c.RequestID, staged); ok {
				st.entry, st.err = e, fmt.Errorf("request %s: %w", c.RequestID, ErrSettled)
				continue
			}
			if ref := requests.Get([]byte(c.RequestID)); ref != nil {
				// A corrupt index entry fails this charge alone, not the
				// batch around it: the audit reports the damage.
				e, err := entryByRef(tx, ref)
				if err == nil {
					err = ErrSettled
				}
				st.entry, st.err = e, fmt.Errorf("request %s: %w", c.RequestID, err)
				continue
			}
			a, ok := j.account(c.AccountID)
			if !ok {
				var acct Account
				if err := getJSON(accounts, c.AccountID, &acct, "account"); err != nil {
					// Unknown or undecodable: this charge fails alone.
					st.err = err
					continue
				}
				a.balance = acct.Balance
				if b := ledger.Bucket([]byte(c.AccountID)); b != nil {
					a.seq = b.Sequence()
				}
			}
			next := a.balance - c.Cost
			if next > a.balance {
				st.err = fmt.Errorf("%w: balance would overflow", ErrInvalid)
				continue
			}
			st.entry = Entry{
				Seq: a.seq + 1, Time: now, AccountID: c.AccountID, Kind: EntryCharge, Amount: -c.Cost, Balance: next,
				RequestID: c.RequestID, KeyID: c.KeyID, Model: c.Model, Deployment: c.Deployment, Attempts: c.Attempts,
				PromptTokens: c.Usage.PromptTokens, CachedTokens: c.Usage.CachedTokens, CacheWriteTokens: c.Usage.CacheWriteTokens, CompletionTokens: c.Usage.CompletionTokens,
				Basis: c.Basis, Outcome: c.Outcome,
			}
			var err error
			if buf, st.payload, err = appendRecord(buf, &st.entry); errors.Is(err, ErrInvalid) {
				st.entry, st.err = Entry{}, err
				continue
			} else if err != nil {
				return err
			}
			j.stagedAccounts[c.AccountID] = journalAccount{balance: next, seq: st.entry.Seq}
			j.stagedRequests[c.RequestID] = len(staged)
			staged = append(staged, st)
		}
		return nil
	})
	j.staged = staged
	if err == nil && len(staged) > 0 {
		if !j.fits(buf) {
			// The half is full: hand it over and go on in the other one,
			// if that one's rows are in bbolt by now.
			s.handOverLocked()
		}
		if !j.fits(buf) && (j.off > j.base() || j.applying != nil) {
			// The other half is still being applied (or failed to be):
			// everything goes to bbolt here, and the half starts over. A
			// batch larger than a half is then written past its end,
			// into the other half, which holds nothing unapplied now.
			err = s.applyLocked()
		}
		if err == nil {
			buf, err = j.write(buf)
		}
	}
	j.buf = buf
	if err != nil {
		err = fmt.Errorf("committing %d settlements: %w", len(batch), err)
		for _, st := range batch {
			st.entry, st.err = Entry{}, err
		}
	} else {
		for _, st := range staged {
			j.requests[st.charge.RequestID] = st.entry
			j.rows = append(j.rows, journalRow{st.entry, st.payload})
		}
		for id, a := range j.stagedAccounts {
			j.accounts[id] = a
		}
	}
	clear(staged)
	if j.off-j.base() >= journalHalf/2 {
		// Batches of a row or two take a block each: hand the half over
		// by its bytes too, well before it fills.
		return max(len(j.rows), applyMax)
	}
	return len(j.rows)
}

// entryRef is the requests index's value: account id, NUL, 8-byte seq.
func entryRef(accountID string, seq uint64) []byte {
	b := make([]byte, 0, len(accountID)+9)
	b = append(b, accountID...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, seq)
}

func entryByRef(tx *bolt.Tx, ref []byte) (Entry, error) {
	if len(ref) < 10 || ref[len(ref)-9] != 0 {
		return Entry{}, fmt.Errorf("corrupt request index value %q", ref)
	}
	acct, seq := ref[:len(ref)-9], ref[len(ref)-8:]
	b := tx.Bucket(bucketLedger).Bucket(acct)
	if b == nil {
		return Entry{}, fmt.Errorf("request index names account %s, which has no ledger", acct)
	}
	var e Entry
	if err := getJSON(b, string(seq), &e, "ledger row"); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// Request returns the ledger row that settled a request id.
func (s *BoltStore) Request(requestID string) (Entry, error) {
	var e Entry
	err := s.view(func(tx *bolt.Tx) error {
		ref := tx.Bucket(bucketRequests).Get([]byte(requestID))
		if ref == nil {
			return fmt.Errorf("request %s: %w", requestID, ErrNotFound)
		}
		var err error
		e, err = entryByRef(tx, ref)
		return err
	})
	return e, err
}

// Balance returns an account's balance and the sequence number of the
// ledger row that left it (0 before the first row), in one read.
func (s *BoltStore) Balance(accountID string) (Amount, uint64, error) {
	var (
		acct Account
		seq  uint64
	)
	err := s.view(func(tx *bolt.Tx) error {
		if err := getJSON(tx.Bucket(bucketAccounts), accountID, &acct, "account"); err != nil {
			return err
		}
		if b := tx.Bucket(bucketLedger).Bucket([]byte(accountID)); b != nil {
			seq = b.Sequence()
		}
		return nil
	})
	return acct.Balance, seq, err
}
