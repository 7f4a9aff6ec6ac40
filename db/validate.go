package db

import (
	"net/mail"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"modelswitch/db/apikey"
	"modelswitch/db/money"
	"modelswitch/errs"
)

const (
	maxNameLen     = 100
	minPasswordLen = 8
	maxPasswordLen = 256
	maxEmailLen    = 254
)

// normalizeEmail trims an email and checks it is one plain address.
func normalizeEmail(email string) (string, error) {
	email = strings.TrimSpace(email)
	if email == "" {
		return "", errs.InvalidField("email", "invalid_email", "Enter your email address.")
	}
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != email || len(email) > maxEmailLen || !utf8.ValidString(email) || strings.ContainsAny(email, "\x00\uFFFD") {
		return "", errs.InvalidField("email", "invalid_email", "Enter a valid email address, like name@example.com.")
	}
	return email, nil
}

func validatePassword(password string) error {
	n := utf8.RuneCountInString(password)
	if n < minPasswordLen || n > maxPasswordLen {
		return errs.InvalidField("password", "invalid_password", "Use a password of 8 to 256 characters.")
	}
	return nil
}

// normalizeKeyName trims a key name and checks its length and characters.
func normalizeKeyName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return "", errs.InvalidField("name", "invalid_name", "Give the key a name, like \"Production\".")
	}
	if utf8.RuneCountInString(name) > maxNameLen {
		return "", errs.InvalidField("name", "invalid_name", "Use a name of at most 100 characters.")
	}
	for _, r := range name {
		// Format characters (bidi overrides, zero-width spaces) could make a name pass for another.
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError {
			return "", errs.InvalidField("name", "invalid_name", "Names cannot contain control or invisible formatting characters, or invalid UTF-8.")
		}
	}
	return name, nil
}

// normalizeExpiry keeps an expiry to the second, in UTC, and checks it is
// in the future.
func normalizeExpiry(at *time.Time, now time.Time) (*time.Time, error) {
	if at == nil {
		return nil, nil
	}
	t := at.UTC().Truncate(time.Second)
	if !t.After(now) {
		return nil, errs.InvalidField("expires_at", "invalid_expires_at", "Choose an expiry in the future, or leave it out for a key that does not expire.")
	}
	if t.Year() > 9999 {
		return nil, errs.InvalidField("expires_at", "invalid_expires_at", "Choose an expiry before the year 10000.")
	}
	return &t, nil
}

// Limit resets a proxy key's window can have.
var limitResets = map[string]bool{"daily": true, "weekly": true, "monthly": true}

const maxKeyModels = 100

// validateLimits checks a proxy key's spend limit, reset and allow-list;
// billing keys spend nothing and take none of them.
func validateLimits(kind apikey.Kind, limit *money.USD, reset *string, models []string) error {
	if kind != apikey.Proxy {
		switch {
		case limit != nil:
			return errs.InvalidField("limit", "invalid_limit", "Billing keys have no spend limit.")
		case reset != nil:
			return errs.InvalidField("limit_reset", "invalid_limit_reset", "Billing keys have no spend limit.")
		case models != nil:
			return errs.InvalidField("models", "invalid_models", "Billing keys call no models.")
		}
	}
	if limit != nil && *limit < 0 {
		return errs.InvalidField("limit", "invalid_limit", "Set a limit of 0 dollars or more, or null for no limit.")
	}
	if reset != nil && !limitResets[*reset] {
		return errs.InvalidField("limit_reset", "invalid_limit_reset", `Use "daily", "weekly" or "monthly" for limit_reset, or null for a limit that never resets.`)
	}
	if models == nil {
		return nil
	}
	if len(models) == 0 || len(models) > maxKeyModels {
		return errs.InvalidField("models", "invalid_models", "List 1 to 100 model ids, or send null to allow every model.")
	}
	for _, m := range models {
		if m == "" || len(m) > 200 || !utf8.ValidString(m) || strings.ContainsFunc(m, unicode.IsControl) {
			return errs.InvalidField("models", "invalid_models", "Each model is a model id from GET /v1/models, like \"modelswitch/echo\".")
		}
	}
	return nil
}
