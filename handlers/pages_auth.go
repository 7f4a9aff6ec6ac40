package handlers

import (
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

// Home: GET / → the dashboard, or sign-in when signed out.
func (h *AuthPages) Home(c *fiber.Ctx) error {
	if request.UserID(c) == 0 {
		return c.Redirect("/signin", fiber.StatusSeeOther)
	}
	return c.Redirect("/dashboard/keys", fiber.StatusSeeOther)
}

// ShowSignUp: GET /signup.
func (h *AuthPages) ShowSignUp(c *fiber.Ctx) error {
	return h.show(c, fiber.StatusOK, true, views.Form{})
}

// ShowSignIn: GET /signin.
func (h *AuthPages) ShowSignIn(c *fiber.Ctx) error {
	return h.show(c, fiber.StatusOK, false, views.Form{})
}

// SignUp: POST /signup creates the account, signs in and opens Billing Keys,
// where a new user starts.
func (h *AuthPages) SignUp(c *fiber.Ctx) error {
	values := map[string]string{"email": c.FormValue("email")}
	u, err := h.Store.CreateUser(c.UserContext(), values["email"], c.FormValue("password"))
	if err != nil {
		if form, ok := formErrors(err, values); ok {
			return h.show(c, fiber.StatusUnprocessableEntity, true, form)
		}
		return err
	}
	if err := h.Sessions.SignIn(c, u); err != nil {
		return err
	}
	return Redirect(c, "/dashboard/billing-keys")
}

// SignIn: POST /signin, throttled by the same rules as the JSON log-in.
func (h *AuthPages) SignIn(c *fiber.Ctx) error {
	values := map[string]string{"email": c.FormValue("email")}
	u, err := h.Store.CheckPassword(c.UserContext(), values["email"], c.FormValue("password"), request.ClientIP(c))
	if err != nil {
		if e, ok := errs.As(err); ok && e.Kind == errs.RateLimited {
			form := views.Form{Values: values, Errors: map[string]string{"": e.Message}}
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
	return Redirect(c, "/dashboard/keys")
}

// SignOut: POST /signout ends this browser session at once.
func (h *AuthPages) SignOut(c *fiber.Ctx) error {
	if err := h.Sessions.SignOut(c, false); err != nil {
		return err
	}
	return Redirect(c, "/signin")
}

// SignOutEverywhere: POST /signout-everywhere ends every session of the
// account, browser sessions and API tokens alike.
func (h *AuthPages) SignOutEverywhere(c *fiber.Ctx) error {
	if err := h.Sessions.SignOut(c, true); err != nil {
		return err
	}
	return Redirect(c, "/signin")
}
