// Package apikey holds the format of ModelSwitch keys: generating them,
// checking their shape and checksum, and deriving the digest and display
// prefix that are all the database ever stores.
//
// A key is its kind's tag ("ms-" or "mk-"), 32 random base62 characters and a
// 6-character base62 CRC32 of everything before it, like GitHub's tokens: a
// typo or a truncated paste is caught without a database round trip.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"strings"
)

// Kind says what a key authenticates.
type Kind string

const (
	// Proxy keys ("ms-") authenticate inference requests under /v1.
	Proxy Kind = "proxy"
	// Billing keys ("mk-") authenticate account management under /api.
	Billing Kind = "billing"
)

const (
	alphabet    = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	randomLen   = 32 // 32 × log2(62) ≈ 190 bits
	checksumLen = 6  // 62^6 > 2^32
	tagLen      = 3  // "ms-"
	// Len is the length of every key.
	Len = tagLen + randomLen + checksumLen
)

// ErrMalformed is returned for any string that is not a well-formed key.
var ErrMalformed = errors.New("apikey: malformed key")

// Tag is the visible kind marker a key starts with.
func (k Kind) Tag() string {
	switch k {
	case Proxy:
		return "ms-"
	case Billing:
		return "mk-"
	}
	return ""
}

// Generate returns a new random key of the given kind.
func Generate(kind Kind) (string, error) {
	tag := kind.Tag()
	if tag == "" {
		return "", errors.New("apikey: unknown kind")
	}
	var b strings.Builder
	b.Grow(Len)
	b.WriteString(tag)
	buf := make([]byte, 64)
	for n := 0; n < randomLen; {
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		for _, c := range buf {
			// Rejection sampling: 248 = 4 × 62, so keeping c < 248 avoids modulo bias.
			if c < 248 && n < randomLen {
				b.WriteByte(alphabet[c%62])
				n++
			}
		}
	}
	b.WriteString(checksum(b.String()))
	return b.String(), nil
}

// Parse reports the kind of a well-formed key, or ErrMalformed when the tag,
// length, alphabet or checksum is wrong.
func Parse(key string) (Kind, error) {
	if len(key) != Len {
		return "", ErrMalformed
	}
	var kind Kind
	switch key[:tagLen] {
	case "ms-":
		kind = Proxy
	case "mk-":
		kind = Billing
	default:
		return "", ErrMalformed
	}
	for i := tagLen; i < Len; i++ {
		if !isBase62(key[i]) {
			return "", ErrMalformed
		}
	}
	body := key[:Len-checksumLen]
	if checksum(body) != key[Len-checksumLen:] {
		return "", ErrMalformed
	}
	return kind, nil
}

// Digest is the SHA-256 of the whole key: the only form a key is stored in.
// Keys carry 190 random bits, so a fast hash is enough; no salt or stretching.
func Digest(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return sum[:]
}

// Prefix is what a key is shown as after creation: its tag, the first four
// random characters, then "xxxx" ("ms-abc1xxxx").
func Prefix(key string) string {
	return key[:tagLen+4] + "xxxx"
}

func checksum(s string) string {
	n := crc32.ChecksumIEEE([]byte(s))
	var out [checksumLen]byte
	for i := checksumLen - 1; i >= 0; i-- {
		out[i] = alphabet[n%62]
		n /= 62
	}
	return string(out[:])
}

func isBase62(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
}
