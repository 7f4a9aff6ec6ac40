package db

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"modelswitch/db/apikey"
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
	Name      string
	ExpiresAt *time.Time
}

// KeyUpdate changes the fields that are set and leaves the others.
type KeyUpdate struct {
	Name   *string
	Active *bool
}

const keyColumns = `id, user_id, kind, name, prefix, active, created_at, expires_at, last_used_at`

// CreateKey validates in and creates a key of kind on the account.
func (s *Store) CreateKey(ctx context.Context, userID int64, kind apikey.Kind, in KeyInput) (CreatedKey, error) {
	name, err := normalizeKeyName(in.Name)
	if err != nil {
		return CreatedKey{}, err
	}
	expires, err := normalizeExpiry(in.ExpiresAt, time.Now())
	if err != nil {
		return CreatedKey{}, err
	}
	secret, err := apikey.Generate(kind)
	if err != nil {
		return CreatedKey{}, err
	}
	k := CreatedKey{Secret: secret}
	err = s.db.GetContext(ctx, &k.Key, `
		INSERT INTO api_keys (user_id, kind, name, prefix, digest, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6)
		RETURNING `+keyColumns,
		userID, kind, name, apikey.Prefix(secret), apikey.Digest(secret), expires)
	return k, err
}

// ListKeys returns the account's keys of kind, newest first.
func (s *Store) ListKeys(ctx context.Context, userID int64, kind apikey.Kind) ([]Key, error) {
	keys := []Key{}
	err := s.db.SelectContext(ctx, &keys, `
		SELECT `+keyColumns+` FROM api_keys
		WHERE user_id = $1 AND kind = $2
		ORDER BY id DESC`, userID, kind)
	return keys, err
}

// UpdateKey renames, deactivates or reactivates one of the account's keys.
func (s *Store) UpdateKey(ctx context.Context, userID int64, kind apikey.Kind, id int64, up KeyUpdate) (Key, error) {
	if up.Name == nil && up.Active == nil {
		return Key{}, errs.InvalidField("", "empty_update", `Send at least one of "name" and "active".`)
	}
	var name *string
	if up.Name != nil {
		n, err := normalizeKeyName(*up.Name)
		if err != nil {
			return Key{}, err
		}
		name = &n
	}
	var k Key
	err := s.db.GetContext(ctx, &k, `
		UPDATE api_keys SET name = COALESCE($4, name), active = COALESCE($5, active)
		WHERE user_id = $1 AND kind = $2 AND id = $3
		RETURNING `+keyColumns, userID, kind, id, name, up.Active)
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
	err := s.db.GetContext(ctx, &k, `SELECT `+keyColumns+` FROM api_keys WHERE digest = $1 AND kind = $2`, digest, kind)
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
