// Package request holds who and what a request is: its id, the client's
// address, and the account, session or key that authenticated it. The web
// middleware writes it; handlers read it, so that handlers depend on this
// small package and not on how a credential was checked.
package request

import (
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
)

// Info is one request's identity. Fiber reuses a request's context after the
// handler returns, so Info is what a streamed answer keeps instead.
type Info struct {
	ID       string // random, echoed in X-Request-ID and every log line
	ClientIP string // as resolved behind trusted proxies
	Start    time.Time

	UserID    int64  // the authenticated account; 0 when signed out
	SessionID string // the session that authenticated the request, if one did
	KeyID     int64  // the key that authenticated the request, if one did
	Key       db.Key // that key as it was verified (from the key cache): its limit and models
	Email     string // the signed-in account's email (dashboard only)
	CSRF      string // the browser session's CSRF token (dashboard only)

	// log writes the request's line; Finish calls it once. method and path
	// are Fiber's own until the handler returns, copies once streamed.
	log          func(info *Info, method, path string, status int)
	method, path string
	streamed     bool
}

type localKey struct{}

// Attach gives c a fresh Info; log is called once, by Finish.
func Attach(c *fiber.Ctx, info *Info, log func(info *Info, method, path string, status int)) {
	info.log, info.method, info.path = log, c.Method(), c.Path()
	c.Locals(localKey{}, info)
}

// Get is the request's Info; never nil.
func Get(c *fiber.Ctx) *Info {
	if info, ok := c.Locals(localKey{}).(*Info); ok {
		return info
	}
	return &Info{}
}

// UserID is the authenticated account's id, 0 when there is none.
func UserID(c *fiber.Ctx) int64 { return Get(c).UserID }

// ClientIP is the client's address, for throttles.
func ClientIP(c *fiber.Ctx) string { return Get(c).ClientIP }

// Stream tells the middleware that the answer is written after the handler
// returns: the request is logged by the returned func, which the stream
// calls once when it ends, with the status it sent.
func Stream(c *fiber.Ctx) (done func(status int)) {
	info := Get(c)
	info.streamed = true
	// Fiber reuses c once the handler returns; the stream logs later.
	info.method, info.path = strings.Clone(info.method), strings.Clone(info.path)
	return info.Finish
}

// Streamed reports whether the handler handed the answer to a stream.
func (i *Info) Streamed() bool { return i.streamed }

// Finish logs the request once.
func (i *Info) Finish(status int) {
	if log := i.log; log != nil {
		i.log = nil
		log(i, i.method, i.path, status)
	}
}
