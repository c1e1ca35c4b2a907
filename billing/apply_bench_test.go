package billing

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// applyBenchRows makes n charge rows for account id after row seq, with
// their JSON as the journal keeps it when journaled is set.
func applyBenchRows(b *testing.B, id string, seq uint64, n int, journaled bool) []journalRow {
	rows := make([]journalRow, n)
	for i := range rows {
		seq++
		rows[i].Entry = Entry{Seq: seq, Time: time.Unix(1_800_000_000, int64(seq)).UTC(), AccountID: id, Kind: EntryCharge,
			Amount: -1234, Balance: Amount(1_000_000_000 - 1234*int64(seq)), RequestID: fmt.Sprintf("req_%012d", seq),
			KeyID: "key_abcdefgh", Model: "bench-16", Deployment: "mock", PromptTokens: 24, CompletionTokens: 16,
			Basis: "upstream", Outcome: "ok", Attempts: 1}
		if journaled {
			v, err := json.Marshal(&rows[i].Entry)
			if err != nil {
				b.Fatal(err)
			}
			rows[i].payload = v
		}
	}
	return rows
}

// BenchmarkApplyRows is the journal's apply to bbolt (fsync off): 256 rows
// of one account, per op, into a ledger that holds 20,000. journaled is
// the commit loop's apply, which stores the JSON the journal was written
// with; encoded is the replay at open, which encodes each row again.
func BenchmarkApplyRows(b *testing.B) {
	s, ids := benchStore(b, true, 1)
	seq := uint64(1) // CreateAccount's row
	apply := func(rows []journalRow) {
		if err := s.db.Update(func(tx *bolt.Tx) error { return applyRows(tx, rows) }); err != nil {
			b.Fatal(err)
		}
		seq += uint64(len(rows))
	}
	for range 20_000 / 256 {
		apply(applyBenchRows(b, ids[0], seq, 256, true))
	}
	for _, c := range []struct {
		name      string
		journaled bool
	}{{"journaled", true}, {"encoded", false}} {
		b.Run(c.name, func(b *testing.B) {
			before := s.db.Stats().TxStats
			for range b.N {
				b.StopTimer()
				rows := applyBenchRows(b, ids[0], seq, 256, c.journaled)
				b.StartTimer()
				apply(rows)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*256), "ns/row")
			// Pages an apply writes (a pwrite each).
			after := s.db.Stats().TxStats
			b.ReportMetric(float64(after.GetPageCount()-before.GetPageCount())/float64(b.N), "pages/op")
		})
	}
}
