package db

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"modelswitch/db/apikey"
)

// Key is a proxy or billing key as it is stored: never the key itself.
type Key struct {
	ID         int64       `db:"id"`
	Kind       apikey.Kind `db:"kind"`
	Name       string      `db:"name"`
	Prefix     string      `db:"prefix"`
	Active     bool        `db:"active"`
	CreatedAt  time.Time   `db:"created_at"`
	ExpiresAt  *time.Time  `db:"expires_at"`
	LastUsedAt *time.Time  `db:"last_used_at"`
}

// NewKey is a key just created: the only time its secret exists outside the
// client.
type NewKey struct {
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

const keyColumns = `id, kind, name, prefix, active, created_at, expires_at, last_used_at`

// CreateKey validates in and creates a key of kind on the account.
func (s *Store) CreateKey(ctx context.Context, userID int64, kind apikey.Kind, in KeyInput) (NewKey, error) {
	name, err := normalizeKeyName(in.Name)
	if err != nil {
		return NewKey{}, err
	}
	expires, err := normalizeExpiry(in.ExpiresAt, time.Now())
	if err != nil {
		return NewKey{}, err
	}
	secret, err := apikey.Generate(kind)
	if err != nil {
		return NewKey{}, err
	}
	k := NewKey{Secret: secret}
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
		return Key{}, Invalid("", "empty_update", `Send at least one of "name" and "active".`)
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

// AuthenticateKey returns the account of an active, unexpired key of kind
// with this digest, and records its use.
func (s *Store) AuthenticateKey(ctx context.Context, kind apikey.Kind, digest []byte) (int64, error) {
	var row struct {
		ID       int64 `db:"id"`
		UserID   int64 `db:"user_id"`
		Recorded bool  `db:"recorded"`
	}
	err := s.db.GetContext(ctx, &row, `
		SELECT id, user_id, coalesce(last_used_at > now() - make_interval(secs => $3), false) AS recorded
		FROM api_keys
		WHERE digest = $1 AND kind = $2 AND active AND (expires_at IS NULL OR expires_at > now())`,
		digest, kind, int64(lastUsedEvery.Seconds()))
	if errors.Is(err, sql.ErrNoRows) {
		return 0, errUnknownKey
	}
	if err != nil {
		return 0, err
	}
	if !row.Recorded {
		if _, err := s.db.ExecContext(ctx, `UPDATE api_keys SET last_used_at = now() WHERE id = $1`, row.ID); err != nil {
			return 0, err
		}
	}
	return row.UserID, nil
}

var errUnknownKey = &Error{Kind: KindUnauthorized, Code: "invalid_api_key",
	Message: "This key is unknown, inactive, expired or deleted."}
