package handlers

import (
	"context"
	"io/fs"
	"net/url"
	"strings"

	"github.com/a-h/templ"
	"github.com/gofiber/fiber/v2"

	"modelswitch/assets"
	"modelswitch/db"
	"modelswitch/db/money"
	"modelswitch/errs"
	"modelswitch/views"
	"modelswitch/web/request"
	"modelswitch/web/session/csrf"
)

// render writes a templ component as the HTML answer.
func render(c *fiber.Ctx, status int, component templ.Component) error {
	c.Status(status).Type("html", "utf-8")
	// Rendering only writes memory: it finishes even past the request's
	// deadline, as an error page rendered after the deadline middleware does.
	return component.Render(context.WithoutCancel(c.UserContext()), c.Response().BodyWriter())
}

// isHTMX reports whether htmx sent the request, so that it wants a fragment.
func isHTMX(c *fiber.Ctx) bool { return c.Get("HX-Request") == "true" }

// Redirect sends the browser to path: htmx follows HX-Redirect, a plain
// request follows 303 See Other.
func Redirect(c *fiber.Ctx, path string) error {
	if isHTMX(c) {
		c.Set("HX-Redirect", path)
		return c.SendStatus(fiber.StatusNoContent)
	}
	return c.Redirect(path, fiber.StatusSeeOther)
}

// pageCSRF is the session's CSRF token masked for the page being rendered:
// every form of one page carries the same mask, every page a new one.
func pageCSRF(c *fiber.Ctx) string { return csrf.Mask(request.Get(c).CSRF) }

func newPage(c *fiber.Ctx, title, nav string) views.Page {
	info := request.Get(c)
	balance, _ := c.Locals(balanceKey{}).(string)
	return views.Page{Title: title, CSRF: pageCSRF(c), Email: info.Email, Balance: balance, Nav: nav}
}

type balanceKey struct{}

// ShowBalance puts the signed-in account's balance in the header of every
// dashboard page, error pages included. An htmx request is answered with a
// fragment, which has no header: it reads no balance.
func ShowBalance(store *db.Store) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if isHTMX(c) {
			return c.Next()
		}
		b, err := store.GetBalance(c.UserContext(), request.UserID(c))
		if err != nil {
			return err
		}
		c.Locals(balanceKey{}, dollars(b.Available()))
		return c.Next()
	}
}

// dollars shows an amount exactly: "$4.999972", "−$0.5".
func dollars(v money.USD) string {
	if v < 0 {
		return "−$" + (-v).String()
	}
	return "$" + v.String()
}

// formValues reads the named fields of a posted form, to show them again.
func formValues(c *fiber.Ctx, names ...string) map[string]string {
	values := make(map[string]string, len(names))
	for _, n := range names {
		values[n] = c.FormValue(n)
	}
	return values
}

// formErrors turns an invalid-input error into the errors of a form, and
// leaves other errors to the error handler.
func formErrors(err error, values map[string]string) (views.Form, bool) {
	e, ok := errs.As(err)
	if !ok || (e.Kind != errs.Invalid && e.Kind != errs.Conflict && e.Kind != errs.Unauthorized) {
		return views.Form{}, false
	}
	return views.Form{Values: values, Errors: map[string]string{e.Field: e.Message}}, true
}

// ErrorPage renders an error as a page for the dashboard. htmx swaps none
// in; the page's script shows its message ([data-error-message]) instead.
func ErrorPage(c *fiber.Ctx, status int, message string) error {
	return render(c, status, views.ErrorView(views.ErrorPage{
		Page: newPage(c, statusTitle(status), ""), Status: status, Message: message}))
}

// NotFoundPage answers a dashboard address that leads nowhere, in words
// for people rather than for API clients.
func NotFoundPage(c *fiber.Ctx) error {
	return render(c, fiber.StatusNotFound, views.NotFoundView(newPage(c, "Page not found", "")))
}

// Favicon: GET /favicon.ico, which browsers ask for where no page names an
// icon (a JSON answer opened in a tab): the dashboard's SVG icon.
func Favicon(c *fiber.Ctx) error {
	icon, err := fs.ReadFile(assets.Static, "favicon.svg")
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "public, max-age=86400")
	c.Type("svg")
	return c.Send(icon)
}

// DashboardHome is where a signed-in visitor starts.
const DashboardHome = "/dashboard/keys"

// NextPath is raw when it is a dashboard address (path and query) to come
// back to after signing in, and "" otherwise. Only this site's dashboard:
// no scheme or host, no "//" (another host to a browser), no backslash
// (read as a slash), no control or non-ASCII characters, so that a link to
// the sign-in page cannot send anyone elsewhere once they signed in.
func NextPath(raw string) string {
	if len(raw) > 2048 || !(raw == "/dashboard" || strings.HasPrefix(raw, "/dashboard/") || strings.HasPrefix(raw, "/dashboard?")) {
		return ""
	}
	if strings.Contains(raw, "//") || strings.Contains(raw, `\`) {
		return ""
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] < 0x21 || raw[i] > 0x7e {
			return ""
		}
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || u.Fragment != "" {
		return ""
	}
	return raw
}

// SignInPath is the sign-in page that leads back to next afterwards.
func SignInPath(next string) string {
	if next = NextPath(next); next == "" {
		return "/signin"
	}
	return "/signin?next=" + url.QueryEscape(next)
}

func statusTitle(status int) string {
	if status == fiber.StatusNotFound {
		return "Not found"
	}
	return "Error"
}
