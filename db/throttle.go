package db

import (
	"context"
	"fmt"
	"time"
)

// Sign-in attempts are counted in fixed windows per account and per client
// address, in PostgreSQL so that every replica sees the same counts. A
// successful sign-in forgives its own attempt.
const (
	throttleWindow  = 15 * time.Minute
	maxEmailAttempt = 5  // per account and window
	maxIPAttempt    = 50 // per address and window
)

// countAttempt records one sign-in attempt in each scope and refuses it when
// a scope is over its limit. Counting before the password check keeps
// concurrent guesses from slipping past the limit.
func (s *Store) countAttempt(ctx context.Context, scopes []string) error {
	window := fmt.Sprintf("%d seconds", int(throttleWindow.Seconds()))
	for i, scope := range scopes {
		limit := maxEmailAttempt
		if i > 0 {
			limit = maxIPAttempt
		}
		var row struct {
			Failures int       `db:"failures"`
			Start    time.Time `db:"window_start"`
			Now      time.Time `db:"now"`
		}
		err := s.db.GetContext(ctx, &row, `
			INSERT INTO login_failures AS f (scope, failures, window_start) VALUES ($1, 1, now())
			ON CONFLICT (scope) DO UPDATE SET
				failures     = CASE WHEN f.window_start <= now() - $2::interval THEN 1 ELSE f.failures + 1 END,
				window_start = CASE WHEN f.window_start <= now() - $2::interval THEN now() ELSE f.window_start END
			RETURNING failures, window_start, now() AS now`, scope, window)
		if err != nil {
			return err
		}
		if row.Failures > limit {
			retry := row.Start.Add(throttleWindow).Sub(row.Now)
			return &Error{Kind: KindRateLimited, Code: "too_many_attempts", RetryAfter: retry,
				Message: fmt.Sprintf("Too many sign-in attempts. Try again in %d minutes.", int(retry.Minutes())+1)}
		}
	}
	return nil
}

// forgiveAttempt clears the account's count after a successful sign-in and
// takes this attempt back from the address's count.
func (s *Store) forgiveAttempt(ctx context.Context, scopes []string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM login_failures WHERE scope = $1`, scopes[0]); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx,
		`UPDATE login_failures SET failures = failures - 1 WHERE scope = $1 AND failures > 1`, scopes[1])
	return err
}
