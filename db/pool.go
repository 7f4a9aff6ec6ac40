package db

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"modelswitch/errs"
)

// Config is how the store reaches PostgreSQL.
type Config struct {
	URL string
	// MaxConns is the most connections the store holds, across its pools.
	MaxConns int
	// StatementTimeout ends any one statement that runs longer, and
	// LockTimeout one that waits longer for a lock.
	StatementTimeout, LockTimeout time.Duration
	// PoolWait is how long a query waits for a free connection before the
	// request is answered 503.
	PoolWait time.Duration
}

func (c Config) withDefaults() Config {
	if c.MaxConns <= 0 {
		c.MaxConns = 20
	}
	if c.StatementTimeout <= 0 {
		c.StatementTimeout = 5 * time.Second
	}
	if c.LockTimeout <= 0 {
		c.LockTimeout = 2 * time.Second
	}
	if c.PoolWait <= 0 {
		c.PoolWait = time.Second
	}
	return c
}

// Outages and overload are answered 503 with Retry-After: the request did
// nothing, and the same request may succeed in a moment.
var (
	ErrUnavailable = &errs.Error{Kind: errs.Unavailable, Code: "database_unavailable", RetryAfter: 2 * time.Second,
		Message: "The database is not answering. Nothing was changed; retry in a few seconds."}
	ErrBusy = &errs.Error{Kind: errs.Unavailable, Code: "busy", RetryAfter: time.Second,
		Message: "The service is busy. Nothing was changed; retry in a second."}
)

// pool is a connection pool whose callers wait at most wait for a
// connection: when every connection is taken (a locked table, a flood),
// requests are refused at once instead of queueing until their deadline.
// It turns connection failures into ErrUnavailable and, on the first one,
// drops its idle connections, which a restarted server has closed: the next
// query dials afresh instead of failing once per stale connection.
type pool struct {
	db    *sqlx.DB
	slots chan struct{}
	wait  time.Duration
	idle  int
}

func newPool(dsn string, size int, wait time.Duration) (*pool, error) {
	conn, err := sqlx.Open("postgres", dsn)
	if err != nil {
		return nil, err
	}
	conn.SetMaxOpenConns(size)
	conn.SetMaxIdleConns(size)
	conn.SetConnMaxIdleTime(5 * time.Minute)
	return &pool{db: conn, slots: make(chan struct{}, size), wait: wait, idle: size}, nil
}

func (p *pool) acquire(ctx context.Context) error {
	select {
	case p.slots <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(p.wait)
	defer t.Stop()
	select {
	case p.slots <- struct{}{}:
		return nil
	case <-t.C:
		return ErrBusy
	case <-ctx.Done():
		return unavailable(ctx.Err())
	}
}

func (p *pool) release() { <-p.slots }

// check classifies a query's error. Only a lost connection closes the
// idle ones, which may be as dead: a timeout or a cancelled request says
// nothing about them.
func (p *pool) check(err error) error {
	if err == nil || !isOutage(err) {
		return err
	}
	if connLost(err) {
		p.db.SetMaxIdleConns(0) // closes the idle connections
		p.db.SetMaxIdleConns(p.idle)
	}
	return unavailable(err)
}

// unavailable is ErrUnavailable caused by err.
func unavailable(err error) error {
	e := *ErrUnavailable
	e.Cause = err
	return &e
}

func (p *pool) GetContext(ctx context.Context, dst any, query string, args ...any) error {
	if err := p.acquire(ctx); err != nil {
		return err
	}
	defer p.release()
	return p.check(p.db.GetContext(ctx, dst, query, args...))
}

func (p *pool) SelectContext(ctx context.Context, dst any, query string, args ...any) error {
	if err := p.acquire(ctx); err != nil {
		return err
	}
	defer p.release()
	return p.check(p.db.SelectContext(ctx, dst, query, args...))
}

func (p *pool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := p.acquire(ctx); err != nil {
		return nil, err
	}
	defer p.release()
	res, err := p.db.ExecContext(ctx, query, args...)
	return res, p.check(err)
}

// withTx runs fn in one transaction: committed when fn returns nil, rolled
// back otherwise, so a failed multi-statement write leaves nothing behind.
func (p *pool) withTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	if err := p.acquire(ctx); err != nil {
		return err
	}
	defer p.release()
	tx, err := p.db.BeginTxx(ctx, nil)
	if err != nil {
		return p.check(err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return p.check(err)
	}
	return p.check(tx.Commit())
}

// isOutage tells failures of the database or of the way to it (refused,
// reset, timed out, shut down, out of connections, a statement or lock
// timeout) from errors in a query, which are bugs.
func isOutage(err error) bool {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		switch pqErr.Code.Class() {
		case "08", // connection exception
			"53", // insufficient resources: too many connections, out of memory
			"57": // operator intervention: shutdown, query_canceled by statement_timeout
			return true
		}
		switch pqErr.Code {
		case "55P03", // lock_not_available: lock_timeout
			"40001", "40P01": // serialization failure, deadlock: the same request may succeed
			return true
		}
		return false
	}
	return connLost(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// connLost tells that the connection itself failed: the server went away
// (shut down, class 08) or the network between did.
func connLost(err error) bool {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		switch pqErr.Code {
		case "57P01", "57P02", "57P03": // admin_shutdown, crash_shutdown, cannot_connect_now
			return true
		}
		return pqErr.Code.Class() == "08"
	}
	var netErr net.Error
	return errors.As(err, &netErr) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// withSessionSettings adds the store's timeouts to a connection string as
// run-time parameters, unless the operator set them there already, and
// lib/pq's binary_parameters: a query with parameters then costs one round
// trip instead of two (parse, then bind), and []byte parameters (key
// digests) are sent as bytea.
func withSessionSettings(dsn string, cfg Config) string {
	settings := map[string]string{
		"statement_timeout": strconv.FormatInt(cfg.StatementTimeout.Milliseconds(), 10),
		"lock_timeout":      strconv.FormatInt(cfg.LockTimeout.Milliseconds(), 10),
		"connect_timeout":   "5",
		"application_name":  "modelswitch",
		"binary_parameters": "yes",
	}
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		for k, v := range settings {
			if !q.Has(k) {
				q.Set(k, v)
			}
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	for k, v := range settings { // key=value form
		if !strings.Contains(dsn, k+"=") {
			dsn += " " + k + "=" + v
		}
	}
	return dsn
}
