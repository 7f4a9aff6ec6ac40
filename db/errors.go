package db

import (
	"modelswitch/errs"
)

// The store's own failures; the kinds and their statuses live in errs.
var (
	ErrKeyNotFound = &errs.Error{Kind: errs.NotFound, Code: "key_not_found",
		Message: "No key with this id exists on your account. List your keys to find its id."}
	ErrBadCredentials = &errs.Error{Kind: errs.Unauthorized, Code: "invalid_credentials",
		Message: "The email or password is incorrect."}
	ErrEmailTaken = &errs.Error{Kind: errs.Conflict, Code: "email_taken", Field: "email",
		Message: "An account with this email already exists. Log in instead."}
	ErrUnknownKey = &errs.Error{Kind: errs.Unauthorized, Code: "invalid_api_key",
		Message: "This key is unknown, inactive, expired or deleted."}
	ErrSessionEnded = &errs.Error{Kind: errs.Unauthorized, Code: "session_expired",
		Message: "Your session has ended. Log in again."}
)
