package web

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log/slog"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
	"modelswitch/errs"
	"modelswitch/web/request"
)

// IdempotencyHeader names the client's key for a POST under /api.
const IdempotencyHeader = "Idempotency-Key"

var errBadIdempotencyKey = &errs.Error{Kind: errs.Invalid, Code: "invalid_idempotency_key",
	Message: "The Idempotency-Key header must be 1 to 255 visible ASCII characters; a random UUID is a good choice."}

// idempotent makes an authenticated POST under /api safe to retry: with an
// Idempotency-Key header, the first request with that key on the account
// does the work, and a retry within 24 hours gets its answer again (status
// and body, marked Idempotent-Replayed: true) without doing anything. The
// same key with another request (method, URL or body) → 422
// idempotency_key_reused; a retry while the first is still in flight → 409
// idempotency_in_progress, with Retry-After. Only successful answers are
// kept: a request that failed did nothing, so its key may be used again.
//
// It runs after authentication, on routes that have an account to scope
// keys to; sign-up and log-in have none and ignore the header. It runs
// before the write limit, so that a replay is not counted as a write.
func idempotent(store *db.Store, log *slog.Logger) fiber.Handler {
	return func(c *fiber.Ctx) error {
		value := c.Get(IdempotencyHeader)
		userID := request.UserID(c)
		if c.Method() != fiber.MethodPost || value == "" || userID == 0 {
			return c.Next()
		}
		if !validIdempotencyKey(value) {
			return errBadIdempotencyKey
		}
		claim, replay, err := store.ClaimIdempotencyKey(c.UserContext(), db.IdempotencyKey{
			UserID:  userID,
			Scope:   "api",
			Value:   strings.Clone(value),
			Request: apiRequest(c.Method(), c.OriginalURL(), c.Body()),
		})
		if err != nil {
			return err
		}
		if replay != nil {
			contentType, body, _ := bytes.Cut(replay.Payload, []byte{'\n'})
			c.Set("Idempotent-Replayed", "true")
			c.Set(fiber.HeaderContentType, string(contentType))
			return c.Status(replay.Status).Send(body)
		}
		// The claim is settled even when the request's deadline has passed.
		settle, cancel := context.WithTimeout(context.WithoutCancel(c.UserContext()), 5*time.Second)
		defer cancel()
		err = c.Next()
		status := c.Response().StatusCode()
		if err != nil || status < 200 || status > 299 {
			if rerr := claim.Release(settle); rerr != nil {
				log.Warn("idempotency key not released", "request_id", request.Get(c).ID, "error", rerr)
			}
			return err
		}
		payload := append(append(c.Response().Header.ContentType(), '\n'), c.Response().Body()...)
		if err := claim.Save(settle, status, payload); err != nil {
			// The work is done and the client gets its answer; a retry will
			// find the key in flight until its lease ends.
			log.Warn("idempotent answer not saved", "request_id", request.Get(c).ID, "error", err)
		}
		return nil
	}
}

// validIdempotencyKey: 1 to 255 visible ASCII characters, as Stripe takes.
func validIdempotencyKey(v string) bool {
	if len(v) > 255 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x21 || v[i] > 0x7e {
			return false
		}
	}
	return true
}

// apiRequest is what an Idempotency-Key stands for: the method, the URL and
// the body.
func apiRequest(method, url string, body []byte) []byte {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(method), []byte(url)} {
		h.Write(part)
		h.Write([]byte{0})
	}
	h.Write(body)
	return h.Sum(nil)
}
