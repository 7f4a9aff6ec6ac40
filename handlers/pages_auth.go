package handlers

import (
	"errors"
	"math"
	"regexp"
	"strconv"

	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
	"modelswitch/errs"
	"modelswitch/views"
	"modelswitch/web/request"
)

// AuthPages serves sign-up, sign-in and sign-out for the dashboard.
type AuthPages struct {
	Store    *db.Store
	Sessions BrowserSessions
}

// BrowserSessions starts and ends the dashboard's cookie sessions.
type BrowserSessions interface {
	SignIn(c *fiber.Ctx, user db.User) error
	SignOut(c *fiber.Ctx, everywhere bool) error
}

func (h *AuthPages) show(c *fiber.Ctx, status int, signUp bool, form views.Form) error {
	title := "Sign in"
	if signUp {
		title = "Create your account"
	}
	return render(c, status, views.AuthView(views.AuthPage{Page: newPage(c, title, ""), SignUp: signUp, Form: form}))
}

// Home: GET / → the landing page when signed out, the dashboard when
// signed in.
func (h *AuthPages) Home(c *fiber.Ctx) error {
	if request.UserID(c) == 0 {
		return render(c, fiber.StatusOK, views.LandingView(views.LandingPage{
			Page: newPage(c, "An OpenAI-compatible gateway with prepaid credits", ""), BaseURL: baseURL(c)}))
	}
	return c.Redirect(DashboardHome, fiber.StatusSeeOther)
}

// plainHost is a Host header fit to show in an example.
var plainHost = regexp.MustCompile(`^[A-Za-z0-9.-]+(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$`)

// baseURL is this server as the visitor reached it, for examples: the Host
// header, never X-Forwarded-Host, which anyone can send.
func baseURL(c *fiber.Ctx) string {
	host := string(c.Request().Host())
	if !plainHost.MatchString(host) {
		return "https://YOUR_MODELSWITCH_HOST"
	}
	scheme := "http"
	if c.Protocol() == "https" {
		scheme = "https"
	}
	return scheme + "://" + host
}

// ShowSignUp: GET /signup.
func (h *AuthPages) ShowSignUp(c *fiber.Ctx) error {
	return h.show(c, fiber.StatusOK, true, views.Form{})
}

// ShowSignIn: GET /signin, and /signin?next=/dashboard/… after a session
// ended, which says so and leads back there.
func (h *AuthPages) ShowSignIn(c *fiber.Ctx) error {
	return h.show(c, fiber.StatusOK, false, views.Form{Values: map[string]string{"next": NextPath(c.Query("next"))}})
}

// SignUp: POST /signup creates the account, signs in and opens Billing Keys,
// where a new user starts. Every field's mistake is shown at once.
func (h *AuthPages) SignUp(c *fiber.Ctx) error {
	values := map[string]string{"email": c.FormValue("email")}
	if found := db.SignUpErrors(values["email"], c.FormValue("password")); len(found) > 0 {
		form := views.Form{Values: values, Errors: map[string]string{}}
		for _, e := range found {
			form.Errors[e.Field] = e.Message
		}
		return h.show(c, fiber.StatusUnprocessableEntity, true, form)
	}
	u, err := h.Store.CreateUser(c.UserContext(), values["email"], c.FormValue("password"), request.ClientIP(c))
	if errors.Is(err, db.ErrEmailTaken) {
		return h.show(c, fiber.StatusUnprocessableEntity, true, views.Form{Values: values,
			Errors: map[string]string{"email": "An account with this email already exists. Sign in instead."}})
	}
	if err != nil {
		if form, ok := throttled(c, err, values); ok {
			return h.show(c, fiber.StatusTooManyRequests, true, form)
		}
		if form, ok := formErrors(err, values); ok {
			return h.show(c, fiber.StatusUnprocessableEntity, true, form)
		}
		return err
	}
	if err := h.Sessions.SignIn(c, u); err != nil {
		// The account exists now: say so, so that the retry signs in
		// instead of being told the email is taken.
		SetRetryAfter(c, err)
		return h.show(c, fiber.StatusServiceUnavailable, false, views.Form{Values: values, Errors: map[string]string{
			"": "Your account was created, but signing you in failed just now. Sign in to continue."}})
	}
	return Redirect(c, "/dashboard/billing-keys")
}

// throttled shows a rate limit above the form, which keeps what was typed,
// and sets Retry-After as the error handler would.
func throttled(c *fiber.Ctx, err error, values map[string]string) (views.Form, bool) {
	e, ok := errs.As(err)
	if !ok || e.Kind != errs.RateLimited {
		return views.Form{}, false
	}
	SetRetryAfter(c, err)
	return views.Form{Values: values, Errors: map[string]string{"": e.Message}}, true
}

// SetRetryAfter sets Retry-After to err's wait, in whole seconds rounded
// up, when it has one: for every answer that says to retry.
func SetRetryAfter(c *fiber.Ctx, err error) {
	if e, ok := errs.As(err); ok && e.RetryAfter > 0 {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
}

// SignIn: POST /signin, throttled by the same rules as the JSON log-in. It
// leads to the form's next, the page a session ended on, or the dashboard.
func (h *AuthPages) SignIn(c *fiber.Ctx) error {
	values := map[string]string{"email": c.FormValue("email"), "next": NextPath(c.FormValue("next"))}
	u, err := h.Store.CheckPassword(c.UserContext(), values["email"], c.FormValue("password"), request.ClientIP(c))
	if err != nil {
		if form, ok := throttled(c, err, values); ok {
			return h.show(c, fiber.StatusTooManyRequests, false, form)
		}
		if form, ok := formErrors(err, values); ok {
			return h.show(c, fiber.StatusUnprocessableEntity, false, form)
		}
		return err
	}
	if err := h.Sessions.SignIn(c, u); err != nil {
		return err
	}
	if next := values["next"]; next != "" {
		return Redirect(c, next)
	}
	return Redirect(c, DashboardHome)
}

// SignOut: POST /signout ends this browser session at once.
func (h *AuthPages) SignOut(c *fiber.Ctx) error {
	if err := h.Sessions.SignOut(c, false); err != nil {
		return err
	}
	return Redirect(c, "/signin")
}

// ConfirmSignOutEverywhere: GET /signout-everywhere asks first.
func (h *AuthPages) ConfirmSignOutEverywhere(c *fiber.Ctx) error {
	return render(c, fiber.StatusOK, views.SignOutEverywhereView(newPage(c, "Sign out everywhere", "")))
}

// SignOutEverywhere: POST /signout-everywhere ends every session of the
// account, browser sessions and API tokens alike.
func (h *AuthPages) SignOutEverywhere(c *fiber.Ctx) error {
	if err := h.Sessions.SignOut(c, true); err != nil {
		return err
	}
	return Redirect(c, "/signin")
}
