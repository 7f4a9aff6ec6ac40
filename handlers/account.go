// Package handlers adapts HTTP requests to the store: one file per resource
// and face. JSON handlers (api_*.go) and dashboard handlers (pages_*.go) call
// the same store methods; only decoding and answering differ.
package handlers

import "github.com/gofiber/fiber/v2"

type localKey int

const (
	accountKey localKey = iota
	sessionKey
	clientIPKey
)

// SetAccount records the authenticated account; the auth middleware calls it.
func SetAccount(c *fiber.Ctx, userID int64, sessionID string) {
	c.Locals(accountKey, userID)
	c.Locals(sessionKey, sessionID)
}

// Account is the authenticated account's id.
func Account(c *fiber.Ctx) int64 {
	id, _ := c.Locals(accountKey).(int64)
	return id
}

// SessionID is the id of the session that authenticated the request, if a
// session did.
func SessionID(c *fiber.Ctx) string {
	id, _ := c.Locals(sessionKey).(string)
	return id
}

// SetClientIP records the client's address as resolved behind trusted proxies.
func SetClientIP(c *fiber.Ctx, ip string) { c.Locals(clientIPKey, ip) }

// ClientIP is the client's address, for throttling sign-ins.
func ClientIP(c *fiber.Ctx) string {
	ip, _ := c.Locals(clientIPKey).(string)
	return ip
}
