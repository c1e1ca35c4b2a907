package dashboard

import (
	"sync"
	"time"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// The overview's month and the usage page's 30 days come from one scan of
// the account's recent ledger rows (billing.DailyUsage), which costs a few
// microseconds per row: cheap for most accounts, seconds for one that
// settles millions of requests a month. The scan is kept per account and
// reused while the account's ledger has not moved; when the scan was slow
// (slowScan or more), also for usageFresh after it, so that reloading a
// busy account's page, or many tabs at once, scan once.

// usageFresh is how stale a busy account's charts may be; slowScan is
// what makes an account busy.
const (
	usageFresh = 10 * time.Second
	slowScan   = 20 * time.Millisecond
)

// maxUsageEntries bounds the accounts whose scans are kept.
const maxUsageEntries = 10000

type usageCache struct {
	mu sync.Mutex
	m  map[string]*usageEntry
}

type usageEntry struct {
	// mu makes concurrent page loads of one account wait for one scan.
	mu    sync.Mutex
	since time.Time // the scan's first day
	seq   uint64    // the account's newest ledger row when scanned
	at    time.Time // when scanned
	took  time.Duration
	rows  []billing.DailyUsageRow
}

func (c *usageCache) entry(accountID string) *usageEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]*usageEntry)
	}
	e := c.m[accountID]
	if e == nil {
		if len(c.m) >= maxUsageEntries {
			for k := range c.m { // drop any one
				delete(c.m, k)
				break
			}
		}
		e = &usageEntry{}
		c.m[accountID] = e
	}
	return e
}

// window is the days the overview and the usage page sum over, at now:
// the charts' 30 days, today included, and the month so far; the scan
// covers both.
type window struct {
	now, scan, chart, month time.Time
}

func usageWindow(now time.Time) window {
	now = now.UTC()
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	w := window{now: now, chart: today.AddDate(0, 0, 1-chartDays), month: time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)}
	w.scan = w.chart
	if w.month.Before(w.scan) {
		w.scan = w.month
	}
	return w
}

// dailyUsage returns the account's charges per day and model over the
// window's scan. The rows are shared: callers must not change them.
func (h *Handler) dailyUsage(accountID string, w window) ([]billing.DailyUsageRow, error) {
	_, seq, err := h.store.Balance(accountID)
	if err != nil {
		return nil, err
	}
	e := h.scans.entry(accountID)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rows != nil && e.since.Equal(w.scan) && (e.seq == seq || e.took >= slowScan && w.now.Sub(e.at) < usageFresh) {
		return e.rows, nil
	}
	start := time.Now()
	rows, err := h.store.DailyUsage(accountID, w.scan, w.now.Add(time.Nanosecond))
	if err != nil {
		return nil, err
	}
	if rows == nil {
		rows = []billing.DailyUsageRow{}
	}
	e.since, e.seq, e.at, e.took, e.rows = w.scan, seq, w.now, time.Since(start), rows
	return rows, nil
}
