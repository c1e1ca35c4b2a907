package billing

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"
)

// sampleCharge is a charge row as a settlement writes it.
func sampleCharge() Entry {
	return Entry{Seq: 123456, Time: time.Date(2026, 11, 27, 23, 41, 5, 123456789, time.UTC),
		AccountID: "acct_0123456789abcdef", Kind: EntryCharge, Amount: -1234, Balance: 99998766,
		RequestID: "req_019ac0b5e3f2_8d1f0c2b9a7e6d54", KeyID: "key_0123456789ab", Model: "gpt-5.2",
		Deployment: "openai/gpt-5.2-2025-12-11", PromptTokens: 120, CachedTokens: 64, CompletionTokens: 200,
		Basis: "upstream", Outcome: "ok", Attempts: 1}
}

// TestAppendEntryJSONIsMarshal checks the hand-written encoder against
// json.Marshal, and that it leaves to json.Marshal what it cannot write
// exactly: escapes, non-ASCII text, times outside UTC or RFC 3339's years.
func TestAppendEntryJSONIsMarshal(t *testing.T) {
	cases := map[string]func(e *Entry){
		"a charge": func(e *Entry) {},
		"a credit": func(e *Entry) {
			*e = Entry{Seq: 1, Time: e.Time, AccountID: "a", Kind: EntryCredit, Amount: 5 * Dollar, Balance: 5 * Dollar, Note: "opening balance"}
		},
		"zero time":     func(e *Entry) { e.Time = time.Time{} },
		"whole seconds": func(e *Entry) { e.Time = e.Time.Truncate(time.Second) },
		"extremes": func(e *Entry) {
			e.Seq, e.Amount, e.Balance, e.PromptTokens, e.Attempts = math.MaxUint64, math.MinInt64, math.MaxInt64, math.MinInt64, math.MinInt
		},
		"html in a note":    func(e *Entry) { e.Note = "refund <b>&</b>" },
		"a quote":           func(e *Entry) { e.Model = `say "hi"` },
		"a control byte":    func(e *Entry) { e.Deployment = "a\tb" },
		"non-ASCII":         func(e *Entry) { e.Note = "café \u2028" },
		"invalid UTF-8":     func(e *Entry) { e.KeyID = "k\xff" },
		"DEL":               func(e *Entry) { e.Outcome = "x\x7f" },
		"another zone":      func(e *Entry) { e.Time = e.Time.In(time.FixedZone("X", 3600)) },
		"a year past 9999":  func(e *Entry) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
		"a year before one": func(e *Entry) { e.Time = time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC) },
	}
	for name, edit := range cases {
		e := sampleCharge()
		edit(&e)
		want, wantErr := json.Marshal(&e)
		if p, ok := appendEntryJSON(nil, &e); ok && len(p) > entryJSONBound(&e) {
			t.Errorf("%s: %d bytes, over the bound %d", name, len(p), entryJSONBound(&e))
		}
		got, ok := appendEntryJSON([]byte("x"), &e)
		if ok && (wantErr != nil || string(got) != "x"+string(want)) {
			t.Errorf("%s: appendEntryJSON\n%s\njson.Marshal (err %v)\nx%s", name, got, wantErr, want)
		}
		if !ok && string(got) != "x" {
			t.Errorf("%s: declined but appended %q", name, got)
		}
		if fast := name == "a charge" || name == "a credit" || name == "zero time" || name == "whole seconds" || name == "extremes"; ok != fast {
			t.Errorf("%s: encoded without json.Marshal %v, want %v", name, ok, fast)
		}
		// appendRecord writes what json.Marshal would, whichever way.
		buf, payload, err := appendRecord(nil, &e)
		if (err != nil) != (wantErr != nil) || err == nil && (!bytes.Equal(payload, want) || !bytes.Equal(buf[journalHeaderSize:], want)) {
			t.Errorf("%s: appendRecord payload %s err %v, want %s err %v", name, payload, err, want, wantErr)
		}
	}
}

// TestAppendEntryJSONWritesEveryField fills every field of Entry, through
// reflection, so that a field added to Entry and not to the encoder fails
// here rather than vanish from the ledger.
func TestAppendEntryJSONWritesEveryField(t *testing.T) {
	var e Entry
	v := reflect.ValueOf(&e).Elem()
	for i := range v.NumField() {
		switch f := v.Field(i); f.Kind() {
		case reflect.String:
			f.SetString(v.Type().Field(i).Name)
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(i + 1))
		case reflect.Uint64:
			f.SetUint(uint64(i + 1))
		case reflect.Struct: // Time
			f.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)))
		default:
			t.Fatalf("field %s of kind %s: teach this test (and appendEntryJSON) about it", v.Type().Field(i).Name, f.Kind())
		}
	}
	want, err := json.Marshal(&e)
	got, ok := appendEntryJSON(nil, &e)
	if err != nil || !ok || !bytes.Equal(got, want) {
		t.Fatalf("appendEntryJSON (ok %v)\n%s\njson.Marshal (err %v)\n%s", ok, got, err, want)
	}
}

// FuzzAppendEntryJSON holds appendEntryJSON to json.Marshal's bytes for any
// row it agrees to encode.
func FuzzAppendEntryJSON(f *testing.F) {
	e := sampleCharge()
	f.Add(e.Seq, e.Time.UnixNano(), e.AccountID, string(e.Kind), int64(e.Amount), int64(e.Balance), "", e.RequestID, e.Model, e.PromptTokens, e.CompletionTokens, e.Attempts)
	f.Add(uint64(0), int64(0), "", "credit", int64(0), int64(0), "<&>", "", "é", int64(-1), int64(0), -3)
	f.Add(uint64(1), int64(math.MaxInt64), "a", "charge", int64(math.MinInt64), int64(1), "", "r", "m", int64(math.MinInt64), int64(math.MaxInt64), math.MinInt)
	f.Fuzz(func(t *testing.T, seq uint64, nanos int64, account, kind string, amount, balance int64, note, request, model string, prompt, completion int64, attempts int) {
		// Seconds reach every year, nanoseconds every fraction; a zone
		// other than UTC now and then.
		at := time.Unix(nanos/7, nanos%1_000_000_000).UTC()
		if nanos%5 == 0 {
			at = at.In(time.FixedZone("", int(nanos%86400)))
		}
		e := Entry{Seq: seq, Time: at, AccountID: account, Kind: EntryKind(kind),
			Amount: Amount(amount), Balance: Amount(balance), Note: note, RequestID: request, KeyID: note + request,
			Model: model, Deployment: model + account, PromptTokens: prompt, CachedTokens: prompt / 2,
			CacheWriteTokens: completion / 3, CompletionTokens: completion, Basis: kind, Outcome: note, Attempts: attempts}
		got, ok := appendEntryJSON(nil, &e)
		if !ok {
			return
		}
		want, err := json.Marshal(&e)
		if len(got) > entryJSONBound(&e) {
			t.Fatalf("%d bytes, over the bound %d", len(got), entryJSONBound(&e))
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("appendEntryJSON\n%s\njson.Marshal (err %v)\n%s", got, err, want)
		}
	})
}

// BenchmarkAppendRecord encodes one charge row into a journal batch, as
// each settlement does.
func BenchmarkAppendRecord(b *testing.B) {
	e := sampleCharge()
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf, _, _ = appendRecord(buf[:0], &e)
	}
}
