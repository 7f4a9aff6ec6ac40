package handlers

import (
	"testing"

	"modelswitch/db/apikey"
	"modelswitch/errs"
)

// decodeBoth runs a body through the decoders that Create and Update use.
func decodeBoth(body []byte) (createErr, updateErr error) {
	_, createErr = readKeyInput(body, apikey.Proxy)
	_, updateErr = readKeyUpdate(body, apikey.Proxy)
	return createErr, updateErr
}

func TestDecodeKeyRequests(t *testing.T) {
	in, err := readKeyInput([]byte(` {"name": "x", "expires_at": "2030-01-01T00:00:00+02:00"} `), apikey.Proxy)
	if err != nil || in.Name != "x" || in.ExpiresAt == nil || in.ExpiresAt.UTC().Hour() != 22 {
		t.Fatalf("create: %+v %v", in, err)
	}
	up, err := readKeyUpdate([]byte(`{"name": null, "active": false}`), apikey.Proxy)
	if err != nil || up.Name != nil || up.Active == nil || *up.Active || up.ExpiresAt.Set {
		t.Fatalf("update: %+v %v", up, err)
	}
	// An update sets an expiry, or clears it with null.
	up, err = readKeyUpdate([]byte(`{"expires_at": "2030-01-01T00:00:00+02:00"}`), apikey.Billing)
	if err != nil || !up.ExpiresAt.Set || up.ExpiresAt.Value == nil || up.ExpiresAt.Value.UTC().Hour() != 22 {
		t.Fatalf("update expiry: %+v %v", up, err)
	}
	up, err = readKeyUpdate([]byte(`{"expires_at": null}`), apikey.Billing)
	if err != nil || !up.ExpiresAt.Set || up.ExpiresAt.Value != nil {
		t.Fatalf("clear expiry: %+v %v", up, err)
	}
	if _, err := readKeyUpdate([]byte(`{"limit": 5}`), apikey.Billing); err == nil {
		t.Fatal("a billing key's update took a limit")
	}
	bad := map[string]string{
		``: "", `null`: "", `[]`: "", `"x"`: "", `{"name": "x"`: "", `{} {}`: "", `{}x`: "",
		`{"name": 1}`: "name", `{"other": 1}`: "other", `{"NAME": "x"}`: "NAME",
		`{"name": "a", "name": "b"}`: "name", `{"name": "a",}`: "", `{"name" "a"}`: "", `{1: "a"}`: "",
	}
	for in, field := range bad {
		for _, err := range []error{first(decodeBoth([]byte(in))), second(decodeBoth([]byte(in)))} {
			if e, ok := errs.As(err); !ok || e.Kind != errs.Invalid || e.Field != field {
				t.Errorf("%q: %v, want an invalid-input error on field %q", in, err, field)
			}
		}
	}
	// Each decoder takes only its own fields, with their own types.
	for in, field := range map[string]string{`{"expires_at": "tomorrow"}`: "expires_at", `{"active": true}`: "active"} {
		if e, ok := errs.As(first(decodeBoth([]byte(in)))); !ok || e.Field != field {
			t.Errorf("create %s: %v", in, e)
		}
	}
	for in, field := range map[string]string{`{"active": "yes"}`: "active", `{"expires_at": "2030-01-01"}`: "expires_at", `{"expires_at": 1}`: "expires_at"} {
		if e, ok := errs.As(second(decodeBoth([]byte(in)))); !ok || e.Field != field {
			t.Errorf("update %s: %v", in, e)
		}
	}
}

func first(a, _ error) error  { return a }
func second(_, b error) error { return b }

// FuzzDecodeKeyRequests checks that no body makes the real decoders panic or
// fail with anything but an invalid-input (400) error.
func FuzzDecodeKeyRequests(f *testing.F) {
	for _, s := range []string{`{"name": "Production", "expires_at": "2025-12-31T00:00:00Z"}`, `{"name": "New Name", "active": false}`, `{"a":[1,{"b":null}]}`, `{"name": "\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		a, b := decodeBoth(body)
		for _, err := range []error{a, b} {
			if err == nil {
				continue
			}
			if e, ok := errs.As(err); !ok || e.Kind != errs.Invalid || e.Message == "" {
				t.Fatalf("%q: %v", body, err)
			}
		}
	})
}
