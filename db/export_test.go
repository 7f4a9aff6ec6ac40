package db

import (
	"context"
	"time"

	"modelswitch/db/apikey"

	"github.com/jmoiron/sqlx"
)

// Exec runs SQL on the store without a statement timeout, for tests that
// seed data in bulk.
func (s *Store) Exec(ctx context.Context, query string, args ...any) error {
	return s.withTx(ctx, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, `SET LOCAL statement_timeout = 0`); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, query, args...)
		return err
	})
}

// URL is the store's database URL.
func (s *Store) URL() string { return s.cfg.URL }

// Count runs a query that returns one number.
func (s *Store) Count(ctx context.Context, query string, args ...any) (n int, err error) {
	err = s.db.GetContext(ctx, &n, query, args...)
	return n, err
}

// Flush empties the cache, as a notification of a lost connection does.
func (c *KeyCache) Flush() { c.flush() }

// SessionLastSeen is when the session was last marked as seen.
func (s *Store) SessionLastSeen(ctx context.Context, id string) (at time.Time, err error) {
	err = s.db.GetContext(ctx, &at, `SELECT last_seen_at FROM sessions WHERE id = $1`, id)
	return at, err
}

// PendingUses is how many key uses wait to be written.
func (c *KeyCache) PendingUses() int {
	c.usesMu.Lock()
	defer c.usesMu.Unlock()
	return len(c.pending)
}

// Cached says whether the cache holds an entry for the digest.
func (c *KeyCache) Cached(kind apikey.Kind, digest []byte) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.entries[cacheKey{kind, [32]byte(digest)}]
	return ok
}
