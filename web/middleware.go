package web

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/compress"
	"github.com/valyala/fasthttp"

	"modelswitch/db"
	"modelswitch/errs"
	"modelswitch/handlers"
	"modelswitch/web/request"
)

// logRequests gives each request an id (echoed in X-Request-ID) and its
// client's address, and logs one line when the answer is sent: when the
// handler returns or, for a streamed answer, when the stream ends. It logs
// the path without the query and no headers, so no credential reaches a log.
func logRequests(logLine func(*request.Info, string, string, int), trusted []netip.Prefix) fiber.Handler {
	return func(c *fiber.Ctx) error {
		info := &request.Info{ID: newRequestID(), ClientIP: clientIP(c, trusted), Start: time.Now()}
		request.Attach(c, info, logLine)
		c.Set(fiber.HeaderXRequestID, info.ID)
		c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
		if err := c.Next(); err != nil {
			// Answer now, so that the status logged is the one sent.
			if herr := c.App().ErrorHandler(c, err); herr != nil {
				c.Status(fiber.StatusInternalServerError)
			}
		}
		if !info.Streamed() {
			info.Finish(c.Response().StatusCode())
		}
		return nil
	}
}

// newRequestID is 16 random hexadecimal digits, from math/rand/v2's
// generator (ChaCha8, seeded from the system): no system call per request,
// and nothing a client could count requests or replicas by.
func newRequestID() string {
	var raw [8]byte
	binary.LittleEndian.PutUint64(raw[:], rand.Uint64())
	return hex.EncodeToString(raw[:])
}

// requestLog logs a request's line through log or, when lines is set,
// writes the same JSON straight to lines.
func requestLog(log *slog.Logger, lines io.Writer) func(info *request.Info, method, path string, status int) {
	if lines == nil {
		return func(info *request.Info, method, path string, status int) {
			// A handler may keep the record: method and path may be
			// Fiber's reused memory (request.Info).
			method, path = strings.Clone(method), strings.Clone(path)
			log.LogAttrs(context.Background(), slog.LevelInfo, "request", slog.String("request_id", info.ID),
				slog.String("method", method), slog.String("path", path), slog.Int("status", status),
				slog.Float64("duration_ms", durationMS(info.Start)), slog.String("ip", info.ClientIP))
		}
	}
	return func(info *request.Info, method, path string, status int) {
		b := make([]byte, 0, 256)
		b = append(b, `{"time":"`...)
		b = time.Now().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","level":"INFO","msg":"request","request_id":`...)
		b = appendJSONString(b, info.ID)
		b = append(b, `,"method":`...)
		b = appendJSONString(b, method)
		b = append(b, `,"path":`...)
		b = appendJSONString(b, path)
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(status), 10)
		b = append(b, `,"duration_ms":`...)
		b = strconv.AppendFloat(b, durationMS(info.Start), 'g', -1, 64)
		b = append(b, `,"ip":`...)
		b = appendJSONString(b, info.ClientIP)
		b = append(b, "}\n"...)
		lines.Write(b)
	}
}

func durationMS(start time.Time) float64 { return float64(time.Since(start).Microseconds()) / 1000 }

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 as U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r < 0x20:
			b = append(b, `\u00`...)
			b = append(b, "0123456789abcdef"[r>>4], "0123456789abcdef"[r&0xf])
		default:
			b = utf8.AppendRune(b, r) // an invalid byte reads as utf8.RuneError
		}
	}
	return append(b, '"')
}

// deadline bounds the work a handler does for one request. It is not
// cancelled when a graceful shutdown begins (fasthttp's own context would
// be), so in-flight requests finish. A streamed answer outlives it and keeps
// its own context.
func deadline(d time.Duration) fiber.Handler {
	return func(c *fiber.Ctx) error {
		ctx := &lazyDeadline{at: time.Now().Add(d)}
		defer ctx.end()
		c.SetUserContext(ctx)
		return c.Next()
	}
}

// lazyDeadline is context.WithDeadline whose timer starts only when
// something waits on it (a query, an upstream call): a request answered from
// memory, such as /v1/models on a cached key, costs no timer.
type lazyDeadline struct {
	at   time.Time
	once sync.Once
	ctx  context.Context
	stop context.CancelFunc
}

// cancelled is the context of a lazyDeadline whose request has ended
// before anything waited on it.
var cancelled = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

func (l *lazyDeadline) start() context.Context {
	l.once.Do(func() { l.ctx, l.stop = context.WithDeadline(context.Background(), l.at) })
	return l.ctx
}

// end cancels the context when the handler returns.
func (l *lazyDeadline) end() {
	l.once.Do(func() { l.ctx = cancelled })
	if l.stop != nil {
		l.stop()
	}
}

// AfterFunc lets contexts derived from this one (database/sql derives one
// for every query) follow it without a goroutine each: the context package
// watches a parent it does not know with a goroutine, unless it has this.
func (l *lazyDeadline) AfterFunc(f func()) (stop func() bool) { return context.AfterFunc(l.start(), f) }

func (l *lazyDeadline) Deadline() (time.Time, bool) { return l.at, true }
func (l *lazyDeadline) Done() <-chan struct{}       { return l.start().Done() }
func (l *lazyDeadline) Err() error                  { return l.start().Err() }
func (l *lazyDeadline) Value(any) any               { return nil }

// recoverPanics turns a panic into an internal error, logged by the error
// handler with the request id.
func recoverPanics(c *fiber.Ctx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return c.Next()
}

// requireJSON refuses request bodies that are not declared as JSON.
func requireJSON(c *fiber.Ctx) error {
	if len(c.Body()) == 0 {
		return c.Next()
	}
	mt, _, err := mime.ParseMediaType(string(c.Request().Header.ContentType()))
	if err != nil || mt != fiber.MIMEApplicationJSON {
		return fiber.ErrUnsupportedMediaType
	}
	return c.Next()
}

// readBody reads a request's body as it arrives, up to the route's limit:
// the server holds what a client has sent, never what it declares it will
// send. A body over the limit, or cut off, is refused and the connection
// closed, so that its rest is not read.
func readBody(c *fiber.Ctx) error {
	stream := c.Context().RequestBodyStream()
	if stream == nil {
		return c.Next()
	}
	limit := MaxBody
	if isInference(c.Request().URI().Path()) {
		limit = MaxInferenceBody
	}
	if c.Request().Header.ContentLength() > limit {
		c.Context().SetConnectionClose()
		return fiber.ErrRequestEntityTooLarge
	}
	var body bytes.Buffer
	n, err := body.ReadFrom(io.LimitReader(stream, int64(limit)+1))
	switch {
	case n > int64(limit):
		c.Context().SetConnectionClose()
		return fiber.ErrRequestEntityTooLarge
	case err != nil:
		c.Context().SetConnectionClose()
		return fiber.ErrRequestTimeout
	}
	c.Request().SetBodyRaw(body.Bytes())
	return c.Next()
}

// knownMethods answers a method Fiber does not route (FOO /api/keys) with
// the JSON error every API client expects, where Fiber would send plain
// text before any middleware runs.
func knownMethods(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	known := map[string]bool{}
	for _, m := range fiber.DefaultMethods {
		known[m] = true
	}
	body, _ := encodeJSON(fiber.Map{"error": apiError{Code: "method_not_allowed", Message: fiberCodes[fiber.StatusMethodNotAllowed].message}})
	v1Body, _ := encodeJSON(fiber.Map{"error": openAIBody(fiber.StatusMethodNotAllowed, &errs.Error{
		Code: "method_not_allowed", Message: fiberCodes[fiber.StatusMethodNotAllowed].message})})
	return func(ctx *fasthttp.RequestCtx) {
		if known[string(ctx.Method())] {
			next(ctx)
			return
		}
		ctx.SetStatusCode(fiber.StatusMethodNotAllowed)
		ctx.SetContentType(fiber.MIMEApplicationJSONCharsetUTF8)
		ctx.Response.Header.Set(fiber.HeaderXContentTypeOptions, "nosniff")
		if isInference(ctx.Path()) {
			ctx.SetBody(v1Body)
		} else {
			ctx.SetBody(body)
		}
	}
}

// limitKeyWrites counts each write to keys against the billing key or the
// session that makes it, and refuses writes over perMinute with 429. The
// counts live in PostgreSQL, shared by every replica.
func limitKeyWrites(store *db.Store, perMinute int) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if c.Method() == fiber.MethodGet || c.Method() == fiber.MethodHead {
			return c.Next()
		}
		info := request.Get(c)
		scope := "session:" + db.SessionHandle(info.SessionID) // a digest: the id itself is a credential
		if info.KeyID != 0 {
			scope = "key:" + strconv.FormatInt(info.KeyID, 10)
		}
		if err := store.CountKeyWrite(c.UserContext(), scope, perMinute); err != nil {
			return err
		}
		return c.Next()
	}
}

// cacheFor lets the client cache an answer that changes rarely.
func cacheFor(d time.Duration) fiber.Handler {
	value := "private, max-age=" + strconv.Itoa(int(d.Seconds()))
	return func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderCacheControl, value)
		return c.Next()
	}
}

// noStore keeps responses out of every cache.
func noStore(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Next()
}

// clientIP is the peer's address or, when the peer is a trusted proxy, the
// right-most address in X-Forwarded-For that is not a trusted proxy: the
// left part of that header is whatever the client chose to send. A proxy may
// add a header line of its own rather than append to the last, so every line
// counts, in order. (fasthttp refuses X-Forwarded-For as a trailer, which a
// client would write after every proxy.)
func clientIP(c *fiber.Ctx, trusted []netip.Prefix) string {
	addr, _ := netip.AddrFromSlice(c.Context().RemoteIP())
	addr = addr.Unmap()
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	if !isTrusted(addr) {
		return addr.String()
	}
	var hops []string
	for _, line := range c.Request().Header.PeekAll(fiber.HeaderXForwardedFor) {
		hops = append(hops, strings.Split(string(line), ",")...)
	}
	// A hop is ip, ip:port, [ipv6]:port or [ipv6].
	parse := func(hop string) (netip.Addr, bool) {
		hop = strings.TrimSpace(hop)
		if a, err := netip.ParseAddr(hop); err == nil {
			return a, true
		}
		if ap, err := netip.ParseAddrPort(hop); err == nil {
			return ap.Addr(), true
		}
		if v6, ok := strings.CutPrefix(hop, "["); ok && strings.HasSuffix(v6, "]") {
			a, err := netip.ParseAddr(strings.TrimSuffix(v6, "]"))
			return a, err == nil && a.Is6()
		}
		return netip.Addr{}, false
	}
	for i := len(hops) - 1; i >= 0; i-- {
		hop, ok := parse(hops[i])
		if !ok {
			break
		}
		addr = hop.WithZone("").Unmap()
		if !isTrusted(addr) {
			break
		}
	}
	return addr.String()
}

// pageHeaders keeps dashboard pages out of caches and frames, lets them run
// only this site's own scripts and styles and, in production, keeps browsers
// on HTTPS.
func pageHeaders(production bool) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if production {
			c.Set(fiber.HeaderStrictTransportSecurity, "max-age=31536000; includeSubDomains")
		}
		c.Set(fiber.HeaderCacheControl, "no-store")
		c.Set(fiber.HeaderContentSecurityPolicy, "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
		c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
		c.Set(fiber.HeaderReferrerPolicy, "same-origin")
		c.Set(fiber.HeaderXFrameOptions, "DENY")
		return c.Next()
	}
}

// signInFirst sends a dashboard request that has no live browser session
// (signed out, the cookie gone, the session ended) to sign in, and back to
// its page afterwards: htmx follows HX-Redirect, a plain request a 303. It
// runs before the CSRF check, which such a request would fail (its token
// went with the session) with a 403 that htmx drops in silence. Nothing is
// weakened: without a session the request does nothing but get this
// redirect, and every request with one is still checked.
func signInFirst(c *fiber.Ctx) error {
	if request.UserID(c) != 0 {
		return c.Next()
	}
	return handlers.Redirect(c, handlers.SignInPath(returnTo(c)))
}

// returnTo is the dashboard page to come back to after signing in: the page
// asked for or, for a form sent from a page, that page (htmx's
// HX-Current-URL, the browser's same-origin Referer); else the dashboard.
func returnTo(c *fiber.Ctx) string {
	if c.Method() == fiber.MethodGet || c.Method() == fiber.MethodHead {
		if next := handlers.NextPath(c.OriginalURL()); next != "" {
			return next
		}
		return "/dashboard"
	}
	for _, from := range []string{c.Get("HX-Current-URL"), c.Get(fiber.HeaderReferer)} {
		u, err := url.Parse(from)
		if err != nil || u.Host == "" || u.Host != string(c.Request().Host()) {
			continue
		}
		if next := handlers.NextPath(u.RequestURI()); next != "" {
			return next
		}
	}
	return "/dashboard"
}

// answerErrors answers a handler's error where it is raised rather than in
// logRequests, so that the middleware around it (compression) sees the
// answer.
func answerErrors(c *fiber.Ctx) error {
	if err := c.Next(); err != nil {
		if herr := c.App().ErrorHandler(c, err); herr != nil {
			c.Status(fiber.StatusInternalServerError)
		}
	}
	return nil
}

// compressAnswers compresses answers with brotli, gzip, deflate or zstd as
// the client's Accept-Encoding allows (none without it, none that it marks
// q=0), and only where it pays: fasthttp leaves bodies under 200 bytes and
// types other than text and JSON as they are, and adds Vary:
// Accept-Encoding to what it compresses. The fastest level: pages are
// rendered per request, and at the default level compressing the API Keys
// page cost more than rendering it, for a few percent of its size.
func compressAnswers() fiber.Handler {
	return compress.New(compress.Config{Level: compress.LevelBestSpeed})
}
