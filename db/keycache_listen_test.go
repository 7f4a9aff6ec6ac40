package db_test

import (
	"database/sql"
	"io"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"modelswitch/db"
	"modelswitch/db/apikey"
)

// TestKeyCacheListensWhereItIsTold: DATABASE_LISTEN_URL. The listener
// connects there, not through the store's URL (a pooler in transaction
// mode cannot LISTEN).
func TestKeyCacheListensWhereItIsTold(t *testing.T) {
	u, err := url.Parse(store.URL())
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", "modelswitch-listen-test")
	u.RawQuery = q.Encode()
	c := db.NewKeyCache(store, u.String(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { c.Close(ctx) })
	poll(t, 5*time.Second, "the cache to listen", c.Listening)
	n, err := store.Count(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = 'modelswitch-listen-test' AND query ILIKE 'listen%'`)
	if err != nil || n != 1 {
		t.Fatalf("%d listening connections from the listen URL, %v; want 1", n, err)
	}
}

// TestKeyCacheWithoutItsListenerReadsTheDatabase: while the listener has no
// connection (here its URL leads nowhere), no key is answered from memory,
// so a change no notification announces is seen at once.
func TestKeyCacheWithoutItsListenerReadsTheDatabase(t *testing.T) {
	c := db.NewKeyCache(store, "postgres://postgres@127.0.0.1:1/nowhere?sslmode=disable&connect_timeout=1",
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { c.Close(ctx) })
	u := newUser(t)
	k, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "unlistened"})
	if err != nil {
		t.Fatal(err)
	}
	digest := apikey.Digest(k.Secret)
	for range 3 {
		if !active(c, k.Secret) || c.Cached(apikey.Proxy, digest) || c.Listening() {
			t.Fatal("a cache without its listener answered from memory")
		}
	}
	// Behind the store's back: no notification, no drop in this process.
	if err := store.Exec(ctx, `UPDATE api_keys SET active = false WHERE id = $1`, k.ID); err != nil {
		t.Fatal(err)
	}
	if active(c, k.Secret) {
		t.Fatal("a deactivated key was taken by a cache that cannot listen")
	}
}

// TestKeyCacheKeepsNoLookupThatRacedAChange: a key read from the database
// while the cache was emptied (a notification, a reconnection) may be
// stale, so it is answered but not kept.
func TestKeyCacheKeepsNoLookupThatRacedAChange(t *testing.T) {
	c := newCache(t)
	poll(t, 5*time.Second, "the cache to listen", c.Listening)
	u := newUser(t)
	k, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "raced"})
	if err != nil {
		t.Fatal(err)
	}
	digest := apikey.Digest(k.Secret)
	// Hold the lookup's query behind a lock on the keys table.
	raw, err := sql.Open("postgres", store.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	hold, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback()
	if _, err := hold.Exec(`SET LOCAL lock_timeout = 0; LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	looked := make(chan error, 1)
	go func() {
		_, err := c.VerifyKey(ctx, apikey.Proxy, digest)
		looked <- err
	}()
	poll(t, 5*time.Second, "the lookup to wait on the lock", func() bool {
		var waiting int
		raw.QueryRow(`SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'api_keys'::regclass`).Scan(&waiting)
		return waiting > 0
	})
	c.Flush()
	hold.Rollback()
	if err := <-looked; err != nil {
		t.Fatal(err)
	}
	if c.Cached(apikey.Proxy, digest) {
		t.Fatal("a lookup that raced the cache's emptying was kept")
	}
	if !active(c, k.Secret) || !c.Cached(apikey.Proxy, digest) {
		t.Fatal("the next lookup was not kept")
	}
}
