// Package csrf masks a session's CSRF token for each page that shows it: the
// page carries pad || pad XOR token, with a fresh random pad every time. The
// token is then never the same twice in a compressed answer, so that
// measuring the sizes of pages that also reflect what an attacker chose
// (BREACH) does not give it away. Any masked copy checks against the token.
package csrf

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
)

// Mask is token (base64url) under a fresh pad, in base64url; "" for a token
// that is not base64url.
func Mask(token string) string {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if token == "" || err != nil {
		return ""
	}
	out := make([]byte, 2*len(raw))
	rand.Read(out[:len(raw)])
	subtle.XORBytes(out[len(raw):], out[:len(raw)], raw)
	return base64.RawURLEncoding.EncodeToString(out)
}

// Matches reports, in constant time for tokens of one length, whether sent
// is token masked.
func Matches(sent, token string) bool {
	want, err := base64.RawURLEncoding.DecodeString(token)
	if token == "" || err != nil {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(sent)
	if err != nil || len(got) != 2*len(want) {
		return false
	}
	subtle.XORBytes(got[len(want):], got[len(want):], got[:len(want)])
	return subtle.ConstantTimeCompare(got[len(want):], want) == 1
}
