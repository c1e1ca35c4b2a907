package billing

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Valid reports whether k is a known entry kind.
func (k EntryKind) Valid() bool { return k == EntryCredit || k == EntryCharge }

// LedgerQuery selects and pages an account's ledger rows. Zero fields do
// not filter.
type LedgerQuery struct {
	// Before is the page cursor: only rows with a smaller sequence number.
	// Zero starts at the newest row; the next page is Before = the last
	// row's Seq.
	Before uint64
	// Limit is the most rows one page holds; it must be positive.
	Limit int
	// KeyID and Model keep only the charges made with that key or for
	// that public model.
	KeyID, Model string
	// Kind keeps only rows of that kind.
	Kind EntryKind
	// Since (inclusive) and Until (exclusive) bound the rows' times.
	Since, Until time.Time
}

func (q *LedgerQuery) validate() error {
	if q.Limit <= 0 {
		return fmt.Errorf("%w: limit must be positive", ErrInvalid)
	}
	if q.Kind != "" && !q.Kind.Valid() {
		return fmt.Errorf("%w: kind %q: expected %q or %q", ErrInvalid, q.Kind, EntryCredit, EntryCharge)
	}
	return validatePeriod(q.Since, q.Until)
}

// match reports whether e passes the query's filters other than time.
func (q *LedgerQuery) match(e *Entry) bool {
	return (q.Kind == "" || e.Kind == q.Kind) &&
		(q.KeyID == "" || e.KeyID == q.KeyID) &&
		(q.Model == "" || e.Model == q.Model)
}

func validatePeriod(since, until time.Time) error {
	if !since.IsZero() && !until.IsZero() && !until.After(since) {
		return fmt.Errorf("%w: until (%s) must be after since (%s)", ErrInvalid,
			until.UTC().Format(time.RFC3339Nano), since.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// Ledger returns a page of an account's rows that match q, newest first,
// and whether older matching rows remain.
//
// Rows are appended in time order, so the scan starts at the newest row
// before q.Until (found by binary search) and stops at the first row older
// than q.Since: however selective the filters, it reads no row outside the
// period, plus at most one page's worth of looking ahead for more.
func (s *BoltStore) Ledger(accountID string, q LedgerQuery) ([]Entry, bool, error) {
	if err := q.validate(); err != nil {
		return nil, false, err
	}
	var (
		rows []Entry
		more bool
	)
	err := s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketAccounts).Get([]byte(accountID)) == nil {
			return fmt.Errorf("account %s: %w", accountID, ErrNotFound)
		}
		b := tx.Bucket(bucketLedger).Bucket([]byte(accountID))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, v, err := newestRow(c, q.Before, q.Until)
		for ; k != nil && err == nil; k, v = c.Prev() {
			var e Entry
			if err := decodeRow(accountID, k, v, &e); err != nil {
				return err
			}
			if !q.Since.IsZero() && e.Time.Before(q.Since) {
				break
			}
			if (!q.Until.IsZero() && !e.Time.Before(q.Until)) || !q.match(&e) {
				continue
			}
			if len(rows) == q.Limit {
				more = true
				break
			}
			rows = append(rows, e)
		}
		return err
	})
	if err != nil {
		return nil, false, err
	}
	return rows, more, nil
}

// newestRow positions c on the newest row whose sequence number is below
// before (0: no bound) and whose time is before until (zero: no bound), and
// returns it; k is nil when there is none. Rows are appended in time order,
// so the row is found by binary search over sequence numbers rather than
// by reading every newer row. Seek keeps the search right where sequence
// numbers have gaps.
func newestRow(c *bolt.Cursor, before uint64, until time.Time) (k, v []byte, err error) {
	if before == 0 {
		k, v = c.Last()
	} else if k, _ = c.Seek(seqKey(before)); k == nil {
		// Seek lands on the first key >= before; nil means every row is
		// below it.
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	if k == nil || until.IsZero() {
		return k, v, nil
	}
	if t, err := rowTime(k, v); err != nil || t.Before(until) {
		return k, v, err
	}
	newest, err := keySeq(k)
	if err != nil {
		return nil, nil, err
	}
	first, _ := c.First()
	lo, err := keySeq(first)
	if err != nil {
		return nil, nil, err
	}
	// Sequence numbers start at 1 (bbolt's NextSequence); keeping lo
	// above 0 keeps mid-1 from wrapping around.
	lo = max(lo, 1)
	if newest <= lo {
		return nil, nil, nil
	}
	// The answer is in [lo, hi], or there is none; found is the newest
	// row known to be before until.
	hi := newest - 1
	var found uint64
	for lo <= hi {
		mid := lo + (hi-lo)/2
		k, v := c.Seek(seqKey(mid))
		seq, err := keySeq(k)
		if err != nil {
			return nil, nil, err
		}
		if k == nil || seq > hi {
			// No row in [mid, hi].
			hi = mid - 1
			continue
		}
		t, err := rowTime(k, v)
		if err != nil {
			return nil, nil, err
		}
		if t.Before(until) {
			found, lo = seq, seq+1
		} else {
			hi = mid - 1
		}
	}
	if found == 0 {
		return nil, nil, nil
	}
	k, v = c.Seek(seqKey(found))
	return k, v, nil
}

// keySeq reads a ledger key; a nil key reads as 0.
func keySeq(k []byte) (uint64, error) {
	if k == nil {
		return 0, nil
	}
	if len(k) != 8 {
		return 0, fmt.Errorf("ledger key %x is not an 8-byte sequence number", k)
	}
	return binary.BigEndian.Uint64(k), nil
}

// rowTime decodes only a ledger row's time.
func rowTime(k, v []byte) (time.Time, error) {
	var r struct {
		Time time.Time `json:"time"`
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return time.Time{}, fmt.Errorf("decoding the time of ledger row %x: %w", k, err)
	}
	return r.Time, nil
}

func decodeRow(accountID string, k, v []byte, e *Entry) error {
	if err := json.Unmarshal(v, e); err != nil {
		return fmt.Errorf("decoding ledger row %x of %s: %w", k, accountID, err)
	}
	return nil
}

// UsageQuery selects the charges Usage sums. Zero fields do not filter.
type UsageQuery struct {
	// AccountID is the one account to sum; empty means every account.
	AccountID string
	// Since (inclusive) and Until (exclusive) bound the charges' times.
	Since, Until time.Time
}

// UsageSums are the sums of a set of charges: the requests settled, the
// tokens they were billed for and their cost.
type UsageSums struct {
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CachedTokens     int64  `json:"cached_tokens"`
	CacheWriteTokens int64  `json:"cache_write_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	Cost             Amount `json:"cost"`
}

// add counts the charge e in.
func (u *UsageSums) add(e *Entry) {
	u.Requests++
	u.PromptTokens += e.PromptTokens
	u.CachedTokens += e.CachedTokens
	u.CacheWriteTokens += e.CacheWriteTokens
	u.CompletionTokens += e.CompletionTokens
	u.Cost += e.Cost()
}

// UsageRow is what one account spent on one model in a period.
type UsageRow struct {
	AccountID string `json:"account_id"`
	Model     string `json:"model"`
	UsageSums
}

// Usage sums the charge rows in a period: one row per account and model
// that has charges, ordered by account id, then model. Credits do not
// count. An unknown AccountID is ErrNotFound. Like Ledger, it reads only
// the rows inside the period.
func (s *BoltStore) Usage(q UsageQuery) ([]UsageRow, error) {
	if err := validatePeriod(q.Since, q.Until); err != nil {
		return nil, err
	}
	var out []UsageRow
	err := s.view(func(tx *bolt.Tx) error {
		accounts, ledger := tx.Bucket(bucketAccounts), tx.Bucket(bucketLedger)
		if q.AccountID != "" {
			if accounts.Get([]byte(q.AccountID)) == nil {
				return fmt.Errorf("account %s: %w", q.AccountID, ErrNotFound)
			}
			var err error
			out, err = appendUsage(out, ledger.Bucket([]byte(q.AccountID)), q.AccountID, q)
			return err
		}
		return accounts.ForEach(func(id, _ []byte) error {
			var err error
			out, err = appendUsage(out, ledger.Bucket(id), string(id), q)
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b UsageRow) int {
		if c := strings.Compare(a.AccountID, b.AccountID); c != 0 {
			return c
		}
		return strings.Compare(a.Model, b.Model)
	})
	return out, nil
}

// appendUsage adds one account's usage rows, from its ledger bucket b
// (nil when the account has no rows), to out.
func appendUsage(out []UsageRow, b *bolt.Bucket, accountID string, q UsageQuery) ([]UsageRow, error) {
	if b == nil {
		return out, nil
	}
	byModel := make(map[string]int) // model -> index in out
	c := b.Cursor()
	k, v, err := newestRow(c, 0, q.Until)
	for ; k != nil && err == nil; k, v = c.Prev() {
		var e Entry
		if err := decodeRow(accountID, k, v, &e); err != nil {
			return nil, err
		}
		if !q.Since.IsZero() && e.Time.Before(q.Since) {
			break
		}
		if e.Kind != EntryCharge || (!q.Until.IsZero() && !e.Time.Before(q.Until)) {
			continue
		}
		i, ok := byModel[e.Model]
		if !ok {
			i = len(out)
			byModel[e.Model] = i
			out = append(out, UsageRow{AccountID: accountID, Model: e.Model})
		}
		out[i].add(&e)
	}
	return out, err
}

// DailyUsageRow is what an account spent on one model on one UTC day.
type DailyUsageRow struct {
	// Day is the day's midnight, UTC.
	Day   time.Time `json:"day"`
	Model string    `json:"model"`
	UsageSums
}

// DailyUsage sums an account's charge rows in a period per UTC day and
// model, ordered by day, then model: the data of a usage chart. Since
// (inclusive) and until (exclusive) bound the charges' times; zero does
// not bound. Credits do not count. An unknown account is ErrNotFound.
//
// Like Ledger, it is one pass over the rows inside the period, newest
// first, starting by binary search before until and stopping at the first
// row older than since.
func (s *BoltStore) DailyUsage(accountID string, since, until time.Time) ([]DailyUsageRow, error) {
	if err := validatePeriod(since, until); err != nil {
		return nil, err
	}
	type group struct {
		day   time.Time
		model string
	}
	var out []DailyUsageRow
	err := s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketAccounts).Get([]byte(accountID)) == nil {
			return fmt.Errorf("account %s: %w", accountID, ErrNotFound)
		}
		b := tx.Bucket(bucketLedger).Bucket([]byte(accountID))
		if b == nil {
			return nil
		}
		byGroup := make(map[group]int) // -> index in out
		c := b.Cursor()
		k, v, err := newestRow(c, 0, until)
		for ; k != nil && err == nil; k, v = c.Prev() {
			var e Entry
			if err := decodeRow(accountID, k, v, &e); err != nil {
				return err
			}
			if !since.IsZero() && e.Time.Before(since) {
				break
			}
			if e.Kind != EntryCharge || (!until.IsZero() && !e.Time.Before(until)) {
				continue
			}
			t := e.Time.UTC()
			g := group{time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC), e.Model}
			i, ok := byGroup[g]
			if !ok {
				i = len(out)
				byGroup[g] = i
				out = append(out, DailyUsageRow{Day: g.day, Model: g.model})
			}
			out[i].add(&e)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b DailyUsageRow) int {
		if c := a.Day.Compare(b.Day); c != 0 {
			return c
		}
		return strings.Compare(a.Model, b.Model)
	})
	return out, nil
}
