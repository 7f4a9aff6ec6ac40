package web

import (
	"errors"
	"log/slog"
	"math"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
	"modelswitch/handlers"
)

// statusOf is the one table from domain error kinds to HTTP statuses.
var statusOf = map[db.Kind]int{
	db.KindInvalid:      fiber.StatusBadRequest,
	db.KindUnauthorized: fiber.StatusUnauthorized,
	db.KindNotFound:     fiber.StatusNotFound,
	db.KindConflict:     fiber.StatusConflict,
	db.KindRateLimited:  fiber.StatusTooManyRequests,
	db.KindUnavailable:  fiber.StatusServiceUnavailable,
}

// fiberCodes names the errors Fiber itself raises (routing, body limits).
var fiberCodes = map[int]struct{ code, message string }{
	fiber.StatusNotFound:              {"not_found", "No such endpoint. See the API reference for the routes."},
	fiber.StatusMethodNotAllowed:      {"method_not_allowed", "This endpoint does not take this method."},
	fiber.StatusRequestEntityTooLarge: {"body_too_large", "The request body is over 1 MiB."},
	fiber.StatusUnsupportedMediaType:  {"unsupported_media_type", "Send the body as JSON with Content-Type: application/json."},
	fiber.StatusBadRequest:            {"bad_request", "The request is malformed."},
	fiber.StatusRequestTimeout:        {"timeout", "The request took too long to arrive."},
}

// apiError is the JSON body of every error under /api and /v1.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// classify turns any error into a status and a message safe to show.
// Anything unexpected is logged with the request id and shown as
// "internal error".
func classify(c *fiber.Ctx, log *slog.Logger, err error) (int, apiError) {
	if e, ok := db.AsError(err); ok {
		if e.Kind == db.KindRateLimited {
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
		}
		return statusOf[e.Kind], apiError{e.Code, e.Message, e.Field}
	}
	var fe *fiber.Error
	if errors.As(err, &fe) {
		if known, ok := fiberCodes[fe.Code]; ok {
			return fe.Code, apiError{Code: known.code, Message: known.message}
		}
		if fe.Code < 500 {
			return fe.Code, apiError{Code: "request_refused", Message: fe.Message}
		}
	}
	log.Error("internal error", "request_id", requestID(c), "method", c.Method(), "path", c.Path(), "error", err)
	return fiber.StatusInternalServerError, apiError{Code: "internal_error",
		Message: "Something went wrong on our side. Try again; if it persists, contact support with the request id " + requestID(c) + "."}
}

// isAPI tells whether an error is answered as JSON: under /api, /v1 and
// /healthz, and for errors the HTTP server raises before a request reaches
// the middleware (an oversized body or header), which carry no request id.
func isAPI(c *fiber.Ctx) bool {
	if requestID(c) == "" {
		return true
	}
	p := c.Path()
	return strings.HasPrefix(p, "/api/") || strings.HasPrefix(p, "/v1/") || p == "/api" || p == "/v1" || p == "/healthz"
}

// errorHandler replaces Fiber's default, which would send err.Error() to the
// client: the API gets the JSON error shape, the dashboard an error page.
func errorHandler(log *slog.Logger) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		status, body := classify(c, log, err)
		if isAPI(c) {
			return c.Status(status).JSON(fiber.Map{"error": body})
		}
		return handlers.ErrorPage(c, status, body.Message)
	}
}
