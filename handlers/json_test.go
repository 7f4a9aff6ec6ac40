package handlers

import (
	"testing"

	"modelswitch/db"
)

// readKeyRequest decodes a body the way Create and Update do.
func readKeyRequest(body []byte) error {
	o, err := decodeObject(body)
	if err != nil {
		return err
	}
	if err := o.only("name", "expires_at", "active"); err != nil {
		return err
	}
	if _, err := o.string("name"); err != nil {
		return err
	}
	if _, err := o.time("expires_at"); err != nil {
		return err
	}
	_, err = o.bool("active")
	return err
}

func TestDecodeKeyRequests(t *testing.T) {
	ok := []string{`{}`, `{"name": "x"}`, ` {"name": "x", "active": false, "expires_at": "2030-01-01T00:00:00+02:00"} `, `{"name": null}`}
	bad := map[string]string{
		``: "", `null`: "", `[]`: "", `"x"`: "", `{"name": "x"`: "", `{} {}`: "", `{}x`: "",
		`{"name": 1}`: "name", `{"active": "yes"}`: "active", `{"expires_at": "tomorrow"}`: "expires_at",
		`{"other": 1}`: "other", `{"NAME": "x"}`: "NAME",
		`{"name": "a", "name": "b"}`: "name", `{"name": "a",}`: "", `{"name" "a"}`: "", `{1: "a"}`: "",
	}
	for _, in := range ok {
		if err := readKeyRequest([]byte(in)); err != nil {
			t.Errorf("%s: %v", in, err)
		}
	}
	for in, field := range bad {
		err := readKeyRequest([]byte(in))
		e, isDomain := db.AsError(err)
		if !isDomain || e.Kind != db.KindInvalid || e.Field != field {
			t.Errorf("%q: %v, want an invalid-input error on field %q", in, err, field)
		}
	}
}

// FuzzDecodeKeyRequests checks that no body makes the decoders panic or
// fail with anything but a 400-kind error.
func FuzzDecodeKeyRequests(f *testing.F) {
	for _, s := range []string{`{"name": "Production", "expires_at": "2025-12-31T00:00:00Z"}`, `{"name": "New Name", "active": false}`, `{"a":[1,{"b":null}]}`, `{"name": "\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		err := readKeyRequest(body)
		if err == nil {
			return
		}
		if e, ok := db.AsError(err); !ok || e.Kind != db.KindInvalid || e.Message == "" {
			t.Fatalf("%q: %v", body, err)
		}
	})
}
