package db_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/db/money"
	"modelswitch/errs"
)

// funded makes an account with amount of credits and a proxy key, on s.
func funded(t *testing.T, s *db.Store, amount money.USD, in db.KeyInput) (db.User, db.Key) {
	t.Helper()
	u := newUser(t)
	if amount != 0 {
		if _, _, err := s.AddCredits(ctx, u.Email, db.Credit{Amount: amount}); err != nil {
			t.Fatal(err)
		}
	}
	if in.Name == "" {
		in.Name = "metered"
	}
	k, err := s.CreateKey(ctx, u.ID, apikey.Proxy, in)
	if err != nil {
		t.Fatal(err)
	}
	return u, k.Key
}

func usd(s string) money.USD {
	v, err := money.Parse(s)
	if err != nil {
		panic(err)
	}
	return v
}

var genSeq int

func usage(cost money.USD) *db.Usage {
	genSeq++
	return &db.Usage{GenerationID: fmt.Sprintf("gen-test-%d-%d", time.Now().UnixNano(), genSeq), Model: "modelswitch/echo",
		InputTokens: 10, OutputTokens: 20, Cost: cost, Status: "completed", FinishReason: "stop"}
}

// wantLedgerAddsUp checks the invariant: the totals are the exact sums of the
// entries and holds, and each entry's balanceAfter is the running sum.
func wantLedgerAddsUp(t *testing.T, u db.User) db.Balance {
	t.Helper()
	b, err := store.GetBalance(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	var all []db.Entry
	for after := int64(0); ; {
		page, more, err := store.ListEntries(ctx, u.ID, db.EntryFilter{Limit: 100, StartingAfter: after})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if !more {
			break
		}
		after = page[len(page)-1].ID
	}
	var credits, charges money.USD
	for i := len(all) - 1; i >= 0; i-- { // oldest first
		e := all[i]
		if e.Type == db.EntryUsage {
			charges -= e.Amount
		} else {
			credits += e.Amount
		}
		if e.BalanceAfter != credits-charges {
			t.Fatalf("entry %d: balanceAfter %s, want %s", e.ID, e.BalanceAfter, credits-charges)
		}
	}
	if b.Credits != credits || b.Usage != charges {
		t.Fatalf("totals %+v; entries add up to credits %s, usage %s", b, credits, charges)
	}
	return b
}

func TestConcurrentHoldsNeverOverspend(t *testing.T) {
	// A balance that covers exactly 10 holds.
	u, k := funded(t, store, usd("1"), db.KeyInput{})
	var wg sync.WaitGroup
	results := make(chan error, 100)
	holds := make(chan db.Hold, 100)
	for range 100 {
		wg.Go(func() {
			h, err := store.PlaceHold(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.1"))
			results <- err
			if err == nil {
				holds <- h
			}
		})
	}
	wg.Wait()
	close(results)
	close(holds)
	ok, refused := 0, 0
	for err := range results {
		switch {
		case err == nil:
			ok++
		case err == db.ErrInsufficientCredits:
			refused++
		default:
			t.Fatal(err)
		}
	}
	if ok != 10 || refused != 90 {
		t.Fatalf("%d holds placed and %d refused; want 10 and 90", ok, refused)
	}
	b := wantLedgerAddsUp(t, u)
	if b.Held != usd("1") || b.Available() != 0 {
		t.Fatalf("after the holds: %+v", b)
	}
	// Settle half at a lower cost, release the rest: nothing stays held.
	i := 0
	for h := range holds {
		var u *db.Usage
		if i%2 == 0 {
			u = usage(usd("0.04"))
		}
		if err := store.Settle(ctx, h, u); err != nil {
			t.Fatal(err)
		}
		i++
	}
	b = wantLedgerAddsUp(t, u)
	if b.Held != 0 || b.Usage != usd("0.2") || b.Available() != usd("0.8") {
		t.Fatalf("after settling: %+v", b)
	}
}

func TestKeyLimitAndModels(t *testing.T) {
	limit, daily := usd("0.5"), "daily"
	u, k := funded(t, store, usd("10"), db.KeyInput{Limit: &limit, LimitReset: &daily, Models: []string{"modelswitch/echo"}})
	if _, err := store.PlaceHold(ctx, u.ID, k.ID, "openai/gpt-4o-mini", usd("0.01")); err != db.ErrModelNotAllowed {
		t.Fatalf("a model off the allow-list: %v", err)
	}
	h, err := store.PlaceHold(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.3"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.PlaceHold(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.3")); err != db.ErrKeyLimitExceeded {
		t.Fatalf("a hold past the key's limit: %v", err)
	}
	got, _ := store.GetKey(ctx, u.ID, apikey.Proxy, k.ID)
	if got.Held != usd("0.3") || *got.LimitRemaining() != usd("0.2") {
		t.Fatalf("key while held: held %s, remaining %s", got.Held, got.LimitRemaining())
	}
	if err := store.Settle(ctx, h, usage(usd("0.25"))); err != nil {
		t.Fatal(err)
	}
	got, _ = store.GetKey(ctx, u.ID, apikey.Proxy, k.ID)
	if got.Usage != usd("0.25") || got.Held != 0 || *got.LimitRemaining() != usd("0.25") {
		t.Fatalf("key after settling: usage %s held %s remaining %s", got.Usage, got.Held, got.LimitRemaining())
	}
	// Lifting the allow-list and the limit takes effect on the next hold.
	_, err = store.UpdateKey(ctx, u.ID, apikey.Proxy, k.ID, db.KeyUpdate{Limit: db.Change[money.USD]{Set: true}, Models: db.Change[[]string]{Set: true}})
	if err != nil {
		t.Fatal(err)
	}
	h, err = store.PlaceHold(ctx, u.ID, k.ID, "openai/gpt-4o-mini", usd("5"))
	if err != nil {
		t.Fatal(err)
	}
	store.Settle(ctx, h, nil)
	wantLedgerAddsUp(t, u)
}

func TestKeyWindowRollsOver(t *testing.T) {
	now := time.Date(2026, 11, 29, 23, 0, 0, 0, time.UTC) // a Sunday
	s := store.WithClock(func() time.Time { return now })
	limit, weekly := usd("1"), "weekly"
	u, k := funded(t, s, usd("10"), db.KeyInput{Limit: &limit, LimitReset: &weekly})
	h, err := s.PlaceHold(ctx, u.ID, k.ID, "modelswitch/echo", usd("1"))
	if err != nil {
		t.Fatal(err)
	}
	s.Settle(ctx, h, usage(usd("0.9")))
	if _, err := s.PlaceHold(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.2")); err != db.ErrKeyLimitExceeded {
		t.Fatalf("over the week's limit: %v", err)
	}
	// Monday 00:00 UTC: a new week, with no job run in between.
	now = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	got, _ := s.GetKey(ctx, u.ID, apikey.Proxy, k.ID)
	if got.Usage != 0 || *got.LimitRemaining() != usd("1") {
		t.Fatalf("new week: usage %s, remaining %s", got.Usage, got.LimitRemaining())
	}
	h, err = s.PlaceHold(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.2"))
	if err != nil {
		t.Fatalf("new week: %v", err)
	}
	s.Settle(ctx, h, usage(usd("0.2")))
	// Switching to a monthly window counts what was spent this month.
	monthly := "monthly"
	got, err = s.UpdateKey(ctx, u.ID, apikey.Proxy, k.ID, db.KeyUpdate{LimitReset: db.Change[string]{Set: true, Value: &monthly}})
	if err != nil || got.Usage != usd("1.1") {
		t.Fatalf("monthly window: usage %s (%v), want 1.1 spent in November", got.Usage, err)
	}
	// No reset: the all-time total.
	got, _ = s.UpdateKey(ctx, u.ID, apikey.Proxy, k.ID, db.KeyUpdate{LimitReset: db.Change[string]{Set: true}})
	if got.Usage != usd("1.1") || got.LimitReset != nil {
		t.Fatalf("no reset: usage %s, reset %v", got.Usage, got.LimitReset)
	}
}

func TestExpiredHoldsAreReleased(t *testing.T) {
	now := time.Now()
	s := store.WithClock(func() time.Time { return now })
	u, k := funded(t, s, usd("1"), db.KeyInput{})
	h, err := s.PlaceHold(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.6"))
	if err != nil {
		t.Fatal(err)
	}
	// The process holding it died; once the hold expires, the sweep frees it.
	now = now.Add(db.HoldTTL)
	if _, err := s.ReleaseExpiredHolds(ctx); err != nil {
		t.Fatal(err)
	}
	if b, _ := s.GetBalance(ctx, u.ID); b.Held != 0 || b.Available() != usd("1") {
		t.Fatalf("after the sweep: %+v", b)
	}
	if got, _ := s.GetKey(ctx, u.ID, apikey.Proxy, k.ID); got.Held != 0 {
		t.Fatalf("key still holds %s", got.Held)
	}
	// A late settle still charges, and releases nothing twice.
	if err := s.Settle(ctx, h, usage(usd("0.5"))); err != nil {
		t.Fatal(err)
	}
	if b := wantLedgerAddsUp(t, u); b.Held != 0 || b.Available() != usd("0.5") {
		t.Fatalf("after a late settle: %+v", b)
	}
}

func TestCreditsAreIdempotent(t *testing.T) {
	u := newUser(t)
	var wg sync.WaitGroup
	added := make(chan bool, 10)
	for range 10 {
		wg.Go(func() {
			_, ok, err := store.AddCredits(ctx, u.Email, db.Credit{Amount: usd("12.5"), Reference: "pay_123"})
			if err != nil {
				t.Error(err)
			}
			added <- ok
		})
	}
	wg.Wait()
	close(added)
	n := 0
	for ok := range added {
		if ok {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("the same reference added %d times", n)
	}
	if _, _, err := store.AddCredits(ctx, u.Email, db.Credit{Amount: usd("-2")}); !errs.Is(err, errs.Invalid) {
		t.Fatalf("an adjustment without a note: %v", err)
	}
	b, ok, err := store.AddCredits(ctx, u.Email, db.Credit{Amount: usd("-2"), Note: "refund of a duplicate charge"})
	if err != nil || !ok || b.Available() != usd("10.5") {
		t.Fatalf("adjustment: %+v %v %v", b, ok, err)
	}
	if _, _, err := store.AddCredits(ctx, "nobody-"+u.Email, db.Credit{Amount: usd("1")}); err != db.ErrUserNotFound {
		t.Fatalf("unknown email: %v", err)
	}
	entries, _, _ := store.ListEntries(ctx, u.ID, db.EntryFilter{Limit: 10})
	if len(entries) != 2 || entries[0].Type != db.EntryAdjustment || entries[1].Type != db.EntryCredit {
		t.Fatalf("entries %+v", entries)
	}
	wantLedgerAddsUp(t, u)
}

func TestSignupCredits(t *testing.T) {
	s := store.WithClock(time.Now)
	s.SignupCredits = usd("5")
	u, err := s.CreateUser(ctx, "signup-"+newUser(t).Email, "correct horse", freshAddr())
	if err != nil {
		t.Fatal(err)
	}
	entries, _, _ := s.ListEntries(ctx, u.ID, db.EntryFilter{Limit: 10})
	if len(entries) != 1 || entries[0].Amount != usd("5") || entries[0].Type != db.EntryCredit {
		t.Fatalf("sign-up entries %+v", entries)
	}
	if b := wantLedgerAddsUp(t, u); b.Available() != usd("5") {
		t.Fatalf("sign-up balance %+v", b)
	}
	// Without sign-up credits no entry is written.
	if entries, _, _ := store.ListEntries(ctx, newUser(t).ID, db.EntryFilter{Limit: 10}); len(entries) != 0 {
		t.Fatalf("entries without sign-up credits: %+v", entries)
	}
}

// TestPagesUnderConcurrentInserts pages through the ledger while charges
// keep arriving: no entry is skipped or seen twice.
func TestPagesUnderConcurrentInserts(t *testing.T) {
	u, k := funded(t, store, usd("100"), db.KeyInput{})
	charge := func() {
		h, err := store.PlaceHold(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.01"))
		if err == nil {
			err = store.Settle(ctx, h, usage(usd("0.01")))
		}
		if err != nil {
			t.Error(err)
		}
	}
	for range 30 {
		charge()
	}
	first, _, _ := store.ListEntries(ctx, u.ID, db.EntryFilter{Limit: 1})
	top := first[0].ID
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				charge()
			}
		}
	})
	seen := map[int64]bool{}
	after := top + 1
	for {
		page, more, err := store.ListEntries(ctx, u.ID, db.EntryFilter{Limit: 4, StartingAfter: after})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			if seen[e.ID] {
				t.Fatalf("entry %d seen twice", e.ID)
			}
			seen[e.ID] = true
		}
		if !more {
			break
		}
		after = page[len(page)-1].ID
	}
	close(stop)
	wg.Wait()
	if len(seen) != 31 { // 30 charges and the credit, all older than the first page
		t.Fatalf("paged through %d entries, want 31", len(seen))
	}
	wantLedgerAddsUp(t, u)
}

func TestSumUsage(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 30, 0, 0, time.UTC)
	s := store.WithClock(func() time.Time { return now })
	u, k := funded(t, s, usd("100"), db.KeyInput{})
	charge := func(model string, cost string) {
		h, err := s.PlaceHold(ctx, u.ID, k.ID, model, usd("1"))
		if err != nil {
			t.Fatal(err)
		}
		us := usage(usd(cost))
		us.Model = model
		if err := s.Settle(ctx, h, us); err != nil {
			t.Fatal(err)
		}
	}
	charge("a/x", "0.000000001")
	charge("b/y", "0.3")
	now = now.Add(26 * time.Hour)
	charge("a/x", "0.7")
	q := db.UsageQuery{From: now.Add(-72 * time.Hour).Truncate(time.Hour), To: now.Add(time.Hour).Truncate(time.Hour), Bucket: "day"}
	rows, err := s.SumUsage(ctx, u.ID, q)
	if err != nil || len(rows) != 2 || rows[0].Cost != usd("0.300000001") || rows[0].Requests != 2 || rows[1].Cost != usd("0.7") ||
		!rows[0].Start.Equal(time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("by day: %+v %v", rows, err)
	}
	q.ByModel, q.Bucket = true, "hour"
	rows, _ = s.SumUsage(ctx, u.ID, q)
	if len(rows) != 3 || rows[0].Model != "a/x" || rows[1].Model != "b/y" || rows[0].InputTokens != 10 {
		t.Fatalf("by hour and model: %+v", rows)
	}
	q.Model = "b/y"
	if rows, _ = s.SumUsage(ctx, u.ID, q); len(rows) != 1 || rows[0].Cost != usd("0.3") {
		t.Fatalf("one model: %+v", rows)
	}
	if rows, _ = s.SumUsage(ctx, newUser(t).ID, q); len(rows) != 0 {
		t.Fatalf("another account sees %+v", rows)
	}
}
