package web

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"net/textproto"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/gofiber/fiber/v2"
	"github.com/golang-jwt/jwt/v5"

	"modelswitch/db/dbtest"
	mailer "modelswitch/web/mail"
)

// visitor is a cookie-keeping browser of one app, over app.Test.
type visitor struct {
	t       testing.TB
	app     *fiber.App
	addr    string
	header  http.Header // sent with every request
	cookies map[string]*http.Cookie
	csrf    string
}

func newVisitor(t testing.TB, a *fiber.App) *visitor {
	return &visitor{t: t, app: a, addr: testAddr(t), header: http.Header{}, cookies: map[string]*http.Cookie{}}
}

// do sends a request; htmx marks it as htmx's, with the CSRF header.
func (v *visitor) do(method, target string, form url.Values, htmx bool) page {
	v.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, target, body)
	for k, vals := range v.header {
		req.Header[k] = vals
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if htmx {
		req.Header.Set("HX-Request", "true")
		req.Header.Set("X-CSRF-Token", v.csrf)
	}
	req.Header.Set("X-Forwarded-For", v.addr)
	for _, c := range v.cookies {
		req.AddCookie(c)
	}
	res, err := v.app.Test(req, 30_000)
	if err != nil {
		v.t.Fatal(err)
	}
	defer res.Body.Close()
	for _, c := range res.Cookies() {
		if c.MaxAge < 0 {
			delete(v.cookies, c.Name)
		} else {
			v.cookies[c.Name] = c
		}
	}
	raw, _ := io.ReadAll(res.Body)
	doc, err := goquery.NewDocumentFromReader(bytes.NewReader(raw))
	if err != nil {
		v.t.Fatal(err)
	}
	if token, ok := doc.Find(`meta[name="csrf-token"]`).Attr("content"); ok {
		v.csrf = token
	}
	return page{status: res.StatusCode, header: res.Header, body: string(raw), doc: doc}
}

func (v *visitor) get(target string) page {
	v.t.Helper()
	return v.do("GET", target, nil, false)
}

// post submits a form with the CSRF token of the last page, as a browser does.
func (v *visitor) post(target string, form url.Values) page {
	v.t.Helper()
	sent := url.Values{"_csrf": {v.csrf}} // a copy: the caller's form is left as it was
	for k, vals := range form {
		sent[k] = vals
	}
	return v.do("POST", target, sent, false)
}

func wantRedirect(t testing.TB, p page, location string) {
	t.Helper()
	wantStatus(t, p, 303)
	if got := p.header.Get("Location"); got != location {
		t.Fatalf("redirected to %q, want %q", got, location)
	}
}

// wantSignIn checks that p sends the browser to the sign-in page.
func wantSignIn(t testing.TB, p page) {
	t.Helper()
	wantStatus(t, p, 303)
	if got := p.header.Get("Location"); got != "/signin" && !strings.HasPrefix(got, "/signin?") {
		t.Fatalf("redirected to %q, want the sign-in page", got)
	}
}

// signedIn is a visitor signed in to an account through the sign-in page.
func signedIn(t testing.TB, a *fiber.App, email, password string) *visitor {
	t.Helper()
	v := newVisitor(t, a)
	wantStatus(t, v.get("/signin"), 200)
	p := wantStatus(t, v.post("/signin", url.Values{"email": {email}, "password": {password}}), 303)
	if !strings.HasPrefix(p.header.Get("Location"), "/dashboard") {
		t.Fatalf("sign-in leads to %q", p.header.Get("Location"))
	}
	return v
}

// apiToken logs in with the JSON API: "Bearer <jwt>".
func apiToken(t testing.TB, email, password string) string {
	t.Helper()
	r := expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": password}), 200)
	return "Bearer " + r.body["token"].(string)
}

// newAccount signs up through the API, with no session yet: its email, with
// password hunter2hunter2.
func newAccount(t testing.TB) string {
	t.Helper()
	email := dbtest.Email("account")
	expect(t, call(t, "POST", "/api/auth/signup", "", map[string]string{"email": email, "password": accountPassword}), 201)
	return email
}

const accountPassword = "hunter2hunter2"

// sessionRows are the settings page's session rows: kind and handle.
type sessionRow struct{ kind, handle string }

func sessionRows(t testing.TB, p page) (rows []sessionRow, current string) {
	t.Helper()
	p.find("session-row").Each(func(_ int, s *goquery.Selection) {
		r := sessionRow{strings.TrimSpace(s.Find("[data-testid=session-kind]").Text()), s.AttrOr("data-session", "")}
		rows = append(rows, r)
		if s.Find("[data-testid=this-session]").Length() > 0 {
			if current != "" {
				t.Fatalf("two sessions are marked as this one: %s", p.body)
			}
			current = r.handle
		}
	})
	return rows, current
}

func TestSettingsPage(t *testing.T) {
	email := newAccount(t)
	v := signedIn(t, testApp(), email, accountPassword)
	p := wantStatus(t, v.get("/dashboard/settings"), 200)
	if p.find("nav-settings").AttrOr("aria-current", "") != "page" || strings.TrimSpace(p.find("settings-email").Text()) != email {
		t.Fatalf("settings page: %s", p.body)
	}
	for _, id := range []string{"password-form", "delete-account-form", "sessions-table"} {
		if p.find(id).Length() != 1 {
			t.Fatalf("no %s: %s", id, p.body)
		}
	}
	rows, current := sessionRows(t, p)
	if len(rows) != 1 || rows[0].kind != "Browser" || current != rows[0].handle {
		t.Fatalf("sessions %v, this one %q", rows, current)
	}

	// An API token is listed too; its secret session id is not on the page.
	jwtHeader := apiToken(t, email, accountPassword)
	var claims struct {
		jwt.RegisteredClaims
		SID string `json:"sid"`
	}
	if _, _, err := jwt.NewParser().ParseUnverified(strings.TrimPrefix(jwtHeader, "Bearer "), &claims); err != nil || claims.SID == "" {
		t.Fatalf("JWT: %v", err)
	}
	p = wantStatus(t, v.get("/dashboard/settings"), 200)
	rows, current = sessionRows(t, p)
	kinds := map[string]int{}
	for _, r := range rows {
		kinds[r.kind]++
	}
	if len(rows) != 2 || kinds["Browser"] != 1 || kinds["API token"] != 1 {
		t.Fatalf("sessions %v", rows)
	}
	if strings.Contains(p.body, claims.SID) {
		t.Fatal("the page shows a session id")
	}
	api := p.doc.Find(`[data-testid=session-row]:has([data-testid=this-session])`)
	if strings.TrimSpace(api.Find("[data-testid=session-kind]").Text()) != "Browser" || api.AttrOr("data-session", "") != current {
		t.Fatalf("this session is not the browser's: %s", p.body)
	}

	// Signed out, it asks to sign in.
	wantSignIn(t, newVisitor(t, testApp()).get("/dashboard/settings"))
}

func TestChangePasswordRevokesOtherSessions(t *testing.T) {
	email := newAccount(t)
	v := signedIn(t, testApp(), email, accountPassword)
	other := signedIn(t, testApp(), email, accountPassword)
	token := apiToken(t, email, accountPassword)
	wantStatus(t, v.get("/dashboard/settings"), 200)

	// A wrong current password, then a short new one: refused in the form.
	p := wantStatus(t, v.post("/dashboard/settings/password", url.Values{"current_password": {"wrong password"}, "new_password": {"a new password"}}), 422)
	if p.find("error-current_password").Length() != 1 || strings.Contains(p.body, "wrong password") {
		t.Fatalf("wrong current password: %s", p.body)
	}
	p = wantStatus(t, v.post("/dashboard/settings/password", url.Values{"current_password": {accountPassword}, "new_password": {"short"}}), 422)
	if p.find("error-new_password").Length() != 1 || strings.Contains(p.body, accountPassword) {
		t.Fatalf("short new password: %s", p.body)
	}
	// Without the CSRF token nothing happens.
	wantStatus(t, v.do("POST", "/dashboard/settings/password",
		url.Values{"current_password": {accountPassword}, "new_password": {"a new password"}}, false), 403)
	wantStatus(t, other.get("/dashboard/settings"), 200)
	expect(t, call(t, "GET", "/api/billing-keys", token, nil), 200)

	wantRedirect(t, v.post("/dashboard/settings/password", url.Values{"current_password": {accountPassword}, "new_password": {"a new password"}}),
		"/dashboard/settings?done=password")
	p = wantStatus(t, v.get("/dashboard/settings?done=password"), 200)
	if !strings.Contains(p.find("settings-notice").Text(), "password was changed") {
		t.Fatalf("no notice: %s", p.body)
	}
	if rows, current := sessionRows(t, p); len(rows) != 1 || rows[0].handle != current {
		t.Fatalf("sessions after the change: %v", rows)
	}
	wantSignIn(t, other.get("/dashboard/settings"))
	expect(t, call(t, "GET", "/api/billing-keys", token, nil), 401)
	expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": accountPassword}), 401)
	expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": "a new password"}), 200)
}

func TestSignOutOneSession(t *testing.T) {
	email := newAccount(t)
	v := signedIn(t, testApp(), email, accountPassword)
	other := signedIn(t, testApp(), email, accountPassword)
	token := apiToken(t, email, accountPassword)
	p := wantStatus(t, v.get("/dashboard/settings"), 200)
	rows, current := sessionRows(t, p)
	if len(rows) != 3 {
		t.Fatalf("sessions %v", rows)
	}
	var apiHandle, otherHandle string
	for _, r := range rows {
		switch {
		case r.kind == "API token":
			apiHandle = r.handle
		case r.handle != current:
			otherHandle = r.handle
		}
	}

	// Another account cannot sign them out, by handle or otherwise.
	stranger := signedIn(t, testApp(), newAccount(t), accountPassword)
	wantStatus(t, stranger.get("/dashboard/settings"), 200)
	wantStatus(t, stranger.post("/dashboard/settings/sessions/"+apiHandle+"/delete", nil), 404)
	wantStatus(t, stranger.post("/dashboard/settings/sessions/not-a-handle/delete", nil), 404)
	expect(t, call(t, "GET", "/api/billing-keys", token, nil), 200)

	// With htmx: the list comes back without the API token, which ends.
	p = wantStatus(t, v.do("POST", "/dashboard/settings/sessions/"+apiHandle+"/delete", nil, true), 200)
	if p.doc.Find("section#sessions-card").Length() != 1 || p.find("settings-email").Length() != 0 {
		t.Fatalf("htmx answer: %s", p.body)
	}
	if rows, _ := sessionRows(t, p); len(rows) != 2 {
		t.Fatalf("sessions after signing out the token: %v", rows)
	}
	expect(t, call(t, "GET", "/api/billing-keys", token, nil), 401)
	wantStatus(t, other.get("/dashboard/settings"), 200)

	// Without JavaScript: a redirect back; the other browser is signed out.
	wantRedirect(t, v.post("/dashboard/settings/sessions/"+otherHandle+"/delete", nil), "/dashboard/settings?done=session")
	wantSignIn(t, other.get("/dashboard/settings"))
	p = wantStatus(t, v.get("/dashboard/settings?done=session"), 200)
	if rows, _ := sessionRows(t, p); len(rows) != 1 {
		t.Fatalf("sessions: %v", rows)
	}
	wantStatus(t, v.post("/dashboard/settings/sessions/"+otherHandle+"/delete", nil), 404)

	// Its own handle signs this browser out.
	wantSignIn(t, v.post("/dashboard/settings/sessions/"+current+"/delete", nil))
	wantSignIn(t, v.get("/dashboard/settings"))
}

func TestDeleteAccount(t *testing.T) {
	jwtHeader, email := signupWithEmail(t)
	mk := billingKey(t, jwtHeader)
	_, ms := proxyKey(t, mk)
	expect(t, call(t, "GET", "/v1/models", ms, nil), 200) // cached by this replica now
	other := newAccount(t)
	v := signedIn(t, testApp(), email, accountPassword)
	wantStatus(t, v.get("/dashboard/settings"), 200)

	for _, wrong := range []string{"", other, "x" + email} {
		p := wantStatus(t, v.post("/dashboard/settings/delete", url.Values{"email": {wrong}}), 422)
		if p.find("error-email").Length() != 1 || p.find("delete-email").AttrOr("value", "") != wrong {
			t.Fatalf("deleting with %q: %s", wrong, p.body)
		}
	}
	wantStatus(t, v.do("POST", "/dashboard/settings/delete", url.Values{"email": {email}}, false), 403) // no CSRF token
	expect(t, call(t, "GET", "/v1/models", ms, nil), 200)
	expect(t, call(t, "GET", "/api/keys", mk, nil), 200)

	wantRedirect(t, v.post("/dashboard/settings/delete", url.Values{"email": {email}}), "/account-deleted")
	if _, ok := v.cookies["modelswitch_session"]; ok {
		t.Fatal("the session cookie was not cleared")
	}
	p := wantStatus(t, v.get("/account-deleted"), 200)
	if p.find("account-deleted").Length() != 1 {
		t.Fatalf("goodbye page: %s", p.body)
	}

	// The key was cached for 10 s: the notification must drop it at once.
	deadline := time.Now().Add(2 * time.Second)
	for r := call(t, "GET", "/v1/models", ms, nil); r.status != 401; r = call(t, "GET", "/v1/models", ms, nil) {
		if r.status != 200 || time.Now().After(deadline) {
			t.Fatalf("the deleted account's proxy key: %d %s", r.status, r.raw)
		}
		time.Sleep(5 * time.Millisecond) // a tiny poll, bounded by the deadline
	}
	expect(t, call(t, "GET", "/api/keys", mk, nil), 401)
	expect(t, call(t, "GET", "/api/billing-keys", jwtHeader, nil), 401)
	expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": accountPassword}), 401)
	expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": other, "password": accountPassword}), 200)
	wantSignIn(t, v.get("/dashboard/settings"))
	// The address is free again.
	expect(t, call(t, "POST", "/api/auth/signup", "", map[string]string{"email": email, "password": accountPassword}), 201)
}

// logBuffer is a log that tests read while the app writes it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.buf.String()), "\n")
}

var resetLinkRE = regexp.MustCompile(`https?://[^\s"\\]+/reset-password\?token=([A-Za-z0-9_-]+)`)

// resetLinks are the reset links in the log, in order.
func (l *logBuffer) resetLinks() []string {
	var links []string
	for _, line := range l.lines() {
		links = append(links, resetLinkRE.FindAllString(line, -1)...)
	}
	return links
}

// holding counts the log lines that hold s.
func (l *logBuffer) holding(s string) int {
	n := 0
	for _, line := range l.lines() {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// resetApp is the app in development without SMTP_URL, with its log kept,
// on a store whose clock the test can move.
type resetApp struct {
	*fiber.App
	log   *logBuffer
	shift atomic.Int64 // nanoseconds added to the store's clock
}

func newResetApp(t testing.TB, opts ...Option) *resetApp {
	t.Helper()
	a := &resetApp{log: &logBuffer{}}
	s := store.WithClock(func() time.Time { return time.Now().Add(time.Duration(a.shift.Load())) })
	a.App = newApp(t, testCfg, s, builtinCatalog, slog.New(slog.NewJSONHandler(a.log, nil)), opts...)
	return a
}

// waitLinks waits until the log holds n reset links, and returns them.
func (a *resetApp) waitLinks(t testing.TB, n int) []string {
	t.Helper()
	var links []string
	waitUntil(t, fmt.Sprintf("%d reset links in the log", n), func() bool {
		links = a.log.resetLinks()
		return len(links) >= n
	})
	return links
}

// tokenOf is the token of a reset link.
func tokenOf(t testing.TB, link string) string {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil || u.Query().Get("token") == "" {
		t.Fatalf("link %q", link)
	}
	return u.Query().Get("token")
}

// csrfRE finds the CSRF tokens of a page, which differ from one answer to
// the next.
var csrfRE = regexp.MustCompile(`(name="csrf-token" content|name="_csrf" value)="[^"]*"`)

// anonymized is a page without its CSRF tokens and with email replaced, to
// compare the answers for two addresses.
func anonymized(body, email string) string {
	return strings.ReplaceAll(csrfRE.ReplaceAllString(body, "$1=\"…\""), email, "EMAIL")
}

func TestSignInPageLinksToForgotPassword(t *testing.T) {
	p := wantStatus(t, newVisitor(t, testApp()).get("/signin"), 200)
	if p.find("forgot-password").AttrOr("href", "") != "/forgot-password" {
		t.Fatalf("sign-in page: %s", p.body)
	}
}

func TestForgotPasswordAnswersTheSameForAnyEmail(t *testing.T) {
	a := newResetApp(t)
	known := newAccount(t)
	unknown := dbtest.Email("nobody")
	v := newVisitor(t, a.App)
	p := wantStatus(t, v.get("/forgot-password"), 200)
	if p.find("forgot-form").Length() != 1 {
		t.Fatalf("forgot page: %s", p.body)
	}
	answer := func(email string) string {
		p := wantStatus(t, v.post("/forgot-password", url.Values{"email": {email}}), 200)
		if p.find("reset-sent").Length() != 1 || len(p.header.Values("Set-Cookie")) != 0 {
			t.Fatalf("answer for %s: %v %s", email, p.header, p.body)
		}
		return anonymized(p.body, email)
	}
	// The unknown address first: the outbox sends in order, so a mail for it
	// would arrive before the known address's.
	if a, b := answer(unknown), answer(known); a != b {
		t.Fatalf("the answers differ:\n%s\n---\n%s", a, b)
	}
	links := a.waitLinks(t, 1)
	if len(links) != 1 || a.log.holding(unknown) != 0 {
		t.Fatalf("links %v; log %q", links, a.log.lines())
	}
	// The link is in exactly one log line, the mail's, and it is to the account.
	token := tokenOf(t, links[0])
	if a.log.holding(token) != 1 || a.log.holding(`"to":"`+known+`"`) != 1 {
		t.Fatalf("log %q", a.log.lines())
	}
	// An invalid address is refused in the form; nothing is sent.
	p = wantStatus(t, v.post("/forgot-password", url.Values{"email": {"not an email"}}), 422)
	if p.find("error-email").Length() != 1 {
		t.Fatalf("invalid email: %s", p.body)
	}
}

// blockedSender holds every message until released.
type blockedSender struct {
	release chan struct{}
	sent    chan mailer.Message
}

func (b *blockedSender) Send(ctx context.Context, m mailer.Message) error {
	<-b.release
	b.sent <- m
	return nil
}

func TestForgotPasswordDoesNotWaitForTheMail(t *testing.T) {
	s := &blockedSender{release: make(chan struct{}), sent: make(chan mailer.Message, 1)}
	a := newResetApp(t, WithMailer(s))
	known := newAccount(t)
	v := newVisitor(t, a.App)
	v.get("/forgot-password")
	// Answered while the mail server is stuck.
	wantStatus(t, v.post("/forgot-password", url.Values{"email": {known}}), 200)
	close(s.release)
	select {
	case m := <-s.sent:
		if m.To != known || !resetLinkRE.MatchString(m.Text) {
			t.Fatalf("mail %+v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the mail was never sent")
	}
	if len(a.log.resetLinks()) != 0 {
		t.Fatal("with a mailer, the link reached the log")
	}
}

func TestPasswordResetFlow(t *testing.T) {
	a := newResetApp(t)
	email := newAccount(t)
	other := signedIn(t, testApp(), email, accountPassword)
	token := apiToken(t, email, accountPassword)

	v := newVisitor(t, a.App)
	v.header.Set("X-Forwarded-Host", "evil.example") // any client can send it: links ignore it
	v.get("/forgot-password")
	wantStatus(t, v.post("/forgot-password", url.Values{"email": {strings.ToUpper(email)}}), 200)
	link := a.waitLinks(t, 1)[0]
	if !strings.HasPrefix(link, "http://example.com/reset-password?token=") {
		t.Fatalf("link %q: want the request's Host", link)
	}
	target := strings.TrimPrefix(link, "http://example.com")

	// Opening the link shows the form; it does not use the link up.
	for range 2 {
		p := wantStatus(t, v.get(target), 200)
		if p.find("reset-form").Length() != 1 || p.doc.Find("input[name=token]").AttrOr("value", "") != tokenOf(t, link) ||
			p.header.Get("Referrer-Policy") != "no-referrer" {
			t.Fatalf("reset page: %v %s", p.header, p.body)
		}
	}
	form := url.Values{"token": {tokenOf(t, link)}, "password": {"short"}}
	p := wantStatus(t, v.post("/reset-password", form), 422)
	if p.find("error-password").Length() != 1 || p.doc.Find("input[name=token]").AttrOr("value", "") != tokenOf(t, link) {
		t.Fatalf("short password: %s", p.body)
	}
	form.Set("password", "reset password 1")
	wantStatus(t, v.do("POST", "/reset-password", form, false), 403)
	wantStatus(t, v.get(target), 200)

	// Setting it signs this browser in and every other session out.
	wantRedirect(t, v.post("/reset-password", form), "/dashboard/settings?done=reset")
	p = wantStatus(t, v.get("/dashboard/settings?done=reset"), 200)
	if strings.TrimSpace(p.find("settings-email").Text()) != email || !strings.Contains(p.find("settings-notice").Text(), "reset") {
		t.Fatalf("after the reset: %s", p.body)
	}
	if rows, _ := sessionRows(t, p); len(rows) != 1 {
		t.Fatalf("sessions after the reset: %v", rows)
	}
	wantSignIn(t, other.get("/dashboard/settings"))
	expect(t, call(t, "GET", "/api/billing-keys", token, nil), 401)
	expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": accountPassword}), 401)
	expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": "reset password 1"}), 200)

	// Once only.
	fresh := newVisitor(t, a.App)
	p = wantStatus(t, fresh.get(target), 410)
	if p.find("reset-invalid").Length() != 1 || p.find("reset-form").Length() != 0 || strings.Contains(p.body, tokenOf(t, link)) {
		t.Fatalf("a used link: %s", p.body)
	}
	form.Set("password", "reset password 2")
	wantStatus(t, fresh.post("/reset-password", form), 410)
	expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": "reset password 1"}), 200)
	wantStatus(t, fresh.get("/reset-password?token=nonsense"), 410)

	// No log line but the mail's holds the token, whatever was requested.
	if n := a.log.holding(tokenOf(t, link)); n != 1 {
		t.Fatalf("%d log lines hold the token: %q", n, a.log.lines())
	}
}

func TestPasswordResetLinkUsesThePublicURL(t *testing.T) {
	a := newResetApp(t, WithPublicURL("https://modelswitch.example/"))
	email := newAccount(t)
	v := newVisitor(t, a.App)
	v.get("/forgot-password")
	wantStatus(t, v.post("/forgot-password", url.Values{"email": {email}}), 200)
	if link := a.waitLinks(t, 1)[0]; !strings.HasPrefix(link, "https://modelswitch.example/reset-password?token=") {
		t.Fatalf("link %q", link)
	}
}

func TestPasswordResetLinkExpiresAfter30Minutes(t *testing.T) {
	a := newResetApp(t)
	email := newAccount(t)
	v := newVisitor(t, a.App)
	v.get("/forgot-password")
	wantStatus(t, v.post("/forgot-password", url.Values{"email": {email}}), 200)
	link := a.waitLinks(t, 1)[0]
	target := link[strings.Index(link, "/reset-password"):]

	a.shift.Store(int64(29 * time.Minute))
	wantStatus(t, v.get(target), 200)
	a.shift.Store(int64(31 * time.Minute))
	p := wantStatus(t, v.get(target), 410)
	if p.find("reset-invalid").Length() != 1 {
		t.Fatalf("expired link: %s", p.body)
	}
	wantStatus(t, v.post("/reset-password", url.Values{"token": {tokenOf(t, link)}, "password": {"too late password"}}), 410)
	expect(t, call(t, "POST", "/api/auth/login", "", map[string]string{"email": email, "password": accountPassword}), 200)
}

func TestPasswordResetRequestsAreThrottled(t *testing.T) {
	a := newResetApp(t)
	known := newAccount(t)
	var answers []string
	for _, email := range []string{known, dbtest.Email("nobody")} {
		v := newVisitor(t, a.App)
		v.get("/forgot-password")
		for range 5 {
			wantStatus(t, v.post("/forgot-password", url.Values{"email": {email}}), 200)
		}
		p := wantStatus(t, v.post("/forgot-password", url.Values{"email": {email}}), 429)
		if p.header.Get("Retry-After") == "" || !strings.Contains(p.find("form-error").Text(), "Too many") {
			t.Fatalf("throttled: %v %s", p.header, p.body)
		}
		answers = append(answers, anonymized(p.body, email))
	}
	// The same refusal whether the account exists or not.
	if answers[0] != answers[1] {
		t.Fatalf("the refusals differ:\n%s\n---\n%s", answers[0], answers[1])
	}
	if n := len(a.waitLinks(t, 5)); n != 5 {
		t.Fatalf("%d links sent for 5 accepted requests", n)
	}
}

// smtpSink is a mail server that speaks just enough SMTP (EHLO, MAIL, RCPT,
// DATA, QUIT) to take one message at a time.
func smtpSink(t *testing.T) (addr string, mails <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan string, 10)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				tp := textproto.NewConn(conn)
				tp.PrintfLine("220 sink.test ESMTP")
				for {
					line, err := tp.ReadLine()
					if err != nil {
						return
					}
					switch verb, _, _ := strings.Cut(strings.ToUpper(line), " "); verb {
					case "EHLO":
						tp.PrintfLine("250 sink.test")
					case "DATA":
						tp.PrintfLine("354 go ahead")
						data, err := tp.ReadDotBytes()
						if err != nil {
							return
						}
						out <- string(data)
						tp.PrintfLine("250 queued")
					case "QUIT":
						tp.PrintfLine("221 bye")
						return
					default: // MAIL, RCPT
						tp.PrintfLine("250 ok")
					}
				}
			})
		}
	})
	return ln.Addr().String(), out
}

func TestPasswordResetBySMTP(t *testing.T) {
	addr, mails := smtpSink(t)
	sender, err := mailer.NewSMTP("smtp://" + addr + "?from=noreply@modelswitch.test")
	if err != nil {
		t.Fatal(err)
	}
	a := newResetApp(t, WithMailer(sender))
	email := newAccount(t)
	v := newVisitor(t, a.App)
	v.get("/forgot-password")
	wantStatus(t, v.post("/forgot-password", url.Values{"email": {email}}), 200)

	var data string
	select {
	case data = <-mails:
	case <-time.After(10 * time.Second):
		t.Fatal("no mail arrived")
	}
	msg, err := mail.ReadMessage(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(quotedprintable.NewReader(bufio.NewReader(msg.Body)))
	if err != nil {
		t.Fatal(err)
	}
	link := resetLinkRE.FindString(string(body))
	if msg.Header.Get("To") != "<"+email+">" || msg.Header.Get("Subject") != "Reset your ModelSwitch password" || link == "" {
		t.Fatalf("mail %v\n%s", msg.Header, body)
	}
	p := wantStatus(t, v.get(link[strings.Index(link, "/reset-password"):]), 200)
	if p.find("reset-form").Length() != 1 {
		t.Fatalf("the mailed link: %s", p.body)
	}
	if a.log.holding(tokenOf(t, link)) != 0 {
		t.Fatalf("with SMTP the token reached the log: %q", a.log.lines())
	}
}

// TestForgotPasswordWithoutMail: a server that sends no mail (production
// without SMTP_URL) says so, and never tells anyone a link is on its way.
func TestForgotPasswordWithoutMail(t *testing.T) {
	a := newResetApp(t, WithMailer(mailer.Unsent{}))
	email := newAccount(t)
	v := newVisitor(t, a.App)
	for _, p := range []page{
		wantStatus(t, v.get("/forgot-password"), 200),
		wantStatus(t, v.post("/forgot-password", url.Values{"email": {email}}), 200),
	} {
		if p.find("reset-unavailable").Length() != 1 || p.find("forgot-form").Length() != 0 || p.find("reset-sent").Length() != 0 {
			t.Fatalf("forgot page without mail: %s", p.body)
		}
	}
}
