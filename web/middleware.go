package web

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"mime"
	"net/netip"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"modelswitch/web/request"
)

// logRequests gives each request an id (echoed in X-Request-ID) and its
// client's address, and logs one line when the answer is sent: when the
// handler returns or, for a streamed answer, when the stream ends. It logs
// the path without the query and no headers, so no credential reaches a log.
func logRequests(log *slog.Logger, trusted []netip.Prefix) fiber.Handler {
	return func(c *fiber.Ctx) error {
		raw := make([]byte, 8)
		rand.Read(raw)
		info := &request.Info{ID: hex.EncodeToString(raw), ClientIP: clientIP(c, trusted), Start: time.Now()}
		// Fiber reuses c once the handler returns: a stream logs from copies.
		method, path := strings.Clone(c.Method()), strings.Clone(c.Path())
		request.Attach(c, info, func(status int) {
			log.Info("request", "request_id", info.ID, "method", method, "path", path, "status", status,
				"duration_ms", float64(time.Since(info.Start).Microseconds())/1000, "ip", info.ClientIP)
		})
		c.Set(fiber.HeaderXRequestID, info.ID)
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

// deadline bounds the work a handler does for one request. It is not
// cancelled when a graceful shutdown begins (fasthttp's own context would
// be), so in-flight requests finish. A streamed answer outlives it and keeps
// its own context.
func deadline(d time.Duration) fiber.Handler {
	return func(c *fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		c.SetUserContext(ctx)
		return c.Next()
	}
}

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

// noStore keeps responses out of every cache.
func noStore(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Next()
}

// clientIP is the peer's address or, when the peer is a trusted proxy, the
// right-most address in X-Forwarded-For that is not a trusted proxy: the
// left part of that header is whatever the client chose to send.
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
	hops := strings.Split(c.Get(fiber.HeaderXForwardedFor), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		addr = hop.Unmap()
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
