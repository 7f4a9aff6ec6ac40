package web

// The dashboard as a console, in Chromium at a desktop's and a phone's size:
// the way back after a session ends, a create form sent twice without
// JavaScript, the landing page, sign-up errors, the 404 page, signing out
// everywhere, and htmx errors shown instead of dropped.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"modelswitch/config"
	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/views"
)

// consoleScreen is a viewport the console tests run at.
type consoleScreen struct {
	name          string
	width, height int64
	mobile        bool
}

var consoleScreens = []consoleScreen{{"desktop", 1280, 800, false}, {"phone", 390, 844, true}}

// forConsoleScreens runs a browser test at each screen size.
func forConsoleScreens(t *testing.T, test func(t *testing.T, s consoleScreen)) {
	for _, s := range consoleScreens {
		t.Run(s.name, func(t *testing.T) { test(t, s) })
	}
}

// consoleApp is the test app with changes of the test's own, trusting the
// loopback proxy so that each tab signs in from an address of its own.
func consoleApp(t *testing.T, change func(*config.Config)) *fiber.App {
	cfg := testCfg
	cfg.TrustedProxies = append([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, testCfg.TrustedProxies...)
	if change != nil {
		change(&cfg)
	}
	a := newApp(t, cfg, sharedAddrStore(), builtinCatalog, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return a
}

// openConsole is a tab on a (served here on a loopback port) at screen s,
// with scripts on or off.
func openConsole(t *testing.T, js bool, s consoleScreen, a *fiber.App) *tab {
	t.Helper()
	b := openDashboard(t, js)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go a.Listener(ln)
	b.base = "http://" + ln.Addr().String()
	addr := newAddr()
	b.do("set the viewport and the client address", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"X-Forwarded-For": addr}}); err != nil {
			return err
		}
		scale := 1.0
		if s.mobile {
			scale = 2
		}
		_, err := chromedp.Call(ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
			Width: s.width, Height: s.height, DeviceScaleFactor: scale, Mobile: s.mobile})
		return err
	}))
	return b
}

// consoleShot checks and saves a screenshot named for the screen.
func (b *tab) consoleShot(s consoleScreen, name string) {
	b.t.Helper()
	b.noHorizontalOverflow(name)
	b.shot("console-" + s.name + "-" + name)
}

// dashboardUser is the account of an email, for tests that act on it directly.
func dashboardUser(t *testing.T, email string) db.User {
	t.Helper()
	u, err := store.CheckPassword(context.Background(), email, browserPassword, newAddr())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// query is the current page's query string.
func (b *tab) consoleQuery() url.Values {
	b.t.Helper()
	u, err := url.Parse(tabRun(b, "location", chromedp.Location()))
	if err != nil {
		b.fatalf("location: %v", err)
	}
	return u.Query()
}

// consoleSignIn fills and sends the sign-in form the browser was sent to.
func (b *tab) consoleSignIn(email string) {
	b.t.Helper()
	b.fill(within(tid("signin-form"), "input[name=email]"), email)
	b.fill(within(tid("signin-form"), "input[name=password]"), browserPassword)
	b.submit(tid("signin-submit"))
}

// TestBrowserSessionEnd: with the cookie deleted, or the session ended on
// the server, Deactivate and Create key lead to the sign-in page, which says
// why; signing in leads back, and the redirected actions did nothing.
func TestBrowserSessionEnd(t *testing.T) {
	forConsoleScreens(t, func(t *testing.T, s consoleScreen) {
		for _, js := range []bool{true, false} {
			t.Run(map[bool]string{true: "js", false: "nojs"}[js], func(t *testing.T) {
				b := openConsole(t, js, s, consoleApp(t, nil))
				email := b.signUp()
				u := dashboardUser(t, email)
				k, err := store.CreateKey(context.Background(), u.ID, apikey.Proxy, db.KeyInput{Name: "Survivor"})
				if err != nil {
					t.Fatal(err)
				}
				row := keyRow(k.ID)
				b.nav("/dashboard/keys")
				b.waitVisible(within(row, tid("toggle-active")))

				// The cookie goes: Deactivate.
				b.do("delete the session cookie", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
					_, err := chromedp.Call(ctx, network.DeleteCookies, network.DeleteCookiesParams{Name: "modelswitch_session", URL: b.base})
					return err
				}))
				if js {
					b.click(within(row, tid("toggle-active")))
				} else {
					b.submit(within(row, tid("toggle-active")))
				}
				b.waitFor("the sign-in page", `location.pathname === "/signin"`, "location.href")
				if next := b.consoleQuery().Get("next"); next != "/dashboard/keys" {
					b.fatalf("next=%q, want /dashboard/keys", next)
				}
				b.waitText(tid("session-ended"), views.SessionEndedNotice)
				b.consoleShot(s, fmt.Sprintf("session-ended-%v", map[bool]string{true: "js", false: "nojs"}[js]))
				b.consoleSignIn(email)
				b.wantPath("/dashboard/keys")
				if got := b.text(within(row, tid("key-status"))); got != "Active" {
					b.fatalf("after the redirect the key is %q; the redirect must not deactivate it", got)
				}

				// The session ends on the server: Create key.
				if err := store.DeleteUserSessions(context.Background(), u.ID); err != nil {
					t.Fatal(err)
				}
				b.fill(createName, "Never made")
				if js {
					b.click(tid("create-key-submit"))
				} else {
					b.submit(tid("create-key-submit"))
				}
				b.waitFor("the sign-in page", `location.pathname === "/signin"`, "location.href")
				b.waitVisible(tid("session-ended"))
				if b.exists(modal) || b.exists(revealPanel) {
					b.fatalf("a key was revealed to an ended session")
				}
				b.consoleSignIn(email)
				b.wantPath("/dashboard/keys")
				b.waitVisible(row)
				if n := tabEval[int](b, `document.querySelectorAll("#key-rows tr[data-testid=key-row]").length`); n != 1 {
					b.fatalf("%d keys after the redirect; want the one from before", n)
				}
			})
		}
	})
}

// consoleGate holds the first create request until a second one arrives, so that
// a double click is two requests in flight at once, as on a slow network.
type consoleGate struct {
	mu      sync.Mutex
	arrived int
	second  chan struct{}
}

func (g *consoleGate) wrap(path string, next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Method()) != "POST" || string(ctx.Path()) != path {
			next(ctx)
			return
		}
		// The whole form now: the browser may drop this connection once it
		// sends the second, and the server still does what it was asked.
		ctx.Request.Body()
		g.mu.Lock()
		g.arrived++
		n := g.arrived
		g.mu.Unlock()
		switch n {
		case 1:
			select {
			case <-g.second:
			case <-time.After(stepTimeout):
			}
		case 2:
			close(g.second)
		}
		next(ctx)
	}
}

func (g *consoleGate) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.arrived
}

// TestBrowserDoubleSubmitWithoutJavaScript: Create key clicked twice without
// JavaScript sends the form twice; one key is made, and the page shows it.
func TestBrowserDoubleSubmitWithoutJavaScript(t *testing.T) {
	forConsoleScreens(t, func(t *testing.T, s consoleScreen) {
		a := consoleApp(t, nil)
		g := &consoleGate{second: make(chan struct{})}
		a.Server().Handler = g.wrap("/dashboard/keys", a.Server().Handler)
		b := openConsole(t, false, s, a)
		b.signUp()
		b.nav("/dashboard/keys")
		b.waitVisible(tid("keys-empty"))
		b.fill(createName, "Clicked twice")
		// Two clicks at the button's place, as a person makes them: the
		// second once the first's request has reached the server, while its
		// page is still loading (a click by selector would wait for that load).
		b.wantUsable(tid("create-key-submit"))
		at := tabEval[[]float64](b, `(r => [r.left + r.width / 2, r.top + r.height / 2])(document.querySelector(`+jsQuote(tid("create-key-submit"))+`).getBoundingClientRect())`)
		b.do("click Create key", chromedp.MouseClickXY(at[0], at[1]))
		waitUntil(t, "the first create reaches the server", func() bool { return g.count() == 1 })
		b.do("click Create key again", chromedp.MouseClickXY(at[0], at[1]))
		b.waitFor("the page that reveals the key", `document.querySelector("[data-testid=reveal-panel] [data-testid=revealed-key]")`, "location.href")
		if n := g.count(); n != 2 {
			b.fatalf("the server saw %d creates; the test needs the browser to send two", n)
		}
		key := tabEval[string](b, `(e => e.value || e.textContent)(document.querySelector("[data-testid=reveal-panel] [data-testid=revealed-key]")).trim()`)
		if !proxyKeyRE.MatchString(key) {
			b.fatalf("revealed %q", key)
		}
		b.consoleShot(s, "double-submit-nojs")
		b.nav("/dashboard/keys")
		if n := tabEval[int](b, `document.querySelectorAll("#key-rows tr[data-testid=key-row]").length`); n != 1 {
			b.fatalf("%d keys after a double click; want 1", n)
		}
		// The key shown is the key made.
		if r := b.api("GET", "/v1/models", "Bearer "+key, nil); r.status != 200 {
			b.fatalf("the key shown does not work: %d %s", r.status, r.raw)
		}
	})
}

// TestBrowserLanding: a visitor learns what ModelSwitch is, and signs up;
// sign-up shows every mistake at once.
func TestBrowserLanding(t *testing.T) {
	forConsoleScreens(t, func(t *testing.T, s consoleScreen) {
		b := openConsole(t, true, s, consoleApp(t, nil))
		b.nav("/")
		b.waitVisible(tid("landing"))
		text := b.text(tid("landing"))
		for _, want := range []string{"OpenAI-compatible", "prepaid credits", "Proxy keys", "Billing keys", "modelswitch/echo", b.base + "/v1/chat/completions"} {
			if !strings.Contains(text, want) {
				b.fatalf("the landing page does not say %q", want)
			}
		}
		if icon := tabEval[string](b, `document.querySelector("link[rel=icon]").href`); !strings.Contains(icon, "/assets/favicon.svg") {
			b.fatalf("icon %q", icon)
		}
		b.consoleShot(s, "landing")
		b.submit(tid("landing-signup"))
		b.wantPath("/signup")
		b.fill(within(tid("signup-form"), "input[name=email]"), "not an email")
		b.fill(within(tid("signup-form"), "input[name=password]"), "short")
		b.submit(tid("signup-submit"))
		b.waitVisible(tid("error-email"))
		b.waitVisible(tid("error-password"))
		b.consoleShot(s, "signup-errors")
		b.submit(tid("to-signin"))
		b.wantPath("/signin")
		b.submit(tid("home-link"))
		b.wantPath("/")
		b.waitVisible(tid("landing"))
	})
}

// TestBrowserNotFound: the 404 page speaks to people, signed in or not.
func TestBrowserNotFound(t *testing.T) {
	forConsoleScreens(t, func(t *testing.T, s consoleScreen) {
		b := openConsole(t, true, s, consoleApp(t, nil))
		b.nav("/no/such/page")
		b.waitText("h1", "Page not found")
		b.consoleShot(s, "404-signed-out")
		b.submit(tid("to-home"))
		b.waitVisible(tid("landing"))
		b.signUp()
		if res := b.nav("/dashboard/no-such-page"); res.Status != 404 {
			b.fatalf("status %d", res.Status)
		}
		b.waitText("h1", "Page not found")
		b.consoleShot(s, "404-signed-in")
		b.submit(tid("to-dashboard"))
		b.wantPath("/dashboard/keys")
	})
}

// TestBrowserSignOutEverywhere: the header's Sign out everywhere asks first,
// without JavaScript too.
func TestBrowserSignOutEverywhere(t *testing.T) {
	forConsoleScreens(t, func(t *testing.T, s consoleScreen) {
		b := openConsole(t, false, s, consoleApp(t, nil))
		b.signUp()
		b.submit(tid("signout-everywhere"))
		b.wantPath("/signout-everywhere")
		b.waitVisible(tid("confirm-signout-everywhere"))
		b.consoleShot(s, "signout-everywhere-confirm")
		b.submit(tid("cancel-signout-everywhere"))
		b.wantPath("/dashboard/keys")
		b.submit(tid("signout-everywhere"))
		b.submit(tid("confirm-signout-everywhere"))
		b.wantPath("/signin")
		b.nav("/dashboard/keys")
		b.wantPath("/signin")
	})
}

// TestBrowserHTMXErrors: an htmx action refused (429 at the write limit,
// 403 with an expired form) shows the server's message in the alert region.
func TestBrowserHTMXErrors(t *testing.T) {
	forConsoleScreens(t, func(t *testing.T, s consoleScreen) {
		b := openConsole(t, true, s, consoleApp(t, func(c *config.Config) { c.KeyWritesPerMinute = 2 }))
		email := b.signUp()
		k, err := store.CreateKey(context.Background(), dashboardUser(t, email).ID, apikey.Proxy, db.KeyInput{Name: "Busy"})
		if err != nil {
			t.Fatal(err)
		}
		row := keyRow(k.ID)
		b.nav("/dashboard/keys")
		alert := within(tid("alerts"), tid("alert"))
		b.click(within(row, tid("toggle-active")))
		b.waitText(within(row, tid("key-status")), "Inactive")
		b.click(within(row, tid("toggle-active")))
		b.waitText(within(row, tid("key-status")), "Active")
		if b.exists(alert) {
			b.fatalf("an alert after actions that worked")
		}
		b.click(within(row, tid("toggle-active"))) // the third write in a minute
		b.waitVisible(alert)
		if got := b.text(alert); !strings.Contains(got, "Too many changes to keys: at most 2 a minute.") {
			b.fatalf("the alert says %q", got)
		}
		if got := b.text(within(row, tid("key-status"))); got != "Active" {
			b.fatalf("a refused write changed the key: %s", got)
		}
		b.wantUsable(within(alert, tid("alert-dismiss")))
		b.consoleShot(s, "htmx-429")
		b.click(within(alert, tid("alert-dismiss")))
		b.waitGone(alert)

		// An expired form: the CSRF token no longer matches.
		tabEval[chromedp.Void](b, `document.querySelector('meta[name="csrf-token"]').content = "expired"`)
		b.click(within(row, tid("toggle-active")))
		b.waitVisible(alert)
		if got := b.text(alert); !strings.Contains(got, "This form has expired. Reload the page and try again.") {
			b.fatalf("the alert says %q", got)
		}
		b.consoleShot(s, "htmx-403")
	})
}
