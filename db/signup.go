package db

import "modelswitch/errs"

// SignUpErrors checks every field of a sign-up at once, by the rules
// CreateUser applies one field at a time, so that a form can show each
// mistake together. None means CreateUser may go ahead.
func SignUpErrors(email, password string) []*errs.Error {
	var found []*errs.Error
	for _, err := range []error{
		func() error { _, err := normalizeEmail(email); return err }(),
		validatePassword(password),
	} {
		if e, ok := errs.As(err); ok {
			found = append(found, e)
		}
	}
	return found
}
