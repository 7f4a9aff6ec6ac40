package handlers

import (
	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
	"modelswitch/db/apikey"
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
	Active     bool    `json:"active"`
	CreatedAt  string  `json:"createdAt"`
	ExpiresAt  *string `json:"expiresAt"`
	LastUsedAt *string `json:"lastUsedAt"`
}

func newKeyObject(k db.Key) keyObject {
	return keyObject{
		ID: k.ID, Name: k.Name, Prefix: k.Prefix, Active: k.Active,
		CreatedAt:  timestamp(k.CreatedAt),
		ExpiresAt:  optionalTimestamp(k.ExpiresAt),
		LastUsedAt: optionalTimestamp(k.LastUsedAt),
	}
}

// List: GET → 200 {"keys": [...]}, newest first.
func (h *KeysAPI) List(c *fiber.Ctx) error {
	keys, err := h.Store.ListKeys(c.UserContext(), request.UserID(c), h.Kind)
	if err != nil {
		return err
	}
	out := make([]keyObject, len(keys))
	for i, k := range keys {
		out[i] = newKeyObject(k)
	}
	return c.JSON(fiber.Map{"keys": out})
}

// Create: POST {"name", "expires_at"?} → 201 with the key, shown this once
// (every /api answer is no-store: web.noStore).
func (h *KeysAPI) Create(c *fiber.Ctx) error {
	in, err := readKeyInput(c.Body())
	if err != nil {
		return err
	}
	k, err := h.Store.CreateKey(c.UserContext(), request.UserID(c), h.Kind, in)
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(struct {
		ID        int64   `json:"id"`
		Key       string  `json:"key"`
		Prefix    string  `json:"prefix"`
		Name      string  `json:"name"`
		CreatedAt string  `json:"createdAt"`
		ExpiresAt *string `json:"expiresAt"`
	}{k.ID, k.Secret, k.Prefix, k.Name, timestamp(k.CreatedAt), optionalTimestamp(k.ExpiresAt)})
}

// Update: PUT /{id} {"name"?, "active"?} → 200 key object.
func (h *KeysAPI) Update(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	up, err := readKeyUpdate(c.Body())
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

// readKeyInput decodes the body of a create: {"name", "expires_at"?}.
func readKeyInput(body []byte) (db.KeyInput, error) {
	o, err := decodeObject(body)
	if err != nil {
		return db.KeyInput{}, err
	}
	if err := o.only("name", "expires_at"); err != nil {
		return db.KeyInput{}, err
	}
	name, err := o.string("name")
	if err != nil {
		return db.KeyInput{}, err
	}
	in := db.KeyInput{}
	if name != nil {
		in.Name = *name
	}
	in.ExpiresAt, err = o.time("expires_at")
	return in, err
}

// readKeyUpdate decodes the body of an update: {"name"?, "active"?}.
func readKeyUpdate(body []byte) (db.KeyUpdate, error) {
	var up db.KeyUpdate
	o, err := decodeObject(body)
	if err != nil {
		return up, err
	}
	if err := o.only("name", "active"); err != nil {
		return up, err
	}
	if up.Name, err = o.string("name"); err != nil {
		return up, err
	}
	up.Active, err = o.bool("active")
	return up, err
}
