package handlers

import (
	"time"

	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
	"modelswitch/errs"
	"modelswitch/web/request"
)

// TokenTTL is how long a session JWT lives.
const TokenTTL = 24 * time.Hour

// AuthAPI serves sign-up, log-in and log-out for scripts.
type AuthAPI struct {
	Store  *db.Store
	Tokens TokenIssuer
}

// TokenIssuer signs the session JWT that log-in returns.
type TokenIssuer interface {
	Issue(userID int64, sessionID string, issued, expires time.Time) (string, error)
}

func readCredentials(c *fiber.Ctx) (email, password string, err error) {
	o, err := decodeObject(c.Body())
	if err != nil {
		return "", "", err
	}
	if err := o.only("email", "password"); err != nil {
		return "", "", err
	}
	e, err := o.string("email")
	if err != nil {
		return "", "", err
	}
	p, err := o.string("password")
	if err != nil {
		return "", "", err
	}
	if e == nil {
		return "", "", errs.InvalidField("email", "invalid_email", "Enter your email address.")
	}
	if p == nil {
		return "", "", errs.InvalidField("password", "invalid_password", "Enter your password.")
	}
	return *e, *p, nil
}

// Signup: POST /api/auth/signup {"email", "password"} → 201 {"id", "email"}.
func (a *AuthAPI) Signup(c *fiber.Ctx) error {
	email, password, err := readCredentials(c)
	if err != nil {
		return err
	}
	u, err := a.Store.CreateUser(c.UserContext(), email, password, request.ClientIP(c))
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(struct {
		ID    int64  `json:"id"`
		Email string `json:"email"`
	}{u.ID, u.Email})
}

// Login: POST /api/auth/login {"email", "password"} → 200 {"token", "expiresAt"}.
func (a *AuthAPI) Login(c *fiber.Ctx) error {
	email, password, err := readCredentials(c)
	if err != nil {
		return err
	}
	u, err := a.Store.CheckPassword(c.UserContext(), email, password, request.ClientIP(c))
	if err != nil {
		return err
	}
	sess, err := a.Store.CreateSession(c.UserContext(), u.ID, db.APISession, TokenTTL)
	if err != nil {
		return err
	}
	tok, err := a.Tokens.Issue(u.ID, sess.ID, time.Now(), sess.ExpiresAt)
	if err != nil {
		return err
	}
	return c.JSON(struct {
		Token     string `json:"token"`
		ExpiresAt string `json:"expiresAt"`
	}{tok, timestamp(sess.ExpiresAt)})
}

// Logout: POST /api/auth/logout revokes the session of the JWT it carries.
func (a *AuthAPI) Logout(c *fiber.Ctx) error {
	if err := a.Store.DeleteSession(c.UserContext(), request.Get(c).SessionID); err != nil {
		return err
	}
	return c.JSON(fiber.Map{"status": "logged_out"})
}
