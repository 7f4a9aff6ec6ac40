package views

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/a-h/templ"
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

var proxySection = KeySection{Path: "/dashboard/keys", Heading: "API Keys", Noun: "API key", Editable: true}

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
	doc := renderDoc(t, KeysView(KeysPage{Page: Page{Title: "API Keys", CSRF: "tok", Email: "a@example.com", Nav: "keys"}, Section: proxySection, Rows: rows()}))
	if n := byTestID(doc, "key-row").Length(); n != 2 {
		t.Fatalf("%d rows", n)
	}
	first := byTestID(doc, "key-row").First()
	if first.AttrOr("data-key-id", "") != "2" || first.Find(`[data-testid="key-prefix"]`).Text() != "ms-abc1xxxx" ||
		first.Find(`[data-testid="key-status"]`).Text() != "Active" {
		t.Fatalf("first row: %s", first.Text())
	}
	lastUsed := first.Find("time").Last()
	if lastUsed.Text() != "5 min ago" || lastUsed.AttrOr("title", "") != "2026-11-25 11:55:00 UTC" {
		t.Fatalf("last used %q (%q)", lastUsed.Text(), lastUsed.AttrOr("title", ""))
	}
	// Names are text, never markup.
	if doc.Find("script:not([src])").Length() != 0 || byTestID(doc, "key-name").Last().Text() != "<script>alert(1)</script>" {
		t.Fatal("a key name was rendered as HTML")
	}
	if strings.TrimSpace(byTestID(doc, "toggle-active").Last().Text()) != "Reactivate" {
		t.Fatal("inactive key offers no reactivation")
	}
	if byTestID(doc, "keys-empty").Length() != 0 || byTestID(doc, "nav-keys").AttrOr("aria-current", "") != "page" {
		t.Fatal("empty state or current nav wrong")
	}
	// Every form that changes state carries the CSRF token.
	doc.Find(`form[method="post"]`).Each(func(_ int, f *goquery.Selection) {
		if f.Find(`input[name="_csrf"]`).AttrOr("value", "") != "tok" {
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
	doc = renderDoc(t, KeysView(KeysPage{Page: Page{Email: "a@example.com"}, Section: kind, Rows: rows()}))
	if byTestID(doc, "rename-key").Length() != 0 || byTestID(doc, "toggle-active").Length() != 0 || byTestID(doc, "delete-key").Length() != 2 {
		t.Fatal("billing keys offer rename or deactivate")
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
	if byTestID(doc, "revealed-key").AttrOr("value", "") != "ms-secret" || byTestID(doc, "revealed-key").AttrOr("readonly", "x") == "x" {
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
	if byTestID(panel, "revealed-key").AttrOr("value", "") != "ms-secret" || byTestID(panel, "copy-key").Length() != 0 {
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

func BenchmarkKeysPage1000(b *testing.B) {
	p := KeysPage{Page: Page{Title: "API Keys", CSRF: "tok", Email: "a@example.com", Nav: "keys"}, Section: proxySection}
	for i := range 1000 {
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
