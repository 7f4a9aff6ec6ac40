package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
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
	Hint       *string     `db:"hint"` // the key's last four characters; nil for keys made before they were kept
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
	ExpiresAt  Change[time.Time] // nil Value: the key never expires
	Limit      Change[money.USD]
	LimitReset Change[string]
	Models     Change[[]string]
}

func (up KeyUpdate) empty() bool {
	return up.Name == nil && up.Active == nil && !up.ExpiresAt.Set && !up.Limit.Set && !up.LimitReset.Set && !up.Models.Set
}

// keyColumns reads a key. In every query that uses it, $1 is the store's
// clock: a key's usage counts only while its window is the current one.
const keyColumns = `id, user_id, kind, name, prefix, hint, active, created_at, expires_at, last_used_at,
	spend_limit, limit_reset, models, held,
	CASE WHEN window_start = key_window_start(limit_reset, $1) THEN window_usage ELSE 0 END AS usage`

// defaultMaxKeys is the cap when the store's MaxKeys is unset.
const defaultMaxKeys = 1000

// KeyCap is how many keys of each kind one account may have: MaxKeys, or
// 1000 when it is unset.
func (s *Store) KeyCap() int {
	if s.MaxKeys > 0 {
		return s.MaxKeys
	}
	return defaultMaxKeys
}

// keyCapError refuses a key past the cap of its kind.
func keyCapError(kind apikey.Kind, limit int) *errs.Error {
	noun := "API keys"
	if kind == apikey.Billing {
		noun = "billing keys"
	}
	return &errs.Error{Kind: errs.Conflict, Code: "key_limit_reached",
		Message: fmt.Sprintf("This account has reached its limit of %d %s. Delete keys you no longer use, then create this one again.", limit, noun)}
}

// CreateKey validates in and creates a key of kind on the account, unless
// the account already has KeyCap keys of that kind (deleted keys are gone
// and do not count).
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
	release, err := createTurns.take(ctx, turnKey{s.db, userID})
	if err != nil {
		return CreatedKey{}, err
	}
	defer release()
	limit := s.KeyCap()
	k := CreatedKey{Secret: secret}
	err = s.withTx(ctx, func(tx *sqlx.Tx) error {
		// Creates on one account take turns on its row, so that concurrent
		// ones cannot pass the cap together, and ids grow in commit order.
		// NO KEY UPDATE leaves inserts that reference the account unblocked.
		if _, err := tx.ExecContext(ctx, `SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE`, userID); err != nil {
			return err
		}
		var n int
		if err := tx.GetContext(ctx, &n, `
			SELECT count(*) FROM (SELECT 1 FROM api_keys WHERE user_id = $1 AND kind = $2 LIMIT $3) k`,
			userID, kind, limit); err != nil {
			return err
		}
		if n >= limit {
			return keyCapError(kind, limit)
		}
		return tx.GetContext(ctx, &k.Key, `
			INSERT INTO api_keys (user_id, kind, name, prefix, digest, expires_at, spend_limit, limit_reset, models, window_start, hint)
			VALUES ($2, $3, $4, $5, $6, $7, $8, $9, $10, key_window_start($9, $1), $11)
			RETURNING `+keyColumns,
			now, userID, kind, name, apikey.Prefix(secret), apikey.Digest(secret), expires, in.Limit, in.LimitReset, modelArray(in.Models),
			keyHint(secret))
	})
	if err != nil {
		return CreatedKey{}, err
	}
	return k, nil
}

// createTurns lines up key creations per account and pool (a process; tests
// open several), so that a burst on one account waits here, holding no
// connection, rather than on the account's row lock with a connection each.
// The row lock still decides between processes.
var createTurns = turns{m: map[turnKey]*turn{}}

type turns struct {
	mu sync.Mutex
	m  map[turnKey]*turn
}

type turnKey struct {
	pool   *pool
	userID int64
}

type turn struct {
	token chan struct{} // full while a creation runs
	users int           // the one running and those waiting; under turns.mu
}

// take waits for the account's turn, or returns ErrBusy when ctx ends
// first; release ends the turn.
func (t *turns) take(ctx context.Context, k turnKey) (release func(), err error) {
	t.mu.Lock()
	u := t.m[k]
	if u == nil {
		u = &turn{token: make(chan struct{}, 1)}
		t.m[k] = u
	}
	u.users++
	t.mu.Unlock()
	leave := func() {
		t.mu.Lock()
		if u.users--; u.users == 0 {
			delete(t.m, k)
		}
		t.mu.Unlock()
	}
	select {
	case u.token <- struct{}{}:
		return func() { <-u.token; leave() }, nil
	case <-ctx.Done():
		leave()
		return nil, ErrBusy
	}
}

// KeyPage selects a page of an account's keys, newest first.
type KeyPage struct {
	Limit         int   // 1 to KeyCap; 0 for KeyCap
	StartingAfter int64 // a key id: the page starts below it; 0 for the newest
}

// ListKeys returns the account's keys of kind, newest first: at most KeyCap,
// which is every key of an account within the cap.
func (s *Store) ListKeys(ctx context.Context, userID int64, kind apikey.Kind) ([]Key, error) {
	keys, _, err := s.ListKeysPage(ctx, userID, kind, KeyPage{})
	return keys, err
}

// ListKeysPage returns a page of the account's keys of kind, newest first,
// and whether more follow. Pages are keyed by id, which grows in commit
// order per account (CreateKey), so keys created meanwhile never shift one.
func (s *Store) ListKeysPage(ctx context.Context, userID int64, kind apikey.Kind, p KeyPage) ([]Key, bool, error) {
	limit := p.Limit
	if limit <= 0 || limit > s.KeyCap() {
		limit = s.KeyCap()
	}
	after := p.StartingAfter
	if after <= 0 {
		after = math.MaxInt64
	}
	keys := []Key{}
	err := s.db.SelectContext(ctx, &keys, `
		SELECT `+keyColumns+` FROM api_keys
		WHERE user_id = $2 AND kind = $3 AND id < $4
		ORDER BY id DESC
		LIMIT $5`, s.now(), userID, kind, after, limit+1)
	if err != nil {
		return nil, false, err
	}
	more := len(keys) > limit
	if more {
		keys = keys[:limit]
	}
	return keys, more, nil
}

// KeysPerPage is how many keys a page of the dashboard lists.
const KeysPerPage = 50

// How a dashboard list of keys is sorted, newest first either way.
const (
	SortCreated  = "created"   // by creation (id, which grows in commit order)
	SortLastUsed = "last_used" // by last use; keys never used come last
)

// keyOrders are the ORDER BY clauses of the sorts, each backed by an index:
// api_keys_user_kind_id_idx and api_keys_user_kind_last_used_idx.
var keyOrders = map[string]string{
	SortCreated:  `ORDER BY id DESC`,
	SortLastUsed: `ORDER BY last_used_at DESC NULLS LAST, id DESC`,
}

// KeyQuery selects a page of an account's keys for the dashboard.
type KeyQuery struct {
	// Search matches a part of the name in any case, the start of the
	// prefix ("ms-abc1", "abc1"), the last four characters ("wxyz"), or
	// both as the dashboard shows them ("ms-abc1…wxyz"). Empty: every key.
	Search string
	Sort   string // SortCreated (also for "") or SortLastUsed
	Page   int    // from 1; a page past the last is the last
}

// KeyList is a page of an account's keys and where it lies in the list.
type KeyList struct {
	Keys  []Key
	Total int // keys that match, on all pages
	Page  int // the page returned, from 1
	Pages int // pages in all; at least 1
}

const maxSearchLen = 100

// identityRE is a key as the dashboard shows it: prefix, ellipsis, last four.
var identityRE = regexp.MustCompile(`^(m[sk]-[0-9A-Za-z]{4})(?:…|\.\.\.)([0-9A-Za-z]{4})$`)

// normalizeKeyQuery checks a list query and fills in its defaults.
func normalizeKeyQuery(q KeyQuery) (KeyQuery, error) {
	q.Search = strings.TrimSpace(q.Search)
	switch {
	case !utf8.ValidString(q.Search) || strings.ContainsFunc(q.Search, unicode.IsControl):
		return q, errs.InvalidField("q", "invalid_q", "Search for plain text: a name, a prefix like ms-abc1, or the last four characters of a key.")
	case utf8.RuneCountInString(q.Search) > maxSearchLen:
		return q, errs.InvalidField("q", "invalid_q", "Search for at most 100 characters.")
	case len(q.Search) == apikey.Len && (strings.HasPrefix(q.Search, apikey.Proxy.Tag()) || strings.HasPrefix(q.Search, apikey.Billing.Tag())):
		// A whole key would travel in a URL: refuse it, and never echo it.
		return q, errs.InvalidField("q", "whole_key",
			"That looks like a whole key, which should never go into a search or a URL. Search by its prefix (ms-abc1) or its last four characters instead.")
	}
	if q.Sort == "" {
		q.Sort = SortCreated
	}
	if _, ok := keyOrders[q.Sort]; !ok {
		return q, errs.InvalidField("sort", "invalid_sort", `Sort by "created" or "last_used".`)
	}
	if q.Page == 0 {
		q.Page = 1
	}
	if q.Page < 1 {
		return q, errs.InvalidField("page", "invalid_page", "Pages are numbered from 1.")
	}
	// The list is capped per account; any page this far is past its end.
	q.Page = min(q.Page, 1<<20)
	return q, nil
}

// ListKeysQuery returns a page of KeysPerPage of the account's keys of kind
// that match q.Search, sorted by q.Sort. An account's keys are capped
// (KeyCap), so a search scans at most that many rows of one account,
// through the index on (user_id, kind).
func (s *Store) ListKeysQuery(ctx context.Context, userID int64, kind apikey.Kind, q KeyQuery) (KeyList, error) {
	q, err := normalizeKeyQuery(q)
	if err != nil {
		return KeyList{}, err
	}
	var prefix, hint string
	if m := identityRE.FindStringSubmatch(q.Search); m != nil {
		prefix, hint = m[1]+"xxxx", m[2]
	}
	const matches = `user_id = $2 AND kind = $3 AND ($4 = ''
			OR strpos(lower(name), lower($4)) > 0
			OR starts_with(prefix, $4) OR starts_with(substr(prefix, 4), $4)
			OR hint = $4 OR (prefix = $5 AND hint = $6))`
	// The total is counted apart, so that only the page's own rows are
	// read in full: a window count read every match.
	query := `
		SELECT ` + keyColumns + `, (SELECT count(*) FROM api_keys WHERE ` + matches + `) AS total
		FROM api_keys WHERE ` + matches + `
		` + keyOrders[q.Sort] + `
		LIMIT $7 OFFSET $8`
	now := s.now()
	page := func(n, limit int) ([]listedKey, error) {
		rows := []listedKey{}
		err := s.db.SelectContext(ctx, &rows, query, now, userID, kind, q.Search, prefix, hint, limit, (n-1)*KeysPerPage)
		return rows, err
	}
	rows, err := page(q.Page, KeysPerPage)
	if err == nil && len(rows) == 0 && q.Page > 1 {
		// Past the end (the last keys were deleted, or a stale link): the
		// first row tells how many match, and so which page is the last.
		var first []listedKey
		if first, err = page(1, 1); err == nil && len(first) > 0 {
			q.Page = (first[0].Total + KeysPerPage - 1) / KeysPerPage
			rows, err = page(q.Page, KeysPerPage)
		} else {
			q.Page = 1
		}
	}
	if err != nil {
		return KeyList{}, err
	}
	list := KeyList{Keys: make([]Key, len(rows)), Page: q.Page, Pages: 1}
	for i, r := range rows {
		list.Keys[i] = r.Key
		list.Total = r.Total
	}
	if list.Total > 0 {
		list.Pages = (list.Total + KeysPerPage - 1) / KeysPerPage
	}
	return list, nil
}

// listedKey is a key with the number of keys that matched its query.
type listedKey struct {
	Key
	Total int `db:"total"`
}

// keyHint is what the dashboard shows of a key besides its prefix: its last
// four characters, which belong to its checksum.
func keyHint(secret string) string { return secret[len(secret)-4:] }

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
// changes or clears its expiry, or changes its spending limits. A new limit_reset starts the window that
// contains now, counting what the key already spent in it.
func (s *Store) UpdateKey(ctx context.Context, userID int64, kind apikey.Kind, id int64, up KeyUpdate) (Key, error) {
	if up.empty() {
		msg := `Send at least one field to change: "name", "active" or "expires_at".`
		if kind == apikey.Proxy {
			msg = `Send at least one field to change: "name", "active", "expires_at", "limit", "limit_reset" or "models".`
		}
		return Key{}, errs.InvalidField("", "empty_update", msg)
	}
	now := s.now()
	// The same rule as on create: a new expiry is in the future.
	expires, err := normalizeExpiry(up.ExpiresAt.Value, now)
	if err != nil {
		return Key{}, err
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
	err = s.withTx(ctx, func(tx *sqlx.Tx) error {
		// Lock the row first: a meter batch writing the key's usage holds
		// it, and the recount below must run after that batch committed,
		// in a statement that sees its usage_hourly rows.
		if _, err := tx.ExecContext(ctx, `SELECT 1 FROM api_keys WHERE user_id = $1 AND kind = $2 AND id = $3 FOR UPDATE`,
			userID, kind, id); err != nil {
			return err
		}
		return tx.GetContext(ctx, &k, `
		UPDATE api_keys SET
			name        = COALESCE($5, name),
			active      = COALESCE($6, active),
			expires_at  = CASE WHEN $13 THEN $14 ELSE expires_at END,
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
			now, userID, kind, id, name, up.Active,
			up.Limit.Set, up.Limit.Value, up.LimitReset.Set, up.LimitReset.Value, up.Models.Set, models,
			up.ExpiresAt.Set, expires)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, ErrKeyNotFound
	}
	if err == nil {
		s.keyChanged(userID, k.ID)
	}
	return k, err
}

// DeleteKey removes one of the account's keys for good.
func (s *Store) DeleteKey(ctx context.Context, userID int64, kind apikey.Kind, id int64) error {
	_, err := s.DeleteKeyReturning(ctx, userID, kind, id)
	return err
}

// DeleteKeyReturning is DeleteKey that also returns the key as it was, so
// that the dashboard can name what it deleted.
func (s *Store) DeleteKeyReturning(ctx context.Context, userID int64, kind apikey.Kind, id int64) (Key, error) {
	var k Key
	err := s.db.GetContext(ctx, &k, `DELETE FROM api_keys WHERE user_id = $2 AND kind = $3 AND id = $4 RETURNING `+keyColumns,
		s.now(), userID, kind, id)
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, ErrKeyNotFound
	}
	if err == nil {
		s.keyChanged(userID, k.ID)
	}
	return k, err
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
		WHERE id = $1 AND user_id = $3 AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2))`,
		k.ID, int64(lastUsedEvery.Seconds()), k.UserID)
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
