package embedpg

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/lib/pq"
)

// testDir returns a fresh data directory path; as root it must be reachable by the user postgres runs as.
func testDir(t *testing.T) string {
	dir := t.TempDir()
	if as, _ := unprivilegedUser(); as != nil {
		// t.TempDir makes private (0700) directories; open up the two it created.
		_ = os.Chmod(dir, 0o755)
		_ = os.Chmod(filepath.Dir(dir), 0o755)
		if checkAccess(dir, as.uid, as.gid, 1) != nil { // e.g. TMPDIR inside a private home
			wd, _ := os.Getwd()
			base := filepath.Join(wd, "..", "..", ".data")
			if err := os.MkdirAll(base, 0o755); err != nil {
				t.Fatal(err)
			}
			d, err := os.MkdirTemp(base, "embedpg-test-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(d) })
			_ = os.Chmod(d, 0o755)
			dir = d
		}
	}
	return filepath.Join(dir, "pg")
}

func start(t *testing.T, dir string) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, dir, "embedpg_test", slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if errors.Is(err, ErrNotInstalled) {
		t.Skip("PostgreSQL binaries not installed; run `npm install`:", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() }) // no stray servers if the test fails midway
	return s
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func open(t *testing.T, s *Server) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", s.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestStartStopRestart(t *testing.T) {
	dir := testDir(t)

	t0 := time.Now()
	s := start(t, dir)
	t.Logf("cold start (initdb + start): %v", time.Since(t0))
	if !strings.HasPrefix(s.URL(), "postgres://postgres@127.0.0.1:") || !strings.HasSuffix(s.URL(), "/embedpg_test?sslmode=disable") {
		t.Errorf("unexpected URL %q", s.URL())
	}
	db := open(t, s)
	var one int
	if err := db.QueryRow("SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
	var listen, sockets, enc string
	if err := db.QueryRow("SELECT current_setting('listen_addresses'), current_setting('unix_socket_directories'), "+
		"pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()").Scan(&listen, &sockets, &enc); err != nil {
		t.Fatal(err)
	}
	if listen != "127.0.0.1" || sockets != "" || enc != "UTF8" {
		t.Errorf("listen_addresses=%q unix_socket_directories=%q encoding=%q", listen, sockets, enc)
	}
	if _, err := db.Exec("CREATE TABLE marker (v text); INSERT INTO marker VALUES ('kept')"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	pid := s.cmd.Process.Pid
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("postgres pid %d still exists after Stop (kill 0: %v)", pid, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("postmaster.pid left behind: %v", err)
	}

	// Warm start: same directory, no initdb, data survives.
	t0 = time.Now()
	s = start(t, dir)
	t.Logf("warm start: %v", time.Since(t0))
	var v string
	if err := open(t, s).QueryRow("SELECT v FROM marker").Scan(&v); err != nil || v != "kept" {
		t.Fatalf("data from first run: %q, %v (was the directory re-initialized?)", v, err)
	}

	// A second server on the same directory must be refused, clearly.
	if s2, err := Start(context.Background(), dir, "embedpg_test", nil); err == nil {
		s2.Stop()
		t.Fatal("second Start on a running directory succeeded")
	} else if !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Start error doesn't say why: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestStaleState(t *testing.T) {
	dir := testDir(t)
	s := start(t, dir)

	// Crash: kill -9 the postmaster; postmaster.pid stays behind and the next start must recover.
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-s.exited
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); err != nil {
		t.Fatalf("expected a stale postmaster.pid after kill -9: %v", err)
	}
	if err := s.Stop(); err == nil {
		t.Error("Stop after the server died should report it")
	}
	s = start(t, dir)
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}

	// Reboot-style staleness: the recorded pid now belongs to an unrelated live process.
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	pidFile := fmt.Sprintf("%d\n%s\n1700000000\n5432\n\n127.0.0.1\n  1234567     12345\nready   \n", sleeper.Process.Pid, dir)
	if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(pidFile), 0o600); err != nil {
		t.Fatal(err)
	}
	s = start(t, dir)
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestHydrateSymlinks(t *testing.T) {
	pkg := t.TempDir()
	lib := filepath.Join(pkg, "native", "lib")
	if err := os.MkdirAll(lib, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(lib, "libpq.so.5.17"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(pkg, "native", "pg-symlinks.json"), []byte(
		`[{"source":"native/lib/libpq.so.5.17","target":"native/lib/libpq.so.5"},`+
			`{"source":"native/lib/libpq.so.5.17","target":"native/lib/libpq.so"}]`), 0o644)
	for range 2 { // idempotent
		if err := hydrateSymlinks(pkg); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"libpq.so.5", "libpq.so"} {
		if got, err := os.Readlink(filepath.Join(lib, name)); err != nil || got != "libpq.so.5.17" {
			t.Errorf("%s -> %q, %v", name, got, err)
		}
	}
	os.WriteFile(filepath.Join(pkg, "native", "pg-symlinks.json"), []byte(
		`[{"source":"native/lib/libpq.so.5.17","target":"../../evil"}]`), 0o644)
	if err := hydrateSymlinks(pkg); err == nil {
		t.Error("path escaping the package was accepted")
	}
}

// TestReachableFromPrivateDirectory: a checkout under a directory the
// unprivileged user cannot search gets a copy of the binaries and a data
// directory it can reach.
func TestReachableFromPrivateDirectory(t *testing.T) {
	as, _ := unprivilegedUser()
	if as == nil {
		t.Skip("only root runs PostgreSQL as another user")
	}
	private := t.TempDir() // 0700
	native := filepath.Join(private, "native")
	for _, d := range []string{"bin", "lib", "share"} {
		if err := os.MkdirAll(filepath.Join(native, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"bin/initdb", "bin/postgres"} {
		if err := os.WriteFile(filepath.Join(native, f), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink("postgres", filepath.Join(native, "bin", "postmaster"))
	gotNative, gotDir, err := reachable(native, filepath.Join(private, ".data", "postgres"), as, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(gotNative)); os.RemoveAll(filepath.Dir(gotDir)) })
	if strings.HasPrefix(gotNative, private) || strings.HasPrefix(gotDir, private) {
		t.Fatalf("still under the private directory: %s, %s", gotNative, gotDir)
	}
	if err := checkAccess(filepath.Join(gotNative, "bin", "postgres"), as.uid, as.gid, 1); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(gotNative, "bin", "postmaster")); err != nil || target != "postgres" {
		t.Fatalf("symlink not kept: %q %v", target, err)
	}
	again, _, err := reachable(native, filepath.Join(private, ".data", "postgres"), as, slog.New(slog.DiscardHandler))
	if err != nil || again != gotNative {
		t.Fatalf("second start: %s %v, want the same copy %s", again, err, gotNative)
	}
}
