package handlers

import (
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
	"modelswitch/db/apikey"
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

// page loads the account's keys into a page; rename, when set, marks the
// row whose rename failed.
func (h *KeysPages) page(c *fiber.Ctx, form views.Form, rename map[int64]*views.Form) (views.KeysPage, error) {
	keys, err := h.Store.ListKeys(c.UserContext(), request.UserID(c), h.Kind)
	if err != nil {
		return views.KeysPage{}, err
	}
	kind := sections[h.Kind]
	p := views.KeysPage{Page: newPage(c, kind.Heading, kind.Nav), Section: kind, Form: form, Rows: make([]views.KeyRow, len(keys))}
	now := time.Now()
	for i, k := range keys {
		p.Rows[i] = keyRow(k, now)
		p.Rows[i].Rename = rename[k.ID]
	}
	return p, nil
}

func keyRow(k db.Key, now time.Time) views.KeyRow {
	return views.KeyRow{
		ID: k.ID, Name: k.Name, Prefix: k.Prefix, Status: string(k.Status(now)), Active: k.Active,
		Created:  views.NewTime(k.CreatedAt, now, false),
		Expires:  views.OptionalTime(k.ExpiresAt, now, false),
		LastUsed: views.OptionalTime(k.LastUsedAt, now, true),
	}
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
	values := map[string]string{"name": c.FormValue("name"), "expires_at": c.FormValue("expires_at")}
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
	return h.Store.CreateKey(c.UserContext(), request.UserID(c), h.Kind, db.KeyInput{Name: values["name"], ExpiresAt: expires})
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
		return h.table(c, fiber.StatusUnprocessableEntity, map[int64]*views.Form{id: &form})
	}
	if err != nil {
		return err
	}
	return h.table(c, fiber.StatusOK, nil)
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
func (h *KeysPages) table(c *fiber.Ctx, status int, rename map[int64]*views.Form) error {
	if !isHTMX(c) && rename == nil {
		return c.Redirect(sections[h.Kind].Path, fiber.StatusSeeOther)
	}
	p, err := h.page(c, views.Form{}, rename)
	if err != nil {
		return err
	}
	if isHTMX(c) {
		return render(c, status, views.KeyTable(p, false))
	}
	return render(c, status, views.KeysView(p))
}
