package billing

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// AuditReport is the result of replaying every ledger: how much was
// checked, and every place where the stored data disagrees with itself.
type AuditReport struct {
	Accounts int64 `json:"accounts"`
	Rows     int64 `json:"rows"`
	Charges  int64 `json:"charges"`
	// Differences is empty when the store is consistent.
	Differences []AuditDifference `json:"differences"`
	// OK reports whether there are no differences.
	OK bool `json:"ok"`
}

// AuditDifference is one inconsistency an audit found.
type AuditDifference struct {
	// AccountID and Seq locate the problem: Seq is 0 when it concerns the
	// account as a whole (or a requests index entry that names no row).
	AccountID string `json:"account_id"`
	Seq       uint64 `json:"seq,omitempty"`
	// RequestID is set when the problem concerns a request's charge or
	// its entry in the requests index.
	RequestID string `json:"request_id,omitempty"`
	Problem   string `json:"problem"`
	// Stored and Replayed are set when the problem is about money: the
	// balance the store holds and the one replaying the ledger gives.
	Stored   *Amount `json:"stored,omitempty"`
	Replayed *Amount `json:"replayed,omitempty"`
}

// String formats d on one line, for people.
func (d AuditDifference) String() string {
	var b strings.Builder
	b.WriteString("account ")
	if d.AccountID == "" {
		b.WriteString("(none)")
	} else {
		b.WriteString(d.AccountID)
	}
	if d.Seq != 0 {
		fmt.Fprintf(&b, " row %d", d.Seq)
	}
	if d.RequestID != "" {
		fmt.Fprintf(&b, " request %s", d.RequestID)
	}
	b.WriteString(": ")
	b.WriteString(d.Problem)
	if d.Stored != nil && d.Replayed != nil {
		fmt.Fprintf(&b, " (stored %s, replayed %s)", *d.Stored, *d.Replayed)
	}
	return b.String()
}

// Audit checks, in one read transaction, that the store agrees with
// itself, as promise 3 (durable: the ledger replays exactly to the stored
// balances) and promise 2 (charged once) require:
//
//   - replaying each account's ledger from zero gives every row's stored
//     balance and, at the end, the account's balance;
//   - each ledger's sequence numbers run 1, 2, 3, ... without gaps, up to
//     the bucket's sequence counter, and each row records its own number,
//     account and a known kind with an amount of the right sign;
//   - every charge row's request id is in the requests index, pointing
//     back at that row, and every index entry points at the charge row of
//     its own request id, so no request is charged twice.
//
// A clean store gives OK = true. Problems in the data are differences,
// not errors; an error means the store could not be read. Audit reads
// every row: a bbolt read transaction that long makes writers wait if the
// file has to grow meanwhile, so run it when an extra pause in settling is
// acceptable.
func (s *BoltStore) Audit() (AuditReport, error) {
	r := AuditReport{Differences: []AuditDifference{}}
	err := s.view(func(tx *bolt.Tx) error {
		a := &auditor{
			report:   &r,
			accounts: tx.Bucket(bucketAccounts),
			ledger:   tx.Bucket(bucketLedger),
			requests: tx.Bucket(bucketRequests),
		}
		if a.accounts == nil || a.ledger == nil || a.requests == nil {
			return fmt.Errorf("a bucket is missing: the file is not an arcane database")
		}
		if err := a.accounts.ForEach(a.account); err != nil {
			return err
		}
		if err := a.ledger.ForEach(a.orphanLedger); err != nil {
			return err
		}
		return a.requests.ForEach(a.indexEntry)
	})
	if err != nil {
		return AuditReport{}, fmt.Errorf("auditing the store: %w", err)
	}
	r.OK = len(r.Differences) == 0
	return r, nil
}

// auditor is one audit's state inside its read transaction.
type auditor struct {
	report                     *AuditReport
	accounts, ledger, requests *bolt.Bucket
}

func (a *auditor) differ(d AuditDifference) {
	a.report.Differences = append(a.report.Differences, d)
}

func (a *auditor) differMoney(accountID string, seq uint64, problem string, stored, replayed Amount) {
	a.differ(AuditDifference{AccountID: accountID, Seq: seq, Problem: problem, Stored: &stored, Replayed: &replayed})
}

// account replays one account's ledger against its record.
func (a *auditor) account(k, v []byte) error {
	id := string(k)
	a.report.Accounts++
	var acct Account
	if err := json.Unmarshal(v, &acct); err != nil {
		a.differ(AuditDifference{AccountID: id, Problem: fmt.Sprintf("account record does not decode: %v", err)})
		return nil
	}
	if acct.ID != id {
		a.differ(AuditDifference{AccountID: id, Problem: fmt.Sprintf("account record is stored under %s but says its id is %s", id, acct.ID)})
	}
	replayed := a.replay(id)
	if replayed != acct.Balance {
		a.differMoney(id, 0, "account balance does not equal its ledger replayed from zero", acct.Balance, replayed)
	}
	return nil
}

// replay checks one account's rows, oldest first, and returns their sum.
func (a *auditor) replay(id string) Amount {
	b := a.ledger.Bucket([]byte(id))
	if b == nil {
		return 0
	}
	var (
		sum  Amount
		prev uint64
		// drift is the last row's stored balance minus the replayed
		// sum. A row is reported when its drift differs from the
		// previous row's, so one lost or altered row is reported once,
		// not again on every row after it.
		drift Amount
	)
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil {
			a.differ(AuditDifference{AccountID: id, Problem: fmt.Sprintf("ledger holds a nested bucket %q", k)})
			continue
		}
		if len(k) != 8 {
			a.differ(AuditDifference{AccountID: id, Problem: fmt.Sprintf("ledger key %x is not an 8-byte sequence number", k)})
			continue
		}
		seq := binary.BigEndian.Uint64(k)
		a.report.Rows++
		if seq != prev+1 {
			a.differ(AuditDifference{AccountID: id, Seq: seq, Problem: fmt.Sprintf("sequence jumps from %d to %d: rows are missing", prev, seq)})
		}
		prev = seq
		var e Entry
		if err := json.Unmarshal(v, &e); err != nil {
			a.differ(AuditDifference{AccountID: id, Seq: seq, Problem: fmt.Sprintf("row does not decode: %v", err)})
			continue
		}
		if e.Seq != seq {
			a.differ(AuditDifference{AccountID: id, Seq: seq, Problem: fmt.Sprintf("row says its sequence number is %d", e.Seq)})
		}
		if e.AccountID != id {
			a.differ(AuditDifference{AccountID: id, Seq: seq, Problem: fmt.Sprintf("row says it belongs to account %s", e.AccountID)})
		}
		switch e.Kind {
		case EntryCredit:
			if e.Amount <= 0 {
				a.differ(AuditDifference{AccountID: id, Seq: seq, Problem: fmt.Sprintf("credit of %s does not add money", e.Amount)})
			}
		case EntryCharge:
			a.report.Charges++
			if e.Amount > 0 {
				a.differ(AuditDifference{AccountID: id, Seq: seq, RequestID: e.RequestID, Problem: fmt.Sprintf("charge of %s adds money", e.Amount)})
			}
			a.charge(id, seq, &e)
		default:
			a.differ(AuditDifference{AccountID: id, Seq: seq, Problem: fmt.Sprintf("row has unknown kind %q", e.Kind)})
		}
		sum += e.Amount
		if d := e.Balance - sum; d != drift {
			if d != 0 {
				a.differMoney(id, seq, "row's balance does not equal the ledger replayed from zero", e.Balance, sum)
			}
			drift = d
		}
	}
	if n := b.Sequence(); n != prev {
		a.differ(AuditDifference{AccountID: id, Problem: fmt.Sprintf("ledger's sequence counter is %d but its newest row is %d", n, prev)})
	}
	return sum
}

// charge checks that a charge row is the one the requests index names for
// its request id.
func (a *auditor) charge(id string, seq uint64, e *Entry) {
	if e.RequestID == "" {
		a.differ(AuditDifference{AccountID: id, Seq: seq, Problem: "charge has no request id"})
		return
	}
	ref := a.requests.Get([]byte(e.RequestID))
	if ref == nil {
		a.differ(AuditDifference{AccountID: id, Seq: seq, RequestID: e.RequestID,
			Problem: "charge's request id is not in the requests index, so the request could be charged again"})
		return
	}
	if !bytes.Equal(ref, entryRef(id, seq)) {
		refAcct, refSeq, ok := parseEntryRef(ref)
		problem := fmt.Sprintf("requests index entry %q is malformed", ref)
		if ok {
			problem = fmt.Sprintf("requests index names account %s row %d for this request: it is charged more than once", refAcct, refSeq)
		}
		a.differ(AuditDifference{AccountID: id, Seq: seq, RequestID: e.RequestID, Problem: problem})
	}
}

// orphanLedger reports a ledger bucket without an account.
func (a *auditor) orphanLedger(k, v []byte) error {
	if v != nil {
		a.differ(AuditDifference{AccountID: string(k), Problem: "ledger holds a value where an account's bucket belongs"})
		return nil
	}
	if a.accounts.Get(k) == nil {
		a.differ(AuditDifference{AccountID: string(k), Problem: "ledger of an account that does not exist"})
	}
	return nil
}

// indexEntry checks that a requests index entry points at the charge row
// of its own request id.
func (a *auditor) indexEntry(k, ref []byte) error {
	rid := string(k)
	acct, seq, ok := parseEntryRef(ref)
	if !ok {
		a.differ(AuditDifference{RequestID: rid, Problem: fmt.Sprintf("requests index value %q is malformed", ref)})
		return nil
	}
	d := AuditDifference{AccountID: acct, Seq: seq, RequestID: rid}
	b := a.ledger.Bucket([]byte(acct))
	if b == nil {
		d.Problem = "requests index names an account that has no ledger"
		a.differ(d)
		return nil
	}
	v := b.Get(seqKey(seq))
	if v == nil {
		d.Problem = "requests index names a row that does not exist"
		a.differ(d)
		return nil
	}
	var e Entry
	if err := json.Unmarshal(v, &e); err != nil {
		// replay reports the row itself.
		return nil
	}
	switch {
	case e.Kind != EntryCharge:
		d.Problem = fmt.Sprintf("requests index names a %s row, not a charge", e.Kind)
	case e.RequestID != rid:
		d.Problem = fmt.Sprintf("requests index names the charge of request %s", e.RequestID)
	default:
		return nil
	}
	a.differ(d)
	return nil
}

// parseEntryRef reads a requests index value (see entryRef).
func parseEntryRef(ref []byte) (accountID string, seq uint64, ok bool) {
	if len(ref) < 10 || ref[len(ref)-9] != 0 {
		return "", 0, false
	}
	return string(ref[:len(ref)-9]), binary.BigEndian.Uint64(ref[len(ref)-8:]), true
}
