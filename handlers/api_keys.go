package handlers

import (
	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/db/money"
	"modelswitch/web/request"
)

// KeysAPI serves one kind of key as JSON: /api/keys for proxy keys and
// /api/billing-keys for billing keys.
type KeysAPI struct {
	Store *db.Store
	Kind  apikey.Kind
}

// keyObject is a key as every JSON response shows it.
type keyObject struct {
	ID         int64   `json:"id"`
	Name       string  `json:"name"`
	Prefix     string  `json:"prefix"`
	LastFour   *string `json:"lastFour"` // null for keys made before it was kept
	Active     bool    `json:"active"`
	CreatedAt  string  `json:"createdAt"`
	ExpiresAt  *string `json:"expiresAt"`
	LastUsedAt *string `json:"lastUsedAt"`
	*spending
}

// spending is what a proxy key's object adds: always all five fields, null
// when unset.
type spending struct {
	Limit          *money.USD `json:"limit"`
	LimitReset     *string    `json:"limitReset"`
	LimitRemaining *money.USD `json:"limitRemaining"`
	Usage          money.USD  `json:"usage"`
	Models         []string   `json:"models"`
}

func newKeyObject(k db.Key) keyObject {
	o := keyObject{
		ID: k.ID, Name: k.Name, Prefix: k.Prefix, LastFour: k.Hint, Active: k.Active,
		CreatedAt:  timestamp(k.CreatedAt),
		ExpiresAt:  optionalTimestamp(k.ExpiresAt),
		LastUsedAt: optionalTimestamp(k.LastUsedAt),
	}
	if k.Kind == apikey.Proxy {
		o.spending = &spending{Limit: k.Limit, LimitReset: k.LimitReset, LimitRemaining: k.LimitRemaining(), Usage: k.Usage, Models: k.Models}
	}
	return o
}

// keyList is a page of keys: the reference's {"keys": [...]}, then hasMore.
type keyList struct {
	Keys    []keyObject `json:"keys"`
	HasMore bool        `json:"hasMore"`
}

// List: GET ?limit&starting_after → 200 {"keys": [...], "hasMore"}, newest
// first. The default and largest limit is the cap on keys per account, so
// that without a query an account within the cap gets every key at once.
func (h *KeysAPI) List(c *fiber.Ctx) error {
	if err := onlyQuery(c, "limit", "starting_after"); err != nil {
		return err
	}
	limit, err := queryInt(c, "limit", h.Store.KeyCap(), 1, h.Store.KeyCap())
	if err != nil {
		return err
	}
	after, err := queryID(c, "starting_after")
	if err != nil {
		return err
	}
	keys, more, err := h.Store.ListKeysPage(c.UserContext(), request.UserID(c), h.Kind, db.KeyPage{Limit: limit, StartingAfter: after})
	if err != nil {
		return err
	}
	out := make([]keyObject, len(keys))
	for i, k := range keys {
		out[i] = newKeyObject(k)
	}
	return c.JSON(keyList{out, more})
}

// Create: POST {"name", "expires_at"?} → 201 with the key, shown this once
// (every /api answer is no-store: web.noStore).
func (h *KeysAPI) Create(c *fiber.Ctx) error {
	in, err := readKeyInput(c.Body(), h.Kind)
	if err != nil {
		return err
	}
	k, err := h.Store.CreateKey(c.UserContext(), request.UserID(c), h.Kind, in)
	if err != nil {
		return err
	}
	created := newKeyObject(k.Key)
	return c.Status(fiber.StatusCreated).JSON(struct {
		ID        int64   `json:"id"`
		Key       string  `json:"key"`
		Prefix    string  `json:"prefix"`
		Name      string  `json:"name"`
		CreatedAt string  `json:"createdAt"`
		ExpiresAt *string `json:"expiresAt"`
		*spending
	}{k.ID, k.Secret, k.Prefix, k.Name, created.CreatedAt, created.ExpiresAt, created.spending})
}

// Update: PUT /{id} {"name"?, "active"?, "expires_at"?} → 200 key object;
// "expires_at": null makes the key never expire.
func (h *KeysAPI) Update(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	up, err := readKeyUpdate(c.Body(), h.Kind)
	if err != nil {
		return err
	}
	k, err := h.Store.UpdateKey(c.UserContext(), request.UserID(c), h.Kind, id, up)
	if err != nil {
		return err
	}
	return c.JSON(newKeyObject(k))
}

// Delete: DELETE /{id} → 200 {"status": "deleted"}.
func (h *KeysAPI) Delete(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	if err := h.Store.DeleteKey(c.UserContext(), request.UserID(c), h.Kind, id); err != nil {
		return err
	}
	return c.JSON(fiber.Map{"status": "deleted"})
}

// spendingFields are what proxy keys take beyond billing keys, on create
// and update alike.
var spendingFields = []string{"limit", "limit_reset", "models"}

// keyFields is what a create (or, with update, an update) of kind takes.
func keyFields(kind apikey.Kind, update bool) []string {
	fields := []string{"name", "expires_at"}
	if update {
		fields = []string{"name", "active", "expires_at"}
	}
	if kind == apikey.Proxy {
		fields = append(fields, spendingFields...)
	}
	return fields
}

// readKeyInput decodes the body of a create: {"name", "expires_at"?} and,
// for proxy keys, {"limit"?, "limit_reset"?, "models"?}.
func readKeyInput(body []byte, kind apikey.Kind) (db.KeyInput, error) {
	var in db.KeyInput
	o, err := decodeObject(body)
	if err != nil {
		return in, err
	}
	if err := o.only(keyFields(kind, false)...); err != nil {
		return in, err
	}
	name, err := o.string("name")
	if err != nil {
		return in, err
	}
	if name != nil {
		in.Name = *name
	}
	if in.ExpiresAt, err = o.time("expires_at"); err != nil {
		return in, err
	}
	if in.Limit, err = o.amount("limit"); err != nil {
		return in, err
	}
	if in.LimitReset, err = o.string("limit_reset"); err != nil {
		return in, err
	}
	models, err := o.strings("models")
	if models != nil {
		in.Models = *models
	}
	return in, err
}

// readKeyUpdate decodes the body of an update: {"name"?, "active"?,
// "expires_at"?} and, for proxy keys, {"limit"?, "limit_reset"?, "models"?},
// where null clears.
func readKeyUpdate(body []byte, kind apikey.Kind) (db.KeyUpdate, error) {
	var up db.KeyUpdate
	o, err := decodeObject(body)
	if err != nil {
		return up, err
	}
	if err := o.only(keyFields(kind, true)...); err != nil {
		return up, err
	}
	if up.Name, err = o.string("name"); err != nil {
		return up, err
	}
	if up.Active, err = o.bool("active"); err != nil {
		return up, err
	}
	if up.ExpiresAt, err = change(o, "expires_at", object.time); err != nil {
		return up, err
	}
	if up.Limit, err = change(o, "limit", object.amount); err != nil {
		return up, err
	}
	if up.LimitReset, err = change(o, "limit_reset", object.string); err != nil {
		return up, err
	}
	up.Models, err = change(o, "models", object.strings)
	return up, err
}
