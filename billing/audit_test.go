package billing

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func mustSettle(t testing.TB, s Store, c Charge) Entry {
	t.Helper()
	e, err := s.Settle(c)
	if err != nil {
		t.Fatalf("Settle(%s): %v", c.RequestID, err)
	}
	return e
}

func mustAudit(t testing.TB, s Store) AuditReport {
	t.Helper()
	r, err := s.Audit()
	if err != nil {
		t.Fatalf("Audit: %v", err)
	}
	return r
}

// editFile closes s, applies edit to its bbolt file directly, as damage or
// a bug would, and returns the store reopened.
func editFile(t testing.TB, s *BoltStore, clock *fakeClock, edit func(tx *bolt.Tx) error) *BoltStore {
	t.Helper()
	path := s.Path()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(edit); err != nil {
		db.Close()
		t.Fatalf("editing the file: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenBolt(path, BoltOptions{Now: clock.Now})
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func rawRow(tx *bolt.Tx, accountID string, seq uint64) (Entry, error) {
	var e Entry
	v := tx.Bucket(bucketLedger).Bucket([]byte(accountID)).Get(seqKey(seq))
	if v == nil {
		return e, fmt.Errorf("no row %d in %s", seq, accountID)
	}
	return e, json.Unmarshal(v, &e)
}

func putRawRow(tx *bolt.Tx, e Entry) error {
	v, err := json.Marshal(&e)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketLedger).Bucket([]byte(e.AccountID)).Put(seqKey(e.Seq), v)
}

func editAccount(tx *bolt.Tx, id string, edit func(a *Account)) error {
	var a Account
	if err := getJSON(tx.Bucket(bucketAccounts), id, &a, "account"); err != nil {
		return err
	}
	edit(&a)
	return putJSON(tx.Bucket(bucketAccounts), id, &a)
}

func TestAuditOfAConsistentStore(t *testing.T) {
	s, clock, _ := openTestStore(t)
	acme := mustCreateAccount(t, s, "acme", 100*Dollar)
	other := mustCreateAccount(t, s, "other", 0)
	mustCreateAccount(t, s, "never used", 0)
	mustCredit(t, s, other.ID, 5*Dollar, "top-up")
	for i := range 10 {
		clock.Advance(time.Second)
		mustSettle(t, s, Charge{RequestID: fmt.Sprint("seq-", i), AccountID: acme.ID, KeyID: "key_a", Model: "m1",
			Usage: Usage{PromptTokens: 10, CompletionTokens: 5}, Cost: Amount(1000 + i), Basis: "upstream", Outcome: "ok"})
	}
	// A zero-cost charge is still a charge with a request id.
	mustSettle(t, s, Charge{RequestID: "free", AccountID: other.ID, Model: "m2", Outcome: "upstream_error"})

	// Concurrent settlements share transactions; some race on the same
	// request id, which must be charged once.
	const workers, perWorker = 16, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				acct := acme.ID
				if (w+i)%3 == 0 {
					acct = other.ID
				}
				_, err := s.Settle(Charge{RequestID: fmt.Sprintf("c-%d-%d", w, i), AccountID: acct, Model: "m1", Cost: Amount(w*100 + i)})
				if err != nil {
					t.Errorf("Settle: %v", err)
				}
				// Every worker settles the shared ids too.
				_, err = s.Settle(Charge{RequestID: fmt.Sprint("shared-", i), AccountID: acme.ID, Model: "m2", Cost: 7})
				if err != nil && !errors.Is(err, ErrSettled) {
					t.Errorf("Settle(shared): %v", err)
				}
			}
		}()
	}
	wg.Wait()
	clock.Advance(time.Minute)
	mustCredit(t, s, acme.ID, Dollar, "after the rush")

	r := mustAudit(t, s)
	wantCharges := int64(10 + 1 + workers*perWorker + perWorker)
	// Rows: acme's opening credit, other's top-up, the final credit, and
	// every charge.
	wantRows := 3 + wantCharges
	cases := []struct {
		name      string
		got, want any
	}{
		{"the report is OK", r.OK, true},
		{"there are no differences", len(r.Differences), 0},
		{"every account is counted", r.Accounts, int64(3)},
		{"every row is counted", r.Rows, wantRows},
		{"each request is counted as one charge", r.Charges, wantCharges},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %v, want %v; report %+v", tc.got, tc.want, r)
			}
		})
	}
	t.Run("the report's JSON has snake_case names and an empty list of differences", func(t *testing.T) {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`{"accounts":3,"rows":%d,"charges":%d,"differences":[],"ok":true}`, wantRows, wantCharges)
		if string(b) != want {
			t.Fatalf("JSON %s, want %s", b, want)
		}
	})
	t.Run("an empty store is consistent", func(t *testing.T) {
		empty, _, _ := openTestStore(t)
		if r := mustAudit(t, empty); !r.OK || r.Accounts != 0 || r.Rows != 0 || len(r.Differences) != 0 {
			t.Fatalf("report %+v", r)
		}
	})
}

// wantDifference describes a difference an audit must report.
type wantDifference struct {
	account  string // "" matches any
	seq      uint64
	request  string
	problem  string // a substring of Problem
	stored   *Amount
	replayed *Amount
}

func (w wantDifference) matches(d AuditDifference) bool {
	money := func(want, got *Amount) bool { return want == nil || (got != nil && *got == *want) }
	return (w.account == "" || d.AccountID == w.account) && d.Seq == w.seq && d.RequestID == w.request &&
		strings.Contains(d.Problem, w.problem) && money(w.stored, d.Stored) && money(w.replayed, d.Replayed)
}

func amt(a Amount) *Amount { return &a }

func TestAuditFindsInconsistencies(t *testing.T) {
	// Each case builds the same small, consistent store, damages its
	// file, and checks what the audit reports. acme's ledger: 1 opening
	// credit of 10.00 (balance 10), 2..6 charges r2..r6 of 1.00 each
	// (balance 9..5), 7 a credit of 3.00 (balance 8).
	type fixture struct {
		acme, other string
	}
	build := func(t *testing.T) (*BoltStore, *fakeClock, fixture) {
		s, clock, _ := openTestStore(t)
		acme := mustCreateAccount(t, s, "acme", 10*Dollar)
		other := mustCreateAccount(t, s, "other", 2*Dollar)
		for i := 2; i <= 6; i++ {
			clock.Advance(time.Second)
			mustSettle(t, s, Charge{RequestID: fmt.Sprint("r", i), AccountID: acme.ID, Model: "m", Cost: Dollar})
		}
		mustCredit(t, s, acme.ID, 3*Dollar, "")
		mustSettle(t, s, Charge{RequestID: "o2", AccountID: other.ID, Model: "m", Cost: Dollar / 2})
		if r := mustAudit(t, s); !r.OK {
			t.Fatalf("the fixture is not consistent: %+v", r.Differences)
		}
		return s, clock, fixture{acme.ID, other.ID}
	}
	cases := []struct {
		name  string
		edit  func(tx *bolt.Tx, f fixture) error
		want  func(f fixture) []wantDifference
		exact bool // the wanted differences are all there is
	}{
		{
			name: "an account balance changed behind the ledger's back is reported",
			edit: func(tx *bolt.Tx, f fixture) error {
				return editAccount(tx, f.acme, func(a *Account) { a.Balance += 50 * Dollar })
			},
			want: func(f fixture) []wantDifference {
				return []wantDifference{{account: f.acme, problem: "account balance", stored: amt(58 * Dollar), replayed: amt(8 * Dollar)}}
			},
			exact: true,
		},
		{
			name: "a deleted ledger row in the middle is reported as a gap and a wrong balance",
			edit: func(tx *bolt.Tx, f fixture) error {
				return tx.Bucket(bucketLedger).Bucket([]byte(f.acme)).Delete(seqKey(3))
			},
			want: func(f fixture) []wantDifference {
				return []wantDifference{
					{account: f.acme, seq: 4, problem: "sequence jumps from 2 to 4"},
					{account: f.acme, seq: 4, problem: "row's balance", stored: amt(7 * Dollar), replayed: amt(8 * Dollar)},
					{account: f.acme, problem: "account balance", stored: amt(8 * Dollar), replayed: amt(9 * Dollar)},
					// The deleted charge's index entry now points nowhere.
					{account: f.acme, seq: 3, request: "r3", problem: "does not exist"},
				}
			},
			exact: true,
		},
		{
			name: "a deleted newest row is reported against the sequence counter and the balance",
			edit: func(tx *bolt.Tx, f fixture) error {
				return tx.Bucket(bucketLedger).Bucket([]byte(f.acme)).Delete(seqKey(7))
			},
			want: func(f fixture) []wantDifference {
				return []wantDifference{
					{account: f.acme, problem: "sequence counter is 7 but its newest row is 6"},
					{account: f.acme, problem: "account balance", stored: amt(8 * Dollar), replayed: amt(5 * Dollar)},
				}
			},
			exact: true,
		},
		{
			name: "a second request index entry for one charge is reported",
			edit: func(tx *bolt.Tx, f fixture) error {
				return tx.Bucket(bucketRequests).Put([]byte("r-dup"), entryRef(f.acme, 4))
			},
			want: func(f fixture) []wantDifference {
				return []wantDifference{{account: f.acme, seq: 4, request: "r-dup", problem: "names the charge of request r4"}}
			},
			exact: true,
		},
		{
			name: "a request charged twice is reported",
			edit: func(tx *bolt.Tx, f fixture) error {
				// A second row for r2, written as a double charge would
				// be: balances and the account all agree.
				e, err := rawRow(tx, f.acme, 2)
				if err != nil {
					return err
				}
				b := tx.Bucket(bucketLedger).Bucket([]byte(f.acme))
				seq, err := b.NextSequence()
				if err != nil {
					return err
				}
				e.Seq, e.Balance = seq, 7*Dollar
				if err := putRawRow(tx, e); err != nil {
					return err
				}
				return editAccount(tx, f.acme, func(a *Account) { a.Balance = 7 * Dollar })
			},
			want: func(f fixture) []wantDifference {
				return []wantDifference{{account: f.acme, seq: 8, request: "r2", problem: "names account " + f.acme + " row 2 for this request: it is charged more than once"}}
			},
			exact: true,
		},
		{
			name: "a charge missing from the requests index is reported",
			edit: func(tx *bolt.Tx, f fixture) error {
				return tx.Bucket(bucketRequests).Delete([]byte("r5"))
			},
			want: func(f fixture) []wantDifference {
				return []wantDifference{{account: f.acme, seq: 5, request: "r5", problem: "not in the requests index"}}
			},
			exact: true,
		},
		{
			name: "an index entry pointing at a credit row is reported",
			edit: func(tx *bolt.Tx, f fixture) error {
				return tx.Bucket(bucketRequests).Put([]byte("r6"), entryRef(f.acme, 7))
			},
			want: func(f fixture) []wantDifference {
				return []wantDifference{
					{account: f.acme, seq: 7, request: "r6", problem: "names a credit row"},
					{account: f.acme, seq: 6, request: "r6", problem: "row 7 for this request"},
				}
			},
			exact: true,
		},
		{
			name: "a malformed index entry is reported",
			edit: func(tx *bolt.Tx, f fixture) error {
				return tx.Bucket(bucketRequests).Put([]byte("junk"), []byte("x"))
			},
			want: func(f fixture) []wantDifference {
				return []wantDifference{{request: "junk", problem: "malformed"}}
			},
			exact: true,
		},
		{
			name: "a row whose stored balance was altered is reported once",
			edit: func(tx *bolt.Tx, f fixture) error {
				e, err := rawRow(tx, f.acme, 4)
				if err != nil {
					return err
				}
				e.Balance = 70 * Dollar
				return putRawRow(tx, e)
			},
			want: func(f fixture) []wantDifference {
				return []wantDifference{{account: f.acme, seq: 4, problem: "row's balance", stored: amt(70 * Dollar), replayed: amt(7 * Dollar)}}
			},
			exact: true,
		},
		{
			name: "a row whose amount was altered is reported, with the account",
			edit: func(tx *bolt.Tx, f fixture) error {
				e, err := rawRow(tx, f.acme, 5)
				if err != nil {
					return err
				}
				e.Amount = -Dollar / 4
				return putRawRow(tx, e)
			},
			want: func(f fixture) []wantDifference {
				return []wantDifference{
					{account: f.acme, seq: 5, problem: "row's balance", stored: amt(6 * Dollar), replayed: amt(6*Dollar + 3*Dollar/4)},
					{account: f.acme, problem: "account balance", stored: amt(8 * Dollar), replayed: amt(8*Dollar + 3*Dollar/4)},
				}
			},
			exact: true,
		},
		{
			name: "a charge that adds money is reported",
			edit: func(tx *bolt.Tx, f fixture) error {
				e, err := rawRow(tx, f.other, 2)
				if err != nil {
					return err
				}
				e.Amount, e.Balance = Dollar/2, 2*Dollar+Dollar/2
				if err := putRawRow(tx, e); err != nil {
					return err
				}
				return editAccount(tx, f.other, func(a *Account) { a.Balance = e.Balance })
			},
			want: func(f fixture) []wantDifference {
				return []wantDifference{{account: f.other, seq: 2, request: "o2", problem: "adds money"}}
			},
			exact: true,
		},
		{
			name: "a row that does not decode is reported",
			edit: func(tx *bolt.Tx, f fixture) error {
				return tx.Bucket(bucketLedger).Bucket([]byte(f.other)).Put(seqKey(1), []byte("{not json"))
			},
			want: func(f fixture) []wantDifference {
				return []wantDifference{{account: f.other, seq: 1, problem: "does not decode"}}
			},
		},
		{
			name: "a ledger without an account is reported",
			edit: func(tx *bolt.Tx, f fixture) error {
				return tx.Bucket(bucketAccounts).Delete([]byte(f.other))
			},
			want: func(f fixture) []wantDifference {
				return []wantDifference{{account: f.other, problem: "account that does not exist"}}
			},
			exact: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, clock, f := build(t)
			s = editFile(t, s, clock, func(tx *bolt.Tx) error { return tc.edit(tx, f) })
			r := mustAudit(t, s)
			if r.OK {
				t.Fatalf("the audit says OK: %+v", r)
			}
			want := tc.want(f)
			for _, w := range want {
				found := false
				for _, d := range r.Differences {
					found = found || w.matches(d)
				}
				if !found {
					t.Errorf("no difference like %q among:\n%s", w, differences(r))
				}
			}
			if tc.exact && len(r.Differences) != len(want) {
				t.Errorf("%d differences, want %d:\n%s", len(r.Differences), len(want), differences(r))
			}
		})
	}
}

func differences(r AuditReport) string {
	var b strings.Builder
	for _, d := range r.Differences {
		fmt.Fprintf(&b, "\t%s\n", d)
	}
	return b.String()
}

func TestAuditDifferenceString(t *testing.T) {
	cases := []struct {
		name string
		d    AuditDifference
		want string
	}{
		{"an account-level money difference shows both amounts",
			AuditDifference{AccountID: "acct_x", Problem: "account balance differs", Stored: amt(Dollar), Replayed: amt(2)},
			"account acct_x: account balance differs (stored 1.000000, replayed 0.000002)"},
		{"a row difference names the row and request",
			AuditDifference{AccountID: "acct_x", Seq: 7, RequestID: "req_1", Problem: "broken"},
			"account acct_x row 7 request req_1: broken"},
		{"a difference without an account says so",
			AuditDifference{RequestID: "junk", Problem: "malformed"},
			"account (none) request junk: malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.d.String(); got != tc.want {
				t.Fatalf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

func (w wantDifference) String() string {
	d := AuditDifference{AccountID: w.account, Seq: w.seq, RequestID: w.request, Problem: "…" + w.problem + "…", Stored: w.stored, Replayed: w.replayed}
	return d.String()
}
