package db

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies what went wrong so that each face (JSON or HTML) can map it
// to a status once, in one table.
type Kind int

const (
	KindInvalid      Kind = iota + 1 // the request is wrong: 400
	KindUnauthorized                 // no valid credential: 401
	KindNotFound                     // not one of the caller's: 404
	KindConflict                     // clashes with existing state: 409
	KindRateLimited                  // too many attempts: 429
	KindUnavailable                  // the database does not answer: 503
)

// Error is a domain error whose Message is safe to show to the client.
type Error struct {
	Kind    Kind
	Code    string // stable, machine-readable: "key_not_found"
	Message string // says what to do; never carries a secret
	Field   string // the request field at fault, if one is
	// RetryAfter is set on KindRateLimited.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s (%s)", e.Code, e.Message, e.Field)
	}
	return e.Code + ": " + e.Message
}

// Invalid reports a bad value in one request field.
func Invalid(field, code, message string) *Error {
	return &Error{Kind: KindInvalid, Code: code, Message: message, Field: field}
}

// AsError returns the domain error in err's chain, if there is one.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

var (
	ErrKeyNotFound = &Error{Kind: KindNotFound, Code: "key_not_found",
		Message: "No key with this id exists on your account. List your keys to find its id."}
	ErrBadCredentials = &Error{Kind: KindUnauthorized, Code: "invalid_credentials",
		Message: "The email or password is incorrect."}
	ErrEmailTaken = &Error{Kind: KindConflict, Code: "email_taken", Field: "email",
		Message: "An account with this email already exists. Log in instead."}
	ErrUnavailable = &Error{Kind: KindUnavailable, Code: "database_unavailable",
		Message: "The database is not answering."}
	ErrSessionEnded = &Error{Kind: KindUnauthorized, Code: "session_expired",
		Message: "Your session has ended. Log in again."}
)
