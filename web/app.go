// Package web builds the Fiber application: middleware, routes and the error
// handler. New needs no network port, so tests drive the app with app.Test.
package web

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/compress"
	"github.com/gofiber/fiber/v2/middleware/filesystem"
	"github.com/valyala/fasthttp"

	"modelswitch/assets"
	"modelswitch/config"
	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/gateway"
	"modelswitch/handlers"
	"modelswitch/web/session"
	"modelswitch/web/token"
)

// Limits per route group: account and dashboard requests are small and
// quick; the inference API takes whole conversations and streams answers
// for minutes.
const (
	MaxBody             = 1 << 20
	MaxInferenceBody    = 8 << 20
	requestTimeout      = 10 * time.Second
	writeTimeout        = 15 * time.Second
	inferenceWriteLimit = 15 * time.Minute
)

// limitsFor applies a route group's limits as soon as a request's header
// has arrived, before the server reads a byte of its body.
func limitsFor(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if p := h.RequestURI(); bytes.HasPrefix(p, []byte("/v1/")) {
		return fasthttp.RequestConfig{MaxRequestBodySize: MaxInferenceBody, WriteTimeout: inferenceWriteLimit}
	}
	return fasthttp.RequestConfig{}
}

// New returns the whole application: the JSON API under /api and /v1, and
// the dashboard around it.
func New(cfg config.Config, store *db.Store, catalog *gateway.Catalog, log *slog.Logger) *fiber.App {
	app := fiber.New(fiber.Config{
		AppName:               "ModelSwitch",
		BodyLimit:             MaxBody, // limitsFor raises it for /v1
		ReadTimeout:           15 * time.Second,
		WriteTimeout:          writeTimeout,
		IdleTimeout:           60 * time.Second,
		DisableStartupMessage: true,
		ErrorHandler:          errorHandler(log),
		JSONEncoder:           encodeJSON,
	})
	app.Server().HeaderReceived = limitsFor
	app.Use(logRequests(log, cfg.TrustedProxies), recoverPanics)

	tokens := token.NewSigner(cfg.Derive("jwt"))
	sessions := session.New(cfg.Derive("cookie-hash"), cfg.Derive("cookie-block"), cfg.Production, store)

	app.Get("/healthz", deadline(requestTimeout), handlers.Health(store))
	app.Use("/healthz", func(*fiber.Ctx) error { return fiber.ErrMethodNotAllowed })
	app.Use("/assets", compress.New(), filesystem.New(filesystem.Config{
		Root:   http.FS(assets.Static),
		MaxAge: 365 * 24 * 3600, // URLs carry a content hash
	}))

	// The JSON API: bearer credentials only, never a cookie.
	auth := &handlers.AuthAPI{Store: store, Tokens: tokens}
	proxyKeys := &handlers.KeysAPI{Store: store, Kind: apikey.Proxy}
	billingKeys := &handlers.KeysAPI{Store: store, Kind: apikey.Billing}
	sessionJWT := requireSession(store, tokens)
	billingKey := requireKey(store, apikey.Billing)
	proxyKey := requireKey(store, apikey.Proxy)

	api := app.Group("/api", deadline(requestTimeout), noStore, requireJSON)
	api.Post("/auth/signup", auth.Signup)
	api.Post("/auth/login", auth.Login)
	api.Post("/auth/logout", sessionJWT, auth.Logout)
	api.Get("/billing-keys", sessionJWT, billingKeys.List)
	api.Post("/billing-keys", sessionJWT, billingKeys.Create)
	api.Delete("/billing-keys/:id", sessionJWT, billingKeys.Delete)
	api.Get("/keys", billingKey, proxyKeys.List)
	api.Post("/keys", billingKey, proxyKeys.Create)
	api.Put("/keys/:id", billingKey, proxyKeys.Update)
	api.Delete("/keys/:id", billingKey, proxyKeys.Delete)
	ledger := &handlers.LedgerAPI{Store: store}
	api.Get("/balance", billingKey, ledger.Balance)
	api.Get("/usage", billingKey, ledger.Usage)
	api.Get("/transactions", billingKey, ledger.Transactions)
	api.Get("/generations/:id", billingKey, ledger.Generation)
	api.Use(notFound)

	inference := &handlers.Inference{Store: store, Catalog: catalog, Log: log}
	v1 := app.Group("/v1", deadline(requestTimeout), requireJSON, proxyKey)
	v1.Get("/models", inference.Models)
	v1.Get("/key", inference.Key)
	v1.Post("/chat/completions", inference.Chat)
	v1.Post("/embeddings", inference.Embeddings)
	v1.Use(notFound)

	// The dashboard: cookie sessions and CSRF tokens.
	authPages := &handlers.AuthPages{Store: store, Sessions: sessions}
	proxyPages := &handlers.KeysPages{Store: store, Kind: apikey.Proxy}
	billingPages := &handlers.KeysPages{Store: store, Kind: apikey.Billing}

	pages := app.Group("/", deadline(requestTimeout), pageHeaders(cfg.Production), sessions.Load, session.CheckCSRF)
	pages.Get("/", authPages.Home)
	pages.Get("/signup", authPages.ShowSignUp)
	pages.Post("/signup", authPages.SignUp)
	pages.Get("/signin", authPages.ShowSignIn)
	pages.Post("/signin", authPages.SignIn)
	pages.Post("/signout", authPages.SignOut)
	pages.Post("/signout-everywhere", requireUser, authPages.SignOutEverywhere)

	ledgerPages := &handlers.LedgerPages{Store: store, Catalog: catalog}
	dash := pages.Group("/dashboard", requireUser, handlers.ShowBalance(store))
	dash.Get("/", authPages.Home)
	dash.Get("/usage", ledgerPages.Usage)
	dash.Get("/transactions", ledgerPages.Transactions)
	dash.Get("/keys", proxyPages.Show)
	dash.Post("/keys", proxyPages.Create)
	dash.Post("/keys/:id", proxyPages.Update)
	dash.Post("/keys/:id/limits", proxyPages.UpdateLimits)
	dash.Post("/keys/:id/delete", proxyPages.Delete)
	dash.Get("/billing-keys", billingPages.Show)
	dash.Post("/billing-keys", billingPages.Create)
	dash.Post("/billing-keys/:id/delete", billingPages.Delete)
	app.Use(notFound)
	return app
}

func notFound(*fiber.Ctx) error { return fiber.ErrNotFound }

// encodeJSON is encoding/json without HTML escaping: API messages show "<"
// as "<", not "\u003c".
func encodeJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
