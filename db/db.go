// Package db is ModelSwitch's store: accounts, sessions and keys in
// PostgreSQL, with the validation both the JSON API and the dashboard share.
// Every query on keys is scoped to its owner in SQL.
package db

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	_ "github.com/lib/pq" // the PostgreSQL driver

	"modelswitch/db/money"
)

// Store is the handle every handler works through. Its connections are
// split in two pools, so that a hot or stalled path (keys, the ledger)
// cannot starve signing in and sessions; a third, unpooled connection
// answers readiness checks.
type Store struct {
	db    *pool // keys, the ledger, the gateway
	auth  *pool // accounts, sessions, sign-in throttles
	probe *sqlx.DB
	cfg   Config
	now   func() time.Time // the clock of ledger writes and key windows

	// SignupCredits is granted to each new account as a credit entry.
	SignupCredits money.USD
	// MaxKeys caps the keys of each kind on one account.
	MaxKeys int
	// SignupsPerHour caps the accounts created from one client address (an
	// IPv6 /64) in an hour.
	SignupsPerHour int

	idempotencySecret []byte     // see WithIdempotencySecret (idempotency.go)
	keyCaches         *keyCaches // this process's key caches (keycache.go)
	meter             *Meter     // see Meter (meter.go)
}

// WithClock is the same store on another clock, so that tests can move time
// (key windows, hold expiry) without waiting. Its meter is its own: a
// replica on that clock.
func (s *Store) WithClock(now func() time.Time) *Store {
	c := *s
	c.now = now
	c.meter = newMeter(&c)
	return &c
}

// Open connects to PostgreSQL and checks that it answers.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	dsn := withSessionSettings(cfg.URL, cfg)
	authSize := max(2, cfg.MaxConns/5)
	s := &Store{cfg: cfg, now: time.Now, MaxKeys: defaultMaxKeys, SignupsPerHour: defaultSignupsPerHour, keyCaches: &keyCaches{}}
	s.meter = newMeter(s)
	var err error
	if s.db, err = newPool(dsn, max(2, cfg.MaxConns-authSize), cfg.PoolWait); err != nil {
		return nil, err
	}
	if s.auth, err = newPool(dsn, authSize, cfg.PoolWait); err != nil {
		return nil, err
	}
	if s.probe, err = sqlx.Open("postgres", dsn); err != nil {
		return nil, err
	}
	s.probe.SetMaxOpenConns(2)
	s.probe.SetMaxIdleConns(0) // each check dials: an honest answer right after a restart
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.Ready(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	return s, nil
}

// withTx runs fn in one transaction on the general pool.
func (s *Store) withTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	return s.db.withTx(ctx, fn)
}

// Close releases the connections.
func (s *Store) Close() error {
	return errors.Join(s.db.db.Close(), s.auth.db.Close(), s.probe.Close())
}

// Ready reports whether the database answers now, on a new connection.
func (s *Store) Ready(ctx context.Context) error {
	if err := s.probe.PingContext(ctx); err != nil {
		return unavailable(err)
	}
	return nil
}

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the advisory lock id that serializes migrations between
// replicas starting at once (an arbitrary constant: "msmigrat").
const migrationLock = 0x6d736d6967726174

// Migrate applies the embedded migrations that have not run yet, each in its
// own transaction, under a PostgreSQL advisory lock.
func (s *Store) Migrate(ctx context.Context) error {
	// Its own connection, without the statement timeout: a migration may
	// rewrite a large table, and may wait for another replica's.
	db, err := sqlx.Open("postgres", s.cfg.URL)
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Connx(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLock)

	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    text        PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return err
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		version := strings.TrimSuffix(strings.TrimPrefix(name, "migrations/"), ".sql")
		var done bool
		if err := conn.GetContext(ctx, &done,
			`SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, version); err != nil {
			return err
		}
		if done {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		tx, err := conn.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %s: %w", version, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, version); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}
