package web

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"mime"
	"time"

	"github.com/gofiber/fiber/v2"
)

type ctxKey int

const requestIDKey ctxKey = iota

func requestID(c *fiber.Ctx) string {
	id, _ := c.Locals(requestIDKey).(string)
	return id
}

// logRequests gives each request an id (echoed in X-Request-ID) and logs one
// line when it ends. It logs the path without the query and no headers, so
// no credential reaches a log.
func logRequests(log *slog.Logger) fiber.Handler {
	return func(c *fiber.Ctx) error {
		start := time.Now()
		raw := make([]byte, 8)
		rand.Read(raw)
		id := hex.EncodeToString(raw)
		c.Locals(requestIDKey, id)
		c.Set(fiber.HeaderXRequestID, id)
		err := c.Next()
		if err != nil {
			// Answer now, so that the status logged is the one sent.
			if herr := c.App().ErrorHandler(c, err); herr != nil {
				c.Status(fiber.StatusInternalServerError)
			}
		}
		log.Info("request", "request_id", id, "method", c.Method(), "path", c.Path(),
			"status", c.Response().StatusCode(), "duration_ms", float64(time.Since(start).Microseconds())/1000, "ip", c.IP())
		return nil
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
