package handlers

import (
	"context"

	"github.com/a-h/templ"
	"github.com/gofiber/fiber/v2"

	"modelswitch/errs"
	"modelswitch/views"
	"modelswitch/web/request"
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

func newPage(c *fiber.Ctx, title, nav string) views.Page {
	info := request.Get(c)
	return views.Page{Title: title, CSRF: info.CSRF, Email: info.Email, Nav: nav}
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

// ErrorPage renders an error as a page for the dashboard.
func ErrorPage(c *fiber.Ctx, status int, message string) error {
	return render(c, status, views.ErrorView(views.ErrorPage{
		Page: newPage(c, statusTitle(status), ""), Status: status, Message: message}))
}

func statusTitle(status int) string {
	if status == fiber.StatusNotFound {
		return "Not found"
	}
	return "Error"
}
