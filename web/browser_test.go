package web

// The dashboard driven in headless Chromium: the flows a person follows, with
// JavaScript (htmx) and without it. Elements are found by their data-testid
// attributes, the UI contract that views/ keeps. Each page or state is saved
// as a PNG under artifacts/screenshots/ at the repository root.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"modelswitch/db/dbtest"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

const (
	browserTestTimeout = 60 * time.Second // the whole of one test, browser included
	stepTimeout        = 15 * time.Second // one wait or action
	screenshotDir      = "../artifacts/screenshots"
	browserPassword    = "correct horse battery"
)

var (
	billingKeyRE = regexp.MustCompile(`^mk-[0-9A-Za-z]{38}$`)
	proxyKeyRE   = regexp.MustCompile(`^ms-[0-9A-Za-z]{38}$`)
)

// tid selects an element by its data-testid.
func tid(id string) string { return "[data-testid=" + id + "]" }

// keyRow selects the table row of the key with this id.
func keyRow(id any) string { return fmt.Sprintf(`tr[data-testid=key-row][data-key-id="%v"]`, id) }

// within selects sel inside scope.
func within(scope, sel string) string { return scope + " " + sel }

var (
	createForm   = tid("create-key-form")
	createName   = within(createForm, "input[name=name]")
	createExpiry = within(createForm, "input[name=expires_at]")
	modal        = tid("reveal-modal")
	revealPanel  = tid("reveal-panel")
)

// tab is one browser tab on a fresh copy of the app.
type tab struct {
	t    *testing.T
	ctx  context.Context
	base string
	http *http.Client
	js   bool // the page's scripts run

	mu         sync.Mutex
	exceptions []string
}

// openDashboard serves the app on a loopback port, starts Chromium with an
// empty profile and opens a tab; js false turns scripts off in that tab.
func openDashboard(t *testing.T, js bool) *tab {
	t.Helper()
	chromium := chromiumPath(t)
	start := time.Now()
	t.Cleanup(func() { t.Logf("browser test took %s", time.Since(start).Round(time.Millisecond)) })

	base := serve(t, builtinCatalog)

	profile := t.TempDir() // registered first, so removed after the browser has exited
	ctx, cancel := context.WithTimeout(context.Background(), browserTestTimeout)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter"),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(profile),
	)
	tabCtx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for Chromium to exit
		cancel()
	})

	b := &tab{t: t, ctx: tabCtx, base: base, js: js, http: &http.Client{
		Timeout:       stepTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	if err := chromedp.Do(tabCtx); err != nil { // starts the browser and the tab
		t.Fatalf("start Chromium: %v", err)
	}
	if err := chromedp.Listen(tabCtx, func(ev any) {
		if e, ok := ev.(*cdpruntime.EventExceptionThrown); ok {
			msg := e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil && e.ExceptionDetails.Exception.Description != "" {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
			b.mu.Lock()
			b.exceptions = append(b.exceptions, fmt.Sprintf("%s (%s:%d)", msg, e.ExceptionDetails.URL, e.ExceptionDetails.LineNumber+1))
			b.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, e := range b.exceptions {
			t.Errorf("uncaught JavaScript exception: %s", e)
		}
	})
	if !js {
		if _, err := chromedp.Call(tabCtx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
			t.Fatal(err)
		}
	}
	// The copy button writes to the clipboard, and the test reads it back.
	for _, perm := range []string{"clipboard-read", "clipboard-write"} {
		if _, err := chromedp.CallBrowser(tabCtx, cdpbrowser.SetPermission, cdpbrowser.SetPermissionParams{
			Permission: &cdpbrowser.PermissionDescriptor{Name: perm, AllowWithoutSanitization: true},
			Setting:    cdpbrowser.PermissionSettingGranted,
			Origin:     base,
		}); err != nil {
			t.Fatalf("grant %s: %v", perm, err)
		}
	}
	if _, err := chromedp.Call(tabCtx, emulation.SetFocusEmulationEnabled, emulation.SetFocusEmulationEnabledParams{Enabled: true}); err != nil {
		t.Fatal(err)
	}
	return b
}

// chromiumPath is $CHROMIUM, else chromium on the PATH. Nothing is downloaded.
func chromiumPath(t *testing.T) string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found (set CHROMIUM or put chromium on the PATH): install Debian's chromium (make test does)")
	return ""
}

// fatalf stops the test, with a screenshot and the page's URL and text.
func (b *tab) fatalf(format string, args ...any) {
	b.t.Helper()
	msg := fmt.Sprintf(format, args...)
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err == nil {
		msg += "\npage: " + loc
	}
	if text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`)); err == nil {
		if len(text) > 1500 {
			text = text[:1500] + "…"
		}
		msg += "\npage text:\n" + text
	}
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		name := "FAIL-" + strings.ReplaceAll(b.t.Name(), "/", "-")
		if path, err := saveScreenshot(name, png); err == nil {
			msg += "\nscreenshot: " + path
		}
	}
	b.t.Fatal(msg)
}

// do runs actions that return nothing, within one step's time.
func (b *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fatalf("%s: %v", what, err)
	}
}

// tabRun runs an action that returns a value, within one step's time.
func tabRun[T any](b *tab, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.fatalf("%s: %v", what, err)
	}
	return v
}

// tabEval evaluates a JavaScript expression in the page (as DevTools does, so
// it works with the page's scripts off too); promises are awaited.
func tabEval[T any](b *tab, expr string) T {
	b.t.Helper()
	return tabRun(b, "evaluate "+expr, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// waitFor polls a JavaScript predicate until it is true; on timeout it
// reports describe's value, evaluated then.
func (b *tab) waitFor(what, predicate, describe string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout+5*time.Second)
	defer cancel()
	deadline := time.Now().Add(stepTimeout)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+predicate+")"))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			got := ""
			if describe != "" {
				got, _ = chromedp.Run(ctx, chromedp.Evaluate[string]("String("+describe+")"))
			}
			b.fatalf("timed out waiting until %s (last seen: %q, error: %v)", what, got, err)
		}
		time.Sleep(25 * time.Millisecond) // a tiny poll, bounded by the deadline above
	}
}

// jsQuote quotes s as a JavaScript string.
func jsQuote(s string) string {
	raw, _ := json.Marshal(s)
	return string(raw)
}

func (b *tab) nav(path string) *network.Response {
	b.t.Helper()
	return tabRun(b, "navigate to "+path, chromedp.NavigateResponse(b.base+path))
}

// submit clicks sel, which must cause a page load, and returns the response.
func (b *tab) submit(sel string) *network.Response {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	res, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		b.fatalf("click %s and wait for a page load: %v", sel, err)
	}
	return res
}

// click clicks sel once htmx is idle. htmx binds the elements of a swap
// only when it settles (20 ms later), so an element can be visible while a
// click on it would still fall through to a plain form post.
func (b *tab) click(sel string) {
	b.t.Helper()
	b.waitSettled()
	b.do("click "+sel, chromedp.Click(chromedp.CSS(sel)))
}

// waitSettled waits until htmx has no request in flight and has processed
// every element it swapped in (it marks them until then).
func (b *tab) waitSettled() {
	b.t.Helper()
	const busy = `document.querySelector(".htmx-request, .htmx-swapping, .htmx-added, .htmx-settling")`
	b.waitFor("htmx is idle", "!"+busy, busy+"?.outerHTML.slice(0, 200)")
}

func (b *tab) press(key string) {
	b.t.Helper()
	b.do("press a key", chromedp.KeyEvent(key))
}

// fill replaces the value of an input by typing into it, once htmx is idle:
// a swap still under way could replace the input and drop what was typed.
func (b *tab) fill(sel, value string) {
	b.t.Helper()
	b.waitSettled()
	b.waitVisible(sel)
	// chromedp's SetValue cannot set "" (it sends no argument), so clear it here.
	tabEval[chromedp.Void](b, "document.querySelector("+jsQuote(sel)+").value = ''")
	b.do("fill "+sel, chromedp.SendKeys(chromedp.CSS(sel), value))
}

func (b *tab) waitVisible(sel string) {
	b.t.Helper()
	b.do("wait until visible: "+sel, chromedp.WaitVisible(chromedp.CSS(sel)))
}

// waitGone waits until no element matches sel.
func (b *tab) waitGone(sel string) {
	b.t.Helper()
	b.waitFor("no element matches "+sel, "!document.querySelector("+jsQuote(sel)+")", "document.querySelector("+jsQuote(sel)+").outerHTML.slice(0, 300)")
}

// waitHidden waits until sel matches nothing or nothing visible.
func (b *tab) waitHidden(sel string) {
	b.t.Helper()
	b.waitFor(sel+" is hidden",
		"[...document.querySelectorAll("+jsQuote(sel)+")].every(e => !e.checkVisibility())",
		"document.querySelector("+jsQuote(sel)+").outerHTML.slice(0, 300)")
}

// waitText waits until the trimmed text of sel is want.
func (b *tab) waitText(sel, want string) {
	b.t.Helper()
	expr := "document.querySelector(" + jsQuote(sel) + ")?.textContent.trim()"
	b.waitFor(fmt.Sprintf("the text of %s is %q", sel, want), expr+" === "+jsQuote(want), expr)
}

func (b *tab) exists(sel string) bool {
	b.t.Helper()
	return tabEval[bool](b, "!!document.querySelector("+jsQuote(sel)+")")
}

func (b *tab) text(sel string) string {
	b.t.Helper()
	b.waitVisible(sel)
	return strings.TrimSpace(tabRun(b, "text of "+sel, chromedp.TextContent(chromedp.CSS(sel))))
}

func (b *tab) value(sel string) string {
	b.t.Helper()
	return tabRun(b, "value of "+sel, chromedp.Value(chromedp.CSS(sel)))
}

func (b *tab) path() string {
	b.t.Helper()
	loc := tabRun(b, "location", chromedp.Location())
	u, err := url.Parse(loc)
	if err != nil {
		b.fatalf("location %q: %v", loc, err)
	}
	return u.Path
}

func (b *tab) wantPath(want string) {
	b.t.Helper()
	if got := b.path(); got != want {
		b.fatalf("on %s, want %s", got, want)
	}
}

// shot checks the page's accessibility and saves a screenshot of it under
// artifacts/ (TestBrowserScreenshots keeps the README's).
func (b *tab) shot(name string) {
	b.t.Helper()
	b.checkA11y(name)
	png := tabRun(b, "screenshot "+name, chromedp.FullScreenshot(100))
	if _, err := saveScreenshot(name, png); err != nil {
		b.t.Fatal(err)
	}
}

func saveScreenshot(name string, png []byte) (string, error) {
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(screenshotDir, name+".png")
	return path, os.WriteFile(path, png, 0o644)
}

// mark tags the current document, so that the test can tell later that no
// page load happened in between.
func (b *tab) mark() {
	b.t.Helper()
	tabEval[chromedp.Void](b, "window.__browserTestMark = true")
}

func (b *tab) wantMarked(what string) {
	b.t.Helper()
	if !tabEval[bool](b, "window.__browserTestMark === true") {
		b.fatalf("%s reloaded the page; with JavaScript it should swap in place", what)
	}
}

// wantNoSecret checks that a key is nowhere the page keeps things: the DOM,
// input values, cookies, web storage, history state, URLs.
func (b *tab) wantNoSecret(key string) {
	b.t.Helper()
	hits := tabEval[[]string](b, `(() => {
		const k = `+jsQuote(key)+`, hits = [];
		if (document.documentElement.outerHTML.includes(k)) hits.push("document.documentElement.outerHTML");
		for (const e of document.querySelectorAll("input, textarea")) if (e.value.includes(k)) hits.push("the value of an input");
		if (document.cookie.includes(k)) hits.push("document.cookie");
		for (const [name, s] of [["localStorage", localStorage], ["sessionStorage", sessionStorage]])
			for (let i = 0; i < s.length; i++) if ((s.key(i) + s.getItem(s.key(i))).includes(k)) hits.push(name);
		if (JSON.stringify(history.state ?? null).includes(k)) hits.push("history.state");
		if (location.href.includes(k)) hits.push("the URL");
		for (const e of performance.getEntries()) if (e.name.includes(k)) hits.push("a requested URL: " + e.name);
		return hits;
	})()`)
	cookies := tabRun(b, "get cookies", func(ctx context.Context, t *chromedp.Target) ([]*network.Cookie, error) {
		res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{b.base}})
		return res.Cookies, err
	})
	for _, c := range cookies {
		if strings.Contains(c.Name+c.Value, key) {
			hits = append(hits, "cookie "+c.Name)
		}
	}
	if len(hits) > 0 {
		b.fatalf("the key %s… is still in %s", key[:7], strings.Join(hits, ", "))
	}
}

// wantUsable checks that a person can see and reach sel: once the window
// scrolls it into view, hit tests across it land on it and not on whatever
// covers or clips it (an overflow:hidden ancestor, a modal, the viewport's
// edge). chromedp's own visibility check ignores clipping, and its click
// scrolls containers that a person cannot scroll.
func (b *tab) wantUsable(sel string) {
	b.t.Helper()
	b.waitVisible(sel)
	problem := tabEval[string](b, `((sel) => {
		const name = (n) => !n ? "nothing" : n.tagName.toLowerCase() + (n.id ? "#" + n.id : "") +
			(n.dataset && n.dataset.testid ? "[data-testid=" + n.dataset.testid + "]" : "") +
			(typeof n.className === "string" && n.className.trim() ? "." + n.className.trim().split(/\s+/).join(".") : "");
		const e = document.querySelector(sel);
		let r = e.getBoundingClientRect();
		if (r.top < 0 || r.bottom > innerHeight) {
			window.scrollBy({top: r.top - Math.max(0, (innerHeight - r.height) / 2), behavior: "instant"});
			r = e.getBoundingClientRect();
		}
		for (const [fx, fy] of [[0.5, 0.5], [0.2, 0.2], [0.8, 0.2], [0.2, 0.8], [0.8, 0.8]]) {
			const x = r.left + r.width * fx, y = r.top + r.height * fy;
			if (x < 0 || y < 0 || x >= innerWidth || y >= innerHeight)
				return "part of it is outside the viewport: " + JSON.stringify(r);
			const hit = document.elementFromPoint(x, y);
			if (!hit || (hit !== e && !e.contains(hit))) {
				let clip = "";
				for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
					const s = getComputedStyle(a), c = a.getBoundingClientRect();
					if ((s.overflowX !== "visible" || s.overflowY !== "visible") && (r.bottom > c.bottom + 1 || r.top < c.top - 1 || r.right > c.right + 1 || r.left < c.left - 1)) {
						clip = "; it sticks out of " + name(a) + " (overflow " + s.overflowX + "/" + s.overflowY + "), which cuts it off";
						break;
					}
				}
				return "a click at " + Math.round(x) + "," + Math.round(y) + " lands on " + name(hit) + clip;
			}
		}
		return "";
	})(`+jsQuote(sel)+`)`)
	if problem != "" {
		b.fatalf("%s is shown but a person cannot see or reach all of it: %s", sel, problem)
	}
}

// noHorizontalOverflow checks that the page fits the viewport's width, and
// names the elements that stick out when it does not.
func (b *tab) noHorizontalOverflow(what string) {
	b.t.Helper()
	var r struct {
		ScrollWidth, InnerWidth, ClientWidth int
		Wide                                 []string
	}
	raw := tabEval[[]byte](b, `(() => {
		const d = document.documentElement, limit = Math.min(innerWidth, d.clientWidth);
		const wide = [];
		for (const e of document.body.querySelectorAll("*")) {
			const box = e.getBoundingClientRect();
			if (box.right > limit + 0.5 && e.checkVisibility() && wide.length < 8)
				wide.push(e.tagName.toLowerCase() + (e.dataset.testid ? "[data-testid=" + e.dataset.testid + "]" : "") +
					(e.className && typeof e.className === "string" ? "." + e.className.trim().split(/\s+/).join(".") : "") +
					" right=" + Math.round(box.right));
		}
		return {scrollWidth: d.scrollWidth, innerWidth: innerWidth, clientWidth: d.clientWidth, wide};
	})()`)
	if err := json.Unmarshal(raw, &r); err != nil {
		b.fatalf("overflow check: %v", err)
	}
	if r.ScrollWidth > r.InnerWidth || r.ScrollWidth > r.ClientWidth {
		b.fatalf("%s overflows horizontally: scrollWidth %d, innerWidth %d, clientWidth %d; elements past the edge: %s",
			what, r.ScrollWidth, r.InnerWidth, r.ClientWidth, strings.Join(r.Wide, "; "))
	}
}

// api calls the JSON API over the network, as a script would.
func (b *tab) api(method, path, auth string, body any) response {
	b.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = strings.NewReader(string(raw))
	}
	req, err := http.NewRequestWithContext(b.ctx, method, b.base+path, rd)
	if err != nil {
		b.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", auth)
	res, err := b.http.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	return readResponse(b.t, res)
}

// apiKeys lists the proxy keys with a billing key, by id.
func (b *tab) apiKeys(mk string) map[string]map[string]any {
	b.t.Helper()
	r := b.api("GET", "/api/keys", "Bearer "+mk, nil)
	if r.status != 200 {
		b.fatalf("GET /api/keys: %d %s", r.status, r.raw)
	}
	keys := map[string]map[string]any{}
	for _, k := range r.body["keys"].([]any) {
		k := k.(map[string]any)
		keys[fmt.Sprint(k["id"])] = k
	}
	return keys
}

// signUp creates an account through the sign-up page.
func (b *tab) signUp() string {
	b.t.Helper()
	email := dbtest.Email("browser")
	b.nav("/signup")
	b.fill(within(tid("signup-form"), "input[name=email]"), email)
	b.fill(within(tid("signup-form"), "input[name=password]"), browserPassword)
	b.submit(tid("signup-submit"))
	b.wantPath("/dashboard/billing-keys")
	return email
}

// createInModal creates a key with the form on the current page, with
// JavaScript: the new row appears and the modal shows the key. It returns the
// key and its row's id, and leaves the modal open.
func (b *tab) createInModal(name string, keyRE *regexp.Regexp) (key, id string) {
	b.t.Helper()
	b.fill(createName, name)
	b.click(tid("create-key-submit"))
	b.waitVisible(within(modal, tid("revealed-key")))
	if role := tabRun(b, "modal role", chromedp.AttributeValue(chromedp.CSS(modal), "role")); role.Value != "dialog" {
		b.fatalf("the reveal modal has role %q, want dialog", role.Value)
	}
	if ro := tabRun(b, "readonly", chromedp.AttributeValue(chromedp.CSS(within(modal, tid("revealed-key"))), "readonly")); !ro.Exists {
		b.fatalf("the revealed key's input is not readonly")
	}
	key = b.value(within(modal, tid("revealed-key")))
	if !keyRE.MatchString(key) {
		b.fatalf("the modal shows %q, want a key like %s", key, keyRE)
	}
	b.wantUsable(within(modal, tid("revealed-key")))
	b.wantUsable(within(modal, tid("copy-key")))
	b.wantUsable(within(modal, tid("close-modal")))
	prefix := key[:7] + "xxxx"
	b.waitFor("a row shows the new key's prefix "+prefix,
		`[...document.querySelectorAll("#key-rows tr[data-testid=key-row]")].some(r => r.querySelector("[data-testid=key-prefix]")?.textContent.trim() === `+jsQuote(prefix)+`)`,
		`[...document.querySelectorAll("[data-testid=key-prefix]")].map(e => e.textContent.trim()).join(", ")`)
	id = tabEval[string](b, `[...document.querySelectorAll("#key-rows tr[data-testid=key-row]")].find(r => r.querySelector("[data-testid=key-prefix]").textContent.trim() === `+jsQuote(prefix)+`).dataset.keyId`)
	if got := b.text(within(keyRow(id), tid("key-name"))); got != name {
		b.fatalf("the new row is named %q, want %q", got, name)
	}
	if got := b.text(within(keyRow(id), tid("key-status"))); got != "Active" {
		b.fatalf("the new row's status is %q, want Active", got)
	}
	if b.exists(tid("keys-empty")) && tabEval[bool](b, `document.querySelector("[data-testid=keys-empty]").checkVisibility()`) {
		b.fatalf("the empty state is still shown next to a key")
	}
	return key, id
}

// copyKey clicks the copy button and checks the clipboard.
func (b *tab) copyKey(key string) {
	b.t.Helper()
	b.click(within(modal, tid("copy-key")))
	b.waitText(within(modal, tid("copy-key")), "Copied")
	if clip := tabEval[string](b, "navigator.clipboard.readText()"); clip != key {
		b.fatalf("the clipboard holds %q, want the key %s…", clip, key[:7])
	}
}

// TestBrowserKeyLifecycle: sign up, create a billing key and copy it from the
// modal, use it with the API, manage the API key it made in the page, and
// sign out for good.
func TestBrowserKeyLifecycle(t *testing.T) {
	b := openDashboard(t, true)

	// Signed out, every dashboard page asks you to sign in; the home page
	// says what ModelSwitch is.
	for _, p := range []string{"/dashboard/keys", "/dashboard/billing-keys"} {
		b.nav(p)
		if got := b.path(); got != "/signin" {
			b.fatalf("GET %s while signed out ended on %s, want /signin", p, got)
		}
	}
	b.waitVisible(tid("signin-form"))
	b.nav("/")
	b.waitVisible(tid("landing"))

	b.nav("/signup")
	b.waitVisible(tid("signup-form"))
	if !tabEval[bool](b, `typeof window.htmx === "object"`) {
		b.fatalf("htmx did not load, so this test would not exercise the JavaScript flows")
	}
	b.shot("01-signup")
	b.signUp()
	b.submit(tid("nav-billing-keys"))
	b.wantPath("/dashboard/billing-keys")
	b.waitVisible(tid("keys-empty"))
	b.waitVisible(tid("keys-table"))
	b.shot("02-billing-keys-empty")

	// Create a billing key: the row appears and the modal shows the key once.
	b.mark()
	mk, _ := b.createInModal("CI billing", billingKeyRE)
	b.shot("03-reveal-modal")
	b.copyKey(mk)
	b.shot("04-key-copied")
	b.click(within(modal, tid("close-modal"))) // copied: closes at once
	b.waitGone(modal)
	b.wantMarked("creating a billing key")
	b.wantNoSecret(mk)
	b.shot("05-billing-key-listed")
	// Away and back again: nothing kept the key (no htmx history cache, no-store).
	b.submit(tid("nav-keys"))
	b.do("go back", chromedp.NavigateBack())
	b.waitVisible(tid("key-row"))
	b.wantNoSecret(mk)

	// The API Keys page starts empty; a script makes a key with the billing key.
	b.submit(tid("nav-keys"))
	b.wantPath("/dashboard/keys")
	b.waitVisible(tid("keys-empty"))
	r := b.api("POST", "/api/keys", "Bearer "+mk, map[string]string{"name": "Server A"})
	if r.status != 201 {
		b.fatalf("POST /api/keys with the billing key from the modal: %d %s", r.status, r.raw)
	}
	id, ms := fmt.Sprint(r.body["id"]), r.body["key"].(string)
	b.do("reload", chromedp.Reload())
	row := keyRow(id)
	b.waitVisible(row)
	if got := b.text(within(row, tid("key-name"))); got != "Server A" {
		b.fatalf("row name %q, want Server A", got)
	}
	if got := b.text(within(row, tid("key-prefix"))); got != ms[:7]+"xxxx" {
		b.fatalf("row prefix %q, want %s", got, ms[:7]+"xxxx")
	}
	if got := b.text(within(row, tid("key-status"))); got != "Active" {
		b.fatalf("row status %q, want Active", got)
	}
	if got := b.text(within(row, tid("toggle-active"))); got != "Deactivate" {
		b.fatalf("toggle button reads %q, want Deactivate", got)
	}
	b.wantNoSecret(ms)
	b.shot("06-api-keys")

	// Rename and deactivate in the page; each swaps the row in place.
	b.mark()
	b.click(within(row, tid("rename-key")))
	b.wantUsable(within(row, tid("rename-input")))
	b.wantUsable(within(row, tid("rename-submit")))
	if got := b.value(within(row, tid("rename-input"))); got != "Server A" {
		b.fatalf("rename input starts with %q, want the current name", got)
	}
	b.shot("07-rename-open")
	b.fill(within(row, tid("rename-input")), "Server B")
	b.click(within(row, tid("rename-submit")))
	b.waitText(within(row, tid("key-name")), "Server B")
	b.click(within(row, tid("toggle-active")))
	b.waitText(within(row, tid("key-status")), "Inactive")
	b.waitText(within(row, tid("toggle-active")), "Reactivate")
	b.wantMarked("renaming and deactivating")
	b.shot("08-renamed-and-deactivated")

	// The API agrees, and the key no longer works.
	k := b.apiKeys(mk)[id]
	if k == nil || k["name"] != "Server B" || k["active"] != false {
		b.fatalf("GET /api/keys after rename and deactivate: %v", k)
	}
	if r := b.api("GET", "/v1/models", "Bearer "+ms, nil); r.status != 401 {
		b.fatalf("a deactivated key still works: %d", r.status)
	}

	// Delete, after a confirmation that names the key.
	b.click(within(row, tid("delete-key")))
	b.wantUsable(within(row, tid("confirm-delete")))
	if confirm := tabEval[string](b, `document.querySelector(`+jsQuote(within(row, tid("delete-key")))+`).closest("details").textContent`); !strings.Contains(confirm, "Server B") {
		b.fatalf("the delete confirmation does not name the key: %q", strings.Join(strings.Fields(confirm), " "))
	}
	b.shot("09-delete-confirm")
	b.click(within(row, tid("confirm-delete")))
	b.waitGone(row)
	b.waitVisible(tid("keys-empty"))
	b.wantMarked("deleting")
	if keys := b.apiKeys(mk); len(keys) != 0 {
		b.fatalf("GET /api/keys after deleting in the page: %v", keys)
	}
	b.shot("10-key-deleted")

	// Sign out; the old session cookie, set again, signs nobody in.
	old := tabRun(b, "get cookies", func(ctx context.Context, t *chromedp.Target) ([]*network.Cookie, error) {
		res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{b.base}})
		return res.Cookies, err
	})
	if len(old) == 0 {
		b.fatalf("no session cookie while signed in")
	}
	for _, c := range old {
		if !c.HTTPOnly || c.SameSite != network.CookieSameSiteLax {
			t.Errorf("cookie %s: HttpOnly %v, SameSite %q; want HttpOnly and Lax", c.Name, c.HTTPOnly, c.SameSite)
		}
	}
	b.submit(tid("signout"))
	b.nav("/dashboard/keys")
	b.wantPath("/signin")
	for _, c := range old {
		b.do("set the old cookie "+c.Name, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.Call(ctx, network.SetCookie, network.SetCookieParams{
				Name: c.Name, Value: c.Value, URL: b.base, Path: c.Path, HTTPOnly: &c.HTTPOnly, SameSite: c.SameSite,
			})
			return err
		}))
	}
	b.nav("/dashboard/keys")
	if got := b.path(); got != "/signin" {
		b.fatalf("the session cookie from before sign-out still opens %s", got)
	}
	b.shot("11-signed-out")
}

// TestBrowserRevealModalClose: closing the modal before copying asks first,
// by button or by Escape; after copying it closes at once.
func TestBrowserRevealModalClose(t *testing.T) {
	b := openDashboard(t, true)
	b.signUp()
	b.waitVisible(tid("keys-empty"))
	b.mark()

	key1, id1 := b.createInModal("Never copied", billingKeyRE)
	confirm := within(modal, tid("close-confirm"))

	// Focus starts on the key and Tab cycles inside the modal, never behind it.
	focused := func() string {
		return tabEval[string](b, `(() => { const e = document.activeElement;
			return (e && e.closest("#reveal-modal") ? "modal:" : "page:") + (e && (e.dataset.testid || e.tagName)) })()`)
	}
	if got := focused(); got != "modal:revealed-key" {
		b.fatalf("focus after the modal opened: %s, want the key field", got)
	}
	seen := map[string]bool{}
	for range 6 {
		b.press(kb.Tab)
		got := focused()
		if !strings.HasPrefix(got, "modal:") {
			b.fatalf("Tab moved focus out of the modal, to %s", got)
		}
		seen[got] = true
	}
	if !seen["modal:revealed-key"] || !seen["modal:close-modal"] {
		b.fatalf("Tab did not cycle through the modal's controls: %v", seen)
	}
	if b.exists(confirm) && tabEval[bool](b, `document.querySelector(`+jsQuote(confirm)+`).checkVisibility()`) {
		b.fatalf("the close confirmation shows before anyone asked to close")
	}
	b.click(within(modal, tid("close-modal")))
	b.waitVisible(confirm)
	b.wantUsable(within(confirm, tid("close-anyway")))
	b.wantUsable(within(confirm, tid("close-back")))
	b.shot("12-close-confirm")

	// Going back keeps the key on screen.
	b.click(within(confirm, tid("close-back")))
	b.waitHidden(confirm)
	b.waitVisible(within(modal, tid("revealed-key")))
	if got := b.value(within(modal, tid("revealed-key"))); got != key1 {
		b.fatalf("after going back the modal shows %q", got)
	}

	// Escape follows the same rule.
	b.press(kb.Escape)
	b.waitVisible(confirm)
	if !b.exists(modal) {
		b.fatalf("Escape closed the modal of a key never copied")
	}
	b.click(within(confirm, tid("close-anyway")))
	b.waitGone(modal)
	b.wantNoSecret(key1)
	b.shot("13-closed-without-copy")

	// Copied, then Escape: closed at once.
	key2, id2 := b.createInModal("Copied then escaped", billingKeyRE)
	b.copyKey(key2)
	b.press(kb.Escape)
	b.waitGone(modal)
	b.wantNoSecret(key1)
	b.wantNoSecret(key2)
	b.wantMarked("creating keys and closing the modal")
	for _, id := range []string{id1, id2} {
		b.waitVisible(keyRow(id))
	}
	if n := tabEval[int](b, `document.querySelectorAll("#key-rows tr[data-testid=key-row]").length`); n != 2 {
		b.fatalf("%d rows after creating two keys", n)
	}
	b.shot("14-two-billing-keys")
}

// TestBrowserWithoutJavaScript: the same flows with scripts off, as plain
// form posts and redirects.
func TestBrowserWithoutJavaScript(t *testing.T) {
	b := openDashboard(t, false)

	// A bad sign-up keeps what was typed and says what is wrong.
	email := dbtest.Email("browser")
	b.nav("/signup")
	if tabEval[bool](b, `typeof window.htmx !== "undefined"`) {
		b.fatalf("scripts ran although they are off in this tab")
	}
	b.fill(within(tid("signup-form"), "input[name=email]"), email)
	b.fill(within(tid("signup-form"), "input[name=password]"), "short")
	res := b.submit(tid("signup-submit"))
	if res.Status < 400 || res.Status >= 500 {
		t.Errorf("sign-up with a short password answered %d, want a 4xx", res.Status)
	}
	b.waitVisible(tid("error-password"))
	if got := b.value(within(tid("signup-form"), "input[name=email]")); got != email {
		b.fatalf("the email field holds %q after an error, want %q", got, email)
	}
	b.shot("20-nojs-signup-error")
	b.fill(within(tid("signup-form"), "input[name=password]"), browserPassword)
	b.submit(tid("signup-submit"))
	b.wantPath("/dashboard/billing-keys")
	b.waitVisible(tid("keys-empty"))

	// Creating a billing key answers a page that shows it once.
	b.fill(createName, "No-JS billing")
	res = b.submit(tid("create-key-submit"))
	if res.Status/100 != 2 || !strings.Contains(fmt.Sprint(res.Headers["Cache-Control"], res.Headers["cache-control"]), "no-store") {
		t.Errorf("the page that reveals a key: status %d, headers %v; want 2xx with Cache-Control: no-store", res.Status, res.Headers)
	}
	b.wantUsable(within(revealPanel, tid("revealed-key")))
	mk := b.value(within(revealPanel, tid("revealed-key")))
	if !billingKeyRE.MatchString(mk) {
		b.fatalf("the reveal panel shows %q, want a billing key", mk)
	}
	if strings.Contains(res.URL, mk) || strings.Contains(tabRun(b, "location", chromedp.Location()), mk) {
		b.fatalf("the key is in the URL")
	}
	b.shot("21-nojs-reveal-panel")
	b.submit(tid("nav-billing-keys"))
	b.waitVisible(tid("key-row"))
	if b.exists(revealPanel) {
		b.fatalf("the key is shown again on the next visit")
	}
	b.wantNoSecret(mk)
	// Back to the page that revealed it: the browser kept no copy (no-store).
	b.do("go back", chromedp.NavigateBack())
	b.wantNoSecret(mk)
	b.shot("21b-nojs-back-after-reveal")
	b.nav("/dashboard/billing-keys")

	// The API Keys page: a bad name is refused next to the field, typed value kept.
	b.submit(tid("nav-keys"))
	b.wantPath("/dashboard/keys")
	b.waitVisible(tid("keys-empty"))
	long := strings.Repeat("n", 101)
	for _, bad := range []string{"", long} {
		// Skip the browser's own checks (required, maxlength), as an old
		// browser or a hand-made request would, so that the server's show.
		b.do("relax the form", chromedp.SetAttributeValue(chromedp.CSS(createForm), "novalidate", ""),
			chromedp.RemoveAttribute(chromedp.CSS(createName), "maxlength"),
			chromedp.RemoveAttribute(chromedp.CSS(createName), "required"))
		b.fill(createName, bad)
		res := b.submit(tid("create-key-submit"))
		if res.Status < 400 || res.Status >= 500 {
			t.Errorf("creating a key named %q answered %d, want a 4xx", bad, res.Status)
		}
		b.waitVisible(tid("error-name"))
		if got := b.value(createName); got != bad {
			b.fatalf("after the error the name field holds %q, want %q", got, bad)
		}
		if b.exists(revealPanel) {
			b.fatalf("a refused name revealed a key")
		}
	}
	b.shot("22-nojs-name-error")
	if keys := b.apiKeys(mk); len(keys) != 0 {
		b.fatalf("refused names made keys: %v", keys)
	}

	// Create an API key with an expiry date.
	b.nav("/dashboard/keys")
	b.fill(createName, "No-JS proxy")
	b.do("set the expiry date", chromedp.SetValue(chromedp.CSS(createExpiry), "2030-12-31"))
	res = b.submit(tid("create-key-submit"))
	if res.Status/100 != 2 || !strings.Contains(fmt.Sprint(res.Headers["Cache-Control"], res.Headers["cache-control"]), "no-store") {
		t.Errorf("the page that reveals an API key: status %d, headers %v; want 2xx with Cache-Control: no-store", res.Status, res.Headers)
	}
	b.waitVisible(within(revealPanel, tid("revealed-key")))
	ms := b.value(within(revealPanel, tid("revealed-key")))
	if !proxyKeyRE.MatchString(ms) {
		b.fatalf("the reveal panel shows %q, want an API key", ms)
	}
	b.shot("23-nojs-api-key-revealed")
	keys := b.apiKeys(mk)
	if len(keys) != 1 {
		b.fatalf("GET /api/keys: %v", keys)
	}
	var id string
	for id = range keys {
	}
	if k := keys[id]; k["name"] != "No-JS proxy" || k["prefix"] != ms[:7]+"xxxx" || k["expiresAt"] == nil || k["active"] != true {
		b.fatalf("the key made in the page, seen by the API: %v", k)
	}
	if r := b.api("GET", "/v1/models", "Bearer "+ms, nil); r.status != 200 {
		b.fatalf("the new key does not work: %d %s", r.status, r.raw)
	}

	// Rename, refused then accepted.
	b.submit(tid("nav-keys"))
	row := keyRow(id)
	b.waitVisible(row)
	b.click(within(row, tid("rename-key")))
	b.wantUsable(within(row, tid("rename-input")))
	b.wantUsable(within(row, tid("rename-submit")))
	b.do("relax the rename form", chromedp.RemoveAttribute(chromedp.CSS(within(row, tid("rename-input"))), "maxlength"),
		chromedp.SetAttributeValue(chromedp.CSS(within(row, "form:has([data-testid=rename-input])")), "novalidate", ""))
	b.fill(within(row, tid("rename-input")), long)
	res = b.submit(within(row, tid("rename-submit")))
	if res.Status < 400 || res.Status >= 500 {
		t.Errorf("renaming to 101 characters answered %d, want a 4xx", res.Status)
	}
	b.wantUsable(within(row, tid("error-name")))
	if got := b.value(within(row, tid("rename-input"))); got != long {
		b.fatalf("after the error the rename field holds %q", got)
	}
	b.shot("24-nojs-rename-error")
	b.fill(within(row, tid("rename-input")), "Renamed without JS")
	b.submit(within(row, tid("rename-submit")))
	b.wantPath("/dashboard/keys")
	if got := b.text(within(row, tid("key-name"))); got != "Renamed without JS" {
		b.fatalf("after renaming the row says %q", got)
	}

	// Deactivate.
	if got := b.text(within(row, tid("toggle-active"))); got != "Deactivate" {
		b.fatalf("toggle button reads %q, want Deactivate", got)
	}
	b.submit(within(row, tid("toggle-active")))
	b.wantPath("/dashboard/keys")
	if got := b.text(within(row, tid("key-status"))); got != "Inactive" {
		b.fatalf("status %q after deactivating, want Inactive", got)
	}
	if got := b.text(within(row, tid("toggle-active"))); got != "Reactivate" {
		b.fatalf("toggle button reads %q after deactivating, want Reactivate", got)
	}
	if k := b.apiKeys(mk)[id]; k["name"] != "Renamed without JS" || k["active"] != false {
		b.fatalf("the API sees %v", k)
	}
	b.shot("25-nojs-renamed-deactivated")

	// Delete, after the confirmation.
	b.click(within(row, tid("delete-key")))
	b.wantUsable(within(row, tid("confirm-delete")))
	if confirm := tabEval[string](b, `document.querySelector(`+jsQuote(within(row, tid("delete-key")))+`).closest("details").textContent`); !strings.Contains(confirm, "Renamed without JS") {
		b.fatalf("the delete confirmation does not name the key: %q", strings.Join(strings.Fields(confirm), " "))
	}
	b.submit(within(row, tid("confirm-delete")))
	b.wantPath("/dashboard/keys")
	if b.exists(row) {
		b.fatalf("the deleted key's row is still there")
	}
	b.waitVisible(tid("keys-empty"))
	if keys := b.apiKeys(mk); len(keys) != 0 {
		b.fatalf("GET /api/keys after deleting: %v", keys)
	}
	b.shot("26-nojs-deleted")

	// Sign out, sign in (a wrong password first), sign out everywhere.
	b.submit(tid("signout"))
	b.nav("/dashboard/keys")
	b.wantPath("/signin")
	b.fill(within(tid("signin-form"), "input[name=email]"), email)
	b.fill(within(tid("signin-form"), "input[name=password]"), "wrong password")
	b.submit(tid("signin-submit"))
	b.waitVisible(tid("form-error"))
	if got := b.value(within(tid("signin-form"), "input[name=email]")); got != email {
		b.fatalf("the email field holds %q after a failed sign-in", got)
	}
	b.shot("27-nojs-signin-error")
	b.fill(within(tid("signin-form"), "input[name=password]"), browserPassword)
	b.submit(tid("signin-submit"))
	b.wantPath("/dashboard/keys")
	b.submit(tid("signout-everywhere"))
	b.submit(tid("confirm-signout-everywhere"))
	b.nav("/dashboard/keys")
	b.wantPath("/signin")
}

// TestBrowserPhoneWidth: the pages fit a phone's width.
func TestBrowserPhoneWidth(t *testing.T) {
	b := openDashboard(t, true)
	b.do("emulate a phone", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
			Width: 390, Height: 844, DeviceScaleFactor: 2, Mobile: true,
		})
		return err
	}))

	b.nav("/signup")
	b.waitVisible(tid("signup-form"))
	b.noHorizontalOverflow("the sign-up page")
	b.shot("30-phone-signup")
	b.signUp()
	b.waitVisible(tid("keys-empty"))
	b.noHorizontalOverflow("the empty Billing Keys page")

	mk, _ := b.createInModal("Phone billing key", billingKeyRE)
	b.noHorizontalOverflow("the reveal modal")
	b.shot("31-phone-reveal-modal")
	b.copyKey(mk)
	b.click(within(modal, tid("close-modal")))
	b.waitGone(modal)

	expiry := time.Now().Add(72 * time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	for _, body := range []map[string]string{
		{"name": "Production"},
		{"name": "Staging server for the nightly batch jobs", "expires_at": expiry},
		{"name": strings.Repeat("W", 100)},
	} {
		if r := b.api("POST", "/api/keys", "Bearer "+mk, body); r.status != 201 {
			b.fatalf("POST /api/keys: %d %s", r.status, r.raw)
		}
	}
	b.submit(tid("nav-keys"))
	b.wantPath("/dashboard/keys")
	if n := tabEval[int](b, `document.querySelectorAll("#key-rows tr[data-testid=key-row]").length`); n != 3 {
		b.fatalf("%d rows, want 3", n)
	}
	b.noHorizontalOverflow("the API Keys page")
	b.shot("32-phone-api-keys")

	b.click(tid("delete-key"))
	b.wantUsable(tid("confirm-delete"))
	b.noHorizontalOverflow("the API Keys page with a delete confirmation open")
	b.shot("33-phone-delete-confirm")
}
