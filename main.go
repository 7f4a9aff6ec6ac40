// Command modelswitch serves the ModelSwitch dashboard, account API and
// inference gateway.
//
//	modelswitch [serve]       run the web server (the default)
//	modelswitch migrate       apply database migrations and exit
//	modelswitch credits add --email E --amount 12.50 [--note TEXT] [--reference REF]
//	                          add credits (a negative amount is an adjustment)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"modelswitch/config"
	"modelswitch/db"
	"modelswitch/db/money"
	"modelswitch/dev/embedpg"
	"modelswitch/gateway"
	"modelswitch/web"
	"modelswitch/web/mail"
)

func main() {
	out := newLogWriter(os.Stdout)
	log := slog.New(slog.NewJSONHandler(out, nil))
	args := os.Args[1:]
	if len(args) == 0 {
		args = []string{"serve"}
	}
	err := run(args, log, out)
	if err != nil {
		log.Error("modelswitch stopped", "error", err)
	}
	out.Close()
	if err != nil {
		os.Exit(1)
	}
}

// logWriter collects the log in memory, and a goroutine of its own writes
// it out at least every 100 ms, and as soon as 64 KiB wait: a request's log
// line costs no system call, and no request waits on the output while it
// writes. Should the output fall 4 MiB behind, writers wait for it rather
// than lose lines or grow without bound.
type logWriter struct {
	out  io.Writer
	mu   sync.Mutex
	room *sync.Cond // signalled when the pending lines are taken
	buf  []byte     // lines not yet taken by the goroutine
	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

const (
	logFlushAt    = 64 << 10
	logMaxPending = 4 << 20
)

func newLogWriter(out io.Writer) *logWriter {
	l := &logWriter{out: out, buf: make([]byte, 0, logFlushAt), kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	l.room = sync.NewCond(&l.mu)
	go l.run()
	return l
}

func (l *logWriter) run() {
	defer close(l.done)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	spare := make([]byte, 0, logFlushAt)
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		case <-l.kick:
		}
		spare = l.writeOut(spare)
	}
}

// writeOut swaps the pending lines for spare, writes them, and returns
// their buffer, emptied, as the next spare.
func (l *logWriter) writeOut(spare []byte) []byte {
	l.mu.Lock()
	lines := l.buf
	l.buf = spare[:0]
	l.room.Broadcast()
	l.mu.Unlock()
	if len(lines) > 0 {
		l.out.Write(lines)
	}
	return lines[:0]
}

func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	for len(l.buf) >= logMaxPending {
		l.room.Wait()
	}
	l.buf = append(l.buf, p...)
	full := len(l.buf) >= logFlushAt
	l.mu.Unlock()
	if full {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// Close writes out what is pending.
func (l *logWriter) Close() {
	close(l.stop)
	<-l.done
	l.writeOut(nil)
}

func run(args []string, log *slog.Logger, out io.Writer) error {
	cmd := args[0]
	if cmd != "serve" && cmd != "migrate" && cmd != "credits" {
		return fmt.Errorf("unknown command %q: use serve, migrate or credits add", cmd)
	}
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		return err
	}
	var credit creditArgs
	if cmd == "credits" {
		// Read the arguments before starting anything, so a typo changes nothing.
		if credit, err = parseCredits(args[1:], os.Stderr); err != nil {
			return err
		}
	}
	var catalog *gateway.Catalog
	if cmd == "serve" {
		catalog, err = gateway.LoadCatalog(cfg.ModelsFile, os.Getenv, gateway.Timeouts{
			Connect: cfg.UpstreamConnect, FirstByte: cfg.UpstreamFirstByte, Idle: cfg.UpstreamIdle})
		if err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if cfg.DatabaseURL == "" {
		pg, err := embedpg.Start(ctx, filepath.Join(cfg.DataDir, "postgres"), "modelswitch", log)
		if err != nil {
			return fmt.Errorf("start the embedded PostgreSQL (set DATABASE_URL to use your own): %w", err)
		}
		defer pg.Stop()
		cfg.DatabaseURL = pg.URL()
		log.Info("using the embedded development PostgreSQL", "dir", filepath.Join(cfg.DataDir, "postgres"))
	}
	store, err := connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()
	store.SignupCredits = cfg.SignupCredits
	store.MaxKeys = cfg.MaxKeysPerAccount
	store.SignupsPerHour = cfg.SignupsPerHour
	store.Meter().LeaseTTL = cfg.LeaseTTL
	store.Meter().Log = log
	if err := store.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	switch cmd {
	case "migrate":
		log.Info("migrations applied")
		return nil
	case "credits":
		return addCredits(ctx, store, credit, os.Stdout)
	}

	mailer, err := mail.New(cfg.SMTPURL, cfg.Production, log)
	if err != nil {
		return err
	}
	go sweep(ctx, store, log)
	app := web.New(cfg, store, catalog, log, web.WithMailer(mailer), web.WithPublicURL(cfg.PublicURL),
		web.WithRequestLines(out))
	served := make(chan error, 1)
	go func() { served <- app.Listen(listenAddr(cfg)) }()
	log.Info("serving", "url", "http://localhost:"+cfg.Port, "production", cfg.Production, "models", len(catalog.Models()))

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
		stop() // a second signal now ends the process at once
		log.Info("shutting down: draining in-flight requests")
		// Then the streams still running are cut and charged (web.New's
		// shutdown hook), the usage of everything written and unused leased
		// credit handed back to the accounts.
		drained := app.ShutdownWithTimeout(cfg.ShutdownTimeout)
		flushCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return errors.Join(drained, store.Meter().Close(flushCtx))
	}
}

// connect opens the store, retrying with backoff for DATABASE_START_WAIT
// while PostgreSQL does not answer (it may be starting alongside us).
func connect(ctx context.Context, cfg config.Config, log *slog.Logger) (*db.Store, error) {
	deadline := time.Now().Add(cfg.DatabaseStartWait)
	wait := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		store, err := db.Open(ctx, db.Config{URL: cfg.DatabaseURL, MaxConns: cfg.DatabaseMaxConns,
			StatementTimeout: cfg.StatementTimeout, PoolWait: cfg.DatabasePoolWait})
		if err == nil {
			return store, nil
		}
		if time.Now().Add(wait).After(deadline) {
			return nil, fmt.Errorf("PostgreSQL did not answer within DATABASE_START_WAIT=%s: %w", cfg.DatabaseStartWait, err)
		}
		log.Warn("PostgreSQL does not answer yet; retrying", "attempt", attempt, "retry_in", wait.String(), "error", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

type creditArgs struct {
	email string
	c     db.Credit
}

func parseCredits(args []string, stderr io.Writer) (creditArgs, error) {
	if len(args) == 0 || args[0] != "add" {
		return creditArgs{}, errors.New("usage: modelswitch credits add --email E --amount 12.50 [--note TEXT] [--reference REF]")
	}
	fs := flag.NewFlagSet("credits add", flag.ContinueOnError)
	fs.SetOutput(stderr)
	email := fs.String("email", "", "the account's email")
	amount := fs.String("amount", "", "US dollars, like 12.50; negative for an adjustment")
	note := fs.String("note", "", "why: shown in the transactions (required for an adjustment)")
	ref := fs.String("reference", "", "a payment id: the same reference adds credits once")
	if err := fs.Parse(args[1:]); err != nil {
		return creditArgs{}, err
	}
	if *email == "" || *amount == "" || fs.NArg() > 0 {
		return creditArgs{}, errors.New("credits add needs --email and --amount, and takes no other arguments")
	}
	v, err := money.Parse(*amount)
	if err != nil {
		return creditArgs{}, fmt.Errorf("--amount %q: %w", *amount, err)
	}
	return creditArgs{*email, db.Credit{Amount: v, Note: *note, Reference: *ref}}, nil
}

func addCredits(ctx context.Context, store *db.Store, a creditArgs, out io.Writer) error {
	b, added, err := store.AddCredits(ctx, a.email, a.c)
	if err != nil {
		return err
	}
	if !added {
		fmt.Fprintf(out, "reference %q was added before; nothing changed. balance: %s USD\n", a.c.Reference, b.Available())
		return nil
	}
	fmt.Fprintf(out, "added %s USD to %s. balance: %s USD\n", a.c.Amount, a.email, b.Available())
	return nil
}

// listenAddr keeps a development server on this machine; in production the
// platform routes to every interface.
func listenAddr(cfg config.Config) string {
	if cfg.Production {
		return ":" + cfg.Port
	}
	return "127.0.0.1:" + cfg.Port
}

// sweep releases expired holds and leases every minute, and deletes ended
// sessions, stale rate counts and expired idempotency keys every hour.
func sweep(ctx context.Context, store *db.Store, log *slog.Logger) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for i := 0; ; i++ {
		if n, err := store.ReleaseExpiredHolds(ctx); err != nil && ctx.Err() == nil {
			log.Warn("sweep expired holds", "error", err)
		} else if n > 0 {
			log.Info("released expired holds", "count", n)
		}
		if i%60 == 0 {
			if err := store.DeleteExpired(ctx); err != nil && ctx.Err() == nil {
				log.Warn("sweep expired sessions", "error", err)
			}
			if _, err := store.DeleteExpiredIdempotencyKeys(ctx); err != nil && ctx.Err() == nil {
				log.Warn("sweep expired idempotency keys", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
