package web

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/chromedp/chromedp"

	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/db/money"
)

// TestBrowserScreenshots walks every page of the console at both widths,
// as an account with keys and usage sees it, and checks each for
// accessibility and horizontal overflow. With UPDATE_SCREENSHOTS=1 it also
// writes the screenshots the README shows to docs/screenshots.
func TestBrowserScreenshots(t *testing.T) {
	forConsoleScreens(t, func(t *testing.T, s consoleScreen) {
		b := openConsole(t, true, s, consoleApp(t, nil))
		page := func(name string) {
			b.t.Helper()
			b.waitSettled()
			b.noHorizontalOverflow(name)
			b.checkA11y(name)
			png := tabRun(b, "screenshot "+name, chromedp.FullScreenshot(100))
			file := fmt.Sprintf("%s-%d.png", name, s.width)
			if _, err := saveScreenshot("readme-"+file, png); err != nil {
				t.Fatal(err)
			}
			if os.Getenv("UPDATE_SCREENSHOTS") != "" {
				if err := os.MkdirAll("../docs/screenshots", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join("../docs/screenshots", file), png, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}

		b.nav("/")
		page("landing")
		email := b.signUp()

		// An account in use: keys with a limit and an expiry, and usage.
		ctx := context.Background()
		u := dashboardUser(t, email)
		if _, _, err := store.AddCredits(ctx, email, db.Credit{Amount: 20 * money.Dollar, Reference: "pay_" + email}); err != nil {
			t.Fatal(err)
		}
		mk, err := store.CreateKey(ctx, u.ID, apikey.Billing, db.KeyInput{Name: "Deploy scripts"})
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"Staging", "Batch jobs"} {
			if _, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: name}); err != nil {
				t.Fatal(err)
			}
		}
		r := b.api("POST", "/api/keys", "Bearer "+mk.Secret, map[string]any{"name": "Production",
			"limit": 25, "limit_reset": "monthly", "models": []string{"modelswitch/echo"}})
		if r.status != 201 {
			t.Fatalf("create a key: %d %s", r.status, r.raw)
		}
		ms := r.body["key"].(string)
		for i := range 6 {
			chat := map[string]any{"model": "modelswitch/echo", "messages": []map[string]string{
				{"role": "user", "content": fmt.Sprintf("Summarise report %d in one line.", i)}}}
			if r := b.api("POST", "/v1/chat/completions", "Bearer "+ms, chat); r.status != 200 {
				t.Fatalf("chat: %d %s", r.status, r.raw)
			}
		}
		waitUntil(t, "the usage is written", func() bool {
			r := b.api("GET", "/api/usage", "Bearer "+mk.Secret, nil)
			total, _ := r.body["total"].(map[string]any)
			return r.status == 200 && total["requests"] == float64(6)
		})
		waitUntil(t, "the key's use is written and its leased credit returned", func() bool {
			key := b.api("GET", "/v1/key", "Bearer "+ms, nil)
			balance := b.api("GET", "/api/balance", "Bearer "+mk.Secret, nil)
			return key.body["lastUsedAt"] != nil && balance.body["held"] == float64(0)
		})

		b.nav("/dashboard/keys")
		page("api-keys")
		b.createInModal("Analytics", regexp.MustCompile(`^ms-[0-9A-Za-z]{38}$`))
		page("reveal-modal")
		b.nav("/dashboard/billing-keys")
		page("billing-keys")
		b.nav("/dashboard/usage")
		page("usage")
		b.nav("/dashboard/transactions")
		page("transactions")
		b.nav("/dashboard/settings")
		page("settings")
		b.nav("/dashboard/no-such-page")
		page("not-found")
		b.submit(tid("signout"))
		b.nav("/signin")
		page("sign-in")
		b.nav("/forgot-password")
		page("forgot-password")
	})
}
