package web

import (
	"errors"
	"log/slog"
	"strings"

	"github.com/gofiber/fiber/v2"

	"modelswitch/errs"
	"modelswitch/handlers"
	"modelswitch/web/request"
)

// fiberCodes names the errors Fiber itself raises (routing, body limits).
var fiberCodes = map[int]struct{ code, message string }{
	fiber.StatusNotFound:              {"not_found", "No such endpoint. See the API reference for the routes."},
	fiber.StatusMethodNotAllowed:      {"method_not_allowed", "This endpoint does not take this method."},
	fiber.StatusRequestEntityTooLarge: {"body_too_large", "The request body is too large: at most 64 KiB, or 8 MiB under /v1."},
	fiber.StatusUnsupportedMediaType:  {"unsupported_media_type", "Send the body as JSON with Content-Type: application/json."},
	fiber.StatusBadRequest:            {"bad_request", "The request is malformed."},
	fiber.StatusRequestTimeout:        {"timeout", "The request took too long to arrive, or was cut off."},
}

// classify turns any error into a status and an *errs.Error safe to show.
// Anything unexpected is logged with the request id and shown as
// "internal error".
func classify(c *fiber.Ctx, log *slog.Logger, err error) (int, *errs.Error) {
	if e, ok := errs.As(err); ok && e.Kind != errs.Internal {
		if e.Kind == errs.Unavailable && e.Cause != nil {
			log.Warn("dependency unavailable", "request_id", request.Get(c).ID, "path", c.Path(), "error", e.Cause)
		}
		handlers.SetRetryAfter(c, e)
		return e.HTTPStatus(), e
	}
	var fe *fiber.Error
	if errors.As(err, &fe) {
		if known, ok := fiberCodes[fe.Code]; ok {
			return fe.Code, &errs.Error{Code: known.code, Message: known.message}
		}
		if fe.Code < 500 {
			return fe.Code, &errs.Error{Code: "request_refused", Message: fe.Message}
		}
	}
	id := request.Get(c).ID
	log.Error("internal error", "request_id", id, "method", c.Method(), "path", c.Path(), "error", err)
	return fiber.StatusInternalServerError, &errs.Error{Code: "internal_error",
		Message: "Something went wrong on our side. Try again; if it persists, contact support with the request id " + id + "."}
}

// apiError is the JSON body of every error under /api.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// openAIError is the body of every error under /v1, in OpenAI's shape so
// that SDKs show it; code and message are the same as under /api.
type openAIError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Code    string  `json:"code"`
	Param   *string `json:"param"`
}

// openAITypes is OpenAI's error type for each status.
var openAITypes = map[int]string{
	400: "invalid_request_error", 401: "authentication_error", 402: "insufficient_quota",
	403: "permission_error", 404: "not_found_error", 409: "invalid_request_error",
	413: "invalid_request_error", 415: "invalid_request_error", 429: "rate_limit_error",
}

func openAIBody(status int, e *errs.Error) openAIError {
	typ, ok := openAITypes[status]
	if !ok {
		typ = "api_error"
		if status < 500 {
			typ = "invalid_request_error"
		}
	}
	var param *string
	if e.Field != "" {
		param = &e.Field
	}
	return openAIError{Message: e.Message, Type: typ, Code: e.Code, Param: param}
}

// face is which kind of client a path serves.
type face int

const (
	dashboardFace face = iota
	apiFace
	inferenceFace
)

// faceOf tells how an error is answered: as OpenAI's JSON under /v1, as
// ModelSwitch's JSON under /api and /healthz and for errors the HTTP server
// raises before a request reaches the middleware (an oversized body or
// header, which carry no request id), and as a page elsewhere.
func faceOf(c *fiber.Ctx) face {
	p := c.Path()
	switch {
	case strings.HasPrefix(p, "/v1/") || p == "/v1":
		return inferenceFace
	case request.Get(c).ID == "", strings.HasPrefix(p, "/api/"), p == "/api", p == "/healthz", p == "/readyz", p == "/livez":
		return apiFace
	}
	return dashboardFace
}

// errorHandler replaces Fiber's default, which would send err.Error() to the
// client.
func errorHandler(log *slog.Logger) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		status, e := classify(c, log, err)
		switch faceOf(c) {
		case inferenceFace:
			return c.Status(status).JSON(fiber.Map{"error": openAIBody(status, e)})
		case apiFace:
			return c.Status(status).JSON(fiber.Map{"error": apiError{e.Code, e.Message, e.Field}})
		}
		if status == fiber.StatusNotFound && e.Code == fiberCodes[fiber.StatusNotFound].code {
			return handlers.NotFoundPage(c) // an address that leads nowhere, not a missing key
		}
		return handlers.ErrorPage(c, status, e.Message)
	}
}
