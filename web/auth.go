package web

import (
	"context"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/errs"
	"modelswitch/web/request"
	"modelswitch/web/token"
)

// KeyVerifier finds the key a digest belongs to. Verifying only reads, so a
// cache can stand in front of the store; recording a use is its own call, so
// that it can be batched.
type KeyVerifier interface {
	VerifyKey(ctx context.Context, kind apikey.Kind, digest []byte) (db.Key, error)
	RecordKeyUse(ctx context.Context, k db.Key) error
}

// bearer reads "Authorization: Bearer <token>"; the scheme is
// case-insensitive (RFC 7235). Cookies are never read here.
func bearer(c *fiber.Ctx) string {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(c.Get(fiber.HeaderAuthorization)), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// unauthorized answers a request without the credential it needs.
func unauthorized(c *fiber.Ctx, code, message string) error {
	c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="ModelSwitch"`)
	return &errs.Error{Kind: errs.Unauthorized, Code: code, Message: message}
}

// wants says, in each 401, which credential an endpoint takes.
var wants = map[apikey.Kind]string{
	apikey.Billing: "This endpoint takes a billing key: Authorization: Bearer mk-…. Create one in Dashboard → Billing Keys or with POST /api/billing-keys.",
	apikey.Proxy:   "This endpoint takes a proxy key: Authorization: Bearer ms-…. Create one in Dashboard → API Keys or with POST /api/keys.",
}

const wantsSession = "This endpoint takes a session token: Authorization: Bearer <token from POST /api/auth/login>."

// requireKey admits requests that carry an active, unexpired key of kind.
// A malformed key or a bad checksum is refused without a database query.
func requireKey(keys KeyVerifier, kind apikey.Kind) fiber.Handler {
	return func(c *fiber.Ctx) error {
		tok := bearer(c)
		if tok == "" {
			return unauthorized(c, "missing_credentials", wants[kind])
		}
		got, err := apikey.Parse(tok)
		if err != nil || got != kind {
			return unauthorized(c, "wrong_credentials", wants[kind])
		}
		k, err := keys.VerifyKey(c.UserContext(), kind, apikey.Digest(tok))
		if err == nil && k.Status(time.Now()) != db.KeyActive {
			err = db.ErrUnknownKey
		}
		if e, ok := errs.As(err); ok && e.Kind == errs.Unauthorized {
			return unauthorized(c, e.Code, e.Message+" "+wants[kind])
		}
		if err != nil {
			return err
		}
		if err := keys.RecordKeyUse(c.UserContext(), k); err != nil {
			return err
		}
		info := request.Get(c)
		info.UserID, info.KeyID, info.Key = k.UserID, k.ID, k
		return c.Next()
	}
}

// requireSession admits requests that carry a live session JWT.
func requireSession(store *db.Store, tokens *token.Signer) fiber.Handler {
	return func(c *fiber.Ctx) error {
		tok := bearer(c)
		if tok == "" {
			return unauthorized(c, "missing_credentials", wantsSession)
		}
		if _, err := apikey.Parse(tok); err == nil {
			return unauthorized(c, "wrong_credentials", "Keys cannot manage billing keys. "+wantsSession)
		}
		userID, sid, err := tokens.Verify(tok)
		if err != nil {
			return unauthorized(c, "invalid_token", "The session token is invalid or expired. "+wantsSession)
		}
		owner, err := store.TouchSession(c.UserContext(), sid, db.APISession, 0)
		if errs.Is(err, errs.Unauthorized) {
			return unauthorized(c, "invalid_token", "This session has ended. "+wantsSession)
		}
		if err != nil {
			return err
		}
		if owner != userID {
			return unauthorized(c, "invalid_token", "The session token is invalid. "+wantsSession)
		}
		info := request.Get(c)
		info.UserID, info.SessionID = userID, sid
		return c.Next()
	}
}
