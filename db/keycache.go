package db

import (
	"context"
	"encoding/hex"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"

	"modelswitch/db/apikey"
	"modelswitch/errs"
)

// KeyCache answers key checks from memory, so that an authenticated request
// costs no query. It is filled on a miss and kept honest by PostgreSQL:
// every change that can end a key's validity notifies every replica
// (migrations/0004_key_notify.sql), which drops the key at once.
//
// Its failure modes are handled, not assumed away:
//   - while the listener is disconnected the cache is bypassed and every
//     check reads the database; on reconnect everything is dropped, since
//     notifications may have been missed;
//   - a lookup that raced an invalidation is not cached (the generation
//     counter moved while it read);
//   - entries live at most cacheTTL, a backstop for anything else, and are
//     swept once expired; unknown keys are cached only while the cache
//     holds fewer than maxEntries, so made-up keys cannot fill memory;
//   - expiry is a time, checked by the caller on every request (Key.Status).
//
// A change made through this process's store drops the key from its
// caches before the change returns (keyCaches), so the very next request
// here sees it without waiting for the notification.
//
// Key uses (last_used_at) are recorded in memory and written in one
// statement a second, and on Close.
type KeyCache struct {
	store *Store
	log   *slog.Logger

	mu      sync.RWMutex
	entries map[cacheKey]cacheEntry
	gen     uint64      // moved by every invalidation, under mu
	live    atomic.Bool // connected && subscribed: entries may be used

	// The listener's state, under stateMu: connected to PostgreSQL, and
	// LISTENing on keyChannel there (pq records a channel asked for while
	// it has no connection, and LISTENs on it once connected).
	stateMu               sync.Mutex
	connected, subscribed bool

	usesMu   sync.Mutex
	pending  map[int64]keyUse    // uses not written yet
	recorded map[int64]time.Time // when each key's use was last queued

	listener *pq.Listener
	stop     chan struct{}
	closing  sync.Once // Close may be called more than once
	done     sync.WaitGroup
}

type cacheKey struct {
	kind   apikey.Kind
	digest [32]byte
}

type cacheEntry struct {
	key     Key
	unknown bool // no such key: cached for negativeTTL
	until   time.Time
}

type keyUse struct {
	userID int64
	at     time.Time
}

const (
	cacheTTL    = 10 * time.Second
	negativeTTL = 2 * time.Second
	maxEntries  = 100_000 // past it, unknown keys are no longer cached
	flushEvery  = time.Second
	keyChannel  = "modelswitch_keys"
)

// NewKeyCache starts the listener on listenURL (empty: the store's own
// database URL; set it apart when a pooler in transaction mode, which
// cannot LISTEN, sits in front of PostgreSQL) and the writer of key uses.
// Close stops both.
func NewKeyCache(store *Store, listenURL string, log *slog.Logger) *KeyCache {
	if listenURL == "" {
		listenURL = store.cfg.URL
	}
	c := &KeyCache{store: store, log: log, entries: map[cacheKey]cacheEntry{},
		pending: map[int64]keyUse{}, recorded: map[int64]time.Time{}, stop: make(chan struct{})}
	store.keyCaches.add(c)
	c.listener = pq.NewListener(listenURL, 100*time.Millisecond, 5*time.Second, c.event)
	c.done.Add(2)
	go c.listen()
	go c.writeUses()
	return c
}

// event follows the listener's connection. pq emits Connected and
// Reconnected once its channels are listened to again on the new connection.
func (c *KeyCache) event(ev pq.ListenerEventType, err error) {
	switch ev {
	case pq.ListenerEventConnected, pq.ListenerEventReconnected:
		c.setState(func() { c.connected = true })
	case pq.ListenerEventDisconnected, pq.ListenerEventConnectionAttemptFailed:
		if c.live.Load() {
			c.log.Warn("key cache: lost the notification connection; checking keys in the database", "error", err)
		}
		c.setState(func() { c.connected = false })
	}
}

// setState changes the listener's state and with it whether the cache is
// live: used only while connected and subscribed, and emptied at every
// change, since notifications may have been missed meanwhile.
func (c *KeyCache) setState(change func()) {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	change()
	c.live.Store(false)
	c.flush()
	c.live.Store(c.connected && c.subscribed)
}

func (c *KeyCache) listen() {
	defer c.done.Done()
	// Without a connection, Listen only records the channel: the cache is
	// live once the listener is connected too (event).
	if err := c.listener.Listen(keyChannel); err != nil {
		c.log.Error("key cache: cannot listen; checking every key in the database", "error", err)
		return
	}
	c.setState(func() { c.subscribed = true })
	for {
		select {
		case <-c.stop:
			return
		case n, ok := <-c.listener.Notify:
			if !ok {
				return
			}
			if n == nil { // reconnected: notifications may have been lost
				c.flush()
				continue
			}
			raw, err := hex.DecodeString(n.Extra)
			if err != nil || len(raw) != 32 {
				c.flush()
				continue
			}
			c.mu.Lock()
			for _, kind := range []apikey.Kind{apikey.Proxy, apikey.Billing} {
				delete(c.entries, cacheKey{kind, [32]byte(raw)})
			}
			c.gen++
			c.mu.Unlock()
		}
	}
}

// drop removes the account's key keyID (0: all its keys).
func (c *KeyCache) drop(userID, keyID int64) {
	c.mu.Lock()
	for ck, e := range c.entries {
		if !e.unknown && e.key.UserID == userID && (keyID == 0 || e.key.ID == keyID) {
			delete(c.entries, ck)
		}
	}
	c.gen++
	c.mu.Unlock()
}

// keyCaches are the key caches of one store's process.
type keyCaches struct {
	mu     sync.Mutex
	caches []*KeyCache
}

func (k *keyCaches) add(c *KeyCache) {
	k.mu.Lock()
	k.caches = append(k.caches, c)
	k.mu.Unlock()
}

func (k *keyCaches) remove(c *KeyCache) {
	k.mu.Lock()
	k.caches = slices.DeleteFunc(k.caches, func(x *KeyCache) bool { return x == c })
	k.mu.Unlock()
}

// keyChanged drops a changed key (keyID 0: every key of the account) from
// this process's caches.
func (s *Store) keyChanged(userID, keyID int64) {
	s.keyCaches.mu.Lock()
	defer s.keyCaches.mu.Unlock()
	for _, c := range s.keyCaches.caches {
		c.drop(userID, keyID)
	}
}

// Listening says whether the cache is in use: its listener is connected.
func (c *KeyCache) Listening() bool { return c.live.Load() }

// flush drops every entry.
func (c *KeyCache) flush() {
	c.mu.Lock()
	clear(c.entries)
	c.gen++
	c.mu.Unlock()
}

// VerifyKey finds the key a digest belongs to, from memory when it can.
func (c *KeyCache) VerifyKey(ctx context.Context, kind apikey.Kind, digest []byte) (Key, error) {
	if len(digest) != 32 {
		return Key{}, ErrUnknownKey
	}
	ck := cacheKey{kind, [32]byte(digest)}
	now := time.Now()
	c.mu.RLock()
	e, hit := c.entries[ck]
	gen := c.gen
	c.mu.RUnlock()
	live := c.live.Load()
	if hit && live && now.Before(e.until) {
		if e.unknown {
			return Key{}, ErrUnknownKey
		}
		return e.key, nil
	}
	k, err := c.store.VerifyKey(ctx, kind, digest)
	unknown := errs.Is(err, errs.Unauthorized)
	if err != nil && !unknown || !live {
		return k, err
	}
	e = cacheEntry{key: k, unknown: unknown, until: now.Add(cacheTTL)}
	if unknown {
		e.until = now.Add(negativeTTL)
	}
	c.mu.Lock()
	if c.gen == gen && c.live.Load() && (!unknown || len(c.entries) < maxEntries) {
		c.entries[ck] = e
	}
	c.mu.Unlock()
	return k, err
}

// RecordKeyUse notes that the key was used now; the use is written within
// a second, at most once a minute per key.
func (c *KeyCache) RecordKeyUse(_ context.Context, k Key) error {
	now := time.Now()
	c.usesMu.Lock()
	defer c.usesMu.Unlock()
	last, ok := c.recorded[k.ID]
	if !ok && k.LastUsedAt != nil {
		last, ok = *k.LastUsedAt, true
	}
	if ok && now.Sub(last) < lastUsedEvery {
		return nil
	}
	c.recorded[k.ID] = now
	c.pending[k.ID] = keyUse{k.UserID, now}
	return nil
}

func (c *KeyCache) writeUses() {
	defer c.done.Done()
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			c.sweep(now)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := c.WriteUses(ctx); err != nil {
				c.log.Warn("key cache: write key uses", "error", err)
			}
			cancel()
		}
	}
}

// sweep removes expired entries, every second: anyone can send well-formed
// keys that do not exist, and each would otherwise stay in memory.
func (c *KeyCache) sweep(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ck, e := range c.entries {
		if !now.Before(e.until) {
			delete(c.entries, ck)
		}
	}
}

// WriteUses writes the key uses noted since the last write, in one
// statement. Uses that fail to be written are kept for the next try.
func (c *KeyCache) WriteUses(ctx context.Context) error {
	c.usesMu.Lock()
	batch := c.pending
	c.pending = map[int64]keyUse{}
	for id, at := range c.recorded {
		if time.Since(at) >= lastUsedEvery {
			delete(c.recorded, id)
		}
	}
	c.usesMu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := c.store.recordKeyUses(ctx, batch)
	if err != nil {
		c.usesMu.Lock()
		for id, u := range batch {
			if _, newer := c.pending[id]; !newer {
				c.pending[id] = u
			}
		}
		c.usesMu.Unlock()
	}
	return err
}

// Close stops listening and writes the key uses still in memory; calling
// it again only writes what is left.
func (c *KeyCache) Close(ctx context.Context) error {
	c.closing.Do(func() {
		c.store.keyCaches.remove(c)
		close(c.stop)
		c.live.Store(false)
		c.listener.Close() // ends a Listen still waiting for a connection
	})
	c.done.Wait()
	return c.WriteUses(ctx)
}

// recordKeyUses writes a batch of key uses in one statement, each scoped to
// its key's account; a use never moves last_used_at back.
func (s *Store) recordKeyUses(ctx context.Context, uses map[int64]keyUse) error {
	ids := make([]int64, 0, len(uses))
	users := make([]int64, 0, len(uses))
	times := make([]time.Time, 0, len(uses))
	for id, u := range uses {
		ids, users, times = append(ids, id), append(users, u.userID), append(times, u.at)
	}
	_, err := s.db.ExecContext(ctx, `
		UPDATE api_keys k SET last_used_at = u.at
		FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[]) AS u(id, user_id, at)
		WHERE k.id = u.id AND k.user_id = u.user_id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)`,
		pq.Array(ids), pq.Array(users), pq.Array(times))
	return err
}
