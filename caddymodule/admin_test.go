package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
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

type testLedgerPage struct {
	Data []struct {
		Seq       uint64    `json:"seq"`
		Time      time.Time `json:"time"`
		AccountID string    `json:"account_id"`
		Kind      string    `json:"kind"`
		Amount    string    `json:"amount"`
		Balance   string    `json:"balance"`
		Note      string    `json:"note"`
	} `json:"data"`
	HasMore    bool   `json:"has_more"`
	NextBefore uint64 `json:"next_before"`
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

	for _, path := range []string{"/arcane/nope", "/arcane/", "/arcane/accounts/" + acct.ID + "/nope", "/arcane/keys", "/arcane/keys/" + key.ID + "/x"} {
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
