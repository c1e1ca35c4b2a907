package billing

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ledgerFixture is an account whose ledger mixes credits and charges from
// two keys and two models, one row a minute (a few sharing an instant, as
// a settlement batch does), next to another account's rows.
type ledgerFixture struct {
	s     *BoltStore
	clock *fakeClock
	acct  Account
	other Account
	// start is the first row's time; row n (seq n) was written at
	// times[n-1].
	start time.Time
	times []time.Time
}

func newLedgerFixture(t *testing.T) *ledgerFixture {
	t.Helper()
	s, clock, _ := openTestStore(t)
	f := &ledgerFixture{s: s, clock: clock, start: clock.Now()}
	f.acct = mustCreateAccount(t, s, "acme", 100*Dollar) // seq 1, credit
	f.other = mustCreateAccount(t, s, "other", 100*Dollar)
	f.times = append(f.times, clock.Now())
	for i := 2; i <= 30; i++ {
		// Rows 10 and 11, and 20 and 21, share an instant.
		if i != 11 && i != 21 {
			clock.Advance(time.Minute)
		}
		f.times = append(f.times, clock.Now())
		if i%7 == 0 {
			mustCredit(t, s, f.acct.ID, Dollar, fmt.Sprint("credit ", i))
			continue
		}
		key, model := "key_a", "m1"
		if i%2 == 0 {
			key = "key_b"
		}
		if i%3 == 0 {
			model = "m2"
		}
		mustSettle(t, s, Charge{RequestID: fmt.Sprint("req-", i), AccountID: f.acct.ID, KeyID: key, Model: model,
			Usage: Usage{PromptTokens: int64(i), CompletionTokens: 1}, Cost: Amount(i)})
		// The other account's rows interleave, with the same key and
		// model names, and must never show up.
		mustSettle(t, s, Charge{RequestID: fmt.Sprint("other-", i), AccountID: f.other.ID, KeyID: key, Model: model, Cost: 1})
	}
	return f
}

// at returns the time of row seq.
func (f *ledgerFixture) at(seq int) time.Time { return f.times[seq-1] }

// brute filters the whole ledger row by row: what Ledger must return.
func brute(all []Entry, q LedgerQuery) []uint64 {
	var out []uint64
	for _, e := range all {
		if (q.Before == 0 || e.Seq < q.Before) && q.match(&e) &&
			(q.Since.IsZero() || !e.Time.Before(q.Since)) && (q.Until.IsZero() || e.Time.Before(q.Until)) {
			out = append(out, e.Seq)
		}
	}
	return out
}

// walk reads every page of q and checks that more is true exactly when
// another non-empty page follows.
func walk(t *testing.T, s Store, accountID string, q LedgerQuery) []uint64 {
	t.Helper()
	var out []uint64
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatalf("pagination of %+v does not end", q)
		}
		rows, more, err := s.Ledger(accountID, q)
		if err != nil {
			t.Fatalf("Ledger(%+v): %v", q, err)
		}
		if len(rows) > q.Limit {
			t.Fatalf("page of %d rows with limit %d", len(rows), q.Limit)
		}
		if pages > 0 && len(rows) == 0 {
			t.Fatalf("more was true but the next page of %+v is empty", q)
		}
		for _, r := range rows {
			if r.AccountID != accountID {
				t.Fatalf("row %d belongs to %s", r.Seq, r.AccountID)
			}
		}
		out = append(out, seqs(rows)...)
		if !more {
			return out
		}
		q.Before = rows[len(rows)-1].Seq
	}
}

func TestLedgerFilters(t *testing.T) {
	f := newLedgerFixture(t)
	all := allLedger(t, f.s, f.acct.ID)
	if len(all) != 30 {
		t.Fatalf("fixture has %d rows, want 30", len(all))
	}
	if !f.at(10).Equal(f.at(11)) || !f.at(20).Equal(f.at(21)) {
		t.Fatal("rows 10 and 11, 20 and 21 should share an instant")
	}
	none, everything := []uint64{}, brute(all, LedgerQuery{})
	cases := []struct {
		name string
		q    LedgerQuery
		want []uint64 // checked against brute force too
	}{
		{"kind credit keeps only credits", LedgerQuery{Kind: EntryCredit}, []uint64{28, 21, 14, 7, 1}},
		{"a key keeps only that key's charges", LedgerQuery{KeyID: "key_a", Model: "m2"}, []uint64{27, 15, 9, 3}},
		{"a model keeps only that model's charges", LedgerQuery{Model: "m2", Kind: EntryCharge}, []uint64{30, 27, 24, 18, 15, 12, 9, 6, 3}},
		{"since is inclusive", LedgerQuery{Since: f.at(27)}, []uint64{30, 29, 28, 27}},
		{"until is exclusive", LedgerQuery{Until: f.at(4)}, []uint64{3, 2, 1}},
		{"since and until between row times", LedgerQuery{Since: f.at(5).Add(time.Second), Until: f.at(8).Add(time.Second)}, []uint64{8, 7, 6}},
		{"rows sharing an instant are all inside since", LedgerQuery{Since: f.at(11), Until: f.at(12)}, []uint64{11, 10}},
		{"rows sharing an instant are all outside until", LedgerQuery{Since: f.at(19), Until: f.at(21)}, []uint64{19}},
		{"since after the newest row is empty", LedgerQuery{Since: f.at(30).Add(time.Nanosecond)}, none},
		{"until at the first row is empty", LedgerQuery{Until: f.at(1)}, none},
		{"until after the newest row keeps everything", LedgerQuery{Until: f.at(30).Add(time.Hour)}, everything},
		{"since before the first row keeps everything", LedgerQuery{Since: f.start.Add(-time.Hour)}, everything},
		{"a key nobody used is empty", LedgerQuery{KeyID: "key_nope"}, none},
		{"credits have no key", LedgerQuery{KeyID: "key_a", Kind: EntryCredit}, none},
		{"the cursor combines with filters", LedgerQuery{Before: 15, Model: "m2", Since: f.at(6)}, []uint64{12, 9, 6}},
		{"the cursor combines with until", LedgerQuery{Before: 5, Until: f.at(20)}, []uint64{4, 3, 2, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := brute(all, tc.q)
			if !slices.Equal(want, tc.want) {
				t.Fatalf("the case's expectation %v disagrees with brute force %v", tc.want, want)
			}
			for _, limit := range []int{1, 2, 3, 50} {
				q := tc.q
				q.Limit = limit
				if got := walk(t, f.s, f.acct.ID, q); !slices.Equal(got, want) {
					t.Fatalf("limit %d: walked %v, want %v", limit, got, want)
				}
			}
		})
	}

	t.Run("every since and until at and between row times agrees with a row by row scan", func(t *testing.T) {
		var bounds []time.Time
		for _, at := range f.times {
			bounds = append(bounds, at, at.Add(time.Second))
		}
		for _, since := range bounds {
			for _, until := range bounds {
				if !until.After(since) {
					continue
				}
				for _, q := range []LedgerQuery{{Since: since, Until: until, Limit: 4}, {Until: until, Limit: 100, Model: "m1"}} {
					if got, want := walk(t, f.s, f.acct.ID, q), brute(all, q); !slices.Equal(got, want) {
						t.Fatalf("%+v: walked %v, want %v", q, got, want)
					}
				}
			}
		}
	})

	t.Run("more is false when no older row matches, though older rows exist", func(t *testing.T) {
		rows, more, err := f.s.Ledger(f.acct.ID, LedgerQuery{Kind: EntryCredit, Limit: 5})
		if err != nil || len(rows) != 5 || more {
			t.Fatalf("Ledger = %v, more %v, %v; want the 5 credits and no more", seqs(rows), more, err)
		}
		rows, more, err = f.s.Ledger(f.acct.ID, LedgerQuery{Kind: EntryCredit, Limit: 4})
		if err != nil || len(rows) != 4 || !more {
			t.Fatalf("Ledger = %v, more %v, %v; want 4 credits and more", seqs(rows), more, err)
		}
	})
}

func TestLedgerRefusesInvalidQueries(t *testing.T) {
	s, clock, _ := openTestStore(t)
	a := mustCreateAccount(t, s, "acme", Dollar)
	now := clock.Now()
	cases := []struct {
		name string
		q    LedgerQuery
	}{
		{"a zero limit is refused", LedgerQuery{}},
		{"an unknown kind is refused", LedgerQuery{Limit: 1, Kind: "refund"}},
		{"a kind in the wrong case is refused", LedgerQuery{Limit: 1, Kind: "Credit"}},
		{"until before since is refused", LedgerQuery{Limit: 1, Since: now, Until: now.Add(-time.Second)}},
		{"until equal to since is refused", LedgerQuery{Limit: 1, Since: now, Until: now}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := s.Ledger(a.ID, tc.q); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Ledger(%+v) = %v, want ErrInvalid", tc.q, err)
			}
		})
	}
	t.Run("a filtered ledger of an unknown account is not found", func(t *testing.T) {
		if _, _, err := s.Ledger("acct_nope", LedgerQuery{Limit: 1, Kind: EntryCharge}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Ledger = %v, want ErrNotFound", err)
		}
	})
}

// TestLedgerScanIsBounded damages rows outside the period in the file: a
// scan that read them would fail to decode them.
func TestLedgerScanIsBounded(t *testing.T) {
	f := newLedgerFixture(t)
	s := editFile(t, f.s, f.clock, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLedger).Bucket([]byte(f.acct.ID))
		for seq := uint64(1); seq <= 10; seq++ {
			if err := b.Put(seqKey(seq), []byte("{damaged")); err != nil {
				return err
			}
		}
		return nil
	})
	t.Run("a selective filter stops at since instead of scanning to the first row", func(t *testing.T) {
		rows, more, err := s.Ledger(f.acct.ID, LedgerQuery{Limit: 10, KeyID: "key_nope", Since: f.at(12)})
		if err != nil || len(rows) != 0 || more {
			t.Fatalf("Ledger = %v, %v, %v; want nothing and no error", seqs(rows), more, err)
		}
	})
	t.Run("usage stops at since", func(t *testing.T) {
		if _, err := s.Usage(UsageQuery{Since: f.at(12)}); err != nil {
			t.Fatalf("Usage: %v", err)
		}
	})
	t.Run("the check can fail: without since the damaged rows are read", func(t *testing.T) {
		if _, _, err := s.Ledger(f.acct.ID, LedgerQuery{Limit: 10, KeyID: "key_nope"}); err == nil {
			t.Fatal("Ledger read past the damaged rows without an error")
		}
	})
}

// TestLedgerUntilWithGaps deletes rows so that sequence numbers have
// gaps, and checks that until still finds the right newest row.
func TestLedgerUntilWithGaps(t *testing.T) {
	f := newLedgerFixture(t)
	gone := []uint64{2, 3, 4, 12, 13, 17, 29, 30}
	s := editFile(t, f.s, f.clock, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLedger).Bucket([]byte(f.acct.ID))
		for _, seq := range gone {
			if err := b.Delete(seqKey(seq)); err != nil {
				return err
			}
		}
		return nil
	})
	all := allLedger(t, s, f.acct.ID)
	if len(all) != 30-len(gone) {
		t.Fatalf("%d rows left, want %d", len(all), 30-len(gone))
	}
	for seq := 1; seq <= 30; seq++ {
		for _, until := range []time.Time{f.at(seq), f.at(seq).Add(time.Second)} {
			q := LedgerQuery{Until: until, Limit: 3}
			if got, want := walk(t, s, f.acct.ID, q), brute(all, q); !slices.Equal(got, want) {
				t.Fatalf("until row %d's time %v: walked %v, want %v", seq, until, got, want)
			}
		}
	}
}

func TestUsage(t *testing.T) {
	s, clock, _ := openTestStore(t)
	// Account ids are random; name them so that the order is known.
	a := mustCreateAccount(t, s, "a", 10*Dollar)
	b := mustCreateAccount(t, s, "b", 10*Dollar)
	if a.ID > b.ID {
		a, b = b, a
	}
	empty := mustCreateAccount(t, s, "no charges", Dollar)
	t0 := clock.Now()
	// Each charge writes twice its cached count to the cache, so the sums
	// show whether cache writes are added up on their own.
	settle := func(acct Account, rid, model string, prompt, cached, completion int64, cost Amount) {
		t.Helper()
		mustSettle(t, s, Charge{RequestID: rid, AccountID: acct.ID, KeyID: "k", Model: model,
			Usage: Usage{PromptTokens: prompt, CachedTokens: cached, CacheWriteTokens: 2 * cached, CompletionTokens: completion}, Cost: cost})
	}
	clock.Advance(time.Hour) // t0+1h
	settle(a, "a1", "zeta", 100, 20, 10, 1000)
	settle(a, "a2", "alpha", 5, 0, 5, 7)
	settle(b, "b1", "zeta", 1, 1, 1, 1)
	clock.Advance(time.Hour) // t0+2h
	settle(a, "a3", "zeta", 200, 0, 30, 2000)
	mustCredit(t, s, a.ID, 5*Dollar, "credits never count")
	settle(b, "b2", "zeta", 0, 0, 0, 0) // a charge of nothing is still a request
	// A request settled twice counts once.
	if _, err := s.Settle(Charge{RequestID: "a3", AccountID: a.ID, Model: "zeta", Usage: Usage{PromptTokens: 999}, Cost: 999}); !errors.Is(err, ErrSettled) {
		t.Fatalf("settling a3 again: %v", err)
	}
	clock.Advance(time.Hour) // t0+3h
	settle(a, "a4", "alpha", 1, 0, 1, 3)

	row := func(acct Account, model string, req, prompt, cached, completion int64, cost Amount) UsageRow {
		return UsageRow{AccountID: acct.ID, Model: model, UsageSums: UsageSums{Requests: req, PromptTokens: prompt, CachedTokens: cached, CacheWriteTokens: 2 * cached, CompletionTokens: completion, Cost: cost}}
	}
	cases := []struct {
		name string
		q    UsageQuery
		want []UsageRow
	}{
		{"all time sums every account's charges by model, ordered by account then model", UsageQuery{}, []UsageRow{
			row(a, "alpha", 2, 6, 0, 6, 10),
			row(a, "zeta", 2, 300, 20, 40, 3000),
			row(b, "zeta", 2, 1, 1, 1, 1),
		}},
		{"one account", UsageQuery{AccountID: b.ID}, []UsageRow{row(b, "zeta", 2, 1, 1, 1, 1)}},
		{"since is inclusive", UsageQuery{Since: t0.Add(2 * time.Hour)}, []UsageRow{
			row(a, "alpha", 1, 1, 0, 1, 3),
			row(a, "zeta", 1, 200, 0, 30, 2000),
			row(b, "zeta", 1, 0, 0, 0, 0),
		}},
		{"until is exclusive", UsageQuery{AccountID: a.ID, Until: t0.Add(2 * time.Hour)}, []UsageRow{
			row(a, "alpha", 1, 5, 0, 5, 7),
			row(a, "zeta", 1, 100, 20, 10, 1000),
		}},
		{"a period with one instant of charges", UsageQuery{AccountID: a.ID, Since: t0.Add(2 * time.Hour), Until: t0.Add(3 * time.Hour)}, []UsageRow{
			row(a, "zeta", 1, 200, 0, 30, 2000),
		}},
		{"an account without charges has no rows", UsageQuery{AccountID: empty.ID}, nil},
		{"a period without charges has no rows", UsageQuery{Since: t0.Add(4 * time.Hour)}, nil},
		{"a period before any charge has no rows", UsageQuery{Until: t0.Add(time.Hour)}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Usage(tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Usage(%+v) =\n%+v\nwant\n%+v", tc.q, got, tc.want)
			}
		})
	}
	t.Run("an unknown account is not found", func(t *testing.T) {
		if _, err := s.Usage(UsageQuery{AccountID: "acct_nope"}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Usage = %v, want ErrNotFound", err)
		}
	})
	t.Run("until not after since is refused", func(t *testing.T) {
		if _, err := s.Usage(UsageQuery{Since: t0, Until: t0}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Usage = %v, want ErrInvalid", err)
		}
	})
	t.Run("a usage row is snake_case JSON with the cost as a decimal string", func(t *testing.T) {
		b, err := json.Marshal(row(a, "zeta", 2, 300, 20, 40, 3000))
		if err != nil {
			t.Fatal(err)
		}
		want := `{"account_id":"` + a.ID + `","model":"zeta","requests":2,"prompt_tokens":300,"cached_tokens":20,"cache_write_tokens":40,"completion_tokens":40,"cost":"0.003000"}`
		if string(b) != want {
			t.Fatalf("JSON %s, want %s", b, want)
		}
	})
}

func TestDailyUsage(t *testing.T) {
	s, clock, _ := openTestStore(t)
	acct := mustCreateAccount(t, s, "acme", 10*Dollar)
	other := mustCreateAccount(t, s, "other", 10*Dollar)
	empty := mustCreateAccount(t, s, "no charges", Dollar)
	day := func(d int) time.Time { return time.Date(2030, 1, d, 0, 0, 0, 0, time.UTC) }
	at := func(t time.Time) { clock.Advance(t.Sub(clock.Now())) }
	// Each charge writes twice its cached count to the cache (see TestUsage).
	settle := func(a Account, rid, model string, prompt, cached, completion int64, cost Amount) {
		t.Helper()
		mustSettle(t, s, Charge{RequestID: rid, AccountID: a.ID, KeyID: "k", Model: model,
			Usage: Usage{PromptTokens: prompt, CachedTokens: cached, CacheWriteTokens: 2 * cached, CompletionTokens: completion}, Cost: cost})
	}
	// The clock starts at 2030-01-02 03:04:05 UTC.
	settle(acct, "early", "m1", 1000, 0, 1000, 1000) // before the window below
	at(day(2).Add(23*time.Hour + 59*time.Minute))
	settle(acct, "r1", "m1", 100, 10, 10, 100)
	settle(acct, "r2", "m2", 200, 0, 20, 200)
	settle(other, "o1", "m1", 9, 9, 9, 9)
	at(day(2).Add(24*time.Hour - time.Nanosecond))
	settle(acct, "r3", "m1", 1, 1, 1, 1) // the last instant of the 2nd
	at(day(3))
	settle(acct, "r4", "m1", 300, 0, 30, 300) // the first instant of the 3rd
	mustCredit(t, s, acct.ID, 5*Dollar, "credits never count")
	at(day(3).Add(13 * time.Hour))
	settle(acct, "r5", "m1", 400, 40, 40, 400)
	settle(acct, "r6", "m0", 5, 0, 5, 0) // a charge of nothing is still a request
	at(day(4).Add(10 * time.Hour))
	settle(acct, "late", "m2", 7, 0, 7, 7) // after the window below

	row := func(d int, model string, req, prompt, cached, completion int64, cost Amount) DailyUsageRow {
		return DailyUsageRow{Day: day(d), Model: model, UsageSums: UsageSums{Requests: req, PromptTokens: prompt, CachedTokens: cached, CacheWriteTokens: 2 * cached, CompletionTokens: completion, Cost: cost}}
	}
	cases := []struct {
		name         string
		since, until time.Time
		want         []DailyUsageRow
	}{
		{"charges are summed per UTC day and model, across midnight", day(2).Add(4 * time.Hour), day(4), []DailyUsageRow{
			row(2, "m1", 2, 101, 11, 11, 101),
			row(2, "m2", 1, 200, 0, 20, 200),
			row(3, "m0", 1, 5, 0, 5, 0),
			row(3, "m1", 2, 700, 40, 70, 700),
		}},
		{"no bounds sum every charge", time.Time{}, time.Time{}, []DailyUsageRow{
			row(2, "m1", 3, 1101, 11, 1011, 1101),
			row(2, "m2", 1, 200, 0, 20, 200),
			row(3, "m0", 1, 5, 0, 5, 0),
			row(3, "m1", 2, 700, 40, 70, 700),
			row(4, "m2", 1, 7, 0, 7, 7),
		}},
		{"since is inclusive and until exclusive", day(3), day(3).Add(13 * time.Hour), []DailyUsageRow{
			row(3, "m1", 1, 300, 0, 30, 300),
		}},
		{"bounds in another time zone mean the same instants", day(3).In(time.FixedZone("UTC-5", -5*3600)), time.Time{}, []DailyUsageRow{
			row(3, "m0", 1, 5, 0, 5, 0),
			row(3, "m1", 2, 700, 40, 70, 700),
			row(4, "m2", 1, 7, 0, 7, 7),
		}},
		{"a period without charges has no rows", day(5), day(6), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.DailyUsage(acct.ID, tc.since, tc.until)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, tc.want, func(a, b DailyUsageRow) bool { return a == b }) {
				t.Fatalf("DailyUsage =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
	t.Run("days are UTC midnights", func(t *testing.T) {
		got, _ := s.DailyUsage(acct.ID, time.Time{}, time.Time{})
		for _, r := range got {
			if r.Day.Location() != time.UTC || r.Day.Hour() != 0 || r.Day.Minute() != 0 || r.Day.Second() != 0 || r.Day.Nanosecond() != 0 {
				t.Errorf("day %v is not a UTC midnight", r.Day)
			}
		}
	})
	t.Run("an account without charges has no rows", func(t *testing.T) {
		if got, err := s.DailyUsage(empty.ID, time.Time{}, time.Time{}); err != nil || len(got) != 0 {
			t.Errorf("DailyUsage = %+v, %v", got, err)
		}
	})
	t.Run("an unknown account is not found", func(t *testing.T) {
		if _, err := s.DailyUsage("acct_nope", time.Time{}, time.Time{}); !errors.Is(err, ErrNotFound) {
			t.Errorf("DailyUsage = %v, want ErrNotFound", err)
		}
	})
	t.Run("until not after since is refused", func(t *testing.T) {
		if _, err := s.DailyUsage(acct.ID, day(3), day(3)); !errors.Is(err, ErrInvalid) {
			t.Errorf("DailyUsage = %v, want ErrInvalid", err)
		}
	})
	t.Run("a daily row is snake_case JSON with the cost as a decimal string", func(t *testing.T) {
		b, err := json.Marshal(row(3, "m1", 2, 700, 40, 70, 700))
		if err != nil {
			t.Fatal(err)
		}
		want := `{"day":"2030-01-03T00:00:00Z","model":"m1","requests":2,"prompt_tokens":700,"cached_tokens":40,"cache_write_tokens":80,"completion_tokens":70,"cost":"0.000700"}`
		if string(b) != want {
			t.Fatalf("JSON %s, want %s", b, want)
		}
	})
}
