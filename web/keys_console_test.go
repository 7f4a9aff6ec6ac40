package web

// The keys console over HTTP: PUT expires_at, PUT /api/billing-keys/{id},
// the last-four hint, and the dashboard's search, sort, pages, expiry form,
// billing key rename and what a row action reports.

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"

	"modelswitch/db"
	"modelswitch/db/apikey"
)

// TestPutKeyExpiry: PUT /api/keys/{id} sets, moves and clears expires_at,
// with create's rule (in the future), on the caller's keys only.
func TestPutKeyExpiry(t *testing.T) {
	jwt := signup(t)
	mk := billingKey(t, jwt)
	id, ms := proxyKey(t, mk)
	path := fmt.Sprintf("/api/keys/%d", id)
	at := time.Now().Add(72 * time.Hour).UTC().Truncate(time.Second)

	r := expect(t, call(t, "PUT", path, mk, map[string]any{"expires_at": at.In(time.FixedZone("", 2*3600)).Format(time.RFC3339)}), 200)
	if r.body["expiresAt"] != at.Format(time.RFC3339) || r.body["name"] != "Production" || r.body["active"] != true || r.body["id"] != float64(id) {
		t.Fatalf("set expiry: %s", r.raw)
	}
	for _, bad := range []struct{ body, code string }{
		{fmt.Sprintf(`{"expires_at": %q}`, time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)), "invalid_expires_at"},
		{`{"expires_at": "2030-01-01"}`, "invalid_expires_at"},
		{`{"expires_at": "2030-01-01T00:00:00"}`, "invalid_expires_at"},
		{`{"expires_at": 1893456000}`, "invalid_type"},
		{`{"expires_at": "10000-01-01T00:00:00Z"}`, "invalid_expires_at"},
	} {
		r := call(t, "PUT", path, mk, bad.body)
		if r.status != 400 || r.errCode() != bad.code || r.errField() != "expires_at" {
			t.Errorf("%s: %d %s; want 400 %s on expires_at", bad.body, r.status, r.raw, bad.code)
		}
	}
	keys := list(t, expect(t, call(t, "GET", "/api/keys", mk, nil), 200).body["keys"])
	if len(keys) != 1 || keys[0]["expiresAt"] != at.Format(time.RFC3339) {
		t.Fatalf("refused updates changed the key: %v", keys)
	}

	// Another account's key, or a billing key's id: 404, and nothing changes.
	other := billingKey(t, signup(t))
	expect(t, call(t, "PUT", path, other, `{"expires_at": null}`), 404)
	billingID := list(t, expect(t, call(t, "GET", "/api/billing-keys", jwt, nil), 200).body["keys"])[0]["id"]
	if r := expect(t, call(t, "PUT", fmt.Sprintf("/api/keys/%v", billingID), mk, `{"expires_at": null}`), 404); r.errCode() != "key_not_found" {
		t.Fatalf("a billing key's id: %s", r.raw)
	}

	// Null clears it.
	r = expect(t, call(t, "PUT", path, mk, `{"expires_at": null}`), 200)
	if _, ok := r.body["expiresAt"]; !ok || r.body["expiresAt"] != nil {
		t.Fatalf("clear expiry: %s", r.raw)
	}

	// A new expiry takes effect by itself; clearing it brings the key back.
	soon := time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339)
	expect(t, call(t, "PUT", path, mk, map[string]any{"expires_at": soon}), 200)
	waitUntil(t, "the key stops at its new expiry", func() bool { return call(t, "GET", "/v1/models", ms, nil).status == 401 })
	r = expect(t, call(t, "GET", "/api/keys", mk, nil), 200)
	if k := list(t, r.body["keys"])[0]; k["expiresAt"] != soon || k["active"] != true {
		t.Fatalf("expired key: %v", k)
	}
	expect(t, call(t, "PUT", path, mk, `{"expires_at": null}`), 200)
	waitUntil(t, "the key works again without an expiry", func() bool { return call(t, "GET", "/v1/models", ms, nil).status == 200 })
}

// TestPutBillingKey: PUT /api/billing-keys/{id} renames, deactivates and
// sets the expiry of a billing key with the session, as PUT /api/keys does
// for proxy keys, without spending fields.
func TestPutBillingKey(t *testing.T) {
	jwt := signup(t)
	mk := billingKey(t, jwt)
	secret := strings.TrimPrefix(mk, "Bearer ")
	id := list(t, expect(t, call(t, "GET", "/api/billing-keys", jwt, nil), 200).body["keys"])[0]["id"]
	path := fmt.Sprintf("/api/billing-keys/%v", id)

	r := expect(t, call(t, "PUT", path, jwt, `{"name": " Deploy bot "}`), 200)
	if r.body["name"] != "Deploy bot" || r.body["id"] != id || r.body["prefix"] != secret[:7]+"xxxx" || r.body["lastFour"] != secret[len(secret)-4:] ||
		r.body["active"] != true || r.body["expiresAt"] != nil {
		t.Fatalf("rename: %s", r.raw)
	}
	for _, field := range []string{"limit", "limitReset", "usage", "models"} {
		if _, ok := r.body[field]; ok {
			t.Fatalf("a billing key shows %s: %s", field, r.raw)
		}
	}
	// Deactivated, it stops working; reactivated, it works again.
	r = expect(t, call(t, "PUT", path, jwt, `{"active": false}`), 200)
	if r.body["active"] != false || r.body["name"] != "Deploy bot" {
		t.Fatalf("deactivate: %s", r.raw)
	}
	waitUntil(t, "the deactivated billing key is refused", func() bool { return call(t, "GET", "/api/keys", mk, nil).status == 401 })
	expect(t, call(t, "PUT", path, jwt, `{"active": true}`), 200)
	waitUntil(t, "the reactivated billing key works", func() bool { return call(t, "GET", "/api/keys", mk, nil).status == 200 })
	at := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	if r = expect(t, call(t, "PUT", path, jwt, map[string]any{"expires_at": at}), 200); r.body["expiresAt"] != at {
		t.Fatalf("expiry: %s", r.raw)
	}

	// Bad input: 400 naming the field; nothing changes.
	for body, want := range map[string][2]string{
		`{"limit": 5}`:        {"unknown_field", "limit"},
		`{"models": null}`:    {"unknown_field", "models"},
		`{}`:                  {"empty_update", ""},
		`{"name": ""}`:        {"invalid_name", "name"},
		`{"active": "false"}`: {"invalid_type", "active"},
		`{"name": "x"`:        {"invalid_json", ""},
	} {
		r := call(t, "PUT", path, jwt, body)
		if r.status != 400 || r.errCode() != want[0] || r.errField() != want[1] {
			t.Errorf("%s: %d %s; want 400 %s on %q", body, r.status, r.raw, want[0], want[1])
		}
	}
	if r := call(t, "PUT", "/api/billing-keys/abc", jwt, `{"active": false}`); r.status != 400 || r.errCode() != "invalid_id" {
		t.Errorf("bad id: %d %s", r.status, r.raw)
	}
	// Only a session may call it; only on its own account's billing keys.
	if r := call(t, "PUT", path, mk, `{"active": false}`); r.status != 401 || r.header.Get("WWW-Authenticate") == "" {
		t.Errorf("with a billing key: %d %s", r.status, r.raw)
	}
	proxyID, _ := proxyKey(t, mk)
	bob := signup(t)
	for _, p := range []string{path, fmt.Sprintf("/api/billing-keys/%d", proxyID), "/api/billing-keys/999999999"} {
		if r := call(t, "PUT", p, bob, `{"active": false}`); r.status != 404 || r.errCode() != "key_not_found" {
			t.Errorf("PUT %s by another account: %d %s", p, r.status, r.raw)
		}
	}
	if r := call(t, "PUT", fmt.Sprintf("/api/billing-keys/%d", proxyID), jwt, `{"active": false}`); r.status != 404 {
		t.Errorf("a proxy key's id as a billing key's: %d %s", r.status, r.raw)
	}
	r = expect(t, call(t, "GET", "/api/billing-keys", jwt, nil), 200)
	if k := list(t, r.body["keys"])[0]; k["name"] != "Deploy bot" || k["active"] != true || k["expiresAt"] != at {
		t.Fatalf("after refused updates: %v", k)
	}
}

// TestPutBillingKeyLimited: PUT /api/billing-keys/{id} counts against the
// session's key writes, like the other key writes.
func TestPutBillingKeyLimited(t *testing.T) {
	jwt, email := signupWithEmail(t)
	billingKey(t, jwt)
	id := list(t, expect(t, call(t, "GET", "/api/billing-keys", jwt, nil), 200).body["keys"])[0]["id"]
	// A second session that has written nothing yet.
	r := expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": "hunter2hunter2"}), 200)
	fresh := "Bearer " + r.body["token"].(string)
	a := limitedApp(t, 2, 0)
	path := fmt.Sprintf("/api/billing-keys/%v", id)
	for i := range 2 {
		expect(t, callOn(t, a, "PUT", path, fresh, map[string]any{"name": fmt.Sprint("Name ", i)}), 200)
	}
	r = callOn(t, a, "PUT", path, fresh, map[string]any{"name": "One too many"})
	if r.status != 429 || r.header.Get("Retry-After") == "" {
		t.Fatalf("third write in a minute: %d %v %s", r.status, r.header, r.raw)
	}
}

// TestKeyLastFour: every key object carries the key's last four characters
// beside the reference's prefix; the dashboard shows them as ms-abc1…wxyz.
func TestKeyLastFour(t *testing.T) {
	b, _ := signedUp(t)
	p := wantStatus(t, b.post("/dashboard/billing-keys", url.Values{"name": {"Hint"}}, true), 201)
	mk := p.find("revealed-key").Text()
	if !strings.HasPrefix(mk, "mk-") {
		t.Fatalf("no key revealed: %s", p.body)
	}
	r := expect(t, call(t, "POST", "/api/keys", "Bearer "+mk, map[string]string{"name": "Hinted"}), 201)
	ms, id := r.body["key"].(string), r.body["id"]
	keys := list(t, expect(t, call(t, "GET", "/api/keys", "Bearer "+mk, nil), 200).body["keys"])
	if keys[0]["prefix"] != ms[:7]+"xxxx" || keys[0]["lastFour"] != ms[len(ms)-4:] {
		t.Fatalf("list: %v", keys[0])
	}
	r = expect(t, call(t, "PUT", fmt.Sprintf("/api/keys/%v", id), "Bearer "+mk, `{"name": "Still hinted"}`), 200)
	if r.body["lastFour"] != ms[len(ms)-4:] {
		t.Fatalf("update: %s", r.raw)
	}
	p = wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 200)
	row := p.find("key-row")
	if row.Find("[data-testid=key-hint]").Text() != ms[:7]+"…"+ms[len(ms)-4:] || row.Find("[data-testid=key-prefix]").Text() != ms[:7]+"xxxx" {
		t.Fatalf("row identity %q", row.Find("[data-testid=key-identity]").Text())
	}
	// The whole key is never in a page.
	if strings.Contains(p.body, ms) {
		t.Fatal("the page shows the whole key")
	}
}

// keysUser is a dashboard client whose account has n API keys named
// "Key 000"…, of which every 40th (7, 47, 87) is "Production EU n"; it
// returns the keys oldest first.
func keysUser(t *testing.T, n int) (*client, int64, []db.CreatedKey) {
	t.Helper()
	b, email := signedUp(t)
	ctx := context.Background()
	u, err := store.CheckPassword(ctx, email, "page-password", testAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]db.CreatedKey, n)
	for i := range n {
		name := fmt.Sprintf("Key %03d", i)
		if i%40 == 7 {
			name = fmt.Sprintf("Production EU %d", i)
		}
		if keys[i], err = store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	return b, u.ID, keys
}

func keysRowIDs(p page) []string {
	var ids []string
	p.find("key-row").Each(func(_ int, s *goquery.Selection) { ids = append(ids, s.AttrOr("data-key-id", "")) })
	return ids
}

func keyIDOf(k db.CreatedKey) string { return strconv.FormatInt(k.ID, 10) }

// TestKeysSearchSortPages: the API Keys page lists 50 keys a page, searches
// names and key prefixes, sorts by creation or last use, as plain GET
// requests and as htmx swaps; bad queries are a 400 with the error beside
// the search field.
func TestKeysSearchSortPages(t *testing.T) {
	b, _, keys := keysUser(t, 120)
	newest := keyIDOf(keys[119])

	p := wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 200)
	ids := keysRowIDs(p)
	if len(ids) != 50 || ids[0] != newest || p.find("keys-summary").Text() != "120 API keys, showing 1–50." ||
		p.find("page-next").AttrOr("href", "") != "/dashboard/keys?page=2" || p.find("page-prev").Length() != 0 ||
		p.find("page-status").Text() != "Page 1 of 3" {
		t.Fatalf("first page: %d rows, summary %q", len(ids), p.find("keys-summary").Text())
	}
	p = wantStatus(t, b.do("GET", "/dashboard/keys?page=3", nil, false), 200)
	if ids := keysRowIDs(p); len(ids) != 20 || ids[19] != keyIDOf(keys[0]) || p.find("page-prev").AttrOr("href", "") != "/dashboard/keys?page=2" ||
		p.find("page-next").Length() != 0 || p.find("keys-summary").Text() != "120 API keys, showing 101–120." {
		t.Fatalf("last page: %d rows", len(ids))
	}
	// A page past the end shows the last page.
	if p = wantStatus(t, b.do("GET", "/dashboard/keys?page=7", nil, false), 200); p.find("page-status").Text() != "Page 3 of 3" {
		t.Fatalf("page 7: %q", p.find("page-status").Text())
	}

	// Search by name, any case: the form keeps it, and every link carries it.
	p = wantStatus(t, b.do("GET", "/dashboard/keys?q=production+eu&sort=created", nil, false), 200)
	if ids := keysRowIDs(p); len(ids) != 3 || ids[0] != keyIDOf(keys[87]) || ids[2] != keyIDOf(keys[7]) ||
		p.find("keys-summary").Text() != "3 API keys match “production eu”." || p.find("search-input").AttrOr("value", "") != "production eu" ||
		p.find("pager").Length() != 0 {
		t.Fatalf("search: %v %q", ids, p.find("keys-summary").Text())
	}
	if got := p.find("rename-form").First().AttrOr("action", ""); got != "/dashboard/keys/"+keyIDOf(keys[87])+"?q=production+eu" {
		t.Fatalf("a row form posts to %q, without the list's search", got)
	}
	// By prefix, and by the dashboard's form of a key.
	target := keys[57]
	tail := target.Secret[len(target.Secret)-4:]
	for _, q := range []string{target.Secret[:7], target.Secret[:7] + "…" + tail} {
		p = wantStatus(t, b.do("GET", "/dashboard/keys?q="+url.QueryEscape(q), nil, false), 200)
		if ids := keysRowIDs(p); len(ids) < 1 || ids[0] != keyIDOf(target) {
			t.Fatalf("search %q: %v", q, ids)
		}
	}
	// Nothing matches: say so, and offer to clear the search.
	p = wantStatus(t, b.do("GET", "/dashboard/keys?q=nothing+like+this&sort=last_used", nil, false), 200)
	if p.find("key-row").Length() != 0 || p.find("keys-empty").Length() != 0 || p.find("clear-search").AttrOr("href", "") != "/dashboard/keys?sort=last_used" {
		t.Fatalf("no match: %s", p.find("keys-card").Text())
	}

	// By last use: the most recent first, then keys never used.
	for _, k := range []db.CreatedKey{keys[5], keys[60]} {
		if err := store.RecordKeyUse(context.Background(), k.Key); err != nil {
			t.Fatal(err)
		}
	}
	p = wantStatus(t, b.do("GET", "/dashboard/keys?sort=last_used", nil, false), 200)
	if ids := keysRowIDs(p); ids[0] != keyIDOf(keys[60]) || ids[1] != keyIDOf(keys[5]) || ids[2] != newest ||
		p.find("sort-select").Find("option[selected]").AttrOr("value", "") != "last_used" ||
		p.find("page-next").AttrOr("href", "") != "/dashboard/keys?page=2&sort=last_used" {
		t.Fatalf("by last use: %v", ids[:3])
	}
	if got := p.find("key-row").First().Find("[data-testid=key-last-used-exact]").Text(); !strings.HasSuffix(got, " UTC") {
		t.Fatalf("the last use's exact time: %q", got)
	}

	// htmx asks for the card alone, and the same query.
	p = wantStatus(t, b.doKeysHX("GET", "/dashboard/keys?q=production&page=1"), 200)
	if !strings.HasPrefix(p.body, `<section id="keys-card"`) || strings.Contains(p.body, "<html") || len(keysRowIDs(p)) != 3 ||
		!strings.Contains(p.header.Get("Vary"), "HX-Request") {
		t.Fatalf("htmx search: %.300s", p.body)
	}

	// Bad queries: 400 (422 for htmx, which swaps it in) with the message
	// beside the search, and the first page of every key.
	for query, want := range map[string]string{
		"q=" + strings.Repeat("x", 101): "at most 100 characters",
		"q=%FF":                         "plain text",
		"q=a%00b":                       "plain text",
		"q=" + keys[3].Secret:           "whole key",
		"sort=name":                     "Sort by",
		"page=0":                        "numbered from 1",
		"page=two":                      "numbered from 1",
	} {
		p := b.do("GET", "/dashboard/keys?"+query, nil, false)
		if p.status != 400 || !strings.Contains(p.find("list-error").Text(), want) || len(keysRowIDs(p)) != 50 {
			t.Errorf("?%.60s: %d, error %q; want 400 saying %q", query, p.status, p.find("list-error").Text(), want)
		}
		if p.find("search-input").AttrOr("aria-invalid", "") != "true" || strings.Contains(p.body, keys[3].Secret) {
			t.Errorf("?%.60s: the search field is not marked, or the key is echoed", query)
		}
		if p := b.doKeysHX("GET", "/dashboard/keys?"+query); p.status != 422 || p.find("list-error").Length() != 1 {
			t.Errorf("htmx ?%.60s: %d", query, p.status)
		}
	}

	// Another account sees none of these keys, however it searches.
	other, _ := signedUp(t)
	for _, q := range []string{"production", "key", target.Secret[:7]} {
		if p := wantStatus(t, other.do("GET", "/dashboard/keys?q="+url.QueryEscape(q), nil, false), 200); p.find("key-row").Length() != 0 {
			t.Fatalf("another account found %d keys with %q", p.find("key-row").Length(), q)
		}
	}
}

// doKeysHX sends a request as htmx does to swap the keys card.
func (b *client) doKeysHX(method, path string) page {
	b.t.Helper()
	req := httptest.NewRequest(method, path, nil)
	req.Header.Set("HX-Request", "true")
	req.Header.Set("HX-Target", "keys-card")
	req.Header.Set("X-CSRF-Token", b.csrf)
	req.Header.Set("X-Forwarded-For", testAddr(b.t))
	for _, c := range b.cookies {
		req.AddCookie(c)
	}
	res, err := testApp().Test(req, 30_000)
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

// TestKeysRowActionsReport: each row action says what it did: with htmx on
// the card (data-notice, data-focus), without JavaScript after its
// redirect, through a notice that cannot be forged.
func TestKeysRowActionsReport(t *testing.T) {
	b, _, keys := keysUser(t, 3)
	path := func(k db.CreatedKey) string { return "/dashboard/keys/" + keyIDOf(k) }
	card := func(p page) (notice, focus string) {
		c := p.doc.Find("#keys-card")
		return c.AttrOr("data-notice", ""), c.AttrOr("data-focus", "")
	}

	// Each delete form names the row that takes focus after it: the one
	// below, or above for the last row.
	p := wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 200)
	next := map[string]string{}
	p.find("key-row").Each(func(_ int, r *goquery.Selection) {
		next[r.AttrOr("data-key-id", "")] = r.Find(`form[action$="/delete"] input[name="next"]`).AttrOr("value", "")
	})
	if next[keyIDOf(keys[2])] != keyIDOf(keys[1]) || next[keyIDOf(keys[1])] != keyIDOf(keys[0]) || next[keyIDOf(keys[0])] != keyIDOf(keys[1]) {
		t.Fatalf("the rows to focus after a delete: %v", next)
	}

	p = wantStatus(t, b.post(path(keys[1]), url.Values{"active": {"false"}}, true), 200)
	if n, f := card(p); n != "Key “Key 001” deactivated." || f != "key-"+keyIDOf(keys[1])+"-toggle" {
		t.Fatalf("deactivate: %q %q", n, f)
	}
	p = wantStatus(t, b.post(path(keys[1]), url.Values{"active": {"true"}}, true), 200)
	if n, _ := card(p); n != "Key “Key 001” reactivated." {
		t.Fatalf("reactivate: %q", n)
	}
	p = wantStatus(t, b.post(path(keys[1]), url.Values{"name": {"Renamed"}}, true), 200)
	if n, f := card(p); n != "Key renamed to “Renamed”." || f != "key-"+keyIDOf(keys[1])+"-rename" {
		t.Fatalf("rename: %q %q", n, f)
	}
	// A refused rename reports nothing done; its form comes back open.
	p = wantStatus(t, b.post(path(keys[1]), url.Values{"name": {" "}}, true), 422)
	if n, _ := card(p); n != "" || p.doc.Find("details[data-popover][open] [data-testid=error-name]").Length() != 1 {
		t.Fatalf("refused rename: %q %s", n, p.body)
	}
	p = wantStatus(t, b.post(path(keys[1])+"/expiry", url.Values{"expires_at": {"2099-12-31"}}, true), 200)
	if n, f := card(p); n != "Key “Renamed” now works until Dec 31, 2099, end of day UTC." || f != "key-"+keyIDOf(keys[1])+"-expiry" {
		t.Fatalf("expiry: %q %q", n, f)
	}
	// Delete: focus goes to the row named by next, else the first row, else
	// the create form's name field.
	p = wantStatus(t, b.post(path(keys[1])+"/delete", url.Values{"next": {keyIDOf(keys[0])}}, true), 200)
	if n, f := card(p); n != "Key “Renamed” deleted." || f != "key-"+keyIDOf(keys[0]) {
		t.Fatalf("delete: %q %q", n, f)
	}
	p = wantStatus(t, b.post(path(keys[0])+"/delete", url.Values{"next": {keyIDOf(keys[1])}}, true), 200)
	if _, f := card(p); f != "key-"+keyIDOf(keys[2]) {
		t.Fatalf("delete with a gone next row: focus %q", f)
	}
	p = wantStatus(t, b.post(path(keys[2])+"/delete", nil, true), 200)
	if _, f := card(p); f != "key-name" || p.find("keys-empty").Length() != 1 {
		t.Fatalf("delete the last key: focus %q", f)
	}

	// Without JavaScript: a redirect back to the same list, whose page
	// shows the same words.
	b, _, keys = keysUser(t, 2)
	p = wantStatus(t, b.post(path(keys[1])+"?q=key&sort=last_used", url.Values{"name": {"Key <b>one</b>"}}, false), 303)
	loc := p.header.Get("Location")
	if !strings.HasPrefix(loc, "/dashboard/keys?q=key&sort=last_used&done=renamed&") {
		t.Fatalf("redirect to %q", loc)
	}
	p = wantStatus(t, b.do("GET", loc, nil, false), 200)
	if p.find("keys-notice").Text() != "Key renamed to “Key <b>one</b>”." || p.find("search-input").AttrOr("value", "") != "key" {
		t.Fatalf("notice %q", p.find("keys-notice").Text())
	}
	p = wantStatus(t, b.post(path(keys[1])+"/delete", nil, false), 303)
	deleted := p.header.Get("Location")
	if p = wantStatus(t, b.do("GET", deleted, nil, false), 200); p.find("keys-notice").Text() != "Key “Key <b>one</b>” deleted." {
		t.Fatalf("delete notice %q", p.find("keys-notice").Text())
	}
	// Forged or altered notices show nothing: the words are fixed per code
	// and the name is signed with this session's secret.
	u, _ := url.Parse(deleted)
	forged := u.Query()
	forged.Set("name", "Your account is locked: call +1 555 0100")
	for _, q := range []string{forged.Encode(), "done=deleted&name=Evil", "done=deleted&name=Evil&sig=" + u.Query().Get("sig"), "done=pwned&name=x&sig=x"} {
		p := wantStatus(t, b.do("GET", "/dashboard/keys?"+q, nil, false), 200)
		if p.find("keys-notice").Length() != 0 || strings.Contains(p.body, "555 0100") || strings.Contains(p.body, "Evil") {
			t.Errorf("?%s shows a notice: %q", q, p.find("keys-notice").Text())
		}
	}
	// Another session's genuine link shows nothing here either.
	other, _ := signedUp(t)
	if p := wantStatus(t, other.do("GET", deleted, nil, false), 200); p.find("keys-notice").Length() != 0 {
		t.Fatalf("another session shows %q", p.find("keys-notice").Text())
	}
}

// TestKeysExpiryForm: the Expiry pop-over sets the last day a key works,
// shows that day, and clears it; both kinds; bad dates are refused in place.
func TestKeysExpiryForm(t *testing.T) {
	b, _ := signedUp(t)
	p := wantStatus(t, b.post("/dashboard/billing-keys", url.Values{"name": {"Billing"}}, true), 201)
	mk := "Bearer " + p.find("revealed-key").Text()
	billingID := p.find("key-row").AttrOr("data-key-id", "")
	p = wantStatus(t, b.post("/dashboard/keys", url.Values{"name": {"Proxy"}, "expires_at": {"2098-06-01"}}, true), 201)
	proxyID := p.find("key-row").AttrOr("data-key-id", "")

	expiry := func(p page) string { return strings.Join(strings.Fields(p.find("key-expires").Text()), " ") }
	p = wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 200)
	if got := expiry(p); got != "Expires: Jun 1, 2098, end of day UTC" {
		t.Fatalf("created with Jun 1: shows %q", got)
	}
	if got := p.find("expiry-input").AttrOr("value", ""); got != "2098-06-01" {
		t.Fatalf("the Expiry form starts at %q", got)
	}

	p = wantStatus(t, b.post("/dashboard/keys/"+proxyID+"/expiry", url.Values{"expires_at": {"2099-12-26"}}, true), 200)
	if got := expiry(p); got != "Expires: Dec 26, 2099, end of day UTC" {
		t.Fatalf("after choosing Dec 26: %q", got)
	}
	keys := list(t, expect(t, call(t, "GET", "/api/keys", mk, nil), 200).body["keys"])
	if keys[0]["expiresAt"] != "2099-12-27T00:00:00Z" {
		t.Fatalf("the API sees %v", keys[0]["expiresAt"])
	}
	// Refused in place, the date kept; nothing changes.
	for _, bad := range []string{"2001-01-01", "next week", "2099-02-30"} {
		p = wantStatus(t, b.post("/dashboard/keys/"+proxyID+"/expiry", url.Values{"expires_at": {bad}}, true), 422)
		open := p.doc.Find("details[data-popover][open]")
		if open.Find("[data-testid=error-expires_at]").Length() != 1 || open.Find("[data-testid=expiry-input]").AttrOr("value", "") != bad ||
			open.Find("[data-testid=expiry-input]").AttrOr("aria-invalid", "") != "true" {
			t.Fatalf("%s: %s", bad, p.body)
		}
	}
	wantStatus(t, b.post("/dashboard/keys/"+proxyID+"/expiry", url.Values{"expires_at": {"2001-01-01"}}, false), 422)
	if keys := list(t, expect(t, call(t, "GET", "/api/keys", mk, nil), 200).body["keys"]); keys[0]["expiresAt"] != "2099-12-27T00:00:00Z" {
		t.Fatalf("a refused date changed the key: %v", keys[0]["expiresAt"])
	}
	// Never, by the button or an empty date; without JavaScript too.
	p = wantStatus(t, b.post("/dashboard/keys/"+proxyID+"/expiry", url.Values{"expires_at": {"2099-12-26"}, "never": {"true"}}, true), 200)
	if got := expiry(p); got != "Expires: Never" || p.find("expiry-never").Length() != 0 {
		t.Fatalf("never: %q", got)
	}
	wantStatus(t, b.post("/dashboard/keys/"+proxyID+"/expiry", url.Values{"expires_at": {"2099-01-02"}}, false), 303)
	p = wantStatus(t, b.post("/dashboard/keys/"+proxyID+"/expiry", url.Values{"expires_at": {""}}, false), 303)
	p = wantStatus(t, b.do("GET", p.header.Get("Location"), nil, false), 200)
	if got := expiry(p); got != "Expires: Never" || p.find("keys-notice").Text() != "Key “Proxy” no longer expires." {
		t.Fatalf("empty date: %q, notice %q", got, p.find("keys-notice").Text())
	}

	// Billing keys too, and their rename and deactivate.
	p = wantStatus(t, b.post("/dashboard/billing-keys/"+billingID+"/expiry", url.Values{"expires_at": {"2099-03-01"}}, true), 200)
	if got := expiry(p); got != "Expires: Mar 1, 2099, end of day UTC" {
		t.Fatalf("billing expiry: %q", got)
	}
	p = wantStatus(t, b.post("/dashboard/billing-keys/"+billingID, url.Values{"name": {"Billing renamed"}}, true), 200)
	if p.find("key-name").Text() != "Billing renamed" || p.find("limits-key").Length() != 0 {
		t.Fatalf("billing rename: %s", p.find("keys-card").Text())
	}
	expect(t, call(t, "GET", "/api/keys", mk, nil), 200)
	p = wantStatus(t, b.post("/dashboard/billing-keys/"+billingID, url.Values{"active": {"false"}}, true), 200)
	if p.find("key-status").Text() != "Inactive" {
		t.Fatalf("billing deactivate: %s", p.find("keys-card").Text())
	}
	waitUntil(t, "the deactivated billing key is refused", func() bool { return call(t, "GET", "/api/keys", mk, nil).status == 401 })
}
