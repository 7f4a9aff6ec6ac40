package db

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"modelswitch/db/money"
)

// Entry is one ledger entry as the transactions list shows it.
type Entry struct {
	ID           int64     `db:"id"`
	Type         string    `db:"type"`
	Amount       money.USD `db:"amount"`
	BalanceAfter money.USD `db:"balance_after"`
	Description  string    `db:"description"`
	CreatedAt    time.Time `db:"created_at"`
	KeyID        *int64    `db:"key_id"`
	Model        *string   `db:"model"`
	GenerationID *string   `db:"generation_id"`
	InputTokens  *int64    `db:"input_tokens"`
	OutputTokens *int64    `db:"output_tokens"`
}

// EntryFilter selects a page of an account's entries, newest first.
type EntryFilter struct {
	Limit         int    // 1 to 100
	StartingAfter int64  // an entry id: the page starts below it; 0 for the newest
	Type          string // "" for every type
	KeyID         int64  // 0 for every key
}

// ListEntries returns a page of the account's entries, newest first, and
// whether more follow. Pages are keyed by id, which grows in commit order per
// account, so entries arriving meanwhile never shift a page.
func (s *Store) ListEntries(ctx context.Context, userID int64, f EntryFilter) ([]Entry, bool, error) {
	entries := []Entry{}
	err := s.db.SelectContext(ctx, &entries, `
		SELECT id, type, amount, balance_after, description, created_at, key_id, model, generation_id, input_tokens, output_tokens
		FROM ledger_entries
		WHERE user_id = $1
		  AND ($2 = 0 OR id < $2)
		  AND ($3 = '' OR type = $3)
		  AND ($4 = 0 OR key_id = $4)
		ORDER BY id DESC
		LIMIT $5`, userID, f.StartingAfter, f.Type, f.KeyID, f.Limit+1)
	if err != nil {
		return nil, false, err
	}
	more := len(entries) > f.Limit
	if more {
		entries = entries[:f.Limit]
	}
	return entries, more, nil
}

// Generation is one metered inference.
type Generation struct {
	ID           string    `db:"generation_id"`
	Model        string    `db:"model"`
	KeyID        int64     `db:"key_id"`
	Streamed     bool      `db:"streamed"`
	Status       string    `db:"status"`
	InputTokens  int64     `db:"input_tokens"`
	OutputTokens int64     `db:"output_tokens"`
	Estimated    bool      `db:"estimated"`
	Cost         money.USD `db:"cost"`
	LatencyMs    int64     `db:"latency_ms"`
	FinishReason string    `db:"finish_reason"`
	CreatedAt    time.Time `db:"created_at"`
}

// GetGeneration returns one of the account's generations.
func (s *Store) GetGeneration(ctx context.Context, userID int64, id string) (Generation, error) {
	var g Generation
	err := s.db.GetContext(ctx, &g, `
		SELECT generation_id, model, key_id, streamed, status, input_tokens, output_tokens, estimated,
			-amount AS cost, latency_ms, finish_reason, created_at
		FROM ledger_entries WHERE user_id = $1 AND generation_id = $2`, userID, id)
	if errors.Is(err, sql.ErrNoRows) {
		return Generation{}, ErrGenerationNotFound
	}
	return g, err
}

// UsageQuery selects usage to add up. Usage is kept per hour, so From and
// To are whole hours (the caller widens them).
type UsageQuery struct {
	From, To time.Time
	Bucket   string // "day" or "hour"
	ByKey    bool
	ByModel  bool
	KeyID    int64  // 0 for every key
	Model    string // "" for every model
}

// UsageRow is the usage of one bucket (and key and model, when grouped).
type UsageRow struct {
	Start        time.Time `db:"start"`
	KeyID        int64     `db:"key_id"`
	Model        string    `db:"model"`
	Requests     int64     `db:"requests"`
	InputTokens  int64     `db:"input_tokens"`
	OutputTokens int64     `db:"output_tokens"`
	Cost         money.USD `db:"cost"`
}

// SumUsage adds up the account's usage per bucket, oldest first; buckets
// with no usage are left out.
func (s *Store) SumUsage(ctx context.Context, userID int64, q UsageQuery) ([]UsageRow, error) {
	// Only these fixed fragments vary; every value is a parameter.
	keyCol, modelCol, groups := "0", "''", []string{"1"}
	if q.ByKey {
		keyCol = "key_id"
		groups = append(groups, "key_id")
	}
	if q.ByModel {
		modelCol = "model"
		groups = append(groups, "model")
	}
	rows := []UsageRow{}
	err := s.db.SelectContext(ctx, &rows, `
		SELECT date_trunc($2, hour, 'UTC') AS start, `+keyCol+` AS key_id, `+modelCol+` AS model,
			sum(requests)::bigint AS requests, sum(input_tokens)::bigint AS input_tokens,
			sum(output_tokens)::bigint AS output_tokens, sum(cost)::bigint AS cost
		FROM usage_hourly
		WHERE user_id = $1 AND hour >= $3 AND hour < $4
		  AND ($5 = 0 OR key_id = $5) AND ($6 = '' OR model = $6)
		GROUP BY `+strings.Join(groups, ", ")+`
		ORDER BY `+strings.Join(groups, ", "),
		userID, q.Bucket, q.From, q.To, q.KeyID, q.Model)
	return rows, err
}
