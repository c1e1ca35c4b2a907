package caddymodule

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// The tests in this package that need a running Caddy share the one
// in-process server caddytest starts (admin endpoint on localhost:2999), so
// none of them may run in parallel. Each loads its own config with its own
// database file.

const (
	adminURL = "http://localhost:2999"
	siteURL  = "http://localhost:9080"
)

// testCaddyfile returns a config with the arcane app storing its data at
// storage, and a site shaped like Caddyfile.example plus /v1/echo, which
// shows what the handlers after arcane_auth see. arcaneExtra is added to
// the arcane block and siteExtra to the /v1/* route.
func testCaddyfile(storage, arcaneExtra, siteExtra string) string {
	return testGlobals(storage, arcaneExtra) + fmt.Sprintf(`
http://localhost:9080 {
	route /v1/* {
		arcane_auth
		handle /v1/status {
			arcane_status
		}
		handle /v1/echo {
			respond "{http.request.header.Authorization}|{http.auth.user.id}|{http.auth.user.key_id}"
		}
		%s
		handle {
			header Content-Type application/json
			respond `+"`"+`{"error":{"message":"Unknown endpoint.","type":"invalid_request_error","param":null,"code":"unknown_url"}}`+"`"+` 404
		}
	}
}
`, siteExtra)
}

// testGlobals is the global options block of the test configs: the test
// ports, and the arcane app with storage and arcaneExtra in its block.
func testGlobals(storage, arcaneExtra string) string {
	return fmt.Sprintf(`{
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns
	arcane {
		storage %q
		%s
	}
}
`, storage, arcaneExtra)
}

// startArcane loads a fresh arcane config into the shared test server and
// returns the tester and the database path.
func startArcane(t *testing.T) (*caddytest.Tester, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "arcane.db")
	tester := caddytest.NewTester(t)
	tester.InitServer(testCaddyfile(path, "", ""), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	return tester, path
}

// adminResponse is one answer of the admin endpoint.
type adminResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// decode unmarshals the body into v.
func (r adminResponse) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decoding admin answer %s: %v", r.Body, err)
	}
}

// adminCall sends a request to the admin endpoint the way `caddy` CLI
// commands do (with an Origin header). body is sent as is when it is a
// string or []byte, JSON-encoded otherwise, and not at all when nil.
func adminCall(t testing.TB, method, path string, body any) adminResponse {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encoding request body: %v", err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, adminURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", adminURL)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading answer: %v", method, path, err)
	}
	return adminResponse{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// adminOK sends a request that must answer want and decodes the answer
// into out (unless out is nil).
func adminOK(t testing.TB, method, path string, body any, want int, out any) adminResponse {
	t.Helper()
	resp := adminCall(t, method, path, body)
	if resp.Status != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, path, resp.Status, want, resp.Body)
	}
	if out != nil {
		resp.decode(t, out)
	}
	return resp
}

type testAccount struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Balance   string    `json:"balance"`
	Held      string    `json:"held"`
	State     string    `json:"state"`
	CreatedAt time.Time `json:"created_at"`
}

type testKey struct {
	ID        string     `json:"id"`
	AccountID string     `json:"account_id"`
	Name      string     `json:"name"`
	Last4     string     `json:"last4"`
	State     string     `json:"state"`
	Key       string     `json:"key"`
	Models    []string   `json:"models"`
	RPM       int64      `json:"rpm"`
	TPM       int64      `json:"tpm"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at"`
}

func createAccount(t testing.TB, name string) testAccount {
	t.Helper()
	var acct testAccount
	adminOK(t, http.MethodPost, "/arcane/accounts", map[string]any{"name": name}, http.StatusCreated, &acct)
	return acct
}

func createKey(t testing.TB, accountID string, spec map[string]any) testKey {
	t.Helper()
	if spec == nil {
		spec = map[string]any{}
	}
	var key testKey
	adminOK(t, http.MethodPost, "/arcane/accounts/"+accountID+"/keys", spec, http.StatusCreated, &key)
	if !strings.HasPrefix(key.Key, "ak_") {
		t.Fatalf("created key has no secret: %+v", key)
	}
	return key
}

// apiGet sends GET siteURL+path with the given Authorization header (none
// if authorization is empty) and returns the status, headers and body.
func apiGet(t testing.TB, tester *caddytest.Tester, path, authorization string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, siteURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := tester.Client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", path, err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

// assertOpenAIError checks that an answer is OpenAI's error envelope with
// exactly the four keys, param null, and the given status, type and code.
func assertOpenAIError(t testing.TB, status int, header http.Header, body string, wantStatus int, wantType, wantCode string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status %d, want %d; body %s", status, wantStatus, body)
	}
	if ct := header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var env map[string]map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatalf("body is not an error envelope: %v; body %s", err, body)
	}
	if len(env) != 1 || env["error"] == nil {
		t.Fatalf("body has keys other than just \"error\": %s", body)
	}
	e := env["error"]
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := e[k]; !ok {
			t.Errorf("error object lacks %q: %s", k, body)
		}
	}
	if len(e) != 4 {
		t.Errorf("error object has %d keys, want 4: %s", len(e), body)
	}
	var msg, typ, code string
	if err := json.Unmarshal(e["message"], &msg); err != nil || msg == "" {
		t.Errorf("message is not a non-empty string: %s", e["message"])
	}
	if err := json.Unmarshal(e["type"], &typ); err != nil || typ != wantType {
		t.Errorf("type %s, want %q", e["type"], wantType)
	}
	if string(e["param"]) != "null" {
		t.Errorf("param %s, want null", e["param"])
	}
	if err := json.Unmarshal(e["code"], &code); err != nil || code != wantCode {
		t.Errorf("code %s, want %q", e["code"], wantCode)
	}
}

func errorMessage(t testing.TB, body string) string {
	t.Helper()
	var env struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatalf("decoding error body %s: %v", body, err)
	}
	return env.Error.Message
}

// assertStatusOK checks a 200 from /v1/status with "status":"ok".
func assertStatusOK(t testing.TB, tester *caddytest.Tester, secret string) {
	t.Helper()
	status, header, body := apiGet(t, tester, "/v1/status", "Bearer "+secret)
	if status != http.StatusOK {
		t.Fatalf("GET /v1/status: status %d, want 200; body %s", status, body)
	}
	if ct := header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var got struct {
		Status  string `json:"status"`
		Version string `json:"version"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("decoding status %s: %v", body, err)
	}
	if got.Status != "ok" || got.Version == "" {
		t.Errorf("status answer %s, want status ok and a version", body)
	}
}

func TestAuthRefusesBadKeys(t *testing.T) {
	tester, _ := startArcane(t)

	acct := createAccount(t, "acme")
	good := createKey(t, acct.ID, nil)
	revoked := createKey(t, acct.ID, nil)
	adminOK(t, http.MethodDelete, "/arcane/keys/"+revoked.ID, nil, http.StatusOK, nil)

	// One character of the body changed: the right shape, the wrong checksum.
	b := []byte(good.Key)
	if b[10] == 'a' {
		b[10] = 'b'
	} else {
		b[10] = 'a'
	}
	badChecksum := string(b)
	unknown, err := billing.NewSecret(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		// header is the Authorization header; empty means none is sent.
		header string
		// token is what must never be echoed back.
		token string
		// message is a fragment of the expected message.
		message string
	}{
		{name: "a request without an Authorization header is refused", message: "didn't provide an API key"},
		{name: "a Basic credential is refused", header: "Basic xyz", token: "xyz", message: "Bearer scheme"},
		{name: "a Bearer header without a token is refused as a missing key", header: "Bearer", message: "didn't provide an API key"},
		{name: "a key too short to be one is refused", header: "Bearer ak_short", token: "ak_short", message: "Keys start with ak_"},
		{name: "a key with another vendor's prefix is refused", header: "Bearer sk_" + strings.Repeat("A", 49), token: "sk_" + strings.Repeat("A", 49), message: "Keys start with ak_"},
		{name: "a key with one character changed fails its checksum", header: "Bearer " + badChecksum, token: badChecksum, message: "Keys start with ak_"},
		{name: "a well-formed key that was never issued is refused", header: "Bearer " + unknown, token: unknown, message: "Incorrect API key provided"},
		{name: "a revoked key is refused", header: "Bearer " + revoked.Key, token: revoked.Key, message: "revoked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, header, body := apiGet(t, tester, "/v1/status", tc.header)
			assertOpenAIError(t, status, header, body, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key")
			if tc.token != "" && strings.Contains(body, tc.token) {
				t.Errorf("the answer echoes the presented key: %s", body)
			}
			if msg := errorMessage(t, body); !strings.Contains(msg, tc.message) {
				t.Errorf("message %q does not contain %q", msg, tc.message)
			}
		})
	}

	t.Run("a fresh key is accepted", func(t *testing.T) {
		assertStatusOK(t, tester, good.Key)
	})
	t.Run("the Bearer scheme is case-insensitive", func(t *testing.T) {
		status, _, body := apiGet(t, tester, "/v1/status", "bearer "+good.Key)
		if status != http.StatusOK {
			t.Errorf("status %d, want 200; body %s", status, body)
		}
	})
	t.Run("a key that expires in ten years is accepted", func(t *testing.T) {
		future := time.Now().Add(10 * 365 * 24 * time.Hour).UTC().Truncate(time.Second)
		k := createKey(t, acct.ID, map[string]any{"expires_at": future})
		assertStatusOK(t, tester, k.Key)
	})
}

func TestAuthRevocationTakesEffectOnTheNextRequest(t *testing.T) {
	tester, _ := startArcane(t)
	acct := createAccount(t, "acme")
	key := createKey(t, acct.ID, nil)

	// Several successes, so the key is certainly in the cache.
	for range 5 {
		assertStatusOK(t, tester, key.Key)
	}
	var revoked testKey
	adminOK(t, http.MethodDelete, "/arcane/keys/"+key.ID, nil, http.StatusOK, &revoked)
	if revoked.State != "revoked" {
		t.Fatalf("revoke answered state %q", revoked.State)
	}

	status, header, body := apiGet(t, tester, "/v1/status", "Bearer "+key.Key)
	assertOpenAIError(t, status, header, body, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key")
	if msg := errorMessage(t, body); !strings.Contains(msg, "revoked") {
		t.Errorf("message %q does not say the key was revoked", msg)
	}
	if strings.Contains(body, key.Key) {
		t.Errorf("the answer echoes the key: %s", body)
	}
}

func TestAuthDisabledAccount(t *testing.T) {
	tester, _ := startArcane(t)
	acct := createAccount(t, "acme")
	key := createKey(t, acct.ID, nil)
	assertStatusOK(t, tester, key.Key)

	var got testAccount
	adminOK(t, http.MethodPatch, "/arcane/accounts/"+acct.ID, map[string]any{"state": "disabled"}, http.StatusOK, &got)
	if got.State != "disabled" {
		t.Fatalf("PATCH answered state %q", got.State)
	}
	status, header, body := apiGet(t, tester, "/v1/status", "Bearer "+key.Key)
	assertOpenAIError(t, status, header, body, http.StatusForbidden, "permission_error", "account_disabled")
	if strings.Contains(body, key.Key) {
		t.Errorf("the answer echoes the key: %s", body)
	}

	adminOK(t, http.MethodPatch, "/arcane/accounts/"+acct.ID, map[string]any{"state": "active"}, http.StatusOK, &got)
	if got.State != "active" {
		t.Fatalf("PATCH answered state %q", got.State)
	}
	assertStatusOK(t, tester, key.Key)
}

func TestAuthPassesIdentityNotTheKey(t *testing.T) {
	tester, _ := startArcane(t)
	acct := createAccount(t, "acme")
	key := createKey(t, acct.ID, nil)

	status, _, body := apiGet(t, tester, "/v1/echo", "Bearer "+key.Key)
	if status != http.StatusOK {
		t.Fatalf("GET /v1/echo: status %d; body %s", status, body)
	}
	parts := strings.Split(body, "|")
	if len(parts) != 3 {
		t.Fatalf("echo answered %q, want three fields", body)
	}
	if parts[0] != "" {
		t.Errorf("the Authorization header reached the next handler: %q", parts[0])
	}
	if parts[1] != acct.ID {
		t.Errorf("{http.auth.user.id} = %q, want the account id %q", parts[1], acct.ID)
	}
	if parts[2] != key.ID {
		t.Errorf("{http.auth.user.key_id} = %q, want the key id %q", parts[2], key.ID)
	}
	if strings.Contains(body, key.Key) {
		t.Errorf("the key reached the next handler: %q", body)
	}
}

func TestOpenAISDKReadsUnauthorized(t *testing.T) {
	startArcane(t)
	client := openai.NewClient(
		option.WithBaseURL(siteURL+"/v1/"),
		option.WithAPIKey("ak_bad"),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(10*time.Second),
	)
	_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    "gpt-5.2",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello.")},
	})
	var apierr *openai.Error
	if !errors.As(err, &apierr) {
		t.Fatalf("error %v (%T) is not an *openai.Error", err, err)
	}
	if apierr.StatusCode != http.StatusUnauthorized {
		t.Errorf("StatusCode %d, want 401", apierr.StatusCode)
	}
	if apierr.Code != "invalid_api_key" {
		t.Errorf("Code %q, want invalid_api_key", apierr.Code)
	}
	if apierr.Type != "invalid_request_error" {
		t.Errorf("Type %q, want invalid_request_error", apierr.Type)
	}
	if apierr.Message == "" {
		t.Error("Message is empty")
	}
	if strings.Contains(apierr.RawJSON(), "ak_bad") {
		t.Errorf("the answer echoes the key: %s", apierr.RawJSON())
	}
}
