package db_test

import (
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/db/dbtest"
	"modelswitch/errs"
)

// capped is the test store with a cap of n keys of each kind.
func capped(n int) *db.Store {
	s := *store
	s.MaxKeys = n
	return &s
}

func createKeys(t *testing.T, s *db.Store, userID int64, kind apikey.Kind, n int) []db.CreatedKey {
	t.Helper()
	keys := make([]db.CreatedKey, n)
	for i := range keys {
		k, err := s.CreateKey(ctx, userID, kind, db.KeyInput{Name: fmt.Sprint("key ", i)})
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	return keys
}

func wantCapReached(t *testing.T, err error, limit int) {
	t.Helper()
	e := wantKind(t, err, errs.Conflict)
	if e.Code != "key_limit_reached" || e.HTTPStatus() != 409 ||
		!strings.Contains(e.Message, fmt.Sprint(limit)) || !strings.Contains(e.Message, "Delete keys you no longer use") {
		t.Fatalf("cap error %+v", e)
	}
}

// countKeys counts through an uncapped store (the test store by default): a
// capped one lists no more than its cap.
func countKeys(t *testing.T, userID int64, kind apikey.Kind, on ...*db.Store) int {
	t.Helper()
	s := *store
	if len(on) > 0 {
		s = *on[0]
	}
	s.MaxKeys = 1000
	keys, _, err := s.ListKeysPage(ctx, userID, kind, db.KeyPage{})
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

func TestKeyCap(t *testing.T) {
	s := capped(3)
	u, other := newUser(t), newUser(t)
	keys := createKeys(t, s, u.ID, apikey.Proxy, 3)
	_, err := s.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "one too many"})
	wantCapReached(t, err, 3)
	if n := countKeys(t, u.ID, apikey.Proxy); n != 3 {
		t.Fatalf("%d keys after a refused create; want 3", n)
	}

	// Each kind has a cap of its own, and each account.
	createKeys(t, s, u.ID, apikey.Billing, 3)
	_, err = s.CreateKey(ctx, u.ID, apikey.Billing, db.KeyInput{Name: "one too many"})
	wantCapReached(t, err, 3)
	createKeys(t, s, other.ID, apikey.Proxy, 3)

	// An inactive or expired key still takes a place; a deleted one frees it.
	inactive := false
	if _, err := s.UpdateKey(ctx, u.ID, apikey.Proxy, keys[0].ID, db.KeyUpdate{Active: &inactive}); err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "still too many"})
	wantCapReached(t, err, 3)
	if err := s.DeleteKey(ctx, u.ID, apikey.Proxy, keys[0].ID); err != nil {
		t.Fatal(err)
	}
	createKeys(t, s, u.ID, apikey.Proxy, 1)
	_, err = s.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "full again"})
	wantCapReached(t, err, 3)

	// Invalid input is reported as such, even at the cap.
	_, err = s.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: " "})
	wantKind(t, err, errs.Invalid)
}

func TestKeyCapConcurrentCreates(t *testing.T) {
	const limit, tries = 5, 50
	s := capped(limit)
	u := newUser(t)
	createKeys(t, s, u.ID, apikey.Proxy, limit-1)
	var wg sync.WaitGroup
	results := make(chan error, tries)
	for i := range tries {
		wg.Go(func() {
			_, err := s.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: fmt.Sprint("race ", i)})
			results <- err
		})
	}
	wg.Wait()
	close(results)
	created := 0
	for err := range results {
		if err == nil {
			created++
			continue
		}
		wantCapReached(t, err, limit)
	}
	if n := countKeys(t, u.ID, apikey.Proxy); created != 1 || n != limit {
		t.Fatalf("%d of %d concurrent creates at the cap succeeded, %d keys; want 1 and %d", created, tries, n, limit)
	}
}

// lockWaits counts the connections to the database of raw that wait for a
// lock.
func lockWaits(raw *sql.DB) (n int) {
	raw.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
	return n
}

// waitForLockWaits polls until want connections wait for a lock.
func waitForLockWaits(t *testing.T, raw *sql.DB, want int) {
	t.Helper()
	poll(t, 10*time.Second, fmt.Sprintf("%d connections to wait for a lock", want), func() bool { return lockWaits(raw) >= want })
}

// TestKeyCapAcrossStores: stores on one database, as replicas are, share no
// memory; the account's row lock alone keeps the cap. Inserts are held back
// until a create from each of four stores is under way.
func TestKeyCapAcrossStores(t *testing.T) {
	url := dbtest.URL(t)
	var replicas [4]*db.Store
	for i := range replicas {
		s, err := db.Open(ctx, db.Config{URL: url, LockTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.MaxKeys = 3
		replicas[i] = s
	}
	if err := replicas[0].Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := replicas[0].Exec(ctx, `INSERT INTO users (email, password_hash) VALUES ('replicas@example.com', 'x')`); err != nil {
		t.Fatal(err)
	}
	const userID = 1 // the first account of a fresh database
	createKeys(t, replicas[0], userID, apikey.Proxy, 2)

	raw, err := sql.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	hold, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback()
	if _, err := hold.Exec(`LOCK TABLE api_keys IN SHARE MODE`); err != nil { // blocks inserts, not reads
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make(chan error, len(replicas))
	for i, r := range replicas {
		wg.Go(func() {
			_, err := r.CreateKey(ctx, userID, apikey.Proxy, db.KeyInput{Name: fmt.Sprint("replica ", i)})
			results <- err
		})
	}
	waitForLockWaits(t, raw, len(replicas))
	hold.Rollback()
	wg.Wait()
	close(results)
	created := 0
	for err := range results {
		if err == nil {
			created++
			continue
		}
		wantCapReached(t, err, 3)
	}
	if n := countKeys(t, userID, apikey.Proxy, replicas[0]); created != 1 || n != 3 {
		t.Fatalf("%d of %d creates on as many stores succeeded, %d keys; want 1 and 3", created, len(replicas), n)
	}
}

// TestKeyBurstLeavesPoolFree: creates on one account wait for their turn
// holding no connection, so that a burst on an account whose row is locked
// leaves the pool to every other account.
func TestKeyBurstLeavesPoolFree(t *testing.T) {
	url := dbtest.URL(t)
	s, err := db.Open(ctx, db.Config{URL: url, MaxConns: 6, LockTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Exec(ctx, `INSERT INTO users (email, password_hash) VALUES ('busy@example.com', 'x'), ('other@example.com', 'x')`); err != nil {
		t.Fatal(err)
	}
	const busy, other = 1, 2 // the accounts of a fresh database
	raw, err := sql.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	lock, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback()
	if _, err := lock.Exec(`SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE`, busy); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	results := make(chan error, 10)
	for i := range 10 {
		wg.Go(func() {
			_, err := s.CreateKey(ctx, busy, apikey.Proxy, db.KeyInput{Name: fmt.Sprint("burst ", i)})
			results <- err
		})
	}
	waitForLockWaits(t, raw, 1)
	if n := lockWaits(raw); n != 1 {
		t.Errorf("%d connections wait for one account's row; want 1", n)
	}
	if _, _, err := s.ListKeysPage(ctx, other, apikey.Proxy, db.KeyPage{}); err != nil {
		t.Errorf("another account during the burst: %v", err)
	}
	lock.Rollback()
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil {
			t.Fatalf("create after the burst: %v", err)
		}
	}
}

func TestListKeysPage(t *testing.T) {
	u, other := newUser(t), newUser(t)
	created := createKeys(t, store, u.ID, apikey.Proxy, 7)
	theirs := createKeys(t, store, other.ID, apikey.Proxy, 2)
	createKeys(t, store, u.ID, apikey.Billing, 1)

	// Pages of 3, newest first, visit each key once.
	var ids []int64
	var after int64
	for page := 0; ; page++ {
		keys, more, err := store.ListKeysPage(ctx, u.ID, apikey.Proxy, db.KeyPage{Limit: 3, StartingAfter: after})
		if err != nil {
			t.Fatal(err)
		}
		if want := min(3, 7-3*page); len(keys) != want || more != (page < 2) {
			t.Fatalf("page %d: %d keys, more %v; want %d and %v", page, len(keys), more, want, page < 2)
		}
		for _, k := range keys {
			if k.UserID != u.ID || k.Kind != apikey.Proxy {
				t.Fatalf("page %d has %+v", page, k)
			}
			ids = append(ids, k.ID)
		}
		if !more {
			break
		}
		after = keys[len(keys)-1].ID
	}
	for i, id := range ids {
		if want := created[len(created)-1-i].ID; id != want {
			t.Fatalf("paged ids %v; want newest first %v", ids, created)
		}
	}

	// Another account's id as the cursor shows only the caller's keys.
	keys, more, err := store.ListKeysPage(ctx, u.ID, apikey.Proxy, db.KeyPage{Limit: 10, StartingAfter: theirs[1].ID})
	if err != nil || more {
		t.Fatal(err, more)
	}
	for _, k := range keys {
		if k.UserID != u.ID {
			t.Fatalf("another account's key %+v", k)
		}
	}
}

// TestListKeysBounded: an account over the cap (one from before there was a
// cap, or a cap lowered since) lists at most the cap's newest keys at once.
func TestListKeysBounded(t *testing.T) {
	u := newUser(t)
	createKeys(t, store, u.ID, apikey.Proxy, 5)
	s := capped(3)
	keys, err := s.ListKeys(ctx, u.ID, apikey.Proxy)
	if err != nil || len(keys) != 3 {
		t.Fatalf("%d keys listed over a cap of 3 (%v)", len(keys), err)
	}
	all, more, err := s.ListKeysPage(ctx, u.ID, apikey.Proxy, db.KeyPage{Limit: 100})
	if err != nil || len(all) != 3 || !more || all[0].ID != keys[0].ID {
		t.Fatalf("a page over the cap: %d keys, more %v (%v)", len(all), more, err)
	}
	_, err = s.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "over"})
	wantCapReached(t, err, 3)
}
