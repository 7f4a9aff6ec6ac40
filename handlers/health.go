package handlers

import (
	"context"
	"time"

	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
)

// Health: GET /healthz → 200 when the database answers, 503 when not.
func Health(store *db.Store) fiber.Handler {
	return func(c *fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
		defer cancel()
		if err := store.Ping(ctx); err != nil {
			return db.ErrUnavailable
		}
		return c.JSON(fiber.Map{"status": "ok"})
	}
}
