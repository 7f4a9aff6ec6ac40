package db

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"modelswitch/errs"
)

// Sign-in attempts are counted in fixed windows per account and per client
// address, in PostgreSQL so that every replica sees the same counts. A
// successful sign-in forgives its own attempt.
const (
	throttleWindow  = 15 * time.Minute
	maxEmailAttempt = 5  // per account and window
	maxIPAttempt    = 50 // per address and window
)

// throttle names the two counts a sign-in attempt is charged to. The email
// is hashed, so that any input makes a short key.
type throttle struct{ ip, account string }

func newThrottle(email, clientIP string) throttle {
	sum := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(email))))
	return throttle{ip: "ip:" + clientIP, account: "email:" + hex.EncodeToString(sum[:])}
}

// count records one sign-in attempt, first against the address and then
// against the account, and refuses it as soon as one is over its limit; an
// address over its limit charges no account. Counting before the password
// check keeps concurrent guesses from slipping past the limit.
func (s *Store) count(ctx context.Context, t throttle) error {
	for _, scope := range []struct {
		key   string
		limit int
	}{{t.ip, maxIPAttempt}, {t.account, maxEmailAttempt}} {
		var row struct {
			Failures int       `db:"failures"`
			Start    time.Time `db:"window_start"`
			Now      time.Time `db:"now"`
		}
		err := s.db.GetContext(ctx, &row, `
			INSERT INTO login_failures AS f (scope, failures, window_start) VALUES ($1, 1, now())
			ON CONFLICT (scope) DO UPDATE SET
				failures     = CASE WHEN f.window_start <= now() - make_interval(secs => $2) THEN 1 ELSE f.failures + 1 END,
				window_start = CASE WHEN f.window_start <= now() - make_interval(secs => $2) THEN now() ELSE f.window_start END
			RETURNING failures, window_start, now() AS now`, scope.key, throttleWindow.Seconds())
		if err != nil {
			return err
		}
		if row.Failures > scope.limit {
			retry := row.Start.Add(throttleWindow).Sub(row.Now)
			return &errs.Error{Kind: errs.RateLimited, Code: "too_many_attempts", RetryAfter: retry,
				Message: fmt.Sprintf("Too many sign-in attempts. Try again in %d minutes.", int(retry.Minutes())+1)}
		}
	}
	return nil
}

// forgive clears the account's count after a successful sign-in and takes
// this attempt back from the address's count.
func (s *Store) forgive(ctx context.Context, t throttle) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM login_failures WHERE scope = $1`, t.account); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, `
		WITH gone AS (DELETE FROM login_failures WHERE scope = $1 AND failures = 1)
		UPDATE login_failures SET failures = failures - 1 WHERE scope = $1 AND failures > 1`, t.ip)
	return err
}
