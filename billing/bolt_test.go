package billing

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for BoltOptions.Now and KeyringOptions.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// openTestStore opens a store in a fresh temporary folder, closed when the
// test ends.
func openTestStore(t testing.TB) (*BoltStore, *fakeClock, string) {
	t.Helper()
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "billing.db")
	s, err := OpenBolt(path, BoltOptions{Now: clock.Now})
	if err != nil {
		t.Fatalf("OpenBolt: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, clock, path
}

func mustCreateAccount(t testing.TB, s Store, name string, balance Amount) Account {
	t.Helper()
	a, err := s.CreateAccount(name, balance)
	if err != nil {
		t.Fatalf("CreateAccount(%q, %s): %v", name, balance, err)
	}
	return a
}

func mustCreateKey(t testing.TB, s Store, accountID string, spec KeySpec) (Key, string) {
	t.Helper()
	k, secret, err := s.CreateKey(accountID, spec)
	if err != nil {
		t.Fatalf("CreateKey(%s): %v", accountID, err)
	}
	return k, secret
}

func mustCredit(t testing.TB, s Store, id string, amount Amount, note string) (Account, Entry) {
	t.Helper()
	a, e, err := s.Credit(id, amount, note)
	if err != nil {
		t.Fatalf("Credit(%s, %s): %v", id, amount, err)
	}
	return a, e
}

func allLedger(t testing.TB, s Store, id string) []Entry {
	t.Helper()
	rows, more, err := s.Ledger(id, LedgerQuery{Limit: 1_000_000})
	if err != nil {
		t.Fatalf("Ledger(%s): %v", id, err)
	}
	if more {
		t.Fatalf("Ledger(%s) says more rows remain after a million", id)
	}
	return rows
}

func seqs(rows []Entry) []uint64 {
	out := make([]uint64, len(rows))
	for i, r := range rows {
		out[i] = r.Seq
	}
	return out
}

func TestCreateAccountRefusesInvalidInput(t *testing.T) {
	s, _, _ := openTestStore(t)
	cases := []struct {
		name        string
		accountName string
		balance     Amount
	}{
		{"an empty name is refused", "", 0},
		{"a name longer than 200 bytes is refused", strings.Repeat("x", 201), 0},
		{"a negative opening balance is refused", "acme", -1},
		{"a large negative opening balance is refused", "acme", -5 * Dollar},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := s.CreateAccount(tc.accountName, tc.balance)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("CreateAccount = %+v, %v; want an error wrapping ErrInvalid", a, err)
			}
		})
	}
	all, err := s.Accounts()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 0 {
		t.Fatalf("refused accounts were stored: %+v", all)
	}
}

func TestCreateAccountWritesTheOpeningBalance(t *testing.T) {
	cases := []struct {
		name     string
		balance  Amount
		wantRows int
	}{
		{"a zero opening balance writes no ledger row", 0, 0},
		{"a positive opening balance writes one credit row", 12_500_000, 1},
		{"a one micro-dollar opening balance writes one credit row", 1, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, clock, _ := openTestStore(t)
			a := mustCreateAccount(t, s, "acme", tc.balance)
			if !strings.HasPrefix(a.ID, "acct_") || len(a.ID) != len("acct_")+16 {
				t.Fatalf("account id %q is not acct_ + 16 characters", a.ID)
			}
			if a.Name != "acme" || a.Balance != tc.balance || a.State != AccountActive || !a.CreatedAt.Equal(clock.Now()) {
				t.Fatalf("CreateAccount returned %+v", a)
			}
			got, err := s.Account(a.ID)
			if err != nil {
				t.Fatalf("Account(%s): %v", a.ID, err)
			}
			if got.ID != a.ID || got.Name != a.Name || got.Balance != a.Balance || got.State != a.State || !got.CreatedAt.Equal(a.CreatedAt) {
				t.Fatalf("Account(%s) = %+v, want %+v", a.ID, got, a)
			}
			rows := allLedger(t, s, a.ID)
			if len(rows) != tc.wantRows {
				t.Fatalf("ledger has %d rows, want %d: %+v", len(rows), tc.wantRows, rows)
			}
			if tc.wantRows == 1 {
				r := rows[0]
				if r.Seq != 1 || r.Kind != EntryCredit || r.Amount != tc.balance || r.Balance != tc.balance ||
					r.Note != "opening balance" || r.AccountID != a.ID || !r.Time.Equal(clock.Now()) {
					t.Fatalf("opening row = %+v", r)
				}
			}
		})
	}
}

func TestAccountOfAnUnknownIDIsNotFound(t *testing.T) {
	s, _, _ := openTestStore(t)
	mustCreateAccount(t, s, "acme", 0)
	for _, id := range []string{"acct_doesnotexist00", "", "key_whatever"} {
		t.Run(fmt.Sprintf("account %q is not found", id), func(t *testing.T) {
			if _, err := s.Account(id); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Account(%q) = %v, want ErrNotFound", id, err)
			}
		})
	}
}

func TestAccountsListsOldestFirst(t *testing.T) {
	s, clock, _ := openTestStore(t)
	// Names in non-alphabetical order; ids are random, so only CreatedAt can
	// put them in creation order reliably.
	names := []string{"zulu", "alpha", "mike", "bravo", "yankee", "charlie", "x-ray", "delta"}
	var want []string
	for _, n := range names {
		want = append(want, mustCreateAccount(t, s, n, 0).ID)
		clock.Advance(time.Second)
	}
	got, err := s.Accounts()
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []string
	for _, a := range got {
		gotIDs = append(gotIDs, a.ID)
	}
	if !slices.Equal(gotIDs, want) {
		t.Fatalf("Accounts order = %v, want %v", gotIDs, want)
	}
	for i := 1; i < len(got); i++ {
		if !got[i-1].CreatedAt.Before(got[i].CreatedAt) {
			t.Fatalf("account %d created %v is not before account %d created %v", i-1, got[i-1].CreatedAt, i, got[i].CreatedAt)
		}
	}

	t.Run("accounts created at the same instant are ordered by id", func(t *testing.T) {
		s, _, _ := openTestStore(t)
		var ids []string
		for i := range 6 {
			ids = append(ids, mustCreateAccount(t, s, fmt.Sprint("same-time-", i), 0).ID)
		}
		slices.Sort(ids)
		got, err := s.Accounts()
		if err != nil {
			t.Fatal(err)
		}
		var gotIDs []string
		for _, a := range got {
			gotIDs = append(gotIDs, a.ID)
		}
		if !slices.Equal(gotIDs, ids) {
			t.Fatalf("Accounts order = %v, want %v", gotIDs, ids)
		}
	})
}

func TestSetAccountState(t *testing.T) {
	s, _, _ := openTestStore(t)
	a := mustCreateAccount(t, s, "acme", 5*Dollar)
	cases := []struct {
		name    string
		id      string
		state   AccountState
		wantErr error
	}{
		{"an unknown state is refused", a.ID, "frozen", ErrInvalid},
		{"an empty state is refused", a.ID, "", ErrInvalid},
		{"a state with different case is refused", a.ID, "Disabled", ErrInvalid},
		{"an unknown account is not found", "acct_nope", AccountDisabled, ErrNotFound},
		{"disabling an active account works", a.ID, AccountDisabled, nil},
		{"disabling a disabled account again works", a.ID, AccountDisabled, nil},
		{"re-enabling a disabled account works", a.ID, AccountActive, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, err := s.Account(a.ID)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.SetAccountState(tc.id, tc.state)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("SetAccountState = %v, want %v", err, tc.wantErr)
				}
				after, _ := s.Account(a.ID)
				if after.State != before.State {
					t.Fatalf("a refused change moved the state from %q to %q", before.State, after.State)
				}
				return
			}
			if err != nil {
				t.Fatalf("SetAccountState: %v", err)
			}
			if got.State != tc.state || got.Balance != 5*Dollar || got.Name != "acme" {
				t.Fatalf("SetAccountState returned %+v", got)
			}
			stored, err := s.Account(a.ID)
			if err != nil {
				t.Fatal(err)
			}
			if stored.State != tc.state || stored.Balance != 5*Dollar {
				t.Fatalf("stored account = %+v, want state %q", stored, tc.state)
			}
		})
	}
}

func TestCreditRefusesInvalidCredits(t *testing.T) {
	s, _, _ := openTestStore(t)
	a := mustCreateAccount(t, s, "acme", 1)
	cases := []struct {
		name    string
		id      string
		amount  Amount
		note    string
		wantErr error
	}{
		{"a zero credit is refused", a.ID, 0, "", ErrInvalid},
		{"a negative credit is refused", a.ID, -Dollar, "", ErrInvalid},
		{"a note longer than 1000 bytes is refused", a.ID, Dollar, strings.Repeat("n", 1001), ErrInvalid},
		{"a credit that would overflow the balance is refused", a.ID, Amount(1<<63 - 1), "", ErrInvalid},
		{"a credit to an unknown account is not found", "acct_nope", Dollar, "", ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := s.Credit(tc.id, tc.amount, tc.note)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Credit = %v, want %v", err, tc.wantErr)
			}
		})
	}
	got, err := s.Account(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Balance != 1 {
		t.Fatalf("refused credits changed the balance to %s", got.Balance)
	}
	if rows := allLedger(t, s, a.ID); len(rows) != 1 {
		t.Fatalf("refused credits wrote ledger rows: %+v", rows)
	}
}

func TestCreditAddsExactlyAndKeepsARunningBalance(t *testing.T) {
	s, clock, _ := openTestStore(t)
	a := mustCreateAccount(t, s, "acme", 10*Dollar)
	steps := []struct {
		name   string
		amount Amount
		note   string
	}{
		{"a one micro-dollar credit adds one micro-dollar", 1, "tiny"},
		{"a whole-dollar credit adds a dollar", Dollar, "top-up"},
		{"a credit without a note is fine", 2_500_000, ""},
		{"a large credit adds exactly", 123_456_789_012, "big"},
		{"a note of exactly 1000 bytes is fine", 7, strings.Repeat("n", 1000)},
	}
	balance, seq := 10*Dollar, uint64(1)
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			now := clock.Advance(time.Minute)
			got, e := mustCredit(t, s, a.ID, st.amount, st.note)
			balance += st.amount
			seq++
			if got.Balance != balance {
				t.Fatalf("balance = %s, want %s", got.Balance, balance)
			}
			if e.Seq != seq || e.Amount != st.amount || e.Balance != balance || e.Kind != EntryCredit ||
				e.Note != st.note || e.AccountID != a.ID || !e.Time.Equal(now) {
				t.Fatalf("entry = %+v, want seq %d amount %s balance %s", e, seq, st.amount, balance)
			}
			stored, err := s.Account(a.ID)
			if err != nil {
				t.Fatal(err)
			}
			if stored.Balance != balance {
				t.Fatalf("stored balance = %s, want %s", stored.Balance, balance)
			}
		})
	}
}

func TestLedgerPagination(t *testing.T) {
	s, clock, _ := openTestStore(t)
	a := mustCreateAccount(t, s, "acme", Dollar) // row 1
	for i := 2; i <= 10; i++ {
		clock.Advance(time.Second)
		mustCredit(t, s, a.ID, Amount(i), fmt.Sprint("credit ", i))
	}
	cases := []struct {
		name     string
		before   uint64
		limit    int
		wantSeqs []uint64
		wantMore bool
	}{
		{"before zero starts at the newest row", 0, 3, []uint64{10, 9, 8}, true},
		{"a limit equal to the row count returns every row and no more", 0, 10, []uint64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, false},
		{"a limit above the row count returns every row and no more", 0, 11, []uint64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, false},
		{"a limit of one returns the newest row", 0, 1, []uint64{10}, true},
		{"a cursor in the middle starts just below it", 6, 3, []uint64{5, 4, 3}, true},
		{"a cursor whose page reaches the oldest row has no more", 4, 3, []uint64{3, 2, 1}, false},
		{"a page that would pass the oldest row stops there", 4, 5, []uint64{3, 2, 1}, false},
		{"a cursor of two returns only the oldest row", 2, 5, []uint64{1}, false},
		{"a cursor of one returns nothing", 1, 5, nil, false},
		{"a cursor one past the newest returns from the newest", 11, 3, []uint64{10, 9, 8}, true},
		{"a cursor far past the newest returns from the newest", 1 << 40, 20, []uint64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, false},
		{"a cursor equal to the newest excludes it", 10, 2, []uint64{9, 8}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rows, more, err := s.Ledger(a.ID, LedgerQuery{Before: tc.before, Limit: tc.limit})
			if err != nil {
				t.Fatalf("Ledger: %v", err)
			}
			if got := seqs(rows); !slices.Equal(got, tc.wantSeqs) {
				t.Fatalf("Ledger(before %d, limit %d) seqs = %v, want %v", tc.before, tc.limit, got, tc.wantSeqs)
			}
			if more != tc.wantMore {
				t.Fatalf("Ledger(before %d, limit %d) more = %v, want %v", tc.before, tc.limit, more, tc.wantMore)
			}
			for _, r := range rows {
				if r.AccountID != a.ID {
					t.Fatalf("row %d belongs to %s", r.Seq, r.AccountID)
				}
			}
		})
	}

	t.Run("walking every page with the last seq as the cursor visits each row once", func(t *testing.T) {
		for _, limit := range []int{1, 2, 3, 4, 7, 10} {
			var got []uint64
			before, pages := uint64(0), 0
			for {
				rows, more, err := s.Ledger(a.ID, LedgerQuery{Before: before, Limit: limit})
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, seqs(rows)...)
				pages++
				if !more {
					break
				}
				if pages > 20 {
					t.Fatalf("limit %d: pagination does not end", limit)
				}
				before = rows[len(rows)-1].Seq
			}
			if want := []uint64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}; !slices.Equal(got, want) {
				t.Fatalf("limit %d: walked %v, want %v", limit, got, want)
			}
		}
	})

	t.Run("a non-positive limit is refused", func(t *testing.T) {
		for _, limit := range []int{0, -1} {
			if _, _, err := s.Ledger(a.ID, LedgerQuery{Limit: limit}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Ledger(limit %d) = %v, want ErrInvalid", limit, err)
			}
		}
	})

	t.Run("the ledger of an unknown account is not found", func(t *testing.T) {
		if _, _, err := s.Ledger("acct_nope", LedgerQuery{Limit: 10}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Ledger = %v, want ErrNotFound", err)
		}
	})

	t.Run("an account without rows has an empty ledger", func(t *testing.T) {
		empty := mustCreateAccount(t, s, "empty", 0)
		rows, more, err := s.Ledger(empty.ID, LedgerQuery{Limit: 10})
		if err != nil || len(rows) != 0 || more {
			t.Fatalf("Ledger = %v, %v, %v; want no rows, no more, no error", rows, more, err)
		}
	})
}

func TestLedgerReplaysToTheStoredBalance(t *testing.T) {
	s, clock, _ := openTestStore(t)
	a := mustCreateAccount(t, s, "acme", 3*Dollar)
	other := mustCreateAccount(t, s, "other", 7)
	for i := 1; i <= 60; i++ {
		clock.Advance(time.Millisecond)
		mustCredit(t, s, a.ID, Amount(i*i*1_003+1), "")
		if i%3 == 0 {
			mustCredit(t, s, other.ID, Amount(i), "")
		}
	}
	for _, acct := range []Account{a, other} {
		t.Run("replaying "+acct.Name+"'s ledger gives its stored balance", func(t *testing.T) {
			stored, err := s.Account(acct.ID)
			if err != nil {
				t.Fatal(err)
			}
			rows := allLedger(t, s, acct.ID)
			var sum Amount
			for i := len(rows) - 1; i >= 0; i-- { // oldest first
				r := rows[i]
				sum += r.Amount
				if r.Balance != sum {
					t.Fatalf("row %d says balance %s, replay gives %s", r.Seq, r.Balance, sum)
				}
				if r.Seq != uint64(len(rows)-i) {
					t.Fatalf("row at position %d has seq %d", len(rows)-i, r.Seq)
				}
			}
			if sum != stored.Balance {
				t.Fatalf("ledger sums to %s, stored balance is %s", sum, stored.Balance)
			}
		})
	}
}

func TestCreateKeyAndLookups(t *testing.T) {
	s, clock, _ := openTestStore(t)
	acme := mustCreateAccount(t, s, "acme", Dollar)
	other := mustCreateAccount(t, s, "other", 0)
	expires := clock.Now().Add(24 * time.Hour).In(time.FixedZone("CET", 3600))

	t.Run("a key for an unknown account is not found", func(t *testing.T) {
		if _, _, err := s.CreateKey("acct_nope", KeySpec{}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("CreateKey = %v, want ErrNotFound", err)
		}
	})
	t.Run("an invalid spec is refused", func(t *testing.T) {
		if _, _, err := s.CreateKey(acme.ID, KeySpec{RPM: -1}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("CreateKey = %v, want ErrInvalid", err)
		}
	})

	k1, sec1 := mustCreateKey(t, s, acme.ID, KeySpec{Name: "first", Models: []string{"m1", "m2"}, RPM: 60, TPM: 1000, ExpiresAt: &expires})
	clock.Advance(time.Second)
	kOther, secOther := mustCreateKey(t, s, other.ID, KeySpec{Name: "other's"})
	clock.Advance(time.Second)
	k2, sec2 := mustCreateKey(t, s, acme.ID, KeySpec{Name: "second"})

	t.Run("the returned secret parses and its last four match the key", func(t *testing.T) {
		for _, c := range []struct {
			k Key
			s string
		}{{k1, sec1}, {k2, sec2}, {kOther, secOther}} {
			if _, err := ParseSecret(c.s); err != nil {
				t.Fatalf("ParseSecret(%q): %v", c.s, err)
			}
			if c.k.Last4 != Last4(c.s) || len(c.k.Last4) != 4 {
				t.Fatalf("key.Last4 = %q, secret ends %q", c.k.Last4, Last4(c.s))
			}
			if !strings.HasPrefix(c.k.ID, "key_") {
				t.Fatalf("key id %q lacks the key_ prefix", c.k.ID)
			}
		}
	})
	t.Run("the key records the spec and an expiry in UTC", func(t *testing.T) {
		if k1.AccountID != acme.ID || k1.Name != "first" || !slices.Equal(k1.Models, []string{"m1", "m2"}) ||
			k1.RPM != 60 || k1.TPM != 1000 || k1.RevokedAt != nil || k1.ExpiresAt == nil ||
			!k1.ExpiresAt.Equal(expires) || k1.ExpiresAt.Location() != time.UTC {
			t.Fatalf("key = %+v", k1)
		}
	})
	t.Run("Keys lists only the account's own keys, oldest first", func(t *testing.T) {
		keys, err := s.Keys(acme.ID)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, k := range keys {
			ids = append(ids, k.ID)
		}
		if want := []string{k1.ID, k2.ID}; !slices.Equal(ids, want) {
			t.Fatalf("Keys(acme) = %v, want %v", ids, want)
		}
		keys, err = s.Keys(other.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 1 || keys[0].ID != kOther.ID {
			t.Fatalf("Keys(other) = %+v, want only %s", keys, kOther.ID)
		}
	})
	t.Run("Keys of an unknown account is not found", func(t *testing.T) {
		if _, err := s.Keys("acct_nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Keys = %v, want ErrNotFound", err)
		}
	})
	t.Run("Keys of an account without keys is empty", func(t *testing.T) {
		empty := mustCreateAccount(t, s, "keyless", 0)
		keys, err := s.Keys(empty.ID)
		if err != nil || len(keys) != 0 {
			t.Fatalf("Keys = %v, %v; want none", keys, err)
		}
	})
	t.Run("Key by id returns the stored key", func(t *testing.T) {
		got, err := s.Key(k1.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != k1.ID || got.AccountID != acme.ID || got.Last4 != k1.Last4 || !got.CreatedAt.Equal(k1.CreatedAt) ||
			got.ExpiresAt == nil || !got.ExpiresAt.Equal(expires) || !slices.Equal(got.Models, k1.Models) {
			t.Fatalf("Key(%s) = %+v, want %+v", k1.ID, got, k1)
		}
	})
	t.Run("Key of an unknown id is not found", func(t *testing.T) {
		if _, err := s.Key("key_nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Key = %v, want ErrNotFound", err)
		}
	})
	t.Run("KeyByHash finds each key with its own account", func(t *testing.T) {
		for _, c := range []struct {
			secret string
			key    Key
			acct   Account
		}{{sec1, k1, acme}, {sec2, k2, acme}, {secOther, kOther, other}} {
			k, a, err := s.KeyByHash(HashSecret(c.secret))
			if err != nil {
				t.Fatalf("KeyByHash: %v", err)
			}
			if k.ID != c.key.ID || a.ID != c.acct.ID || a.Name != c.acct.Name || a.State != AccountActive {
				t.Fatalf("KeyByHash = %s of %s, want %s of %s", k.ID, a.ID, c.key.ID, c.acct.ID)
			}
		}
	})
	t.Run("KeyByHash of an unknown hash is not found", func(t *testing.T) {
		unknown := newSecretForTest(t)
		for _, h := range []KeyHash{HashSecret(unknown), {}, HashSecret(sec1[:KeyLen-1])} {
			if _, _, err := s.KeyByHash(h); !errors.Is(err, ErrNotFound) {
				t.Fatalf("KeyByHash = %v, want ErrNotFound", err)
			}
		}
	})
	t.Run("KeyByHash reports the account's current state", func(t *testing.T) {
		if _, err := s.SetAccountState(other.ID, AccountDisabled); err != nil {
			t.Fatal(err)
		}
		_, a, err := s.KeyByHash(HashSecret(secOther))
		if err != nil || a.State != AccountDisabled {
			t.Fatalf("KeyByHash account = %+v, %v; want disabled", a, err)
		}
	})
}

func TestRevokeKeyIsIdempotent(t *testing.T) {
	s, clock, _ := openTestStore(t)
	a := mustCreateAccount(t, s, "acme", 0)
	k, secret := mustCreateKey(t, s, a.ID, KeySpec{})
	other, _ := mustCreateKey(t, s, a.ID, KeySpec{})

	first := clock.Advance(time.Minute)
	got, err := s.RevokeKey(k.ID)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		get  func() (Key, error)
	}{
		{"the revoke call returns the revocation time", func() (Key, error) { return got, nil }},
		{"Key reads the revocation back", func() (Key, error) { return s.Key(k.ID) }},
		{"KeyByHash reads the revocation back", func() (Key, error) { k, _, err := s.KeyByHash(HashSecret(secret)); return k, err }},
		{"a second revoke an hour later keeps the first time", func() (Key, error) {
			clock.Advance(time.Hour)
			return s.RevokeKey(k.ID)
		}},
		{"after the second revoke the stored time is still the first", func() (Key, error) { return s.Key(k.ID) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key, err := tc.get()
			if err != nil {
				t.Fatal(err)
			}
			if key.RevokedAt == nil || !key.RevokedAt.Equal(first) {
				t.Fatalf("RevokedAt = %v, want %v", key.RevokedAt, first)
			}
			if key.State(clock.Now()) != KeyRevoked {
				t.Fatalf("State = %q, want revoked", key.State(clock.Now()))
			}
		})
	}
	t.Run("revoking one key leaves the others active", func(t *testing.T) {
		o, err := s.Key(other.ID)
		if err != nil {
			t.Fatal(err)
		}
		if o.RevokedAt != nil || o.State(clock.Now()) != KeyActive {
			t.Fatalf("other key = %+v", o)
		}
	})
	t.Run("revoking an unknown key is not found", func(t *testing.T) {
		if _, err := s.RevokeKey("key_nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("RevokeKey = %v, want ErrNotFound", err)
		}
	})
}

func TestStoredKeyStateFollowsTheClock(t *testing.T) {
	s, clock, _ := openTestStore(t)
	a := mustCreateAccount(t, s, "acme", 0)
	start := clock.Now()
	expires := start.Add(time.Hour)
	k, _ := mustCreateKey(t, s, a.ID, KeySpec{ExpiresAt: &expires})
	forever, _ := mustCreateKey(t, s, a.ID, KeySpec{})
	cases := []struct {
		name string
		key  string
		at   time.Time
		want KeyState
	}{
		{"an expiring key is active when created", k.ID, start, KeyActive},
		{"an expiring key is active a nanosecond before expiry", k.ID, expires.Add(-time.Nanosecond), KeyActive},
		{"an expiring key is expired at its expiry", k.ID, expires, KeyExpired},
		{"an expiring key is expired a year later", k.ID, expires.AddDate(1, 0, 0), KeyExpired},
		{"a key without expiry is active a century later", forever.ID, start.AddDate(100, 0, 0), KeyActive},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key, err := s.Key(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if got := key.State(tc.at); got != tc.want {
				t.Fatalf("State(%v) = %q, want %q", tc.at, got, tc.want)
			}
		})
	}
	t.Run("a revoked key is revoked whatever the time", func(t *testing.T) {
		clock.Advance(time.Minute)
		key, err := s.RevokeKey(k.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, at := range []time.Time{start, expires, expires.AddDate(1, 0, 0)} {
			if got := key.State(at); got != KeyRevoked {
				t.Fatalf("State(%v) = %q, want revoked", at, got)
			}
		}
	})
}

func TestStoreSurvivesCloseAndReopen(t *testing.T) {
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "nested", "folder", "billing.db")
	s, err := OpenBolt(path, BoltOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if s.Path() != path {
		t.Fatalf("Path = %q, want %q", s.Path(), path)
	}
	acme := mustCreateAccount(t, s, "acme", 2*Dollar)
	clock.Advance(time.Second)
	other := mustCreateAccount(t, s, "other", 0)
	mustCredit(t, s, acme.ID, 3, "three")
	mustCredit(t, s, other.ID, 5*Dollar, "five")
	if _, err := s.SetAccountState(other.ID, AccountDisabled); err != nil {
		t.Fatal(err)
	}
	kLive, secLive := mustCreateKey(t, s, acme.ID, KeySpec{Name: "live", Models: []string{"m"}})
	kDead, secDead := mustCreateKey(t, s, acme.ID, KeySpec{Name: "dead"})
	revokedAt := clock.Advance(time.Minute)
	if _, err := s.RevokeKey(kDead.ID); err != nil {
		t.Fatal(err)
	}
	wantAccounts, err := s.Accounts()
	if err != nil {
		t.Fatal(err)
	}
	wantLedger := allLedger(t, s, acme.ID)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = OpenBolt(path, BoltOptions{Now: clock.Now})
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	t.Cleanup(func() { s.Close() })

	t.Run("the store pings after reopening", func(t *testing.T) {
		if err := s.Ping(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("accounts, balances and states are still there", func(t *testing.T) {
		got, err := s.Accounts()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(wantAccounts) {
			t.Fatalf("Accounts = %+v, want %+v", got, wantAccounts)
		}
		for i := range got {
			g, w := got[i], wantAccounts[i]
			if g.ID != w.ID || g.Name != w.Name || g.Balance != w.Balance || g.State != w.State || !g.CreatedAt.Equal(w.CreatedAt) {
				t.Fatalf("account %d = %+v, want %+v", i, g, w)
			}
		}
		if got[0].Balance != 2*Dollar+3 || got[1].Balance != 5*Dollar || got[1].State != AccountDisabled {
			t.Fatalf("Accounts = %+v", got)
		}
	})
	t.Run("the ledger is still there", func(t *testing.T) {
		got := allLedger(t, s, acme.ID)
		if len(got) != len(wantLedger) || len(got) != 2 {
			t.Fatalf("Ledger = %+v, want %+v", got, wantLedger)
		}
		for i := range got {
			g, w := got[i], wantLedger[i]
			if g.Seq != w.Seq || g.Amount != w.Amount || g.Balance != w.Balance || g.Note != w.Note || g.Kind != w.Kind || !g.Time.Equal(w.Time) {
				t.Fatalf("row %d = %+v, want %+v", i, g, w)
			}
		}
	})
	t.Run("a credit after reopening continues the sequence", func(t *testing.T) {
		_, e := mustCredit(t, s, acme.ID, 1, "after reopen")
		if e.Seq != 3 || e.Balance != 2*Dollar+4 {
			t.Fatalf("entry = %+v, want seq 3 balance %s", e, 2*Dollar+4)
		}
	})
	t.Run("keys and revocations are still there", func(t *testing.T) {
		k, a, err := s.KeyByHash(HashSecret(secLive))
		if err != nil || k.ID != kLive.ID || a.ID != acme.ID || k.RevokedAt != nil || !slices.Equal(k.Models, []string{"m"}) {
			t.Fatalf("KeyByHash(live) = %+v, %+v, %v", k, a, err)
		}
		k, _, err = s.KeyByHash(HashSecret(secDead))
		if err != nil || k.ID != kDead.ID || k.RevokedAt == nil || !k.RevokedAt.Equal(revokedAt) {
			t.Fatalf("KeyByHash(dead) = %+v, %v; want revoked at %v", k, err, revokedAt)
		}
		keys, err := s.Keys(acme.ID)
		if err != nil || len(keys) != 2 {
			t.Fatalf("Keys = %+v, %v", keys, err)
		}
	})
}

func TestOpenBoltRefusesAFileAlreadyOpen(t *testing.T) {
	s, _, path := openTestStore(t)
	const timeout = 50 * time.Millisecond
	other, err := OpenBolt(path, BoltOptions{Timeout: timeout})
	if err == nil {
		other.Close()
		t.Fatal("a second OpenBolt on an open file succeeded")
	}
	cases := []struct {
		name  string
		check func() bool
	}{
		{"the error wraps ErrLocked", func() bool { return errors.Is(err, ErrLocked) }},
		{"the error tells the operator to use caddy reload", func() bool { return strings.Contains(err.Error(), "caddy reload") }},
		{"the error names the file", func() bool { return strings.Contains(err.Error(), path) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.check() {
				t.Fatalf("error: %v", err)
			}
		})
	}
	t.Run("the file opens once the first store is closed", func(t *testing.T) {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		again, err := OpenBolt(path, BoltOptions{Timeout: timeout})
		if err != nil {
			t.Fatalf("OpenBolt after Close: %v", err)
		}
		again.Close()
	})
}

func TestOpenBoltRefusesAnUnusablePath(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name  string
		setup func(t *testing.T) string
	}{
		{"a path that is a folder is refused", func(t *testing.T) string { return dir }},
		{"a file that is not a bbolt database is refused", func(t *testing.T) string {
			p := filepath.Join(dir, "junk.db")
			if err := os.WriteFile(p, bytes.Repeat([]byte("not a database "), 1000), 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := OpenBolt(tc.setup(t), BoltOptions{Timeout: 50 * time.Millisecond})
			if err == nil {
				s.Close()
				t.Fatal("OpenBolt succeeded")
			}
			if errors.Is(err, ErrLocked) {
				t.Fatalf("error %v wrongly claims the file is locked", err)
			}
		})
	}
}

func TestDatabaseFileNeverHoldsASecret(t *testing.T) {
	s, _, path := openTestStore(t)
	a := mustCreateAccount(t, s, "acme", Dollar)
	b := mustCreateAccount(t, s, "other", 0)
	type minted struct {
		key    Key
		secret string
	}
	var keys []minted
	for i := range 12 {
		acct := a
		if i%2 == 1 {
			acct = b
		}
		k, secret := mustCreateKey(t, s, acct.ID, KeySpec{Name: fmt.Sprint("key ", i)})
		keys = append(keys, minted{k, secret})
	}
	if _, err := s.RevokeKey(keys[0].key.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range keys {
		body := m.secret[len(KeyPrefix) : len(KeyPrefix)+keyBodyLen]
		hash := HashSecret(m.secret)
		checks := []struct {
			name   string
			needle []byte
			want   bool
		}{
			{"the whole secret is absent", []byte(m.secret), false},
			{"the 43-character body is absent", []byte(body), false},
			{"the key id is present, so the search can find what is there", []byte(m.key.ID), true},
			{"the raw secret hash is present as the lookup index", hash[:], true},
		}
		for _, c := range checks {
			t.Run(fmt.Sprintf("for key %d %s", i, c.name), func(t *testing.T) {
				if got := bytes.Contains(data, c.needle); got != c.want {
					t.Fatalf("bytes.Contains(file, %q) = %v, want %v", c.needle, got, c.want)
				}
			})
		}
	}
}
