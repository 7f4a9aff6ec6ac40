package web

// The dashboard as a console, and the API's idempotent creates, over
// app.Test: Idempotency-Key, compression, the way back after a session
// ends, the landing page, sign-up errors, the 404 page, sign-out everywhere.

import (
	"bytes"
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/gofiber/fiber/v2"
	"github.com/gorilla/sessions"

	"modelswitch/db"
	"modelswitch/db/dbtest"
	"modelswitch/handlers"
	"modelswitch/views"
)

// rawAnswer is an answer with its body as sent: compressed or not.
type rawAnswer struct {
	status int
	header http.Header
	body   []byte
}

// sendRaw sends one request through a, from the test's address.
func sendRaw(t testing.TB, a *fiber.App, method, path string, header http.Header, body string) rawAnswer {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	if host := header.Get("Host"); host != "" { // Go sends req.Host, not the header
		req.Host = host
	}
	if req.Header.Get("X-Forwarded-For") == "" {
		req.Header.Set("X-Forwarded-For", testAddr(t))
	}
	res, err := a.Test(req, 30_000)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return rawAnswer{status: res.StatusCode, header: res.Header, body: raw}
}

// json reads a raw answer as the JSON API's.
func (r rawAnswer) json(t testing.TB) response {
	t.Helper()
	res := &http.Response{StatusCode: r.status, Header: r.header, Body: io.NopCloser(bytes.NewReader(r.body)),
		Request: httptest.NewRequest("GET", "/", nil)}
	return readResponse(t, res)
}

// idemPost sends a JSON POST with an Idempotency-Key (none when key is "").
func idemPost(t testing.TB, a *fiber.App, path, auth, key, body string) response {
	t.Helper()
	h := http.Header{"Content-Type": {"application/json"}, "Authorization": {auth}}
	if key != "" {
		h.Set("Idempotency-Key", key)
	}
	return sendRaw(t, a, "POST", path, h, body).json(t)
}

// keyCount is how many keys of a kind the account has, as the API lists them.
func keyCount(t *testing.T, path, auth string) int {
	t.Helper()
	return len(list(t, expect(t, call(t, "GET", path, auth, nil), 200).body["keys"]))
}

// signupID creates an account through the API and returns its id and a
// session JWT ("Bearer …").
func signupID(t testing.TB) (int64, string) {
	t.Helper()
	email := dbtest.Email("idem")
	r := expect(t, call(t, "POST", "/api/auth/signup", "", map[string]string{"email": email, "password": "hunter2hunter2"}), 201)
	id := int64(r.body["id"].(float64))
	r = expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": "hunter2hunter2"}), 200)
	return id, "Bearer " + r.body["token"].(string)
}

func TestIdempotencyKeyReplaysCreates(t *testing.T) {
	a := testApp()
	jwt := signup(t)
	mk := billingKey(t, jwt)
	const body = `{"name": "Once"}`

	first := expect(t, idemPost(t, a, "/api/keys", mk, "create-once-1", body), 201)
	if first.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("a first answer marked as replayed: %v", first.header)
	}
	again := expect(t, idemPost(t, a, "/api/keys", mk, "create-once-1", body), 201)
	if again.raw != first.raw || again.header.Get("Idempotent-Replayed") != "true" ||
		again.header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(again.header.Get("Content-Type"), "application/json") {
		t.Fatalf("retry: %v %s; first: %s", again.header, again.raw, first.raw)
	}
	if n := keyCount(t, "/api/keys", mk); n != 1 {
		t.Fatalf("%d keys after a create and its retry; want 1", n)
	}

	// The same key with another request: refused, nothing made.
	for _, other := range []struct{ path, auth, body string }{
		{"/api/keys", mk, `{"name": "Twice"}`},
		{"/api/keys", mk, `{"name":"Once"}`}, // other bytes are another request
		{"/api/billing-keys", jwt, body},     // another endpoint, the same account
	} {
		r := expect(t, idemPost(t, a, other.path, other.auth, "create-once-1", other.body), 422)
		if r.errCode() != "idempotency_key_reused" {
			t.Fatalf("reused key: %s", r.raw)
		}
	}
	if n := keyCount(t, "/api/keys", mk); n != 1 {
		t.Fatalf("%d keys after refused reuses; want 1", n)
	}

	// Another account with the same key value gets its own key, never the
	// first account's.
	mk2 := billingKey(t, signup(t))
	theirs := expect(t, idemPost(t, a, "/api/keys", mk2, "create-once-1", body), 201)
	if theirs.body["key"] == first.body["key"] || theirs.header.Get("Idempotent-Replayed") != "" ||
		keyCount(t, "/api/keys", mk2) != 1 || keyCount(t, "/api/keys", mk) != 1 {
		t.Fatalf("another account's create with the same key: %s (first %s)", theirs.raw, first.raw)
	}

	// A request that failed did nothing and keeps nothing: its key may be
	// used again, for another request.
	expect(t, idemPost(t, a, "/api/keys", mk, "create-once-2", `{"name": ""}`), 400)
	expect(t, idemPost(t, a, "/api/keys", mk, "create-once-2", `{"name": "Fixed"}`), 201)

	// Billing keys, created with the session JWT, work the same.
	bk := expect(t, idemPost(t, a, "/api/billing-keys", jwt, "billing-once", `{"name": "CI"}`), 201)
	if r := expect(t, idemPost(t, a, "/api/billing-keys", jwt, "billing-once", `{"name": "CI"}`), 201); r.raw != bk.raw {
		t.Fatalf("billing key retry: %s vs %s", r.raw, bk.raw)
	}
	if n := keyCount(t, "/api/billing-keys", jwt); n != 2 { // mk and CI
		t.Fatalf("%d billing keys; want 2", n)
	}

	// Without the header every POST creates.
	expect(t, idemPost(t, a, "/api/keys", mk, "", body), 201)
	expect(t, idemPost(t, a, "/api/keys", mk, "", body), 201)
	if n := keyCount(t, "/api/keys", mk); n != 4 {
		t.Fatalf("%d keys; want 4", n)
	}

	// A malformed key is refused before anything happens.
	for _, bad := range []string{"two words", strings.Repeat("k", 256), "naïve"} {
		r := expect(t, idemPost(t, a, "/api/keys", mk, bad, body), 400)
		if r.errCode() != "invalid_idempotency_key" {
			t.Fatalf("key %q: %s", bad, r.raw)
		}
	}
	if n := keyCount(t, "/api/keys", mk); n != 4 {
		t.Fatalf("%d keys after malformed keys; want 4", n)
	}
}

// TestIdempotencyKeyIgnoredWithoutAccount: sign-up and log-in have no
// account to scope a key to, and ignore it.
func TestIdempotencyKeyIgnoredWithoutAccount(t *testing.T) {
	creds := fmt.Sprintf(`{"email": %q, "password": "hunter2hunter2"}`, dbtest.Email("idem"))
	expect(t, idemPost(t, testApp(), "/api/auth/signup", "", "signup-1", creds), 201)
	if r := expect(t, idemPost(t, testApp(), "/api/auth/signup", "", "signup-1", creds), 409); r.errCode() != "email_taken" {
		t.Fatalf("second sign-up: %s", r.raw)
	}
	a := expect(t, idemPost(t, testApp(), "/api/auth/login", "", "login-1", creds), 200)
	b := expect(t, idemPost(t, testApp(), "/api/auth/login", "", "login-1", creds), 200)
	if a.body["token"] == b.body["token"] || b.header.Get("Idempotent-Replayed") != "" {
		t.Fatal("a log-in was replayed")
	}
}

// TestIdempotencyKeyInProgress: a retry while the first request is in
// flight is refused with 409 and Retry-After, then gets the first answer.
func TestIdempotencyKeyInProgress(t *testing.T) {
	userID, jwt := signupID(t)
	const body = `{"name": "Slow"}`
	s := store.WithIdempotencySecret(testCfg.Derive("idempotency"))
	inFlight := func() *db.IdempotencyClaim {
		claim, _, err := s.ClaimIdempotencyKey(context.Background(), db.IdempotencyKey{UserID: userID, Scope: "api",
			Value: "slow-1", Request: apiRequest("POST", "/api/billing-keys", []byte(body))})
		if err != nil || claim == nil {
			t.Fatalf("claim: %v", err)
		}
		return claim
	}
	claim := inFlight()
	r := expect(t, idemPost(t, testApp(), "/api/billing-keys", jwt, "slow-1", body), 409)
	if r.errCode() != "idempotency_in_progress" || r.header.Get("Retry-After") != "1" {
		t.Fatalf("retry in flight: %v %s", r.header, r.raw)
	}
	// The first request failed: the retry does the work.
	if err := claim.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := expect(t, idemPost(t, testApp(), "/api/billing-keys", jwt, "slow-1", body), 201)
	if r := expect(t, idemPost(t, testApp(), "/api/billing-keys", jwt, "slow-1", body), 201); r.raw != first.raw {
		t.Fatalf("replay %s, first %s", r.raw, first.raw)
	}
	if n := keyCount(t, "/api/billing-keys", jwt); n != 1 {
		t.Fatalf("%d billing keys; want 1", n)
	}
}

// TestIdempotencyKeyExpires: after 24 hours a key is forgotten.
func TestIdempotencyKeyExpires(t *testing.T) {
	mk := billingKey(t, signup(t))
	const body = `{"name": "Daily"}`
	first := expect(t, idemPost(t, testApp(), "/api/keys", mk, "daily-1", body), 201)
	at := func(d time.Duration) *fiber.App {
		a := newApp(t, testCfg, store.WithClock(func() time.Time { return time.Now().Add(d) }), builtinCatalog, slog.New(slog.NewTextHandler(io.Discard, nil)))
		return a
	}
	if r := expect(t, idemPost(t, at(23*time.Hour), "/api/keys", mk, "daily-1", body), 201); r.raw != first.raw {
		t.Fatalf("23 hours later: %s", r.raw)
	}
	later := expect(t, idemPost(t, at(24*time.Hour+time.Minute), "/api/keys", mk, "daily-1", body), 201)
	if later.body["key"] == first.body["key"] || later.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("24 hours later the first answer came back: %s", later.raw)
	}
	if n := keyCount(t, "/api/keys", mk); n != 2 {
		t.Fatalf("%d keys; want 2", n)
	}
}

// TestIdempotencyTableHoldsNoSecret: on a database of its own, the table
// holds neither the keys created nor the Idempotency-Key values, in text or
// in hex.
func TestIdempotencyTableHoldsNoSecret(t *testing.T) {
	u := dbtest.URL(t)
	s, err := db.Open(t.Context(), db.Config{URL: u})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	a := newApp(t, testCfg, s, builtinCatalog, slog.New(slog.NewTextHandler(io.Discard, nil)))

	creds := fmt.Sprintf(`{"email": %q, "password": "hunter2hunter2"}`, dbtest.Email("idem"))
	expect(t, idemPost(t, a, "/api/auth/signup", "", "", creds), 201)
	jwt := "Bearer " + expect(t, idemPost(t, a, "/api/auth/login", "", "", creds), 200).body["token"].(string)
	values := []string{"4e0f2a9c-billing-value", "7d3c1b8e-proxy-value"}
	mk := expect(t, idemPost(t, a, "/api/billing-keys", jwt, values[0], `{"name": "Scripts"}`), 201).body["key"].(string)
	ms := expect(t, idemPost(t, a, "/api/keys", "Bearer "+mk, values[1], `{"name": "Server"}`), 201).body["key"].(string)

	raw, err := sql.Open("postgres", u)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	rows, err := raw.QueryContext(t.Context(), `SELECT t::text FROM idempotency_keys t`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var row string
		if err := rows.Scan(&row); err != nil {
			t.Fatal(err)
		}
		n++
		row = strings.ToLower(row)
		for _, needle := range append([]string{mk, ms, mk[3:], ms[3:], mk[3:20], ms[3:20]}, values...) {
			for _, form := range []string{needle, hex.EncodeToString([]byte(needle))} {
				if strings.Contains(row, strings.ToLower(form)) {
					t.Fatalf("the table holds %q in clear: %s", needle, row)
				}
			}
		}
	}
	if err := rows.Err(); err != nil || n != 2 {
		t.Fatalf("%d rows (%v); want 2", n, err)
	}
}

// decoded is a raw answer's body, decompressed as its Content-Encoding says.
func decoded(t testing.TB, r rawAnswer) string {
	t.Helper()
	switch r.header.Get("Content-Encoding") {
	case "":
		return string(r.body)
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(r.body))
		if err != nil {
			t.Fatal(err)
		}
		out, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	t.Fatalf("Content-Encoding %q", r.header.Get("Content-Encoding"))
	return ""
}

// cookieHeader carries a dashboard client's cookies.
func (b *client) cookieHeader() http.Header {
	h := http.Header{}
	for _, c := range b.cookies {
		h.Add("Cookie", c.Name+"="+c.Value)
	}
	return h
}

func TestCompressedAnswers(t *testing.T) {
	b, _ := signedUp(t)
	for i := range 20 {
		wantStatus(t, b.post("/dashboard/keys", url.Values{"name": {fmt.Sprint("Compressed ", i)}}, true), 201)
	}
	get := func(path string, header http.Header, encoding string) rawAnswer {
		t.Helper()
		h := b.cookieHeader()
		for k, v := range header {
			h[k] = v
		}
		if encoding != "" {
			h.Set("Accept-Encoding", encoding)
		}
		return sendRaw(t, testApp(), "GET", path, h, "")
	}
	// Dashboard pages: as the client accepts, and only then.
	plain := get("/dashboard/keys", nil, "")
	if plain.status != 200 || plain.header.Get("Content-Encoding") != "" || !strings.Contains(string(plain.body), `data-testid="keys-table"`) {
		t.Fatalf("page without Accept-Encoding: %d %v", plain.status, plain.header)
	}
	for _, enc := range []struct{ accept, want string }{{"gzip", "gzip"}, {"br", "br"}, {"gzip, deflate, br", "br"}, {"gzip;q=0", ""}, {"identity", ""}} {
		r := get("/dashboard/keys", nil, enc.accept)
		if r.status != 200 || r.header.Get("Content-Encoding") != enc.want {
			t.Fatalf("Accept-Encoding %q: %d %v", enc.accept, r.status, r.header)
		}
		if enc.want != "br" { // brotli is checked by its size alone
			if body := decoded(t, r); !strings.Contains(body, `data-testid="keys-table"`) || strings.Count(body, `data-testid="key-row"`) != 20 {
				t.Fatalf("Accept-Encoding %q: the page decoded is not the page", enc.accept)
			}
		}
		if enc.want != "" && (len(r.body)*3 > len(plain.body) || !strings.Contains(r.header.Get("Vary"), "Accept-Encoding")) {
			t.Fatalf("Accept-Encoding %q: %d bytes of %d, Vary %q", enc.accept, len(r.body), len(plain.body), r.header.Get("Vary"))
		}
	}
	// Error pages too: they are answered inside the compression.
	if r := get("/dashboard/no-such-page", nil, "gzip"); r.status != 404 || r.header.Get("Content-Encoding") != "gzip" ||
		!strings.Contains(decoded(t, r), "Page not found") {
		t.Fatalf("404 page: %d %v", r.status, r.header)
	}

	// The JSON API.
	jwt := signup(t)
	mk := billingKey(t, jwt)
	for i := range 5 {
		expect(t, call(t, "POST", "/api/keys", mk, map[string]string{"name": fmt.Sprint("API ", i)}), 201)
	}
	auth := http.Header{"Authorization": {mk}}
	if r := sendRaw(t, testApp(), "GET", "/api/keys", auth, ""); r.status != 200 || r.header.Get("Content-Encoding") != "" {
		t.Fatalf("/api without Accept-Encoding: %d %v", r.status, r.header)
	}
	auth.Set("Accept-Encoding", "gzip")
	r := sendRaw(t, testApp(), "GET", "/api/keys", auth, "")
	if r.status != 200 || r.header.Get("Content-Encoding") != "gzip" || !strings.Contains(decoded(t, r), `"keys":[`) {
		t.Fatalf("/api with gzip: %d %v", r.status, r.header)
	}
	// A tiny answer is not worth compressing.
	if r := sendRaw(t, testApp(), "GET", "/api/balance", auth, ""); r.status != 200 || r.header.Get("Content-Encoding") != "" || len(r.body) >= 200 {
		t.Fatalf("tiny answer: %d %v %d bytes", r.status, r.header, len(r.body))
	}

	// /v1 is never compressed, streamed or not.
	acct := fundedAccount(t, "1")
	_, ms := proxyKey(t, acct.mk)
	long := strings.Repeat("compress me please ", 40)
	for _, stream := range []bool{false, true} {
		body := fmt.Sprintf(`{"model": "modelswitch/echo", "stream": %v, "messages": [{"role": "user", "content": %q}]}`, stream, long)
		r := sendRaw(t, testApp(), "POST", "/v1/chat/completions",
			http.Header{"Authorization": {ms}, "Content-Type": {"application/json"}, "Accept-Encoding": {"gzip, br"}}, body)
		if r.status != 200 || r.header.Get("Content-Encoding") != "" || len(r.body) < 700 || !strings.Contains(string(r.body), "compress") {
			t.Fatalf("/v1 stream=%v: %d %v %d bytes", stream, r.status, r.header, len(r.body))
		}
	}
}

// TestSessionEndRedirects: a dashboard request without a live session, GET
// or POST, htmx or not, goes to sign in with a way back, and does nothing.
func TestSessionEndRedirects(t *testing.T) {
	b, email := signedUp(t)
	p := wantStatus(t, b.post("/dashboard/keys", url.Values{"name": {"Survivor"}}, true), 201)
	id := p.find("key-row").AttrOr("data-key-id", "")
	u, err := store.CheckPassword(context.Background(), email, "page-password", testAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	// The session ends on the server; the browser keeps its cookie and token.
	if err := store.DeleteUserSessions(context.Background(), u.ID); err != nil {
		t.Fatal(err)
	}
	h := b.cookieHeader()
	h.Set("Content-Type", "application/x-www-form-urlencoded")
	h.Set("Referer", "http://example.com/dashboard/keys?page=2")
	r := sendRaw(t, testApp(), "POST", "/dashboard/keys/"+id, h, url.Values{"active": {"false"}, "_csrf": {b.csrf}}.Encode())
	if r.status != 303 || r.header.Get("Location") != "/signin?next="+url.QueryEscape("/dashboard/keys?page=2") {
		t.Fatalf("plain post after the session ended: %d %v", r.status, r.header)
	}
	// htmx: HX-Redirect, back to the page htmx was on.
	h = b.cookieHeader()
	h.Set("HX-Request", "true")
	h.Set("X-CSRF-Token", b.csrf)
	h.Set("HX-Current-URL", "http://example.com/dashboard/billing-keys")
	h.Set("Content-Type", "application/x-www-form-urlencoded")
	r = sendRaw(t, testApp(), "POST", "/dashboard/keys", h, "name=Never")
	if r.status != 204 || r.header.Get("HX-Redirect") != "/signin?next=%2Fdashboard%2Fbilling-keys" {
		t.Fatalf("htmx post after the session ended: %d %v", r.status, r.header)
	}

	// The cookie gone altogether: no 403 for the token that went with it.
	for _, c := range []struct {
		header http.Header
		want   string
	}{
		{http.Header{"Referer": {"http://example.com/dashboard/keys"}}, "/signin?next=%2Fdashboard%2Fkeys"},
		{http.Header{"Referer": {"https://evil.example/dashboard/keys"}}, "/signin?next=%2Fdashboard"}, // another site's page: not a way back
		{http.Header{"Referer": {"http://example.com//evil.example/x"}}, "/signin?next=%2Fdashboard"},
		{http.Header{}, "/signin?next=%2Fdashboard"},
	} {
		c.header.Set("Content-Type", "application/x-www-form-urlencoded")
		r := sendRaw(t, testApp(), "POST", "/dashboard/keys/"+id+"/delete", c.header, "_csrf=stale")
		if r.status != 303 || r.header.Get("Location") != c.want {
			t.Fatalf("post without a cookie, %v: %d %v", c.header, r.status, r.header)
		}
	}
	// Signing out or out everywhere with an ended session goes to sign in too.
	for _, path := range []string{"/signout", "/signout-everywhere"} {
		r := sendRaw(t, testApp(), "POST", path, http.Header{"Content-Type": {"application/x-www-form-urlencoded"},
			"Referer": {"http://example.com/dashboard/usage"}}, "_csrf=stale")
		if r.status != 303 || r.header.Get("Location") != "/signin?next=%2Fdashboard%2Fusage" {
			t.Fatalf("%s without a session: %d %v", path, r.status, r.header)
		}
	}
	// A GET keeps its query.
	r = sendRaw(t, testApp(), "GET", "/dashboard/usage?bucket=hour", nil, "")
	if r.status != 303 || r.header.Get("Location") != "/signin?next="+url.QueryEscape("/dashboard/usage?bucket=hour") {
		t.Fatalf("GET: %d %v", r.status, r.header)
	}

	// The sign-in page says why, and leads back.
	p = wantStatus(t, b.do("GET", "/signin?next="+url.QueryEscape("/dashboard/keys?page=2"), nil, false), 200)
	if p.find("session-ended").Text() != views.SessionEndedNotice ||
		p.doc.Find(`input[name=next]`).AttrOr("value", "") != "/dashboard/keys?page=2" {
		t.Fatalf("sign-in page: %s", p.body)
	}
	// A wrong password keeps the way back.
	p = wantStatus(t, b.post("/signin", url.Values{"email": {email}, "password": {"wrong password"}, "next": {"/dashboard/keys?page=2"}}, false), 422)
	if p.doc.Find(`input[name=next]`).AttrOr("value", "") != "/dashboard/keys?page=2" {
		t.Fatalf("failed sign-in: %s", p.body)
	}
	p = wantStatus(t, b.post("/signin", url.Values{"email": {email}, "password": {"page-password"}, "next": {"/dashboard/keys?page=2"}}, false), 303)
	if p.header.Get("Location") != "/dashboard/keys?page=2" {
		t.Fatalf("sign-in leads to %q", p.header.Get("Location"))
	}
	// With htmx too.
	other := newClient(t)
	other.do("GET", "/signin", nil, false)
	p = wantStatus(t, other.post("/signin", url.Values{"email": {email}, "password": {"page-password"}, "next": {"/dashboard/billing-keys"}}, true), 204)
	if p.header.Get("HX-Redirect") != "/dashboard/billing-keys" {
		t.Fatalf("htmx sign-in: %v", p.header)
	}
	// None of the redirected requests did anything.
	p = wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 200)
	if p.find("key-row").Length() != 1 || p.find("key-status").Text() != "Active" {
		t.Fatalf("after the redirects: %s", p.find("keys-card").Text())
	}
}

// TestSignInRefusesOpenRedirects: next is a dashboard path of this site, or
// nothing.
func TestSignInRefusesOpenRedirects(t *testing.T) {
	for _, bad := range []string{
		"//evil.example", "///evil.example", "/\\evil.example", "\\\\evil.example", `/\/evil.example`,
		"https://evil.example/dashboard", "http:/evil.example", "javascript:alert(1)", "evil.example/dashboard",
		"/dashboard//evil.example", "/dashboard/\\evil.example", "/dashboard\r\nSet-Cookie: x=1", "/dashboard\t/x",
		" /dashboard", "/dashboard@evil.example", "/dashboardx", "/dashboard#top", "/signin", "/", "",
		"/dashboard/" + strings.Repeat("x", 2100), "/dashboard/ü",
	} {
		if got := handlers.NextPath(bad); got != "" {
			t.Errorf("NextPath(%q) = %q", bad, got)
		}
	}
	for _, good := range []string{"/dashboard", "/dashboard/keys", "/dashboard/usage?bucket=hour&key=2", "/dashboard/keys?q=a%2Fb"} {
		if got := handlers.NextPath(good); got != good {
			t.Errorf("NextPath(%q) = %q", good, got)
		}
	}

	b, email := signedUp(t)
	wantStatus(t, b.post("/signout", nil, false), 303)
	for _, bad := range []string{"//evil.example", "/\\evil.example", "https://evil.example/dashboard", "/dashboard//evil.example"} {
		p := wantStatus(t, b.do("GET", "/signin?next="+url.QueryEscape(bad), nil, false), 200)
		if p.doc.Find("input[name=next]").Length() != 0 || p.find("session-ended").Length() != 0 || strings.Contains(p.body, "evil.example") {
			t.Fatalf("sign-in page for next=%q: %s", bad, p.body)
		}
		p = wantStatus(t, b.post("/signin", url.Values{"email": {email}, "password": {"page-password"}, "next": {bad}}, false), 303)
		if p.header.Get("Location") != "/dashboard/keys" {
			t.Fatalf("next=%q led to %q", bad, p.header.Get("Location"))
		}
		wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 200) // the new session's token
		wantStatus(t, b.post("/signout", nil, false), 303)
	}
}

func TestLandingPage(t *testing.T) {
	b := newClient(t)
	p := wantStatus(t, b.do("GET", "/", nil, false), 200)
	text := p.find("landing").Text()
	for _, want := range []string{"OpenAI-compatible", "prepaid credits", "Proxy keys", "Billing keys", "modelswitch/echo", "http://example.com/v1/chat/completions"} {
		if !strings.Contains(text, want) {
			t.Errorf("the landing page does not say %q", want)
		}
	}
	if p.find("landing-signup").AttrOr("href", "") != "/signup" || p.find("landing-signin").AttrOr("href", "") != "/signin" {
		t.Fatalf("landing links: %s", p.body)
	}
	// A Host header that could not make a URL is not shown.
	r := sendRaw(t, testApp(), "GET", "/", http.Header{"Host": {"evil.example'+alert(1)+'"}}, "")
	if r.status != 200 || strings.Contains(string(r.body), "evil.example") || !strings.Contains(string(r.body), "YOUR_MODELSWITCH_HOST") {
		t.Fatalf("landing page with a strange Host: %s", r.body)
	}
	signed, _ := signedUp(t)
	p = wantStatus(t, signed.do("GET", "/", nil, false), 303)
	if p.header.Get("Location") != "/dashboard/keys" {
		t.Fatalf("signed in, / leads to %q", p.header.Get("Location"))
	}
}

func TestSignUpShowsEveryError(t *testing.T) {
	b := newClient(t)
	b.do("GET", "/signup", nil, false)
	p := wantStatus(t, b.post("/signup", url.Values{"email": {"not an email"}, "password": {"short"}}, false), 422)
	if p.find("error-email").Length() != 1 || p.find("error-password").Length() != 1 ||
		p.doc.Find("#email").AttrOr("value", "") != "not an email" || p.doc.Find("#password").AttrOr("aria-invalid", "") != "true" {
		t.Fatalf("sign-up with two mistakes: %s", p.body)
	}
	p = wantStatus(t, b.post("/signup", url.Values{"email": {""}, "password": {"long enough password"}}, false), 422)
	if p.find("error-email").Length() != 1 || p.find("error-password").Length() != 0 {
		t.Fatalf("sign-up with one mistake: %s", p.body)
	}
	// Sign in, never log in.
	_, email := signedUp(t)
	p = wantStatus(t, b.post("/signup", url.Values{"email": {email}, "password": {"long enough password"}}, false), 422)
	if p.find("error-email").Text() != "An account with this email already exists. Sign in instead." {
		t.Fatalf("taken email: %s", p.body)
	}
	for _, path := range []string{"/", "/signin", "/signup", "/forgot-password"} {
		if p := wantStatus(t, newClient(t).do("GET", path, nil, false), 200); strings.Contains(strings.ToLower(p.doc.Text()), "log in") {
			t.Errorf("%s says log in", path)
		}
	}
}

func TestFavicon(t *testing.T) {
	r := sendRaw(t, testApp(), "GET", "/favicon.ico", nil, "")
	if r.status != 200 || r.header.Get("Content-Type") != "image/svg+xml" || !bytes.HasPrefix(r.body, []byte("<svg")) {
		t.Fatalf("/favicon.ico: %d %v", r.status, r.header)
	}
	p := wantStatus(t, newClient(t).do("GET", "/signin", nil, false), 200)
	icon := p.doc.Find(`link[rel=icon]`).AttrOr("href", "")
	if !strings.HasPrefix(icon, "/assets/favicon.svg?v=") {
		t.Fatalf("icon link %q", icon)
	}
	if r := sendRaw(t, testApp(), "GET", icon, nil, ""); r.status != 200 || !bytes.Equal(r.body, sendRaw(t, testApp(), "GET", "/favicon.ico", nil, "").body) {
		t.Fatalf("%s: %d", icon, r.status)
	}
}

func TestNotFoundPageSpeaksToPeople(t *testing.T) {
	signed, _ := signedUp(t)
	for _, c := range []struct {
		b     *client
		links []string
	}{{newClient(t), []string{"to-home", "to-signin"}}, {signed, []string{"to-dashboard"}}} {
		p := wantStatus(t, c.b.do("GET", "/no/such/page", nil, false), 404)
		if p.doc.Find("h1").Text() != "Page not found" || !strings.Contains(p.find("not-found").Text(), "no page at this address") ||
			strings.Contains(p.body, "API reference") || !strings.HasPrefix(p.header.Get("Content-Type"), "text/html") {
			t.Fatalf("404 page: %s", p.body)
		}
		for _, l := range c.links {
			if p.find(l).AttrOr("href", "") == "" {
				t.Fatalf("the 404 page has no %s link: %s", l, p.body)
			}
		}
	}
	// The API still answers in JSON.
	if r := expect(t, call(t, "GET", "/api/nothing", "", nil), 404); r.errCode() != "not_found" {
		t.Fatalf("/api 404: %s", r.raw)
	}
	// A missing key is still the key's own message.
	p := wantStatus(t, signed.post("/dashboard/keys/999999999/delete", nil, false), 404)
	if !strings.Contains(p.doc.Find("h1").Text(), "No key with this id") {
		t.Fatalf("missing key: %s", p.body)
	}
}

func TestSignOutEverywhereAsksFirst(t *testing.T) {
	b, email := signedUp(t)
	second := newClient(t)
	second.do("GET", "/signin", nil, false)
	wantStatus(t, second.post("/signin", url.Values{"email": {email}, "password": {"page-password"}}, false), 303)

	p := wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 200)
	if p.find("signout-everywhere").AttrOr("href", "") != "/signout-everywhere" {
		t.Fatalf("header: %s", p.find("signout-everywhere").Parent().Text())
	}
	p = wantStatus(t, b.do("GET", "/signout-everywhere", nil, false), 200)
	form := p.find("signout-everywhere-form")
	if form.AttrOr("method", "") != "post" || form.AttrOr("action", "") != "/signout-everywhere" ||
		p.find("confirm-signout-everywhere").Length() != 1 || p.find("cancel-signout-everywhere").AttrOr("href", "") == "" {
		t.Fatalf("confirmation: %s", p.body)
	}
	// Asking signs nobody out.
	wantStatus(t, second.do("GET", "/dashboard/keys", nil, false), 200)
	wantStatus(t, b.post("/signout-everywhere", nil, false), 303)
	wantStatus(t, second.do("GET", "/dashboard/keys", nil, false), 303)
	wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 303)
}

// formToken is the one-time token of the create form on a page.
func formToken(t testing.TB, p page) string {
	t.Helper()
	tok := p.find("create-key-form").Find(`input[name="form_token"]`).AttrOr("value", "")
	if len(tok) < 40 {
		t.Fatalf("create form without a token: %s", p.find("create-key-form").Text())
	}
	return tok
}

// revealed is the key a create's answer shows.
func revealed(t testing.TB, p page) string {
	t.Helper()
	key := revealedIn(p.doc.Selection)
	if !proxyKeyRE.MatchString(key) && !billingKeyRE.MatchString(key) {
		t.Fatalf("no key revealed: %d %s", p.status, p.body)
	}
	return key
}

// revealedIn is the key shown in a page or fragment: an input's value or a
// textarea's text.
func revealedIn(s *goquery.Selection) string {
	el := s.Find("[data-testid=revealed-key]")
	if v, ok := el.Attr("value"); ok {
		return v
	}
	return strings.TrimSpace(el.Text())
}

// TestCreateFormMakesOneKey: sending a create form twice (a double click
// without JavaScript, a reload) makes one key and shows it both times, to
// that session only.
func TestCreateFormMakesOneKey(t *testing.T) {
	b, email := signedUp(t)
	p := wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 200)
	tok := formToken(t, p)
	if again := formToken(t, wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 200)); again == tok {
		t.Fatal("two pages carry the same form token")
	}
	form := func(name, token string) url.Values {
		return url.Values{"name": {name}, "form_token": {token}}
	}
	first := revealed(t, wantStatus(t, b.post("/dashboard/keys", form("Once", tok), false), 201))
	second := wantStatus(t, b.post("/dashboard/keys", form("Once", tok), false), 201)
	if got := revealed(t, second); got != first {
		t.Fatal("the second submit showed another key")
	}
	// htmx, and other fields, still show the key the token made, by its own name.
	p = wantStatus(t, b.post("/dashboard/keys", form("Changed my mind", tok), true), 201)
	if revealed(t, p) != first || !strings.Contains(p.find("reveal-modal").Text(), "Once") {
		t.Fatalf("htmx resubmit: %s", p.find("reveal-modal").Text())
	}
	count := func(c *client) int {
		return wantStatus(t, c.do("GET", "/dashboard/keys", nil, false), 200).find("key-row").Length()
	}
	if n := count(b); n != 1 {
		t.Fatalf("%d keys after three submits of one form; want 1", n)
	}

	// Two submits at once: one waits for the other.
	tok = formToken(t, wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 200))
	var wg sync.WaitGroup
	keys := make([]string, 2)
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := b.cookieHeader()
			h.Set("Content-Type", "application/x-www-form-urlencoded")
			r := sendRaw(t, testApp(), "POST", "/dashboard/keys", h, url.Values{"name": {"Racing"}, "form_token": {tok}, "_csrf": {b.csrf}}.Encode())
			doc, _ := goquery.NewDocumentFromReader(bytes.NewReader(r.body))
			if r.status != 201 {
				t.Errorf("concurrent submit: %d", r.status)
			}
			keys[i] = revealedIn(doc.Selection)
		}()
	}
	wg.Wait()
	if keys[0] == "" || keys[0] != keys[1] {
		t.Fatalf("concurrent submits showed %q and %q", keys[0], keys[1])
	}
	if n := count(b); n != 2 {
		t.Fatalf("%d keys; want 2", n)
	}

	// Another session of the account with the same token makes its own key:
	// a token never shows a key to anyone else.
	other := newClient(t)
	other.do("GET", "/signin", nil, false)
	wantStatus(t, other.post("/signin", url.Values{"email": {email}, "password": {"page-password"}}, false), 303)
	wantStatus(t, other.do("GET", "/dashboard/keys", nil, false), 200)
	if k := revealed(t, wantStatus(t, other.post("/dashboard/keys", form("Other session", tok), false), 201)); k == first || k == keys[0] {
		t.Fatal("another session was shown this session's key")
	}

	// A refused form keeps nothing: corrected, the same token makes the key.
	tok = formToken(t, wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 200))
	wantStatus(t, b.post("/dashboard/keys", form("", tok), false), 422)
	fixed := revealed(t, wantStatus(t, b.post("/dashboard/keys", form("Fixed", tok), false), 201))
	if fixed == first || count(b) != 4 {
		t.Fatalf("after a refused form: %d keys", count(b))
	}
}

// sessionIDOf reads the server-side session id from a client's cookie.
func sessionIDOf(t *testing.T, b *client) string {
	t.Helper()
	req := httptest.NewRequest("GET", "/", nil)
	req.AddCookie(b.cookies["modelswitch_session"])
	s, err := sessions.NewCookieStore(testCfg.Derive("cookie-hash"), testCfg.Derive("cookie-block")).New(req, "modelswitch_session")
	sid, _ := s.Values["sid"].(string)
	if err != nil || sid == "" {
		t.Fatalf("no session in the cookie: %v", err)
	}
	return sid
}

// TestCreateFormWaitsForTheFirst: a submit that finds the same form still
// in flight waits for it and shows its key, rather than refusing: the first
// answer may never reach the browser, which shows only the last.
func TestCreateFormWaitsForTheFirst(t *testing.T) {
	b, email := signedUp(t)
	u, err := store.CheckPassword(context.Background(), email, "page-password", testAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	tok := formToken(t, wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 200))
	// The first submit, in flight: the test holds its claim.
	s := store.WithIdempotencySecret(testCfg.Derive("idempotency"))
	claim, _, err := s.ClaimIdempotencyKey(context.Background(), db.IdempotencyKey{UserID: u.ID, Scope: "form:" + sessionIDOf(t, b),
		Value: tok, Request: []byte("/dashboard/keys")})
	if err != nil || claim == nil {
		t.Fatalf("claim: %v", err)
	}
	// The app's clock tells when the second submit has found the first in
	// flight: its claim reads the clock again for each look.
	var looks atomic.Int32
	waiting := make(chan struct{})
	clock := func() time.Time {
		if pc, _, _, ok := runtime.Caller(1); ok && strings.HasSuffix(runtime.FuncForPC(pc).Name(), "ClaimIdempotencyKey") && looks.Add(1) == 2 {
			close(waiting)
		}
		return time.Now()
	}
	a := newApp(t, testCfg, store.WithClock(clock), builtinCatalog, slog.New(slog.NewTextHandler(io.Discard, nil)))
	answer := make(chan page, 1)
	go func() {
		answer <- b.doOn(a, "POST", "/dashboard/keys", url.Values{"name": {"Second"}, "form_token": {tok}}, false)
	}()
	select {
	case <-waiting:
	case p := <-answer:
		t.Fatalf("the second submit did not wait for the first: %d %s", p.status, p.find("error-page").Text())
	}
	secret := "ms-" + strings.Repeat("A", 38)
	if err := claim.Save(context.Background(), 201, []byte(`{"ID": 1, "Name": "First", "Key": "`+secret+`"}`)); err != nil {
		t.Fatal(err)
	}
	p := <-answer
	if p.status != 201 || revealed(t, p) != secret || !strings.Contains(p.find("reveal-panel").Text(), "First") {
		t.Fatalf("the second submit: %d %s", p.status, p.find("reveal-panel").Text())
	}
}

// TestCSRFTokenMaskedOnEveryPage: every page shows the token under a mask of
// its own (the same on all its forms), never the token itself, and every
// masked copy works.
func TestCSRFTokenMaskedOnEveryPage(t *testing.T) {
	b, _ := signedUp(t)
	seen := map[string]bool{b.csrf: true}
	var tokens []string
	for range 3 {
		p := wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 200)
		fields := p.doc.Find(`input[name=_csrf]`).Map(func(_ int, s *goquery.Selection) string { return s.AttrOr("value", "") })
		tok := fields[0]
		for _, f := range fields {
			if f != tok {
				t.Fatalf("one page shows the token as %q and as %q", tok, f)
			}
		}
		if seen[tok] {
			t.Fatalf("the token %q is shown twice", tok)
		}
		seen[tok] = true
		tokens = append(tokens, tok)
	}
	for i, tok := range []string{tokens[0], tokens[len(tokens)-1]} {
		b.csrf = tok
		wantStatus(t, b.post("/dashboard/keys", url.Values{"name": {fmt.Sprint("masked ", i)}}, false), 201)
	}
}
