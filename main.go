// Command modelswitch serves the ModelSwitch dashboard and API.
//
//	modelswitch [serve]   run the web server (the default)
//	modelswitch migrate   apply database migrations and exit
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"modelswitch/config"
	"modelswitch/db"
	"modelswitch/dev/embedpg"
	"modelswitch/web"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	cmd := "serve"
	if len(os.Args) > 1 {
		cmd = os.Args[1]
	}
	if err := run(cmd, log); err != nil {
		log.Error("modelswitch stopped", "error", err)
		os.Exit(1)
	}
}

func run(cmd string, log *slog.Logger) error {
	if cmd != "serve" && cmd != "migrate" {
		return fmt.Errorf("unknown command %q: use serve or migrate", cmd)
	}
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		return err
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
	store, err := db.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if cmd == "migrate" {
		log.Info("migrations applied")
		return nil
	}

	go sweep(ctx, store, log)
	app := web.New(cfg, store, log)
	served := make(chan error, 1)
	go func() { served <- app.Listen(listenAddr(cfg)) }()
	log.Info("serving", "url", "http://localhost:"+cfg.Port, "production", cfg.Production)

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
		stop() // a second signal now ends the process at once
		log.Info("shutting down: draining in-flight requests")
		return app.ShutdownWithTimeout(30 * time.Second)
	}
}

// listenAddr keeps a development server on this machine; in production the
// platform routes to every interface.
func listenAddr(cfg config.Config) string {
	if cfg.Production {
		return ":" + cfg.Port
	}
	return "127.0.0.1:" + cfg.Port
}

// sweep deletes ended sessions and stale sign-in counts every hour.
func sweep(ctx context.Context, store *db.Store, log *slog.Logger) {
	for t := time.NewTicker(time.Hour); ; {
		if err := store.DeleteExpired(ctx); err != nil && ctx.Err() == nil {
			log.Warn("sweep expired sessions", "error", err)
		}
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
