package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"modelswitch/db/money"
	"modelswitch/errs"
)

// The ledger: every movement of an account's money is an entry that is
// never changed, and balances keeps the running totals that the entries add
// up to, and the holds and leases held, in the same transaction (see
// migrations/0002_ledger.sql and 0005_leases.sql). Each write locks the
// account's balances row, so entry ids of one account are in commit order
// and cursor pages never skip or repeat one.
//
// The gateway meters through the Meter (meter.go): leases and batched
// writes. PlaceHold and Settle below hold and charge one request in its own
// transactions: the path of a replica of the previous version during a
// rolling deploy, of tools and tests, and how the sweep releases holds.

// Entry types.
const (
	EntryCredit     = "credit"
	EntryAdjustment = "adjustment"
	EntryUsage      = "usage"
)

// HoldTTL is how long a hold lives without being settled: longer than any
// request may run. The sweep releases holds older than this.
const HoldTTL = 20 * time.Minute

var (
	ErrInsufficientCredits = &errs.Error{Kind: errs.PaymentRequired, Code: "insufficient_credits",
		Message: "Your balance cannot cover this request. Add credits, or lower max_tokens."}
	ErrKeyLimitExceeded = &errs.Error{Kind: errs.PaymentRequired, Code: "key_limit_exceeded",
		Message: "This key's spend limit cannot cover this request. Raise the key's limit, wait for its window to reset, or lower max_tokens."}
	ErrModelNotAllowed = &errs.Error{Kind: errs.Forbidden, Code: "model_not_allowed", Field: "model",
		Message: "This key may not use this model. Add it to the key's models, or use a model the key allows."}
	ErrUserNotFound = &errs.Error{Kind: errs.NotFound, Code: "account_not_found", Field: "email",
		Message: "No account has this email."}
	ErrGenerationNotFound = &errs.Error{Kind: errs.NotFound, Code: "generation_not_found",
		Message: "No generation with this id exists on your account."}
)

// Balance is an account's money: Available = Credits - Usage - Held.
type Balance struct {
	Credits money.USD `db:"credits"`
	Usage   money.USD `db:"usage"`
	Held    money.USD `db:"held"`
}

// Available is what the account can spend now.
func (b Balance) Available() money.USD { return b.Credits - b.Usage - b.Held }

// GetBalance returns the account's totals.
func (s *Store) GetBalance(ctx context.Context, userID int64) (Balance, error) {
	var b Balance
	err := s.db.GetContext(ctx, &b, `SELECT credits, usage, held FROM balances WHERE user_id = $1`, userID)
	return b, err
}

// Credit is credits added to an account, or an adjustment when negative.
type Credit struct {
	Amount    money.USD
	Note      string // required for an adjustment
	Reference string // a payment id: the same reference is added once
}

// AddCredits adds a credit or an adjustment to the account with this email.
// It returns the balance afterwards and whether anything was added: a
// reference seen before adds nothing.
func (s *Store) AddCredits(ctx context.Context, email string, c Credit) (Balance, bool, error) {
	typ, description := EntryCredit, "Credits added"
	switch {
	case c.Amount == 0:
		return Balance{}, false, errs.InvalidField("amount", "invalid_amount", "The amount cannot be zero.")
	case c.Amount < 0 && strings.TrimSpace(c.Note) == "":
		return Balance{}, false, errs.InvalidField("note", "note_required", "A negative amount is an adjustment: say why with --note.")
	case c.Amount < 0:
		typ = EntryAdjustment
	}
	if note := strings.TrimSpace(c.Note); note != "" {
		description = note
	}
	var userID int64
	err := s.db.GetContext(ctx, &userID, `SELECT id FROM users WHERE lower(email) = lower($1)`, strings.TrimSpace(email))
	if errors.Is(err, sql.ErrNoRows) {
		return Balance{}, false, ErrUserNotFound
	}
	if err != nil {
		return Balance{}, false, err
	}
	var ref *string
	if c.Reference != "" {
		ref = &c.Reference
	}
	err = s.withTx(ctx, func(tx *sqlx.Tx) error {
		return s.credit(ctx, tx, userID, typ, c.Amount, description, ref)
	})
	added := !errors.Is(err, errSeenBefore)
	if err != nil && added {
		return Balance{}, false, err
	}
	b, err := s.GetBalance(ctx, userID)
	return b, added, err
}

// errSeenBefore rolls back a credit whose reference was added before.
var errSeenBefore = errors.New("db: credit reference seen before")

// credit writes one credit or adjustment entry, or fails with errSeenBefore
// when its reference was added before (the caller rolls back).
func (s *Store) credit(ctx context.Context, tx *sqlx.Tx, userID int64, typ string, amount money.USD, description string, ref *string) error {
	var after money.USD
	if err := tx.GetContext(ctx, &after,
		`UPDATE balances SET credits = credits + $2 WHERE user_id = $1 RETURNING credits - usage`, userID, amount); err != nil {
		return err
	}
	var id int64
	err := tx.GetContext(ctx, &id, `
		INSERT INTO ledger_entries (user_id, type, amount, balance_after, description, reference, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (user_id, reference) WHERE reference IS NOT NULL DO NOTHING
		RETURNING id`, userID, typ, amount, after, description, ref, s.now())
	if errors.Is(err, sql.ErrNoRows) {
		return errSeenBefore
	}
	return err
}

// Hold is money set aside for one request in flight.
type Hold struct {
	ID     int64     `db:"id"`
	UserID int64     `db:"user_id"`
	KeyID  int64     `db:"key_id"`
	Amount money.USD `db:"amount"`
}

// PlaceHold sets amount aside against the account's balance and the key's
// limit in one transaction, after checking that the key may use model. It
// fails with ErrModelNotAllowed, ErrKeyLimitExceeded or
// ErrInsufficientCredits and then changes nothing. Rows are locked key
// first, then balance, as in every ledger write, so writes never deadlock.
func (s *Store) PlaceHold(ctx context.Context, userID, keyID int64, model string, amount money.USD) (Hold, error) {
	if amount < 0 {
		return Hold{}, fmt.Errorf("hold of a negative amount %s", amount)
	}
	h := Hold{UserID: userID, KeyID: keyID, Amount: amount}
	now := s.now()
	err := s.withTx(ctx, func(tx *sqlx.Tx) error {
		var ok bool
		err := tx.GetContext(ctx, &ok, `
			UPDATE api_keys SET
				window_usage = CASE WHEN window_start = key_window_start(limit_reset, $3) THEN window_usage ELSE 0 END,
				window_start = key_window_start(limit_reset, $3),
				held = held + $4
			WHERE id = $1 AND user_id = $2 AND kind = 'proxy'
			  AND (models IS NULL OR $5 = ANY (models))
			  AND (spend_limit IS NULL OR spend_limit
			       - CASE WHEN window_start = key_window_start(limit_reset, $3) THEN window_usage ELSE 0 END
			       - held >= $4)
			RETURNING true`, keyID, userID, now, amount, model)
		if errors.Is(err, sql.ErrNoRows) {
			return s.whyRefused(ctx, tx, userID, keyID, model)
		}
		if err != nil {
			return err
		}
		err = tx.GetContext(ctx, &ok, `
			UPDATE balances SET held = held + $2
			WHERE user_id = $1 AND credits - usage - held >= $2
			RETURNING true`, userID, amount)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrInsufficientCredits
		}
		if err != nil {
			return err
		}
		return tx.GetContext(ctx, &h.ID, `
			INSERT INTO holds (user_id, key_id, amount, expires_at) VALUES ($1, $2, $3, $4) RETURNING id`,
			userID, keyID, amount, now.Add(HoldTTL))
	})
	return h, err
}

// whyRefused tells which check of a hold on the key failed.
func (s *Store) whyRefused(ctx context.Context, tx *sqlx.Tx, userID, keyID int64, model string) error {
	var allowed bool
	err := tx.GetContext(ctx, &allowed, `
		SELECT models IS NULL OR $3 = ANY (models) FROM api_keys WHERE id = $1 AND user_id = $2 AND kind = 'proxy'`,
		keyID, userID, model)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return ErrUnknownKey // deleted since it authenticated the request
	case err != nil:
		return err
	case !allowed:
		return ErrModelNotAllowed
	}
	return ErrKeyLimitExceeded
}

// Usage is what one metered inference produced and cost.
type Usage struct {
	GenerationID string
	Model        string
	InputTokens  int64
	OutputTokens int64
	Estimated    bool // counted from the text: the upstream reported no usage
	Cost         money.USD
	Streamed     bool
	Status       string // completed, client_disconnected, upstream_error
	FinishReason string
	Latency      time.Duration
}

// Settle ends a hold: it releases what was held and, when u is not nil,
// charges u.Cost as one usage entry, even past the hold (the contract
// charges the actual cost). A hold the sweep already released is charged
// all the same.
func (s *Store) Settle(ctx context.Context, h Hold, u *Usage) error {
	now := s.now()
	return s.withTx(ctx, func(tx *sqlx.Tx) error {
		var released money.USD
		err := tx.GetContext(ctx, &released, `DELETE FROM holds WHERE id = $1 AND user_id = $2 RETURNING amount`, h.ID, h.UserID)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		cost := money.USD(0)
		if u != nil {
			cost = u.Cost
		}
		if _, err := tx.ExecContext(ctx, `
			UPDATE api_keys SET
				window_usage = CASE WHEN window_start = key_window_start(limit_reset, $3) THEN window_usage ELSE 0 END + $5,
				window_start = key_window_start(limit_reset, $3),
				held = held - $4
			WHERE id = $1 AND user_id = $2`, h.KeyID, h.UserID, now, released, cost); err != nil {
			return err
		}
		var after money.USD
		if err := tx.GetContext(ctx, &after, `
			UPDATE balances SET held = held - $2, usage = usage + $3 WHERE user_id = $1
			RETURNING credits - usage`, h.UserID, released, cost); err != nil {
			return err
		}
		if u == nil {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO ledger_entries (user_id, type, amount, balance_after, description, created_at,
				key_id, model, generation_id, input_tokens, output_tokens, estimated, streamed, status, finish_reason, latency_ms)
			VALUES ($1, 'usage', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
			h.UserID, -cost, after, u.Model, now, h.KeyID, u.Model, u.GenerationID, u.InputTokens, u.OutputTokens,
			u.Estimated, u.Streamed, u.Status, u.FinishReason, u.Latency.Milliseconds()); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `
			INSERT INTO usage_hourly AS h (user_id, hour, key_id, model, requests, input_tokens, output_tokens, cost)
			VALUES ($1, date_trunc('hour', $2::timestamptz, 'UTC'), $3, $4, 1, $5, $6, $7)
			ON CONFLICT (user_id, hour, key_id, model) DO UPDATE SET
				requests = h.requests + 1, input_tokens = h.input_tokens + $5,
				output_tokens = h.output_tokens + $6, cost = h.cost + $7`,
			h.UserID, now, h.KeyID, u.Model, u.InputTokens, u.OutputTokens, cost)
		return err
	})
}

// ReleaseExpiredHolds releases holds and leases past their expiry (left by a
// process that died mid-request or with leases) and returns how many it
// released. Each replica's meter also sweeps leases, every LeaseTTL/3.
func (s *Store) ReleaseExpiredHolds(ctx context.Context) (int, error) {
	leases, err := s.releaseExpiredLeases(ctx)
	if err != nil {
		return leases, err
	}
	holds, err := s.releaseExpiredHolds(ctx)
	return leases + holds, err
}

func (s *Store) releaseExpiredHolds(ctx context.Context) (int, error) {
	var expired []Hold
	if err := s.db.SelectContext(ctx, &expired, `
		SELECT id, user_id, key_id, amount FROM holds WHERE expires_at <= $1 ORDER BY id LIMIT 1000`, s.now()); err != nil {
		return 0, err
	}
	for _, h := range expired {
		if err := s.Settle(ctx, h, nil); err != nil {
			return 0, err
		}
	}
	return len(expired), nil
}
