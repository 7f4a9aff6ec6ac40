package db

// The account's own settings (its sessions, its password, deleting it) and
// forgotten passwords. Every statement names the account in SQL.

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"modelswitch/errs"
)

// PasswordResetTTL is how long a password reset link works.
const PasswordResetTTL = 30 * time.Minute

var (
	ErrSessionNotFound = &errs.Error{Kind: errs.NotFound, Code: "session_not_found",
		Message: "No such session on your account: it may have ended already."}
	ErrWrongPassword = &errs.Error{Kind: errs.Invalid, Code: "wrong_password", Field: "current_password",
		Message: "Your current password is incorrect."}
	ErrConfirmEmail = &errs.Error{Kind: errs.Invalid, Code: "confirmation_mismatch", Field: "email",
		Message: "Type your account's email address, as shown above, to confirm."}
	ErrResetInvalid = &errs.Error{Kind: errs.NotFound, Code: "reset_link_invalid",
		Message: "This password reset link is invalid, expired or already used. Ask for a new one."}
)

// SessionInfo is one live session of an account, as the account sees it:
// named by a handle, never by its id, which is a bearer secret.
type SessionInfo struct {
	Handle     string      `db:"handle"`
	Kind       SessionType `db:"kind"`
	CreatedAt  time.Time   `db:"created_at"`
	LastSeenAt time.Time   `db:"last_seen_at"`
	ExpiresAt  time.Time   `db:"expires_at"`
}

// sessionHandle is SessionHandle in SQL: the first 16 bytes of the id's
// SHA-256, in hex.
const sessionHandle = `left(encode(sha256(convert_to(id, 'UTF8')), 'hex'), 32)`

// SessionHandle names the session with this id in pages and URLs.
func SessionHandle(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:16])
}

// ListSessions returns the account's live sessions, browser and API, most
// recently seen first. A browser session unseen for browserIdle (and the
// lag of its stored sight, SessionSeenEvery) has ended.
func (s *Store) ListSessions(ctx context.Context, userID int64, browserIdle time.Duration) ([]SessionInfo, error) {
	list := []SessionInfo{}
	err := s.auth.SelectContext(ctx, &list, `
		SELECT `+sessionHandle+` AS handle, kind, created_at, last_seen_at, expires_at
		FROM sessions
		WHERE user_id = $1 AND expires_at > now()
		  AND (kind <> 'browser' OR last_seen_at > now() - make_interval(secs => $2))
		ORDER BY last_seen_at DESC, created_at DESC`, userID, int64((browserIdle + SessionSeenEvery).Seconds()))
	return list, err
}

// DeleteSessionByHandle ends one of the account's sessions; a handle that
// names none of them is ErrSessionNotFound.
func (s *Store) DeleteSessionByHandle(ctx context.Context, userID int64, handle string) error {
	if len(handle) != 32 || strings.Trim(handle, "0123456789abcdef") != "" {
		return ErrSessionNotFound
	}
	res, err := s.auth.ExecContext(ctx,
		`DELETE FROM sessions WHERE user_id = $1 AND `+sessionHandle+` = $2`, userID, handle)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err == nil && n == 0 {
		return ErrSessionNotFound
	}
	return err
}

// ChangePassword sets a new password after checking the current one, and
// ends every other session of the account (browser sessions and API tokens)
// and its reset links; keep is the session that asked, which stays. The
// check is throttled as a sign-in is.
func (s *Store) ChangePassword(ctx context.Context, userID int64, current, next, clientIP, keep string) error {
	if current == "" {
		return errs.InvalidField("current_password", "invalid_password", "Enter your current password.")
	}
	if err := validatePassword(next); err != nil {
		return errs.InvalidField("new_password", "invalid_password", "Use a new password of 8 to 256 characters.")
	}
	var row struct {
		Email        string `db:"email"`
		PasswordHash string `db:"password_hash"`
	}
	err := s.auth.GetContext(ctx, &row, `SELECT email, password_hash FROM users WHERE id = $1`, userID)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrSessionEnded
	}
	if err != nil {
		return err
	}
	t := newThrottle(row.Email, clientIP)
	if err := s.count(ctx, t); err != nil {
		return err
	}
	ok, err := checkPassword(ctx, row.PasswordHash, current)
	if err != nil {
		// A busy server checked nothing: the attempt is not held against anyone.
		return cmp.Or(s.uncount(ctx, t), err)
	}
	if !ok {
		return ErrWrongPassword
	}
	if err := s.forgive(ctx, t); err != nil {
		return err
	}
	hash, err := hashPassword(ctx, next)
	if err != nil {
		return err
	}
	return s.auth.withTx(ctx, func(tx *sqlx.Tx) error {
		// Only over the hash just checked: a change that won a race makes
		// the current password typed here wrong.
		res, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = $2 WHERE id = $1 AND password_hash = $3`,
			userID, hash, row.PasswordHash)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return cmp.Or(err, error(ErrWrongPassword))
		}
		return endSessions(ctx, tx, userID, keep)
	})
}

// endSessions ends every session of the account but keep (none when
// empty) and every reset link of it.
func endSessions(ctx context.Context, tx *sqlx.Tx, userID int64, keep string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = $1 AND id <> $2`, userID, keep); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM password_resets WHERE user_id = $1`, userID)
	return err
}

// DeleteAccount deletes the account when confirm is its email (trimmed, in
// any case, as emails are unique regardless of case). Everything of the
// account goes with it through ON DELETE CASCADE, in one statement: its
// sessions, which end at once; its keys, whose deletion notifies every
// replica's key cache (the api_keys trigger fires for cascaded deletes);
// its reset links; and its ledger (balances, entries, hourly usage, holds,
// leases), since no table keeps money rows of a deleted account.
func (s *Store) DeleteAccount(ctx context.Context, userID int64, confirm string) error {
	confirm = strings.TrimSpace(confirm)
	if confirm == "" {
		return ErrConfirmEmail
	}
	res, err := s.auth.ExecContext(ctx, `DELETE FROM users WHERE id = $1 AND lower(email) = lower($2)`, userID, confirm)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err == nil && n == 0 {
		return ErrConfirmEmail
	}
	s.keyChanged(userID, 0)
	return err
}

// PasswordReset is a reset link to send: the account's address and the
// link's token, which is stored only as its SHA-256.
type PasswordReset struct {
	Email string
	Token string
}

// Reset requests are counted per client address and per email, whether an
// account has that email or not, so that a refusal tells nothing either.
const (
	resetWindow         = time.Hour
	maxResetsPerAddr    = 20 // per address and window
	maxResetsPerAccount = 5  // per email and window
)

// RequestPasswordReset makes a reset link for the account with this email.
// With no such account it returns nil and no error, having done the same
// work: one statement that finds no account to insert a link for.
func (s *Store) RequestPasswordReset(ctx context.Context, email, clientIP string) (*PasswordReset, error) {
	email, err := normalizeEmail(email)
	if err != nil {
		return nil, err
	}
	if err := s.countResetRequest(ctx, email, clientIP); err != nil {
		return nil, err
	}
	raw := make([]byte, 32)
	rand.Read(raw) // never fails (crypto/rand)
	token := base64.RawURLEncoding.EncodeToString(raw)
	digest := sha256.Sum256([]byte(token))
	now := s.now()
	var sendTo string
	// Ended links are swept by the database's clock, which tests never move.
	err = s.auth.GetContext(ctx, &sendTo, `
		WITH swept AS (DELETE FROM password_resets WHERE expires_at <= now()),
		     account AS (SELECT id, email FROM users WHERE lower(email) = lower($2)),
		     made AS (
		         INSERT INTO password_resets (digest, user_id, created_at, expires_at)
		         SELECT $1, id, $3, $4 FROM account
		         RETURNING user_id)
		SELECT account.email FROM account JOIN made ON made.user_id = account.id`,
		digest[:], email, now, now.Add(PasswordResetTTL))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &PasswordReset{Email: sendTo, Token: token}, nil
}

// countResetRequest records one reset request against the client's address,
// then against the email, and refuses it as soon as one is over its limit.
func (s *Store) countResetRequest(ctx context.Context, email, clientIP string) error {
	sum := sha256.Sum256([]byte(strings.ToLower(email)))
	for _, scope := range []struct {
		key   string
		limit int
	}{
		{"reset-ip:" + addrKey(clientIP), maxResetsPerAddr},
		{"reset-email:" + hex.EncodeToString(sum[:]), maxResetsPerAccount},
	} {
		retry, err := s.auth.hit(ctx, scope.key, scope.limit, resetWindow)
		if err != nil {
			return err
		}
		if retry > 0 {
			return &errs.Error{Kind: errs.RateLimited, Code: "too_many_resets", RetryAfter: retry,
				Message: fmt.Sprintf("Too many password reset requests. Try again in %d minutes.", int(retry.Minutes())+1)}
		}
	}
	return nil
}

// resetDigest is the stored form of a reset token; ok is false for a
// string that no link ever carried, which needs no query.
func resetDigest(token string) (digest []byte, ok bool) {
	if raw, err := base64.RawURLEncoding.DecodeString(token); err != nil || len(raw) != 32 {
		return nil, false
	}
	sum := sha256.Sum256([]byte(token))
	return sum[:], true
}

// CheckPasswordReset reports ErrResetInvalid unless token is a link that
// still works. It changes nothing: opening a link, as mail scanners do,
// does not use it up.
func (s *Store) CheckPasswordReset(ctx context.Context, token string) error {
	digest, ok := resetDigest(token)
	if !ok {
		return ErrResetInvalid
	}
	var valid bool
	if err := s.auth.GetContext(ctx, &valid,
		`SELECT EXISTS (SELECT 1 FROM password_resets WHERE digest = $1 AND expires_at > $2)`, digest, s.now()); err != nil {
		return err
	}
	if !valid {
		return ErrResetInvalid
	}
	return nil
}

// ResetPassword uses up a reset link: it sets the account's new password
// and ends every session and every other reset link of the account, in one
// transaction, so that the link works once even when sent twice at once.
func (s *Store) ResetPassword(ctx context.Context, token, password string) (User, error) {
	if err := s.CheckPasswordReset(ctx, token); err != nil {
		return User{}, err
	}
	if err := validatePassword(password); err != nil {
		return User{}, err
	}
	hash, err := hashPassword(ctx, password)
	if err != nil {
		return User{}, err
	}
	digest, _ := resetDigest(token)
	var u User
	err = s.auth.withTx(ctx, func(tx *sqlx.Tx) error {
		var userID int64
		err := tx.GetContext(ctx, &userID,
			`DELETE FROM password_resets WHERE digest = $1 AND expires_at > $2 RETURNING user_id`, digest, s.now())
		if errors.Is(err, sql.ErrNoRows) {
			return ErrResetInvalid
		}
		if err != nil {
			return err
		}
		if err := tx.GetContext(ctx, &u,
			`UPDATE users SET password_hash = $2 WHERE id = $1 RETURNING id, email, created_at`, userID, hash); err != nil {
			return err
		}
		return endSessions(ctx, tx, userID, "")
	})
	return u, err
}
