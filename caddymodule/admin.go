package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/arcaneapi/caddy-arcane/billing"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves accounts, keys, the ledger, and the dashboard's users and
// invites under /arcane/ on Caddy's admin endpoint (localhost-only by
// default). Amounts are decimal strings in US dollars. Errors are JSON, as
// everywhere on the admin endpoint: {"error":"…"}.
//
// It finds the arcane app of the running config on every request rather
// than keeping one from Provision: Caddy builds the admin endpoint of a new
// config before that config's apps, and keeps the new endpoint even when
// the rest of the config fails to load and the old one stays in service.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.arcane",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes.
func (h *adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/arcane/", Handler: caddy.AdminHandlerFunc(h.serve)}}
}

// maxAdminBody bounds request bodies on the admin endpoint.
const maxAdminBody = 1 << 20

func (adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	v, err := caddy.ActiveContext().AppIfConfigured("arcane")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return apiErr(http.StatusServiceUnavailable, "the arcane app is not configured (add the `arcane` global option)")
	}
	if err != nil {
		return apiErr(http.StatusServiceUnavailable, "the arcane app is not available: %v", err)
	}
	a := &adminRequest{app: v.(*App), now: time.Now}
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/arcane/"), "/"), "/")
	route := func(methods ...string) error {
		for _, m := range methods {
			if r.Method == m {
				return nil
			}
		}
		w.Header().Set("Allow", strings.Join(methods, ", "))
		return apiErr(http.StatusMethodNotAllowed, "method %s not allowed on %s", r.Method, r.URL.Path)
	}
	switch {
	case len(parts) == 1 && parts[0] == "accounts":
		if err := route(http.MethodGet, http.MethodPost); err != nil {
			return err
		}
		if r.Method == http.MethodPost {
			return a.createAccount(w, r)
		}
		return a.listAccounts(w)
	case len(parts) == 2 && parts[0] == "accounts":
		if err := route(http.MethodGet, http.MethodPatch); err != nil {
			return err
		}
		if r.Method == http.MethodPatch {
			return a.updateAccount(w, r, parts[1])
		}
		return a.showAccount(w, parts[1])
	case len(parts) == 3 && parts[0] == "accounts" && parts[2] == "credit":
		if err := route(http.MethodPost); err != nil {
			return err
		}
		return a.credit(w, r, parts[1])
	case len(parts) == 3 && parts[0] == "accounts" && parts[2] == "keys":
		if err := route(http.MethodGet, http.MethodPost); err != nil {
			return err
		}
		if r.Method == http.MethodPost {
			return a.createKey(w, r, parts[1])
		}
		return a.listKeys(w, parts[1])
	case len(parts) == 3 && parts[0] == "accounts" && parts[2] == "ledger":
		if err := route(http.MethodGet); err != nil {
			return err
		}
		return a.ledger(w, r, parts[1])
	case len(parts) == 2 && parts[0] == "keys":
		if err := route(http.MethodGet, http.MethodDelete); err != nil {
			return err
		}
		if r.Method == http.MethodDelete {
			return a.revokeKey(w, parts[1])
		}
		return a.showKey(w, parts[1])
	case len(parts) == 1 && parts[0] == "users":
		if err := route(http.MethodGet); err != nil {
			return err
		}
		return a.listUsers(w, r)
	case len(parts) == 2 && parts[0] == "users":
		if err := route(http.MethodGet, http.MethodPatch); err != nil {
			return err
		}
		if r.Method == http.MethodPatch {
			return a.updateUser(w, r, parts[1])
		}
		return a.showUser(w, parts[1])
	case len(parts) == 1 && parts[0] == "invites":
		if err := route(http.MethodGet, http.MethodPost); err != nil {
			return err
		}
		if r.Method == http.MethodPost {
			return a.createInvite(w, r)
		}
		return a.listInvites(w)
	case len(parts) == 2 && parts[0] == "invites":
		if err := route(http.MethodDelete); err != nil {
			return err
		}
		return a.revokeInvite(w, parts[1])
	case len(parts) == 1 && parts[0] == "usage":
		if err := route(http.MethodGet); err != nil {
			return err
		}
		return a.usage(w, r)
	case len(parts) == 1 && parts[0] == "audit":
		if err := route(http.MethodGet); err != nil {
			return err
		}
		return a.audit(w)
	case len(parts) == 1 && parts[0] == "upstreams":
		if err := route(http.MethodGet); err != nil {
			return err
		}
		return a.upstreams(w)
	case len(parts) >= 2 && parts[0] == "requests":
		if err := route(http.MethodGet); err != nil {
			return err
		}
		// The store accepts any request id, slashes included; the
		// gateway's own ids never have one.
		return a.request(w, strings.Join(parts[1:], "/"))
	}
	return apiErr(http.StatusNotFound, "no such arcane admin route: %s", r.URL.Path)
}

// adminRequest is one admin request's view of the running config.
type adminRequest struct {
	app *App
	now func() time.Time
}

// accountView is an account as the admin API shows it.
type accountView struct {
	billing.Account
	// Held is the sum of open holds on the balance.
	Held billing.Amount `json:"held"`
}

func (a *adminRequest) view(acct billing.Account) accountView {
	return accountView{Account: acct, Held: a.app.bank().Held(acct.ID)}
}

// keyView is a key as the admin API shows it: never the secret, except
// Secret in the one answer that creates the key.
type keyView struct {
	billing.Key
	State  billing.KeyState `json:"state"`
	Secret string           `json:"key,omitempty"`
}

func (a *adminRequest) keyView(k billing.Key) keyView {
	return keyView{Key: k, State: k.State(a.now())}
}

type list[T any] struct {
	Data []T `json:"data"`
}

func (a *adminRequest) createAccount(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Name    string          `json:"name"`
		Balance *billing.Amount `json:"balance"`
	}
	if err := decodeBody(r, &body); err != nil {
		return err
	}
	var balance billing.Amount
	if body.Balance != nil {
		balance = *body.Balance
	}
	acct, err := a.app.store().CreateAccount(body.Name, balance)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusCreated, a.view(acct))
}

func (a *adminRequest) listAccounts(w http.ResponseWriter) error {
	accts, err := a.app.store().Accounts()
	if err != nil {
		return storeErr(err)
	}
	out := list[accountView]{Data: make([]accountView, 0, len(accts))}
	for _, acct := range accts {
		out.Data = append(out.Data, a.view(acct))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *adminRequest) showAccount(w http.ResponseWriter, id string) error {
	acct, err := a.app.store().Account(id)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, a.view(acct))
}

func (a *adminRequest) updateAccount(w http.ResponseWriter, r *http.Request, id string) error {
	var body struct {
		State *billing.AccountState `json:"state"`
	}
	if err := decodeBody(r, &body); err != nil {
		return err
	}
	if body.State == nil {
		return apiErr(http.StatusBadRequest, "nothing to change: send {\"state\":\"active\"} or {\"state\":\"disabled\"}")
	}
	acct, err := a.app.keyring().SetAccountState(id, *body.State)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, a.view(acct))
}

func (a *adminRequest) credit(w http.ResponseWriter, r *http.Request, id string) error {
	var body struct {
		Amount *billing.Amount `json:"amount"`
		Note   string          `json:"note"`
	}
	if err := decodeBody(r, &body); err != nil {
		return err
	}
	if body.Amount == nil {
		return apiErr(http.StatusBadRequest, "amount is required, as a decimal string such as \"25.00\"")
	}
	acct, _, err := a.app.bank().Credit(id, *body.Amount, body.Note)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, a.view(acct))
}

func (a *adminRequest) createKey(w http.ResponseWriter, r *http.Request, accountID string) error {
	var body struct {
		Name      string     `json:"name"`
		Models    []string   `json:"models"`
		RPM       int64      `json:"rpm"`
		TPM       int64      `json:"tpm"`
		ExpiresAt *time.Time `json:"expires_at"`
	}
	if err := decodeBody(r, &body); err != nil {
		return err
	}
	key, secret, err := a.app.store().CreateKey(accountID, billing.KeySpec{
		Name: body.Name, Models: body.Models, RPM: body.RPM, TPM: body.TPM, ExpiresAt: body.ExpiresAt,
	})
	if err != nil {
		return storeErr(err)
	}
	v := a.keyView(key)
	v.Secret = secret
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, v)
}

func (a *adminRequest) listKeys(w http.ResponseWriter, accountID string) error {
	keys, err := a.app.store().Keys(accountID)
	if err != nil {
		return storeErr(err)
	}
	out := list[keyView]{Data: make([]keyView, 0, len(keys))}
	for _, k := range keys {
		out.Data = append(out.Data, a.keyView(k))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *adminRequest) showKey(w http.ResponseWriter, id string) error {
	key, err := a.app.store().Key(id)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, a.keyView(key))
}

func (a *adminRequest) revokeKey(w http.ResponseWriter, id string) error {
	key, err := a.app.keyring().RevokeKey(id)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, a.keyView(key))
}

// listUsers serves GET /arcane/users: the dashboard's users, oldest
// first; with ?account_id=acct_... only that account's (an unknown
// account is 404, so a mistyped id does not read as "no users"). A user
// record never holds its password hash.
func (a *adminRequest) listUsers(w http.ResponseWriter, r *http.Request) error {
	accountID := r.URL.Query().Get("account_id")
	if accountID != "" {
		if _, err := a.app.store().Account(accountID); err != nil {
			return storeErr(err)
		}
	}
	users, err := a.app.store().Users()
	if err != nil {
		return storeErr(err)
	}
	out := list[billing.User]{Data: make([]billing.User, 0, len(users))}
	for _, u := range users {
		if accountID == "" || u.AccountID == accountID {
			out.Data = append(out.Data, u)
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *adminRequest) showUser(w http.ResponseWriter, id string) error {
	user, err := a.app.store().User(id)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, user)
}

// updateUser serves PATCH /arcane/users/{id} with {"state":"disabled"} or
// {"state":"active"}. Disabling a user logs it out of the dashboard
// everywhere and stops it logging in; it does not disable the account or
// its API keys: PATCH /arcane/accounts/{id} does that.
func (a *adminRequest) updateUser(w http.ResponseWriter, r *http.Request, id string) error {
	var body struct {
		State *billing.UserState `json:"state"`
	}
	if err := decodeBody(r, &body); err != nil {
		return err
	}
	if body.State == nil {
		return apiErr(http.StatusBadRequest, "nothing to change: send {\"state\":\"active\"} or {\"state\":\"disabled\"}")
	}
	user, err := a.app.store().SetUserState(id, *body.State)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, user)
}

// inviteView is an invite as the admin API shows it: Code only in the one
// answer that creates it (it is stored hashed).
type inviteView struct {
	Code string `json:"code,omitempty"`
	billing.Invite
	State billing.InviteState `json:"state"`
}

func (a *adminRequest) inviteView(inv billing.Invite) inviteView {
	return inviteView{Invite: inv, State: inv.State(a.now())}
}

// createInvite serves POST /arcane/invites with {"note"?, "expires_at"?,
// "account_id"?}: a one-use code for signing up to the dashboard, shown
// once. With account_id the person who signs up manages that existing
// account instead of getting a new one.
func (a *adminRequest) createInvite(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Note      string     `json:"note"`
		ExpiresAt *time.Time `json:"expires_at"`
		AccountID string     `json:"account_id"`
	}
	if err := decodeBody(r, &body); err != nil {
		return err
	}
	inv, code, err := a.app.store().CreateInvite(billing.InviteSpec{
		Note: body.Note, ExpiresAt: body.ExpiresAt, AccountID: body.AccountID,
	})
	if err != nil {
		return storeErr(err)
	}
	v := a.inviteView(inv)
	v.Code = code
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, v)
}

// listInvites serves GET /arcane/invites: every invite, oldest first, with
// its state and never its code.
func (a *adminRequest) listInvites(w http.ResponseWriter) error {
	invites, err := a.app.store().Invites()
	if err != nil {
		return storeErr(err)
	}
	out := list[inviteView]{Data: make([]inviteView, 0, len(invites))}
	for _, inv := range invites {
		out.Data = append(out.Data, a.inviteView(inv))
	}
	return writeJSON(w, http.StatusOK, out)
}

// revokeInvite serves DELETE /arcane/invites/{id}: the invite's code stops
// working. Revoking a used invite is 400: disable its user instead.
func (a *adminRequest) revokeInvite(w http.ResponseWriter, id string) error {
	inv, err := a.app.store().RevokeInvite(id)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, a.inviteView(inv))
}

// ledgerPage is one page of an account's ledger, newest first. Pass
// NextBefore as ?before= (with the same filters) to get the next page.
type ledgerPage struct {
	Data       []billing.Entry `json:"data"`
	HasMore    bool            `json:"has_more"`
	NextBefore uint64          `json:"next_before,omitempty"`
}

// ledger serves GET /arcane/accounts/{id}/ledger. Query parameters: limit
// (1-1000, default 50), before (a row's seq: the page cursor), key (a key
// id), model (a public model ID), kind (credit or charge), since
// (inclusive) and until (exclusive), each an RFC 3339 time or a duration
// before now such as 24h or 7d.
func (a *adminRequest) ledger(w http.ResponseWriter, r *http.Request, accountID string) error {
	q := r.URL.Query()
	lq := billing.LedgerQuery{Limit: 50, KeyID: q.Get("key"), Model: q.Get("model")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return apiErr(http.StatusBadRequest, "limit %q: expected a whole number from 1 to 1000", s)
		}
		lq.Limit = n
	}
	if s := q.Get("before"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			return apiErr(http.StatusBadRequest, "before %q: expected a positive row sequence number", s)
		}
		lq.Before = n
	}
	if s := q.Get("kind"); s != "" {
		if lq.Kind = billing.EntryKind(s); !lq.Kind.Valid() {
			return apiErr(http.StatusBadRequest, "kind %q: expected %q or %q", s, billing.EntryCredit, billing.EntryCharge)
		}
	}
	var err error
	if lq.Since, lq.Until, err = a.period(q); err != nil {
		return err
	}
	rows, more, err := a.app.store().Ledger(accountID, lq)
	if err != nil {
		return storeErr(err)
	}
	page := ledgerPage{Data: rows, HasMore: more}
	if page.Data == nil {
		page.Data = []billing.Entry{}
	}
	if more {
		page.NextBefore = rows[len(rows)-1].Seq
	}
	return writeJSON(w, http.StatusOK, page)
}

// usageReport is the answer of GET /arcane/usage: what each account spent
// on each model in the period. Since and Until are null when the period is
// open at that end.
type usageReport struct {
	Data  []billing.UsageRow `json:"data"`
	Since *time.Time         `json:"since"`
	Until *time.Time         `json:"until"`
}

// usage serves GET /arcane/usage. Query parameters: account (one account
// id; default every account), since and until as for the ledger.
func (a *adminRequest) usage(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	since, until, err := a.period(q)
	if err != nil {
		return err
	}
	rows, err := a.app.store().Usage(billing.UsageQuery{AccountID: q.Get("account"), Since: since, Until: until})
	if err != nil {
		return storeErr(err)
	}
	out := usageReport{Data: rows}
	if out.Data == nil {
		out.Data = []billing.UsageRow{}
	}
	if !since.IsZero() {
		out.Since = &since
	}
	if !until.IsZero() {
		out.Until = &until
	}
	return writeJSON(w, http.StatusOK, out)
}

// audit serves GET /arcane/audit: 200 whatever it finds; the report's ok
// says whether the store is consistent.
func (a *adminRequest) audit(w http.ResponseWriter) error {
	report, err := a.app.store().Audit()
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, report)
}

// request serves GET /arcane/requests/{id}: the ledger row that settled a
// request.
func (a *adminRequest) request(w http.ResponseWriter, requestID string) error {
	e, err := a.app.store().Request(requestID)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, e)
}

// period reads the since and until query parameters.
func (a *adminRequest) period(q url.Values) (since, until time.Time, err error) {
	now := a.now()
	if since, err = parseTimeParam("since", q.Get("since"), now); err != nil {
		return
	}
	until, err = parseTimeParam("until", q.Get("until"), now)
	return
}

// parseTimeParam reads an RFC 3339 time, or a duration that far before now
// ("24h", "90m", "7d"). Empty is the zero time: no bound.
func parseTimeParam(name, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, ok := parseDuration(s); ok {
		return now.Add(-d), nil
	}
	return time.Time{}, apiErr(http.StatusBadRequest,
		"%s %q: expected an RFC 3339 time such as 2026-01-02T15:04:05Z or a positive duration before now such as 90m, 24h or 7d", name, s)
}

// parseDuration reads a positive Go duration ("90m", "24h") or a whole
// number of days ("7d").
func parseDuration(s string) (time.Duration, bool) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 || n > 100_000 {
			return 0, false
		}
		return time.Duration(n) * 24 * time.Hour, true
	}
	d, err := time.ParseDuration(s)
	return d, err == nil && d > 0
}

// decodeBody reads one JSON object into v, refusing unknown fields,
// trailing data and bodies over maxAdminBody.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return apiErr(http.StatusBadRequest, "request body is empty; expected a JSON object")
		}
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return apiErr(http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", maxAdminBody)
		}
		return apiErr(http.StatusBadRequest, "invalid request body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return apiErr(http.StatusBadRequest, "invalid request body: unexpected data after the JSON object")
	}
	return nil
}

// storeErr maps store errors to statuses: unknown ids 404, invalid input
// 400, anything else 500.
func storeErr(err error) error {
	switch {
	case errors.Is(err, billing.ErrNotFound):
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: err}
	case errors.Is(err, billing.ErrInvalid), errors.Is(err, billing.ErrAmountSyntax):
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
}

func apiErr(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Interface guards
var (
	_ caddy.AdminRouter = (*adminAPI)(nil)
)
