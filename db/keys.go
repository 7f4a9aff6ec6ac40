package db

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/lib/pq"

	"modelswitch/db/apikey"
	"modelswitch/db/money"
	"modelswitch/errs"
)

// Key is a proxy or billing key as it is stored: never the key itself.
type Key struct {
	ID         int64       `db:"id"`
	UserID     int64       `db:"user_id"`
	Kind       apikey.Kind `db:"kind"`
	Name       string      `db:"name"`
	Prefix     string      `db:"prefix"`
	Active     bool        `db:"active"`
	CreatedAt  time.Time   `db:"created_at"`
	ExpiresAt  *time.Time  `db:"expires_at"`
	LastUsedAt *time.Time  `db:"last_used_at"`

	// Spending, for proxy keys.
	Limit      *money.USD     `db:"spend_limit"` // nil: no limit
	LimitReset *string        `db:"limit_reset"` // daily, weekly, monthly; nil: never
	Models     pq.StringArray `db:"models"`      // nil: every model
	Usage      money.USD      `db:"usage"`       // spent in the current window
	Held       money.USD      `db:"held"`        // held by requests in flight
}

// LimitRemaining is what the key may still spend in its window, or nil
// without a limit. It is not capped by the account's balance.
func (k Key) LimitRemaining() *money.USD {
	if k.Limit == nil {
		return nil
	}
	r := *k.Limit - k.Usage - k.Held
	return &r
}

// KeyStatus is whether a key works now.
type KeyStatus string

const (
	KeyActive   KeyStatus = "Active"
	KeyInactive KeyStatus = "Inactive"
	KeyExpired  KeyStatus = "Expired"
)

// Status says whether the key works at now. A key stops working on its own
// when it expires, so this is computed, never stored.
func (k Key) Status(now time.Time) KeyStatus {
	switch {
	case !k.Active:
		return KeyInactive
	case k.ExpiresAt != nil && !k.ExpiresAt.After(now):
		return KeyExpired
	}
	return KeyActive
}

// CreatedKey is a key just created: the only time its secret exists outside
// the client.
type CreatedKey struct {
	Key
	Secret string
}

// KeyInput is what a client gives to create a key.
type KeyInput struct {
	Name       string
	ExpiresAt  *time.Time
	Limit      *money.USD
	LimitReset *string
	Models     []string
}

// Change is an update of a field that can be cleared: Set false leaves the
// field as it is; Set with a nil Value clears it.
type Change[T any] struct {
	Set   bool
	Value *T
}

// KeyUpdate changes the fields that are set and leaves the others.
type KeyUpdate struct {
	Name       *string
	Active     *bool
	Limit      Change[money.USD]
	LimitReset Change[string]
	Models     Change[[]string]
}

func (up KeyUpdate) empty() bool {
	return up.Name == nil && up.Active == nil && !up.Limit.Set && !up.LimitReset.Set && !up.Models.Set
}

// keyColumns reads a key. In every query that uses it, $1 is the store's
// clock: a key's usage counts only while its window is the current one.
const keyColumns = `id, user_id, kind, name, prefix, active, created_at, expires_at, last_used_at,
	spend_limit, limit_reset, models, held,
	CASE WHEN window_start = key_window_start(limit_reset, $1) THEN window_usage ELSE 0 END AS usage`

// CreateKey validates in and creates a key of kind on the account.
func (s *Store) CreateKey(ctx context.Context, userID int64, kind apikey.Kind, in KeyInput) (CreatedKey, error) {
	name, err := normalizeKeyName(in.Name)
	if err != nil {
		return CreatedKey{}, err
	}
	now := s.now()
	expires, err := normalizeExpiry(in.ExpiresAt, now)
	if err != nil {
		return CreatedKey{}, err
	}
	if err := validateLimits(kind, in.Limit, in.LimitReset, in.Models); err != nil {
		return CreatedKey{}, err
	}
	secret, err := apikey.Generate(kind)
	if err != nil {
		return CreatedKey{}, err
	}
	k := CreatedKey{Secret: secret}
	err = s.db.GetContext(ctx, &k.Key, `
		INSERT INTO api_keys (user_id, kind, name, prefix, digest, expires_at, spend_limit, limit_reset, models, window_start)
		VALUES ($2, $3, $4, $5, $6, $7, $8, $9, $10, key_window_start($9, $1))
		RETURNING `+keyColumns,
		now, userID, kind, name, apikey.Prefix(secret), apikey.Digest(secret), expires, in.Limit, in.LimitReset, modelArray(in.Models))
	return k, err
}

// ListKeys returns the account's keys of kind, newest first.
func (s *Store) ListKeys(ctx context.Context, userID int64, kind apikey.Kind) ([]Key, error) {
	keys := []Key{}
	err := s.db.SelectContext(ctx, &keys, `
		SELECT `+keyColumns+` FROM api_keys
		WHERE user_id = $2 AND kind = $3
		ORDER BY id DESC`, s.now(), userID, kind)
	return keys, err
}

// GetKey returns one of the account's keys.
func (s *Store) GetKey(ctx context.Context, userID int64, kind apikey.Kind, id int64) (Key, error) {
	var k Key
	err := s.db.GetContext(ctx, &k, `SELECT `+keyColumns+` FROM api_keys WHERE user_id = $2 AND kind = $3 AND id = $4`,
		s.now(), userID, kind, id)
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, ErrKeyNotFound
	}
	return k, err
}

// UpdateKey renames, deactivates or reactivates one of the account's keys,
// or changes its spending limits. A new limit_reset starts the window that
// contains now, counting what the key already spent in it.
func (s *Store) UpdateKey(ctx context.Context, userID int64, kind apikey.Kind, id int64, up KeyUpdate) (Key, error) {
	if up.empty() {
		return Key{}, errs.InvalidField("", "empty_update", `Send at least one field to change: "name", "active", "limit", "limit_reset" or "models".`)
	}
	var name *string
	if up.Name != nil {
		n, err := normalizeKeyName(*up.Name)
		if err != nil {
			return Key{}, err
		}
		name = &n
	}
	if err := validateLimits(kind, up.Limit.Value, up.LimitReset.Value, modelsOf(up.Models)); err != nil {
		return Key{}, err
	}
	var models any
	if up.Models.Value != nil {
		models = modelArray(*up.Models.Value)
	}
	var k Key
	err := s.db.GetContext(ctx, &k, `
		UPDATE api_keys SET
			name        = COALESCE($5, name),
			active      = COALESCE($6, active),
			spend_limit = CASE WHEN $7 THEN $8 ELSE spend_limit END,
			limit_reset = CASE WHEN $9 THEN $10 ELSE limit_reset END,
			models      = CASE WHEN $11 THEN $12::text[] ELSE models END,
			window_start = CASE WHEN $9 THEN key_window_start($10, $1) ELSE window_start END,
			window_usage = CASE WHEN $9 THEN (
				SELECT coalesce(sum(u.cost), 0) FROM usage_hourly u
				WHERE u.user_id = api_keys.user_id AND u.key_id = api_keys.id AND u.hour >= key_window_start($10, $1)
			) ELSE window_usage END
		WHERE user_id = $2 AND kind = $3 AND id = $4
		RETURNING `+keyColumns,
		s.now(), userID, kind, id, name, up.Active,
		up.Limit.Set, up.Limit.Value, up.LimitReset.Set, up.LimitReset.Value, up.Models.Set, models)
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, ErrKeyNotFound
	}
	return k, err
}

// DeleteKey removes one of the account's keys for good.
func (s *Store) DeleteKey(ctx context.Context, userID int64, kind apikey.Kind, id int64) error {
	res, err := s.db.ExecContext(ctx,
		`DELETE FROM api_keys WHERE user_id = $1 AND kind = $2 AND id = $3`, userID, kind, id)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err == nil && n == 0 {
		return ErrKeyNotFound
	}
	return err
}

// lastUsedEvery bounds how often a key's last use is written: at most once
// a minute per key, so that authenticating stays a read on the hot path.
const lastUsedEvery = time.Minute

// VerifyKey returns the key of kind with this digest, whatever its status:
// the caller checks Status on every request, so that a cached key expires on
// time too. It only reads.
func (s *Store) VerifyKey(ctx context.Context, kind apikey.Kind, digest []byte) (Key, error) {
	var k Key
	err := s.db.GetContext(ctx, &k, `SELECT `+keyColumns+` FROM api_keys WHERE digest = $2 AND kind = $3`, s.now(), digest, kind)
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, ErrUnknownKey
	}
	return k, err
}

// RecordKeyUse sets the key's last use to now, unless it was recorded less
// than a minute ago.
func (s *Store) RecordKeyUse(ctx context.Context, k Key) error {
	if k.LastUsedAt != nil && time.Since(*k.LastUsedAt) < lastUsedEvery {
		return nil
	}
	_, err := s.db.ExecContext(ctx, `
		UPDATE api_keys SET last_used_at = now()
		WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2))`,
		k.ID, int64(lastUsedEvery.Seconds()))
	return err
}

func modelsOf(c Change[[]string]) []string {
	if c.Value == nil {
		return nil
	}
	return *c.Value
}

// modelArray is a key's allow-list as a PostgreSQL array; nil is NULL.
func modelArray(models []string) any {
	if models == nil {
		return nil
	}
	return pq.StringArray(models)
}
