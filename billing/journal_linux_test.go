package billing

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

// failJournalWrite runs one batch of three charges through commitBatch
// with the file size limit (RLIMIT_FSIZE) at 4 KiB, so that the write puts
// the first two records whole on disk and fails (EFBIG) inside the third:
// a batch that is partly on disk although every charge in it failed.
func failJournalWrite(t *testing.T, s *BoltStore, acctID string) {
	t.Helper()
	big := testCharge(acctID, "req_fc", 1000)
	big.Model = strings.Repeat("m", 64<<10)
	batch := []*settlement{
		{charge: testCharge(acctID, "req_fa", 1000), done: make(chan struct{}, 1)},
		{charge: testCharge(acctID, "req_fb", 1000), done: make(chan struct{}, 1)},
		{charge: big, done: make(chan struct{}, 1)},
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	limited := old
	limited.Cur = 4096
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limited); err != nil {
		t.Fatal(err)
	}
	s.commitBatch(batch)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	for _, st := range batch {
		if st.err == nil || errors.Is(st.err, ErrSettled) {
			t.Fatalf("%s: %v, want the write's error", st.charge.RequestID, st.err)
		}
	}
}

// A batch whose write failed was answered with an error: no replay may
// charge any of it.
func TestAFailedJournalWriteIsNeverReplayed(t *testing.T) {
	s, path, clock, acct := newJournalTest(t)
	failJournalWrite(t, s, acct.ID)
	crash(t, s)

	s = openJournalStore(t, path, clock)
	defer s.Close()
	for _, id := range []string{"req_fa", "req_fb", "req_fc"} {
		if e, err := s.Request(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s, whose Settle failed, is in the ledger after the restart: %+v, %v", id, e, err)
		}
	}
	checkBooks(t, s, acct.ID, 10*Dollar, 1)
}

// The batch after a failed one goes where the failed one went; what is
// left of the failed one behind it must not be read as its continuation.
func TestTheBatchAfterAFailedWriteStandsAlone(t *testing.T) {
	s, path, clock, acct := newJournalTest(t)
	failJournalWrite(t, s, acct.ID)
	mustSettle(t, s, testCharge(acct.ID, "req_cc", 3000)) // a record as long as req_fa's
	crash(t, s)

	s = openJournalStore(t, path, clock)
	defer s.Close()
	if e, err := s.Request("req_fb"); !errors.Is(err, ErrNotFound) {
		t.Errorf("req_fb, whose Settle failed, is in the ledger: %+v, %v", e, err)
	}
	checkBooks(t, s, acct.ID, 10*Dollar-3000, 2)
}
