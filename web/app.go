// Package web builds the Fiber application: configuration, middleware,
// routes and the error handler. New needs no network port, so tests drive
// the app with app.Test.
package web

import (
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/handlers"
	"modelswitch/web/token"
)

// MaxBody is the largest request body accepted.
const MaxBody = 1 << 20

// New returns the whole application.
func New(cfg Config, store *db.Store, log *slog.Logger) *fiber.App {
	app := fiber.New(fiber.Config{
		AppName:                 "ModelSwitch",
		BodyLimit:               MaxBody,
		ReadTimeout:             15 * time.Second,
		WriteTimeout:            15 * time.Second,
		IdleTimeout:             60 * time.Second,
		DisableStartupMessage:   true,
		ErrorHandler:            errorHandler(log, nil),
		EnableTrustedProxyCheck: len(cfg.TrustedProxies) > 0,
		TrustedProxies:          cfg.TrustedProxies,
		ProxyHeader:             proxyHeader(cfg),
	})
	app.Use(logRequests(log), recoverPanics)

	tokens := token.NewSigner(cfg.derive("jwt"))
	billingKey := requireKey(store, apikey.Billing)
	proxyKey := requireKey(store, apikey.Proxy)
	session := requireSession(store, tokens)
	auth := &handlers.AuthAPI{Store: store, Tokens: tokens}
	proxyKeys := &handlers.KeysAPI{Store: store, Kind: apikey.Proxy}
	billingKeys := &handlers.KeysAPI{Store: store, Kind: apikey.Billing}

	app.Get("/healthz", handlers.Health(store))

	api := app.Group("/api", noStore, requireJSON)
	api.Post("/auth/signup", auth.Signup)
	api.Post("/auth/login", auth.Login)
	api.Post("/auth/logout", session, auth.Logout)

	api.Get("/billing-keys", session, billingKeys.List)
	api.Post("/billing-keys", session, billingKeys.Create)
	api.Delete("/billing-keys/:id", session, billingKeys.Delete)

	api.Get("/keys", billingKey, proxyKeys.List)
	api.Post("/keys", billingKey, proxyKeys.Create)
	api.Put("/keys/:id", billingKey, proxyKeys.Update)
	api.Delete("/keys/:id", billingKey, proxyKeys.Delete)

	v1 := app.Group("/v1", requireJSON)
	v1.Get("/models", proxyKey, handlers.Models)

	app.Use(func(c *fiber.Ctx) error { return fiber.ErrNotFound })
	return app
}

func proxyHeader(cfg Config) string {
	if len(cfg.TrustedProxies) > 0 {
		return fiber.HeaderXForwardedFor
	}
	return ""
}
