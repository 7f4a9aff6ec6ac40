// Command bench measures ModelSwitch against its baselines in one run on
// one machine, and prints each figure beside its baseline (`make bench`):
//
//   - authenticated GET /v1/models beside a bare Fiber app serving the same
//     body (wrk);
//   - non-streamed chat completions through the gateway, metered and
//     limited, beside the fake upstream called directly and through a bare
//     Fiber proxy (wrk), and the ledger checked exact afterwards; then the
//     same with an upstream that takes 20 ms to answer;
//   - how long a key deleted on one replica is still taken by another
//     (200 tries);
//   - the API Keys page with 1,000 keys, in server time, compressed as a
//     browser asks.
//
// It builds the server and dev/fakeupstream, starts two replicas, the
// upstream and the bare app as processes of their own, on DATABASE_URL or,
// when unset, an embedded PostgreSQL. It needs wrk.
//
//	go run ./dev/bench [-duration 10s] [-conns 32] [-markdown docs/benchmarks.md]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"modelswitch/dev/embedpg"
)

// slowAnswer is how long the second fake upstream takes to answer: closer
// to a real provider, whose answers take from a few hundred milliseconds.
const slowAnswer = 20 * time.Millisecond

func main() {
	if len(os.Args) == 3 && os.Args[1] == "-bare" {
		serveBare(os.Args[2])
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "-bare-proxy" {
		serveBareProxy(os.Args[2])
		return
	}
	duration := flag.Duration("duration", 10*time.Second, "each wrk run")
	conns := flag.Int("conns", 32, "wrk connections")
	markdown := flag.String("markdown", "", "also append the results to this Markdown file")
	flag.Parse()
	log.SetFlags(0)
	if _, err := exec.LookPath("wrk"); err != nil {
		log.Fatal("bench needs wrk: apt-get install wrk")
	}
	b := &bench{duration: *duration, conns: *conns}
	defer b.stop()
	if err := b.run(); err != nil {
		b.stop()
		log.Fatal(err)
	}
	report := b.report()
	fmt.Print(report)
	if *markdown != "" {
		if err := os.MkdirAll(filepath.Dir(*markdown), 0o755); err != nil {
			log.Fatal(err)
		}
		f, err := os.OpenFile(*markdown, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		fmt.Fprintf(f, "\n## %s\n\n%s\n```\n%s```\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), machine(), report)
	}
}

type bench struct {
	duration time.Duration
	conns    int
	dir      string
	procs    []*exec.Cmd
	pg       *embedpg.Server
	a, b     string // the replicas' base URLs
	logA     *logTap
	mk, ms   string
	email    string

	bare, models, upstream, gateway wrkResult
	proxy                           wrkResult // a bare Fiber proxy to the upstream
	slowUpstream, slowGateway       wrkResult // the same through an upstream that takes slowAnswer
	lags                            []time.Duration
	pageTimes                       [2][]float64 // the first page, the last
	pageBytes, pageBrotli           [2]int
	ledger                          string
}

func (b *bench) stop() {
	for _, p := range b.procs {
		p.Process.Kill()
		p.Wait()
	}
	b.procs = nil
	if b.pg != nil {
		b.pg.Stop()
		b.pg = nil
	}
	if b.dir != "" {
		os.RemoveAll(b.dir)
		b.dir = ""
	}
}

func (b *bench) run() error {
	var err error
	if b.dir, err = os.MkdirTemp("", "modelswitch-bench-"); err != nil {
		return err
	}
	dbURL := os.Getenv("DATABASE_URL")
	if dbURL == "" {
		log.Print("starting an embedded PostgreSQL (set DATABASE_URL to use another)")
		if b.pg, err = embedpg.Start(context.Background(), filepath.Join(b.dir, "pg"), "bench", nil); err != nil {
			return err
		}
		dbURL = b.pg.URL()
	}
	log.Print("building the server and the fake upstream")
	server, upstream := filepath.Join(b.dir, "modelswitch"), filepath.Join(b.dir, "fakeupstream")
	for _, build := range [][]string{{"-o", server, "."}, {"-o", upstream, "./dev/fakeupstream"}} {
		cmd := exec.Command("go", append([]string{"build"}, build...)...)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return err
		}
	}
	upAddr, slowAddr := freeAddr(), freeAddr()
	b.start(nil, upstream, "-addr", upAddr)
	b.start(nil, upstream, "-addr", slowAddr, "-delay", slowAnswer.String())
	models := filepath.Join(b.dir, "models.yaml")
	os.WriteFile(models, []byte(fmt.Sprintf(`models:
  - {id: fake/model, provider: openai, base_url: "http://%s/v1", input_price: 0.15, output_price: 0.6, max_output_tokens: 1000}
  - {id: fake/slow, provider: openai, base_url: "http://%s/v1", input_price: 0.15, output_price: 0.6, max_output_tokens: 1000}
`, upAddr, slowAddr)), 0o644)
	env := []string{"DATABASE_URL=" + dbURL, "MODELS_FILE=" + models, "SIGNUP_CREDITS=1000000",
		"SECRET_KEY=bench-secret-bench-secret-bench-secret", "KEY_WRITES_PER_MINUTE=1000000", "MAX_KEYS_PER_ACCOUNT=100000", "SIGNUPS_PER_HOUR=100000"}
	aAddr, bAddr := freeAddr(), freeAddr()
	b.logA = &logTap{}
	b.a, b.b = "http://"+aAddr, "http://"+bAddr
	b.startReplica(server, env, aAddr, b.logA)
	b.startReplica(server, env, bAddr, io.Discard)
	for _, u := range []string{b.a, b.b, "http://" + upAddr, "http://" + slowAddr} {
		if err := waitUp(u); err != nil {
			return err
		}
	}
	if err := b.account(); err != nil {
		return err
	}

	// GET /v1/models beside a bare Fiber app serving the same body.
	body, err := b.call(b.a, "GET", "/v1/models", b.ms, nil, 200)
	if err != nil {
		return err
	}
	bodyFile := filepath.Join(b.dir, "models.json")
	os.WriteFile(bodyFile, body, 0o644)
	bareAddr := freeAddr()
	self, _ := os.Executable()
	b.start([]string{"BARE_ADDR=" + bareAddr}, self, "-bare", bodyFile)
	if err := waitUp("http://" + bareAddr); err != nil {
		return err
	}
	auth := "wrk.headers[\"Authorization\"] = \"Bearer " + b.ms + "\"\n"
	log.Print("wrk: GET /v1/models, bare Fiber then ModelSwitch")
	if b.bare, err = b.wrk("http://"+bareAddr+"/v1/models", auth); err != nil {
		return err
	}
	if b.models, err = b.wrk(b.a+"/v1/models", auth); err != nil {
		return err
	}

	// Chat completions: the upstream directly, then through the gateway.
	chat := func(model string) string {
		return auth + `wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"` + model + `","messages":[{"role":"user","content":"Say hello."}]}'
`
	}
	log.Print("wrk: POST /v1/chat/completions, the upstream directly, through a bare proxy, then through the gateway")
	if b.upstream, err = b.wrk("http://"+upAddr+"/v1/chat/completions", chat("model")); err != nil {
		return err
	}
	proxyAddr := freeAddr()
	b.start([]string{"BARE_ADDR=" + proxyAddr}, self, "-bare-proxy", upAddr)
	if err := waitUp("http://" + proxyAddr); err != nil {
		return err
	}
	if b.proxy, err = b.wrk("http://"+proxyAddr+"/v1/chat/completions", chat("model")); err != nil {
		return err
	}
	before, err := b.balance()
	if err != nil {
		return err
	}
	entriesBefore, err := b.usageEntries()
	if err != nil {
		return err
	}
	if b.gateway, err = b.wrk(b.a+"/v1/chat/completions", chat("fake/model")); err != nil {
		return err
	}
	if b.ledger, err = b.checkLedger(before, entriesBefore); err != nil {
		return err
	}
	log.Printf("wrk: the same with an upstream that takes %v to answer", slowAnswer)
	if b.slowUpstream, err = b.wrk("http://"+slowAddr+"/v1/chat/completions", chat("model")); err != nil {
		return err
	}
	if b.slowGateway, err = b.wrk(b.a+"/v1/chat/completions", chat("fake/slow")); err != nil {
		return err
	}

	log.Print("revocation: 200 keys deleted on one replica, used on the other")
	if err := b.revocations(200); err != nil {
		return err
	}
	log.Print("the API Keys page with 1,000 keys")
	return b.keysPage(1000)
}

func (b *bench) start(env []string, name string, args ...string) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	b.procs = append(b.procs, cmd)
}

func (b *bench) startReplica(server string, env []string, addr string, out io.Writer) {
	cmd := exec.Command(server, "serve")
	cmd.Env = append(append(os.Environ(), env...), "PORT="+port(addr))
	cmd.Stdout, cmd.Stderr = out, os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	b.procs = append(b.procs, cmd)
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func port(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }

func waitUp(base string) error {
	for range 600 {
		if res, err := http.Get(base + "/livez"); err == nil {
			res.Body.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not come up", base)
}

func (b *bench) call(base, method, path, auth string, body any, want int) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		return raw, fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, raw)
	}
	return raw, nil
}

func (b *bench) field(base, method, path, auth string, body any, want int, name string) (string, error) {
	raw, err := b.call(base, method, path, auth, body, want)
	if err != nil {
		return "", err
	}
	var m map[string]any
	json.Unmarshal(raw, &m)
	return fmt.Sprint(m[name]), nil
}

func (b *bench) account() error {
	b.email = fmt.Sprintf("bench-%d@example.com", time.Now().UnixNano())
	creds := map[string]string{"email": b.email, "password": "bench-password"}
	if _, err := b.call(b.a, "POST", "/api/auth/signup", "", creds, 201); err != nil {
		return err
	}
	jwt, err := b.field(b.a, "POST", "/api/auth/login", "", creds, 200, "token")
	if err != nil {
		return err
	}
	if b.mk, err = b.field(b.a, "POST", "/api/billing-keys", jwt, map[string]string{"name": "bench"}, 201, "key"); err != nil {
		return err
	}
	b.ms, err = b.field(b.a, "POST", "/api/keys", b.mk, map[string]string{"name": "bench"}, 201, "key")
	return err
}

type wrkResult struct {
	rps      float64
	p50, p99 string
	requests int
	non2xx   int
}

func (b *bench) wrk(target, script string) (wrkResult, error) {
	path := filepath.Join(b.dir, "script.lua")
	os.WriteFile(path, []byte(script), 0o644)
	out, err := exec.Command("wrk", "-t1", "-c"+strconv.Itoa(b.conns), "-d"+b.duration.String(), "--latency", "-s", path, target).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	var r wrkResult
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "Requests/sec:":
			r.rps, _ = strconv.ParseFloat(f[1], 64)
		case len(f) >= 2 && f[0] == "50%":
			r.p50 = f[1]
		case len(f) >= 2 && f[0] == "99%":
			r.p99 = f[1]
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.requests, _ = strconv.Atoi(f[0])
		case strings.HasPrefix(line, "  Non-2xx or 3xx responses:"):
			r.non2xx, _ = strconv.Atoi(f[len(f)-1])
		}
	}
	return r, nil
}

type balance struct {
	Balance      float64 `json:"balance"`
	TotalCredits float64 `json:"totalCredits"`
	TotalUsage   float64 `json:"totalUsage"`
	Held         float64 `json:"held"`
}

func (b *bench) balance() (balance, error) {
	raw, err := b.call(b.a, "GET", "/api/balance", b.mk, nil, 200)
	var bal balance
	if err == nil {
		err = json.Unmarshal(raw, &bal)
	}
	return bal, err
}

// checkLedger waits for the gateway's run to settle and checks that every
// request was charged exactly once at its cost: the fake upstream reports
// the same usage for each, so the usage added is the number of usage
// entries times that cost. Requests still in flight when wrk stopped are
// charged too (the upstream answered), so at most -conns more than wrk
// counted.
func (b *bench) checkLedger(before balance, entriesBefore int) (string, error) {
	const perRequest = (12*0.15 + 7*0.6) / 1e6 // the fake upstream's usage at the fake model's prices
	answered := b.gateway.requests - b.gateway.non2xx
	var bal balance
	var err error
	for range 100 {
		if bal, err = b.balance(); err != nil {
			return "", err
		}
		if bal.Held == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	entries, err := b.usageEntries()
	if err != nil {
		return "", err
	}
	entries -= entriesBefore
	charged := (bal.TotalUsage - before.TotalUsage) / perRequest
	verdict := "exact"
	if d := charged - float64(entries); d > 0.01 || d < -0.01 || bal.Held != 0 ||
		entries < answered || entries > answered+b.conns {
		verdict = "NOT EXACT"
	}
	return fmt.Sprintf("%s: %d answered to wrk, %d usage entries, charged %.2f times the request's cost, %.9f USD held after",
		verdict, answered, entries, charged, bal.Held), nil
}

// usageEntries is the account's count of metered requests.
func (b *bench) usageEntries() (int, error) {
	raw, err := b.call(b.a, "GET", "/api/usage", b.mk, nil, 200)
	var u struct {
		Total struct {
			Requests int `json:"requests"`
		} `json:"total"`
	}
	if err == nil {
		err = json.Unmarshal(raw, &u)
	}
	return u.Total.Requests, err
}

func (b *bench) revocations(n int) error {
	for i := range n {
		raw, err := b.call(b.a, "POST", "/api/keys", b.mk, map[string]string{"name": fmt.Sprint("revoke ", i)}, 201)
		if err != nil {
			return err
		}
		var k struct {
			ID  int64  `json:"id"`
			Key string `json:"key"`
		}
		json.Unmarshal(raw, &k)
		if _, err := b.call(b.b, "GET", "/v1/models", k.Key, nil, 200); err != nil {
			return err
		}
		if _, err := b.call(b.a, "DELETE", fmt.Sprint("/api/keys/", k.ID), b.mk, nil, 200); err != nil {
			return err
		}
		deleted := time.Now()
		for {
			_, err := b.call(b.b, "GET", "/v1/models", k.Key, nil, 401)
			if err == nil {
				break
			}
			if time.Since(deleted) > 10*time.Second {
				return fmt.Errorf("a deleted key was still taken after 10 s: %v", err)
			}
		}
		b.lags = append(b.lags, time.Since(deleted))
	}
	slices.Sort(b.lags)
	return nil
}

var csrfInput = regexp.MustCompile(`name="_csrf" value="([^"]+)"`)

func (b *bench) keysPage(n int) error {
	for i := range n - 1 { // the account has its bench key already
		if _, err := b.call(b.a, "POST", "/api/keys", b.mk, map[string]string{"name": fmt.Sprint("page ", i)}, 201); err != nil {
			return err
		}
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	res, err := c.Get(b.a + "/signin")
	if err != nil {
		return err
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	m := csrfInput.FindSubmatch(page)
	if m == nil {
		return errors.New("no CSRF token on the sign-in page")
	}
	res, err = c.PostForm(b.a+"/signin", url.Values{"email": {b.email}, "password": {"bench-password"}, "_csrf": {string(m[1])}})
	if err != nil {
		return err
	}
	res.Body.Close()
	get := func(path, accept, encoding string) ([]byte, error) {
		req, _ := http.NewRequest("GET", b.a+path, nil)
		req.Header.Set("Accept-Encoding", accept)
		res, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || res.Header.Get("Content-Encoding") != encoding {
			return nil, fmt.Errorf("API Keys page %s: %d %q", path, res.StatusCode, res.Header.Get("Content-Encoding"))
		}
		return body, nil
	}
	// The page shows 50 keys at a time: the first page and the last.
	for i, page := range []struct{ query, name string }{{"", "page 998"}, {"?page=20", "page 0"}} {
		body, err := get("/dashboard/keys"+page.query, "identity", "")
		if err != nil {
			return err
		}
		if !bytes.Contains(body, []byte(page.name)) {
			return fmt.Errorf("API Keys page%s: %d bytes, without its keys", page.query, len(body))
		}
		b.pageBytes[i] = len(body)
		b.logA.start()
		for range 50 {
			// As Chromium asks; it gets brotli.
			if body, err = get("/dashboard/keys"+page.query, "gzip, deflate, br, zstd", "br"); err != nil {
				return err
			}
			b.pageBrotli[i] = len(body)
		}
		time.Sleep(200 * time.Millisecond) // the last log lines
		for _, line := range strings.Split(b.logA.stop(), "\n") {
			var l struct {
				Path     string  `json:"path"`
				Duration float64 `json:"duration_ms"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Path == "/dashboard/keys" {
				b.pageTimes[i] = append(b.pageTimes[i], l.Duration)
			}
		}
		slices.Sort(b.pageTimes[i])
		if len(b.pageTimes[i]) == 0 {
			return errors.New("no request log lines for the API Keys page")
		}
	}
	return nil
}

// logTap keeps replica A's log only while a measurement reads it, and
// reads it as fast as it comes: a log left to pile up in a growing buffer
// would stall the replica's writes to its stdout, and its requests with them.
type logTap struct {
	mu  sync.Mutex
	on  bool
	buf bytes.Buffer
}

func (l *logTap) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.on {
		l.buf.Write(p)
	}
	return len(p), nil
}

func (l *logTap) start() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.on = true
	l.buf.Reset()
}

func (l *logTap) stop() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.on = false
	return l.buf.String()
}

func pct[T any](s []T, p float64) T { return s[min(len(s)-1, int(float64(len(s))*p))] }

func (b *bench) report() string {
	var w strings.Builder
	ratio := func(x, base float64) string { return fmt.Sprintf("%.0f%%", 100*x/base) }
	fmt.Fprintf(&w, "wrk -t1 -c%d -d%s\n", b.conns, b.duration)
	fmt.Fprintf(&w, "GET /v1/models        bare Fiber   %9.0f req/s  p50 %8s  p99 %8s\n", b.bare.rps, b.bare.p50, b.bare.p99)
	fmt.Fprintf(&w, "                      ModelSwitch  %9.0f req/s  p50 %8s  p99 %8s  = %s of bare Fiber, non-2xx %d\n",
		b.models.rps, b.models.p50, b.models.p99, ratio(b.models.rps, b.bare.rps), b.models.non2xx)
	fmt.Fprintf(&w, "chat completions      upstream     %9.0f req/s  p50 %8s  p99 %8s\n", b.upstream.rps, b.upstream.p50, b.upstream.p99)
	fmt.Fprintf(&w, "                      bare proxy   %9.0f req/s  p50 %8s  p99 %8s  = %s of the upstream, non-2xx %d\n",
		b.proxy.rps, b.proxy.p50, b.proxy.p99, ratio(b.proxy.rps, b.upstream.rps), b.proxy.non2xx)
	fmt.Fprintf(&w, "                      gateway      %9.0f req/s  p50 %8s  p99 %8s  = %s of the upstream, %s of the bare proxy, non-2xx %d\n",
		b.gateway.rps, b.gateway.p50, b.gateway.p99, ratio(b.gateway.rps, b.upstream.rps), ratio(b.gateway.rps, b.proxy.rps), b.gateway.non2xx)
	fmt.Fprintf(&w, "                      ledger       %s\n", b.ledger)
	fmt.Fprintf(&w, "upstream taking %-5s upstream     %9.0f req/s  p50 %8s  p99 %8s\n", slowAnswer, b.slowUpstream.rps, b.slowUpstream.p50, b.slowUpstream.p99)
	fmt.Fprintf(&w, "                      gateway      %9.0f req/s  p50 %8s  p99 %8s  = %s of the upstream, non-2xx %d\n",
		b.slowGateway.rps, b.slowGateway.p50, b.slowGateway.p99, ratio(b.slowGateway.rps, b.slowUpstream.rps), b.slowGateway.non2xx)
	fmt.Fprintf(&w, "revocation lag        %d tries     p50 %v  p99 %v  max %v\n", len(b.lags),
		pct(b.lags, 0.5).Round(time.Microsecond), pct(b.lags, 0.99).Round(time.Microsecond), b.lags[len(b.lags)-1].Round(time.Microsecond))
	for i, which := range []string{"first", "last"} {
		fmt.Fprintf(&w, "API Keys page         1,000 keys, %-5s page of 50: server time p50 %.2f ms  p90 %.2f ms  (%d KiB, %d KiB in brotli)\n",
			which, pct(b.pageTimes[i], 0.5), pct(b.pageTimes[i], 0.9), b.pageBytes[i]>>10, b.pageBrotli[i]>>10)
	}
	return w.String()
}

// machine describes where the figures were taken.
func machine() string {
	cpu := "unknown CPU"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d cores (%s), %s, %s; wrk, the server, its replica, the upstream and PostgreSQL on the same machine.",
		runtime.NumCPU(), cpu, runtime.Version(), runtime.GOOS+"/"+runtime.GOARCH)
}

// serveBare is the baseline: a Fiber app with no middleware answering
// GET /v1/models with the body ModelSwitch sent.
func serveBare(bodyFile string) {
	body, err := os.ReadFile(bodyFile)
	if err != nil {
		log.Fatal(err)
	}
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Get("/v1/models", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Send(body)
	})
	app.Get("/livez", func(c *fiber.Ctx) error { return c.SendString("ok") })
	log.Fatal(app.Listen(os.Getenv("BARE_ADDR")))
}

// serveBareProxy is the gateway's ceiling: a Fiber app with no middleware
// that forwards POST /v1/chat/completions to upstream with fasthttp's
// client, the fastest on this stack, and answers with what came back. No
// proxy can do less per request.
func serveBareProxy(upstream string) {
	client := &fasthttp.HostClient{Addr: upstream, MaxConns: 1024}
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Post("/v1/chat/completions", func(c *fiber.Ctx) error {
		req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(res)
		req.Header.SetMethod(fiber.MethodPost)
		req.SetRequestURI("http://" + upstream + "/v1/chat/completions")
		req.Header.SetContentType(fiber.MIMEApplicationJSON)
		req.SetBody(c.Body())
		if err := client.Do(req, res); err != nil {
			return err
		}
		c.Set(fiber.HeaderContentType, string(res.Header.ContentType()))
		// Copied: res and its body go back to fasthttp's pool on return.
		c.Response().SetBody(res.Body())
		return c.SendStatus(res.StatusCode())
	})
	app.Get("/livez", func(c *fiber.Ctx) error { return c.SendString("ok") })
	log.Fatal(app.Listen(os.Getenv("BARE_ADDR")))
}
