package web

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/PuerkitoBio/goquery"
	"github.com/gofiber/fiber/v2"
)

// limitedApp is the app with at most writesPerMinute key writes per billing
// key or session and maxKeys keys of each kind per account. Its counts live
// in the test database, shared with the test app.
func limitedApp(t testing.TB, writesPerMinute, maxKeys int) *fiber.App {
	cfg := testCfg
	cfg.KeyWritesPerMinute = writesPerMinute
	s := *store
	s.MaxKeys = maxKeys
	a := newApp(t, cfg, &s, builtinCatalog, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return a
}

// callOn is call on another app.
func callOn(t testing.TB, a *fiber.App, method, path, auth string, body any) response {
	t.Helper()
	var raw string
	if body != nil {
		b, _ := json.Marshal(body)
		raw = string(b)
	}
	req := httptest.NewRequest(method, path, strings.NewReader(raw))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("X-Forwarded-For", testAddr(t))
	res, err := a.Test(req, 30_000)
	if err != nil {
		t.Fatal(err)
	}
	return readResponse(t, res)
}

// doOn sends a dashboard request with the client's session to another app.
func (b *client) doOn(a *fiber.App, method, path string, form url.Values, htmx bool) page {
	b.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if !htmx && method == "POST" {
		form.Set("_csrf", b.csrf)
	}
	req := httptest.NewRequest(method, path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if htmx {
		req.Header.Set("HX-Request", "true")
		req.Header.Set("X-CSRF-Token", b.csrf)
	}
	req.Header.Set("X-Forwarded-For", testAddr(b.t))
	for _, c := range b.cookies {
		req.AddCookie(c)
	}
	res, err := a.Test(req, 30_000)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	doc, err := goquery.NewDocumentFromReader(strings.NewReader(string(raw)))
	if err != nil {
		b.t.Fatal(err)
	}
	return page{status: res.StatusCode, header: res.Header, body: string(raw), doc: doc}
}

// wantRetryAfter checks a 429's Retry-After: whole seconds within the
// one-minute window.
func wantRetryAfter(t *testing.T, header interface{ Get(string) string }) {
	t.Helper()
	n, err := strconv.Atoi(header.Get("Retry-After"))
	if err != nil || n < 1 || n > 61 {
		t.Fatalf("Retry-After %q", header.Get("Retry-After"))
	}
}

func TestKeyWriteLimitAPI(t *testing.T) {
	a := limitedApp(t, 3, 1000)
	jwt := signup(t)
	mk, mk2 := billingKey(t, jwt), billingKey(t, jwt) // two writes by the session
	var ids []any
	for i := range 3 {
		r := expect(t, callOn(t, a, "POST", "/api/keys", mk, map[string]string{"name": fmt.Sprint("key ", i)}), 201)
		ids = append(ids, r.body["id"])
	}
	r := expect(t, callOn(t, a, "POST", "/api/keys", mk, map[string]string{"name": "one too many"}), 429)
	wantRetryAfter(t, r.header)
	if e := r.body["error"].(map[string]any); e["code"] != "rate_limited" || !strings.Contains(e["message"].(string), "at most 3 a minute") {
		t.Fatalf("429 body %s", r.raw)
	}
	// Every write counts, not only creates; reads do not, and a refused
	// write changes nothing.
	expect(t, callOn(t, a, "PUT", fmt.Sprintf("/api/keys/%v", ids[0]), mk, map[string]string{"name": "renamed"}), 429)
	expect(t, callOn(t, a, "DELETE", fmt.Sprintf("/api/keys/%v", ids[0]), mk, nil), 429)
	r = expect(t, callOn(t, a, "GET", "/api/keys", mk, nil), 200)
	if keys := list(t, r.body["keys"]); len(keys) != 3 || keys[2]["name"] != "key 0" {
		t.Fatalf("keys after refused writes: %s", r.raw)
	}

	// Another billing key of the account counts on its own, and so does
	// another account.
	expect(t, callOn(t, a, "POST", "/api/keys", mk2, map[string]string{"name": "second billing key"}), 201)
	expect(t, callOn(t, a, "POST", "/api/keys", billingKey(t, signup(t)), map[string]string{"name": "other account"}), 201)

	// A session JWT is counted like a billing key: two writes made, one left.
	expect(t, callOn(t, a, "POST", "/api/billing-keys", jwt, map[string]string{"name": "third"}), 201)
	r = expect(t, callOn(t, a, "POST", "/api/billing-keys", jwt, map[string]string{"name": "fourth"}), 429)
	wantRetryAfter(t, r.header)
	if r.errCode() != "rate_limited" {
		t.Fatalf("429 body %s", r.raw)
	}
}

func TestKeyWriteLimitDashboard(t *testing.T) {
	a := limitedApp(t, 3, 1000)
	b, _ := signedUp(t)
	for i := range 3 {
		wantStatus(t, b.doOn(a, "POST", "/dashboard/keys", url.Values{"name": {fmt.Sprint("key ", i)}}, i%2 == 0), 201)
	}
	for _, htmx := range []bool{false, true} {
		p := wantStatus(t, b.doOn(a, "POST", "/dashboard/keys", url.Values{"name": {"one too many"}}, htmx), 429)
		wantRetryAfter(t, p.header)
		if !strings.Contains(p.header.Get("Content-Type"), "text/html") ||
			!strings.Contains(p.doc.Find("h1").Text(), "Too many changes to keys: at most 3 a minute") {
			t.Fatalf("429 page: %v %s", p.header, p.body)
		}
	}
	p := wantStatus(t, b.doOn(a, "GET", "/dashboard/keys", nil, false), 200)
	rows := p.find("key-row")
	if rows.Length() != 3 {
		t.Fatalf("%d keys after refused creates; want 3", rows.Length())
	}
	id := rows.First().AttrOr("data-key-id", "")
	wantStatus(t, b.doOn(a, "POST", "/dashboard/keys/"+id+"/delete", nil, true), 429)

	// Another session has its own count.
	other, _ := signedUp(t)
	wantStatus(t, other.doOn(a, "POST", "/dashboard/billing-keys", url.Values{"name": {"other"}}, true), 201)
}

func TestKeyCapAPI(t *testing.T) {
	a := limitedApp(t, 1000, 2)
	jwt := signup(t)
	mk := billingKey(t, jwt)
	for i := range 2 {
		expect(t, callOn(t, a, "POST", "/api/keys", mk, map[string]string{"name": fmt.Sprint("key ", i)}), 201)
	}
	r := expect(t, callOn(t, a, "POST", "/api/keys", mk, map[string]string{"name": "one too many"}), 409)
	if r.errCode() != "key_limit_reached" || r.body["error"].(map[string]any)["message"] !=
		"This account has reached its limit of 2 API keys. Delete keys you no longer use, then create this one again." {
		t.Fatalf("409 body %s", r.raw)
	}
	if keys := list(t, expect(t, callOn(t, a, "GET", "/api/keys", mk, nil), 200).body["keys"]); len(keys) != 2 {
		t.Fatalf("%d keys after a refused create", len(keys))
	}
	// Billing keys have a cap of their own: one made, one left.
	expect(t, callOn(t, a, "POST", "/api/billing-keys", jwt, map[string]string{"name": "second"}), 201)
	r = expect(t, callOn(t, a, "POST", "/api/billing-keys", jwt, map[string]string{"name": "third"}), 409)
	if r.errCode() != "key_limit_reached" || !strings.Contains(r.raw, "limit of 2 billing keys") {
		t.Fatalf("409 body %s", r.raw)
	}
}

func TestKeyCapDashboard(t *testing.T) {
	a := limitedApp(t, 1000, 2)
	b, _ := signedUp(t)
	for i := range 2 {
		wantStatus(t, b.doOn(a, "POST", "/dashboard/keys", url.Values{"name": {fmt.Sprint("key ", i)}}, true), 201)
	}
	const msg = "This account has reached its limit of 2 API keys. Delete keys you no longer use, then create this one again."
	// With htmx the form is swapped for itself with the message; without,
	// the page comes back with it. Either way the input stays.
	p := wantStatus(t, b.doOn(a, "POST", "/dashboard/keys", url.Values{"name": {"third"}}, true), 422)
	if p.header.Get("HX-Retarget") != "#create-form" || p.find("form-error").Text() != msg ||
		p.doc.Find("#key-name").AttrOr("value", "") != "third" {
		t.Fatalf("htmx create at the cap: %v %s", p.header, p.body)
	}
	p = wantStatus(t, b.doOn(a, "POST", "/dashboard/keys", url.Values{"name": {"third"}}, false), 422)
	if p.find("create-key-form").Find("[data-testid=form-error]").Text() != msg || p.find("key-row").Length() != 2 {
		t.Fatalf("plain create at the cap: %s", p.body)
	}
}
