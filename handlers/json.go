package handlers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"modelswitch/db"
	"modelswitch/db/money"
	"modelswitch/errs"

	"github.com/gofiber/fiber/v2"
)

// object is a decoded JSON request body. Fields are read one by one, so that
// every error names its field, unknown fields are refused and names match
// exactly (encoding/json alone ignores case).
type object map[string]json.RawMessage

// decodeObject reads one JSON object member by member, so that a member sent
// twice is refused instead of the last one silently winning.
func decodeObject(body []byte) (object, error) {
	notJSON := errs.InvalidField("", "invalid_json", "The request body is not valid JSON.")
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil, errs.InvalidField("", "invalid_json", "Send a JSON object in the request body.")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // the opening brace
		return nil, notJSON
	}
	o := object{}
	for dec.More() {
		tok, err := dec.Token()
		name, isName := tok.(string)
		if err != nil || !isName {
			return nil, notJSON
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, notJSON
		}
		if _, seen := o[name]; seen {
			return nil, errs.InvalidField(name, "duplicate_field", fmt.Sprintf("The field %q is sent twice.", name))
		}
		o[name] = value
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, notJSON
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errs.InvalidField("", "invalid_json", "Send a single JSON object in the request body.")
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
			return errs.InvalidField(field, "unknown_field",
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
		return nil, errs.InvalidField(name, "invalid_type", fmt.Sprintf("%q must be a string.", name))
	}
	return &s, nil
}

func (o object) bool(name string) (*bool, error) {
	if !o.present(name) {
		return nil, nil
	}
	var b bool
	if err := json.Unmarshal(o[name], &b); err != nil {
		return nil, errs.InvalidField(name, "invalid_type", fmt.Sprintf("%q must be true or false.", name))
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
		return nil, errs.InvalidField(name, "invalid_"+name,
			fmt.Sprintf("%q must be an RFC 3339 time with a zone, like \"2025-12-31T00:00:00Z\".", name))
	}
	return &t, nil
}

// pathID reads a positive integer id from the route, in its one plain
// spelling: "7", not "+7" or "007".
func pathID(c *fiber.Ctx) (int64, error) {
	raw := c.Params("id")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != raw {
		return 0, errs.InvalidField("id", "invalid_id", "A key id is a positive integer, from the list of your keys.")
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

// sent reports whether a field was sent at all, null included.
func (o object) sent(name string) bool {
	_, ok := o[name]
	return ok
}

// amount reads a number of US dollars, exactly as written: 12.5, not 1.25e1.
func (o object) amount(name string) (*money.USD, error) {
	if !o.present(name) {
		return nil, nil
	}
	v, err := money.Parse(string(o[name]))
	if err != nil {
		return nil, errs.InvalidField(name, "invalid_"+name,
			fmt.Sprintf("%q must be a number of US dollars with at most 9 decimal places, like 12.50, or null.", name))
	}
	return &v, nil
}

func (o object) strings(name string) (*[]string, error) {
	if !o.present(name) {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(o[name], &list); err != nil {
		return nil, errs.InvalidField(name, "invalid_type", fmt.Sprintf("%q must be an array of strings, or null.", name))
	}
	if list == nil {
		list = []string{}
	}
	return &list, nil
}

// change reads a field that an update may set, clear (null) or leave out.
func change[T any](o object, name string, read func(object, string) (*T, error)) (db.Change[T], error) {
	v, err := read(o, name)
	return db.Change[T]{Set: o.sent(name), Value: v}, err
}
