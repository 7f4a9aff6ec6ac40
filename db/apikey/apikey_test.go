package apikey

import (
	"crypto/sha256"
	"strings"
	"testing"
)

func TestGenerateParsesBack(t *testing.T) {
	for _, kind := range []Kind{Proxy, Billing} {
		seen := map[string]bool{}
		for i := 0; i < 1000; i++ {
			key, err := Generate(kind)
			if err != nil {
				t.Fatal(err)
			}
			if len(key) != Len || !strings.HasPrefix(key, kind.Tag()) {
				t.Fatalf("bad shape %q", key)
			}
			got, err := Parse(key)
			if err != nil || got != kind {
				t.Fatalf("Parse(%q) = %q, %v", key, got, err)
			}
			if seen[key] {
				t.Fatalf("duplicate key %q", key)
			}
			seen[key] = true
		}
	}
}

func TestParseRejects(t *testing.T) {
	key, _ := Generate(Proxy)
	flip := func(i int) string {
		b := []byte(key)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	cases := map[string]string{
		"empty":            "",
		"tag only":         "ms-",
		"short":            key[:Len-1],
		"long":             key + "a",
		"unknown tag":      "mx-" + key[3:],
		"upper-case tag":   "MS-" + key[3:],
		"changed random":   flip(10),
		"changed checksum": flip(Len - 1),
		"non-base62":       key[:10] + "-" + key[11:],
		"tag swapped":      "mk-" + key[3:],
	}
	for name, in := range cases {
		if _, err := Parse(in); err != ErrMalformed {
			t.Errorf("%s: Parse(%q) error = %v, want ErrMalformed", name, in, err)
		}
	}
}

func TestPrefixAndDigest(t *testing.T) {
	key, _ := Generate(Billing)
	if p := Prefix(key); p != key[:7]+"xxxx" || len(p) != 11 {
		t.Fatalf("Prefix = %q", p)
	}
	want := sha256.Sum256([]byte(key))
	if d := Digest(key); string(d) != string(want[:]) {
		t.Fatalf("digest is not the SHA-256 of the key")
	}
}

func FuzzParse(f *testing.F) {
	key, _ := Generate(Proxy)
	f.Add(key)
	f.Add("mk-")
	f.Add("ms-" + strings.Repeat("A", 38))
	f.Fuzz(func(t *testing.T, s string) {
		kind, err := Parse(s)
		if err != nil {
			return
		}
		// Whatever parses must be exactly a key of its kind with a valid checksum.
		if len(s) != Len || !strings.HasPrefix(s, kind.Tag()) || checksum(s[:Len-checksumLen]) != s[Len-checksumLen:] {
			t.Fatalf("Parse accepted %q as %q", s, kind)
		}
	})
}

func BenchmarkGenerate(b *testing.B) {
	for b.Loop() {
		if _, err := Generate(Proxy); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	key, _ := Generate(Proxy)
	for b.Loop() {
		if _, err := Parse(key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDigest(b *testing.B) {
	key, _ := Generate(Proxy)
	for b.Loop() {
		Digest(key)
	}
}
