package web

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/gofiber/fiber/v2"

	"modelswitch/config"
	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/db/dbtest"
	"modelswitch/handlers"
	"modelswitch/web/request"
)

// client is a cookie-keeping client of the dashboard over app.Test.
type client struct {
	t       testing.TB
	cookies map[string]*http.Cookie
	csrf    string
}

func newClient(t testing.TB) *client {
	return &client{t: t, cookies: map[string]*http.Cookie{}}
}

type page struct {
	status int
	header http.Header
	body   string
	doc    *goquery.Document
}

func (p page) find(testID string) *goquery.Selection {
	return p.doc.Find(fmt.Sprintf("[data-testid=%q]", testID))
}

// do sends a request; htmx marks it as an htmx request with the CSRF header.
func (b *client) do(method, path string, form url.Values, htmx bool) page {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if htmx {
		req.Header.Set("HX-Request", "true")
		req.Header.Set("X-CSRF-Token", b.csrf)
	}
	req.Header.Set("X-Forwarded-For", testAddr(b.t))
	for _, c := range b.cookies {
		req.AddCookie(c)
	}
	res, err := testApp().Test(req, 30_000)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	for _, c := range res.Cookies() {
		if c.MaxAge < 0 {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c
		}
	}
	raw, _ := io.ReadAll(res.Body)
	doc, err := goquery.NewDocumentFromReader(strings.NewReader(string(raw)))
	if err != nil {
		b.t.Fatal(err)
	}
	if token, ok := doc.Find(`meta[name="csrf-token"]`).Attr("content"); ok {
		b.csrf = token
	}
	return page{status: res.StatusCode, header: res.Header, body: string(raw), doc: doc}
}

// post submits a form with the page's CSRF token, as the client would.
func (b *client) post(path string, form url.Values, htmx bool) page {
	b.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if !htmx {
		form.Set("_csrf", b.csrf)
	}
	return b.do("POST", path, form, htmx)
}

func wantStatus(t testing.TB, p page, status int) page {
	t.Helper()
	if p.status != status {
		t.Fatalf("status %d, want %d\n%s", p.status, status, p.body)
	}
	return p
}

// signedUp returns a client signed in to a new account, and the email.
func signedUp(t testing.TB) (*client, string) {
	b := newClient(t)
	wantStatus(t, b.do("GET", "/signup", nil, false), 200)
	email := dbtest.Email("page")
	p := wantStatus(t, b.post("/signup", url.Values{"email": {email}, "password": {"page-password"}}, false), 303)
	if p.header.Get("Location") != "/dashboard/billing-keys" {
		t.Fatalf("sign-up goes to %q", p.header.Get("Location"))
	}
	wantStatus(t, b.do("GET", "/dashboard/billing-keys", nil, false), 200)
	return b, email
}

func TestPagesNeedASession(t *testing.T) {
	b := newClient(t)
	for _, path := range []string{"/dashboard/keys", "/dashboard/billing-keys", "/dashboard"} {
		p := wantStatus(t, b.do("GET", path, nil, false), 303)
		if want := "/signin?next=" + url.QueryEscape(path); p.header.Get("Location") != want {
			t.Errorf("%s redirects to %q, want %q", path, p.header.Get("Location"), want)
		}
	}
	if p := wantStatus(t, b.do("GET", "/", nil, false), 200); p.find("landing").Length() != 1 {
		t.Fatalf("the home page of a visitor: %s", p.body)
	}
	b.do("GET", "/signin", nil, false) // a visitor's CSRF token
	p := b.do("POST", "/dashboard/keys", url.Values{"name": {"x"}}, true)
	if p.status != 204 || p.header.Get("HX-Redirect") != "/signin?next=%2Fdashboard" {
		t.Fatalf("htmx post without a session: %d %v", p.status, p.header)
	}
}

func TestCSRF(t *testing.T) {
	b, _ := signedUp(t)
	good := b.csrf
	wrong := "x" + good[1:]
	if good[0] == 'x' {
		wrong = "y" + good[1:]
	}
	for name, token := range map[string]string{"missing": "", "wrong": wrong} {
		b.csrf = token
		form := url.Values{"name": {"csrf " + name}, "_csrf": {token}}
		if token == "" {
			form.Del("_csrf")
		}
		wantStatus(t, b.do("POST", "/dashboard/keys", form, false), 403)
		b.csrf = token // the error page carried the right token again
		wantStatus(t, b.do("POST", "/dashboard/keys", url.Values{"name": {"csrf " + name}}, true), 403)
	}
	b.csrf = good
	p := wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 200)
	if p.find("key-row").Length() != 0 {
		t.Fatal("a request refused for CSRF created a key")
	}
	// A token from another visitor's cookie does not work either.
	other := newClient(t)
	other.do("GET", "/signin", nil, false)
	b.csrf = other.csrf
	wantStatus(t, b.post("/dashboard/keys", url.Values{"name": {"stolen token"}}, false), 403)
	// The sign-in form is protected too.
	anon := newClient(t)
	wantStatus(t, anon.do("POST", "/signin", url.Values{"email": {"a@example.com"}, "password": {"12345678"}}, false), 403)
}

func TestCreateKeyPages(t *testing.T) {
	b, _ := signedUp(t)

	// htmx: the answer is the modal with the key, the table and a fresh form.
	p := wantStatus(t, b.post("/dashboard/billing-keys", url.Values{"name": {"Automation"}}, true), 201)
	key := p.find("revealed-key").Text()
	if !strings.HasPrefix(key, "mk-") || p.header.Get("Cache-Control") != "no-store" ||
		p.find("reveal-modal").AttrOr("role", "") != "dialog" || p.find("key-row").Length() != 1 {
		t.Fatalf("htmx create: %s", p.body)
	}
	if oob, _ := p.doc.Find("#keys-card").Attr("hx-swap-oob"); oob != "true" {
		t.Fatalf("table not swapped out of band: %s", p.body)
	}
	// The key works with the API, and is never shown again.
	expect(t, call(t, "GET", "/api/keys", "Bearer "+key, nil), 200)
	p = wantStatus(t, b.do("GET", "/dashboard/billing-keys", nil, false), 200)
	if strings.Contains(p.body, key) || p.find("key-row").Length() != 1 {
		t.Fatal("the list page shows the key")
	}

	// Without JavaScript: the page answers with the reveal panel.
	p = wantStatus(t, b.post("/dashboard/keys", url.Values{"name": {"Production"}, "expires_at": {"2099-12-31"}}, false), 201)
	key = p.find("reveal-panel").Find("[data-testid=revealed-key]").Text()
	if !strings.HasPrefix(key, "ms-") || p.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("plain create: %s", p.body)
	}
	// It works to the end of the chosen day, and that day is shown.
	expires := p.find("key-expires")
	if at := expires.Find("time[datetime]").AttrOr("datetime", ""); at != "2100-01-01T00:00:00Z" {
		t.Fatalf("expiry %q, want the end of 2099-12-31 UTC", at)
	}
	if got := strings.Join(strings.Fields(expires.Text()), " "); got != "Expires: Dec 31, 2099, end of day UTC" {
		t.Fatalf("expiry shown as %q, want the day chosen", got)
	}
}

func TestValidationKeepsInput(t *testing.T) {
	b, _ := signedUp(t)
	long := strings.Repeat("n", 101)
	p := wantStatus(t, b.post("/dashboard/keys", url.Values{"name": {long}, "expires_at": {"2099-01-01"}}, false), 422)
	if p.find("error-name").Length() != 1 || p.doc.Find("#key-name").AttrOr("value", "") != long ||
		p.doc.Find("#key-expires").AttrOr("value", "") != "2099-01-01" || p.doc.Find("#key-name").AttrOr("aria-invalid", "") != "true" {
		t.Fatalf("plain form error: %s", p.body)
	}
	p = wantStatus(t, b.post("/dashboard/keys", url.Values{"name": {"ok"}, "expires_at": {"2001-01-01"}}, true), 422)
	if p.header.Get("HX-Retarget") != "#create-form" || p.find("error-expires_at").Length() != 1 || p.doc.Find("#key-name").AttrOr("value", "") != "ok" {
		t.Fatalf("htmx form error: %v %s", p.header, p.body)
	}
	wantStatus(t, b.post("/dashboard/keys", url.Values{"name": {"ok"}, "expires_at": {"next week"}}, false), 422)
	p = wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 200)
	if p.find("keys-empty").Length() != 1 {
		t.Fatal("failed creates made keys")
	}
}

func TestRowActions(t *testing.T) {
	b, _ := signedUp(t)
	p := wantStatus(t, b.post("/dashboard/keys", url.Values{"name": {"Row"}}, true), 201)
	id := p.find("key-row").AttrOr("data-key-id", "")
	path := "/dashboard/keys/" + id

	p = wantStatus(t, b.post(path, url.Values{"active": {"false"}}, true), 200)
	if p.find("key-status").Text() != "Inactive" || strings.TrimSpace(p.find("toggle-active").Text()) != "Reactivate" {
		t.Fatalf("deactivate: %s", p.body)
	}
	p = wantStatus(t, b.post(path, url.Values{"name": {"Renamed"}}, true), 200)
	if p.find("key-name").Text() != "Renamed" || p.find("key-status").Text() != "Inactive" {
		t.Fatalf("rename: %s", p.body)
	}
	p = wantStatus(t, b.post(path, url.Values{"name": {"  "}}, true), 422)
	if p.find("error-name").Length() != 1 || p.doc.Find("details[open]").Length() != 1 {
		t.Fatalf("rename error: %s", p.body)
	}
	// Without JavaScript, actions redirect back to the page.
	p = wantStatus(t, b.post(path, url.Values{"active": {"true"}}, false), 303)
	if loc := p.header.Get("Location"); !strings.HasPrefix(loc, "/dashboard/keys?done=reactivated&") {
		t.Fatalf("redirect to %q", loc)
	}
	p = wantStatus(t, b.do("GET", p.header.Get("Location"), nil, false), 200)
	if p.find("keys-notice").Text() != "Key “Renamed” reactivated." || p.find("key-status").Text() != "Active" {
		t.Fatalf("after the redirect: %s", p.find("keys-card").Text())
	}
	p = wantStatus(t, b.post(path, url.Values{"name": {strings.Repeat("x", 101)}}, false), 422)
	if p.find("error-name").Length() != 1 {
		t.Fatalf("plain rename error: %s", p.body)
	}
	// No state changes on GET.
	wantStatus(t, b.do("GET", path+"/delete", nil, false), 404)

	p = wantStatus(t, b.post(path+"/delete", nil, true), 200)
	if p.find("key-row").Length() != 0 || p.find("keys-empty").Length() != 1 {
		t.Fatalf("delete: %s", p.body)
	}
	wantStatus(t, b.post(path+"/delete", nil, false), 404)
}

func TestPagesOtherAccountsKeys(t *testing.T) {
	alice, _ := signedUp(t)
	p := wantStatus(t, alice.post("/dashboard/keys", url.Values{"name": {"Alice's"}}, true), 201)
	proxyID := p.find("key-row").AttrOr("data-key-id", "")
	p = wantStatus(t, alice.post("/dashboard/billing-keys", url.Values{"name": {"Alice's billing"}}, true), 201)
	billingID := p.find("key-row").AttrOr("data-key-id", "")

	bob, _ := signedUp(t)
	for _, path := range []string{"/dashboard/keys/" + proxyID, "/dashboard/keys/" + proxyID + "/delete", "/dashboard/billing-keys/" + billingID + "/delete",
		"/dashboard/keys/" + billingID + "/delete", "/dashboard/billing-keys/" + billingID, "/dashboard/billing-keys/" + billingID + "/expiry",
		"/dashboard/keys/" + proxyID + "/expiry", "/dashboard/billing-keys/" + proxyID} {
		wantStatus(t, bob.post(path, url.Values{"name": {"Bob's now"}, "expires_at": {"2099-01-01"}}, false), 404)
	}
	// Billing keys have no spending limits.
	wantStatus(t, alice.post("/dashboard/billing-keys/"+billingID+"/limits", url.Values{"limit": {"5"}}, false), 404)
	wantStatus(t, alice.post("/dashboard/keys/abc/delete", nil, false), 400)
	p = wantStatus(t, alice.do("GET", "/dashboard/keys", nil, false), 200)
	if p.find("key-name").Text() != "Alice's" {
		t.Fatalf("alice's key changed: %s", p.body)
	}
}

func TestSignInOutAndRevocation(t *testing.T) {
	b, email := signedUp(t)
	before := b.cookies["modelswitch_session"].Value
	wantStatus(t, b.post("/signout", nil, false), 303)
	wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 303)

	// A stolen copy of the old cookie no longer opens the dashboard.
	thief := newClient(t)
	thief.cookies["modelswitch_session"] = &http.Cookie{Name: "modelswitch_session", Value: before}
	if p := thief.do("GET", "/dashboard/keys", nil, false); p.status != 303 {
		t.Fatalf("old cookie after sign-out: %d", p.status)
	}

	// Wrong password: the form comes back with the email kept.
	b.do("GET", "/signin", nil, false)
	p := wantStatus(t, b.post("/signin", url.Values{"email": {email}, "password": {"wrong password"}}, false), 422)
	if p.find("form-error").Length() != 1 || p.doc.Find("#email").AttrOr("value", "") != email {
		t.Fatalf("failed sign-in: %s", p.body)
	}
	anonymous := b.cookies["modelswitch_session"].Value
	p = wantStatus(t, b.post("/signin", url.Values{"email": {email}, "password": {"page-password"}}, false), 303)
	if p.header.Get("Location") != "/dashboard/keys" || b.cookies["modelswitch_session"].Value == anonymous {
		t.Fatalf("sign-in: %v; a fresh session cookie is expected", p.header)
	}
	wantStatus(t, b.do("GET", "/dashboard/keys", nil, false), 200)

	// Sign out everywhere ends the other client session and API tokens too.
	second := newClient(t)
	second.do("GET", "/signin", nil, false)
	wantStatus(t, second.post("/signin", url.Values{"email": {email}, "password": {"page-password"}}, false), 303)
	r := expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": "page-password"}), 200)
	jwt := "Bearer " + r.body["token"].(string)
	wantStatus(t, b.post("/signout-everywhere", nil, false), 303)
	wantStatus(t, second.do("GET", "/dashboard/keys", nil, false), 303)
	expect(t, call(t, "GET", "/api/billing-keys", jwt, nil), 401)
}

func TestSignInThrottled(t *testing.T) {
	b, email := signedUp(t)
	b.post("/signout", nil, false)
	b.do("GET", "/signin", nil, false)
	for i := 0; i < 5; i++ {
		wantStatus(t, b.post("/signin", url.Values{"email": {email}, "password": {"wrong password"}}, false), 422)
	}
	p := wantStatus(t, b.post("/signin", url.Values{"email": {email}, "password": {"page-password"}}, false), 429)
	if !strings.Contains(p.find("form-error").Text(), "Too many") {
		t.Fatalf("throttled sign-in: %s", p.body)
	}
}

func TestSessionCookieAttributes(t *testing.T) {
	b, _ := signedUp(t)
	c := b.cookies["modelswitch_session"]
	if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure || c.MaxAge != int((12*time.Hour).Seconds()) {
		t.Fatalf("cookie %+v", c)
	}
	prod := newApp(t, config.Config{Secret: testCfg.Secret, Production: true}, store, builtinCatalog, slog.New(slog.NewTextHandler(io.Discard, nil)))
	res, _ := prod.Test(httptest.NewRequest("GET", "/signin", nil))
	if cookies := res.Cookies(); len(cookies) != 1 || !cookies[0].Secure {
		t.Fatalf("production cookie %+v", cookies)
	}
}

func TestErrorPages(t *testing.T) {
	b, _ := signedUp(t)
	p := wantStatus(t, b.do("GET", "/no/such/page", nil, false), 404)
	if !strings.Contains(p.header.Get("Content-Type"), "text/html") || p.doc.Find("h1").Length() != 1 {
		t.Fatalf("404 page: %s", p.body)
	}
	req := httptest.NewRequest("GET", "/assets/app.css", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	res, _ := testApp().Test(req)
	if res.StatusCode != 200 || !strings.Contains(res.Header.Get("Content-Type"), "text/css") ||
		res.Header.Get("Content-Encoding") != "gzip" || !strings.Contains(res.Header.Get("Cache-Control"), "max-age") {
		t.Fatalf("css: %d %v", res.StatusCode, res.Header)
	}
}

// BenchmarkAPIKeysPage1000 renders the API Keys page of an account with
// 1,000 keys, through the whole app: session, query and template.
func BenchmarkAPIKeysPage1000(b *testing.B) {
	c, email := signedUp(b)
	ctx := b.Context()
	u, err := store.CheckPassword(ctx, email, "page-password", "bench")
	if err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		if _, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: fmt.Sprint("Key ", i)}); err != nil {
			b.Fatal(err)
		}
	}
	req := func() *http.Request {
		r := httptest.NewRequest("GET", "/dashboard/keys", nil)
		for _, ck := range c.cookies {
			r.AddCookie(ck)
		}
		return r
	}
	var size int
	for b.Loop() {
		res, err := testApp().Test(req(), -1)
		if err != nil || res.StatusCode != 200 {
			b.Fatal(err, res.StatusCode)
		}
		raw, _ := io.ReadAll(res.Body)
		size = len(raw)
	}
	b.ReportMetric(float64(size), "bytes/page")
}

// failingSessions cannot start a session: the database went away between
// creating an account and signing it in.
type failingSessions struct{}

func (failingSessions) SignIn(*fiber.Ctx, db.User) error { return db.ErrUnavailable }
func (failingSessions) SignOut(*fiber.Ctx, bool) error   { return nil }

// TestSignUpWhoseSignInFailsSaysTheAccountExists: the account is made but the
// session is not: the answer says to sign in, so that a retry does not meet
// "email taken".
func TestSignUpWhoseSignInFailsSaysTheAccountExists(t *testing.T) {
	app := fiber.New()
	app.Use(func(c *fiber.Ctx) error {
		request.Attach(c, &request.Info{ClientIP: newAddr()}, nil)
		return c.Next()
	})
	app.Post("/signup", (&handlers.AuthPages{Store: sharedAddrStore(), Sessions: failingSessions{}}).SignUp)
	email := dbtest.Email("half-signed-up")
	req := httptest.NewRequest("POST", "/signup", strings.NewReader(url.Values{"email": {email}, "password": {browserPassword}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := app.Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 503 || res.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "Your account was created") ||
		!strings.Contains(string(body), `action="/signin"`) {
		t.Fatalf("%d %v\n%s", res.StatusCode, res.Header, body)
	}
	if _, err := store.CheckPassword(context.Background(), email, browserPassword, newAddr()); err != nil {
		t.Fatalf("the account is not there: %v", err)
	}
}
