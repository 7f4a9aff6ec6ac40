// Package errs holds the kinds of failure that every layer reports (the
// store, the handlers, the gateway) and the one table that maps each kind to
// an HTTP status. An *Error's Message is written for the client: it says what
// to do and never carries a secret, a stack trace or SQL.
package errs

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies what went wrong.
type Kind int

const (
	Internal        Kind = iota // a bug: 500, logged, never shown
	Invalid                     // the request is wrong: 400
	Unauthorized                // no valid credential: 401
	PaymentRequired             // not enough money: 402
	Forbidden                   // valid credential, not allowed: 403
	NotFound                    // not one of the caller's: 404
	Conflict                    // clashes with existing state: 409
	RateLimited                 // too many requests: 429
	Upstream                    // a model provider failed: 502
	Unavailable                 // a dependency does not answer: 503
	UpstreamTimeout             // a model provider did not answer in time: 504
)

// statuses is the one table from kinds to HTTP statuses.
var statuses = map[Kind]int{
	Internal:        500,
	Invalid:         400,
	Unauthorized:    401,
	PaymentRequired: 402,
	Forbidden:       403,
	NotFound:        404,
	Conflict:        409,
	RateLimited:     429,
	Upstream:        502,
	Unavailable:     503,
	UpstreamTimeout: 504,
}

// Error is a failure whose Message is safe to show to the client.
type Error struct {
	Kind    Kind
	Code    string // stable, machine-readable: "key_not_found"
	Message string // says what to do
	Field   string // the request field at fault, if one is
	// RetryAfter, when set, is sent as Retry-After (rate limits, outages).
	RetryAfter time.Duration
	// Status overrides the kind's status: an upstream's own 4xx is passed on.
	Status int
	// Cause is what went wrong underneath, for the log; never shown.
	Cause error
}

// Unwrap exposes Cause to errors.Is and errors.As.
func (e *Error) Unwrap() error { return e.Cause }

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s (%s)", e.Code, e.Message, e.Field)
	}
	return e.Code + ": " + e.Message
}

// HTTPStatus is the status the error is answered with.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	return statuses[e.Kind]
}

// New returns an error of kind with a stable code and a client-facing message.
func New(kind Kind, code, message string) *Error {
	return &Error{Kind: kind, Code: code, Message: message}
}

// InvalidField reports a bad value in one request field.
func InvalidField(field, code, message string) *Error {
	return &Error{Kind: Invalid, Code: code, Message: message, Field: field}
}

// As returns the *Error in err's chain, if there is one.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// Is reports whether err is an *Error of kind.
func Is(err error, kind Kind) bool {
	e, ok := As(err)
	return ok && e.Kind == kind
}
