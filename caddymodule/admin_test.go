package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/spf13/cobra"
	bolt "go.etcd.io/bbolt"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// assertAdminError checks that an admin answer has the given status and
// is JSON with a non-empty "error" string.
func assertAdminError(t testing.TB, resp adminResponse, want int) {
	t.Helper()
	if resp.Status != want {
		t.Fatalf("status %d, want %d; body %s", resp.Status, want, resp.Body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var body map[string]any
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		t.Fatalf("error answer is not JSON: %v; body %s", err, resp.Body)
	}
	if msg, ok := body["error"].(string); !ok || msg == "" {
		t.Errorf("error answer has no \"error\" string: %s", resp.Body)
	}
}

// testEntry is a ledger row as the admin API shows it.
type testEntry struct {
	Seq              uint64    `json:"seq"`
	Time             time.Time `json:"time"`
	AccountID        string    `json:"account_id"`
	Kind             string    `json:"kind"`
	Amount           string    `json:"amount"`
	Balance          string    `json:"balance"`
	Note             string    `json:"note"`
	RequestID        string    `json:"request_id"`
	KeyID            string    `json:"key_id"`
	Model            string    `json:"model"`
	Deployment       string    `json:"deployment"`
	PromptTokens     int64     `json:"prompt_tokens"`
	CachedTokens     int64     `json:"cached_tokens"`
	CompletionTokens int64     `json:"completion_tokens"`
	Basis            string    `json:"basis"`
	Outcome          string    `json:"outcome"`
}

type testLedgerPage struct {
	Data       []testEntry `json:"data"`
	HasMore    bool        `json:"has_more"`
	NextBefore uint64      `json:"next_before"`
}

func TestAdminAccounts(t *testing.T) {
	startArcane(t)
	const unknown = "acct_0000000000000000"

	t.Run("creating an account starts it empty and active", func(t *testing.T) {
		before := time.Now().Add(-time.Second)
		var acct testAccount
		adminOK(t, http.MethodPost, "/arcane/accounts", `{"name":"a"}`, http.StatusCreated, &acct)
		if !strings.HasPrefix(acct.ID, "acct_") {
			t.Errorf("id %q lacks the acct_ prefix", acct.ID)
		}
		if acct.Name != "a" || acct.Balance != "0.000000" || acct.Held != "0.000000" || acct.State != "active" {
			t.Errorf("created account %+v", acct)
		}
		if acct.CreatedAt.Before(before) || acct.CreatedAt.After(time.Now().Add(time.Second)) {
			t.Errorf("created_at %v is not now", acct.CreatedAt)
		}
		var page testLedgerPage
		adminOK(t, http.MethodGet, "/arcane/accounts/"+acct.ID+"/ledger", nil, http.StatusOK, &page)
		if len(page.Data) != 0 || page.HasMore {
			t.Errorf("an empty account has ledger rows: %+v", page)
		}
	})

	t.Run("an opening balance is exact and written to the ledger", func(t *testing.T) {
		var acct testAccount
		adminOK(t, http.MethodPost, "/arcane/accounts", `{"name":"a","balance":"12.5"}`, http.StatusCreated, &acct)
		if acct.Balance != "12.500000" {
			t.Errorf("balance %q, want 12.500000", acct.Balance)
		}
		var page testLedgerPage
		adminOK(t, http.MethodGet, "/arcane/accounts/"+acct.ID+"/ledger", nil, http.StatusOK, &page)
		if len(page.Data) != 1 {
			t.Fatalf("ledger has %d rows, want 1: %+v", len(page.Data), page)
		}
		row := page.Data[0]
		if row.Kind != "credit" || row.Amount != "12.500000" || row.Balance != "12.500000" || row.AccountID != acct.ID {
			t.Errorf("opening row %+v", row)
		}
	})

	for _, tc := range []struct {
		name string
		body string
		want int
	}{
		{"an empty body is refused", "", http.StatusBadRequest},
		{"invalid JSON is refused", `{"name":`, http.StatusBadRequest},
		{"an unknown field is refused", `{"name":"a","colour":"red"}`, http.StatusBadRequest},
		{"a missing name is refused", `{"balance":"1"}`, http.StatusBadRequest},
		{"a balance as a JSON number is refused", `{"name":"a","balance":12.5}`, http.StatusBadRequest},
		{"a negative balance is refused", `{"name":"a","balance":"-1"}`, http.StatusBadRequest},
		{"a balance finer than a micro-dollar is refused", `{"name":"a","balance":"1.0000001"}`, http.StatusBadRequest},
		{"a balance in exponent form is refused", `{"name":"a","balance":"1e3"}`, http.StatusBadRequest},
		{"two JSON values are refused", `{"name":"a"}{"name":"b"}`, http.StatusBadRequest},
		{"a stray closing brace after the object is refused", `{"name":"a"}}`, http.StatusBadRequest},
		{"a stray closing bracket after the object is refused", `{"name":"a"}]`, http.StatusBadRequest},
		{"a body over 1 MiB is refused as too large", `{"name":"` + strings.Repeat("a", maxAdminBody) + `"}`, http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before []testAccount
			var list struct{ Data []testAccount }
			adminOK(t, http.MethodGet, "/arcane/accounts", nil, http.StatusOK, &list)
			before = list.Data

			assertAdminError(t, adminCall(t, http.MethodPost, "/arcane/accounts", tc.body), tc.want)

			adminOK(t, http.MethodGet, "/arcane/accounts", nil, http.StatusOK, &list)
			if len(list.Data) != len(before) {
				t.Errorf("a refused request created an account: %d accounts, had %d", len(list.Data), len(before))
			}
		})
	}

	t.Run("accounts are listed oldest first", func(t *testing.T) {
		var list struct {
			Data []testAccount `json:"data"`
		}
		adminOK(t, http.MethodGet, "/arcane/accounts", nil, http.StatusOK, &list)
		n := len(list.Data)
		third := createAccount(t, "third")
		fourth := createAccount(t, "fourth")
		adminOK(t, http.MethodGet, "/arcane/accounts", nil, http.StatusOK, &list)
		if len(list.Data) != n+2 {
			t.Fatalf("%d accounts listed, want %d", len(list.Data), n+2)
		}
		if list.Data[n].ID != third.ID || list.Data[n+1].ID != fourth.ID {
			t.Errorf("newest accounts listed as %s, %s; want %s, %s", list.Data[n].ID, list.Data[n+1].ID, third.ID, fourth.ID)
		}
		for i := 1; i < len(list.Data); i++ {
			if list.Data[i].CreatedAt.Before(list.Data[i-1].CreatedAt) {
				t.Errorf("account %d is older than account %d", i, i-1)
			}
		}
	})

	t.Run("an account is shown by id", func(t *testing.T) {
		acct := createAccount(t, "shown")
		var got testAccount
		adminOK(t, http.MethodGet, "/arcane/accounts/"+acct.ID, nil, http.StatusOK, &got)
		if got.ID != acct.ID || got.Name != "shown" || got.Balance != "0.000000" || got.Held != "0.000000" {
			t.Errorf("shown account %+v", got)
		}
	})
	t.Run("an unknown account is not found", func(t *testing.T) {
		assertAdminError(t, adminCall(t, http.MethodGet, "/arcane/accounts/"+unknown, nil), http.StatusNotFound)
	})

	t.Run("an account can be disabled and enabled", func(t *testing.T) {
		acct := createAccount(t, "toggled")
		var got testAccount
		adminOK(t, http.MethodPatch, "/arcane/accounts/"+acct.ID, `{"state":"disabled"}`, http.StatusOK, &got)
		if got.State != "disabled" {
			t.Errorf("state %q after disabling", got.State)
		}
		adminOK(t, http.MethodGet, "/arcane/accounts/"+acct.ID, nil, http.StatusOK, &got)
		if got.State != "disabled" {
			t.Errorf("state %q read back after disabling", got.State)
		}
		adminOK(t, http.MethodPatch, "/arcane/accounts/"+acct.ID, `{"state":"active"}`, http.StatusOK, &got)
		if got.State != "active" {
			t.Errorf("state %q after enabling", got.State)
		}
	})
	patchAcct := createAccount(t, "patched")
	for _, tc := range []struct {
		name string
		id   string
		body string
		want int
	}{
		{"an unknown state is refused", patchAcct.ID, `{"state":"bogus"}`, http.StatusBadRequest},
		{"a PATCH with nothing to change is refused", patchAcct.ID, `{}`, http.StatusBadRequest},
		{"a PATCH with an unknown field is refused", patchAcct.ID, `{"name":"x"}`, http.StatusBadRequest},
		{"a PATCH of an unknown account is not found", unknown, `{"state":"disabled"}`, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assertAdminError(t, adminCall(t, http.MethodPatch, "/arcane/accounts/"+tc.id, tc.body), tc.want)
		})
	}
	t.Run("refused PATCHes leave the account as it was", func(t *testing.T) {
		var got testAccount
		adminOK(t, http.MethodGet, "/arcane/accounts/"+patchAcct.ID, nil, http.StatusOK, &got)
		if got.State != "active" || got.Name != "patched" {
			t.Errorf("account after refused PATCHes: %+v", got)
		}
	})
}

func TestAdminCredit(t *testing.T) {
	startArcane(t)
	acct := createAccount(t, "acme")
	path := "/arcane/accounts/" + acct.ID + "/credit"

	t.Run("a credit adds to the balance and writes a ledger row", func(t *testing.T) {
		var got testAccount
		adminOK(t, http.MethodPost, path, `{"amount":"25.00","note":"invoice 42"}`, http.StatusOK, &got)
		if got.Balance != "25.000000" || got.ID != acct.ID {
			t.Errorf("after credit: %+v", got)
		}
		adminOK(t, http.MethodPost, path, `{"amount":"0.000001"}`, http.StatusOK, &got)
		if got.Balance != "25.000001" {
			t.Errorf("balance %q after a micro-dollar credit, want 25.000001", got.Balance)
		}
		var page testLedgerPage
		adminOK(t, http.MethodGet, "/arcane/accounts/"+acct.ID+"/ledger", nil, http.StatusOK, &page)
		if len(page.Data) != 2 {
			t.Fatalf("ledger has %d rows, want 2", len(page.Data))
		}
		if r := page.Data[1]; r.Amount != "25.000000" || r.Note != "invoice 42" || r.Balance != "25.000000" {
			t.Errorf("first credit row %+v", r)
		}
	})

	for _, tc := range []struct {
		name string
		path string
		body string
		want int
	}{
		{"a zero credit is refused", path, `{"amount":"0"}`, http.StatusBadRequest},
		{"a negative credit is refused", path, `{"amount":"-5"}`, http.StatusBadRequest},
		{"a credit without an amount is refused", path, `{"note":"x"}`, http.StatusBadRequest},
		{"a credit with a numeric amount is refused", path, `{"amount":5}`, http.StatusBadRequest},
		{"a credit with an empty body is refused", path, ``, http.StatusBadRequest},
		{"a credit to an unknown account is not found", "/arcane/accounts/acct_0000000000000000/credit", `{"amount":"1"}`, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assertAdminError(t, adminCall(t, http.MethodPost, tc.path, tc.body), tc.want)
		})
	}
	t.Run("refused credits leave the balance and ledger alone", func(t *testing.T) {
		var got testAccount
		adminOK(t, http.MethodGet, "/arcane/accounts/"+acct.ID, nil, http.StatusOK, &got)
		if got.Balance != "25.000001" {
			t.Errorf("balance %q, want 25.000001", got.Balance)
		}
		var page testLedgerPage
		adminOK(t, http.MethodGet, "/arcane/accounts/"+acct.ID+"/ledger", nil, http.StatusOK, &page)
		if len(page.Data) != 2 {
			t.Errorf("ledger has %d rows, want 2", len(page.Data))
		}
	})
}

func TestAdminKeys(t *testing.T) {
	startArcane(t)
	acct := createAccount(t, "acme")
	keysPath := "/arcane/accounts/" + acct.ID + "/keys"
	expires := time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second)

	var created testKey
	resp := adminOK(t, http.MethodPost, keysPath, map[string]any{
		"name": "ci", "models": []string{"gpt-5.2"}, "rpm": 60, "tpm": 100000, "expires_at": expires,
	}, http.StatusCreated, &created)

	t.Run("a new key shows its secret once, with its settings", func(t *testing.T) {
		if !strings.HasPrefix(created.Key, "ak_") || len(created.Key) != 52 {
			t.Errorf("secret %q is not ak_ and 52 characters", created.Key)
		}
		if created.Last4 != created.Key[len(created.Key)-4:] {
			t.Errorf("last4 %q is not the secret's last four characters", created.Last4)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q, want no-store", cc)
		}
		if !strings.HasPrefix(created.ID, "key_") || created.AccountID != acct.ID || created.Name != "ci" {
			t.Errorf("created key %+v", created)
		}
		if created.State != "active" || created.RevokedAt != nil {
			t.Errorf("a new key is %q (revoked_at %v)", created.State, created.RevokedAt)
		}
		if len(created.Models) != 1 || created.Models[0] != "gpt-5.2" || created.RPM != 60 || created.TPM != 100000 {
			t.Errorf("limits not echoed: models %v rpm %d tpm %d", created.Models, created.RPM, created.TPM)
		}
		if created.ExpiresAt == nil || !created.ExpiresAt.Equal(expires) {
			t.Errorf("expires_at %v, want %v", created.ExpiresAt, expires)
		}
	})

	t.Run("a key with no settings is created", func(t *testing.T) {
		k := createKey(t, acct.ID, nil)
		if k.State != "active" || k.ExpiresAt != nil || k.RPM != 0 || len(k.Models) != 0 {
			t.Errorf("bare key %+v", k)
		}
	})

	for _, tc := range []struct {
		name string
		path string
		body string
		want int
	}{
		{"a negative rpm is refused", keysPath, `{"rpm":-1}`, http.StatusBadRequest},
		{"a negative tpm is refused", keysPath, `{"tpm":-1}`, http.StatusBadRequest},
		{"an expiry in the past is refused", keysPath, `{"expires_at":"2001-01-01T00:00:00Z"}`, http.StatusBadRequest},
		{"an unknown field is refused", keysPath, `{"name":"x","scopes":["all"]}`, http.StatusBadRequest},
		{"a key for an unknown account is not found", "/arcane/accounts/acct_0000000000000000/keys", `{}`, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assertAdminError(t, adminCall(t, http.MethodPost, tc.path, tc.body), tc.want)
		})
	}

	t.Run("listing keys never shows a secret", func(t *testing.T) {
		resp := adminOK(t, http.MethodGet, keysPath, nil, http.StatusOK, nil)
		if strings.Contains(string(resp.Body), created.Key) {
			t.Errorf("the secret appears in the listing: %s", resp.Body)
		}
		var list struct {
			Data []map[string]any `json:"data"`
		}
		resp.decode(t, &list)
		if len(list.Data) != 2 {
			t.Fatalf("%d keys listed, want 2", len(list.Data))
		}
		for _, k := range list.Data {
			if _, ok := k["key"]; ok {
				t.Errorf("a listed key has a \"key\" field: %v", k)
			}
		}
		if list.Data[0]["id"] != created.ID || list.Data[0]["last4"] != created.Last4 || list.Data[0]["state"] != "active" {
			t.Errorf("first listed key %v, want %s", list.Data[0], created.ID)
		}
	})
	t.Run("listing keys of an unknown account is not found", func(t *testing.T) {
		assertAdminError(t, adminCall(t, http.MethodGet, "/arcane/accounts/acct_0000000000000000/keys", nil), http.StatusNotFound)
	})

	t.Run("a key is shown without its secret", func(t *testing.T) {
		resp := adminOK(t, http.MethodGet, "/arcane/keys/"+created.ID, nil, http.StatusOK, nil)
		if strings.Contains(string(resp.Body), created.Key) {
			t.Errorf("the secret appears: %s", resp.Body)
		}
		var got map[string]any
		resp.decode(t, &got)
		if _, ok := got["key"]; ok {
			t.Errorf("shown key has a \"key\" field: %v", got)
		}
		if got["id"] != created.ID || got["state"] != "active" {
			t.Errorf("shown key %v", got)
		}
	})

	t.Run("revoking a key is recorded once", func(t *testing.T) {
		var first, second, shown testKey
		adminOK(t, http.MethodDelete, "/arcane/keys/"+created.ID, nil, http.StatusOK, &first)
		if first.State != "revoked" || first.RevokedAt == nil {
			t.Fatalf("after revoking: state %q revoked_at %v", first.State, first.RevokedAt)
		}
		if first.Key != "" {
			t.Error("the revoke answer shows the secret")
		}
		adminOK(t, http.MethodDelete, "/arcane/keys/"+created.ID, nil, http.StatusOK, &second)
		if second.State != "revoked" || second.RevokedAt == nil || !second.RevokedAt.Equal(*first.RevokedAt) {
			t.Errorf("revoking again changed revoked_at from %v to %v", first.RevokedAt, second.RevokedAt)
		}
		adminOK(t, http.MethodGet, "/arcane/keys/"+created.ID, nil, http.StatusOK, &shown)
		if shown.State != "revoked" || shown.RevokedAt == nil || !shown.RevokedAt.Equal(*first.RevokedAt) {
			t.Errorf("shown after revoking: state %q revoked_at %v", shown.State, shown.RevokedAt)
		}
	})
	t.Run("an unknown key is not found", func(t *testing.T) {
		assertAdminError(t, adminCall(t, http.MethodGet, "/arcane/keys/key_0000000000000000", nil), http.StatusNotFound)
		assertAdminError(t, adminCall(t, http.MethodDelete, "/arcane/keys/key_0000000000000000", nil), http.StatusNotFound)
	})
}

func TestAdminLedger(t *testing.T) {
	startArcane(t)
	acct := createAccount(t, "acme")
	for i := 1; i <= 5; i++ {
		adminOK(t, http.MethodPost, "/arcane/accounts/"+acct.ID+"/credit",
			map[string]string{"amount": fmt.Sprintf("%d", i), "note": fmt.Sprintf("credit %d", i)}, http.StatusOK, nil)
	}
	ledger := "/arcane/accounts/" + acct.ID + "/ledger"

	t.Run("the whole ledger is newest first", func(t *testing.T) {
		var page testLedgerPage
		adminOK(t, http.MethodGet, ledger, nil, http.StatusOK, &page)
		if len(page.Data) != 5 || page.HasMore || page.NextBefore != 0 {
			t.Fatalf("page %+v, want 5 rows and no more", page)
		}
		for i, row := range page.Data {
			n := 5 - i
			if row.Note != fmt.Sprintf("credit %d", n) || row.Amount != fmt.Sprintf("%d.000000", n) {
				t.Errorf("row %d is %+v, want credit %d", i, row, n)
			}
		}
		if page.Data[0].Balance != "15.000000" {
			t.Errorf("newest row's balance %q, want 15.000000", page.Data[0].Balance)
		}
	})

	t.Run("pages of two walk the ledger back to the first row", func(t *testing.T) {
		var notes []string
		query := "?limit=2"
		for pages := 0; ; pages++ {
			if pages == 5 {
				t.Fatalf("pagination does not end; notes so far %v", notes)
			}
			var page testLedgerPage
			adminOK(t, http.MethodGet, ledger+query, nil, http.StatusOK, &page)
			if len(page.Data) > 2 {
				t.Fatalf("page of %d rows with limit 2", len(page.Data))
			}
			for _, row := range page.Data {
				notes = append(notes, row.Note)
			}
			if !page.HasMore {
				if page.NextBefore != 0 {
					t.Errorf("last page has next_before %d", page.NextBefore)
				}
				break
			}
			if page.NextBefore != page.Data[len(page.Data)-1].Seq {
				t.Errorf("next_before %d, want the last row's seq %d", page.NextBefore, page.Data[len(page.Data)-1].Seq)
			}
			query = fmt.Sprintf("?limit=2&before=%d", page.NextBefore)
		}
		want := "credit 5,credit 4,credit 3,credit 2,credit 1"
		if got := strings.Join(notes, ","); got != want {
			t.Errorf("paged through %s, want %s", got, want)
		}
	})

	t.Run("a page that ends exactly at the first row has no more", func(t *testing.T) {
		var page testLedgerPage
		adminOK(t, http.MethodGet, ledger+"?limit=2&before=3", nil, http.StatusOK, &page)
		if len(page.Data) != 2 || page.HasMore || page.Data[1].Seq != 1 {
			t.Errorf("page %+v, want rows 2 and 1 and no more", page)
		}
	})

	for _, tc := range []struct {
		name, query string
	}{
		{"a zero limit is refused", "?limit=0"},
		{"a limit over 1000 is refused", "?limit=1001"},
		{"a limit that is not a number is refused", "?limit=x"},
		{"a zero cursor is refused", "?before=0"},
		{"a cursor that is not a number is refused", "?before=x"},
		{"a negative cursor is refused", "?before=-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assertAdminError(t, adminCall(t, http.MethodGet, ledger+tc.query, nil), http.StatusBadRequest)
		})
	}
	t.Run("a limit of 1000 is allowed", func(t *testing.T) {
		adminOK(t, http.MethodGet, ledger+"?limit=1000", nil, http.StatusOK, nil)
	})
	t.Run("the ledger of an unknown account is not found", func(t *testing.T) {
		assertAdminError(t, adminCall(t, http.MethodGet, "/arcane/accounts/acct_0000000000000000/ledger", nil), http.StatusNotFound)
	})
}

func TestAdminRoutingErrors(t *testing.T) {
	startArcane(t)
	acct := createAccount(t, "acme")
	key := createKey(t, acct.ID, nil)

	for _, tc := range []struct {
		method, path, allow string
	}{
		{http.MethodDelete, "/arcane/accounts", "GET, POST"},
		{http.MethodPut, "/arcane/accounts", "GET, POST"},
		{http.MethodPost, "/arcane/accounts/" + acct.ID, "GET, PATCH"},
		{http.MethodDelete, "/arcane/accounts/" + acct.ID, "GET, PATCH"},
		{http.MethodPut, "/arcane/accounts/" + acct.ID + "/credit", "POST"},
		{http.MethodGet, "/arcane/accounts/" + acct.ID + "/credit", "POST"},
		{http.MethodDelete, "/arcane/accounts/" + acct.ID + "/keys", "GET, POST"},
		{http.MethodPost, "/arcane/accounts/" + acct.ID + "/ledger", "GET"},
		{http.MethodPost, "/arcane/keys/" + key.ID, "GET, DELETE"},
		{http.MethodPatch, "/arcane/keys/" + key.ID, "GET, DELETE"},
		{http.MethodPost, "/arcane/usage", "GET"},
		{http.MethodPost, "/arcane/audit", "GET"},
		{http.MethodDelete, "/arcane/requests/req_x", "GET"},
		{http.MethodPost, "/arcane/users", "GET"},
		{http.MethodDelete, "/arcane/users/user_0000000000000000", "GET, PATCH"},
		{http.MethodPut, "/arcane/users/user_0000000000000000", "GET, PATCH"},
		{http.MethodPut, "/arcane/invites", "GET, POST"},
		{http.MethodGet, "/arcane/invites/invite_0000000000000000", "DELETE"},
		{http.MethodPatch, "/arcane/invites/invite_0000000000000000", "DELETE"},
	} {
		t.Run(fmt.Sprintf("%s %s is not allowed", tc.method, strings.Replace(tc.path, acct.ID, "{id}", 1)), func(t *testing.T) {
			resp := adminCall(t, tc.method, tc.path, nil)
			assertAdminError(t, resp, http.StatusMethodNotAllowed)
			if got := resp.Header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
		})
	}
	t.Run("a wrong method changes nothing", func(t *testing.T) {
		var got testKey
		adminOK(t, http.MethodGet, "/arcane/keys/"+key.ID, nil, http.StatusOK, &got)
		if got.State != "active" {
			t.Errorf("key is %q after refused requests", got.State)
		}
	})

	for _, path := range []string{"/arcane/nope", "/arcane/", "/arcane/accounts/" + acct.ID + "/nope", "/arcane/keys", "/arcane/keys/" + key.ID + "/x",
		"/arcane/requests", "/arcane/usage/x", "/arcane/audit/x", "/arcane/users/user_0000000000000000/x", "/arcane/invites/invite_0000000000000000/x"} {
		t.Run("unknown route "+path+" is not found", func(t *testing.T) {
			assertAdminError(t, adminCall(t, http.MethodGet, path, nil), http.StatusNotFound)
		})
	}
}

func TestAdminWithoutArcaneApp(t *testing.T) {
	tester := caddytest.NewTester(t)
	tester.InitServer(plainCaddyfile, "caddyfile")
	tester.AssertGetResponse(siteURL+"/", http.StatusOK, "plain")

	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/arcane/accounts"},
		{http.MethodPost, "/arcane/accounts"},
		{http.MethodGet, "/arcane/keys/key_0000000000000000"},
	} {
		t.Run(tc.method+" "+tc.path+" is unavailable", func(t *testing.T) {
			assertAdminError(t, adminCall(t, tc.method, tc.path, nil), http.StatusServiceUnavailable)
		})
	}
}

// settleCharges settles charges straight into the running server's store,
// as arcane_balance does when a request ends.
func settleCharges(t testing.TB, path string, charges ...billing.Charge) {
	t.Helper()
	db := pooledDatabase(path)
	if db == nil {
		t.Fatalf("no open database at %s", path)
	}
	for _, c := range charges {
		if _, err := db.store.Settle(c); err != nil {
			t.Fatalf("Settle(%s): %v", c.RequestID, err)
		}
	}
}

// runCLI runs `caddy arcane args...` against the test server's admin
// endpoint and returns what it printed and its error (an error makes caddy
// exit with status 1).
func runCLI(t testing.TB, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := &cobra.Command{Use: "arcane", SilenceUsage: true, SilenceErrors: true}
	(&cli{out: &out}).register(cmd)
	cmd.SetArgs(append(args, "--address", strings.TrimPrefix(adminURL, "http://")))
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	err := cmd.Execute()
	return out.String(), err
}

// ledgerEnv is a running arcane whose account acct has this ledger, oldest
// first: the opening credit of 10.00, charges r1 (key_a, m1), r2 (key_b,
// m1), r3 (key_a, m2), a credit "top-up", r4 (key_b, m2), r5 (key_a, m1).
// Account other was charged o1 (key_o, m1) before all of them.
type ledgerEnv struct {
	tester      *caddytest.Tester
	path        string
	acct, other testAccount
	// rows is acct's ledger newest first; byLabel finds a row by request
	// id or note.
	rows    []testEntry
	byLabel map[string]testEntry
}

func label(e testEntry) string {
	if e.RequestID != "" {
		return e.RequestID
	}
	return e.Note
}

func startLedger(t *testing.T) *ledgerEnv {
	t.Helper()
	tester, path := startArcane(t)
	env := &ledgerEnv{tester: tester, path: path}
	adminOK(t, http.MethodPost, "/arcane/accounts", `{"name":"other","balance":"2"}`, http.StatusCreated, &env.other)
	settleCharges(t, path, billing.Charge{RequestID: "o1", AccountID: env.other.ID, KeyID: "key_o", Model: "m1",
		Usage: billing.Usage{PromptTokens: 7, CompletionTokens: 7}, Cost: billing.Dollar / 2})
	adminOK(t, http.MethodPost, "/arcane/accounts", `{"name":"acme","balance":"10"}`, http.StatusCreated, &env.acct)
	charge := func(rid, key, model string, n int64) billing.Charge {
		return billing.Charge{RequestID: rid, AccountID: env.acct.ID, KeyID: key, Model: model, Deployment: "dep-" + model,
			Usage: billing.Usage{PromptTokens: 100 * n, CachedTokens: 50 * (n % 2), CacheWriteTokens: 30 * (n / 3), CompletionTokens: 10 * n},
			Basis: "upstream", Outcome: "ok", Cost: billing.Amount(n) * billing.Dollar / 100}
	}
	settleCharges(t, path, charge("r1", "key_a", "m1", 1), charge("r2", "key_b", "m1", 2), charge("r3", "key_a", "m2", 3))
	adminOK(t, http.MethodPost, "/arcane/accounts/"+env.acct.ID+"/credit", `{"amount":"5","note":"top-up"}`, http.StatusOK, nil)
	settleCharges(t, path, charge("r4", "key_b", "m2", 4), charge("r5", "key_a", "m1", 5))

	var page testLedgerPage
	adminOK(t, http.MethodGet, "/arcane/accounts/"+env.acct.ID+"/ledger?limit=1000", nil, http.StatusOK, &page)
	env.rows = page.Data
	env.byLabel = make(map[string]testEntry)
	var labels []string
	for _, e := range env.rows {
		env.byLabel[label(e)] = e
		labels = append(labels, label(e))
	}
	if got := strings.Join(labels, " "); got != "r5 r4 top-up r3 r2 r1 opening balance" {
		t.Fatalf("fixture ledger is %q", got)
	}
	return env
}

// at returns the RFC 3339 time of the row labelled l.
func (env *ledgerEnv) at(l string) string { return env.byLabel[l].Time.Format(time.RFC3339Nano) }

// ledgerLabels returns the labels of every row a ledger query returns,
// following next_before through the pages.
func (env *ledgerEnv) ledgerLabels(t *testing.T, query url.Values) []string {
	t.Helper()
	var labels []string
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatalf("pagination of %s does not end", query.Encode())
		}
		var page testLedgerPage
		adminOK(t, http.MethodGet, "/arcane/accounts/"+env.acct.ID+"/ledger?"+query.Encode(), nil, http.StatusOK, &page)
		for _, e := range page.Data {
			if e.AccountID != env.acct.ID {
				t.Fatalf("row %d of account %s in %s's ledger", e.Seq, e.AccountID, env.acct.ID)
			}
			labels = append(labels, label(e))
		}
		if !page.HasMore {
			return labels
		}
		query.Set("before", fmt.Sprint(page.NextBefore))
	}
}

func TestAdminLedgerFilters(t *testing.T) {
	env := startLedger(t)
	q := func(kv ...string) url.Values {
		v := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	everything := "r5 r4 top-up r3 r2 r1 opening balance"
	for _, tc := range []struct {
		name  string
		query url.Values
		want  string
	}{
		{"kind=charge keeps only charges", q("kind", "charge"), "r5 r4 r3 r2 r1"},
		{"kind=credit keeps only credits", q("kind", "credit"), "top-up opening balance"},
		{"key keeps only that key's charges", q("key", "key_a"), "r5 r3 r1"},
		{"model keeps only that model's charges", q("model", "m2"), "r4 r3"},
		{"key and model combine", q("key", "key_b", "model", "m2"), "r4"},
		{"another account's key matches nothing here", q("key", "key_o"), ""},
		{"since is an inclusive RFC 3339 time", q("since", env.at("r3")), "r5 r4 top-up r3"},
		{"until is an exclusive RFC 3339 time", q("until", env.at("r3")), "r2 r1 opening balance"},
		{"since, until and kind combine", q("since", env.at("r2"), "until", env.at("r4"), "kind", "charge"), "r3 r2"},
		{"since as a duration counts back from now", q("since", "1h"), everything},
		{"since in days counts back from now", q("since", "7d"), everything},
		{"until as a duration counts back from now", q("until", "1h"), ""},
		{"filters page with limit and before", q("kind", "charge", "limit", "2"), "r5 r4 r3 r2 r1"},
		{"filters page one row at a time", q("key", "key_a", "since", env.at("r2"), "limit", "1"), "r5 r3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(env.ledgerLabels(t, tc.query), " "); got != tc.want {
				t.Errorf("ledger?%s = %q, want %q", tc.query.Encode(), got, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		name, query, mention string
	}{
		{"an unknown kind is refused", "kind=refund", "kind"},
		{"a kind in capitals is refused", "kind=Charge", "kind"},
		{"a since that is neither a time nor a duration is refused", "since=yesterday", "since"},
		{"a negative duration is refused", "since=-1h", "since"},
		{"a zero duration is refused", "until=0s", "until"},
		{"fractional days are refused", "since=1.5d", "since"},
		{"an impossible date is refused", "since=2026-13-01T00:00:00Z", "since"},
		{"a date without a zone is refused", "until=2026-01-01T00:00:00", "until"},
		{"until before since is refused", "since=" + url.QueryEscape(env.at("r4")) + "&until=" + url.QueryEscape(env.at("r2")), "until"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := adminCall(t, http.MethodGet, "/arcane/accounts/"+env.acct.ID+"/ledger?"+tc.query, nil)
			assertAdminError(t, resp, http.StatusBadRequest)
			if !strings.Contains(string(resp.Body), tc.mention) {
				t.Errorf("error %s does not mention %q", resp.Body, tc.mention)
			}
		})
	}
	t.Run("a filtered ledger of an unknown account is not found", func(t *testing.T) {
		assertAdminError(t, adminCall(t, http.MethodGet, "/arcane/accounts/acct_0000000000000000/ledger?kind=charge", nil), http.StatusNotFound)
	})

	t.Run("the CLI filters the ledger", func(t *testing.T) {
		out, err := runCLI(t, "ledger", env.acct.ID, "--kind", "charge", "--model", "m1", "--key", "key_a")
		if err != nil {
			t.Fatalf("caddy arcane ledger: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "SEQ") {
			t.Fatalf("want a header and two rows:\n%s", out)
		}
		for i, want := range []string{"r5", "r1"} {
			f := strings.Fields(lines[i+1])
			if f[0] != fmt.Sprint(env.byLabel[want].Seq) || !slices.Contains(f, want) || !slices.Contains(f, "m1") || !slices.Contains(f, "key_a") {
				t.Errorf("row %d is %q, want %s", i, lines[i+1], want)
			}
		}
		if !strings.Contains(lines[2], "100 in (50 cached), 10 out") {
			t.Errorf("r1's row %q does not show its tokens", lines[2])
		}
	})
	t.Run("the CLI passes since and until and pages with --before", func(t *testing.T) {
		out, err := runCLI(t, "ledger", env.acct.ID, "--since", env.at("r2"), "--until", env.at("r5"), "--limit", "2")
		if err != nil {
			t.Fatalf("caddy arcane ledger: %v\n%s", err, out)
		}
		wantMore := fmt.Sprintf("more rows: --before %d", env.byLabel["top-up"].Seq)
		if !strings.Contains(out, "r4") || !strings.Contains(out, "top-up") || strings.Contains(out, "r5") || !strings.Contains(out, wantMore) {
			t.Errorf("want r4 and top-up and %q:\n%s", wantMore, out)
		}
	})
	t.Run("the CLI reports a bad time", func(t *testing.T) {
		out, err := runCLI(t, "ledger", env.acct.ID, "--since", "yesterday")
		if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "since") {
			t.Errorf("err = %v, want a 400 about since; printed %q", err, out)
		}
	})
}

type testUsageReport struct {
	Data []struct {
		AccountID        string `json:"account_id"`
		Model            string `json:"model"`
		Requests         int64  `json:"requests"`
		PromptTokens     int64  `json:"prompt_tokens"`
		CachedTokens     int64  `json:"cached_tokens"`
		CacheWriteTokens int64  `json:"cache_write_tokens"`
		CompletionTokens int64  `json:"completion_tokens"`
		Cost             string `json:"cost"`
	} `json:"data"`
	Since *time.Time `json:"since"`
	Until *time.Time `json:"until"`
}

// rows formats a usage report's rows as "account model requests prompt
// cached cache_write completion cost" lines.
func (r testUsageReport) rows() []string {
	var out []string
	for _, u := range r.Data {
		out = append(out, fmt.Sprintf("%s %s %d %d %d %d %d %s", u.AccountID, u.Model, u.Requests, u.PromptTokens, u.CachedTokens, u.CacheWriteTokens, u.CompletionTokens, u.Cost))
	}
	return out
}

func TestAdminUsage(t *testing.T) {
	env := startLedger(t)
	acct, other := env.acct.ID, env.other.ID
	// r1, r2 and r5 are m1: prompt 100+200+500, cached 50+0+50, cache
	// writes 0+0+30, completion 10+20+50, cost 0.01+0.02+0.05; r3 and r4
	// are m2 (cache writes 30+30).
	acctM1 := acct + " m1 3 800 100 30 80 0.080000"
	acctM2 := acct + " m2 2 700 50 60 70 0.070000"
	otherM1 := other + " m1 1 7 0 0 7 0.500000"
	sorted := func(rows ...string) []string { slices.Sort(rows); return rows }

	for _, tc := range []struct {
		name, query string
		want        []string
	}{
		{"every account's charges, by account then model", "", sorted(acctM1, acctM2, otherM1)},
		{"one account", "?account=" + other, []string{otherM1}},
		{"since leaves out older charges", "?since=" + url.QueryEscape(env.at("r3")), []string{acct + " m1 1 500 50 30 50 0.050000", acctM2}},
		{"until leaves out newer charges", "?account=" + acct + "&until=" + url.QueryEscape(env.at("r3")), []string{acct + " m1 2 300 50 0 30 0.030000"}},
		{"a period as durations", "?since=1h", sorted(acctM1, acctM2, otherM1)},
		{"a period without charges is empty", "?until=1h", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r testUsageReport
			resp := adminOK(t, http.MethodGet, "/arcane/usage"+tc.query, nil, http.StatusOK, &r)
			if got := r.rows(); !slices.Equal(got, tc.want) {
				t.Errorf("usage%s =\n%s\nwant\n%s", tc.query, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if !strings.Contains(string(resp.Body), `"data": [`) {
				t.Errorf("data is not a list: %s", resp.Body)
			}
		})
	}
	t.Run("the answer states the period", func(t *testing.T) {
		var r testUsageReport
		since := env.byLabel["r2"].Time
		adminOK(t, http.MethodGet, "/arcane/usage?since="+url.QueryEscape(env.at("r2")), nil, http.StatusOK, &r)
		if r.Since == nil || !r.Since.Equal(since) || r.Until != nil {
			t.Errorf("since %v until %v, want %v and null", r.Since, r.Until, since)
		}
		before := time.Now()
		adminOK(t, http.MethodGet, "/arcane/usage?until=24h", nil, http.StatusOK, &r)
		if r.Since != nil || r.Until == nil || r.Until.After(before.Add(-24*time.Hour+time.Minute)) || r.Until.Before(before.Add(-24*time.Hour-time.Minute)) {
			t.Errorf("since %v until %v, want null and 24h ago", r.Since, r.Until)
		}
	})
	for _, tc := range []struct {
		name, query string
		want        int
	}{
		{"an unknown account is not found", "?account=acct_0000000000000000", http.StatusNotFound},
		{"a bad since is refused", "?since=last-week", http.StatusBadRequest},
		{"a bad until is refused", "?until=-2h", http.StatusBadRequest},
		{"until before since is refused", "?since=1h&until=2h", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assertAdminError(t, adminCall(t, http.MethodGet, "/arcane/usage"+tc.query, nil), tc.want)
		})
	}

	t.Run("the CLI prints a table with a total", func(t *testing.T) {
		out, err := runCLI(t, "usage")
		if err != nil {
			t.Fatalf("caddy arcane usage: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 5 {
			t.Fatalf("want a header, three rows and a total:\n%s", out)
		}
		if got := strings.Join(strings.Fields(lines[0]), " "); got != "ACCOUNT MODEL REQUESTS PROMPT CACHED CACHE_WRITE COMPLETION COST" {
			t.Errorf("header %q", got)
		}
		var rows []string
		for _, l := range lines[1:4] {
			rows = append(rows, strings.Join(strings.Fields(l), " "))
		}
		if want := sorted(acctM1, acctM2, otherM1); !slices.Equal(rows, want) {
			t.Errorf("rows\n%s\nwant\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
		}
		if got := strings.Join(strings.Fields(lines[4]), " "); got != "TOTAL 6 1507 150 90 157 0.650000" {
			t.Errorf("total line %q, want TOTAL 6 1507 150 90 157 0.650000", got)
		}
	})
	t.Run("the CLI passes --account, --since and --until", func(t *testing.T) {
		out, err := runCLI(t, "usage", "--account", acct, "--since", env.at("r2"), "--until", env.at("r5"))
		if err != nil {
			t.Fatalf("caddy arcane usage: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 || strings.Join(strings.Fields(lines[3]), " ") != "TOTAL 3 900 50 60 90 0.090000" {
			t.Errorf("want r2 (m1) and r3, r4 (m2):\n%s", out)
		}
	})
	t.Run("the CLI prints the raw answer with --json", func(t *testing.T) {
		out, err := runCLI(t, "usage", "--json", "--account", other)
		if err != nil {
			t.Fatalf("caddy arcane usage --json: %v\n%s", err, out)
		}
		var r testUsageReport
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("--json output is not JSON: %v\n%s", err, out)
		}
		if got := r.rows(); !slices.Equal(got, []string{otherM1}) {
			t.Errorf("rows %v", got)
		}
	})
	t.Run("the CLI reports an unknown account", func(t *testing.T) {
		if out, err := runCLI(t, "usage", "--account", "acct_0000000000000000"); err == nil || !strings.Contains(err.Error(), "404") {
			t.Errorf("err = %v, want a 404; printed %q", err, out)
		}
	})
}

func TestAdminRequest(t *testing.T) {
	env := startLedger(t)
	want := env.byLabel["r4"]

	t.Run("a settled request shows the row that settled it", func(t *testing.T) {
		var got testEntry
		adminOK(t, http.MethodGet, "/arcane/requests/r4", nil, http.StatusOK, &got)
		if got != want {
			t.Errorf("request r4 = %+v, want %+v", got, want)
		}
		if got.Kind != "charge" || got.Amount != "-0.040000" || got.Model != "m2" || got.KeyID != "key_b" ||
			got.PromptTokens != 400 || got.CompletionTokens != 40 || got.Deployment != "dep-m2" || got.Basis != "upstream" || got.Outcome != "ok" {
			t.Errorf("request r4 = %+v", got)
		}
	})
	t.Run("a request id with a slash is found when escaped", func(t *testing.T) {
		settleCharges(t, env.path, billing.Charge{RequestID: "batch/7", AccountID: env.acct.ID, Model: "m1", Cost: 1})
		var got testEntry
		adminOK(t, http.MethodGet, "/arcane/requests/"+url.PathEscape("batch/7"), nil, http.StatusOK, &got)
		if got.RequestID != "batch/7" || got.Amount != "-0.000001" {
			t.Errorf("request batch/7 = %+v", got)
		}
	})
	t.Run("an unknown request is not found", func(t *testing.T) {
		assertAdminError(t, adminCall(t, http.MethodGet, "/arcane/requests/req_unknown", nil), http.StatusNotFound)
	})
	t.Run("the CLI prints the row a field a line", func(t *testing.T) {
		out, err := runCLI(t, "request", "r4")
		if err != nil {
			t.Fatalf("caddy arcane request: %v\n%s", err, out)
		}
		fields := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			name, value, _ := strings.Cut(l, " ")
			fields[name] = strings.TrimSpace(value)
		}
		for name, value := range map[string]string{
			"request": "r4", "account": env.acct.ID, "seq": fmt.Sprint(want.Seq), "kind": "charge", "amount": "-0.040000",
			"model": "m2", "key": "key_b", "tokens": "400 in (0 cached, 30 written), 40 out", "deployment": "dep-m2", "outcome": "ok",
		} {
			if fields[name] != value {
				t.Errorf("%s is %q, want %q:\n%s", name, fields[name], value, out)
			}
		}
	})
	t.Run("the CLI reports an unknown request", func(t *testing.T) {
		if out, err := runCLI(t, "request", "req_unknown"); err == nil || !strings.Contains(err.Error(), "404") {
			t.Errorf("err = %v, want a 404; printed %q", err, out)
		}
	})
}

type testAuditReport struct {
	Accounts    int64 `json:"accounts"`
	Rows        int64 `json:"rows"`
	Charges     int64 `json:"charges"`
	Differences []struct {
		AccountID string  `json:"account_id"`
		Seq       uint64  `json:"seq"`
		RequestID string  `json:"request_id"`
		Problem   string  `json:"problem"`
		Stored    *string `json:"stored"`
		Replayed  *string `json:"replayed"`
	} `json:"differences"`
	OK bool `json:"ok"`
}

func TestAdminAudit(t *testing.T) {
	env := startLedger(t)

	t.Run("a consistent store audits OK", func(t *testing.T) {
		var r testAuditReport
		resp := adminOK(t, http.MethodGet, "/arcane/audit", nil, http.StatusOK, &r)
		// acme: 7 rows, 5 charges; other: opening credit and o1.
		if !r.OK || r.Accounts != 2 || r.Rows != 9 || r.Charges != 6 || len(r.Differences) != 0 {
			t.Errorf("audit %s", resp.Body)
		}
		if !strings.Contains(string(resp.Body), `"differences": []`) {
			t.Errorf("differences is not an empty list: %s", resp.Body)
		}
	})
	t.Run("the CLI says a consistent store is consistent and succeeds", func(t *testing.T) {
		out, err := runCLI(t, "audit")
		if err != nil || out != "consistent: 2 accounts, 9 rows, 6 charges\n" {
			t.Errorf("caddy arcane audit = %q, %v", out, err)
		}
	})

	// Damage the file while no server holds it: move the server to
	// another database, edit this one as a bug or a bad restore would,
	// and move the server back. Only billing writes bbolt in the gateway;
	// this test reaches into the file to make the damage real.
	env.tester.InitServer(testCaddyfile(filepath.Join(t.TempDir(), "elsewhere.db"), "", ""), "caddyfile")
	db, err := bolt.Open(env.path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("opening the released database: %v", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		accounts := tx.Bucket([]byte("accounts"))
		var acct map[string]any
		if err := json.Unmarshal(accounts.Get([]byte(env.acct.ID)), &acct); err != nil {
			return err
		}
		acct["balance"] = "99.000000"
		v, err := json.Marshal(acct)
		if err != nil {
			return err
		}
		if err := accounts.Put([]byte(env.acct.ID), v); err != nil {
			return err
		}
		return tx.Bucket([]byte("requests")).Delete([]byte("r2"))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("damaging the database: %v", err)
	}
	env.tester.InitServer(testCaddyfile(env.path, "", ""), "caddyfile")

	t.Run("a damaged store audits with 200 and every difference", func(t *testing.T) {
		var r testAuditReport
		resp := adminOK(t, http.MethodGet, "/arcane/audit", nil, http.StatusOK, &r)
		if r.OK || len(r.Differences) != 2 {
			t.Fatalf("audit %s, want two differences", resp.Body)
		}
		var balance, index bool
		for _, d := range r.Differences {
			switch {
			case d.AccountID == env.acct.ID && d.Seq == 0 && d.Stored != nil && *d.Stored == "99.000000" && d.Replayed != nil && *d.Replayed == "14.850000":
				balance = true
			case d.AccountID == env.acct.ID && d.Seq == env.byLabel["r2"].Seq && d.RequestID == "r2" && d.Stored == nil:
				index = true
			}
		}
		if !balance || !index {
			t.Errorf("the balance (%v) or the index (%v) difference is missing: %s", balance, index, resp.Body)
		}
	})
	t.Run("the CLI prints every difference and fails", func(t *testing.T) {
		out, err := runCLI(t, "audit")
		if err == nil {
			t.Fatalf("caddy arcane audit succeeded on a damaged store:\n%s", out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "INCONSISTENT: 2 differences") {
			t.Fatalf("output:\n%s", out)
		}
		if !strings.Contains(out, "(stored 99.000000, replayed 14.850000)") || !strings.Contains(out, "request r2") {
			t.Errorf("output lacks a difference:\n%s", out)
		}
	})
	t.Run("the CLI with --json prints the report and fails", func(t *testing.T) {
		out, err := runCLI(t, "audit", "--json")
		if err == nil {
			t.Fatal("caddy arcane audit --json succeeded on a damaged store")
		}
		var r testAuditReport
		if err := json.Unmarshal([]byte(out), &r); err != nil || r.OK || len(r.Differences) != 2 {
			t.Errorf("--json output %s (%v)", out, err)
		}
	})
}

// testUser is a dashboard user as the admin API shows it.
type testUser struct {
	ID          string     `json:"id"`
	Email       string     `json:"email"`
	AccountID   string     `json:"account_id"`
	State       string     `json:"state"`
	CreatedAt   time.Time  `json:"created_at"`
	LastLoginAt *time.Time `json:"last_login_at"`
}

// signUp creates a dashboard user straight in the running server's store,
// as the dashboard's sign-up form does.
func signUp(t testing.TB, path, email, password, invite string) billing.User {
	t.Helper()
	db := pooledDatabase(path)
	if db == nil {
		t.Fatalf("no open database at %s", path)
	}
	u, _, err := db.store.CreateUser(email, password, 0, invite)
	if err != nil {
		t.Fatalf("CreateUser(%s): %v", email, err)
	}
	return u
}

func TestAdminUsers(t *testing.T) {
	tester, path := startArcane(t)
	const unknown = "user_0000000000000000"
	const password = "correct horse battery staple"

	t.Run("no users is an empty list", func(t *testing.T) {
		resp := adminOK(t, http.MethodGet, "/arcane/users", nil, http.StatusOK, nil)
		var got map[string]any
		resp.decode(t, &got)
		if data, ok := got["data"].([]any); !ok || len(data) != 0 || len(got) != 1 {
			t.Errorf("answer %s, want {\"data\": []}", resp.Body)
		}
	})

	ann := signUp(t, path, "Ann@Example.com", password, "")
	store := pooledDatabase(path).store
	if _, err := store.Login("ann@example.com", password); err != nil {
		t.Fatal(err)
	}
	bob := signUp(t, path, "bob@example.com", password, "")

	t.Run("users are listed oldest first, without password hashes", func(t *testing.T) {
		var list struct {
			Data []testUser `json:"data"`
		}
		resp := adminOK(t, http.MethodGet, "/arcane/users", nil, http.StatusOK, &list)
		if len(list.Data) != 2 || list.Data[0].ID != ann.ID || list.Data[1].ID != bob.ID {
			t.Fatalf("listed %s, want Ann then Bob", resp.Body)
		}
		got := list.Data[0]
		if got.Email != "ann@example.com" || got.AccountID != ann.AccountID || got.State != "active" ||
			!got.CreatedAt.Equal(ann.CreatedAt) || got.LastLoginAt == nil {
			t.Errorf("listed Ann as %+v", got)
		}
		if list.Data[1].LastLoginAt != nil {
			t.Errorf("Bob never logged in but has last_login_at %v", list.Data[1].LastLoginAt)
		}
		for _, secret := range []string{"argon2", "password", password} {
			if strings.Contains(string(resp.Body), secret) {
				t.Errorf("the listing holds %q: %s", secret, resp.Body)
			}
		}
	})
	t.Run("a user is shown by id", func(t *testing.T) {
		var got testUser
		resp := adminOK(t, http.MethodGet, "/arcane/users/"+bob.ID, nil, http.StatusOK, &got)
		if got.ID != bob.ID || got.Email != "bob@example.com" || got.AccountID != bob.AccountID || got.State != "active" {
			t.Errorf("shown %s", resp.Body)
		}
		if strings.Contains(string(resp.Body), "argon2") {
			t.Errorf("the answer holds a password hash: %s", resp.Body)
		}
	})
	t.Run("an unknown user is not found", func(t *testing.T) {
		assertAdminError(t, adminCall(t, http.MethodGet, "/arcane/users/"+unknown, nil), http.StatusNotFound)
	})

	t.Run("disabling a user logs it out everywhere but leaves its API keys working", func(t *testing.T) {
		key := createKey(t, ann.AccountID, nil)
		_, token, err := store.CreateSession(ann.ID, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		var got testUser
		adminOK(t, http.MethodPatch, "/arcane/users/"+ann.ID, `{"state":"disabled"}`, http.StatusOK, &got)
		if got.State != "disabled" || got.ID != ann.ID {
			t.Fatalf("after disabling: %+v", got)
		}
		if _, _, err := store.SessionByToken(token); !errors.Is(err, billing.ErrNotFound) {
			t.Errorf("the session after disabling: %v, want ErrNotFound", err)
		}
		if _, err := store.Login("ann@example.com", password); !errors.Is(err, billing.ErrUserDisabled) {
			t.Errorf("log-in after disabling: %v, want ErrUserDisabled", err)
		}
		var acct testAccount
		adminOK(t, http.MethodGet, "/arcane/accounts/"+ann.AccountID, nil, http.StatusOK, &acct)
		if acct.State != "active" {
			t.Errorf("the account is %q after disabling its user", acct.State)
		}
		if status, _, body := apiGet(t, tester, "/v1/echo", "Bearer "+key.Key); status != http.StatusOK {
			t.Errorf("the account's key after disabling its user: %d %s", status, body)
		}
	})
	t.Run("an enabled user logs in again", func(t *testing.T) {
		var got testUser
		adminOK(t, http.MethodPatch, "/arcane/users/"+ann.ID, `{"state":"active"}`, http.StatusOK, &got)
		if got.State != "active" {
			t.Errorf("state %q after enabling", got.State)
		}
		if _, err := store.Login("ann@example.com", password); err != nil {
			t.Errorf("log-in after enabling: %v", err)
		}
	})
	for _, tc := range []struct {
		name, id, body string
		want           int
	}{
		{"an unknown state is refused", bob.ID, `{"state":"banned"}`, http.StatusBadRequest},
		{"a PATCH with nothing to change is refused", bob.ID, `{}`, http.StatusBadRequest},
		{"an unknown field is refused", bob.ID, `{"state":"disabled","email":"x@y"}`, http.StatusBadRequest},
		{"an empty body is refused", bob.ID, ``, http.StatusBadRequest},
		{"PATCHing an unknown user is not found", unknown, `{"state":"disabled"}`, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assertAdminError(t, adminCall(t, http.MethodPatch, "/arcane/users/"+tc.id, tc.body), tc.want)
			var got testUser
			adminOK(t, http.MethodGet, "/arcane/users/"+bob.ID, nil, http.StatusOK, &got)
			if got.State != "active" {
				t.Errorf("Bob is %q after a refused change", got.State)
			}
		})
	}

	t.Run("the CLI lists users", func(t *testing.T) {
		out, err := runCLI(t, "users", "list")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "LAST LOGIN") {
			t.Fatalf("output:\n%s", out)
		}
		if !strings.HasPrefix(lines[1], ann.ID) || !strings.Contains(lines[1], "ann@example.com") || !strings.Contains(lines[1], ann.AccountID) {
			t.Errorf("Ann's line %q", lines[1])
		}
		if !strings.HasPrefix(lines[2], bob.ID) || !strings.HasSuffix(lines[2], "never") {
			t.Errorf("Bob's line %q", lines[2])
		}
	})
	t.Run("the CLI disables, shows and enables a user", func(t *testing.T) {
		out, err := runCLI(t, "users", "disable", bob.ID)
		if err != nil || !strings.Contains(out, bob.ID) || !strings.Contains(out, "disabled") {
			t.Fatalf("users disable = %q, %v", out, err)
		}
		out, err = runCLI(t, "users", "show", bob.ID, "--json")
		var got testUser
		if err != nil || json.Unmarshal([]byte(out), &got) != nil || got.State != "disabled" {
			t.Fatalf("users show --json = %q, %v", out, err)
		}
		out, err = runCLI(t, "users", "enable", bob.ID)
		if err != nil || !strings.Contains(out, "active") {
			t.Fatalf("users enable = %q, %v", out, err)
		}
	})
	t.Run("the CLI fails for an unknown user", func(t *testing.T) {
		if out, err := runCLI(t, "users", "disable", unknown); err == nil || !strings.Contains(err.Error(), "404") {
			t.Errorf("users disable of an unknown user = %q, %v", out, err)
		}
	})
}

// testInvite is an invite as the admin API shows it.
type testInvite struct {
	ID        string     `json:"id"`
	Code      string     `json:"code"`
	Note      string     `json:"note"`
	AccountID string     `json:"account_id"`
	State     string     `json:"state"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	UsedBy    string     `json:"used_by"`
	UsedAt    *time.Time `json:"used_at"`
	RevokedAt *time.Time `json:"revoked_at"`
}

func TestAdminInvites(t *testing.T) {
	_, path := startArcane(t)
	store := pooledDatabase(path).store
	expires := time.Now().Add(7 * 24 * time.Hour).UTC().Truncate(time.Second)
	// made is every invite created, in order, to check the listing.
	var made []testInvite
	createInvite := func(t *testing.T, body any) testInvite {
		t.Helper()
		var inv testInvite
		adminOK(t, http.MethodPost, "/arcane/invites", body, http.StatusCreated, &inv)
		if !strings.HasPrefix(inv.Code, "inv_") {
			t.Fatalf("created invite has no code: %+v", inv)
		}
		made = append(made, inv)
		return inv
	}
	listInvites := func(t *testing.T) ([]testInvite, adminResponse) {
		t.Helper()
		var list struct {
			Data []testInvite `json:"data"`
		}
		resp := adminOK(t, http.MethodGet, "/arcane/invites", nil, http.StatusOK, &list)
		return list.Data, resp
	}
	usersOf := func(t *testing.T, accountID string) []testUser {
		t.Helper()
		var list struct {
			Data []testUser `json:"data"`
		}
		adminOK(t, http.MethodGet, "/arcane/users?account_id="+url.QueryEscape(accountID), nil, http.StatusOK, &list)
		return list.Data
	}

	before := time.Now().Add(-time.Second)
	var created testInvite
	resp := adminOK(t, http.MethodPost, "/arcane/invites", map[string]any{"note": "for Ann", "expires_at": expires}, http.StatusCreated, &created)
	made = append(made, created)

	t.Run("a new invite shows its code once, with its id, note, expiry and state", func(t *testing.T) {
		if !strings.HasPrefix(created.Code, "inv_") || len(created.Code) != 36 {
			t.Errorf("code %q is not inv_ and 32 characters", created.Code)
		}
		if !strings.HasPrefix(created.ID, "invite_") || strings.Contains(created.ID, created.Code[4:]) {
			t.Errorf("id %q is not invite_ and apart from the code", created.ID)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q, want no-store", cc)
		}
		if created.Note != "for Ann" || created.ExpiresAt == nil || !created.ExpiresAt.Equal(expires) || created.State != "unused" ||
			created.AccountID != "" || created.CreatedAt.Before(before) || created.CreatedAt.After(time.Now().Add(time.Second)) {
			t.Errorf("created %s", resp.Body)
		}
	})
	var ann billing.User
	t.Run("the invite signs one person up into a new account", func(t *testing.T) {
		ann = signUp(t, path, "ann@example.com", "hunter2hunter2", created.Code)
		_, _, err := store.CreateUser("bob@example.com", "hunter2hunter2", 0, created.Code)
		if !errors.Is(err, billing.ErrInviteInvalid) {
			t.Errorf("a second sign-up with the invite: %v, want ErrInviteInvalid", err)
		}
		var list struct {
			Data []testUser `json:"data"`
		}
		adminOK(t, http.MethodGet, "/arcane/users", nil, http.StatusOK, &list)
		if len(list.Data) != 1 || list.Data[0].ID != ann.ID {
			t.Errorf("users %+v, want only Ann", list.Data)
		}
	})
	t.Run("an invite needs no note or expiry", func(t *testing.T) {
		var got map[string]any
		adminOK(t, http.MethodPost, "/arcane/invites", `{}`, http.StatusCreated, &got)
		if code, _ := got["code"].(string); !strings.HasPrefix(code, "inv_") || code == created.Code {
			t.Errorf("code %v", got["code"])
		}
		if _, ok := got["expires_at"]; ok {
			t.Errorf("an invite without expiry shows expires_at: %v", got)
		}
		if _, ok := got["account_id"]; ok {
			t.Errorf("an invite without an account shows account_id: %v", got)
		}
		id, _ := got["id"].(string)
		code, _ := got["code"].(string)
		made = append(made, testInvite{ID: id, Code: code, State: "unused"})
	})
	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"an expiry in the past is refused", `{"expires_at":"2001-01-01T00:00:00Z"}`, http.StatusBadRequest},
		{"an expiry that is not a time is refused", `{"expires_at":"7d"}`, http.StatusBadRequest},
		{"a note over 1000 bytes is refused", `{"note":"` + strings.Repeat("n", 1001) + `"}`, http.StatusBadRequest},
		{"an invite for an unknown account is not found", `{"account_id":"acct_0000000000000000"}`, http.StatusNotFound},
		{"an unknown field is refused", `{"email":"ann@example.com"}`, http.StatusBadRequest},
		{"an empty body is refused", ``, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			had, _ := listInvites(t)
			assertAdminError(t, adminCall(t, http.MethodPost, "/arcane/invites", tc.body), tc.want)
			if now, _ := listInvites(t); len(now) != len(had) {
				t.Errorf("a refused request created an invite: %d invites, had %d", len(now), len(had))
			}
		})
	}

	var acme testAccount
	adminOK(t, http.MethodPost, "/arcane/accounts", `{"name":"Acme Corp","balance":"10"}`, http.StatusCreated, &acme)
	var dee, eve billing.User
	t.Run("invites bound to an account sign people up into it", func(t *testing.T) {
		var accounts struct {
			Data []testAccount `json:"data"`
		}
		adminOK(t, http.MethodGet, "/arcane/accounts", nil, http.StatusOK, &accounts)
		had := len(accounts.Data)
		forDee := createInvite(t, map[string]any{"note": "for Dee at Acme", "account_id": acme.ID})
		if forDee.AccountID != acme.ID || forDee.State != "unused" {
			t.Errorf("bound invite %+v", forDee)
		}
		forEve := createInvite(t, map[string]any{"account_id": acme.ID})
		dee = signUp(t, path, "dee@acme.example", "hunter2hunter2", forDee.Code)
		// The dashboard passes its starting balance; a bound invite
		// ignores it.
		var err error
		if eve, _, err = store.CreateUser("eve@acme.example", "hunter2hunter2", 5*billing.Dollar, forEve.Code); err != nil {
			t.Fatal(err)
		}
		if dee.AccountID != acme.ID || eve.AccountID != acme.ID {
			t.Errorf("Dee's account %s and Eve's %s, want %s", dee.AccountID, eve.AccountID, acme.ID)
		}
		adminOK(t, http.MethodGet, "/arcane/accounts", nil, http.StatusOK, &accounts)
		if len(accounts.Data) != had {
			t.Errorf("%d accounts after two bound sign-ups, had %d", len(accounts.Data), had)
		}
		var got testAccount
		adminOK(t, http.MethodGet, "/arcane/accounts/"+acme.ID, nil, http.StatusOK, &got)
		if got.Balance != "10.000000" {
			t.Errorf("Acme's balance %s after two bound sign-ups, want 10.000000", got.Balance)
		}
		var page testLedgerPage
		adminOK(t, http.MethodGet, "/arcane/accounts/"+acme.ID+"/ledger", nil, http.StatusOK, &page)
		if len(page.Data) != 1 {
			t.Errorf("Acme's ledger has %d rows, want its opening credit only", len(page.Data))
		}
	})
	t.Run("users are filtered by account", func(t *testing.T) {
		if got := usersOf(t, acme.ID); len(got) != 2 || got[0].ID != dee.ID || got[1].ID != eve.ID {
			t.Errorf("Acme's users %+v, want Dee then Eve", got)
		}
		if got := usersOf(t, ann.AccountID); len(got) != 1 || got[0].ID != ann.ID {
			t.Errorf("Ann's account's users %+v, want Ann", got)
		}
		resp := adminOK(t, http.MethodGet, "/arcane/users?account_id="+createAccount(t, "nobody's").ID, nil, http.StatusOK, nil)
		var got map[string]any
		resp.decode(t, &got)
		if data, ok := got["data"].([]any); !ok || len(data) != 0 {
			t.Errorf("an account without users: %s, want {\"data\": []}", resp.Body)
		}
		assertAdminError(t, adminCall(t, http.MethodGet, "/arcane/users?account_id=acct_0000000000000000", nil), http.StatusNotFound)
	})

	spare := createInvite(t, map[string]any{"note": "spare"})
	t.Run("revoking an invite stops its code", func(t *testing.T) {
		var got testInvite
		adminOK(t, http.MethodDelete, "/arcane/invites/"+spare.ID, nil, http.StatusOK, &got)
		if got.ID != spare.ID || got.State != "revoked" || got.RevokedAt == nil || got.Code != "" {
			t.Fatalf("revoked %+v", got)
		}
		if _, _, err := store.CreateUser("fay@example.com", "hunter2hunter2", 0, spare.Code); !errors.Is(err, billing.ErrInviteInvalid) {
			t.Errorf("sign-up with a revoked invite: %v, want ErrInviteInvalid", err)
		}
		var again testInvite
		adminOK(t, http.MethodDelete, "/arcane/invites/"+spare.ID, nil, http.StatusOK, &again)
		if again.RevokedAt == nil || !again.RevokedAt.Equal(*got.RevokedAt) {
			t.Errorf("revoking again moved revoked_at from %v to %v", got.RevokedAt, again.RevokedAt)
		}
	})
	t.Run("revoking a used invite is refused", func(t *testing.T) {
		assertAdminError(t, adminCall(t, http.MethodDelete, "/arcane/invites/"+created.ID, nil), http.StatusBadRequest)
	})
	t.Run("revoking an unknown invite is not found", func(t *testing.T) {
		assertAdminError(t, adminCall(t, http.MethodDelete, "/arcane/invites/invite_0000000000000000", nil), http.StatusNotFound)
	})

	t.Run("invites are listed oldest first with their states, never their codes", func(t *testing.T) {
		got, resp := listInvites(t)
		if len(got) != len(made) {
			t.Fatalf("%d invites listed, want %d: %s", len(got), len(made), resp.Body)
		}
		want := map[string]string{created.ID: "used", made[1].ID: "unused", made[2].ID: "used", made[3].ID: "used", spare.ID: "revoked"}
		for i, inv := range got {
			if inv.ID != made[i].ID || inv.State != want[inv.ID] {
				t.Errorf("invite %d listed as %s (%s), want %s (%s)", i, inv.ID, inv.State, made[i].ID, want[made[i].ID])
			}
		}
		if got[0].UsedBy != ann.ID || got[2].UsedBy != dee.ID || got[2].AccountID != acme.ID {
			t.Errorf("listed %s", resp.Body)
		}
		for _, inv := range made {
			if strings.Contains(string(resp.Body), inv.Code[4:]) {
				t.Errorf("the listing holds the code of invite %s", inv.ID)
			}
		}
		if strings.Contains(string(resp.Body), `"code"`) {
			t.Errorf("the listing has a code field: %s", resp.Body)
		}
	})

	t.Run("the CLI creates an invite and shows its code once", func(t *testing.T) {
		out, err := runCLI(t, "invites", "create", "--note", "for Carl", "--expires", "3d")
		if err != nil {
			t.Fatal(err)
		}
		_, code, ok := strings.Cut(out, "\ncode: ")
		code, _, _ = strings.Cut(code, "\n")
		if !ok || !strings.HasPrefix(code, "inv_") || !strings.Contains(out, "for Carl") || !strings.Contains(out, "only time") {
			t.Fatalf("output:\n%s", out)
		}
		signUp(t, path, "carl@example.com", "hunter2hunter2", code)
	})
	t.Run("the CLI creates an invite bound to an account", func(t *testing.T) {
		out, err := runCLI(t, "invites", "create", "--account", acme.ID, "--note", "for Gus at Acme")
		if err != nil {
			t.Fatal(err)
		}
		_, code, _ := strings.Cut(out, "\ncode: ")
		code, _, _ = strings.Cut(code, "\n")
		if !strings.Contains(out, acme.ID) {
			t.Errorf("output lacks the account:\n%s", out)
		}
		if gus := signUp(t, path, "gus@acme.example", "hunter2hunter2", code); gus.AccountID != acme.ID {
			t.Errorf("Gus signed up into %s, want %s", gus.AccountID, acme.ID)
		}
	})
	t.Run("the CLI lists invites without their codes", func(t *testing.T) {
		listed, _ := listInvites(t)
		out, err := runCLI(t, "invites", "list")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != len(listed)+1 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "STATE") {
			t.Fatalf("output:\n%s", out)
		}
		if !strings.HasPrefix(lines[1], created.ID) || !strings.Contains(lines[1], "used") || !strings.Contains(lines[1], ann.ID) {
			t.Errorf("Ann's invite's line %q", lines[1])
		}
		if strings.Contains(out, "inv_") {
			t.Errorf("the listing shows a code:\n%s", out)
		}
	})
	t.Run("the CLI revokes an invite", func(t *testing.T) {
		inv := createInvite(t, `{"note":"for nobody"}`)
		out, err := runCLI(t, "invites", "revoke", inv.ID)
		if err != nil || !strings.Contains(out, inv.ID) || !strings.Contains(out, "revoked") {
			t.Fatalf("invites revoke = %q, %v", out, err)
		}
		if _, _, err := store.CreateUser("hal@example.com", "hunter2hunter2", 0, inv.Code); !errors.Is(err, billing.ErrInviteInvalid) {
			t.Errorf("sign-up with an invite the CLI revoked: %v", err)
		}
		if out, err := runCLI(t, "invites", "revoke", "invite_0000000000000000"); err == nil || !strings.Contains(err.Error(), "404") {
			t.Errorf("invites revoke of an unknown invite = %q, %v", out, err)
		}
	})
	t.Run("the CLI lists an account's users", func(t *testing.T) {
		out, err := runCLI(t, "users", "list", "--account", acme.ID)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 || !strings.HasPrefix(lines[1], dee.ID) || !strings.HasPrefix(lines[2], eve.ID) || strings.Contains(out, ann.ID) {
			t.Errorf("output:\n%s", out)
		}
	})
	t.Run("the CLI refuses a bad expiry before calling", func(t *testing.T) {
		if out, err := runCLI(t, "invites", "create", "--expires", "soon"); err == nil {
			t.Errorf("invites create --expires soon = %q, want an error", out)
		}
	})
}
