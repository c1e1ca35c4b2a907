package billing

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
)

// benchStore opens a store for a benchmark with accounts that never run
// dry. noSync keeps bbolt from calling fsync and, where /dev/shm exists,
// puts the file on tmpfs, so nothing waits for a disk.
func benchStore(b *testing.B, noSync bool, accounts int) (*BoltStore, []string) {
	b.Helper()
	dir := b.TempDir()
	if noSync {
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			d, err := os.MkdirTemp("/dev/shm", "arcane-bench-")
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { os.RemoveAll(d) })
			dir = d
		}
	}
	s, err := OpenBolt(filepath.Join(dir, "billing.db"), BoltOptions{NoSync: noSync})
	if err != nil {
		b.Fatalf("OpenBolt: %v", err)
	}
	b.Cleanup(func() { s.Close() })
	ids := make([]string, accounts)
	for i := range ids {
		a, err := s.CreateAccount(fmt.Sprintf("bench %d", i), 1_000_000_000*Dollar)
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = a.ID
	}
	return s, ids
}

// benchRequestID returns a request id unique within the process.
var benchRequests atomic.Uint64

func benchRequestID(buf []byte) string {
	return string(strconv.AppendUint(append(buf[:0], "req_"...), benchRequests.Add(1), 10))
}

// memStore is a Store whose balances never run out and whose Settle
// commits nothing: it leaves the Bank's own work to measure. Only Balance
// and Settle are implemented; anything else panics.
type memStore struct{ Store }

func (memStore) Balance(string) (Amount, uint64, error) { return 1 << 60, 0, nil }

func (memStore) Settle(c Charge) (Entry, error) {
	return Entry{AccountID: c.AccountID, Kind: EntryCharge, Amount: -c.Cost, RequestID: c.RequestID}, nil
}

func benchHoldSettle(b *testing.B, bank *Bank, ids []string, uniqueIDs bool) {
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		account := ids[next.Add(1)%uint64(len(ids))]
		var buf [32]byte
		c := testCharge("", "req_mem", 0)
		for pb.Next() {
			h, err := bank.Hold(account, 2000)
			if err != nil {
				b.Error(err)
				return
			}
			if uniqueIDs {
				c.RequestID = benchRequestID(buf[:])
			}
			c.Cost = 1234
			if _, err := h.Settle(c); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkHoldSettleMemory measures admission and settlement without the
// disk. The Bank has no way to release a hold without charging it, so
// "bank" runs the Bank over a store that commits nothing, and
// "bolt-nosync" runs it over a real store that skips fsync on tmpfs: the
// bbolt transaction and JSON encoding without the flush.
func BenchmarkHoldSettleMemory(b *testing.B) {
	b.Run("bank", func(b *testing.B) {
		ids := make([]string, 64)
		for i := range ids {
			ids[i] = fmt.Sprintf("acct_%d", i)
		}
		benchHoldSettle(b, NewBank(memStore{}), ids, false)
	})
	b.Run("bolt-nosync", func(b *testing.B) {
		s, ids := benchStore(b, true, 64)
		before := s.SettleStats()
		benchHoldSettle(b, NewBank(s), ids, true)
		reportSettleStats(b, before, s.SettleStats())
	})
}

func reportSettleStats(b *testing.B, before, after SettleStats) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "settlements/s")
	if n := after.Batches - before.Batches; n > 0 {
		b.ReportMetric(float64(after.Settlements-before.Settlements)/float64(n), "settlements/batch")
	}
}

// BenchmarkSettleDurable settles from 64 goroutines per CPU, each charge
// durable on disk before Settle returns: group commit shares one fsync
// among everything queued while the last one ran.
func BenchmarkSettleDurable(b *testing.B) {
	s, ids := benchStore(b, false, 16)
	before := s.SettleStats()
	var next atomic.Uint64
	b.ReportAllocs()
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := testCharge(ids[next.Add(1)%uint64(len(ids))], "", 1234)
		var buf [32]byte
		for pb.Next() {
			c.RequestID = benchRequestID(buf[:])
			if _, err := s.Settle(c); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	reportSettleStats(b, before, s.SettleStats())
}

// BenchmarkSettleSerial settles from one goroutine: one fsync per charge,
// the baseline BenchmarkSettleDurable is compared with.
func BenchmarkSettleSerial(b *testing.B) {
	s, ids := benchStore(b, false, 1)
	before := s.SettleStats()
	c := testCharge(ids[0], "", 1234)
	var buf [32]byte
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c.RequestID = benchRequestID(buf[:])
		if _, err := s.Settle(c); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportSettleStats(b, before, s.SettleStats())
}

func BenchmarkCost(b *testing.B) {
	prices := []Price{
		{Input: 1_750_000, Output: 14_000_000},
		{Input: 3_000_000, Output: 15_000_000, CachedInput: amountPtr(300_000)},
	}
	usages := []Usage{
		{PromptTokens: 1234, CompletionTokens: 567},
		{PromptTokens: 120_000, CachedTokens: 100_000, CompletionTokens: 4096},
		{PromptTokens: 1e15, CompletionTokens: 1e15},
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		// Check each result rather than summing them: the saturated costs
		// of the huge usage would overflow a sum.
		if prices[i&1].Cost(usages[i%3]) < 0 {
			b.Fatal("negative cost")
		}
		i++
	}
}
