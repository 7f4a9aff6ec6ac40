package web

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"modelswitch/db"
)

// TestBrowserLedger: a key made with a spend limit in the page, used through
// the gateway; the charges show on the Usage and Transactions pages and in
// the header; the key's limits change in place.
func TestBrowserLedger(t *testing.T) {
	b := openDashboard(t, true)
	email := b.signUp()
	if _, _, err := store.AddCredits(context.Background(), email, db.Credit{Amount: usd("1")}); err != nil {
		t.Fatal(err)
	}
	b.submit(tid("nav-keys"))
	b.fill(within(createForm, tid("limit-input")), "5")
	b.do("choose a monthly reset", chromedp.SetValue(chromedp.CSS(within(createForm, tid("limit-reset-input"))), "monthly"))
	key, id := b.createInModal("Metered", proxyKeyRE)
	b.click(within(modal, tid("close-modal")))
	b.click(within(modal, tid("close-anyway")))
	b.waitGone(modal)
	row := keyRow(id)
	if got := b.text(within(row, tid("key-limit"))); got != "$5 monthly" {
		b.fatalf("new key's limit %q, want $5 monthly", got)
	}

	client := sdk(b.base, key)
	for _, text := range []string{"one", "two three", "four five six"} {
		if _, err := client.Chat.Completions.New(context.Background(), chatParams("modelswitch/echo", text)); err != nil {
			b.fatalf("chat through the gateway: %v", err)
		}
	}
	// The charges are written, and the budget reserved ahead returned,
	// within a second of the last answer.
	user := userOf(t, key)
	waitUntil(t, "the charges are written and nothing is held", func() bool {
		bal, err := store.GetBalance(context.Background(), user)
		if err != nil {
			t.Fatal(err)
		}
		return bal.Held == 0 && bal.Usage > 0
	})

	b.submit(tid("nav-usage"))
	b.waitVisible(tid("usage-chart"))
	if n := tabEval[int](b, `document.querySelectorAll("[data-testid=usage-bar]").length`); n != 30 {
		b.fatalf("%d bars, want 30", n)
	}
	if got := b.text(within(tid("usage-by-key"), tid("usage-line"))); !strings.Contains(got, "Metered") {
		b.fatalf("usage by key: %q", got)
	}
	if got := tabEval[float64](b, `+document.querySelector("[data-testid=usage-by-model] [data-testid=usage-line] td").textContent`); got != 3 {
		b.fatalf("requests by model %v, want 3", got)
	}
	total := b.text(tid("usage-total"))
	b.shot("40-usage")

	b.submit(tid("nav-transactions"))
	b.waitVisible(tid("transactions-table"))
	if n := tabEval[int](b, `document.querySelectorAll("[data-testid=transaction-row]").length`); n != 4 {
		b.fatalf("%d transactions, want the credit and 3 charges", n)
	}
	balance := b.text(tid("balance"))
	if want := "$" + (usd("1") - usd(strings.TrimPrefix(total, "$"))).String(); !strings.Contains(balance, want) {
		b.fatalf("header balance %q, want %s", balance, want)
	}
	b.shot("41-transactions")

	// Limits change in place, without a page load.
	b.submit(tid("nav-keys"))
	b.mark()
	b.click(within(row, tid("limits-key")))
	b.wantUsable(within(row, tid("limit-input")))
	b.fill(within(row, tid("limit-input")), "2")
	b.do("choose a daily reset", chromedp.SetValue(chromedp.CSS(within(row, tid("limit-reset-input"))), "daily"))
	b.click(within(row, tid("limits-submit")))
	b.waitText(within(row, tid("key-limit")), "$2 daily")
	b.wantMarked("saving a key's limits")
	b.shot("42-key-limits")
	if k := b.apiKeysByKey(key); k == nil {
		b.fatalf("the key no longer works")
	}
}

// apiKeysByKey reads the key's own object through GET /v1/key.
func (b *tab) apiKeysByKey(key string) map[string]any {
	b.t.Helper()
	r := b.api("GET", "/v1/key", "Bearer "+key, nil)
	if r.status != 200 || r.body["limit"] != 2.0 || r.body["limitReset"] != "daily" {
		b.fatalf("GET /v1/key after the limits form: %d %s", r.status, r.raw)
	}
	return r.body
}

// TestBrowserLedgerWithoutJavaScript: the same pages and the limits form
// work with scripts off.
func TestBrowserLedgerWithoutJavaScript(t *testing.T) {
	b := openDashboard(t, false)
	b.signUp()
	b.submit(tid("nav-keys"))
	b.fill(createName, "No-JS metered")
	b.fill(within(createForm, tid("limit-input")), "3")
	b.submit(tid("create-key-submit"))
	b.waitVisible(tid("reveal-panel"))
	b.nav("/dashboard/keys")
	row := tid("key-row")
	if got := b.text(within(row, tid("key-limit"))); got != "$3" {
		b.fatalf("limit %q, want $3", got)
	}
	b.click(within(row, tid("limits-key")))
	b.fill(within(row, tid("limit-input")), "")
	b.submit(within(row, tid("limits-submit")))
	b.wantPath("/dashboard/keys")
	if b.exists(within(row, tid("key-limit"))) {
		b.fatalf("the limit is still shown after clearing it")
	}
	b.submit(tid("nav-usage"))
	b.waitVisible(tid("usage-empty"))
	b.submit(tid("nav-transactions"))
	b.waitVisible(tid("transactions-empty"))
	b.shot("43-nojs-transactions-empty")
}
