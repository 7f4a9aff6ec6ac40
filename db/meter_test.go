package db_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/db/dbtest"
	"modelswitch/db/money"
)

// replicas opens n stores on one fresh database: n lease owners, as n
// processes of the gateway would be.
func replicas(t *testing.T, n int) []*db.Store {
	t.Helper()
	url := dbtest.URL(t)
	stores := make([]*db.Store, n)
	for i := range stores {
		s, err := db.Open(ctx, db.Config{URL: url})
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = s
		t.Cleanup(func() {
			s.Meter().Close(ctx)
			s.Close()
		})
	}
	if err := stores[0].Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return stores
}

// meteredAccount makes an account with credits on s and a proxy key.
func meteredAccount(t *testing.T, s *db.Store, credits money.USD, in db.KeyInput) (db.User, db.Key) {
	t.Helper()
	u, err := s.CreateUser(ctx, dbtest.Email("meter"), "correct horse", freshAddr())
	if err != nil {
		t.Fatal(err)
	}
	if credits != 0 {
		if _, _, err := s.AddCredits(ctx, u.Email, db.Credit{Amount: credits}); err != nil {
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

var meterGen atomic.Int64

func meterUsage(cost money.USD) *db.Usage {
	return &db.Usage{GenerationID: fmt.Sprintf("gen-meter-%d-%d", time.Now().UnixNano(), meterGen.Add(1)), Model: "modelswitch/echo",
		InputTokens: 10, OutputTokens: 20, Cost: cost, Status: "completed", FinishReason: "stop", Latency: time.Millisecond}
}

// poll waits until cond holds, failing after limit.
func poll(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond) // a short poll, bounded by the deadline
	}
}

func heldIs(t *testing.T, s *db.Store, userID int64, want money.USD) func() bool {
	return func() bool {
		b, err := s.GetBalance(ctx, userID)
		if err != nil {
			t.Fatal(err)
		}
		return b.Held == want
	}
}

// settled holds once s's meter has let go of the account and nothing is
// held: a lease can be topped up again right after it was returned, while
// the account still looks busy, so held alone can read 0 for a moment.
func settled(t *testing.T, s *db.Store, userID int64) func() bool {
	held := heldIs(t, s, userID, 0)
	return func() bool { return !s.Meter().Tracks(userID) && held() }
}

// wantExact checks the whole invariant on s: the balance's totals are the
// sums of the entries, each entry's balanceAfter is the running sum,
// usage_hourly adds up to the usage, each key's usage is its entries', and
// held is exactly the holds and leases, on the balance and on each key.
func wantExact(t *testing.T, s *db.Store, u db.User, keys ...db.Key) db.Balance {
	t.Helper()
	var all []db.Entry
	for after := int64(0); ; {
		page, more, err := s.ListEntries(ctx, u.ID, db.EntryFilter{Limit: 100, StartingAfter: after})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if !more {
			break
		}
		after = page[len(page)-1].ID
	}
	b, err := s.GetBalance(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	var credits, usage money.USD
	byKey := map[int64]money.USD{}
	for i := len(all) - 1; i >= 0; i-- {
		e := all[i]
		if e.Type == db.EntryUsage {
			usage -= e.Amount
			byKey[*e.KeyID] -= e.Amount
		} else {
			credits += e.Amount
		}
		if e.BalanceAfter != credits-usage {
			t.Fatalf("entry %d: balanceAfter %s, want %s", e.ID, e.BalanceAfter, credits-usage)
		}
	}
	if b.Credits != credits || b.Usage != usage {
		t.Fatalf("totals %+v; the entries add up to credits %s, usage %s", b, credits, usage)
	}
	rows, err := s.SumUsage(ctx, u.ID, db.UsageQuery{From: time.Now().Add(-48 * time.Hour).Truncate(time.Hour),
		To: time.Now().Add(48 * time.Hour).Truncate(time.Hour), Bucket: "day"})
	if err != nil {
		t.Fatal(err)
	}
	var hourly money.USD
	for _, r := range rows {
		hourly += r.Cost
	}
	if hourly != usage {
		t.Fatalf("usage_hourly adds up to %s, the entries to %s", hourly, usage)
	}
	for _, k := range keys {
		got, err := s.GetKey(ctx, u.ID, apikey.Proxy, k.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Usage != byKey[k.ID] {
			t.Fatalf("key %d: usage %s, its entries %s", k.ID, got.Usage, byKey[k.ID])
		}
	}
	// held is the holds and leases, on the balance and on every key.
	if err := s.Exec(ctx, fmt.Sprintf(`DO $$ BEGIN
		IF (SELECT held FROM balances WHERE user_id = %[1]d) <>
		   (SELECT coalesce(sum(amount), 0) FROM holds WHERE user_id = %[1]d)
		   + (SELECT coalesce(sum(amount), 0) FROM leases WHERE user_id = %[1]d AND key_id = 0) THEN
			RAISE EXCEPTION 'balances.held is not its holds and leases';
		END IF;
		IF EXISTS (SELECT 1 FROM api_keys k WHERE k.user_id = %[1]d AND k.held <>
		   (SELECT coalesce(sum(amount), 0) FROM holds WHERE user_id = %[1]d AND key_id = k.id)
		   + (SELECT coalesce(sum(amount), 0) FROM leases WHERE user_id = %[1]d AND key_id = k.id)) THEN
			RAISE EXCEPTION 'a key''s held is not its holds and leases';
		END IF;
	END $$`, u.ID)); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMeterTwoReplicasNeverOverspend: two replicas and many goroutines
// spend one key's limit until it refuses, then, through another key, the
// rest of the account's balance until it refuses. Neither the limit nor the
// balance is ever exceeded, not even for a moment, and afterwards every
// figure is exact and nothing stays held.
func TestMeterTwoReplicasNeverOverspend(t *testing.T) {
	stores := replicas(t, 2)
	credits, limit := usd("2"), usd("0.7")
	u, limited := meteredAccount(t, stores[0], credits, db.KeyInput{Limit: &limit})
	free, err := stores[0].CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "unlimited"})
	if err != nil {
		t.Fatal(err)
	}

	// What admitted requests hold or spent, as the test sees it: never more
	// than the credits, nor the limit on the limited key.
	var committed, keyCommitted, peak, keyPeak atomic.Int64
	raise := func(v *atomic.Int64, to int64) {
		for p := v.Load(); to > p && !v.CompareAndSwap(p, to); p = v.Load() {
		}
	}
	var spent [2]atomic.Int64 // charged per replica
	stop := make(chan struct{})
	sampled := make(chan error, 1)
	go func() { // the database never shows a negative balance or remaining limit
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := stores[1].GetBalance(ctx, u.ID)
			k, kerr := stores[1].GetKey(ctx, u.ID, apikey.Proxy, limited.ID)
			if err == nil {
				err = kerr
			}
			if err == nil && (b.Available() < 0 || *k.LimitRemaining() < 0) {
				err = fmt.Errorf("balance %+v, key remaining %s", b, k.LimitRemaining())
			}
			if err != nil {
				sampled <- err
				return
			}
		}
	}()
	spend := func(key int64) {
		var wg sync.WaitGroup
		for g := range 32 {
			s := stores[g%2]
			wg.Go(func() {
				for refusals := 0; refusals < 20; {
					hold := usd("0.001") * money.USD(1+rand.IntN(40))
					tk, err := s.Meter().Admit(ctx, u.ID, key, "modelswitch/echo", hold)
					switch err {
					case nil:
					case db.ErrInsufficientCredits, db.ErrKeyLimitExceeded:
						refusals++
						continue
					default:
						t.Error(err)
						return
					}
					raise(&peak, committed.Add(int64(hold)))
					if key == limited.ID {
						raise(&keyPeak, keyCommitted.Add(int64(hold)))
					}
					cost := money.USD(rand.Int64N(int64(hold) + 1))
					var use *db.Usage // nil: failed upstream, nothing charged
					if rand.IntN(10) == 0 {
						cost = 0
					} else {
						use = meterUsage(cost)
					}
					// Lowered before the meter frees it, so that the test's
					// figure is never above the meter's.
					committed.Add(int64(cost - hold))
					if key == limited.ID {
						keyCommitted.Add(int64(cost - hold))
					}
					spent[g%2].Add(int64(cost))
					tk.Finish(use)
				}
			})
		}
		wg.Wait()
	}
	spend(limited.ID)
	spend(free.ID)
	close(stop)
	if err := <-sampled; err != nil {
		t.Fatal(err)
	}
	if money.USD(peak.Load()) > credits || money.USD(keyPeak.Load()) > limit {
		t.Fatalf("admitted up to %s against %s of credits, %s against a limit of %s",
			money.USD(peak.Load()), credits, money.USD(keyPeak.Load()), limit)
	}
	poll(t, 5*time.Second, "nothing is held", func() bool { return !stores[1].Meter().Tracks(u.ID) && settled(t, stores[0], u.ID)() })
	b := wantExact(t, stores[0], u, limited, free.Key)
	total := money.USD(spent[0].Load() + spent[1].Load())
	if b.Usage != total || b.Usage > credits {
		t.Fatalf("usage %s, the requests spent %s (credits %s)", b.Usage, total, credits)
	}
	k, _ := stores[0].GetKey(ctx, u.ID, apikey.Proxy, limited.ID)
	if k.Usage > limit || k.Held != 0 {
		t.Fatalf("limited key: usage %s of %s, held %s", k.Usage, limit, k.Held)
	}
	// Once idle, nothing is stranded in a lease: exactly what is left can be
	// held, and not a nano-dollar more.
	m := stores[1].Meter()
	kr := min(*k.LimitRemaining(), b.Available())
	tk, err := m.Admit(ctx, u.ID, limited.ID, "modelswitch/echo", kr)
	if err != nil {
		t.Fatalf("holding the %s left on the key: %v", kr, err)
	}
	if _, err := m.Admit(ctx, u.ID, limited.ID, "modelswitch/echo", 1); err != db.ErrKeyLimitExceeded && err != db.ErrInsufficientCredits {
		t.Fatalf("holding past what is left on the key: %v", err)
	}
	tk.Finish(nil)
	tk, err = m.Admit(ctx, u.ID, free.ID, "modelswitch/echo", b.Available())
	if err != nil {
		t.Fatalf("holding the %s left: %v", b.Available(), err)
	}
	if _, err := m.Admit(ctx, u.ID, free.ID, "modelswitch/echo", 1); err != db.ErrInsufficientCredits {
		t.Fatalf("holding past what is left: %v", err)
	}
	tk.Finish(nil)
	poll(t, 5*time.Second, "nothing is held", func() bool { return !stores[1].Meter().Tracks(u.ID) && settled(t, stores[0], u.ID)() })
	if spent[0].Load() == 0 || spent[1].Load() == 0 {
		t.Fatalf("a replica spent nothing: %d, %d", spent[0].Load(), spent[1].Load())
	}
	t.Logf("spent %s of %s (limited key %s of %s); peak committed %s", b.Usage, credits, k.Usage, limit, money.USD(peak.Load()))
}

// TestMeterIdleReturnsLeases: a lease reserved ahead is returned within a
// second of the last request finishing, and the usage shows by then.
func TestMeterIdleReturnsLeases(t *testing.T) {
	u, k := funded(t, store, usd("1"), db.KeyInput{})
	m := store.Meter()
	for range 20 {
		tk, err := m.Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.01"))
		if err != nil {
			t.Fatal(err)
		}
		tk.Finish(meterUsage(usd("0.001")))
	}
	last := time.Now()
	if b, _ := store.GetBalance(ctx, u.ID); b.Held == 0 {
		t.Fatal("nothing held while the lease is live: did the meter reserve ahead?")
	}
	poll(t, 5*time.Second, "the lease is returned", heldIs(t, store, u.ID, 0))
	if d := time.Since(last); d > time.Second {
		t.Errorf("held back to 0 %v after the last request; want within a second", d)
	}
	if b := wantExact(t, store, u, k); b.Usage != usd("0.02") || b.Available() != usd("0.98") {
		t.Fatalf("after the lease is returned: %+v", b)
	}
}

// TestMeterRefusalsAndKeyChanges: refusals are the ones of a hold, and a
// change of the key's models or limit holds from the very next request,
// whatever the lease reserved under the old one.
func TestMeterRefusalsAndKeyChanges(t *testing.T) {
	limit, daily := usd("0.5"), "daily"
	u, k := funded(t, store, usd("1"), db.KeyInput{Limit: &limit, LimitReset: &daily, Models: []string{"modelswitch/echo"}})
	m := store.Meter()
	if _, err := m.Admit(ctx, u.ID, k.ID, "openai/gpt-4o-mini", usd("0.01")); err != db.ErrModelNotAllowed {
		t.Fatalf("a model off the allow-list: %v", err)
	}
	tk, err := m.Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.3"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.3")); err != db.ErrKeyLimitExceeded {
		t.Fatalf("past the key's limit: %v", err)
	}
	got, _ := store.GetKey(ctx, u.ID, apikey.Proxy, k.ID)
	if got.Held < usd("0.3") || *got.LimitRemaining() > usd("0.2") {
		t.Fatalf("key while held: held %s, remaining %s", got.Held, got.LimitRemaining())
	}
	tk.Finish(meterUsage(usd("0.25")))

	// The limit lowered below what the lease reserved: the next request is
	// held against the new limit.
	lower := usd("0.3")
	if _, err := store.UpdateKey(ctx, u.ID, apikey.Proxy, k.ID, db.KeyUpdate{Limit: db.Change[money.USD]{Set: true, Value: &lower}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.1")); err != db.ErrKeyLimitExceeded {
		t.Fatalf("past the lowered limit: %v", err)
	}
	tk, err = m.Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.05"))
	if err != nil {
		t.Fatalf("within the lowered limit: %v", err)
	}
	tk.Finish(meterUsage(usd("0.05")))
	// No limit any more, and every model: the lease on the key is returned.
	if _, err := store.UpdateKey(ctx, u.ID, apikey.Proxy, k.ID, db.KeyUpdate{Limit: db.Change[money.USD]{Set: true},
		Models: db.Change[[]string]{Set: true}}); err != nil {
		t.Fatal(err)
	}
	tk, err = m.Admit(ctx, u.ID, k.ID, "openai/gpt-4o-mini", usd("0.6"))
	if err != nil {
		t.Fatalf("without a limit: %v", err)
	}
	if _, err := m.Admit(ctx, u.ID, k.ID, "openai/gpt-4o-mini", usd("0.2")); err != db.ErrInsufficientCredits {
		t.Fatalf("past the balance: %v", err)
	}
	tk.Finish(nil)
	poll(t, 5*time.Second, "nothing is held", settled(t, store, u.ID))
	got, _ = store.GetKey(ctx, u.ID, apikey.Proxy, k.ID)
	if got.Held != 0 || got.Usage != usd("0.3") {
		t.Fatalf("key afterwards: held %s, usage %s", got.Held, got.Usage)
	}
	if b := wantExact(t, store, u, k); b.Available() != usd("0.7") {
		t.Fatalf("balance %+v", b)
	}

	// A key deleted since it authenticated the request.
	if err := store.DeleteKey(ctx, u.ID, apikey.Proxy, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.01")); err != db.ErrUnknownKey {
		t.Fatalf("a deleted key: %v", err)
	}
	// Another account's key is unknown to this one.
	other, _ := funded(t, store, usd("1"), db.KeyInput{})
	if _, err := m.Admit(ctx, other.ID, k.ID, "modelswitch/echo", usd("0.01")); err != db.ErrUnknownKey {
		t.Fatalf("another account's key: %v", err)
	}
}

// TestMeterChargesPastTheHold: the actual cost is charged even when it
// exceeds the hold, and the figures stay exact.
func TestMeterChargesPastTheHold(t *testing.T) {
	u, k := funded(t, store, usd("1"), db.KeyInput{})
	tk, err := store.Meter().Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.1"))
	if err != nil {
		t.Fatal(err)
	}
	tk.Finish(meterUsage(usd("0.15")))
	tk.Finish(meterUsage(usd("0.15"))) // a second Finish does nothing
	poll(t, 5*time.Second, "nothing is held", settled(t, store, u.ID))
	if b := wantExact(t, store, u, k); b.Usage != usd("0.15") || b.Available() != usd("0.85") {
		t.Fatalf("balance %+v", b)
	}
}

// TestMeterExpiredLeasesAreReleased: the lease of a replica that died is
// released once it expires; a replica that only stalled past its lease's
// expiry (its lease swept meanwhile) still charges exactly what it served,
// and releases nothing twice.
func TestMeterExpiredLeasesAreReleased(t *testing.T) {
	u, k := funded(t, store, usd("1"), db.KeyInput{})
	// A dead replica's lease, as it left it.
	if err := store.Exec(ctx, fmt.Sprintf(`
		INSERT INTO leases (replica, user_id, key_id, amount, expires_at) VALUES ('dead', %[1]d, 0, 300000000, now() + interval '30 seconds');
		UPDATE balances SET held = held + 300000000 WHERE user_id = %[1]d`, u.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := store.ReleaseExpiredHolds(ctx); err != nil {
		t.Fatal(err)
	}
	if b, _ := store.GetBalance(ctx, u.ID); b.Held != usd("0.3") {
		t.Fatalf("a lease swept before it expired: %+v", b)
	}
	later := store.WithClock(func() time.Time { return time.Now().Add(db.DefaultLeaseTTL + time.Second) })
	if n, err := later.ReleaseExpiredHolds(ctx); err != nil || n < 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	if b := wantExact(t, store, u, k); b.Held != 0 || b.Available() != usd("1") {
		t.Fatalf("after the sweep: %+v", b)
	}

	// A live replica that stalls: its lease is swept while a request is
	// in flight, then the request finishes.
	tk, err := store.Meter().Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.2"))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := later.ReleaseExpiredHolds(ctx); err != nil || n < 1 {
		t.Fatalf("sweep of the stalled lease: %d, %v", n, err)
	}
	tk.Finish(meterUsage(usd("0.15")))
	poll(t, 5*time.Second, "the charge is written", func() bool {
		b, _ := store.GetBalance(ctx, u.ID)
		return b.Usage == usd("0.15")
	})
	poll(t, 5*time.Second, "nothing is held", settled(t, store, u.ID))
	if b := wantExact(t, store, u, k); b.Available() != usd("0.85") {
		t.Fatalf("after the stalled replica charged: %+v", b)
	}
	// And it meters on as before.
	tk, err = store.Meter().Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.2"))
	if err != nil {
		t.Fatal(err)
	}
	tk.Finish(meterUsage(usd("0.05")))
	poll(t, 5*time.Second, "nothing is held", settled(t, store, u.ID))
	if b := wantExact(t, store, u, k); b.Available() != usd("0.8") {
		t.Fatalf("afterwards: %+v", b)
	}
}

// TestMeterClose: Close writes what is queued and returns the leases; a
// request in flight is written when it finishes; new requests are refused.
func TestMeterClose(t *testing.T) {
	s := replicas(t, 1)[0]
	u, k := meteredAccount(t, s, usd("1"), db.KeyInput{})
	m := s.Meter()
	done, err := m.Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.1"))
	if err != nil {
		t.Fatal(err)
	}
	running, err := m.Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.1"))
	if err != nil {
		t.Fatal(err)
	}
	done.Finish(meterUsage(usd("0.02")))
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := s.GetBalance(ctx, u.ID)
	if b.Usage != usd("0.02") || b.Held < usd("0.1") {
		t.Fatalf("after Close with a request in flight: %+v", b)
	}
	if _, err := m.Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.1")); err != db.ErrShuttingDown {
		t.Fatalf("a request after Close: %v", err)
	}
	running.Finish(meterUsage(usd("0.03")))
	if b := wantExact(t, s, u, k); b.Usage != usd("0.05") || b.Held != 0 {
		t.Fatalf("after the last request finished: %+v", b)
	}
}

// TestMeterWindowsAndHours: a charge counts in the key's window and the
// usage hour of when it finished.
func TestMeterWindowsAndHours(t *testing.T) {
	now := time.Date(2026, 11, 29, 23, 59, 59, 0, time.UTC) // Sunday, the last second of a week
	s := store.WithClock(func() time.Time { return now })
	t.Cleanup(func() { s.Meter().Close(ctx) }) // its sweep runs on this clock
	limit, weekly := usd("1"), "weekly"
	u, k := funded(t, s, usd("10"), db.KeyInput{Limit: &limit, LimitReset: &weekly})
	tk, err := s.Meter().Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.9"))
	if err != nil {
		t.Fatal(err)
	}
	tk.Finish(meterUsage(usd("0.9")))
	if err := s.Meter().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := s.GetKey(ctx, u.ID, apikey.Proxy, k.ID)
	if got.Usage != usd("0.9") {
		t.Fatalf("key usage %s", got.Usage)
	}
	if _, err := s.Meter().Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.2")); err != db.ErrKeyLimitExceeded {
		t.Fatalf("over the week's limit: %v", err)
	}
	now = now.Add(time.Second) // Monday: a new week
	tk, err = s.Meter().Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.2"))
	if err != nil {
		t.Fatalf("new week: %v", err)
	}
	tk.Finish(meterUsage(usd("0.2")))
	poll(t, 5*time.Second, "nothing is held", settled(t, s, u.ID))
	got, _ = s.GetKey(ctx, u.ID, apikey.Proxy, k.ID)
	if got.Usage != usd("0.2") || got.Held != 0 {
		t.Fatalf("new week: usage %s, held %s", got.Usage, got.Held)
	}
	rows, _ := s.SumUsage(ctx, u.ID, db.UsageQuery{From: now.Add(-2 * time.Hour), To: now.Add(2 * time.Hour), Bucket: "hour"})
	if len(rows) != 2 || rows[0].Cost != usd("0.9") || !rows[1].Start.Equal(now) || rows[1].Cost != usd("0.2") {
		t.Fatalf("hours %+v", rows)
	}
}

// TestMeterDropsTheUsageOfADeletedAccount: an account deleted with a
// request in flight takes its ledger with it; the usage that request
// reports is dropped, not retried forever.
func TestMeterDropsTheUsageOfADeletedAccount(t *testing.T) {
	s := store
	u, k := funded(t, s, usd("1"), db.KeyInput{})
	tk, err := s.Meter().Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAccount(ctx, u.ID, u.Email); err != nil {
		t.Fatal(err)
	}
	tk.Finish(meterUsage(usd("0.05")))
	for range 2 {
		if err := s.Meter().Flush(ctx); err != nil {
			t.Fatalf("flush after the account was deleted: %v", err)
		}
	}
}

// TestMeterRefusesHoldsBeyondAnyBalance: a request that could cost more than
// any balance holds (max_tokens near 2^63) is refused as unaffordable, also
// while other requests are in flight, and changes nothing.
func TestMeterRefusesHoldsBeyondAnyBalance(t *testing.T) {
	u, k := funded(t, store, usd("1"), db.KeyInput{})
	tk, err := store.Meter().Admit(ctx, u.ID, k.ID, "modelswitch/echo", usd("0.1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, huge := range []money.USD{money.Max + 1, money.USD(math.MaxInt64)} {
		if _, err := store.Meter().Admit(ctx, u.ID, k.ID, "modelswitch/echo", huge); err != db.ErrInsufficientCredits {
			t.Fatalf("a hold of %s: %v", huge, err)
		}
	}
	tk.Finish(meterUsage(usd("0.02")))
	poll(t, 5*time.Second, "nothing is held", settled(t, store, u.ID))
	if b := wantExact(t, store, u, k); b.Usage != usd("0.02") {
		t.Fatalf("balance %+v", b)
	}
}
