// Package web builds the Fiber application: middleware, routes and the error
// handler. New needs no network port, so tests drive the app with app.Test.
package web

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
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
	"modelswitch/web/mail"
	"modelswitch/web/session"
	"modelswitch/web/token"
)

// Limits per route group: account and dashboard requests are small and
// quick; the inference API takes whole conversations and streams answers
// for minutes.
const (
	MaxBody             = 64 << 10
	MaxInferenceBody    = 8 << 20
	requestTimeout      = 10 * time.Second
	readTimeout         = 15 * time.Second
	writeTimeout        = 15 * time.Second
	inferenceReadLimit  = time.Minute
	inferenceWriteLimit = 15 * time.Minute
)

func isInference(path []byte) bool { return bytes.HasPrefix(path, []byte("/v1/")) }

// limitsFor applies a route group's limits as soon as a request's header
// has arrived, before the server reads its body. The read timeout runs
// from the first byte of the request to the last of its body, so a slow
// sender cannot stretch it.
func limitsFor(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if isInference(h.RequestURI()) {
		return fasthttp.RequestConfig{MaxRequestBodySize: MaxInferenceBody,
			ReadTimeout: inferenceReadLimit, WriteTimeout: inferenceWriteLimit}
	}
	return fasthttp.RequestConfig{MaxRequestBodySize: MaxBody}
}

// New returns the whole application: the JSON API under /api and /v1, and
// the dashboard around it.
func New(cfg config.Config, store *db.Store, catalog *gateway.Catalog, log *slog.Logger, opts ...Option) *fiber.App {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	app := fiber.New(fiber.Config{
		AppName:   "ModelSwitch",
		BodyLimit: MaxBody, // limitsFor raises it for /v1
		// Bodies are read by readBody as they arrive, never into a buffer
		// of the size a client declares.
		StreamRequestBody:     true,
		ReadTimeout:           readTimeout,
		WriteTimeout:          writeTimeout,
		IdleTimeout:           60 * time.Second,
		DisableStartupMessage: true,
		ErrorHandler:          errorHandler(log),
		JSONEncoder:           encodeJSON,
	})
	app.Server().HeaderReceived = limitsFor
	app.Server().MaxConnsPerIP = cfg.MaxConnsPerIP
	app.Server().Handler = knownMethods(app.Server().Handler)
	app.Use(logRequests(requestLog(log, o.requestLines), cfg.TrustedProxies), recoverPanics, readBody)

	// Idempotency keys are sealed under keys derived from this secret.
	store = store.WithIdempotencySecret(cfg.Derive("idempotency"))
	tokens := token.NewSigner(cfg.Derive("jwt"))
	sessions := session.New(cfg.Derive("cookie-hash"), cfg.Derive("cookie-block"), cfg.Production, store)

	// Probes: /livez while the process serves, /readyz (and /healthz, its
	// older name) while the database answers.
	app.Get("/livez", noStore, handlers.Live)
	ready := handlers.Ready(store)
	app.Get("/readyz", noStore, deadline(requestTimeout), ready)
	app.Get("/healthz", noStore, deadline(requestTimeout), ready)
	for _, p := range []string{"/livez", "/readyz", "/healthz"} {
		app.Use(p, func(*fiber.Ctx) error { return fiber.ErrMethodNotAllowed })
	}
	app.Use("/assets", compress.New(), filesystem.New(filesystem.Config{
		Root:   http.FS(assets.Static),
		MaxAge: 365 * 24 * 3600, // URLs carry a content hash
	}))
	app.Get("/favicon.ico", handlers.Favicon)

	// The JSON API: bearer credentials only, never a cookie.
	auth := &handlers.AuthAPI{Store: store, Tokens: tokens}
	proxyKeys := &handlers.KeysAPI{Store: store, Kind: apikey.Proxy}
	billingKeys := &handlers.KeysAPI{Store: store, Kind: apikey.Billing}
	// Key checks come from memory, kept honest by PostgreSQL's notifications;
	// the key uses noted in memory are written when the server shuts down.
	keys := db.NewKeyCache(store, cfg.DatabaseListenURL, log)
	app.Hooks().OnShutdown(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return keys.Close(ctx)
	})
	sessionJWT := requireSession(store, tokens)
	billingKey := requireKey(keys, apikey.Billing)
	proxyKey := requireKey(keys, apikey.Proxy)
	writes := limitKeyWrites(store, cfg.KeyWritesPerMinute)
	// Every POST with an account to scope its Idempotency-Key to; sign-up
	// and log-in have none, and ignore the header.
	once := idempotent(store, log)

	// Answers under /api and of the dashboard are compressed (errors too,
	// answered inside); /v1 is not, streams or not.
	api := app.Group("/api", compressAnswers(), answerErrors, deadline(requestTimeout), noStore, requireJSON)
	api.Post("/auth/signup", auth.Signup)
	api.Post("/auth/login", auth.Login)
	api.Post("/auth/logout", sessionJWT, once, auth.Logout)
	api.Get("/billing-keys", sessionJWT, billingKeys.List)
	api.Post("/billing-keys", sessionJWT, once, writes, billingKeys.Create)
	api.Put("/billing-keys/:id", sessionJWT, writes, billingKeys.Update)
	api.Delete("/billing-keys/:id", sessionJWT, writes, billingKeys.Delete)
	api.Get("/keys", billingKey, proxyKeys.List)
	api.Post("/keys", billingKey, once, writes, proxyKeys.Create)
	api.Put("/keys/:id", billingKey, writes, proxyKeys.Update)
	api.Delete("/keys/:id", billingKey, writes, proxyKeys.Delete)
	ledger := &handlers.LedgerAPI{Store: store}
	api.Get("/balance", billingKey, ledger.Balance)
	api.Get("/usage", billingKey, ledger.Usage)
	api.Get("/transactions", billingKey, ledger.Transactions)
	api.Get("/generations/:id", billingKey, ledger.Generation)
	api.Use(notFound)

	inference := &handlers.Inference{Store: store, Catalog: catalog, Log: log}
	app.Hooks().OnShutdown(func() error { // after the server stopped waiting
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return inference.Drain(ctx)
	})
	v1 := app.Group("/v1", deadline(requestTimeout), noStore, requireJSON, proxyKey)
	v1.Get("/models", cacheFor(time.Minute), inference.Models)
	v1.Get("/key", inference.Key)
	v1.Post("/chat/completions", inference.Chat)
	v1.Post("/embeddings", inference.Embeddings)
	v1.Use(notFound)

	// The dashboard: cookie sessions and CSRF tokens.
	authPages := &handlers.AuthPages{Store: store, Sessions: sessions}
	proxyPages := &handlers.KeysPages{Store: store, Kind: apikey.Proxy}
	billingPages := &handlers.KeysPages{Store: store, Kind: apikey.Billing}

	pages := app.Group("/", compressAnswers(), answerErrors, deadline(requestTimeout), pageHeaders(cfg.Production), sessions.Load)
	// A request without a live session goes to sign in before its CSRF
	// token is checked (see signInFirst). "/signout" covers
	// "/signout-everywhere" too.
	pages.Use("/dashboard", signInFirst)
	pages.Use("/signout", signInFirst)
	pages.Use(session.CheckCSRF)
	pages.Get("/", authPages.Home)
	pages.Get("/signup", authPages.ShowSignUp)
	pages.Post("/signup", authPages.SignUp)
	pages.Get("/signin", authPages.ShowSignIn)
	pages.Post("/signin", authPages.SignIn)
	pages.Post("/signout", authPages.SignOut)
	pages.Get("/signout-everywhere", authPages.ConfirmSignOutEverywhere)
	pages.Post("/signout-everywhere", authPages.SignOutEverywhere)
	accountPages := newAccountPages(app, cfg, store, sessions, log, o)
	pages.Get("/forgot-password", accountPages.ShowForgot)
	pages.Post("/forgot-password", accountPages.Forgot)
	pages.Get("/reset-password", accountPages.ShowReset)
	pages.Post("/reset-password", accountPages.Reset)
	pages.Get("/account-deleted", accountPages.AccountDeleted)

	ledgerPages := &handlers.LedgerPages{Store: store, Catalog: catalog}
	dash := pages.Group("/dashboard", writes, handlers.ShowBalance(store))
	dash.Get("/", authPages.Home)
	dash.Get("/usage", ledgerPages.Usage)
	dash.Get("/transactions", ledgerPages.Transactions)
	dash.Get("/keys", proxyPages.Show)
	dash.Post("/keys", proxyPages.Create)
	dash.Post("/keys/:id", proxyPages.Update)
	dash.Post("/keys/:id/limits", proxyPages.UpdateLimits)
	dash.Post("/keys/:id/expiry", proxyPages.UpdateExpiry)
	dash.Post("/keys/:id/delete", proxyPages.Delete)
	dash.Get("/billing-keys", billingPages.Show)
	dash.Post("/billing-keys", billingPages.Create)
	dash.Post("/billing-keys/:id", billingPages.Update)
	dash.Post("/billing-keys/:id/expiry", billingPages.UpdateExpiry)
	dash.Post("/billing-keys/:id/delete", billingPages.Delete)
	dash.Get("/settings", accountPages.Settings)
	dash.Post("/settings/password", accountPages.ChangePassword)
	dash.Post("/settings/sessions/:handle/delete", accountPages.SignOutSession)
	dash.Post("/settings/delete", accountPages.DeleteAccount)
	app.Use(notFound)
	return app
}

func notFound(*fiber.Ctx) error { return fiber.ErrNotFound }

// Option sets what New takes beyond its Config.
type Option func(*options)

type options struct {
	mailer       mail.Sender
	publicURL    string
	requestLines io.Writer
}

// WithRequestLines writes the line logged for each request straight to w, in
// the JSON shape of slog's JSON handler, at a fraction of its cost (a line
// per request is the largest cost of an authenticated GET /v1/models).
// Without it request lines go through the app's logger like every other.
func WithRequestLines(w io.Writer) Option { return func(o *options) { o.requestLines = w } }

// WithMailer sends account mail (password reset links) through m. Without
// it, development writes each mail to the log and production sends none.
func WithMailer(m mail.Sender) Option { return func(o *options) { o.mailer = m } }

// WithPublicURL is the base of links in mail, like https://modelswitch.example.
// Without it links use the request's Host header.
func WithPublicURL(u string) Option { return func(o *options) { o.publicURL = u } }

// newAccountPages serves settings and password resets; their mail goes out
// through an outbox, drained when the server shuts down.
func newAccountPages(app *fiber.App, cfg config.Config, store *db.Store, sessions *session.Manager, log *slog.Logger, o options) *handlers.AccountPages {
	if o.mailer == nil {
		o.mailer, _ = mail.New("", cfg.Production, log) // never fails without a URL
	}
	outbox := mail.NewOutbox(o.mailer, log)
	app.Hooks().OnShutdown(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return outbox.Close(ctx)
	})
	_, noMail := o.mailer.(mail.Unsent)
	return &handlers.AccountPages{Store: store, Sessions: sessions, Mail: outbox, NoMail: noMail, Log: log,
		PublicURL: o.publicURL, Production: cfg.Production, BrowserIdle: session.IdleTimeout}
}

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
