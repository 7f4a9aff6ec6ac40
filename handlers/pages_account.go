package handlers

import (
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
	"modelswitch/errs"
	"modelswitch/views"
	"modelswitch/web/mail"
	"modelswitch/web/request"
)

// AccountPages serves the account's Settings page (its password, its
// sessions, deleting it) and the forgotten-password flow.
type AccountPages struct {
	Store    *db.Store
	Sessions BrowserSessions
	// Mail sends reset links; it should only queue (mail.Outbox), so that
	// answers take the same time whether a mail goes out or not.
	Mail mail.Sender
	// NoMail: the server sends no mail (production without SMTP_URL); the
	// forgot-password page says so and takes no request.
	NoMail bool
	Log    *slog.Logger
	// PublicURL is the base of links in mail, like https://modelswitch.example;
	// empty: the request's own Host.
	PublicURL  string
	Production bool
	// BrowserIdle ends a browser session unseen for this long.
	BrowserIdle time.Duration
}

// notices are what a settings action did, shown after its redirect: a
// fixed set, so that a link cannot put words on the page.
var notices = map[string]string{
	"password": "Your password was changed. Every other session of your account, browser sessions and API tokens alike, was signed out.",
	"reset":    "Your password was reset, and you are signed in. Every other session of your account was signed out.",
	"session":  "The session was signed out.",
}

func (h *AccountPages) settings(c *fiber.Ctx) (views.SettingsPage, error) {
	info := request.Get(c)
	list, err := h.Store.ListSessions(c.UserContext(), info.UserID, h.BrowserIdle)
	if err != nil {
		return views.SettingsPage{}, err
	}
	p := views.SettingsPage{Page: newPage(c, "Settings", "settings"), Sessions: make([]views.SessionRow, len(list))}
	current := db.SessionHandle(info.SessionID)
	now := time.Now()
	for i, s := range list {
		r := views.SessionRow{Handle: s.Handle, Kind: "Browser", Current: s.Handle == current,
			Created: views.NewTime(s.CreatedAt, now, true), Expires: views.NewTime(s.ExpiresAt, now, false)}
		// Sessions end within a day: the hour tells more than the date.
		r.Expires.Human = s.ExpiresAt.UTC().Format("Jan 2, 15:04 UTC")
		if s.Kind == db.APISession {
			r.Kind = "API token" // their use is not recorded: last seen stays empty
		} else {
			r.LastSeen = views.OptionalTime(&s.LastSeenAt, now, true)
		}
		p.Sessions[i] = r
	}
	return p, nil
}

// Settings: GET /dashboard/settings.
func (h *AccountPages) Settings(c *fiber.Ctx) error {
	p, err := h.settings(c)
	if err != nil {
		return err
	}
	p.Notice = notices[c.Query("done")]
	return render(c, fiber.StatusOK, views.SettingsView(p))
}

// ChangePassword: POST current_password and new_password. The check is
// throttled as a sign-in is; a change ends every other session.
func (h *AccountPages) ChangePassword(c *fiber.Ctx) error {
	info := request.Get(c)
	err := h.Store.ChangePassword(c.UserContext(), info.UserID,
		c.FormValue("current_password"), c.FormValue("new_password"), info.ClientIP, info.SessionID)
	if err == nil {
		return Redirect(c, "/dashboard/settings?done=password")
	}
	// Passwords are never shown again: the form keeps no values.
	status := fiber.StatusTooManyRequests
	form, ok := throttled(c, err, nil)
	if !ok {
		status = fiber.StatusUnprocessableEntity
		if form, ok = formErrors(err, nil); !ok {
			return err
		}
	}
	p, err := h.settings(c)
	if err != nil {
		return err
	}
	p.Password = form
	return render(c, status, views.SettingsView(p))
}

// SignOutSession: POST /dashboard/settings/sessions/{handle}/delete ends
// one of the account's sessions; htmx gets the list back.
func (h *AccountPages) SignOutSession(c *fiber.Ctx) error {
	info := request.Get(c)
	handle := c.Params("handle")
	if handle == db.SessionHandle(info.SessionID) {
		if err := h.Sessions.SignOut(c, false); err != nil {
			return err
		}
		return Redirect(c, "/signin")
	}
	if err := h.Store.DeleteSessionByHandle(c.UserContext(), info.UserID, handle); err != nil {
		return err
	}
	if !isHTMX(c) {
		return c.Redirect("/dashboard/settings?done=session", fiber.StatusSeeOther)
	}
	p, err := h.settings(c)
	if err != nil {
		return err
	}
	return render(c, fiber.StatusOK, views.SessionsCard(p.Sessions, p.CSRF))
}

// DeleteAccount: POST email, which must be the account's. The account and
// everything of it go at once; so does this browser's session.
func (h *AccountPages) DeleteAccount(c *fiber.Ctx) error {
	values := formValues(c, "email")
	err := h.Store.DeleteAccount(c.UserContext(), request.UserID(c), values["email"])
	if form, ok := formErrors(err, values); ok {
		p, err := h.settings(c)
		if err != nil {
			return err
		}
		p.Delete = form
		return render(c, fiber.StatusUnprocessableEntity, views.SettingsView(p))
	}
	if err != nil {
		return err
	}
	if err := h.Sessions.SignOut(c, false); err != nil {
		return err
	}
	return Redirect(c, "/account-deleted")
}

// AccountDeleted: GET /account-deleted, where deleting an account ends.
func (h *AccountPages) AccountDeleted(c *fiber.Ctx) error {
	return render(c, fiber.StatusOK, views.AccountDeletedView(newPage(c, "Account deleted", "")))
}

// ShowForgot: GET /forgot-password.
func (h *AccountPages) ShowForgot(c *fiber.Ctx) error {
	return render(c, fiber.StatusOK, views.ForgotView(views.ForgotPage{Page: newPage(c, "Reset your password", ""), NoMail: h.NoMail}))
}

// Forgot: POST email. The answer is the same page whether an account has
// that email or not; the mail, when there is one, is only queued here.
// Requests are throttled per address and per email.
func (h *AccountPages) Forgot(c *fiber.Ctx) error {
	if h.NoMail {
		return h.ShowForgot(c)
	}
	values := formValues(c, "email")
	show := func(status int, form views.Form, sent bool) error {
		return render(c, status, views.ForgotView(views.ForgotPage{Page: newPage(c, "Reset your password", ""), Form: form, Sent: sent}))
	}
	reset, err := h.Store.RequestPasswordReset(c.UserContext(), values["email"], request.ClientIP(c))
	if form, ok := throttled(c, err, values); ok {
		return show(fiber.StatusTooManyRequests, form, false)
	}
	if form, ok := formErrors(err, values); ok {
		return show(fiber.StatusUnprocessableEntity, form, false)
	}
	if err != nil {
		return err
	}
	if reset != nil {
		h.sendReset(c, reset)
	}
	return show(fiber.StatusOK, views.Form{Values: values}, true)
}

// validHost is a Host header fit to build a link with.
var validHost = regexp.MustCompile(`^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$`)

// sendReset queues the mail with the reset link. Nothing it does changes
// the answer, and no log line but the development mailer's holds the link.
func (h *AccountPages) sendReset(c *fiber.Ctx, reset *db.PasswordReset) {
	base := strings.TrimSuffix(h.PublicURL, "/")
	if base == "" {
		// The Host header, never X-Forwarded-Host, which any client could
		// set to send the victim a link to their own site. A proxy that
		// passes any Host through needs PublicURL.
		host := string(c.Request().Host())
		if !validHost.MatchString(host) {
			h.Log.Warn("password reset mail not sent: the request's Host cannot make a link; set the public URL",
				"request_id", request.Get(c).ID)
			return
		}
		scheme := "http"
		if h.Production || c.Context().IsTLS() {
			scheme = "https"
		}
		base = scheme + "://" + host
	}
	link := base + "/reset-password?token=" + url.QueryEscape(reset.Token)
	err := h.Mail.Send(c.UserContext(), mail.Message{
		To:      reset.Email,
		Subject: "Reset your ModelSwitch password",
		Text: fmt.Sprintf(`Someone, hopefully you, asked to reset the password of your ModelSwitch account %s.

Choose a new password here:

%s

The link works once, for %d minutes. Setting a new password signs out every session of your account.

If you did not ask for this, ignore this mail: your password stays as it is.
`, reset.Email, link, int(db.PasswordResetTTL.Minutes())),
	})
	if err != nil {
		h.Log.Error("password reset mail not queued", "request_id", request.Get(c).ID, "error", err)
	}
}

// ShowReset: GET /reset-password?token=… shows the new-password form, or
// says that the link no longer works. Opening the link does not use it up.
func (h *AccountPages) ShowReset(c *fiber.Ctx) error {
	// The URL holds the token: no page it loads is told where it came from.
	c.Set(fiber.HeaderReferrerPolicy, "no-referrer")
	token := c.Query("token")
	return h.showReset(c, token, h.Store.CheckPasswordReset(c.UserContext(), token), views.Form{})
}

func (h *AccountPages) showReset(c *fiber.Ctx, token string, err error, form views.Form) error {
	p := views.ResetPage{Page: newPage(c, "Choose a new password", ""), Token: token, Form: form}
	status := fiber.StatusOK
	switch {
	case errs.Is(err, errs.NotFound): // db.ErrResetInvalid
		p.Invalid, p.Token, status = true, "", fiber.StatusGone
	case err != nil:
		return err
	case len(form.Errors) > 0:
		status = fiber.StatusUnprocessableEntity
	}
	return render(c, status, views.ResetView(p))
}

// Reset: POST token and password. It uses the link up, ends every session
// of the account and signs this browser in.
func (h *AccountPages) Reset(c *fiber.Ctx) error {
	c.Set(fiber.HeaderReferrerPolicy, "no-referrer")
	token := c.FormValue("token")
	u, err := h.Store.ResetPassword(c.UserContext(), token, c.FormValue("password"))
	if err != nil {
		if errs.Is(err, errs.Invalid) {
			form, _ := formErrors(err, nil)
			return h.showReset(c, token, nil, form)
		}
		return h.showReset(c, token, err, views.Form{})
	}
	if err := h.Sessions.SignIn(c, u); err != nil {
		return err
	}
	return Redirect(c, "/dashboard/settings?done=reset")
}
