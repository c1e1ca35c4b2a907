package dashboard

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/arcaneapi/caddy-arcane/billing"
	"github.com/arcaneapi/caddy-arcane/ratelimit"
)

// The pages behind the log-in: overview, keys, usage and models.

type overviewData struct {
	AccountID                string
	Balance, Held, Available billing.Amount
	Month                    string
	MonthCost                billing.Amount
	MonthRequests            int64
	MonthTokens              int64
	ActiveKeys               int
	APIURL                   string
	// Model and OtherModel fill the quickstart's examples.
	Model, OtherModel string
	Billing           string
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request, v *visit) {
	acct, err := h.store.Account(v.user.AccountID)
	if err != nil {
		h.serverError(w, r, "reading the account", err)
		return
	}
	win := usageWindow(h.now())
	now, month := win.now, win.month
	days, err := h.dailyUsage(acct.ID, win)
	if err != nil {
		h.serverError(w, r, "summing this month's usage", err)
		return
	}
	keys, err := h.store.Keys(acct.ID)
	if err != nil {
		h.serverError(w, r, "listing keys", err)
		return
	}
	d := overviewData{
		AccountID: acct.ID, Balance: acct.Balance, Held: h.bank.Held(acct.ID), Month: now.Format("January 2006"),
		APIURL: h.apiURL(r), Model: "gpt-5.2", OtherModel: "claude-sonnet-4-6", Billing: h.cfg.Billing,
	}
	d.Available = d.Balance - d.Held
	for _, u := range days {
		if u.Day.Before(month) {
			continue
		}
		d.MonthCost += u.Cost
		d.MonthRequests += u.Requests
		d.MonthTokens += u.PromptTokens + u.CompletionTokens
	}
	for _, k := range keys {
		if k.State(now) == billing.KeyActive {
			d.ActiveKeys++
		}
	}
	if len(h.models) > 0 {
		d.Model, d.OtherModel = h.models[0].ID, h.models[0].ID
		if len(h.models) > 1 {
			d.OtherModel = h.models[1].ID
		}
	}
	h.render(w, r, http.StatusOK, "overview", page{Nav: "overview", visit: v, Data: d})
}

// apiURL is the API's base URL as clients should call it.
func (h *Handler) apiURL(r *http.Request) string {
	if h.cfg.APIURL != "" {
		return h.cfg.APIURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/v1"
}

type keyRow struct {
	billing.Key
	State string
}

// shownInactive is how many revoked or expired keys the keys page lists,
// newest first.
const shownInactive = 20

// keyCreations bounds the keys an account may create in the dashboard, so
// that creating and revoking in a loop cannot fill the store.
var keyCreations = ratelimit.Limit{Count: 20, Window: time.Hour}

type keysData struct {
	Keys []keyRow
	// Active counts the active keys (the first in Keys); Hidden the
	// inactive ones not listed.
	Active, Hidden int
	Models         []string
	// Caps on a key's own limits; zero hides the field.
	MaxRPM, MaxTPM int64
	MaxKeys        int
	// The form as sent, when it is shown again with an error.
	Form       keyForm
	Error      string
	Notice     string
	NewSecret  string
	NewKeyName string
}

type keyForm struct {
	Name     string
	Models   []string
	RPM, TPM string
}

// Picked reports whether the form chose model m.
func (f keyForm) Picked(m string) bool { return slices.Contains(f.Models, m) }

func (h *Handler) keysData(accountID string) (keysData, error) {
	keys, err := h.store.Keys(accountID)
	if err != nil {
		return keysData{}, err
	}
	now := h.now()
	d := keysData{MaxRPM: h.cfg.MaxRPM, MaxTPM: h.cfg.MaxTPM, MaxKeys: h.cfg.MaxKeys}
	// Newest first; revoked and expired keys after the active ones.
	for i := len(keys) - 1; i >= 0; i-- {
		d.Keys = append(d.Keys, keyRow{Key: keys[i], State: string(keys[i].State(now))})
	}
	slices.SortStableFunc(d.Keys, func(a, b keyRow) int {
		return boolInt(a.State != string(billing.KeyActive)) - boolInt(b.State != string(billing.KeyActive))
	})
	// Every active key, and the most recent inactive ones.
	for i, k := range d.Keys {
		if k.State != string(billing.KeyActive) {
			d.Active = i
			if n := len(d.Keys) - i; n > shownInactive {
				d.Hidden = n - shownInactive
				d.Keys = d.Keys[:i+shownInactive]
			}
			break
		}
		d.Active = i + 1
	}
	for _, m := range h.models {
		d.Models = append(d.Models, m.ID)
	}
	return d, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (h *Handler) keysPage(w http.ResponseWriter, r *http.Request, v *visit) {
	d, err := h.keysData(v.user.AccountID)
	if err != nil {
		h.serverError(w, r, "listing keys", err)
		return
	}
	// The notice names only a key of this account that is revoked: the
	// query is anyone's to write.
	id := r.URL.Query().Get("revoked")
	if slices.ContainsFunc(d.Keys, func(k keyRow) bool { return k.ID == id && k.State == string(billing.KeyRevoked) }) {
		d.Notice = "Key " + id + " is revoked: requests with it now get 401."
	}
	h.render(w, r, http.StatusOK, "keys", page{Nav: "keys", visit: v, Data: d})
}

// createKey mints a key and shows its secret, once, on the keys page.
func (h *Handler) createKey(w http.ResponseWriter, r *http.Request, v *visit) {
	// Counting the active keys and adding one are two transactions: one
	// creation at a time, so that two at once cannot pass max_keys. (The
	// store has one process; key creation is rare.)
	keyCreation.Lock()
	defer keyCreation.Unlock()
	d, err := h.keysData(v.user.AccountID)
	if err != nil {
		h.serverError(w, r, "listing keys", err)
		return
	}
	d.Form = keyForm{Name: strings.TrimSpace(r.PostFormValue("name")), Models: r.PostForm["models"],
		RPM: strings.TrimSpace(r.PostFormValue("rpm")), TPM: strings.TrimSpace(r.PostFormValue("tpm"))}
	spec, err := h.keySpec(d.Form)
	status := http.StatusBadRequest
	if err == nil && d.Active >= h.cfg.MaxKeys {
		err = problem("This account has %d active keys, the most allowed. Revoke one first.", d.Active)
	}
	if err == nil {
		if dec := h.limiter.Allow("dashboard/keys/"+v.user.AccountID, keyCreations, 1); !dec.Allowed {
			status = http.StatusTooManyRequests
			err = problem("%s", h.tooMany(w, dec.RetryAfter))
		}
	}
	if err != nil {
		d.Error = err.Error()
		h.render(w, r, status, "keys", page{Nav: "keys", visit: v, Data: d})
		return
	}
	key, secret, err := h.store.CreateKey(v.user.AccountID, spec)
	if err != nil {
		if errors.Is(err, billing.ErrInvalid) {
			d.Error = invalidMessage(err)
			h.render(w, r, http.StatusBadRequest, "keys", page{Nav: "keys", visit: v, Data: d})
			return
		}
		h.serverError(w, r, "creating a key", err)
		return
	}
	h.logger.Info("dashboard key created", userField(v.user), keyField(key.ID))
	if d, err = h.keysData(v.user.AccountID); err != nil {
		h.serverError(w, r, "listing keys", err)
		return
	}
	d.NewSecret, d.NewKeyName = secret, key.Name
	h.render(w, r, http.StatusOK, "keys", page{Nav: "keys", visit: v, Data: d})
}

// keyCreation serializes createKey.
var keyCreation sync.Mutex

// keySpec checks the key form against the catalog and the operator's caps.
func (h *Handler) keySpec(f keyForm) (billing.KeySpec, error) {
	spec := billing.KeySpec{Name: f.Name}
	if len(f.Name) > 200 {
		return spec, problem("The name is too long: 200 bytes at most.")
	}
	for _, m := range f.Models {
		if !slices.ContainsFunc(h.models, func(x Model) bool { return x.ID == m }) {
			return spec, problem("There is no model %q.", m)
		}
		if !slices.Contains(spec.Models, m) {
			spec.Models = append(spec.Models, m)
		}
	}
	var err error
	if spec.RPM, err = limitField("requests per minute", f.RPM, h.cfg.MaxRPM); err != nil {
		return spec, err
	}
	if spec.TPM, err = limitField("tokens per minute", f.TPM, h.cfg.MaxTPM); err != nil {
		return spec, err
	}
	return spec, nil
}

// limitField reads an optional per-key limit: empty is none, otherwise a
// whole number from 1 to max (and none may be set when max is zero).
func limitField(what, s string, max int64) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if max == 0 {
		return 0, problem("Keys made here use the gateway's %s limit.", what)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 || n > max {
		return 0, problem("The %s limit must be a whole number from 1 to %d.", what, max)
	}
	return n, nil
}

// revokeKey revokes one of the account's keys; another account's key is
// not found.
func (h *Handler) revokeKey(w http.ResponseWriter, r *http.Request, v *visit) {
	id := r.PathValue("id")
	key, err := h.store.Key(id)
	if errors.Is(err, billing.ErrNotFound) || err == nil && key.AccountID != v.user.AccountID {
		h.notFound(w, r)
		return
	}
	if err != nil {
		h.serverError(w, r, "reading a key", err)
		return
	}
	if _, err := h.keys.RevokeKey(id); err != nil {
		h.serverError(w, r, "revoking a key", err)
		return
	}
	h.logger.Info("dashboard key revoked", userField(v.user), keyField(id))
	http.Redirect(w, r, h.cfg.Base+"/keys?revoked="+id, http.StatusSeeOther)
}

// usagePage is how many ledger rows one page of the usage page shows.
const usagePage = 25

// chartDays is how many days the usage charts cover, today included.
const chartDays = 30

type usageData struct {
	Rows []billing.Entry
	// Older is the cursor of the next page (0: none); Paged says this is
	// not the first page.
	Older  uint64
	Paged  bool
	Tokens chart
	Cost   chart
	Days   []billing.DailyUsageRow
	Keys   map[string]string // key id -> name and last 4
}

func (h *Handler) usage(w http.ResponseWriter, r *http.Request, v *visit) {
	var before uint64
	if s := r.URL.Query().Get("before"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			h.render(w, r, http.StatusBadRequest, "error", page{visit: v, Data: "That page of the ledger does not exist."})
			return
		}
		before = n
	}
	rows, more, err := h.store.Ledger(v.user.AccountID, billing.LedgerQuery{Before: before, Limit: usagePage})
	if err != nil {
		h.serverError(w, r, "reading the ledger", err)
		return
	}
	d := usageData{Rows: rows, Paged: before != 0, Keys: map[string]string{}}
	if more && len(rows) > 0 {
		d.Older = rows[len(rows)-1].Seq
	}
	win := usageWindow(h.now())
	days, err := h.dailyUsage(v.user.AccountID, win)
	if err != nil {
		h.serverError(w, r, "summing daily usage", err)
		return
	}
	for _, u := range days {
		if !u.Day.Before(win.chart) {
			d.Days = append(d.Days, u)
		}
	}
	d.Tokens, d.Cost = charts(d.Days, win.chart, chartDays)
	keys, err := h.store.Keys(v.user.AccountID)
	if err != nil {
		h.serverError(w, r, "listing keys", err)
		return
	}
	for _, k := range keys {
		name := k.Name
		if name == "" {
			name = k.ID
		}
		d.Keys[k.ID] = name + " (…" + k.Last4 + ")"
	}
	h.render(w, r, http.StatusOK, "usage", page{Nav: "usage", visit: v, Data: d})
}

func (h *Handler) modelsPage(w http.ResponseWriter, r *http.Request, v *visit) {
	h.render(w, r, http.StatusOK, "models", page{Nav: "models", visit: v, Data: h.models})
}
