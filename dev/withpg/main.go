// Command withpg runs a command with an embedded PostgreSQL available in TEST_DATABASE_URL:
//
//	go run ./dev/withpg -- go test ./...
//
// The server's data lives in .data/test-postgres under the module root (kept between runs so only
// the first run pays for initdb); it is stopped when the command exits, and withpg exits with the
// command's exit code. SIGINT/SIGTERM are forwarded to the command.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"modelswitch/dev/embedpg"
)

func main() { os.Exit(run()) }

func run() int {
	dir := flag.String("dir", "", "PostgreSQL data directory (default: <module root>/.data/test-postgres)")
	dbname := flag.String("db", "postgres", "database to create if missing and put in TEST_DATABASE_URL")
	verbose := flag.Bool("v", false, "log server start/stop")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: withpg [flags] -- command [args...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		flag.Usage()
		return 2
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if *dir == "" {
		*dir = filepath.Join(moduleRoot(), ".data", "test-postgres")
	}

	// One signal reader for the whole run: during startup a signal aborts Start, afterwards it is forwarded.
	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu    sync.Mutex
		child *os.Process
	)
	go func() {
		for sig := range sigc {
			mu.Lock()
			if child != nil {
				_ = child.Signal(sig)
			} else {
				cancel()
			}
			mu.Unlock()
		}
	}()

	srv, err := embedpg.Start(ctx, *dir, *dbname, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "withpg:", err)
		if ctx.Err() != nil {
			return 130
		}
		return 1
	}
	defer func() {
		if err := srv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "withpg:", err)
		}
	}()

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "TEST_DATABASE_URL="+srv.URL())
	mu.Lock()
	if ctx.Err() != nil { // a signal arrived just as Start returned
		mu.Unlock()
		return 130
	}
	err = cmd.Start()
	if err == nil {
		child = cmd.Process
	}
	mu.Unlock()
	if err != nil {
		fmt.Fprintln(os.Stderr, "withpg:", err)
		return 127
	}
	err = cmd.Wait()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exitErr):
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()) // shell convention for "killed by signal"
		}
		return exitErr.ExitCode()
	default:
		fmt.Fprintln(os.Stderr, "withpg:", err)
		return 1
	}
}

// moduleRoot is the nearest directory with a go.mod at or above the working directory (or the
// working directory), so the data dir is the same wherever `go run` is started.
func moduleRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return wd
		}
	}
}
