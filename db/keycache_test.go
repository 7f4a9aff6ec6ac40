package db_test

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/errs"
)

func newCache(t *testing.T) *db.KeyCache {
	t.Helper()
	c := db.NewKeyCache(store, "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { c.Close(ctx) })
	return c
}

// active says whether the cache takes the key now.
func active(c *db.KeyCache, secret string) bool {
	k, err := c.VerifyKey(ctx, apikey.Proxy, apikey.Digest(secret))
	return err == nil && k.Status(time.Now()) == db.KeyActive
}

func TestKeyCacheSeesEveryChange(t *testing.T) {
	// Two caches: two replicas. A change made through either store call
	// reaches both through PostgreSQL.
	a, b := newCache(t), newCache(t)
	u := newUser(t)
	k, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "cached"})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, "both caches to take the new key", func() bool { return active(a, k.Secret) && active(b, k.Secret) })

	off := false
	if _, err := store.UpdateKey(ctx, u.ID, apikey.Proxy, k.ID, db.KeyUpdate{Active: &off}); err != nil {
		t.Fatal(err)
	}
	poll(t, time.Second, "a deactivated key to be refused", func() bool { return !active(a, k.Secret) && !active(b, k.Secret) })

	on := true
	if _, err := store.UpdateKey(ctx, u.ID, apikey.Proxy, k.ID, db.KeyUpdate{Active: &on}); err != nil {
		t.Fatal(err)
	}
	poll(t, time.Second, "a reactivated key to be taken", func() bool { return active(a, k.Secret) && active(b, k.Secret) })

	if err := store.DeleteKey(ctx, u.ID, apikey.Proxy, k.ID); err != nil {
		t.Fatal(err)
	}
	poll(t, time.Second, "a deleted key to be unknown", func() bool {
		_, errA := a.VerifyKey(ctx, apikey.Proxy, apikey.Digest(k.Secret))
		_, errB := b.VerifyKey(ctx, apikey.Proxy, apikey.Digest(k.Secret))
		return errs.Is(errA, errs.Unauthorized) && errs.Is(errB, errs.Unauthorized)
	})
}

func TestKeyCacheFlushesWhenItMayHaveMissedNotifications(t *testing.T) {
	c := newCache(t)
	u := newUser(t)
	k, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "cached"})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, "the cache to hold the key", func() bool {
		return c.Listening() && active(c, k.Secret) && c.Cached(apikey.Proxy, apikey.Digest(k.Secret))
	})
	// Cut every listening connection, and deactivate the key while the
	// cache may still be without one. The listener can be back within a
	// millisecond, so what is waited for is what lasts: the cache let go of
	// the key although no notification named it.
	if err := store.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query ILIKE 'listen%' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, "the cache to notice", func() bool { return !c.Cached(apikey.Proxy, apikey.Digest(k.Secret)) })
	off := false
	if _, err := store.UpdateKey(ctx, u.ID, apikey.Proxy, k.ID, db.KeyUpdate{Active: &off}); err != nil {
		t.Fatal(err)
	}
	// Once the listener is back the cache starts afresh, well before the
	// entry's own expiry (10 s) would end it.
	poll(t, 5*time.Second, "the listener to reconnect", c.Listening)
	if active(c, k.Secret) {
		t.Fatal("after reconnecting, the cache took a key deactivated while it was not listening")
	}
}

func TestKeyUsesAreWrittenInBatches(t *testing.T) {
	c := newCache(t)
	u := newUser(t)
	k, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "used"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.VerifyKey(ctx, apikey.Proxy, apikey.Digest(k.Secret))
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		c.RecordKeyUse(ctx, got)
	}
	if n := c.PendingUses(); n != 1 {
		t.Fatalf("100 uses of one key queued %d writes; want 1", n)
	}
	if err := c.WriteUses(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := store.GetKey(ctx, u.ID, apikey.Proxy, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.LastUsedAt == nil || time.Since(*after.LastUsedAt) > time.Minute {
		t.Fatalf("last use not written: %v", after.LastUsedAt)
	}
	// A use is written to the key only on its own account.
	fresh, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "unused"})
	if err != nil {
		t.Fatal(err)
	}
	c.RecordKeyUse(ctx, db.Key{ID: fresh.ID, UserID: newUser(t).ID})
	if err := c.WriteUses(ctx); err != nil {
		t.Fatal(err)
	}
	if after, _ := store.GetKey(ctx, u.ID, apikey.Proxy, fresh.ID); after.LastUsedAt != nil {
		t.Fatalf("a use recorded under another account was written: %v", after.LastUsedAt)
	}
}

// TestKeyCacheForgetsUnknownKeys: a made-up key is remembered briefly (so a
// flood of the same one costs one query in two seconds) and then swept, so
// made-up keys cannot fill memory.
func TestKeyCacheForgetsUnknownKeys(t *testing.T) {
	c := newCache(t)
	poll(t, 10*time.Second, "the cache to listen", c.Listening)
	made, err := apikey.Generate(apikey.Proxy)
	if err != nil {
		t.Fatal(err)
	}
	digest := apikey.Digest(made)
	if _, err := c.VerifyKey(ctx, apikey.Proxy, digest); err != db.ErrUnknownKey {
		t.Fatalf("a made-up key: %v", err)
	}
	if !c.Cached(apikey.Proxy, digest) {
		t.Fatal("an unknown key was not remembered")
	}
	poll(t, 10*time.Second, "the unknown key to be swept", func() bool { return !c.Cached(apikey.Proxy, digest) })
}
