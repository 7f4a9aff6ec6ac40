package web

// The Settings page and the forgotten-password flow driven in headless
// Chromium, at a desktop's and a phone's size.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	mailer "modelswitch/web/mail"
)

type viewport struct {
	name          string
	width, height int64
	mobile        bool
	shots         string // the screenshots' prefix
}

var accountViewports = []viewport{
	{"desktop", 1280, 800, false, "50-desktop"},
	{"phone", 390, 844, true, "60-phone"},
}

// accountTab is a tab on an app whose mail the test reads, from a client
// address of its own.
type accountTab struct {
	*tab
	mail mailbox
	addr string
}

// mailbox is a Sender that hands each message to the test.
type mailbox chan mailer.Message

func (m mailbox) Send(_ context.Context, msg mailer.Message) error {
	m <- msg
	return nil
}

func (m mailbox) wait(b *accountTab) mailer.Message {
	b.t.Helper()
	select {
	case msg := <-m:
		return msg
	case <-time.After(stepTimeout):
		b.fatalf("no mail was sent")
		return mailer.Message{}
	}
}

// openAccountTab is openDashboard on an app whose mail the test reads, in a
// viewport, from a client address of the test's own: the reset and sign-in
// throttles count per address, and runs of the test share the database.
func openAccountTab(t *testing.T, vp viewport) *accountTab {
	t.Helper()
	b := &accountTab{tab: openDashboard(t, true), mail: make(mailbox, 10), addr: newAddr()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testCfg
	cfg.TrustedProxies = append([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, testCfg.TrustedProxies...)
	a := New(cfg, sharedAddrStore(), builtinCatalog, slog.New(slog.NewTextHandler(io.Discard, nil)), WithMailer(b.mail))
	go a.Listener(ln)
	t.Cleanup(func() { a.ShutdownWithTimeout(5 * time.Second) })
	b.base = "http://" + ln.Addr().String()

	b.do("set the client address and the viewport", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"X-Forwarded-For": b.addr}}); err != nil {
			return err
		}
		scale := 1.0
		if vp.mobile {
			scale = 2
		}
		_, err := chromedp.Call(ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
			Width: vp.width, Height: vp.height, DeviceScaleFactor: scale, Mobile: vp.mobile})
		return err
	}))
	return b
}

// shot saves a screenshot named for the viewport and the step.
func (vp viewport) shot(b *accountTab, step int, name string) {
	b.t.Helper()
	b.shot(fmt.Sprintf("%s-%02d-%s", vp.shots, step, name))
}

// sessionRowOf selects the first session row of a kind.
func (b *tab) sessionRowOf(kind string) string {
	b.t.Helper()
	handle := tabEval[string](b, `[...document.querySelectorAll("[data-testid=session-row]")].find(r =>
		r.querySelector("[data-testid=session-kind]").textContent.trim() === `+jsQuote(kind)+`)?.dataset.session ?? ""`)
	if handle == "" {
		b.fatalf("no %s session is listed", kind)
	}
	return fmt.Sprintf(`[data-testid=session-row][data-session=%q]`, handle)
}

func (b *tab) sessionCount() int {
	b.t.Helper()
	return tabEval[int](b, `document.querySelectorAll("[data-testid=session-row]").length`)
}

// login logs in through the JSON API from the tab's address, and returns
// the status and "Bearer <jwt>".
func (b *accountTab) login(email, password string) (int, string) {
	b.t.Helper()
	raw, _ := json.Marshal(map[string]string{"email": email, "password": password})
	req, err := http.NewRequestWithContext(b.ctx, "POST", b.base+"/api/auth/login", bytes.NewReader(raw))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forwarded-For", b.addr)
	res, err := b.http.Do(req)
	if err != nil {
		b.t.Fatalf("log in: %v", err)
	}
	r := readResponse(b.t, res)
	token, _ := r.body["token"].(string)
	return r.status, "Bearer " + token
}

// TestBrowserSettings: the sessions listed and one signed out in place, the
// password changed after a refusal, and the account deleted after one.
func TestBrowserSettings(t *testing.T) {
	for _, vp := range accountViewports {
		t.Run(vp.name, func(t *testing.T) {
			b := openAccountTab(t, vp)
			email := b.signUp()
			status, jwt := b.login(email, browserPassword)
			if status != 200 {
				b.fatalf("log-in: %d", status)
			}

			b.submit(tid("nav-settings"))
			b.wantPath("/dashboard/settings")
			b.waitVisible(tid("sessions-table"))
			if n := b.sessionCount(); n != 2 {
				b.fatalf("%d sessions listed, want this browser and the API token", n)
			}
			browserRow, apiRow := b.sessionRowOf("Browser"), b.sessionRowOf("API token")
			b.wantUsable(within(browserRow, tid("this-session")))
			if b.exists(within(apiRow, tid("this-session"))) {
				b.fatalf("the API token is marked as this session")
			}
			if got := b.text(tid("settings-email")); got != email {
				b.fatalf("the page names %q, want %q", got, email)
			}
			for _, sel := range []string{tid("password-submit"), tid("delete-account-submit"), within(apiRow, tid("session-signout"))} {
				b.wantUsable(sel)
			}
			b.noHorizontalOverflow("the settings page")
			vp.shot(b, 1, "settings")

			// Signing the API token out swaps the list in place.
			b.mark()
			b.click(within(apiRow, tid("session-signout")))
			b.waitGone(apiRow)
			b.wantMarked("signing a session out")
			if n := b.sessionCount(); n != 1 {
				b.fatalf("%d sessions after signing the token out", n)
			}
			if r := b.api("GET", "/api/billing-keys", jwt, nil); r.status != 401 {
				b.fatalf("the signed-out token still works: %d", r.status)
			}
			vp.shot(b, 2, "session-signed-out")

			// A wrong current password is refused next to its field.
			b.fill("#current-password", "wrong password")
			b.fill("#new-password", "a brand new password")
			if res := b.submit(tid("password-submit")); res.Status != 422 {
				b.fatalf("a wrong current password answered %d, want 422", res.Status)
			}
			b.wantUsable(tid("error-current_password"))
			b.noHorizontalOverflow("the settings page with a password error")
			vp.shot(b, 3, "password-error")
			b.fill("#current-password", browserPassword)
			b.fill("#new-password", "a brand new password")
			b.submit(tid("password-submit"))
			b.wantPath("/dashboard/settings")
			if got := b.text(tid("settings-notice")); !strings.Contains(got, "password was changed") {
				b.fatalf("notice %q", got)
			}
			vp.shot(b, 4, "password-changed")
			if status, _ := b.login(email, browserPassword); status != 401 {
				b.fatalf("the old password still logs in: %d", status)
			}

			// Deleting needs the account's email.
			b.fill(tid("delete-email"), "someone-else@example.com")
			if res := b.submit(tid("delete-account-submit")); res.Status != 422 {
				b.fatalf("deleting with another email answered %d, want 422", res.Status)
			}
			b.wantUsable(tid("error-email"))
			if got := b.value(tid("delete-email")); got != "someone-else@example.com" {
				b.fatalf("the confirmation field holds %q after the error", got)
			}
			b.noHorizontalOverflow("the settings page with a delete error")
			vp.shot(b, 5, "delete-error")
			b.fill(tid("delete-email"), email)
			b.submit(tid("delete-account-submit"))
			b.wantPath("/account-deleted")
			b.waitVisible(tid("account-deleted"))
			b.noHorizontalOverflow("the account-deleted page")
			vp.shot(b, 6, "account-deleted")
			b.nav("/dashboard/settings")
			b.wantPath("/signin")
			if status, _ := b.login(email, "a brand new password"); status != 401 {
				b.fatalf("the deleted account logs in: %d", status)
			}
		})
	}
}

// TestBrowserPasswordReset: from "Forgot password?" on the sign-in page to
// the mailed link, a new password, and the link refused a second time.
func TestBrowserPasswordReset(t *testing.T) {
	for _, vp := range accountViewports {
		t.Run(vp.name, func(t *testing.T) {
			b := openAccountTab(t, vp)
			email := b.signUp()
			b.submit(tid("signout"))
			b.wantPath("/signin")

			b.wantUsable(tid("forgot-password"))
			b.submit(tid("forgot-password"))
			b.wantPath("/forgot-password")
			b.fill(within(tid("forgot-form"), "input[name=email]"), email)
			b.noHorizontalOverflow("the forgot-password page")
			vp.shot(b, 7, "forgot-password")
			b.submit(tid("forgot-submit"))
			b.waitVisible(tid("reset-sent"))
			if got := b.text(tid("reset-sent")); !strings.Contains(got, email) {
				b.fatalf("the answer says %q", got)
			}
			b.noHorizontalOverflow("the reset-sent page")
			vp.shot(b, 8, "reset-sent")

			msg := b.mail.wait(b)
			link := resetLinkRE.FindString(msg.Text)
			if msg.To != email || !strings.HasPrefix(link, b.base+"/reset-password?token=") {
				b.fatalf("mail to %s with link %q, want one to %s on %s", msg.To, link, email, b.base)
			}
			path := strings.TrimPrefix(link, b.base)
			if res := b.nav(path); res.Status != 200 {
				b.fatalf("the link answered %d", res.Status)
			}
			b.waitVisible(tid("reset-form"))
			b.fill("#password", "short")
			if res := b.submit(tid("reset-submit")); res.Status != 422 {
				b.fatalf("a short password answered %d, want 422", res.Status)
			}
			b.wantUsable(tid("error-password"))
			b.noHorizontalOverflow("the reset form with an error")
			vp.shot(b, 9, "reset-error")

			b.fill("#password", "reset in the browser")
			b.submit(tid("reset-submit"))
			b.wantPath("/dashboard/settings")
			if got := b.text(tid("settings-notice")); !strings.Contains(got, "reset") {
				b.fatalf("notice %q", got)
			}
			if got := b.text(tid("settings-email")); got != email {
				b.fatalf("signed in as %q, want %q", got, email)
			}
			vp.shot(b, 10, "reset-done")

			// The link worked once.
			if res := b.nav(path); res.Status != 410 {
				b.fatalf("the used link answered %d, want 410", res.Status)
			}
			b.wantUsable(tid("reset-again"))
			b.noHorizontalOverflow("the used-link page")
			vp.shot(b, 11, "reset-used")
			if status, _ := b.login(email, "reset in the browser"); status != 200 {
				b.fatalf("the new password does not log in: %d", status)
			}
			if status, _ := b.login(email, browserPassword); status != 401 {
				b.fatalf("the old password still logs in: %d", status)
			}
		})
	}
}
