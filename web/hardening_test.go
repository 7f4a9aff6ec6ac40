package web

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"modelswitch/web/request"
)

func TestUnknownMethodsAnswerJSON(t *testing.T) {
	_, ms := proxyKey(t, billingKey(t, signup(t)))
	for _, c := range []struct{ path, want string }{
		{"/api/keys", `{"error":{"code":"method_not_allowed"`},
		{"/v1/models", `{"error":{"message":`},
		{"/dashboard/keys", `{"error":{"code":"method_not_allowed"`},
	} {
		r := call(t, "FOO", c.path, ms, nil)
		if r.status != 405 || !strings.HasPrefix(r.raw, c.want) || r.errCode() != "method_not_allowed" {
			t.Errorf("FOO %s: %d %s", c.path, r.status, r.raw)
		}
		if r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("FOO %s: no nosniff", c.path)
		}
	}
}

func TestResponseHeaders(t *testing.T) {
	mk := billingKey(t, signup(t))
	_, ms := proxyKey(t, mk)
	for _, c := range []struct {
		path, auth, cache string
		status            int
	}{
		{"/api/keys", mk, "no-store", 200},
		{"/api/nowhere", mk, "no-store", 404},
		{"/v1/models", ms, "private, max-age=60", 200},
		{"/v1/key", ms, "no-store", 200},
		{"/v1/models", "", "no-store", 401},
		{"/livez", "", "no-store", 200},
		{"/readyz", "", "no-store", 200},
		{"/healthz", "", "no-store", 200},
	} {
		r := call(t, "GET", c.path, c.auth, nil)
		if r.status != c.status || r.header.Get("Cache-Control") != c.cache || r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: %d, Cache-Control %q, X-Content-Type-Options %q; want %d, %q, nosniff",
				c.path, r.status, r.header.Get("Cache-Control"), r.header.Get("X-Content-Type-Options"), c.status, c.cache)
		}
	}
}

func TestProbes(t *testing.T) {
	for _, p := range []string{"/livez", "/readyz", "/healthz"} {
		if r := expect(t, call(t, "GET", p, "", nil), 200); r.body["status"] != "ok" {
			t.Errorf("%s: %s", p, r.raw)
		}
		if r := call(t, "POST", p, "", nil); r.status != 405 || r.errCode() != "method_not_allowed" {
			t.Errorf("POST %s: %d %s", p, r.status, r.raw)
		}
	}
}

// A body larger than the account routes take is refused however it is
// sent, chunked too (no Content-Length to refuse it by).
func TestSmallBodiesOutsideInference(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go testApp().Listener(ln)
	big := `{"email":"` + strings.Repeat("a", MaxBody) + `@example.com","password":"x"}`
	for _, path := range []string{"/api/auth/signup", "/signin"} {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		go fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", path, len(big), big)
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != 413 {
			t.Errorf("POST %s with %d bytes: %d; want 413", path, len(big), res.StatusCode)
		}
	}
}

// TestRequestLinesAreJSON: the hand-written request line is the JSON slog
// would write, whatever bytes the path holds.
func TestRequestLinesAreJSON(t *testing.T) {
	var buf bytes.Buffer
	line := requestLog(nil, &buf)
	info := &request.Info{ID: "0123456789abcdef", ClientIP: "2001:db8::1", Start: time.Now().Add(-1500 * time.Microsecond)}
	path := "/v1/\"odd\"\\path\x00\x1f\xff€"
	line(info, "GET", path, 404)
	var got map[string]any
	if err := json.Unmarshal(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), &got); err != nil || !bytes.HasSuffix(buf.Bytes(), []byte("}\n")) {
		t.Fatalf("not one JSON line: %v %q", err, buf.String())
	}
	if _, err := time.Parse(time.RFC3339Nano, got["time"].(string)); err != nil {
		t.Fatalf("time %v", got["time"])
	}
	want := map[string]any{"level": "INFO", "msg": "request", "request_id": info.ID, "method": "GET",
		"path": strings.ToValidUTF8(path, "\uFFFD"), "status": float64(404), "ip": info.ClientIP}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	if d := got["duration_ms"].(float64); d < 1.5 || d > 1000 {
		t.Errorf("duration_ms %v", d)
	}
}
