package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// settleResult is how fast the billing store makes settlements durable:
// many goroutines calling Settle at once, as a busy gateway's requests do,
// group commit sharing one fsync among all that queued meanwhile.
type settleResult struct {
	// Path is the store's file, FSType the file system it is on (on tmpfs
	// fsync costs nothing, and the rate says little).
	Path       string  `json:"path"`
	FSType     string  `json:"fs_type"`
	Goroutines int     `json:"goroutines"`
	Seconds    float64 `json:"seconds"`
	// Settlements succeeded; PerSec is Settlements over Seconds, from the
	// first call to the last answer.
	Settlements int     `json:"settlements"`
	PerSec      float64 `json:"per_sec"`
	// Batches is the transactions (and fsyncs) the store committed,
	// MeanBatch the settlements each carried on average.
	Batches    uint64  `json:"batches"`
	MeanBatch  float64 `json:"mean_batch"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	// LoadCPUPct is this process's CPU, in percent of one CPU: the store
	// runs in it, on the load generator's CPU.
	LoadCPUPct float64 `json:"load_cpu_pct"`
}

// settleCharge is a settlement like the arcane site's: a priced
// completion of the bench model.
var settleCharge = billing.Charge{
	KeyID: "key_bench", Model: model16, Deployment: "up",
	Usage: billing.Usage{PromptTokens: 12, CompletionTokens: shortTokens},
	Basis: "upstream", Outcome: "ok", Attempts: 1, Cost: 44,
}

// measureSettle opens a durable BoltStore (fsync on: NoSync is not set)
// in dir, makes an account that cannot run dry, and has workers
// goroutines settle requests with unique ids for d.
func measureSettle(ctx context.Context, dir string, d time.Duration, workers int) (*settleResult, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, setupError{err}
	}
	path := filepath.Join(dir, "billing.db")
	store, err := billing.OpenBolt(path, billing.BoltOptions{})
	if err != nil {
		return nil, setupError{err}
	}
	defer store.Close()
	acct, err := store.CreateAccount("bench", 1_000_000_000*billing.Dollar)
	if err != nil {
		return nil, setupError{err}
	}
	res := &settleResult{Path: path, FSType: fsType(dir), Goroutines: workers}

	self := os.Getpid()
	load0, loadErr := cpuTime(self)
	before := store.SettleStats()
	start := time.Now()
	deadline := start.Add(d)
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		seq atomic.Uint64
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := settleCharge
			c.AccountID = acct.ID
			var (
				buf        []byte
				ok, failed int
				first      string
			)
			for ctx.Err() == nil && time.Now().Before(deadline) {
				buf = strconv.AppendUint(append(buf[:0], "settle_"...), seq.Add(1), 10)
				c.RequestID = string(buf)
				if _, err := store.Settle(c); err != nil {
					failed++
					if first == "" {
						first = err.Error()
					}
					continue
				}
				ok++
			}
			mu.Lock()
			defer mu.Unlock()
			res.Settlements += ok
			res.Errors += failed
			if res.FirstError == "" {
				res.FirstError = first
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	after := store.SettleStats()
	res.Seconds = elapsed.Seconds()
	res.PerSec = float64(res.Settlements) / res.Seconds
	res.Batches = after.Batches - before.Batches
	if res.Batches > 0 {
		res.MeanBatch = float64(after.Settlements-before.Settlements) / float64(res.Batches)
	}
	res.LoadCPUPct = -1
	if load1, err := cpuTime(self); err == nil && loadErr == nil {
		res.LoadCPUPct = 100 * (load1 - load0).Seconds() / res.Seconds
	}
	return res, nil
}

// fsMagic names the file systems statfs reports most often.
var fsMagic = map[int64]string{
	0xEF53:     "ext4",
	0x01021994: "tmpfs",
	0x794c7630: "overlayfs",
	0x58465342: "xfs",
	0x9123683e: "btrfs",
	0x2fc12fc1: "zfs",
	0x6969:     "nfs",
}

// fsType names the file system dir is on, or gives statfs's magic number.
func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "unknown"
	}
	if name, ok := fsMagic[int64(st.Type)]; ok {
		return name
	}
	return fmt.Sprintf("0x%x", st.Type)
}

func (s *settleResult) print(w io.Writer) {
	fmt.Fprintf(w, "== settlement: durable ledger settlements (billing.BoltStore, fsync on, group commit), %d goroutines for %.1fs on the load generator's CPU\n",
		s.Goroutines, s.Seconds)
	fmt.Fprintf(w, "  %.0f settlements/s; %d settlements in %d commits (mean batch %.1f); errors %d; gen CPU %s; file on %s (%s)\n",
		s.PerSec, s.Settlements, s.Batches, s.MeanBatch, s.Errors, fmtPct(s.LoadCPUPct), s.FSType, s.Path)
	if s.Errors > 0 {
		fmt.Fprintf(w, "  first error: %s\n", s.FirstError)
	}
	fmt.Fprintln(w)
}
