package handlers

import (
	"context"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Live: GET /livez → 200 while the process serves HTTP; it touches nothing
// else, so a busy or unreachable database never restarts a healthy process.
func Live(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"status": "ok"})
}

// Readiness is what Ready needs: a check, on a new connection, that the
// database answers now.
type Readiness interface {
	Ready(ctx context.Context) error
}

// Ready: GET /readyz (and /healthz) → 200 when the database answers now,
// 503 with Retry-After when not.
func Ready(r Readiness) fiber.Handler {
	return func(c *fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(c.UserContext(), time.Second)
		defer cancel()
		if err := r.Ready(ctx); err != nil {
			return err
		}
		return c.JSON(fiber.Map{"status": "ok"})
	}
}
