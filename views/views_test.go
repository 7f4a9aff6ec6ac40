package views

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/a-h/templ"

	"modelswitch/web/session/csrf"
)

func renderDoc(t *testing.T, c templ.Component) *goquery.Document {
	t.Helper()
	var b bytes.Buffer
	if err := c.Render(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	doc, err := goquery.NewDocumentFromReader(&b)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func byTestID(doc *goquery.Document, id string) *goquery.Selection {
	return doc.Find(`[data-testid="` + id + `"]`)
}

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// csrfToken is a session's CSRF token, as base64url as real ones are.
const csrfToken = "dG9rZW4tdG9rZW4tdG9rZW4tdG9rZW4tdG9rZW4tdG9r"

var proxySection = KeySection{Path: "/dashboard/keys", Heading: "API Keys", Noun: "API key", Spending: true}

func rows() []KeyRow {
	used := now.Add(-5 * time.Minute)
	return []KeyRow{
		{ID: 2, Name: "Production", Prefix: "ms-abc1xxxx", Status: "Active", Active: true,
			Created: NewTime(now, now, false), LastUsed: OptionalTime(&used, now, true)},
		{ID: 1, Name: "<script>alert(1)</script>", Prefix: "ms-zzzzxxxx", Status: "Inactive",
			Created: NewTime(now.AddDate(0, -1, 0), now, false)},
	}
}

func TestKeysPageRows(t *testing.T) {
	doc := renderDoc(t, KeysView(KeysPage{Page: Page{Title: "API Keys", CSRF: csrf.Mask(csrfToken), Email: "a@example.com", Nav: "keys"}, Section: proxySection, Rows: rows(),
		List: KeyList{Sort: "created", Page: 1, Pages: 1, Total: 2, First: 1, Any: true}}))
	if n := byTestID(doc, "key-row").Length(); n != 2 {
		t.Fatalf("%d rows", n)
	}
	first := byTestID(doc, "key-row").First()
	if first.AttrOr("data-key-id", "") != "2" || first.Find(`[data-testid="key-prefix"]`).Text() != "ms-abc1xxxx" ||
		first.Find(`[data-testid="key-status"]`).Text() != "Active" {
		t.Fatalf("first row: %s", first.Text())
	}
	lastUsed := first.Find("time").Last()
	if lastUsed.Text() != "5 min ago" || lastUsed.AttrOr("title", "") != "2026-11-25 11:55:00 UTC" || lastUsed.AttrOr("datetime", "") != "2026-11-25T11:55:00Z" {
		t.Fatalf("last used %q (%q)", lastUsed.Text(), lastUsed.AttrOr("title", ""))
	}
	// The exact time shows without hovering.
	if got := first.Find(`[data-testid="key-last-used-exact"]`).Text(); got != "2026-11-25 11:55:00 UTC" {
		t.Fatalf("exact last use %q", got)
	}
	// Names are text, never markup.
	if doc.Find("script:not([src])").Length() != 0 || byTestID(doc, "key-name").Last().Text() != "<script>alert(1)</script>" {
		t.Fatal("a key name was rendered as HTML")
	}
	if strings.TrimSpace(byTestID(doc, "toggle-active").Last().Text()) != "Reactivate" {
		t.Fatal("inactive key offers no reactivation")
	}
	if byTestID(doc, "keys-empty").Length() != 0 || byTestID(doc, "nav-keys").AttrOr("aria-current", "") != "page" ||
		byTestID(doc, "keys-summary").Text() != "2 API keys." || byTestID(doc, "pager").Length() != 0 {
		t.Fatal("empty state or current nav wrong")
	}
	// Every form that changes state carries the CSRF token (masked afresh
	// on every page: csrf.Mask).
	doc.Find(`form[method="post"]`).Each(func(_ int, f *goquery.Selection) {
		if !csrf.Matches(f.Find(`input[name="_csrf"]`).AttrOr("value", ""), csrfToken) {
			t.Errorf("form %s without CSRF token", f.AttrOr("action", ""))
		}
	})
	// Every visible input has a label.
	doc.Find("input:not([type=hidden])").Each(func(_ int, in *goquery.Selection) {
		id := in.AttrOr("id", "")
		if id == "" || doc.Find(`label[for="`+id+`"]`).Length() != 1 {
			t.Errorf("input %s has no label", in.AttrOr("name", ""))
		}
	})
	// Delete confirmation names the key.
	if !strings.Contains(byTestID(doc, "delete-key").First().Parent().Text(), "Production") {
		t.Fatal("delete confirmation does not name the key")
	}
}

func TestEmptyStateAndBillingKeys(t *testing.T) {
	kind := KeySection{Path: "/dashboard/billing-keys", Heading: "Billing Keys", Noun: "billing key"}
	doc := renderDoc(t, KeysView(KeysPage{Page: Page{Email: "a@example.com"}, Section: kind}))
	if !strings.Contains(byTestID(doc, "keys-empty").Text(), "No keys yet: create one") {
		t.Fatal("no empty state")
	}
	// The empty state's button leads to the create form's name field.
	if byTestID(doc, "empty-create").AttrOr("href", "") != "#key-name" || doc.Find("#key-name").Length() != 1 {
		t.Fatal("the empty state has no button to the create form")
	}
	if byTestID(doc, "keys-search").Length() != 0 {
		t.Fatal("an account without keys is offered a search")
	}
	doc = renderDoc(t, KeysView(KeysPage{Page: Page{Email: "a@example.com"}, Section: kind, Rows: rows()}))
	// Billing keys are renamed, deactivated, given an expiry and deleted
	// like API keys, but spend nothing.
	if byTestID(doc, "rename-key").Length() != 2 || byTestID(doc, "toggle-active").Length() != 2 || byTestID(doc, "expiry-key").Length() != 2 ||
		byTestID(doc, "delete-key").Length() != 2 || byTestID(doc, "limits-key").Length() != 0 || byTestID(doc, "key-spend").Length() != 0 {
		t.Fatal("billing keys' actions")
	}
	if got := byTestID(doc, "rename-form").First().AttrOr("action", ""); got != "/dashboard/billing-keys/2" {
		t.Fatalf("billing rename posts to %q", got)
	}
}

func TestFormErrorsKeepInput(t *testing.T) {
	form := Form{Values: map[string]string{"name": "  bad\x07", "expires_at": "2020-01-01"},
		Errors: map[string]string{"expires_at": "Choose an expiry in the future."}}
	doc := renderDoc(t, CreateForm(proxySection, form, "tok", false))
	in := doc.Find("#key-expires")
	if in.AttrOr("value", "") != "2020-01-01" || in.AttrOr("aria-invalid", "") != "true" ||
		!strings.Contains(in.AttrOr("aria-describedby", ""), "key-expires-error") {
		t.Fatal("expiry input lost its value or error state")
	}
	if byTestID(doc, "error-expires_at").Text() != "Choose an expiry in the future." || byTestID(doc, "error-name").Length() != 0 {
		t.Fatal("wrong errors shown")
	}
	if doc.Find("#key-name").AttrOr("value", "") != "  bad\x07" {
		t.Fatal("name input lost its value")
	}
}

func TestRevealModal(t *testing.T) {
	doc := renderDoc(t, RevealModal(proxySection, Revealed{Name: "Production", Key: "ms-secret"}))
	m := byTestID(doc, "reveal-modal")
	if m.AttrOr("role", "") != "dialog" || m.AttrOr("aria-modal", "") != "true" {
		t.Fatal("modal is not an accessible dialog")
	}
	if byTestID(doc, "revealed-key").Text() != "ms-secret" || byTestID(doc, "revealed-key").AttrOr("readonly", "x") == "x" {
		t.Fatal("key not shown read-only")
	}
	if !strings.Contains(doc.Find("#reveal-warning").Text(), "will not be shown again") {
		t.Fatal("no warning")
	}
	for _, id := range []string{"copy-key", "close-modal", "close-anyway", "close-back"} {
		if b := byTestID(doc, id); b.Length() != 1 || goquery.NodeName(b) != "button" || b.AttrOr("type", "") != "button" {
			t.Errorf("%s is not a button", id)
		}
	}
	if _, hidden := byTestID(doc, "close-confirm").Attr("hidden"); !hidden {
		t.Fatal("close confirmation shown before it is asked for")
	}
	panel := renderDoc(t, RevealPanel(proxySection, Revealed{Name: "Production", Key: "ms-secret"}))
	if byTestID(panel, "revealed-key").Text() != "ms-secret" || byTestID(panel, "copy-key").Length() != 0 {
		t.Fatal("no-script panel")
	}
}

func TestNewTime(t *testing.T) {
	cases := []struct {
		at       time.Time
		relative bool
		want     string
	}{
		{now.Add(-10 * time.Second), true, "just now"},
		{now.Add(-3 * time.Hour), true, "3 h ago"},
		{now.AddDate(0, 0, -3), true, "Nov 22, 2026"},
		{now.AddDate(1, 0, 0), false, "Nov 25, 2027"},
	}
	for _, c := range cases {
		if got := NewTime(c.at, now, c.relative).Human; got != c.want {
			t.Errorf("%v: %q, want %q", c.at, got, c.want)
		}
	}
}

// BenchmarkKeysPage renders a page of the API Keys list as the dashboard
// shows it: KeysPerPage keys, with their spending.
func BenchmarkKeysPage(b *testing.B) {
	p := KeysPage{Page: Page{Title: "API Keys", CSRF: "dG9rZW4tdG9rZW4tdG9rZW4tdG9rZW4tdG9rZW4tdG9r", Email: "a@example.com", Nav: "keys"},
		Section: proxySection, List: KeyList{Sort: "created", Total: 1000, Page: 1, Pages: 20, First: 1, Any: true}}
	for i := range 50 { // db.KeysPerPage
		used := now.Add(-time.Duration(i) * time.Minute)
		p.Rows = append(p.Rows, KeyRow{ID: int64(i + 1), Name: "Key number " + time.Duration(i).String(), Prefix: "ms-abcdxxxx",
			Status: "Active", Active: true, Created: NewTime(now, now, false), LastUsed: OptionalTime(&used, now, true)})
	}
	var buf bytes.Buffer
	for b.Loop() {
		buf.Reset()
		if err := KeysView(p).Render(context.Background(), &buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(buf.Len()), "bytes/page")
}

func TestUsageChart(t *testing.T) {
	p := UsagePage{Page: Page{Email: "a@example.com", Balance: "$1"}, Filter: UsageFilter{Bucket: "day"},
		Chart: Chart{MaxCost: "$2", Bars: []Bar{{Label: "Nov 25", Cost: "$0", Height: 0}, {Label: "Nov 26", Cost: "$2", Height: 1}}}}
	doc := renderDoc(t, UsageView(p))
	bars := byTestID(doc, "usage-bar")
	if bars.Length() != 2 || bars.Eq(1).AttrOr("height", "") != "100.00" || bars.Eq(1).AttrOr("y", "") != "0.00" ||
		bars.Eq(0).AttrOr("height", "") != "0.00" || !strings.Contains(bars.Eq(1).Text(), "Nov 26: $2") {
		t.Fatalf("bars: %s", bars.Text())
	}
	if byTestID(doc, "balance").Text() == "" || byTestID(doc, "usage-empty").Length() != 0 {
		t.Fatal("header balance or empty state wrong")
	}
	doc = renderDoc(t, UsageView(UsagePage{Filter: UsageFilter{Bucket: "day"}}))
	if byTestID(doc, "usage-empty").Length() != 1 || byTestID(doc, "usage-chart").Length() != 0 {
		t.Fatal("no usage should show the empty state, not a chart")
	}
}

func TestTransactionsPaging(t *testing.T) {
	doc := renderDoc(t, TransactionsView(TransactionsPage{First: true, Older: "/dashboard/transactions?starting_after=5",
		Rows: []TransactionRow{{ID: 6, Amount: "+$1", Credit: true, Description: "Credits added", Created: NewTime(now, now, true)}}}))
	if href, _ := byTestID(doc, "page-older").Attr("href"); href != "/dashboard/transactions?starting_after=5" {
		t.Fatalf("older link %q", href)
	}
	if byTestID(doc, "page-newest").Length() != 0 {
		t.Fatal("the newest page links to itself")
	}
	doc = renderDoc(t, TransactionsView(TransactionsPage{Type: "usage"}))
	if byTestID(doc, "page-older").Length() != 0 || byTestID(doc, "page-newest").AttrOr("href", "") != "/dashboard/transactions?type=usage" {
		t.Fatal("the last page of a filter")
	}
}

// TestExpiryShowsTheChosenDay: a date chosen in the form is stored as the
// first instant of the next day (the key works to the end of the chosen
// day), and shown as the chosen day.
func TestExpiryShowsTheChosenDay(t *testing.T) {
	cases := []struct {
		at                time.Time
		day, detail, date string
	}{
		{time.Date(2026, 12, 27, 0, 0, 0, 0, time.UTC), "Dec 26, 2026", "end of day UTC", "2026-12-26"},
		{time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), "Dec 31, 2026", "end of day UTC", "2026-12-31"},
		{time.Date(2026, 12, 27, 14, 30, 5, 0, time.UTC), "Dec 27, 2026", "14:30:05 UTC", "2026-12-27"},
		{time.Date(2026, 12, 27, 1, 0, 0, 0, time.FixedZone("CET", 3600)), "Dec 26, 2026", "end of day UTC", "2026-12-26"},
	}
	for _, c := range cases {
		e := NewExpiry(c.at)
		if e.Day != c.day || e.Detail != c.detail || e.Date != c.date || e.ISO != c.at.UTC().Format(time.RFC3339) {
			t.Errorf("%v: %+v", c.at, e)
		}
	}
	if got := NewExpiry(cases[0].at).String(); got != "Dec 26, 2026, end of day UTC" {
		t.Errorf("one line: %q", got)
	}
}

// TestKeysConsoleView: the hint beside the prefix, the expiry as the chosen
// day, the search form, the pages, the notice and what htmx is told.
func TestKeysConsoleView(t *testing.T) {
	expires := NewExpiry(time.Date(2026, 12, 27, 0, 0, 0, 0, time.UTC))
	long := strings.Repeat("W", 100)
	r := []KeyRow{
		{ID: 7, Name: long, Prefix: "ms-abc1xxxx", Hint: "ms-abc1…wxyz", Status: "Active", Active: true, Created: NewTime(now, now, false), Expires: &expires, Next: 6},
		{ID: 6, Name: "Old", Prefix: "ms-zzzzxxxx", Status: "Active", Active: true, Created: NewTime(now, now, false), Next: 7},
	}
	list := KeyList{Query: "prod", Sort: "last_used", Page: 2, Pages: 3, Total: 120, First: 51, Any: true}
	p := KeysPage{Page: Page{CSRF: "tok", Email: "a@example.com"}, Section: proxySection, Rows: r, List: list, Notice: "Key “Old” deleted."}
	doc := renderDoc(t, KeysView(p))

	row := byTestID(doc, "key-row").First()
	if row.Find(`[data-testid="key-hint"]`).Text() != "ms-abc1…wxyz" || row.Find(`[data-testid="key-prefix"]`).Text() != "ms-abc1xxxx" {
		t.Fatalf("identity: %q", row.Find(`[data-testid="key-identity"]`).Text())
	}
	if second := byTestID(doc, "key-row").Eq(1); second.Find(`[data-testid="key-hint"]`).Length() != 0 || second.Find(`[data-testid="key-prefix"]`).Text() != "ms-zzzzxxxx" {
		t.Fatal("a key without a hint shows only its prefix")
	}
	if got := strings.Join(strings.Fields(row.Find(`[data-testid="key-expires"]`).Text()), " "); got != "Expires: Dec 26, 2026, end of day UTC" {
		t.Fatalf("expiry %q", got)
	}
	if row.Find(`[data-testid="key-expires"] time`).AttrOr("datetime", "") != "2026-12-27T00:00:00Z" {
		t.Fatal("expiry's machine time")
	}
	if row.Find(`[data-testid="key-name"]`).AttrOr("title", "") != long {
		t.Fatal("a long name has no title with all of it")
	}
	// The Expiry form starts at the chosen day and posts with the list's state.
	form := row.Find(`[data-testid="expiry-form"]`)
	if form.AttrOr("action", "") != "/dashboard/keys/7/expiry?page=2&q=prod&sort=last_used" ||
		form.Find(`input[type="date"]`).AttrOr("value", "") != "2026-12-26" || form.Find(`[data-testid="expiry-never"]`).Length() != 1 {
		t.Fatalf("expiry form: %s", form.AttrOr("action", ""))
	}
	if byTestID(doc, "expiry-never").Length() != 1 {
		t.Fatal("only a key with an expiry is offered Never expire")
	}
	// Delete names the row to focus next, and Cancel goes back to this list.
	del := row.Find(`[data-testid="delete-key-panel"]`)
	if del.Find(`input[name="next"]`).AttrOr("value", "") != "6" || del.Find(`form[method="get"]`).AttrOr("action", "") != "/dashboard/keys#key-7" {
		t.Fatal("delete confirmation")
	}
	cancel := map[string]string{}
	del.Find(`form[method="get"] input`).Each(func(_ int, in *goquery.Selection) { cancel[in.AttrOr("name", "")] = in.AttrOr("value", "") })
	if len(cancel) != 4 || cancel["q"] != "prod" || cancel["sort"] != "last_used" || cancel["page"] != "2" || cancel["row"] != "7" {
		t.Fatalf("cancel form %v", cancel)
	}
	// The search form keeps its values; the pages link to each other.
	if byTestID(doc, "search-input").AttrOr("value", "") != "prod" || byTestID(doc, "sort-select").Find("option[selected]").AttrOr("value", "") != "last_used" ||
		byTestID(doc, "keys-search").AttrOr("method", "") != "get" || byTestID(doc, "keys-search").AttrOr("hx-push-url", "") != "true" {
		t.Fatal("search form")
	}
	if byTestID(doc, "page-prev").AttrOr("href", "") != "/dashboard/keys?q=prod&sort=last_used" ||
		byTestID(doc, "page-next").AttrOr("href", "") != "/dashboard/keys?page=3&q=prod&sort=last_used" ||
		byTestID(doc, "page-status").Text() != "Page 2 of 3" {
		t.Fatal("pager")
	}
	if got := byTestID(doc, "keys-summary").Text(); got != "120 API keys match “prod”, showing 51–52." {
		t.Fatalf("summary %q", got)
	}
	if byTestID(doc, "keys-notice").Text() != "Key “Old” deleted." || byTestID(doc, "keys-notice").AttrOr("role", "") != "status" {
		t.Fatal("notice after a redirect")
	}
	if byTestID(doc, "keys-live").AttrOr("aria-live", "") != "polite" || byTestID(doc, "toast-region").AttrOr("aria-hidden", "") != "true" {
		t.Fatal("live region and toasts")
	}

	// With htmx: what to announce and where focus goes, on the card.
	p.Done = &Done{Message: "Key “Old” deleted.", Focus: "key-6"}
	card := renderDoc(t, KeyTable(p, false)).Find("#keys-card")
	if card.AttrOr("data-notice", "") != "Key “Old” deleted." || card.AttrOr("data-focus", "") != "key-6" {
		t.Fatal("done")
	}

	// A search that matches nothing offers to clear it.
	p = KeysPage{Page: Page{Email: "a@example.com"}, Section: proxySection, List: KeyList{Query: "nope", Sort: "created", Page: 1, Pages: 1, Any: true}}
	doc = renderDoc(t, KeysView(p))
	if byTestID(doc, "keys-empty").Length() != 0 || byTestID(doc, "clear-search").AttrOr("href", "") != "/dashboard/keys" {
		t.Fatal("no match")
	}
}
