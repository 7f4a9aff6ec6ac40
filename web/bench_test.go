package web

import (
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"modelswitch/db"
	"modelswitch/db/money"
)

// BenchmarkModels is the router's own work on an authenticated
// GET /v1/models (request id, log line, key check from the cache), without
// the network: beside BenchmarkModelsBareFiber, the same answer from a
// Fiber app with no middleware. make bench measures both over TCP.
func BenchmarkModels(b *testing.B) {
	_, key := proxyKey(b, billingKey(b, signup(b)))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// As main.go serves: request lines written straight to the log's output.
	benchmarkGet(b, newApp(b, testCfg, store, builtinCatalog, log, WithRequestLines(io.Discard)), "/v1/models", key)
}

func BenchmarkModelsBareFiber(b *testing.B) {
	_, key := proxyKey(b, billingKey(b, signup(b)))
	body := call(b, "GET", "/v1/models", key, nil).raw // the same bytes as ModelSwitch's
	bare := fiber.New()
	bare.Get("/v1/models", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.SendString(body)
	})
	benchmarkGet(b, bare, "/v1/models", "")
}

func benchmarkGet(b *testing.B, app *fiber.App, path, auth string) {
	var req fasthttp.Request
	req.SetRequestURI(path)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	benchmarkRequest(b, app, &req)
}

// benchmarkRequest serves req through app's handler in memory, as fasthttp
// would from a connection, and wants 200 each time.
func benchmarkRequest(b *testing.B, app *fiber.App, req *fasthttp.Request) {
	handler := app.Handler()
	addr := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 40000}
	var ctx fasthttp.RequestCtx
	b.ReportAllocs()
	for b.Loop() {
		ctx.Init(req, addr, nil)
		handler(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("%d %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

// BenchmarkChat is the router's own work on a metered chat completion,
// without the network: the built-in echo model answers in memory, so what
// is measured is reading the request, admitting it against the account's
// lease, metering the answer and logging.
func BenchmarkChat(b *testing.B) {
	jwt, email := signupWithEmail(b)
	if _, _, err := store.AddCredits(b.Context(), email, db.Credit{Amount: 1000 * money.Dollar}); err != nil {
		b.Fatal(err)
	}
	_, key := proxyKey(b, billingKey(b, jwt))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	app := newApp(b, testCfg, store, builtinCatalog, log, WithRequestLines(io.Discard))
	var req fasthttp.Request
	req.SetRequestURI("/v1/chat/completions")
	req.Header.SetMethod(fiber.MethodPost)
	req.Header.SetContentType(fiber.MIMEApplicationJSON)
	req.Header.Set("Authorization", key)
	req.SetBodyString(`{"model":"modelswitch/echo","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}`)
	benchmarkRequest(b, app, &req)
}
