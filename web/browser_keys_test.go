package web

// The keys console in headless Chromium, at 1280×800 and at a phone's
// 390×844: pop-overs inside the viewport and one at a time, the revealed
// key whole on a phone, focus and announcements after each row action, the
// expiry shown as the day chosen and changed in place, and search, sort and
// pages with JavaScript and without.

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"modelswitch/db"
	"modelswitch/db/apikey"
)

// keysScreen is a width and height the console is checked at.
type keysScreen struct {
	name          string // "1280" or "390", in screenshot names
	width, height int64
}

var (
	keysDesktop = keysScreen{"1280", 1280, 800}
	keysPhone   = keysScreen{"390", 390, 844}
)

// keysResize emulates the screen (a phone is a mobile device at 2×).
func (b *tab) keysResize(v keysScreen) {
	b.t.Helper()
	scale, mobile := 1.0, false
	if v.width < 640 {
		scale, mobile = 2, true
	}
	b.do("emulate "+v.name, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
			Width: v.width, Height: v.height, DeviceScaleFactor: scale, Mobile: mobile,
		})
		return err
	}))
}

// rectExpr is the bounding box of sel and the viewport, as JSON.
func keysRectExpr(sel string) string {
	return `(() => { const e = document.querySelector(` + jsQuote(sel) + `); if (!e) return "missing";
		const r = e.getBoundingClientRect();
		return JSON.stringify({left: Math.round(r.left), top: Math.round(r.top), right: Math.round(r.right), bottom: Math.round(r.bottom),
			width: document.documentElement.clientWidth, height: innerHeight}) })()`
}

// wantInViewport waits until all of sel lies inside the viewport. With
// scripts on, opening a pop-over scrolls it into view by itself; without
// them a person scrolls, so the test scrolls it into view first.
func (b *tab) wantInsideViewport(sel string) {
	b.t.Helper()
	b.waitVisible(sel)
	if !b.js {
		tabEval[bool](b, `(document.querySelector(`+jsQuote(sel)+`).scrollIntoView({block: "nearest", inline: "nearest"}), true)`)
	}
	inside := `(() => { const e = document.querySelector(` + jsQuote(sel) + `); const r = e.getBoundingClientRect();
		return r.width > 0 && r.left >= 0 && r.top >= 0 && r.right <= document.documentElement.clientWidth && r.bottom <= innerHeight })()`
	b.waitFor(sel+" lies inside the viewport", inside, keysRectExpr(sel))
}

// wantOnlyOpen checks that the pop-over of summary is the only one open.
func (b *tab) wantOnlyPopover(summary string) {
	b.t.Helper()
	b.waitFor("only "+summary+"'s pop-over is open",
		`(() => { const open = [...document.querySelectorAll("details[open]")];
			return open.length === 1 && open[0].contains(document.querySelector(`+jsQuote(summary)+`)) })()`,
		`[...document.querySelectorAll("details[open] summary")].map(s => s.id).join(", ")`)
}

func (b *tab) wantNoPopover(what string) {
	b.t.Helper()
	b.waitFor(what+" closes every pop-over", `!document.querySelector("details[open]")`,
		`[...document.querySelectorAll("details[open] summary")].map(s => s.id).join(", ")`)
}

// wantFocus waits until the element with this id has focus.
func (b *tab) wantFocusOn(id, after string) {
	b.t.Helper()
	b.waitFor("focus is on #"+id+" after "+after, `document.activeElement && document.activeElement.id === `+jsQuote(id),
		`document.activeElement ? document.activeElement.tagName + "#" + document.activeElement.id : "nothing"`)
}

// wantAnnounced waits until the live region says text, and a toast shows
// it; the toast is hidden from screen readers, so it is said once.
func (b *tab) wantAnnounced(text string) {
	b.t.Helper()
	b.waitText(tid("keys-live"), text)
	b.waitFor("a toast shows "+text,
		`[...document.querySelectorAll("[data-testid=toast]")].some(t => t.textContent === `+jsQuote(text)+` && t.closest("[aria-hidden=true]"))`,
		`[...document.querySelectorAll("[data-testid=toast]")].map(t => t.textContent).join(" | ")`)
}

// keysCellText is the text of a row's cell, its phone label included, spaces
// squeezed.
func (b *tab) keysCellText(sel string) string {
	b.t.Helper()
	return strings.Join(strings.Fields(tabEval[string](b, `document.querySelector(`+jsQuote(sel)+`).textContent`)), " ")
}

func keysRowCount(b *tab) int {
	b.t.Helper()
	return tabEval[int](b, `document.querySelectorAll("#key-rows tr[data-testid=key-row]").length`)
}

func TestBrowserKeysConsoleDesktop(t *testing.T) { keysConsole(t, keysDesktop) }
func TestBrowserKeysConsolePhone(t *testing.T)   { keysConsole(t, keysPhone) }

// keysConsole: the row actions of both pages at one width, with scripts on.
func keysConsole(t *testing.T, v keysScreen) {
	b := openDashboard(t, true)
	b.keysResize(v)
	b.signUp()
	b.waitVisible(tid("keys-empty"))

	// The empty state's button leads to the create form's name field.
	b.click(tid("empty-create"))
	b.wantFocusOn("key-name", "the empty state's button")
	b.shot("50-keys-empty-" + v.name)

	// The revealed key shows whole, not scrolled or cut, at this width.
	mk, billingID := b.createInModal("Console billing", billingKeyRE)
	b.wantInsideViewport(within(modal, tid("revealed-key")))
	b.waitFor("the revealed key fits its field",
		`(() => { const e = document.querySelector(`+jsQuote(within(modal, tid("revealed-key")))+`);
			return e.scrollWidth <= e.clientWidth && e.scrollHeight <= e.clientHeight })()`,
		`(() => { const e = document.querySelector(`+jsQuote(within(modal, tid("revealed-key")))+`);
			return [e.scrollWidth, e.clientWidth, e.scrollHeight, e.clientHeight].join(" ") })()`)
	b.shot("51-keys-reveal-" + v.name)
	b.copyKey(mk)
	b.click(within(modal, tid("close-modal")))
	b.waitGone(modal)

	// Billing keys are renamed in place too.
	brow := keyRow(billingID)
	b.click(within(brow, tid("rename-key")))
	b.wantInsideViewport(within(brow, tid("rename-key-panel")))
	b.fill(within(brow, tid("rename-input")), "Console billing renamed")
	b.click(within(brow, tid("rename-submit")))
	b.waitText(within(brow, tid("key-name")), "Console billing renamed")
	b.wantFocusOn("key-"+billingID+"-rename", "renaming a billing key")
	b.wantAnnounced("Key renamed to “Console billing renamed”.")

	// Three API keys; the newest has a long name.
	long := strings.Repeat("W", 100)
	var ids []string
	for _, name := range []string{"Production", "Staging", long} {
		r := b.api("POST", "/api/keys", "Bearer "+mk, map[string]string{"name": name})
		if r.status != 201 {
			b.fatalf("POST /api/keys: %d %s", r.status, r.raw)
		}
		ids = append([]string{fmt.Sprint(r.body["id"])}, ids...) // newest first, as listed
	}
	b.submit(tid("nav-keys"))
	b.waitVisible(keyRow(ids[0]))
	b.noHorizontalOverflow("the API Keys page")
	b.mark()

	// Every pop-over of the first and the last row lies inside the viewport,
	// and opening one closes the others. (A pop-over covers the rows below
	// it, so Escape closes it before the next row.)
	for _, id := range []string{ids[0], ids[2]} {
		row := keyRow(id)
		for _, action := range []string{"limits-key", "expiry-key", "rename-key", "delete-key"} {
			b.click(within(row, tid(action)))
			b.wantOnlyPopover(within(row, tid(action)))
			b.wantInsideViewport(within(row, tid(action+"-panel")))
		}
		if id == ids[0] {
			b.press(kb.Escape)
			b.wantNoPopover("Escape")
		}
	}
	b.noHorizontalOverflow("the API Keys page with a pop-over open")
	b.shot("52-keys-delete-confirm-" + v.name)

	// A click outside closes the pop-over; so do Escape and Cancel, which
	// give focus back to its button.
	b.click("main h1")
	b.wantNoPopover("a click outside")
	first := keyRow(ids[0])
	b.click(within(first, tid("rename-key")))
	b.wantFocusOn("rename-"+ids[0], "opening Rename")
	b.press(kb.Escape)
	b.wantNoPopover("Escape")
	b.wantFocusOn("key-"+ids[0]+"-rename", "Escape")
	b.click(within(first, tid("delete-key")))
	b.wantUsable(within(first, tid("cancel-delete")))
	b.click(within(first, tid("cancel-delete")))
	b.wantNoPopover("Cancel")
	b.wantFocusOn("key-"+ids[0]+"-delete", "Cancel")
	if !b.exists(first) {
		b.fatalf("Cancel deleted the key")
	}

	// Rename: focus stays on the row's Rename, the result is announced.
	b.click(within(first, tid("rename-key")))
	b.wantInsideViewport(within(first, tid("rename-key-panel")))
	b.shot("53-keys-rename-open-" + v.name)
	b.fill(within(first, tid("rename-input")), "Long name, renamed")
	b.click(within(first, tid("rename-submit")))
	b.waitText(within(first, tid("key-name")), "Long name, renamed")
	b.wantFocusOn("key-"+ids[0]+"-rename", "renaming")
	b.wantAnnounced("Key renamed to “Long name, renamed”.")
	b.shot("54-keys-renamed-" + v.name)

	// Deactivate: focus stays on the toggle, which now reactivates.
	b.click(within(first, tid("toggle-active")))
	b.waitText(within(first, tid("toggle-active")), "Reactivate")
	b.wantFocusOn("key-"+ids[0]+"-toggle", "deactivating")
	b.wantAnnounced("Key “Long name, renamed” deactivated.")

	// Expiry: the day chosen is the day shown, and the API agrees; then none.
	b.click(within(first, tid("expiry-key")))
	b.wantInsideViewport(within(first, tid("expiry-key-panel")))
	b.do("choose Dec 26", chromedp.SetValue(chromedp.CSS(within(first, tid("expiry-input"))), "2031-12-26"))
	b.click(within(first, tid("expiry-submit")))
	b.wantAnnounced("Key “Long name, renamed” now works until Dec 26, 2031, end of day UTC.")
	b.wantFocusOn("key-"+ids[0]+"-expiry", "saving the expiry")
	if got := b.keysCellText(within(first, tid("key-expires"))); !strings.Contains(got, "Dec 26, 2031") || !strings.Contains(got, "end of day UTC") || strings.Contains(got, "Dec 27") {
		b.fatalf("after choosing Dec 26 the row shows %q", got)
	}
	if k := b.apiKeys(mk)[ids[0]]; k["expiresAt"] != "2031-12-27T00:00:00Z" {
		b.fatalf("the API sees %v", k["expiresAt"])
	}
	b.shot("55-keys-expiry-" + v.name)
	b.click(within(first, tid("expiry-key")))
	if got := b.value(within(first, tid("expiry-input"))); got != "2031-12-26" {
		b.fatalf("the Expiry form starts at %q, want the day chosen", got)
	}
	b.click(within(first, tid("expiry-never")))
	b.wantAnnounced("Key “Long name, renamed” no longer expires.")
	if got := b.keysCellText(within(first, tid("key-expires"))); !strings.HasSuffix(got, "Never") {
		b.fatalf("after Never the row shows %q", got)
	}

	// Delete: focus goes to the next row, then to the one left, then to the
	// create form's name field once no key is left.
	b.click(within(first, tid("delete-key")))
	b.click(within(first, tid("confirm-delete")))
	b.waitGone(first)
	b.wantFocusOn("key-"+ids[1], "deleting the first row")
	b.wantAnnounced("Key “Long name, renamed” deleted.")
	last := keyRow(ids[2])
	b.click(within(last, tid("delete-key")))
	b.wantInsideViewport(within(last, tid("delete-key-panel")))
	b.click(within(last, tid("confirm-delete")))
	b.waitGone(last)
	b.wantFocusOn("key-"+ids[1], "deleting the last row")
	b.wantAnnounced("Key “Production” deleted.")
	b.click(within(keyRow(ids[1]), tid("delete-key")))
	b.click(within(keyRow(ids[1]), tid("confirm-delete")))
	b.waitVisible(tid("keys-empty"))
	b.wantFocusOn("key-name", "deleting the only key")
	b.wantAnnounced("Key “Staging” deleted.")
	b.wantMarked("the row actions")
	// The toasts go away by themselves.
	b.waitGone(tid("toast"))
	b.shot("56-keys-all-deleted-" + v.name)
}

// scaleUser gives the signed-in account of email n API keys named "Key
// 000"…, every 40th (7, 47, 87) "Production EU n"; oldest first.
func keysAtScale(b *tab, email string, n int) []db.CreatedKey {
	b.t.Helper()
	ctx := context.Background()
	u, err := store.CheckPassword(ctx, email, browserPassword, newAddr())
	if err != nil {
		b.t.Fatal(err)
	}
	keys := make([]db.CreatedKey, n)
	for i := range n {
		name := fmt.Sprintf("Key %03d", i)
		if i%40 == 7 {
			name = fmt.Sprintf("Production EU %d", i)
		}
		if keys[i], err = store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: name}); err != nil {
			b.t.Fatal(err)
		}
	}
	return keys
}

// firstRowID is the id of the first row shown.
func keysFirstRowID(b *tab) string {
	b.t.Helper()
	return tabEval[string](b, `document.querySelector("#key-rows tr[data-testid=key-row]")?.dataset.keyId ?? ""`)
}

// TestBrowserKeysAtScale: 120 keys, searched, sorted and paged in place
// with htmx, the URL following; at both widths.
func TestBrowserKeysAtScale(t *testing.T) {
	b := openDashboard(t, true)
	b.keysResize(keysDesktop)
	email := b.signUp()
	keys := keysAtScale(b, email, 120)
	if err := store.RecordKeyUse(context.Background(), keys[33].Key); err != nil {
		t.Fatal(err)
	}
	b.nav("/dashboard/keys")
	b.waitText(tid("keys-summary"), "120 API keys, showing 1–50.")
	if n := keysRowCount(b); n != 50 {
		b.fatalf("%d rows on the first page, want 50", n)
	}
	b.mark()

	// Search: the card swaps in place, the URL says what it shows, focus
	// stays in the field and the result is announced.
	b.fill(tid("search-input"), "production")
	b.press(kb.Enter)
	b.waitText(tid("keys-summary"), "3 API keys match “production”.")
	if n := keysRowCount(b); n != 3 || keysFirstRowID(b) != fmt.Sprint(keys[87].ID) {
		b.fatalf("search: %d rows, first %s", n, keysFirstRowID(b))
	}
	if q := b.consoleQuery(); q.Get("q") != "production" {
		b.fatalf("the URL after searching: %v", q)
	}
	b.wantFocusOn("keys-q", "searching")
	b.waitText(tid("keys-live"), "3 API keys match “production”.")
	b.wantMarked("searching")
	b.shot("57-keys-search-" + keysDesktop.name)

	// Sort by last use: changing the select is enough.
	tabEval[bool](b, `(() => { const s = document.getElementById("keys-sort"); s.focus(); s.value = "last_used";
		s.dispatchEvent(new Event("change", {bubbles: true})); return true })()`)
	b.waitFor("the URL sorts by last use", `new URLSearchParams(location.search).get("sort") === "last_used"`, `location.search`)
	b.wantFocusOn("keys-sort", "sorting")

	// Clear the search: the most recently used key comes first, then pages.
	b.fill(tid("search-input"), "")
	b.press(kb.Enter)
	b.waitText(tid("keys-summary"), "120 API keys, showing 1–50.")
	if got := keysFirstRowID(b); got != fmt.Sprint(keys[33].ID) {
		b.fatalf("sorted by last use, the first row is %s, want %d", got, keys[33].ID)
	}
	b.click(tid("page-next"))
	b.waitText(tid("page-status"), "Page 2 of 3")
	b.wantFocusOn("keys-next", "going to the next page")
	if q := b.consoleQuery(); q.Get("page") != "2" || q.Get("sort") != "last_used" {
		b.fatalf("the URL of page 2: %v", q)
	}
	b.click(tid("page-next"))
	b.waitText(tid("keys-summary"), "120 API keys, showing 101–120.")
	if n := keysRowCount(b); n != 20 {
		b.fatalf("%d rows on the last page", n)
	}
	b.wantFocusOn("keys-summary", "reaching the last page")
	b.wantMarked("paging")
	b.shot("58-keys-last-page-" + keysDesktop.name)
	// Back goes to the page before, loaded again (no history cache).
	tabEval[bool](b, `(history.back(), true)`)
	b.waitText(tid("page-status"), "Page 2 of 3")

	// A phone: the same, inside its width.
	b.keysResize(keysPhone)
	b.nav("/dashboard/keys?q=key")
	b.waitVisible(tid("keys-summary"))
	b.noHorizontalOverflow("a search on a keysPhone")
	b.mark()
	b.click(tid("page-next"))
	b.waitText(tid("page-status"), "Page 2 of 3")
	b.wantInsideViewport(tid("page-prev"))
	row := keyRow(keysFirstRowID(b))
	b.click(within(row, tid("expiry-key")))
	b.wantInsideViewport(within(row, tid("expiry-key-panel")))
	b.press(kb.Escape)
	b.wantNoPopover("Escape")
	b.wantMarked("paging on a keysPhone")
	b.shot("59-keys-search-" + keysPhone.name)
}

// TestBrowserKeysWithoutJavaScript: search, sort and pages as plain GET
// forms and links; row actions answer with a redirect whose page says what
// happened; the pop-overs fit both widths; Cancel closes the confirmation.
func TestBrowserKeysWithoutJavaScript(t *testing.T) {
	b := openDashboard(t, false)
	b.keysResize(keysDesktop)
	email := b.signUp()
	keys := keysAtScale(b, email, 60)
	b.nav("/dashboard/keys")
	b.waitText(tid("keys-summary"), "60 API keys, showing 1–50.")

	// Search with the form.
	b.fill(tid("search-input"), "PRODUCTION")
	b.submit(tid("search-submit"))
	b.waitText(tid("keys-summary"), "2 API keys match “PRODUCTION”.")
	if q := b.consoleQuery(); q.Get("q") != "PRODUCTION" || keysRowCount(b) != 2 {
		b.fatalf("search without JavaScript: %v, %d rows", q, keysRowCount(b))
	}
	b.shot("60-nojs-keys-search-" + keysDesktop.name)

	// Sort with the form, then page with the links.
	if err := store.RecordKeyUse(context.Background(), keys[12].Key); err != nil {
		t.Fatal(err)
	}
	b.fill(tid("search-input"), "")
	b.do("sort by last use", chromedp.SetValue(chromedp.CSS(tid("sort-select")), "last_used"))
	b.submit(tid("search-submit"))
	if got := keysFirstRowID(b); got != fmt.Sprint(keys[12].ID) {
		b.fatalf("sorted by last use without JavaScript, the first row is %s", got)
	}
	b.submit(tid("page-next"))
	b.waitText(tid("page-status"), "Page 2 of 2")
	if q := b.consoleQuery(); q.Get("page") != "2" || q.Get("sort") != "last_used" || keysRowCount(b) != 10 {
		b.fatalf("page 2: %v, %d rows", q, keysRowCount(b))
	}

	// A rename answers with a redirect to the same list, saying what it did.
	row := keyRow(keysFirstRowID(b))
	name := b.text(within(row, tid("key-name")))
	b.click(within(row, tid("rename-key")))
	b.wantInsideViewport(within(row, tid("rename-key-panel")))
	b.fill(within(row, tid("rename-input")), name+" renamed")
	b.submit(within(row, tid("rename-submit")))
	b.waitText(tid("keys-notice"), "Key renamed to “"+name+" renamed”.")
	if q := b.consoleQuery(); q.Get("page") != "2" || q.Get("sort") != "last_used" {
		b.fatalf("after renaming, the list is %v", q)
	}
	if got := b.text(within(row, tid("key-name"))); got != name+" renamed" {
		b.fatalf("the row reads %q", got)
	}

	// The expiry: the day chosen, shown as chosen.
	b.click(within(row, tid("expiry-key")))
	b.do("choose Jun 30", chromedp.SetValue(chromedp.CSS(within(row, tid("expiry-input"))), "2032-06-30"))
	b.submit(within(row, tid("expiry-submit")))
	b.waitText(tid("keys-notice"), "Key “"+name+" renamed” now works until Jun 30, 2032, end of day UTC.")
	if got := b.keysCellText(within(row, tid("key-expires"))); got != "Expires: Jun 30, 2032, end of day UTC" {
		b.fatalf("the row's expiry reads %q", got)
	}

	// Cancel closes the delete confirmation (by loading the list again),
	// the second time on the same row too.
	for range 2 {
		b.click(within(row, tid("delete-key")))
		b.wantInsideViewport(within(row, tid("delete-key-panel")))
		b.submit(within(row, tid("cancel-delete")))
		b.waitVisible(row)
		if b.exists("details[open]") {
			b.fatalf("Cancel left the confirmation open")
		}
	}

	// A phone: every pop-over of a row fits; delete says what it did.
	b.keysResize(keysPhone)
	for _, action := range []string{"limits-key", "expiry-key", "rename-key", "delete-key"} {
		b.click(within(row, tid(action)))
		b.wantInsideViewport(within(row, tid(action+"-panel")))
		b.click(within(row, tid(action))) // closes it: no script does it here
	}
	b.click(within(row, tid("delete-key")))
	b.shot("61-nojs-keys-delete-confirm-" + keysPhone.name)
	b.submit(within(row, tid("confirm-delete")))
	b.waitText(tid("keys-notice"), "Key “"+name+" renamed” deleted.")
	if b.exists(row) {
		b.fatalf("the deleted key is still listed")
	}
	b.noHorizontalOverflow("the list after a delete on a keysPhone")
	b.shot("62-nojs-keys-deleted-" + keysPhone.name)
}
