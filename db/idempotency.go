package db

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"modelswitch/errs"
)

// Idempotency keys let a client retry a request that creates something (a
// key) and get the first answer back instead of a second key. The store
// keeps each answer sealed: the database holds digests and ciphertext only,
// and opening an answer takes both the server's secret and the client's key.

const (
	// IdempotencyTTL is how long an Idempotency-Key is remembered.
	IdempotencyTTL = 24 * time.Hour
	// idempotencyLease is how long a claim in flight holds its key. Requests
	// end within seconds, so an older claim belongs to a request that died
	// without answering (a crash), and the key may be claimed again.
	idempotencyLease = time.Minute
	// idempotencyPoll is how often a waiting request looks again.
	idempotencyPoll = 25 * time.Millisecond
)

var (
	ErrIdempotencyKeyReused = &errs.Error{Kind: errs.Invalid, Status: 422, Code: "idempotency_key_reused",
		Message: "This Idempotency-Key was already used for a different request. Send a new key with each new request."}
	ErrIdempotencyInProgress = &errs.Error{Kind: errs.Conflict, Code: "idempotency_in_progress", RetryAfter: time.Second,
		Message: "A request with this Idempotency-Key is still in progress. Retry in a second to get its answer."}
)

// IdempotencyKey is one use of a client's key: an Idempotency-Key header or
// a dashboard form's one-time token.
type IdempotencyKey struct {
	UserID int64
	// Scope separates keys within the account: "api", or one browser
	// session's forms. Together with Value it derives the row's keys.
	Scope string
	// Value is the client's key. It never reaches the database.
	Value string
	// Request is what was asked (method, path, body): the same key with
	// another request is refused.
	Request []byte
	// TTL is how long the answer is kept; IdempotencyTTL when zero.
	TTL time.Duration
	// Wait makes a request wait for one in flight with the same key and
	// then get its answer, instead of ErrIdempotencyInProgress at once.
	Wait bool
}

// Replay is the first answer given to a key.
type Replay struct {
	Status  int
	Payload []byte
}

// IdempotencyClaim is a key that this request holds while it does the work:
// Save its answer when it succeeded, Release it when it did not.
type IdempotencyClaim struct {
	s      *Store
	userID int64
	digest []byte
	seal   []byte
	at     time.Time // when the claim was made: it tells this claim from a later one
}

// WithIdempotencySecret is the same store with the secret that idempotency
// keys are derived from (a key of their own, derived from SECRET_KEY).
func (s *Store) WithIdempotencySecret(secret []byte) *Store {
	c := *s
	c.idempotencySecret = secret
	return &c
}

// derive gives a key its digest and its sealing key, each an HMAC of the
// scope and the client's key under the store's secret.
func (s *Store) derive(k IdempotencyKey) (digest, seal []byte, err error) {
	if len(s.idempotencySecret) == 0 {
		return nil, nil, errors.New("db: idempotency keys need WithIdempotencySecret")
	}
	data := []byte(k.Scope + "\x00" + k.Value)
	return mac(s.idempotencySecret, "digest", data), mac(s.idempotencySecret, "seal", data), nil
}

// ClaimIdempotencyKey starts a request with a key. The first request with it
// gets a claim and does the work; a later one gets the first answer to send
// again. A request different from the first → ErrIdempotencyKeyReused; the
// first still in flight → ErrIdempotencyInProgress, or with Wait its answer
// once it has one (or the claim, when it failed and let go).
func (s *Store) ClaimIdempotencyKey(ctx context.Context, k IdempotencyKey) (*IdempotencyClaim, *Replay, error) {
	digest, seal, err := s.derive(k)
	if err != nil {
		return nil, nil, err
	}
	ttl := k.TTL
	if ttl <= 0 {
		ttl = IdempotencyTTL
	}
	fingerprint := mac(seal, "request", k.Request)
	var poll *time.Timer
	for {
		// Microseconds, as PostgreSQL keeps them: the claim's time names it.
		now := s.now().UTC().Truncate(time.Microsecond)
		var claimed bool
		err := s.db.GetContext(ctx, &claimed, `
			INSERT INTO idempotency_keys AS i (user_id, digest, fingerprint, created_at, expires_at)
			VALUES ($1, $2, $3, $4::timestamptz, $4::timestamptz + make_interval(secs => $5))
			ON CONFLICT (user_id, digest) DO UPDATE SET
				fingerprint = EXCLUDED.fingerprint, status = NULL, response = NULL,
				created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
			WHERE i.expires_at <= $4::timestamptz
			   OR (i.status IS NULL AND i.created_at <= $4::timestamptz - make_interval(secs => $6))
			RETURNING true`,
			k.UserID, digest, fingerprint, now, ttl.Seconds(), idempotencyLease.Seconds())
		if err == nil {
			return &IdempotencyClaim{s: s, userID: k.UserID, digest: digest, seal: seal, at: now}, nil, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return nil, nil, err
		}
		var row struct {
			Fingerprint []byte `db:"fingerprint"`
			Status      *int   `db:"status"`
			Response    []byte `db:"response"`
		}
		err = s.db.GetContext(ctx, &row, `
			SELECT fingerprint, status, response FROM idempotency_keys
			WHERE user_id = $1 AND digest = $2`, k.UserID, digest)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			continue // released or swept since: claim it again
		case err != nil:
			return nil, nil, err
		case !hmac.Equal(row.Fingerprint, fingerprint):
			return nil, nil, ErrIdempotencyKeyReused
		case row.Status != nil:
			payload, err := open(seal, k.UserID, digest, row.Response)
			if err != nil {
				return nil, nil, err
			}
			return nil, &Replay{Status: *row.Status, Payload: payload}, nil
		case !k.Wait:
			return nil, nil, ErrIdempotencyInProgress
		}
		if poll == nil {
			poll = time.NewTimer(idempotencyPoll)
			defer poll.Stop()
		} else {
			poll.Reset(idempotencyPoll)
		}
		select {
		case <-ctx.Done():
			return nil, nil, ErrIdempotencyInProgress
		case <-poll.C:
		}
	}
}

// Save keeps the answer to the claimed key, sealed, until the key expires.
func (c *IdempotencyClaim) Save(ctx context.Context, status int, payload []byte) error {
	sealed, err := sealAnswer(c.seal, c.userID, c.digest, payload)
	if err != nil {
		return err
	}
	_, err = c.s.db.ExecContext(ctx, `
		UPDATE idempotency_keys SET status = $4, response = $5
		WHERE user_id = $1 AND digest = $2 AND created_at = $3 AND status IS NULL`,
		c.userID, c.digest, c.at, status, sealed)
	return err
}

// Release lets go of the claimed key after the request failed: it did
// nothing, so a retry with the same key may do the work.
func (c *IdempotencyClaim) Release(ctx context.Context) error {
	_, err := c.s.db.ExecContext(ctx, `
		DELETE FROM idempotency_keys
		WHERE user_id = $1 AND digest = $2 AND created_at = $3 AND status IS NULL`,
		c.userID, c.digest, c.at)
	return err
}

// DeleteExpiredIdempotencyKeys removes the keys past their time, and
// reports how many went.
func (s *Store) DeleteExpiredIdempotencyKeys(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE expires_at <= $1`, s.now())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func mac(key []byte, purpose string, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write(data)
	return m.Sum(nil)
}

// additionalData binds a sealed answer to its row: moved to another account
// or key, it does not open.
func additionalData(userID int64, digest []byte) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(userID)), digest...)
}

// sealAnswer encrypts an answer with AES-256-GCM: a random nonce, then the
// ciphertext.
func sealAnswer(key []byte, userID int64, digest, payload []byte) ([]byte, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return gcm.Seal(nonce, nonce, payload, additionalData(userID, digest)), nil
}

func open(key []byte, userID int64, digest, sealed []byte) ([]byte, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < gcm.NonceSize() {
		return nil, errors.New("db: sealed answer too short")
	}
	payload, err := gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], additionalData(userID, digest))
	if err != nil {
		return nil, fmt.Errorf("db: open a sealed answer: %w", err)
	}
	return payload, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
