package web

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/gofiber/fiber/v2"

	"modelswitch/web/request"
)

// echoClientIP is an app that answers with the client address logRequests
// resolved, behind trusted proxies.
func echoClientIP(trusted ...string) *fiber.App {
	var prefixes []netip.Prefix
	for _, p := range trusted {
		prefixes = append(prefixes, netip.MustParsePrefix(p))
	}
	a := fiber.New(fiber.Config{DisableStartupMessage: true})
	a.Use(logRequests(requestLog(slog.New(slog.NewTextHandler(io.Discard, nil)), nil), prefixes))
	a.All("/", func(c *fiber.Ctx) error { return c.SendString(request.ClientIP(c)) })
	return a
}

// TestClientIPForwardedFor: behind trusted proxies the client is the
// right-most untrusted hop across every X-Forwarded-For line, written with
// or without a port.
func TestClientIPForwardedFor(t *testing.T) {
	// app.Test connects from 0.0.0.0: the proxy next to us.
	a := echoClientIP("0.0.0.0/32", "10.0.0.0/8", "fd00:1::/64")
	for _, tc := range []struct {
		name  string
		lines []string // X-Forwarded-For header lines, in order
		want  string
	}{
		{"no header", nil, "0.0.0.0"},
		{"one hop", []string{"203.0.113.9"}, "203.0.113.9"},
		{"client's own line first", []string{"6.6.6.6", "203.0.113.9"}, "203.0.113.9"},
		{"lines of several hops", []string{"6.6.6.6, 203.0.113.9", "10.1.2.3"}, "203.0.113.9"},
		{"three lines", []string{"6.6.6.6", "203.0.113.9", "10.1.2.3, 10.4.5.6"}, "203.0.113.9"},
		{"ip:port", []string{"203.0.113.9:4711"}, "203.0.113.9"},
		{"proxy with port", []string{"203.0.113.9:4711, 10.1.2.3:8080"}, "203.0.113.9"},
		{"bare IPv6", []string{"2001:db8::7"}, "2001:db8::7"},
		{"IPv6 with port", []string{"[2001:db8::7]:443"}, "2001:db8::7"},
		{"IPv6 in brackets", []string{"[2001:db8::7]"}, "2001:db8::7"},
		{"IPv6 with a zone", []string{"fe80::7%eth0"}, "fe80::7"},
		{"trusted IPv6 proxy with port", []string{"2001:db8::7, [fd00:1::5]:80"}, "2001:db8::7"},
		{"mapped IPv4 with port", []string{"[::ffff:198.51.100.1]:80"}, "198.51.100.1"},
		{"garbage stops at the last good hop", []string{"203.0.113.9, garbage, 10.1.2.3"}, "10.1.2.3"},
		{"a bad port is garbage", []string{"203.0.113.9:http"}, "0.0.0.0"},
		{"IPv4 in brackets is garbage", []string{"[203.0.113.9]:80"}, "0.0.0.0"},
		{"an empty hop is garbage", []string{"203.0.113.9,"}, "0.0.0.0"},
		{"an empty line is garbage", []string{"203.0.113.9", ""}, "0.0.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/", nil)
			req.Header["X-Forwarded-For"] = tc.lines
			res, err := a.Test(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(res.Body)
			if res.StatusCode != 200 || string(got) != tc.want {
				t.Errorf("X-Forwarded-For %q: %d %s, want %s", tc.lines, res.StatusCode, got, tc.want)
			}
		})
	}
	// An untrusted peer's header is ignored, every line of it.
	req := httptest.NewRequest("GET", "/", nil)
	req.Header["X-Forwarded-For"] = []string{"203.0.113.9", "198.51.100.1"}
	res, _ := echoClientIP().Test(req)
	if got, _ := io.ReadAll(res.Body); res.StatusCode != 200 || string(got) != "0.0.0.0" {
		t.Errorf("untrusted peer: %d %s", res.StatusCode, got)
	}
}

// TestClientIPTrailerRefused: an X-Forwarded-For trailer, which a client
// writes after every proxy has added its line, is refused by fasthttp, which
// clientIP relies on in reading every X-Forwarded-For field.
func TestClientIPTrailerRefused(t *testing.T) {
	a := echoClientIP("127.0.0.1/32")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go a.Listener(ln)
	defer a.Shutdown()
	for _, announce := range []string{"", "Trailer: X-Forwarded-For\r\n"} {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(conn, "POST / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\nTransfer-Encoding: chunked\r\n"+
			announce+"\r\n2\r\nhi\r\n0\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(res.Body)
		res.Body.Close()
		conn.Close()
		if res.StatusCode != 400 {
			t.Errorf("X-Forwarded-For trailer (%q): %d %s, want 400", announce, res.StatusCode, got)
		}
	}
}
