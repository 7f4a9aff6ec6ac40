package web

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/PuerkitoBio/goquery"

	"modelswitch/db"
	"modelswitch/db/apikey"
)

// charge records one metered request of cost on the key through the
// store's meter, as the gateway does, and flushes it: the entry is written
// when it returns.
func charge(t testing.TB, userID, keyID int64, model, cost string) {
	t.Helper()
	ctx := context.Background()
	tk, err := store.Meter().Admit(ctx, userID, keyID, model, usd(cost))
	if err != nil {
		t.Fatal(err)
	}
	genSeq++
	tk.Finish(&db.Usage{GenerationID: fmt.Sprintf("gen-page-%s-%d", t.Name(), genSeq), Model: model,
		InputTokens: 10, OutputTokens: 20, Cost: usd(cost), Status: "completed", FinishReason: "stop"})
	if err := store.Meter().Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

var genSeq int

// pageAccount signs up in the dashboard, adds credits and returns the
// client, the account and its one proxy key.
func pageAccount(t *testing.T, credits string) (*client, db.User, db.Key) {
	t.Helper()
	b, email := signedUp(t)
	ctx := context.Background()
	if _, _, err := store.AddCredits(ctx, email, db.Credit{Amount: usd(credits)}); err != nil {
		t.Fatal(err)
	}
	u, err := store.CheckPassword(ctx, email, "page-password", testAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	k, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "Server A"})
	if err != nil {
		t.Fatal(err)
	}
	return b, u, k.Key
}

func TestUsagePage(t *testing.T) {
	b, u, k := pageAccount(t, "1")
	charge(t, u.ID, k.ID, "modelswitch/echo", "0.25")
	charge(t, u.ID, k.ID, "other/model", "0.000001")
	heldBack(t, u.ID, 0) // the header shows what is left once nothing is reserved

	p := wantStatus(t, b.do("GET", "/dashboard/usage", nil, false), 200)
	if got := p.find("balance").Text(); !strings.Contains(got, "$0.749999") {
		t.Fatalf("header balance %q, want $0.749999", got)
	}
	if n := p.find("usage-bar").Length(); n != 30 {
		t.Fatalf("%d bars, want one per day of the 30", n)
	}
	if got := strings.TrimSpace(p.find("usage-total").Text()); got != "$0.250001" {
		t.Fatalf("total %q", got)
	}
	byKey := p.find("usage-by-key").Find("[data-testid=usage-line]")
	if byKey.Length() != 1 || !strings.Contains(byKey.Text(), "Server A") || strings.TrimSpace(byKey.Find("[data-testid=usage-cost]").Text()) != "$0.250001" {
		t.Fatalf("by key: %q", byKey.Text())
	}
	if n := p.find("usage-by-model").Find("[data-testid=usage-line]").Length(); n != 2 {
		t.Fatalf("%d models, want 2", n)
	}
	// The same filters as /api/usage.
	p = wantStatus(t, b.do("GET", "/dashboard/usage?model=other%2Fmodel&bucket=hour", nil, false), 200)
	if got := strings.TrimSpace(p.find("usage-total").Text()); got != "$0.000001" {
		t.Fatalf("one model's total %q", got)
	}
	if n := p.find("usage-bar").Length(); n != 30*24 {
		t.Fatalf("%d hourly bars, want %d", n, 30*24)
	}
	p = wantStatus(t, b.do("GET", "/dashboard/usage?bucket=week", nil, false), 400)
	if !strings.Contains(p.find("usage-error").Text(), "bucket=day or bucket=hour") {
		t.Fatalf("bad filter: %q", p.find("usage-error").Text())
	}
	p = wantStatus(t, b.do("GET", "/dashboard/usage?model=%FF", nil, false), 400)
	if !strings.Contains(p.find("usage-error").Text(), "plain text") {
		t.Fatalf("bad model filter: %q", p.find("usage-error").Text())
	}
	// Another account sees none of it.
	other, _ := signedUp(t)
	p = wantStatus(t, other.do("GET", "/dashboard/usage", nil, false), 200)
	if p.find("usage-empty").Length() != 1 || p.find("usage-line").Length() != 0 {
		t.Fatal("another account sees usage")
	}
}

func TestTransactionsPage(t *testing.T) {
	b, u, k := pageAccount(t, "1")
	for range 24 {
		charge(t, u.ID, k.ID, "modelswitch/echo", "0.01")
	}
	seen := map[string]bool{}
	path := "/dashboard/transactions"
	for pages := 0; path != ""; pages++ {
		p := wantStatus(t, b.do("GET", path, nil, false), 200)
		p.find("transaction-row").Each(func(_ int, row *goquery.Selection) {
			id, _ := row.Attr("data-transaction-id")
			if seen[id] {
				t.Fatalf("transaction %s on two pages", id)
			}
			seen[id] = true
		})
		if pages > 0 && p.find("page-newest").Length() != 1 {
			t.Fatal("no link back to the newest page")
		}
		path, _ = p.find("page-older").Attr("href")
	}
	if len(seen) != 25 { // 24 charges and the credit
		t.Fatalf("paged through %d transactions, want 25", len(seen))
	}
	p := wantStatus(t, b.do("GET", "/dashboard/transactions?type=credit", nil, false), 200)
	if rows := p.find("transaction-row"); rows.Length() != 1 || strings.TrimSpace(rows.Find("[data-testid=transaction-amount]").Text()) != "+$1" {
		t.Fatalf("credits: %q", rows.Text())
	}
	wantStatus(t, b.do("GET", "/dashboard/transactions?starting_after=x", nil, false), 400)
}

func TestKeyLimitsForm(t *testing.T) {
	b, u, k := pageAccount(t, "1")
	path := fmt.Sprintf("/dashboard/keys/%d/limits", k.ID)

	// A bad limit keeps the form open with its error, and changes nothing.
	p := wantStatus(t, b.post(path, url.Values{"limit": {"ten"}, "limit_reset": {""}, "models": {""}}, true), 422)
	if !strings.Contains(p.body, "Enter the limit in US dollars") {
		t.Fatalf("bad limit: %s", p.body)
	}
	if got, _ := store.GetKey(context.Background(), u.ID, apikey.Proxy, k.ID); got.Limit != nil {
		t.Fatal("a refused form changed the key")
	}

	// With htmx the table comes back showing the new limits.
	p = wantStatus(t, b.post(path, url.Values{"limit": {"$2.50"}, "limit_reset": {"monthly"}, "models": {"modelswitch/echo, other/model"}}, true), 200)
	if got := p.find("key-limit").Text(); got != "$2.5 monthly" {
		t.Fatalf("limit shown %q", got)
	}
	got, _ := store.GetKey(context.Background(), u.ID, apikey.Proxy, k.ID)
	if *got.Limit != usd("2.5") || *got.LimitReset != "monthly" || strings.Join(got.Models, ",") != "modelswitch/echo,other/model" {
		t.Fatalf("key after the form: %+v", got)
	}

	// Without JavaScript: empty fields clear, and the page comes back.
	p = wantStatus(t, b.post(path, url.Values{"limit": {""}, "limit_reset": {""}, "models": {""}}, false), 303)
	got, _ = store.GetKey(context.Background(), u.ID, apikey.Proxy, k.ID)
	if got.Limit != nil || got.LimitReset != nil || got.Models != nil {
		t.Fatalf("key after clearing: %+v", got)
	}

	// Creating a key with limits.
	p = wantStatus(t, b.post("/dashboard/keys", url.Values{"name": {"Capped"}, "limit": {"1"}, "limit_reset": {"daily"}, "models": {""}}, false), 201)
	if got := p.find("key-limit").First().Text(); got != "$1 daily" {
		t.Fatalf("new key's limit %q", got)
	}
	p = wantStatus(t, b.post("/dashboard/keys", url.Values{"name": {"Bad"}, "limit": {"-1"}}, false), 422)
	if p.find("error-limit").Length() != 1 {
		t.Fatalf("no error on the limit field: %s", p.body)
	}

	// Another account's key is not found.
	other, _ := signedUp(t)
	wantStatus(t, other.post(path, url.Values{"limit": {"1"}, "limit_reset": {""}, "models": {""}}, true), 404)
}
