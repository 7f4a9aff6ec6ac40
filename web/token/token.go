// Package token issues and checks the session JWTs that log-in returns.
package token

import (
	"errors"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Signer signs and verifies HS256 session tokens.
type Signer struct {
	key    []byte
	parser *jwt.Parser
}

// NewSigner returns a signer for a key derived from SECRET_KEY.
func NewSigner(key []byte) *Signer {
	return &Signer{key: key, parser: jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), // no "none", no algorithm confusion
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	)}
}

type claims struct {
	jwt.RegisteredClaims
	SessionID string `json:"sid"`
}

// Issue returns a token for a user's session.
func (s *Signer) Issue(userID int64, sessionID string, issued, expires time.Time) (string, error) {
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   strconv.FormatInt(userID, 10),
			IssuedAt:  jwt.NewNumericDate(issued),
			ExpiresAt: jwt.NewNumericDate(expires),
		},
		SessionID: sessionID,
	}).SignedString(s.key)
}

// ErrInvalid is returned for any token that is not one of ours, still valid.
var ErrInvalid = errors.New("token: invalid")

// Verify checks a token's signature, algorithm and expiry and returns the
// user and session it names. The caller still checks the session is live.
func (s *Signer) Verify(tok string) (userID int64, sessionID string, err error) {
	var c claims
	if _, err := s.parser.ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) { return s.key, nil }); err != nil {
		return 0, "", ErrInvalid
	}
	userID, err = strconv.ParseInt(c.Subject, 10, 64)
	if err != nil || userID <= 0 || c.SessionID == "" {
		return 0, "", ErrInvalid
	}
	return userID, c.SessionID, nil
}
