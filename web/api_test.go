package web

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/golang-jwt/jwt/v5"

	"modelswitch/config"
	"modelswitch/db"
	"modelswitch/db/dbtest"
	"modelswitch/gateway"
	"modelswitch/web/token"
)

var (
	store *db.Store
	// app.Test connects from 0.0.0.0; trusting it lets each test sign in from
	// an address of its own (testAddr), so sign-in throttling never spills
	// from one test into another.
	testCfg = config.Config{Secret: []byte("test-secret-test-secret-test-secret!"), Port: "0",
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/32")}, KeyWritesPerMinute: 1000}
	app *fiber.App
	// builtinCatalog is the catalog with no MODELS_FILE: modelswitch/echo.
	builtinCatalog = func() *gateway.Catalog {
		c, err := gateway.LoadCatalog("", os.Getenv, gateway.Timeouts{})
		if err != nil {
			panic(err)
		}
		return c
	}()
)

func TestMain(m *testing.M) {
	os.Exit(dbtest.Main(m, &store))
}

func testApp() *fiber.App {
	if app == nil {
		app = New(testCfg, store, builtinCatalog, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}
	return app
}

// newApp is New that shuts the app down when the test ends, closing its key
// cache's listening connection: tests run many times over (-count) would
// otherwise use up PostgreSQL's connections.
func newApp(t testing.TB, cfg config.Config, s *db.Store, catalog *gateway.Catalog, log *slog.Logger, opts ...Option) *fiber.App {
	t.Helper()
	a := New(cfg, s, catalog, log, opts...)
	t.Cleanup(func() { a.ShutdownWithTimeout(5 * time.Second) })
	return a
}

// sharedAddrStore is the store for apps whose requests all come from one
// address, run after run (a loopback port, which the browser tests use, or
// app.Test without X-Forwarded-For): sign-ups per address are not limited.
func sharedAddrStore() *db.Store {
	s := *store
	s.SignupsPerHour = math.MaxInt32
	return &s
}

// response is what a test reads back.
type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (r response) errCode() string {
	e, _ := r.body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func (r response) errField() string {
	e, _ := r.body["error"].(map[string]any)
	f, _ := e["field"].(string)
	return f
}

// call sends one request through the app from the test's address; body is
// sent as JSON when it is not a string.
func call(t testing.TB, method, path, auth string, body any) response {
	t.Helper()
	return callFrom(t, testAddr(t), method, path, auth, body)
}

// callFrom is call from the client address addr.
func callFrom(t testing.TB, addr, method, path, auth string, body any) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = strings.NewReader(string(raw))
	}
	req := httptest.NewRequest(method, path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("X-Forwarded-For", addr)
	res, err := testApp().Test(req, 30_000)
	if err != nil {
		t.Fatal(err)
	}
	return readResponse(t, res)
}

// readResponse reads a JSON answer; a body that is not a JSON object fails
// the test.
func readResponse(t testing.TB, res *http.Response) response {
	t.Helper()
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: body is not a JSON object: %q", res.Request.Method, res.Request.URL.Path, raw)
		}
	}
	return r
}

// testAddrs gives each run of each test (-count runs a test again on the
// same database) a client address of its own, so that sign-in counts never
// carry from one to another.
var testAddrs sync.Map // testing.TB → string

// testAddr is the client address of a test's requests.
func testAddr(t testing.TB) string {
	if a, ok := testAddrs.Load(t); ok {
		return a.(string)
	}
	a, _ := testAddrs.LoadOrStore(t, newAddr())
	return a.(string)
}

// newAddr is a random unique local address, in a /64 of its own: throttles
// count an IPv6 client by its /64.
func newAddr() string {
	var raw [16]byte
	rand.Read(raw[:])
	raw[0], raw[1] = 0xfd, 0x00
	return netip.AddrFrom16(raw).String()
}

func expect(t testing.TB, r response, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.raw)
	}
	return r
}

// signup creates an account and returns "Bearer <jwt>".
func signup(t testing.TB) string {
	t.Helper()
	jwt, _ := signupWithEmail(t)
	return jwt
}

// signupWithEmail creates an account and returns "Bearer <jwt>" and its email.
func signupWithEmail(t testing.TB) (jwt, email string) {
	t.Helper()
	email = dbtest.Email("api")
	expect(t, call(t, "POST", "/api/auth/signup", "", map[string]string{"email": email, "password": "hunter2hunter2"}), 201)
	r := expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": "hunter2hunter2"}), 200)
	return "Bearer " + r.body["token"].(string), email
}

// billingKey creates a billing key with a session and returns "Bearer mk-…".
func billingKey(t testing.TB, jwt string) string {
	t.Helper()
	r := expect(t, call(t, "POST", "/api/billing-keys", jwt, map[string]string{"name": "Automation"}), 201)
	return "Bearer " + r.body["key"].(string)
}

func proxyKey(t testing.TB, mk string) (id int, key string) {
	t.Helper()
	r := expect(t, call(t, "POST", "/api/keys", mk, map[string]string{"name": "Production"}), 201)
	return int(r.body["id"].(float64)), "Bearer " + r.body["key"].(string)
}

// TestReferenceExamples replays the API reference, request for request.
func TestReferenceExamples(t *testing.T) {
	// A new address each run, in mixed case, sent with spaces around it.
	email := "Ada-" + dbtest.Email("Example")
	r := expect(t, call(t, "POST", "/api/auth/signup", "", map[string]string{"email": " " + email + " ", "password": "correct horse"}), 201)
	if r.body["email"] != email || r.body["id"].(float64) <= 0 {
		t.Fatalf("signup body %s", r.raw)
	}
	r = expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": strings.ToLower(email), "password": "correct horse"}), 200)
	exp, err := time.Parse(time.RFC3339, r.body["expiresAt"].(string))
	if err != nil || exp.Sub(time.Now()) < 23*time.Hour || exp.Sub(time.Now()) > 25*time.Hour {
		t.Fatalf("login expiresAt %v", r.body["expiresAt"])
	}
	jwt := "Bearer " + r.body["token"].(string)

	// Create a billing key.
	r = expect(t, call(t, "POST", "/api/billing-keys", jwt, `{"name": "Automation"}`), 201)
	mk := r.body["key"].(string)
	if !strings.HasPrefix(mk, "mk-") || len(mk) != 41 || r.body["prefix"] != mk[:7]+"xxxx" || r.body["name"] != "Automation" ||
		r.body["expiresAt"] != nil || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("create billing key: %s %v", r.raw, r.header)
	}
	if _, err := time.Parse(time.RFC3339, r.body["createdAt"].(string)); err != nil {
		t.Fatalf("createdAt %v", r.body["createdAt"])
	}
	bkID := r.body["id"]

	// List billing keys: the key itself is never shown again.
	r = expect(t, call(t, "GET", "/api/billing-keys", jwt, nil), 200)
	keys := r.body["keys"].([]any)
	first := keys[0].(map[string]any)
	if len(keys) != 1 || first["id"] != bkID || first["name"] != "Automation" || first["prefix"] != mk[:7]+"xxxx" ||
		first["active"] != true || first["expiresAt"] != nil || strings.Contains(r.raw, mk) {
		t.Fatalf("list billing keys: %s", r.raw)
	}
	for _, field := range []string{"createdAt", "expiresAt", "lastUsedAt"} {
		if _, ok := first[field]; !ok {
			t.Fatalf("key object lacks %s: %s", field, r.raw)
		}
	}

	// Create a proxy key with the billing key.
	expiry := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	r = expect(t, call(t, "POST", "/api/keys", "Bearer "+mk, fmt.Sprintf(`{"name": "Production", "expires_at": %q}`, expiry)), 201)
	ms := r.body["key"].(string)
	id := r.body["id"].(float64)
	if !strings.HasPrefix(ms, "ms-") || len(ms) != 41 || r.body["expiresAt"] != expiry || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("create key: %s", r.raw)
	}

	// List keys.
	r = expect(t, call(t, "GET", "/api/keys", "Bearer "+mk, nil), 200)
	keys = r.body["keys"].([]any)
	if len(keys) != 1 || keys[0].(map[string]any)["prefix"] != ms[:7]+"xxxx" || keys[0].(map[string]any)["expiresAt"] != expiry {
		t.Fatalf("list keys: %s", r.raw)
	}
	// The billing key's use is recorded (written within a second).
	waitUntil(t, "the billing key's lastUsedAt is set", func() bool {
		r = expect(t, call(t, "GET", "/api/billing-keys", jwt, nil), 200)
		return r.body["keys"].([]any)[0].(map[string]any)["lastUsedAt"] != nil
	})

	// The proxy key works for inference until it is deactivated.
	r = expect(t, call(t, "GET", "/v1/models", "Bearer "+ms, nil), 200)
	if r.body["object"] != "list" || len(r.body["data"].([]any)) == 0 {
		t.Fatalf("models: %s", r.raw)
	}
	m := r.body["data"].([]any)[0].(map[string]any)
	if m["object"] != "model" || m["id"] == "" || m["owned_by"] == "" || m["created"] == nil {
		t.Fatalf("model object: %v", m)
	}

	// Update a key.
	r = expect(t, call(t, "PUT", fmt.Sprintf("/api/keys/%v", id), "Bearer "+mk, `{"name": "New Name", "active": false}`), 200)
	if r.body["name"] != "New Name" || r.body["active"] != false || r.body["id"] != id {
		t.Fatalf("update: %s", r.raw)
	}
	expect(t, call(t, "GET", "/v1/models", "Bearer "+ms, nil), 401)
	r = expect(t, call(t, "PUT", fmt.Sprintf("/api/keys/%v", id), "Bearer "+mk, `{"active": true}`), 200)
	if r.body["name"] != "New Name" || r.body["active"] != true {
		t.Fatalf("partial update: %s", r.raw)
	}
	expect(t, call(t, "GET", "/v1/models", "Bearer "+ms, nil), 200)

	// Delete a key: requests with it get 401 at once.
	r = expect(t, call(t, "DELETE", fmt.Sprintf("/api/keys/%v", id), "Bearer "+mk, nil), 200)
	if r.raw != `{"status":"deleted"}` {
		t.Fatalf("delete: %s", r.raw)
	}
	r = expect(t, call(t, "GET", "/v1/models", "Bearer "+ms, nil), 401)
	if r.header.Get("WWW-Authenticate") == "" || r.errCode() != "invalid_api_key" {
		t.Fatalf("deleted key: %s %v", r.raw, r.header)
	}
	r = expect(t, call(t, "GET", "/api/keys", "Bearer "+mk, nil), 200)
	if r.raw != `{"keys":[],"hasMore":false}` {
		t.Fatalf("list after delete: %s", r.raw)
	}

	// Delete the billing key.
	r = expect(t, call(t, "DELETE", fmt.Sprintf("/api/billing-keys/%v", bkID), jwt, nil), 200)
	if r.raw != `{"status":"deleted"}` {
		t.Fatalf("delete billing key: %s", r.raw)
	}
	expect(t, call(t, "GET", "/api/keys", "Bearer "+mk, nil), 401)

	// Log out: the token is revoked at once.
	expect(t, call(t, "POST", "/api/auth/logout", jwt, nil), 200)
	expect(t, call(t, "GET", "/api/billing-keys", jwt, nil), 401)
}

func TestAuthMatrix(t *testing.T) {
	jwtTok := signup(t)
	mk := billingKey(t, jwtTok)
	_, ms := proxyKey(t, mk)
	raw := func(s string) string { return strings.TrimPrefix(s, "Bearer ") }

	signer := token.NewSigner(testCfg.Derive("jwt"))
	userID, sid, err := signer.Verify(raw(jwtTok))
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := signer.Issue(userID, sid, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": fmt.Sprint(userID), "sid": sid}).SignedString(testCfg.Derive("jwt"))
	otherKey, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": fmt.Sprint(userID), "sid": sid, "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte("another-secret-another-secret-000"))
	algNone, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": fmt.Sprint(userID), "sid": sid, "exp": time.Now().Add(time.Hour).Unix()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.MapClaims{"sub": fmt.Sprint(userID), "sid": sid, "exp": time.Now().Add(time.Hour).Unix()}).SignedString(testCfg.Derive("jwt"))
	parts := strings.Split(raw(jwtTok), ".")
	tampered := parts[0] + "." + strings.TrimRight(parts[1], "=") + "x." + parts[2]
	last := byte('a')
	if raw(mk)[40] == 'a' {
		last = 'b'
	}
	badChecksum := raw(mk)[:40] + string(last)

	type cred struct{ name, header string }
	bad := []cred{
		{"none", ""},
		{"empty bearer", "Bearer "},
		{"basic scheme", "Basic " + raw(mk)},
		{"garbage", "Bearer not-a-token"},
		{"bad checksum", "Bearer " + badChecksum},
		{"tampered jwt", "Bearer " + tampered},
		{"alg none jwt", "Bearer " + algNone},
		{"hs512 jwt", "Bearer " + hs512},
		{"jwt signed with another key", "Bearer " + otherKey},
		{"jwt without exp", "Bearer " + noExp},
		{"expired jwt", "Bearer " + expired},
	}
	endpoints := []struct {
		method, path string
		good         string
		wrong        []cred
	}{
		{"GET", "/api/billing-keys", jwtTok, []cred{{"billing key", mk}, {"proxy key", ms}}},
		{"GET", "/api/keys", mk, []cred{{"session jwt", jwtTok}, {"proxy key", ms}}},
		{"GET", "/v1/models", ms, []cred{{"session jwt", jwtTok}, {"billing key", mk}}},
	}
	for _, ep := range endpoints {
		expect(t, call(t, ep.method, ep.path, ep.good, nil), 200)
		expect(t, call(t, ep.method, ep.path, "bEaReR "+raw(ep.good), nil), 200) // RFC 7235: scheme is case-insensitive
		for _, c := range append(bad, ep.wrong...) {
			r := call(t, ep.method, ep.path, c.header, nil)
			if r.status != 401 || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") || r.errCode() == "" {
				t.Errorf("%s %s with %s: %d %s %v", ep.method, ep.path, c.name, r.status, r.raw, r.header.Get("WWW-Authenticate"))
			}
			msg := r.body["error"].(map[string]any)["message"].(string)
			if wantWord := map[string]string{"/api/billing-keys": "session token", "/api/keys": "billing key", "/v1/models": "proxy key"}[ep.path]; !strings.Contains(msg, wantWord) {
				t.Errorf("%s with %s: message %q does not say it wants a %s", ep.path, c.name, msg, wantWord)
			}
		}
	}

	// A signed-in dashboard cookie is never a credential for the API.
	browser, _ := signedUp(t)
	for _, path := range []string{"/api/billing-keys", "/api/keys", "/v1/models"} {
		req := httptest.NewRequest("GET", path, nil)
		req.AddCookie(browser.cookies["modelswitch_session"])
		if res, _ := testApp().Test(req); res.StatusCode != 401 {
			t.Fatalf("%s with a dashboard cookie: %d", path, res.StatusCode)
		}
	}
}

func TestExpiredKeyStopsWorking(t *testing.T) {
	mk := billingKey(t, signup(t))
	expiry := time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339)
	r := expect(t, call(t, "POST", "/api/keys", mk, map[string]string{"name": "short-lived", "expires_at": expiry}), 201)
	ms := "Bearer " + r.body["key"].(string)
	expect(t, call(t, "GET", "/v1/models", ms, nil), 200)
	deadline, _ := time.Parse(time.RFC3339, expiry)
	time.Sleep(time.Until(deadline) + 100*time.Millisecond)
	expect(t, call(t, "GET", "/v1/models", ms, nil), 401)
}

func TestOtherAccountsIDs(t *testing.T) {
	aliceJWT := signup(t)
	aliceMK := billingKey(t, aliceJWT)
	aliceKey, aliceMS := proxyKey(t, aliceMK)
	bobJWT := signup(t)
	bobMK := billingKey(t, bobJWT)
	r := expect(t, call(t, "GET", "/api/billing-keys", aliceJWT, nil), 200)
	aliceBK := r.body["keys"].([]any)[0].(map[string]any)["id"]

	for _, c := range []struct{ method, path, auth string }{
		{"PUT", fmt.Sprintf("/api/keys/%d", aliceKey), bobMK},
		{"DELETE", fmt.Sprintf("/api/keys/%d", aliceKey), bobMK},
		{"DELETE", fmt.Sprintf("/api/billing-keys/%v", aliceBK), bobJWT},
		{"PUT", "/api/keys/999999999", bobMK},
		{"DELETE", "/api/keys/999999999", bobMK},
		{"DELETE", "/api/billing-keys/999999999", bobJWT},
		// A billing key's id is not a proxy key's id, and the other way round.
		{"DELETE", fmt.Sprintf("/api/keys/%v", aliceBK), aliceMK},
		{"DELETE", fmt.Sprintf("/api/billing-keys/%d", aliceKey), aliceJWT},
	} {
		var body any
		if c.method == "PUT" {
			body = map[string]any{"active": false}
		}
		r := expect(t, call(t, c.method, c.path, c.auth, body), 404)
		if r.errCode() != "key_not_found" {
			t.Errorf("%s %s: %s", c.method, c.path, r.raw)
		}
	}
	r = expect(t, call(t, "GET", "/api/keys", bobMK, nil), 200)
	if len(r.body["keys"].([]any)) != 0 {
		t.Fatalf("bob sees alice's keys: %s", r.raw)
	}
	// Alice's keys are untouched.
	expect(t, call(t, "GET", "/v1/models", aliceMS, nil), 200)
	expect(t, call(t, "GET", "/api/keys", aliceMK, nil), 200)
}

func TestBadInput(t *testing.T) {
	jwt := signup(t)
	mk := billingKey(t, jwt)
	id, ms := proxyKey(t, mk)
	keyPath := fmt.Sprintf("/api/keys/%d", id)
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	cases := []struct {
		name, method, path, auth string
		body                     any
		status                   int
		code, field              string
	}{
		{"malformed json", "POST", "/api/keys", mk, `{"name": `, 400, "invalid_json", ""},
		{"array body", "POST", "/api/keys", mk, `[{"name": "x"}]`, 400, "invalid_json", ""},
		{"two objects", "POST", "/api/keys", mk, `{"name": "x"} {"name": "y"}`, 400, "invalid_json", ""},
		{"no body", "POST", "/api/keys", mk, nil, 400, "invalid_json", ""},
		{"name missing", "POST", "/api/keys", mk, `{}`, 400, "invalid_name", "name"},
		{"name number", "POST", "/api/keys", mk, `{"name": 5}`, 400, "invalid_type", "name"},
		{"name empty", "POST", "/api/keys", mk, `{"name": "  "}`, 400, "invalid_name", "name"},
		{"name control char", "POST", "/api/keys", mk, `{"name": "a\u0007b"}`, 400, "invalid_name", "name"},
		{"name newline", "POST", "/api/keys", mk, `{"name": "a\nb"}`, 400, "invalid_name", "name"},
		{"name 101 chars", "POST", "/api/keys", mk, map[string]string{"name": strings.Repeat("x", 101)}, 400, "invalid_name", "name"},
		{"unknown field", "POST", "/api/keys", mk, `{"name": "x", "expiresAt": "2030-01-01T00:00:00Z"}`, 400, "unknown_field", "expiresAt"},
		{"field case", "POST", "/api/keys", mk, `{"Name": "x"}`, 400, "unknown_field", "Name"},
		{"expiry without zone", "POST", "/api/keys", mk, `{"name": "x", "expires_at": "2030-01-01T00:00:00"}`, 400, "invalid_expires_at", "expires_at"},
		{"expiry date only", "POST", "/api/keys", mk, `{"name": "x", "expires_at": "2030-01-01"}`, 400, "invalid_expires_at", "expires_at"},
		{"expiry number", "POST", "/api/keys", mk, `{"name": "x", "expires_at": 1893456000}`, 400, "invalid_type", "expires_at"},
		{"expiry past", "POST", "/api/keys", mk, map[string]string{"name": "x", "expires_at": past}, 400, "invalid_expires_at", "expires_at"},
		{"billing name missing", "POST", "/api/billing-keys", jwt, `{"expires_at": null}`, 400, "invalid_name", "name"},
		{"update nothing", "PUT", keyPath, mk, `{}`, 400, "empty_update", ""},
		{"update nulls", "PUT", keyPath, mk, `{"name": null}`, 400, "empty_update", ""},
		{"update active string", "PUT", keyPath, mk, `{"active": "false"}`, 400, "invalid_type", "active"},
		{"update name empty", "PUT", keyPath, mk, `{"name": ""}`, 400, "invalid_name", "name"},
		{"update unknown field", "PUT", keyPath, mk, `{"expiresAt": "2030-01-01T00:00:00Z"}`, 400, "unknown_field", "expiresAt"},
		{"update expiry past", "PUT", keyPath, mk, map[string]string{"expires_at": past}, 400, "invalid_expires_at", "expires_at"},
		{"update expiry date only", "PUT", keyPath, mk, `{"expires_at": "2030-01-01"}`, 400, "invalid_expires_at", "expires_at"},
		{"id zero", "PUT", "/api/keys/0", mk, `{"active": true}`, 400, "invalid_id", "id"},
		{"id negative", "DELETE", "/api/keys/-1", mk, nil, 400, "invalid_id", "id"},
		{"id word", "DELETE", "/api/keys/abc", mk, nil, 400, "invalid_id", "id"},
		{"id fraction", "DELETE", "/api/keys/1.5", mk, nil, 400, "invalid_id", "id"},
		{"id overflow", "DELETE", "/api/keys/99999999999999999999", mk, nil, 400, "invalid_id", "id"},
		{"billing id word", "DELETE", "/api/billing-keys/x", jwt, nil, 400, "invalid_id", "id"},
		{"unknown route", "GET", "/api/nothing", mk, nil, 404, "not_found", ""},
		{"unknown v1 route", "POST", "/v1/completions", ms, nil, 404, "not_found", ""},
		{"signup bad email", "POST", "/api/auth/signup", "", `{"email": "nope", "password": "12345678"}`, 400, "invalid_email", "email"},
		{"signup short password", "POST", "/api/auth/signup", "", `{"email": "short@example.com", "password": "1234567"}`, 400, "invalid_password", "password"},
		{"signup password number", "POST", "/api/auth/signup", "", `{"email": "num@example.com", "password": 12345678}`, 400, "invalid_type", "password"},
		{"login missing password", "POST", "/api/auth/login", "", `{"email": "num@example.com"}`, 400, "invalid_password", "password"},
	}
	for _, c := range cases {
		r := call(t, c.method, c.path, c.auth, c.body)
		if r.status != c.status || r.errCode() != c.code || r.errField() != c.field {
			t.Errorf("%s: %d %s; want %d %s field %q", c.name, r.status, r.raw, c.status, c.code, c.field)
		}
	}
	r := expect(t, call(t, "GET", "/api/keys", mk, nil), 200)
	if len(r.body["keys"].([]any)) != 1 || r.body["keys"].([]any)[0].(map[string]any)["name"] != "Production" {
		t.Fatalf("bad input changed state: %s", r.raw)
	}
}

func TestBodyLimitsAndMediaType(t *testing.T) {
	mk := billingKey(t, signup(t))
	// The body limit is enforced by the HTTP server itself, so this needs a
	// real listener rather than app.Test.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go testApp().Listener(ln)
	// Announce a body over the limit and send its start; the server answers
	// without waiting for the rest.
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /api/keys HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"name\": \"%s", mk, MaxBody+1, strings.Repeat("x", 16<<10))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	conn.Close()
	if res.StatusCode != 413 || !strings.Contains(string(raw), `"code":"body_too_large"`) {
		t.Fatalf("over the limit: %d %s", res.StatusCode, raw)
	}
	// The same over a chunked body, whose size is only known while reading it.
	conn, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /api/keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n", MaxBody+1)
	go conn.Write([]byte(strings.Repeat("x", MaxBody+1) + "\r\n0\r\n\r\n"))
	res, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ = io.ReadAll(res.Body)
	conn.Close()
	if res.StatusCode != 413 || !strings.Contains(string(raw), `"code":"body_too_large"`) {
		t.Fatalf("chunked over the limit: %d %s", res.StatusCode, raw)
	}
	ln.Close()
	req := httptest.NewRequest("POST", "/api/keys", strings.NewReader(`name=x`))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", mk)
	res, _ = testApp().Test(req)
	raw, _ = io.ReadAll(res.Body)
	if res.StatusCode != 415 || !strings.Contains(string(raw), "unsupported_media_type") {
		t.Fatalf("form body: %d %s", res.StatusCode, raw)
	}
	// A JSON content type with parameters is fine.
	req = httptest.NewRequest("POST", "/api/keys", strings.NewReader(`{"name": "x"}`))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Authorization", mk)
	if res, _ := testApp().Test(req); res.StatusCode != 201 {
		t.Fatalf("json with charset: %d", res.StatusCode)
	}
}

func TestSignupConflictAndLogin(t *testing.T) {
	email := dbtest.Email("conflict")
	expect(t, call(t, "POST", "/api/auth/signup", "", map[string]string{"email": email, "password": "12345678"}), 201)
	r := expect(t, call(t, "POST", "/api/auth/signup", "", map[string]string{"email": strings.ToUpper(email), "password": "12345678"}), 409)
	if r.errCode() != "email_taken" {
		t.Fatal(r.raw)
	}
	wrong := expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": "wrong-password"}), 401)
	unknown := expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": "x" + email, "password": "wrong-password"}), 401)
	if wrong.raw != unknown.raw {
		t.Fatalf("wrong password %s, unknown email %s", wrong.raw, unknown.raw)
	}
	for i := 0; i < 4; i++ { // five failures in all: the limit
		expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": "wrong-password"}), 401)
	}
	r = expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": "12345678"}), 429)
	if r.header.Get("Retry-After") == "" || r.errCode() != "too_many_attempts" {
		t.Fatalf("throttled login: %s %v", r.raw, r.header)
	}
}

func TestConcurrentCreatesAndDeletes(t *testing.T) {
	mk := billingKey(t, signup(t))
	var wg sync.WaitGroup
	statuses := make(chan int, 200)
	for i := range 200 {
		wg.Go(func() {
			statuses <- sendStatus("POST", "/api/keys", mk, fmt.Sprintf(`{"name": "key %d"}`, i))
		})
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != 201 {
			t.Fatalf("create: %d", s)
		}
	}
	r := expect(t, call(t, "GET", "/api/keys", mk, nil), 200)
	keys := r.body["keys"].([]any)
	if len(keys) != 200 {
		t.Fatalf("%d keys after 200 creates", len(keys))
	}
	path := fmt.Sprintf("/api/keys/%v", keys[0].(map[string]any)["id"])
	results := make(chan int, 2)
	for range 2 {
		wg.Go(func() { results <- sendStatus("DELETE", path, mk, "") })
	}
	wg.Wait()
	if a, b := <-results, <-results; a+b != 200+404 {
		t.Fatalf("two deletes: %d and %d", a, b)
	}
}

// sendStatus sends a request from a goroutine, where t.Fatal may not be
// called, and returns only its status (0 when it could not be sent).
func sendStatus(method, path, auth, body string) int {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", auth)
	res, err := testApp().Test(req, 30_000)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

func TestHealthz(t *testing.T) {
	r := expect(t, call(t, "GET", "/healthz", "", nil), 200)
	if r.raw != `{"status":"ok"}` {
		t.Fatal(r.raw)
	}
}

func TestPanicIsInternalError(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := fiber.New(fiber.Config{ErrorHandler: errorHandler(log)})
	a.Use(logRequests(requestLog(log, nil), nil), recoverPanics)
	a.Get("/api/boom", func(*fiber.Ctx) error { panic("secret detail") })
	res, _ := a.Test(httptest.NewRequest("GET", "/api/boom", nil))
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != 500 || strings.Contains(string(raw), "secret detail") || !strings.Contains(string(raw), "internal_error") ||
		!strings.Contains(string(raw), res.Header.Get("X-Request-ID")) {
		t.Fatalf("%d %s", res.StatusCode, raw)
	}
}

func TestHealthzWithoutDatabase(t *testing.T) {
	s, err := db.Open(t.Context(), db.Config{URL: dbtest.URL(t)})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	a := newApp(t, testCfg, s, builtinCatalog, slog.New(slog.NewTextHandler(io.Discard, nil)))
	res, _ := a.Test(httptest.NewRequest("GET", "/healthz", nil))
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != 503 || !strings.Contains(string(raw), `"code":"database_unavailable"`) {
		t.Fatalf("%d %s", res.StatusCode, raw)
	}
}

func TestNoSecretInLogs(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	a := newApp(t, testCfg, sharedAddrStore(), builtinCatalog, slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logs}, nil)))
	send := func(method, path, auth, body string) map[string]any {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", auth)
		res, err := a.Test(req, 30_000) // sign-up and log-in hash a password: slow under -race
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		json.NewDecoder(res.Body).Decode(&out)
		return out
	}
	email := dbtest.Email("logs")
	send("POST", "/api/auth/signup", "", fmt.Sprintf(`{"email": %q, "password": "log-password"}`, email))
	tok := send("POST", "/api/auth/login", "", fmt.Sprintf(`{"email": %q, "password": "log-password"}`, email))["token"].(string)
	mk := send("POST", "/api/billing-keys", "Bearer "+tok, `{"name": "logs"}`)["key"].(string)
	ms := send("POST", "/api/keys", "Bearer "+mk, `{"name": "logs"}`)["key"].(string)
	send("GET", "/v1/models?key="+ms, "Bearer "+ms, "")
	send("GET", "/v1/models", "Bearer "+ms[:40]+"x", "")
	mu.Lock()
	defer mu.Unlock()
	if strings.Count(logs.String(), `"msg":"request"`) != 6 {
		t.Fatalf("expected one line per request:\n%s", logs.String())
	}
	for name, secret := range map[string]string{"password": "log-password", "jwt": tok, "billing key": mk, "proxy key": ms, "key body": ms[3:40]} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the %s reached the log", name)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestNo5xxFromSignIn sends what a form or a script might: NUL bytes,
// invalid UTF-8, a huge email. Each gets a 4xx, never a 5xx.
func TestNo5xxFromSignIn(t *testing.T) {
	huge := strings.Repeat("a", 20000) + "@example.com"
	// As JSON text: a NUL, a lone surrogate, a huge email, nonsense.
	for _, email := range []string{`a\u0000@x.com`, `a\udcff@x.com`, huge, "", "@", "a@b@c"} {
		for _, path := range []string{"/api/auth/login", "/api/auth/signup"} {
			body := `{"email": "` + email + `", "password": "12345678"}`
			if r := call(t, "POST", path, "", body); r.status >= 500 || r.status < 400 {
				t.Errorf("%s with %.20q: %d %s", path, email, r.status, r.raw)
			}
		}
	}
	// As form values: raw NUL and invalid UTF-8 bytes.
	b := newClient(t)
	b.do("GET", "/signin", nil, false)
	for _, email := range []string{"a\x00@x.com", "a\xff@x.com", huge} {
		for _, path := range []string{"/signin", "/signup"} {
			if p := b.post(path, url.Values{"email": {email}, "password": {"12345678"}}, false); p.status >= 500 || p.status < 400 {
				t.Errorf("%s with %.20q: %d", path, email, p.status)
			}
		}
	}
}

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/32"), netip.MustParsePrefix("10.0.0.0/8")}
	a := fiber.New()
	a.Get("/", func(c *fiber.Ctx) error { return c.SendString(clientIP(c, trusted)) })
	for xff, want := range map[string]string{
		"":                               "0.0.0.0",
		"203.0.113.9":                    "203.0.113.9",
		"6.6.6.6, 203.0.113.9":           "203.0.113.9", // the client wrote 6.6.6.6
		"203.0.113.9, 10.1.2.3":          "203.0.113.9", // through two proxies
		"garbage, 203.0.113.9, 10.1.2.3": "203.0.113.9",
		"10.1.2.3":                       "10.1.2.3",
		"::ffff:198.51.100.1":            "198.51.100.1",
	} {
		req := httptest.NewRequest("GET", "/", nil)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		res, _ := a.Test(req)
		got, _ := io.ReadAll(res.Body)
		if string(got) != want {
			t.Errorf("X-Forwarded-For %q: %s, want %s", xff, got, want)
		}
	}
	// An untrusted peer's header is ignored.
	a2 := fiber.New()
	a2.Get("/", func(c *fiber.Ctx) error { return c.SendString(clientIP(c, nil)) })
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	res, _ := a2.Test(req)
	if got, _ := io.ReadAll(res.Body); string(got) != "0.0.0.0" {
		t.Errorf("untrusted peer: %s", got)
	}
}

// waitUntil polls cond until it holds, failing the test after 10 s.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond) // a tiny poll, bounded by the deadline
	}
}

// TestShutdownDrainsInFlightRequests holds a sign-up mid-body, begins a
// graceful shutdown, then lets the request finish: it must succeed, not fail
// with its database work cancelled because shutdown had begun.
func TestShutdownDrainsInFlightRequests(t *testing.T) {
	a := newApp(t, testCfg, sharedAddrStore(), builtinCatalog, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go a.Listener(ln)
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := fmt.Sprintf(`{"email": %q, "password": "drain-password"}`, dbtest.Email("drain"))
	fmt.Fprintf(conn, "POST /api/auth/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:10])
	// The server has accepted the connection: shutdown must wait for it.
	waitUntil(t, "the server holds the connection", func() bool { return a.Server().GetOpenConnectionsCount() == 1 })

	shutdown := make(chan error, 1)
	go func() { shutdown <- a.ShutdownWithTimeout(10 * time.Second) }()
	// Shutdown closes the listener first, then waits for open connections.
	waitUntil(t, "shutdown has closed the listener", func() bool {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-shutdown:
		t.Fatalf("shutdown returned with a request in flight: %v", err)
	default:
	}
	io.WriteString(conn, body[10:])
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 201 {
		t.Fatalf("in-flight sign-up during shutdown: %d, want 201", res.StatusCode)
	}
	if err := <-shutdown; err != nil {
		t.Fatal(err)
	}
}
