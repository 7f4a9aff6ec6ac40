package db

import "context"

// Exec runs SQL on the store, for tests that seed data in bulk.
func (s *Store) Exec(ctx context.Context, query string, args ...any) error {
	_, err := s.db.ExecContext(ctx, query, args...)
	return err
}
