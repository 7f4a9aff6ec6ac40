package db

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"time"
)

// SessionType separates API sessions (JWTs) from browser cookie sessions.
type SessionType string

const (
	APISession     SessionType = "api"
	BrowserSession SessionType = "browser"
)

// Session is a signed-in session that the server can revoke.
type Session struct {
	ID        string    `db:"id"`
	UserID    int64     `db:"user_id"`
	ExpiresAt time.Time `db:"expires_at"`
}

// CreateSession starts a session with a fresh random id that ends after ttl.
func (s *Store) CreateSession(ctx context.Context, userID int64, kind SessionType, ttl time.Duration) (Session, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return Session{}, err
	}
	var sess Session
	err := s.auth.GetContext(ctx, &sess, `
		INSERT INTO sessions (id, user_id, kind, expires_at)
		VALUES ($1, $2, $3, now() + make_interval(secs => $4))
		RETURNING id, user_id, expires_at`,
		base64.RawURLEncoding.EncodeToString(raw), userID, kind, int64(ttl.Seconds()))
	return sess, err
}

// SessionSeenEvery is how stale a session's last sight may grow before a
// request writes it again: most page views then write nothing. The stored
// sight may lag the last request by this much, so a session ends between
// its idle timeout and this much later, never before.
const SessionSeenEvery = time.Minute

// TouchSession returns the user of a live session and marks it as seen.
// A session unseen for longer than idle (when idle > 0), past its expiry or
// deleted has ended.
func (s *Store) TouchSession(ctx context.Context, id string, kind SessionType, idle time.Duration) (int64, error) {
	var userID int64
	var err error
	if idle > 0 {
		// The UPDATE matches no row while the last sight is fresh, and a
		// transaction that changed nothing commits without waiting for the WAL.
		err = s.auth.GetContext(ctx, &userID, `
			WITH live AS (
				SELECT user_id, last_seen_at FROM sessions
				WHERE id = $1 AND kind = $2 AND expires_at > now()
				  AND last_seen_at > now() - make_interval(secs => $3)),
			seen AS (
				UPDATE sessions SET last_seen_at = now() FROM live
				WHERE sessions.id = $1 AND live.last_seen_at < now() - make_interval(secs => $4))
			SELECT user_id FROM live`, id, kind, int64((idle + SessionSeenEvery).Seconds()), int64(SessionSeenEvery.Seconds()))
	} else {
		err = s.auth.GetContext(ctx, &userID,
			`SELECT user_id FROM sessions WHERE id = $1 AND kind = $2 AND expires_at > now()`, id, kind)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrSessionEnded
	}
	return userID, err
}

// DeleteSession ends one session at once.
func (s *Store) DeleteSession(ctx context.Context, id string) error {
	_, err := s.auth.ExecContext(ctx, `DELETE FROM sessions WHERE id = $1`, id)
	return err
}

// DeleteUserSessions ends every session of an account ("sign out everywhere").
func (s *Store) DeleteUserSessions(ctx context.Context, userID int64) error {
	_, err := s.auth.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = $1`, userID)
	return err
}

// DeleteExpired removes ended sessions and ended rate counts.
func (s *Store) DeleteExpired(ctx context.Context) error {
	if _, err := s.auth.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at <= now()`); err != nil {
		return err
	}
	_, err := s.auth.ExecContext(ctx, `DELETE FROM rate_counts WHERE window_end <= now()`)
	return err
}
