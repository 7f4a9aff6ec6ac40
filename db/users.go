package db

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"modelswitch/errs"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// User is an account.
type User struct {
	ID        int64     `db:"id"`
	Email     string    `db:"email"`
	CreatedAt time.Time `db:"created_at"`
}

// CreateUser validates and registers a new account. Sign-ups are throttled
// per client address (see throttle.go); invalid input is refused before it
// counts.
func (s *Store) CreateUser(ctx context.Context, email, password, clientIP string) (User, error) {
	email, err := normalizeEmail(email)
	if err != nil {
		return User{}, err
	}
	if err := validatePassword(password); err != nil {
		return User{}, err
	}
	scope, err := s.countSignup(ctx, clientIP)
	if err != nil {
		return User{}, err
	}
	hash, err := hashPassword(ctx, password)
	if err != nil {
		// Busy: nothing was done, so the sign-up is not held against the address.
		if err := s.takeBack(ctx, nil, []string{scope}); err != nil {
			return User{}, err
		}
		return User{}, err
	}
	var u User
	err = s.auth.withTx(ctx, func(tx *sqlx.Tx) error {
		err := tx.GetContext(ctx, &u,
			`INSERT INTO users (email, password_hash) VALUES ($1, $2)
			 RETURNING id, email, created_at`, email, hash)
		if isUniqueViolation(err, "users_email_lower_key") {
			return ErrEmailTaken
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO balances (user_id) VALUES ($1)`, u.ID); err != nil {
			return err
		}
		if s.SignupCredits > 0 {
			err = s.credit(ctx, tx, u.ID, EntryCredit, s.SignupCredits, "Sign-up credits", nil)
		}
		return err
	})
	if err != nil {
		return User{}, err
	}
	return u, nil
}

// CheckPassword returns the account an email and password belong to.
// Attempts are throttled per account and address, per account and per
// address (see throttle.go); an unknown email and a wrong password get the
// same error in the same time.
func (s *Store) CheckPassword(ctx context.Context, email, password, clientIP string) (User, error) {
	t := newThrottle(email, clientIP)
	if err := s.count(ctx, t); err != nil {
		return User{}, err
	}
	var row struct {
		User
		PasswordHash string `db:"password_hash"`
	}
	email, err := normalizeEmail(email)
	if err == nil {
		err = s.auth.GetContext(ctx, &row,
			`SELECT id, email, created_at, password_hash FROM users WHERE lower(email) = lower($1)`, email)
	}
	known := err == nil
	if errs.Is(err, errs.Invalid) || errors.Is(err, sql.ErrNoRows) {
		row.PasswordHash = dummyHash
	} else if err != nil {
		return User{}, err
	}
	ok, err := checkPassword(ctx, row.PasswordHash, password)
	if err != nil {
		// A busy server checked nothing: the attempt is not held against anyone.
		if err := s.uncount(ctx, t); err != nil {
			return User{}, err
		}
		return User{}, err
	}
	if !ok || !known {
		return User{}, ErrBadCredentials
	}
	if err := s.forgive(ctx, t); err != nil {
		return User{}, err
	}
	return row.User, nil
}

func isUniqueViolation(err error, constraint string) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && pqErr.Code == "23505" && pqErr.Constraint == constraint
}
