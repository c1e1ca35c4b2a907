package billing

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openJournalStore opens a store whose commit loop never applies the
// journal on its own (no timer within the test, no batch near applyMax),
// so what a test settles stays in the journal until something reads.
func openJournalStore(t *testing.T, path string, clock *fakeClock) *BoltStore {
	t.Helper()
	s, err := OpenBolt(path, BoltOptions{Now: clock.Now})
	if err != nil {
		t.Fatalf("OpenBolt: %v", err)
	}
	s.applyAfter = time.Hour // before any settlement reaches the loop
	return s
}

// newJournalTest opens a journal store (openJournalStore) in a fresh
// folder, with one account holding $10: the store, its file and clock, to
// crash and reopen it, and the account.
func newJournalTest(t *testing.T) (*BoltStore, string, *fakeClock, Account) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "billing.db")
	clock := newFakeClock()
	s := openJournalStore(t, path, clock)
	return s, path, clock, mustCreateAccount(t, s, "acme", 10*Dollar)
}

// crash leaves the store as kill -9 would: the commit loop stopped, the
// files closed, nothing applied that was only journaled.
func crash(t *testing.T, s *BoltStore) {
	t.Helper()
	s.stopCommitter()
	if err := s.journal.f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
}

// boltRows counts an account's ledger rows in the bbolt file itself,
// without the store (and so without its journal).
func boltRows(t *testing.T, path, accountID string) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	err = db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketLedger).Bucket([]byte(accountID)); b != nil {
			n = b.Stats().KeyN
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkBooks reopens nothing: it checks the store's audit, the account's
// balance and its rows.
func checkBooks(t *testing.T, s *BoltStore, accountID string, balance Amount, rows int) {
	t.Helper()
	r, err := s.Audit()
	if err != nil || !r.OK {
		t.Fatalf("Audit: %+v, %v", r, err)
	}
	acct, err := s.Account(accountID)
	if err != nil {
		t.Fatal(err)
	}
	if acct.Balance != balance {
		t.Errorf("balance %s, want %s", acct.Balance, balance)
	}
	if got := replayLedger(t, s, accountID); len(got) != rows {
		t.Errorf("%d ledger rows, want %d", len(got), rows)
	}
}

// bothWays runs test with the journal written directly (O_DIRECT, where
// the file system takes it) and through the page cache.
func bothWays(t *testing.T, test func(t *testing.T)) {
	for _, direct := range []bool{true, false} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			journalDirect = direct
			defer func() { journalDirect = true }()
			test(t)
		})
	}
}

func TestJournaledSettlementsSurviveACrash(t *testing.T) {
	bothWays(t, journaledSettlementsSurviveACrash)
}

func journaledSettlementsSurviveACrash(t *testing.T) {
	s, path, clock, acct := newJournalTest(t)
	var want []Entry
	for i := range 5 {
		want = append(want, mustSettle(t, s, testCharge(acct.ID, fmt.Sprintf("req_%d", i), Amount(1000*(i+1)))))
	}
	crash(t, s)
	// Only the opening credit reached bbolt: the charges were durable in
	// the journal alone.
	if n := boltRows(t, path, acct.ID); n != 1 {
		t.Fatalf("bbolt has %d rows before the replay, want 1 (the credit)", n)
	}

	s = openJournalStore(t, path, clock)
	defer s.Close()
	checkBooks(t, s, acct.ID, 10*Dollar-15000, 6)
	for _, w := range want {
		got, err := s.Request(w.RequestID)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Time.Equal(w.Time) || got.Seq != w.Seq || got.Balance != w.Balance || got.Amount != w.Amount || got.CacheWriteTokens != 30 {
			t.Errorf("replayed row %+v, want %+v", got, w)
		}
	}
	// The replayed charges are settled: settling one again charges
	// nothing.
	if _, err := s.Settle(testCharge(acct.ID, "req_0", 99)); !errors.Is(err, ErrSettled) {
		t.Fatalf("settling a replayed request again: %v, want ErrSettled", err)
	}
	checkBooks(t, s, acct.ID, 10*Dollar-15000, 6)
}

func TestJournalReplaySkipsRowsAlreadyApplied(t *testing.T) {
	s, path, clock, acct := newJournalTest(t)
	for i := range 5 {
		mustSettle(t, s, testCharge(acct.ID, fmt.Sprintf("req_%d", i), 1000))
	}
	if _, err := s.Account(acct.ID); err != nil { // applies the journal
		t.Fatal(err)
	}
	// A crash before anything new was journaled: bbolt has the rows, and
	// so does the journal.
	crash(t, s)
	rows, err := readRecords(mustReadFile(t, path+journalSuffix))
	if err != nil || len(rows) != 5 {
		t.Fatalf("the journal reads as %d rows (%v), want the 5 applied ones", len(rows), err)
	}
	if n := boltRows(t, path, acct.ID); n != 6 {
		t.Fatalf("bbolt has %d rows, want 6", n)
	}
	s = openJournalStore(t, path, clock)
	defer s.Close()
	checkBooks(t, s, acct.ID, 10*Dollar-5*1000, 6)
}

func TestJournalReplayStopsAtAnOlderGeneration(t *testing.T) {
	s, path, clock, acct := newJournalTest(t)
	// Rows of one size, so the older generation's records line up with
	// the newer one's: only the chain tells them apart.
	for i := range 9 {
		mustSettle(t, s, testCharge(acct.ID, fmt.Sprintf("req_p%d", i), 1000))
	}
	if _, err := s.Account(acct.ID); err != nil { // applies the journal
		t.Fatal(err)
	}
	for i := range 8 {
		mustSettle(t, s, testCharge(acct.ID, fmt.Sprintf("req_a%d", i), 1000))
	}
	if _, err := s.Account(acct.ID); err != nil {
		t.Fatal(err)
	}
	if st := s.SettleStats(); st.Applies != 2 {
		t.Fatalf("%d applies, want 2", st.Applies)
	}
	for i := range 2 {
		mustSettle(t, s, testCharge(acct.ID, fmt.Sprintf("req_b%d", i), 1000))
	}
	crash(t, s)
	rows, err := readRecords(mustReadFile(t, path+journalSuffix))
	if err != nil || len(rows) != 2 || rows[0].RequestID != "req_b0" || rows[1].RequestID != "req_b1" {
		t.Fatalf("the journal reads as %d rows (%v), want the 2 new ones and none of the older generation after them", len(rows), err)
	}
	s = openJournalStore(t, path, clock)
	defer s.Close()
	checkBooks(t, s, acct.ID, 10*Dollar-19*1000, 20)
}

func mustReadFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestJournalReplayStopsAtATornRecord(t *testing.T) {
	s, path, clock, acct := newJournalTest(t)
	for i := range 3 {
		mustSettle(t, s, testCharge(acct.ID, fmt.Sprintf("req_%d", i), 1000))
	}
	crash(t, s)
	// Tear the third record as a crash in the middle of its write would:
	// its last byte never reached the disk. Each charge was a batch of
	// its own, so the third starts on the third boundary.
	data := mustReadFile(t, path+journalSuffix)
	third := 2 * journalAlign
	data[third+journalHeaderSize+int(binary.LittleEndian.Uint32(data[third:]))-1] ^= 0xff
	if err := os.WriteFile(path+journalSuffix, data, 0o600); err != nil {
		t.Fatal(err)
	}

	s = openJournalStore(t, path, clock)
	defer s.Close()
	checkBooks(t, s, acct.ID, 10*Dollar-2*1000, 3)
	if _, err := s.Request("req_2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the torn charge: %v, want ErrNotFound", err)
	}
	// The next settlements go on from where the replay left the ledger.
	e := mustSettle(t, s, testCharge(acct.ID, "req_2", 1000))
	if e.Seq != 4 {
		t.Fatalf("next row seq %d, want 4", e.Seq)
	}
	checkBooks(t, s, acct.ID, 10*Dollar-3*1000, 4)
}

func TestADamagedJournalFailsTheOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "billing.db")
	s := openJournalStore(t, path, newFakeClock())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A record whose checksum holds but whose payload is no charge row:
	// not a torn write, so the open must not guess.
	rec := []byte(`{"seq":1}`)
	data := mustReadFile(t, path+journalSuffix)
	binary.LittleEndian.PutUint32(data, uint32(len(rec)))
	binary.LittleEndian.PutUint32(data[4:], chainCRC(0, data[:4], rec))
	copy(data[journalHeaderSize:], rec)
	if err := os.WriteFile(path+journalSuffix, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBolt(path, BoltOptions{}); err == nil || !strings.Contains(err.Error(), "settlement journal") {
		t.Fatalf("OpenBolt over a damaged journal: %v, want an error naming the journal", err)
	}
}

func TestEveryOperationSeesJournaledSettlements(t *testing.T) {
	path := filepath.Join(t.TempDir(), "billing.db")
	clock := newFakeClock()
	s := openJournalStore(t, path, clock)
	defer s.Close()
	acct := mustCreateAccount(t, s, "acme", 10*Dollar)
	mustSettle(t, s, testCharge(acct.ID, "req_1", 1000))
	clock.Advance(time.Second)
	// A credit after a journaled charge continues its account's ledger:
	// the next sequence number, the balance after the charge.
	_, e, err := s.Credit(acct.ID, 5000, "top-up")
	if err != nil {
		t.Fatal(err)
	}
	if e.Seq != 3 || e.Balance != 10*Dollar-1000+5000 {
		t.Fatalf("credit row %+v, want seq 3 and the balance after the charge", e)
	}
	clock.Advance(time.Second)
	mustSettle(t, s, testCharge(acct.ID, "req_2", 2000))
	rows, _, err := s.Ledger(acct.ID, LedgerQuery{Limit: 10})
	if err != nil || len(rows) != 4 || rows[0].RequestID != "req_2" {
		t.Fatalf("Ledger: %d rows (newest %+v), %v; want 4, req_2 first", len(rows), rows, err)
	}
	bal, seq, err := s.Balance(acct.ID)
	if err != nil || bal != 10*Dollar-1000+5000-2000 || seq != 4 {
		t.Fatalf("Balance: %s at seq %d, %v", bal, seq, err)
	}
	usage, err := s.Usage(UsageQuery{})
	if err != nil || len(usage) != 1 || usage[0].Requests != 2 {
		t.Fatalf("Usage: %+v, %v; want 2 requests", usage, err)
	}
	checkBooks(t, s, acct.ID, 10*Dollar-1000+5000-2000, 4)
}

func TestJournalAppliesWhenFull(t *testing.T) {
	s, path, clock, acct := newJournalTest(t)
	mustSettle(t, s, testCharge(acct.ID, "req_1", 1000))
	// As if the first half had filled up: the next batch does not fit, so
	// the rows before it are handed to bbolt and the batch goes to the
	// other half.
	s.jmu.Lock()
	s.journal.off = s.journal.end() - 10
	s.jmu.Unlock()
	mustSettle(t, s, testCharge(acct.ID, "req_2", 1000))
	s.jmu.Lock()
	_, err := s.reapLocked(true)
	cur := s.journal.cur
	s.jmu.Unlock()
	if st := s.SettleStats(); err != nil || st.Applies != 1 || cur != 1 {
		t.Fatalf("%d applies (%v), writing to half %d; want 1 and the second half", st.Applies, err, cur)
	}
	crash(t, s)
	if n := boltRows(t, path, acct.ID); n != 2 {
		t.Fatalf("bbolt has %d rows, want the credit and the first charge", n)
	}
	s = openJournalStore(t, path, clock)
	defer s.Close()
	checkBooks(t, s, acct.ID, 10*Dollar-2000, 3)
}

func TestJournalAppliesAfterAWhile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "billing.db")
	s, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.applyAfter = time.Millisecond
	acct := mustCreateAccount(t, s, "acme", 10*Dollar)
	mustSettle(t, s, testCharge(acct.ID, "req_1", 1000))
	// The commit loop's timer, not a read, moves the row into bbolt.
	deadline := time.Now().Add(10 * time.Second)
	for s.SettleStats().Applies == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the journal was not applied within 10s of a settlement")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestJournalAppliesAtApplyMax(t *testing.T) {
	s, clock, _ := openStallStore(t)
	s.applyAfter = time.Hour
	acct := mustCreateAccount(t, s, "acme", 100*Dollar)
	// applyMax settlements queue behind a stalled loop, then go in one
	// batch: the journal is far from full, and no timer runs out.
	release := clock.stall(t, s)
	var wg sync.WaitGroup
	for i := range applyMax {
		wg.Go(func() { mustSettle(t, s, testCharge(acct.ID, fmt.Sprintf("req_%d", i), 1)) })
	}
	waitQueued(s, applyMax)
	release()
	wg.Wait()
	// The loop applies right after it has answered the batch.
	deadline := time.Now().Add(10 * time.Second)
	for s.SettleStats().Applies == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no apply within 10s of %d settlements", applyMax)
		}
		time.Sleep(time.Millisecond)
	}
	if st := s.SettleStats(); st.Applies != 1 || st.Batches != 2 {
		t.Fatalf("%+v after %d settlements in one batch, want 1 apply (and the plug's batch)", st, applyMax)
	}
	s.jmu.Lock()
	pending := len(s.journal.rows)
	s.jmu.Unlock()
	if pending != 0 {
		t.Fatalf("%d rows left in the journal, want 0", pending)
	}
}

// FuzzReadRecords feeds arbitrary journals to the reader: it must not
// panic, what it returns must be charge rows, and those rows written as
// one batch must read back as the same rows.
func FuzzReadRecords(f *testing.F) {
	var valid []byte
	for i := range 3 {
		e := Entry{Seq: uint64(i + 1), AccountID: "acct_1", Kind: EntryCharge, Amount: -5, Balance: Amount(100 - 5*(i+1)),
			RequestID: fmt.Sprintf("req_%d", i), Time: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
		var err error
		if valid, _, err = appendRecord(valid, &e); err != nil {
			f.Fatal(err)
		}
	}
	seal(valid, 0)
	f.Add(valid)
	f.Add(valid[:len(valid)-1])
	f.Add(append(valid, make([]byte, 64)...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		rows, err := readRecords(data)
		if err != nil {
			return
		}
		var again []byte
		for i := range rows {
			if rows[i].AccountID == "" || rows[i].Seq == 0 || rows[i].RequestID == "" {
				t.Fatalf("row %d is no charge row: %+v", i, rows[i])
			}
			if again, _, err = appendRecord(again, &rows[i]); err != nil {
				t.Fatal(err)
			}
		}
		seal(again, 0)
		back, err := readRecords(again)
		if err != nil || len(back) != len(rows) {
			t.Fatalf("%d rows written back read as %d (%v)", len(rows), len(back), err)
		}
	})
}

func TestARowTooLargeForTheJournalFailsAlone(t *testing.T) {
	s, path, clock, acct := newJournalTest(t)
	c := testCharge(acct.ID, "req_big", 1000)
	c.Model = strings.Repeat("m", maxJournalRecord)
	if _, err := s.Settle(c); !errors.Is(err, ErrInvalid) {
		t.Fatalf("settling a row larger than the journal takes: %v, want ErrInvalid", err)
	}
	mustSettle(t, s, testCharge(acct.ID, "req_next", 1000))
	crash(t, s)
	s = openJournalStore(t, path, clock)
	defer s.Close()
	if _, err := s.Request("req_next"); err != nil {
		t.Fatalf("the charge after the refused one: %v", err)
	}
	checkBooks(t, s, acct.ID, 10*Dollar-1000, 2)
}

// copyStore copies a store's two files to a fresh folder, as a crash would
// leave them at this moment, and returns the copy's database path.
func copyStore(t *testing.T, path string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "billing.db")
	for _, suffix := range []string{"", journalSuffix} {
		data, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst+suffix, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// The commit loop hands a full half to a goroutine that applies it to
// bbolt, and goes on in the other half: settlements keep completing while
// that bbolt commit cannot even start. A crash then leaves unapplied rows
// in both halves, the newer in the first half (the journal went round
// once): the replay applies both, each account's rows in order.
func TestJournalSettlesWhileTheOtherHalfIsApplied(t *testing.T) {
	s, path, clock, acct := newJournalTest(t)
	rotate := func() {
		t.Helper()
		if !s.applyJournal() {
			t.Fatal("applyJournal found nothing to hand over")
		}
	}
	reap := func() {
		t.Helper()
		s.jmu.Lock()
		defer s.jmu.Unlock()
		if _, err := s.reapLocked(true); err != nil {
			t.Fatal(err)
		}
	}
	mustSettle(t, s, testCharge(acct.ID, "a1", 100))
	mustSettle(t, s, testCharge(acct.ID, "a2", 100))
	rotate() // a1, a2 go to bbolt from the first half
	reap()
	var n int
	if err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketLedger).Bucket([]byte(acct.ID)).Stats().KeyN
		return nil
	}); err != nil || n != 3 {
		t.Fatalf("bbolt has %d rows after the first half's apply (%v), want 3", n, err)
	}
	mustSettle(t, s, testCharge(acct.ID, "b1", 100))
	mustSettle(t, s, testCharge(acct.ID, "b2", 100))
	// A write transaction held open keeps the second half's apply from
	// committing: it waits for bbolt's writer lock.
	tx, err := s.db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	rotate() // b1, b2: stuck behind tx
	settled := make(chan error, 1)
	go func() {
		_, err := s.Settle(testCharge(acct.ID, "c1", 100))
		if err == nil {
			_, err = s.Settle(testCharge(acct.ID, "c2", 100))
		}
		settled <- err
	}()
	select {
	case err := <-settled:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("settlements waited for the other half's bbolt commit")
	}
	if st := s.SettleStats(); st.Applies != 1 {
		t.Fatalf("%d applies, want 1 (the second is stuck)", st.Applies)
	}
	dup, err := s.Settle(testCharge(acct.ID, "b1", 999))
	if !errors.Is(err, ErrSettled) || dup.RequestID != "b1" || dup.Seq != 4 {
		t.Fatalf("settling b1 again while its row is being applied: %+v, %v; want its row and ErrSettled", dup, err)
	}
	image := copyStore(t, path) // bbolt: a1, a2; halves: c1, c2 | b1, b2
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	checkBooks(t, s, acct.ID, 10*Dollar-600, 7)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	if n := boltRows(t, image, acct.ID); n != 3 {
		t.Fatalf("the crash image's bbolt has %d rows, want 3 (credit, a1, a2)", n)
	}
	s = openJournalStore(t, image, clock)
	defer s.Close()
	checkBooks(t, s, acct.ID, 10*Dollar-600, 7)
	rows := replayLedger(t, s, acct.ID)
	var ids []string
	for _, e := range rows[1:] {
		ids = append(ids, e.RequestID)
	}
	if got := strings.Join(ids, " "); got != "a1 a2 b1 b2 c1 c2" {
		t.Errorf("ledger after the replay: %s, want a1 a2 b1 b2 c1 c2", got)
	}
}

// A half that fills while the other is still being applied cannot be
// handed over: the batch waits for that apply, the current half is
// applied in place, and the batch starts it over. Nothing is lost or
// written twice.
func TestJournalFullWhileTheOtherHalfIsApplied(t *testing.T) {
	s, path, clock, acct := newJournalTest(t)
	mustSettle(t, s, testCharge(acct.ID, "a1", 100))
	tx, err := s.db.Begin(true) // the first half's apply cannot commit
	if err != nil {
		t.Fatal(err)
	}
	if !s.applyJournal() {
		t.Fatal("applyJournal found nothing to hand over")
	}
	mustSettle(t, s, testCharge(acct.ID, "b1", 100))
	s.jmu.Lock()
	s.journal.off = s.journal.end() - 10 // the second half is full
	s.jmu.Unlock()
	settled := make(chan error, 1)
	go func() {
		_, err := s.Settle(testCharge(acct.ID, "b2", 100))
		settled <- err
	}()
	select {
	case err := <-settled:
		t.Fatalf("b2 settled (%v) while the half it needed could not be applied", err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-settled; err != nil {
		t.Fatal(err)
	}
	s.jmu.Lock()
	cur, off := s.journal.cur, s.journal.off
	s.jmu.Unlock()
	if cur != 1 || off != journalHalf+journalAlign {
		t.Fatalf("writing to half %d at %d, want the second half started over with b2 (%d)", cur, off, journalHalf+journalAlign)
	}
	crash(t, s)
	if n := boltRows(t, path, acct.ID); n != 3 {
		t.Fatalf("bbolt has %d rows, want the credit, a1 and b1", n)
	}
	s = openJournalStore(t, path, clock)
	defer s.Close()
	checkBooks(t, s, acct.ID, 10*Dollar-300, 4)
}
