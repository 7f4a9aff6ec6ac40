package handlers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
)

// object is a decoded JSON request body. Fields are read one by one, so that
// every error names its field, unknown fields are refused and names match
// exactly (encoding/json alone ignores case).
type object map[string]json.RawMessage

func decodeObject(body []byte) (object, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil, db.Invalid("", "invalid_json", "Send a JSON object in the request body.")
	}
	var o object
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&o); err != nil {
		return nil, db.Invalid("", "invalid_json", "The request body is not valid JSON.")
	}
	if dec.More() {
		return nil, db.Invalid("", "invalid_json", "Send a single JSON object in the request body.")
	}
	return o, nil
}

// only refuses fields other than names.
func (o object) only(names ...string) error {
	for field := range o {
		known := false
		for _, n := range names {
			known = known || field == n
		}
		if !known {
			return db.Invalid(field, "unknown_field",
				fmt.Sprintf("Unknown field %q. Allowed fields: %s.", field, strings.Join(names, ", ")))
		}
	}
	return nil
}

// present reports whether a field was sent with a non-null value.
func (o object) present(name string) bool {
	raw, ok := o[name]
	return ok && string(raw) != "null"
}

func (o object) string(name string) (*string, error) {
	if !o.present(name) {
		return nil, nil
	}
	var s string
	if err := json.Unmarshal(o[name], &s); err != nil {
		return nil, db.Invalid(name, "invalid_type", fmt.Sprintf("%q must be a string.", name))
	}
	return &s, nil
}

func (o object) bool(name string) (*bool, error) {
	if !o.present(name) {
		return nil, nil
	}
	var b bool
	if err := json.Unmarshal(o[name], &b); err != nil {
		return nil, db.Invalid(name, "invalid_type", fmt.Sprintf("%q must be true or false.", name))
	}
	return &b, nil
}

// time reads an RFC 3339 time with a zone: "2025-12-31T00:00:00Z".
func (o object) time(name string) (*time.Time, error) {
	s, err := o.string(name)
	if s == nil || err != nil {
		return nil, err
	}
	t, err := time.Parse(time.RFC3339, *s)
	if err != nil {
		return nil, db.Invalid(name, "invalid_"+name,
			fmt.Sprintf("%q must be an RFC 3339 time with a zone, like \"2025-12-31T00:00:00Z\".", name))
	}
	return &t, nil
}

// pathID reads a positive integer id from the route.
func pathID(c *fiber.Ctx) (int64, error) {
	id, err := strconv.ParseInt(c.Params("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, db.Invalid("id", "invalid_id", "A key id is a positive integer, from the list of your keys.")
	}
	return id, nil
}

// timestamp formats times the way every response does: RFC 3339 in UTC.
func timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func optionalTimestamp(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := timestamp(*t)
	return &s
}
