package handlers

import (
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/db/money"
	"modelswitch/errs"
	"modelswitch/views"
	"modelswitch/web/request"
)

// KeysPages serves one kind of key in the dashboard: /dashboard/keys for
// proxy keys and /dashboard/billing-keys for billing keys. It calls the same
// store methods as KeysAPI.
type KeysPages struct {
	Store *db.Store
	Kind  apikey.Kind
}

var sections = map[apikey.Kind]views.KeySection{
	apikey.Proxy: {
		Path: "/dashboard/keys", Heading: "API Keys", Nav: "keys", Noun: "API key", Editable: true,
		Intro: "Proxy keys (ms-…) authenticate your inference requests. Rename or deactivate a key at any time; deleting it is permanent.",
	},
	apikey.Billing: {
		Path: "/dashboard/billing-keys", Heading: "Billing Keys", Nav: "billing-keys", Noun: "billing key",
		Intro: "Billing keys (mk-…) let your scripts manage API keys and read balance, usage and transactions through the /api endpoints.",
	},
}

// rowFailure is a row form that failed: shown again, open, with its errors.
type rowFailure struct {
	id     int64
	limits bool // the Limits form; otherwise Rename
	form   views.Form
}

// page loads the account's keys into a page; failed, when set, marks the
// row whose form failed.
func (h *KeysPages) page(c *fiber.Ctx, form views.Form, failed *rowFailure) (views.KeysPage, error) {
	keys, err := h.Store.ListKeys(c.UserContext(), request.UserID(c), h.Kind)
	if err != nil {
		return views.KeysPage{}, err
	}
	kind := sections[h.Kind]
	p := views.KeysPage{Page: newPage(c, kind.Heading, kind.Nav), Section: kind, Form: form, Rows: make([]views.KeyRow, len(keys))}
	now := time.Now()
	for i, k := range keys {
		p.Rows[i] = keyRow(k, now)
		if failed != nil && failed.id == k.ID {
			if failed.limits {
				p.Rows[i].Limits = &failed.form
			} else {
				p.Rows[i].Rename = &failed.form
			}
		}
	}
	return p, nil
}

func keyRow(k db.Key, now time.Time) views.KeyRow {
	r := views.KeyRow{
		ID: k.ID, Name: k.Name, Prefix: k.Prefix, Status: string(k.Status(now)), Active: k.Active,
		Created:  views.NewTime(k.CreatedAt, now, false),
		Expires:  views.OptionalTime(k.ExpiresAt, now, false),
		LastUsed: views.OptionalTime(k.LastUsedAt, now, true),
	}
	if k.Kind != apikey.Proxy {
		return r
	}
	r.Usage = dollars(k.Usage)
	r.Models = strings.Join(k.Models, ", ")
	settings := views.Form{Values: map[string]string{"models": r.Models}}
	if k.Limit != nil {
		r.Limit = dollars(*k.Limit)
		r.Remaining = dollars(*k.LimitRemaining())
		settings.Values["limit"] = k.Limit.String()
	}
	if k.LimitReset != nil {
		r.Limit += " " + *k.LimitReset
		settings.Values["limit_reset"] = *k.LimitReset
	}
	r.Limits = &settings
	return r
}

// Show: GET the page.
func (h *KeysPages) Show(c *fiber.Ctx) error {
	p, err := h.page(c, views.Form{}, nil)
	if err != nil {
		return err
	}
	return render(c, fiber.StatusOK, views.KeysView(p))
}

// Create: POST name and expires_at (a date). With htmx the answer is the
// reveal modal plus the refreshed table and form; without JavaScript it is
// the page with the key shown once. Neither is cached: every dashboard
// answer is no-store (web.pageHeaders).
func (h *KeysPages) Create(c *fiber.Ctx) error {
	values := formValues(c, "name", "expires_at", "limit", "limit_reset", "models")
	k, err := h.create(c, values)
	if err == nil {
		return h.reveal(c, k)
	}
	form, ok := formErrors(err, values)
	if !ok {
		return err
	}
	if isHTMX(c) {
		c.Set("HX-Retarget", "#create-form")
		c.Set("HX-Reswap", "outerHTML")
		return render(c, fiber.StatusUnprocessableEntity, views.CreateForm(sections[h.Kind], form, request.Get(c).CSRF, false))
	}
	p, err := h.page(c, form, nil)
	if err != nil {
		return err
	}
	return render(c, fiber.StatusUnprocessableEntity, views.KeysView(p))
}

func (h *KeysPages) create(c *fiber.Ctx, values map[string]string) (db.CreatedKey, error) {
	expires, err := endOfDay(values["expires_at"])
	if err != nil {
		return db.CreatedKey{}, err
	}
	in := db.KeyInput{Name: values["name"], ExpiresAt: expires}
	if h.Kind == apikey.Proxy {
		if in.Limit, in.LimitReset, in.Models, err = readLimitsForm(values); err != nil {
			return db.CreatedKey{}, err
		}
	}
	return h.Store.CreateKey(c.UserContext(), request.UserID(c), h.Kind, in)
}

func (h *KeysPages) reveal(c *fiber.Ctx, k db.CreatedKey) error {
	p, err := h.page(c, views.Form{}, nil)
	if err != nil {
		return err
	}
	revealed := views.Revealed{Name: k.Name, Key: k.Secret}
	if isHTMX(c) {
		return render(c, fiber.StatusCreated, views.Join(
			views.RevealModal(p.Section, revealed),
			views.KeyTable(p, true),
			views.CreateForm(p.Section, views.Form{}, p.CSRF, true),
		))
	}
	p.Revealed = &revealed
	return render(c, fiber.StatusCreated, views.KeysView(p))
}

// endOfDay reads a date input ("2026-12-31") as the first instant after
// that day in UTC.
func endOfDay(date string) (*time.Time, error) {
	if date == "" {
		return nil, nil
	}
	d, err := time.Parse(time.DateOnly, date)
	if err != nil {
		return nil, errs.InvalidField("expires_at", "invalid_expires_at", "Enter the expiry as a date, like 2026-12-31.")
	}
	t := d.AddDate(0, 0, 1)
	return &t, nil
}

// Update: POST name and/or active to /{id}: rename, deactivate, reactivate.
func (h *KeysPages) Update(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	var up db.KeyUpdate
	if name := c.FormValue("name"); c.Request().PostArgs().Has("name") {
		up.Name = &name
	}
	if raw := c.FormValue("active"); raw != "" {
		active, perr := strconv.ParseBool(raw)
		if perr != nil {
			return errs.InvalidField("active", "invalid_type", "active must be true or false.")
		}
		up.Active = &active
	}
	_, err = h.Store.UpdateKey(c.UserContext(), request.UserID(c), h.Kind, id, up)
	if e, ok := errs.As(err); ok && e.Kind == errs.Invalid && up.Name != nil {
		form, _ := formErrors(err, map[string]string{"name": *up.Name})
		return h.table(c, fiber.StatusUnprocessableEntity, &rowFailure{id: id, form: form})
	}
	if err != nil {
		return err
	}
	return h.table(c, fiber.StatusOK, nil)
}

// UpdateLimits: POST limit, limit_reset and models to /{id}/limits. The
// form sends all three: an empty field clears it.
func (h *KeysPages) UpdateLimits(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	values := formValues(c, "limit", "limit_reset", "models")
	limit, reset, models, err := readLimitsForm(values)
	if err == nil {
		up := db.KeyUpdate{Limit: db.Change[money.USD]{Set: true, Value: limit}, LimitReset: db.Change[string]{Set: true, Value: reset},
			Models: db.Change[[]string]{Set: true}}
		if models != nil {
			up.Models.Value = &models
		}
		_, err = h.Store.UpdateKey(c.UserContext(), request.UserID(c), h.Kind, id, up)
	}
	if form, ok := formErrors(err, values); ok && errs.Is(err, errs.Invalid) {
		return h.table(c, fiber.StatusUnprocessableEntity, &rowFailure{id: id, limits: true, form: form})
	}
	if err != nil {
		return err
	}
	return h.table(c, fiber.StatusOK, nil)
}

// readLimitsForm reads a proxy key's spending fields from a form: empty
// means none (no limit, no reset, every model).
func readLimitsForm(values map[string]string) (limit *money.USD, reset *string, models []string, err error) {
	if raw := strings.TrimSpace(values["limit"]); raw != "" {
		v, perr := money.Parse(strings.TrimPrefix(raw, "$"))
		if perr != nil {
			return nil, nil, nil, errs.InvalidField("limit", "invalid_limit", "Enter the limit in US dollars, like 10 or 2.50, or leave it empty for no limit.")
		}
		limit = &v
	}
	if raw := values["limit_reset"]; raw != "" {
		reset = &raw
	}
	for _, m := range strings.Split(values["models"], ",") {
		if m = strings.TrimSpace(m); m != "" {
			models = append(models, m)
		}
	}
	return limit, reset, models, nil
}

// Delete: POST /{id}/delete, after the confirmation that names the key.
func (h *KeysPages) Delete(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	if err := h.Store.DeleteKey(c.UserContext(), request.UserID(c), h.Kind, id); err != nil {
		return err
	}
	return h.table(c, fiber.StatusOK, nil)
}

// table answers a row action: the refreshed table for htmx, the page again
// for a failed form without JavaScript, a redirect back otherwise.
func (h *KeysPages) table(c *fiber.Ctx, status int, failed *rowFailure) error {
	if !isHTMX(c) && failed == nil {
		return c.Redirect(sections[h.Kind].Path, fiber.StatusSeeOther)
	}
	p, err := h.page(c, views.Form{}, failed)
	if err != nil {
		return err
	}
	if isHTMX(c) {
		return render(c, status, views.KeyTable(p, false))
	}
	return render(c, status, views.KeysView(p))
}
