package billing

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// The settlement journal.
//
// A settlement is durable once its ledger row is in the journal, a file
// beside the database: the commit loop appends a batch's rows with one
// write that returns only when they are on disk (O_DSYNC), so a batch
// costs one system call. A bbolt commit costs about eleven (a pwrite per
// dirty page, the meta page, two fdatasyncs), which at low rates, where
// every settlement is a batch of its own, made settling the gateway's
// largest cost per request. The rows are then applied to bbolt in large
// batches, so the database stays the one place everything is read from:
//
//   - every other operation of the store applies the journal first
//     (view and update below), so it reads and writes exactly what it
//     would have without the journal; a write holds the journal's lock
//     to its end, so no settlement slips between a read of a balance
//     and the write that depends on it;
//   - the file is two halves, and batches go to one of them. When that
//     half holds applyMax rows, half its bytes are used, its oldest row is
//     applyAfter old, or the next batch does not fit, the commit loop
//     hands its rows to a goroutine that applies them to bbolt and goes
//     on in the other half, so no settlement waits for bbolt
//     (under load a bbolt commit is a dozen trips through the scheduler,
//     each behind every runnable goroutine). It switches halves only once
//     the other half's rows are in bbolt. Every other operation, a batch
//     that does not fit while the other half is still being applied, and
//     closing the store apply everything in place instead (waiting for
//     the goroutine first) and start the current half over;
//   - OpenBolt applies whatever a crash left in either half before
//     anything else.
//
// Applying is idempotent: a row whose sequence number its account's
// ledger already has is skipped, so a crash between bbolt's commit and the
// journal's reuse replays nothing twice. A half is written from its start
// again only once its rows were applied, and older rows found after the
// last new one at the next open are skipped the same way. The file is
// written with zeros when it is created, so a write into it changes no
// file metadata and needs no journal commit of the file system. (A journal
// written before the halves existed is one chain from the start of the
// file, which reading the first half's chain reads whole.)
//
// A record is its payload's length (4 bytes, little endian), a CRC-32C
// (4 bytes) and the payload: the ledger row as JSON, exactly as it is
// stored in bbolt. The CRCs are chained: each covers the record's length
// and payload and starts from the CRC of the record before it (from zero
// for the first record after the journal starts over), so a record only
// reads as valid right after the one it was written after. Each batch
// starts on a journalAlign boundary and is padded with zeros to the next:
// a batch never rewrites a block that holds an earlier, acknowledged one,
// so a write torn by a power cut can only damage its own rows. Reading
// stops at the first record that is empty, too long or out of the chain,
// after trying once more at the next boundary (where the next batch
// starts): a write torn by a crash, the zeros after the last batch, a
// failed batch (its first header is zeroed), or rows of an applied
// generation.
const (
	journalSuffix     = ".journal"
	journalSize       = 4 << 20 // bytes written with zeros at creation
	journalHalf       = journalSize / 2
	journalHeaderSize = 8
	journalAlign      = 4 << 10 // where batches start
	maxJournalRecord  = 1 << 20 // far above any ledger row; a larger one is refused
)

var zeroBlock [journalAlign]byte

func alignUp(n int64) int64 { return (n + journalAlign - 1) &^ (journalAlign - 1) }

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// chainCRC is a record's CRC: over its length field and payload, from
// the previous record's.
func chainCRC(prev uint32, length, payload []byte) uint32 {
	return crc32.Update(crc32.Update(prev, crc32c, length), crc32c, payload)
}

// journal is the commit loop's file and the rows in it that bbolt does not
// have yet. All of it is guarded by BoltStore.jmu.
type journal struct {
	f    *os.File
	sync bool // write with O_DSYNC, or Sync after each write where there is none
	// direct: f was opened with O_DIRECT, so every write is whole blocks
	// from block-aligned memory, copied there into aligned.
	direct  bool
	aligned []byte
	cur     int64  // the half batches go to: 0 or 1
	off     int64  // where the next batch goes: a multiple of journalAlign
	crc     uint32 // the chain's value after the last record written
	buf     []byte
	// failed, once set, refuses every later batch: a write failed and
	// so did clearing what it may have left.
	failed error

	// rows are the current half's rows, in the order they were written;
	// applying the other half's, while a goroutine applies them to bbolt
	// (nil when none does), applyDone closed when it has returned, with
	// applyErr its error. requests indexes both by request id; accounts
	// holds each touched account's balance and last sequence number
	// after them. spare is a rows slice to reuse.
	rows      []journalRow
	applying  []journalRow
	applyDone chan struct{}
	applyErr  error
	spare     []journalRow
	requests  map[string]Entry
	accounts  map[string]journalAccount

	// The batch being written, the same three over it: kept here so a
	// batch allocates nothing.
	staged         []*settlement
	stagedRequests map[string]int
	stagedAccounts map[string]journalAccount
}

// journalRow is a row the journal holds and bbolt does not have yet, with
// the JSON it was journaled as: applying it stores those bytes, so no row
// is encoded twice (encoding was a third of an apply's CPU).
type journalRow struct {
	Entry
	payload []byte // nil: encode the row when it is applied
}

// settled returns the row of a request id journaled before or staged in
// the batch being written.
func (j *journal) settled(requestID string, staged []*settlement) (Entry, bool) {
	if i, ok := j.stagedRequests[requestID]; ok {
		return staged[i].entry, true
	}
	if e, ok := j.requests[requestID]; ok {
		return e, true
	}
	return Entry{}, false
}

// base and end bound the current half.
func (j *journal) base() int64 { return j.cur * journalHalf }
func (j *journal) end() int64  { return j.base() + journalHalf }

// account returns an account's balance and last sequence number as the
// journal and the batch being written leave them; false when neither
// touched it (bbolt has them).
func (j *journal) account(id string) (journalAccount, bool) {
	if a, ok := j.stagedAccounts[id]; ok {
		return a, true
	}
	a, ok := j.accounts[id]
	return a, ok
}

type journalAccount struct {
	balance Amount
	seq     uint64
}

// openJournal opens (creating and zero-filling if needed) the journal of
// the database at dbPath. The caller holds bbolt's lock on the database,
// which covers the journal too.
func openJournal(dbPath string, sync bool) (*journal, error) {
	path := dbPath + journalSuffix
	flags := os.O_RDWR
	if sync {
		flags |= dsyncFlag
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := createJournal(path, sync); err != nil {
			return nil, fmt.Errorf("creating settlement journal: %w", err)
		}
	}
	// Direct only with O_DSYNC (sync on Linux), which makes each direct
	// write flush the device's cache too: O_DIRECT alone would not.
	direct := sync && dsyncFlag != 0 && directFlag != 0 && journalDirect
	open := flags
	if direct {
		open |= directFlag
	}
	f, err := os.OpenFile(path, open, 0o600)
	if direct && errors.Is(err, syscall.EINVAL) {
		// A file system without O_DIRECT.
		direct = false
		f, err = os.OpenFile(path, flags, 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("opening settlement journal: %w", err)
	}
	return &journal{f: f, sync: sync, direct: direct,
		requests: make(map[string]Entry), accounts: make(map[string]journalAccount),
		stagedRequests: make(map[string]int), stagedAccounts: make(map[string]journalAccount)}, nil
}

// createJournal writes a new journal full of zeros under a temporary
// name, makes it durable and renames it into place, so a journal that
// exists is always whole.
func createJournal(path string, sync bool) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(make([]byte, journalSize))
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil && sync {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// journalDirect lets tests open journals without O_DIRECT.
var journalDirect = true

// appendRecord adds one row's record to buf, its CRC left for seal, and
// returns the row's JSON too. A row too large for the journal is
// ErrInvalid: that charge fails alone.
func appendRecord(buf []byte, e *Entry) ([]byte, []byte, error) {
	// The payload is a slice of its own: the row keeps it until it is
	// applied, long after buf is reused for the next batch.
	payload, ok := appendEntryJSON(make([]byte, 0, entryJSONBound(e)), e)
	if !ok {
		var err error
		if payload, err = json.Marshal(e); err != nil {
			return buf, nil, err
		}
	}
	if len(payload) > maxJournalRecord {
		return buf, nil, fmt.Errorf("%w: the ledger row of request %s is %d bytes, more than the journal takes", ErrInvalid, e.RequestID, len(payload))
	}
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(payload)))
	buf = binary.LittleEndian.AppendUint32(buf, 0)
	return append(buf, payload...), payload, nil
}

// seal fills in the CRCs of the records in buf, chained from prev, and
// returns the last.
func seal(buf []byte, prev uint32) uint32 {
	for len(buf) > 0 {
		n := journalHeaderSize + int(binary.LittleEndian.Uint32(buf))
		prev = chainCRC(prev, buf[:4], buf[journalHeaderSize:n])
		binary.LittleEndian.PutUint32(buf[4:], prev)
		buf = buf[n:]
	}
	return prev
}

// readRecords decodes the journal's chain of records from the start of
// data, up to the first that does not continue it (see the top of this
// file): the rows a crash may have left unapplied, and applied ones, which
// applying skips.
func readRecords(data []byte) ([]Entry, error) {
	var (
		rows []Entry
		crc  uint32
		pos  int64
	)
	for {
		n, next, ok := recordAt(data, pos, crc)
		if !ok && pos%journalAlign != 0 {
			// Padding after a batch: the next one starts at the boundary.
			pos = alignUp(pos)
			n, next, ok = recordAt(data, pos, crc)
		}
		if !ok {
			return rows, nil
		}
		var e Entry
		if err := json.Unmarshal(data[pos+journalHeaderSize:pos+journalHeaderSize+n], &e); err != nil {
			// The chain held, so this is no torn write: the file is
			// damaged, or written by something else. Do not guess.
			return nil, fmt.Errorf("settlement journal record %d: %w", len(rows)+1, err)
		}
		if e.AccountID == "" || e.Seq == 0 || e.RequestID == "" {
			return nil, fmt.Errorf("settlement journal record %d: not a charge row", len(rows)+1)
		}
		rows = append(rows, e)
		crc, pos = next, pos+journalHeaderSize+n
	}
}

// recordAt checks the record at pos against the chain value prev: its
// payload's length and its CRC, when it is whole and continues the chain.
func recordAt(data []byte, pos int64, prev uint32) (n int64, crc uint32, ok bool) {
	if pos+journalHeaderSize > int64(len(data)) {
		return 0, 0, false
	}
	n = int64(binary.LittleEndian.Uint32(data[pos:]))
	if n == 0 || n > maxJournalRecord || n > int64(len(data))-pos-journalHeaderSize {
		return 0, 0, false
	}
	crc = chainCRC(prev, data[pos:pos+4], data[pos+journalHeaderSize:pos+journalHeaderSize+n])
	return n, crc, crc == binary.LittleEndian.Uint32(data[pos+4:])
}

// fits reports whether a batch of records fits in the current half after
// what it holds.
func (j *journal) fits(records []byte) bool {
	return j.off+alignUp(int64(len(records))) <= j.end()
}

// write seals a batch of records, pads it to the next boundary and puts it
// at the journal's end, returning once it is on disk. When the write
// fails, part of the batch may be on disk: its first header is zeroed, so
// that no replay reads any of it; if that fails too, the journal refuses
// every later batch.
func (j *journal) write(records []byte) ([]byte, error) {
	if j.failed != nil {
		return records, j.failed
	}
	crc := seal(records, j.crc)
	end := j.off + alignUp(int64(len(records)))
	buf := append(records, zeroBlock[:end-j.off-int64(len(records))]...)
	err := j.put(buf, j.off)
	if err != nil {
		if cerr := j.put(zeroBlock[:journalHeaderSize], j.off); cerr != nil {
			j.failed = fmt.Errorf("settlement journal: a write failed (%v) and clearing it failed (%v): its state is unknown, so no settlement is taken until the gateway restarts", err, cerr)
		}
		return buf, fmt.Errorf("writing settlement journal: %w", err)
	}
	j.off, j.crc = end, crc
	return buf, nil
}

// put writes b at off, durably. Written directly, b goes out padded with
// zeros to a whole block: off is a block boundary, and the rest of the
// block is the batch's own padding (or, for a failed batch's cleared
// header, the failed batch's).
func (j *journal) put(b []byte, off int64) error {
	if j.direct {
		_, err := j.f.WriteAt(j.align(b), off)
		if !errors.Is(err, syscall.EINVAL) {
			return err
		}
		// The file system opened the file with O_DIRECT but refuses the
		// write (it wants a stricter alignment than a block): from now
		// on the journal is written through the page cache, O_DSYNC as
		// before, starting with this write again.
		if cerr := clearDirect(j.f); cerr != nil {
			return errors.Join(err, cerr)
		}
		j.direct = false
	}
	if _, err := j.f.WriteAt(b, off); err != nil {
		return err
	}
	if j.sync && dsyncFlag == 0 {
		return j.f.Sync()
	}
	return nil
}

// align copies b into block-aligned memory, padded with zeros to a whole
// number of blocks, as O_DIRECT requires of a write.
func (j *journal) align(b []byte) []byte {
	n := int(alignUp(int64(len(b))))
	if cap(j.aligned) < n {
		size := journalAlign
		for size < n {
			size *= 2
		}
		j.aligned = alignedBytes(size)
	}
	a := j.aligned[:n]
	clear(a[copy(a, b):])
	return a
}

// alignedBytes returns size bytes of block-aligned memory.
func alignedBytes(size int) []byte {
	raw := make([]byte, size+journalAlign)
	skip := (journalAlign - int(uintptr(unsafe.Pointer(unsafe.SliceData(raw)))%journalAlign)) % journalAlign
	return raw[skip : skip+size : skip+size]
}

// applyRows writes journaled charge rows into the ledger inside tx: each
// row, its request index entry, and each account's balance after its last
// row. A row the account's ledger already has is skipped; a gap in an
// account's sequence numbers is an error (nothing of tx is then kept).
func applyRows(tx *bolt.Tx, rows []journalRow) error {
	if len(rows) == 0 {
		return nil
	}
	requests, accounts := tx.Bucket(bucketRequests), tx.Bucket(bucketAccounts)
	requests.FillPercent = requestsFill
	balances := make(map[string]Amount, 4)
	for i := range rows {
		e := &rows[i].Entry
		b, err := ledgerOf(tx, e.AccountID)
		if err != nil {
			return err
		}
		switch last := b.Sequence(); {
		case e.Seq <= last:
			continue // applied before a crash
		case e.Seq != last+1:
			return fmt.Errorf("settlement journal: account %s row %d follows row %d", e.AccountID, e.Seq, last)
		}
		v := rows[i].payload
		if v == nil {
			if v, err = json.Marshal(e); err != nil {
				return err
			}
		}
		if err := b.SetSequence(e.Seq); err != nil {
			return err
		}
		if err := b.Put(seqKey(e.Seq), v); err != nil {
			return err
		}
		if err := requests.Put([]byte(e.RequestID), entryRef(e.AccountID, e.Seq)); err != nil {
			return err
		}
		balances[e.AccountID] = e.Balance
	}
	for id, bal := range balances {
		var acct Account
		if err := getJSON(accounts, id, &acct, "account"); err != nil {
			return err
		}
		acct.Balance = bal
		if err := putJSON(accounts, id, &acct); err != nil {
			return err
		}
	}
	return nil
}

// applyLocked moves every journaled row into bbolt: it waits for the
// other half's apply (see rotateLocked), then applies the current half's
// rows with one durable commit and starts that half over. The caller
// holds s.jmu.
func (s *BoltStore) applyLocked() error {
	j := s.journal
	if _, err := s.reapLocked(true); err != nil {
		return err
	}
	if len(j.rows) == 0 {
		return nil
	}
	if err := s.commitRows(j.rows); err != nil {
		return err
	}
	clear(j.rows)
	j.rows = j.rows[:0]
	clear(j.requests)
	clear(j.accounts)
	j.off, j.crc = j.base(), 0
	return nil
}

// commitRows applies journaled rows to bbolt in one durable transaction.
func (s *BoltStore) commitRows(rows []journalRow) error {
	if err := s.db.Update(func(tx *bolt.Tx) error { return applyRows(tx, rows) }); err != nil {
		return fmt.Errorf("applying %d journaled settlements to the ledger: %w", len(rows), err)
	}
	s.gc.applies.Add(1)
	return nil
}

// handOverLocked hands the current half over (rotateLocked) when it can:
// it holds rows, did not overflow, and the last apply has been reaped. It
// reports whether it did. The caller holds s.jmu.
func (s *BoltStore) handOverLocked() bool {
	j := s.journal
	if len(j.rows) == 0 || j.off > j.end() {
		return false
	}
	if done, err := s.reapLocked(false); err != nil || !done {
		return false
	}
	s.rotateLocked()
	return true
}

// rotateLocked hands the current half's rows to a goroutine that applies
// them to bbolt, and starts the other half: batches go on while bbolt
// commits. The caller holds s.jmu, has reaped the last apply (nothing is
// applying) and checked that the current half did not overflow into the
// other (a batch larger than a half is written past its end).
func (s *BoltStore) rotateLocked() {
	j := s.journal
	rows, done := j.rows, make(chan struct{})
	j.rows, j.spare = j.spare[:0], nil
	j.applying, j.applyDone = rows, done
	j.cur ^= 1
	j.off, j.crc = j.base(), 0
	go func() {
		// Written before done is closed, read after it is: no lock.
		j.applyErr = s.commitRows(rows)
		close(done)
	}()
}

// reapLocked finishes the other half's apply: with wait, once it has
// returned; without, only if it has (false if it has not). A failed one
// is tried again here, in place. The rows it applied leave requests and
// accounts (unless a later row of the same account is journaled), and
// the other half is free again. The caller holds s.jmu.
func (s *BoltStore) reapLocked(wait bool) (bool, error) {
	j := s.journal
	if j.applying == nil {
		return true, nil
	}
	if wait {
		<-j.applyDone
	} else {
		select {
		case <-j.applyDone:
		default:
			return false, nil
		}
	}
	if j.applyErr != nil {
		if err := s.commitRows(j.applying); err != nil {
			return false, err
		}
		j.applyErr = nil
	}
	for i := range j.applying {
		e := &j.applying[i]
		if r, ok := j.requests[e.RequestID]; ok && r.AccountID == e.AccountID && r.Seq == e.Seq {
			delete(j.requests, e.RequestID)
		}
		if a, ok := j.accounts[e.AccountID]; ok && a.seq == e.Seq {
			delete(j.accounts, e.AccountID)
		}
	}
	clear(j.applying)
	j.spare, j.applying, j.applyDone = j.applying[:0], nil, nil
	return true, nil
}

// recoverJournal applies what the journal holds (rows a crash left
// unapplied; applied ones are skipped) in one commit.
func (s *BoltStore) recoverJournal() error {
	j := s.journal
	fi, err := j.f.Stat()
	if err != nil {
		return fmt.Errorf("reading settlement journal: %w", err)
	}
	// Block-aligned memory and a whole number of blocks: a file opened
	// O_DIRECT reads only into that.
	data, err := j.readAll(alignedBytes(int(alignUp(fi.Size()))))
	if err != nil {
		return fmt.Errorf("reading settlement journal: %w", err)
	}
	rows, err := readRecords(data)
	if err != nil {
		return err
	}
	if int64(len(data)) > journalHalf {
		more, err := readRecords(data[journalHalf:])
		if err != nil {
			return err
		}
		rows = append(rows, more...)
		// Either half may hold the older rows: each account's in order.
		slices.SortStableFunc(rows, func(a, b Entry) int {
			return cmp.Or(strings.Compare(a.AccountID, b.AccountID), cmp.Compare(a.Seq, b.Seq))
		})
	}
	// Encoded again, not stored as read: the ledger holds what this
	// build writes.
	replay := make([]journalRow, len(rows))
	for i := range rows {
		replay[i].Entry = rows[i]
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return applyRows(tx, replay) }); err != nil {
		return fmt.Errorf("replaying the settlement journal: %w", err)
	}
	return nil
}

// readAll reads the journal from its start into data, as much as it holds.
// A file system that opened the file O_DIRECT but refuses the read
// (EINVAL: it wants a stricter alignment) gets it again through the page
// cache, and the journal is written that way from then on, as put does
// for a refused write.
func (j *journal) readAll(data []byte) ([]byte, error) {
	n, err := j.f.ReadAt(data, 0)
	if j.direct && errors.Is(err, syscall.EINVAL) {
		if cerr := clearDirect(j.f); cerr != nil {
			return nil, errors.Join(err, cerr)
		}
		j.direct = false
		n, err = j.f.ReadAt(data, 0)
	}
	if err != nil && err != io.EOF {
		return nil, err
	}
	return data[:n], nil
}

// view runs a read transaction that sees every settlement made so far.
func (s *BoltStore) view(fn func(*bolt.Tx) error) error {
	s.jmu.Lock()
	err := s.applyLocked()
	s.jmu.Unlock()
	if err != nil {
		return err
	}
	return s.db.View(fn)
}

// update runs a write transaction after every settlement made so far,
// with no settlement journaled until it has committed.
func (s *BoltStore) update(fn func(*bolt.Tx) error) error {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	if err := s.applyLocked(); err != nil {
		return err
	}
	return s.db.Update(fn)
}
