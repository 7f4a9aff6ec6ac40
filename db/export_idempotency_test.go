package db

import "context"

// IdempotencyRows is every row of idempotency_keys as PostgreSQL prints it
// (bytea as hex), for tests that look for a secret in the table.
func (s *Store) IdempotencyRows(ctx context.Context) ([]string, error) {
	var rows []string
	err := s.db.SelectContext(ctx, &rows, `SELECT t::text FROM idempotency_keys t`)
	return rows, err
}
