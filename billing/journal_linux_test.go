package billing

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"
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
	bothWays(t, aFailedJournalWriteIsNeverReplayed)
}

func aFailedJournalWriteIsNeverReplayed(t *testing.T) {
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
	bothWays(t, theBatchAfterAFailedWriteStandsAlone)
}

func theBatchAfterAFailedWriteStandsAlone(t *testing.T) {
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

// TestJournalWritesDirectWhereItCan: a durable journal is opened with
// O_DIRECT exactly where the file system takes it (tmpfs before Linux 6.6
// does not, and the journal is then written through the page cache), and
// never when settlements are not synced.
func TestJournalWritesDirectWhereItCan(t *testing.T) {
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(probe, os.O_RDWR|syscall.O_DIRECT, 0)
	takes := err == nil
	if takes {
		f.Close()
	} else if !errors.Is(err, syscall.EINVAL) {
		t.Fatal(err)
	}
	s, err := OpenBolt(filepath.Join(dir, "billing.db"), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.journal.direct != takes || fileFlags(t, s.journal.f)&syscall.O_DIRECT != 0 != takes {
		t.Fatalf("journal direct %v, file flags %#x; the file system takes O_DIRECT: %v", s.journal.direct, fileFlags(t, s.journal.f), takes)
	}
	if fileFlags(t, s.journal.f)&syscall.O_DSYNC == 0 {
		t.Fatal("the journal is not opened O_DSYNC")
	}
	t.Logf("O_DIRECT on %s: %v", dir, takes)
	unsynced, err := OpenBolt(filepath.Join(t.TempDir(), "billing.db"), BoltOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer unsynced.Close()
	if unsynced.journal.direct {
		t.Fatal("a journal that is not synced is written directly")
	}
}

// TestJournalAlignsDirectWrites: what put writes directly is b, then
// zeros to the next block, from block-aligned memory.
func TestJournalAlignsDirectWrites(t *testing.T) {
	var j journal
	for _, n := range []int{1, journalHeaderSize, journalAlign - 1, journalAlign, journalAlign + 1, 3*journalAlign + 7, 100} {
		b := bytes.Repeat([]byte{0xAB}, n)
		a := j.align(b)
		if len(a)%journalAlign != 0 || len(a) < n || len(a) >= n+journalAlign {
			t.Fatalf("%d bytes aligned to %d", n, len(a))
		}
		if p := uintptr(unsafe.Pointer(unsafe.SliceData(a))); p%journalAlign != 0 {
			t.Fatalf("%d bytes at %#x, not block-aligned", n, p)
		}
		if !bytes.Equal(a[:n], b) || !bytes.Equal(a[n:], make([]byte, len(a)-n)) {
			t.Fatalf("%d bytes: not b and zeros", n)
		}
	}
}

// fileFlags is F_GETFL of f.
func fileFlags(t *testing.T, f *os.File) int {
	t.Helper()
	flags, err := fcntl(f, syscall.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	return flags
}

// TestJournalFallsBackWhenADirectWriteIsRefused: a file system may open a
// file with O_DIRECT and then refuse a write (EINVAL: it wants a stricter
// alignment). The journal then goes on through the page cache, with the
// refused batch written again and nothing lost, instead of refusing every
// settlement from then on. The refusal is made real by handing the write
// memory that is not aligned.
func TestJournalFallsBackWhenADirectWriteIsRefused(t *testing.T) {
	s, path, clock, acct := newJournalTest(t)
	if !s.journal.direct {
		t.Skipf("the file system under %s does not take O_DIRECT: no direct write to refuse", path)
	}
	mustSettle(t, s, testCharge(acct.ID, "req_d1", 1000))
	raw := make([]byte, 2*journalAlign+1)
	s.journal.aligned = raw[1 : 1+2*journalAlign : 1+2*journalAlign] // an odd address
	mustSettle(t, s, testCharge(acct.ID, "req_d2", 2000))
	if s.journal.direct || fileFlags(t, s.journal.f)&syscall.O_DIRECT != 0 {
		t.Fatalf("after a refused direct write: direct %v, flags %#x", s.journal.direct, fileFlags(t, s.journal.f))
	}
	mustSettle(t, s, testCharge(acct.ID, "req_d3", 3000))
	crash(t, s)

	s = openJournalStore(t, path, clock)
	defer s.Close()
	checkBooks(t, s, acct.ID, 10*Dollar-6000, 4)
}

// TestJournalFallsBackWhenADirectReadIsRefused: as for a write, a file
// system that opened the journal O_DIRECT may refuse a read (EINVAL);
// recovery then reads it through the page cache, and the journal goes on
// that way. The refusal is made real with memory that is not aligned.
func TestJournalFallsBackWhenADirectReadIsRefused(t *testing.T) {
	s, path, _, acct := newJournalTest(t)
	defer s.Close()
	if !s.journal.direct {
		t.Skipf("the file system under %s does not take O_DIRECT: no direct read to refuse", path)
	}
	mustSettle(t, s, testCharge(acct.ID, "req_r1", 1000))
	want, err := os.ReadFile(path + journalSuffix)
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, journalSize+1)
	got, err := s.journal.readAll(raw[1:]) // an odd address
	if err != nil {
		t.Fatalf("readAll into unaligned memory: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the journal's %d", len(got), len(want))
	}
	if s.journal.direct || fileFlags(t, s.journal.f)&syscall.O_DIRECT != 0 {
		t.Fatalf("after a refused direct read: direct %v, flags %#x", s.journal.direct, fileFlags(t, s.journal.f))
	}
	mustSettle(t, s, testCharge(acct.ID, "req_r2", 1000))
	checkBooks(t, s, acct.ID, 10*Dollar-2000, 3)
}
