package db

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"runtime"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"
)

// argon2id parameters: OWASP's minimum recommendation (19 MiB, 2 passes, 1 lane).
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
)

var b64 = base64.RawStdEncoding

// hashSlots bounds concurrent argon2 work, 19 MiB and a CPU each. Sign-ups
// and sign-ins have slots of their own, sign-ups half as many, so that a
// flood of sign-ups cannot starve signing in, nor the other way round.
type hashSlots chan struct{}

var (
	signInSlots = make(hashSlots, max(1, runtime.GOMAXPROCS(0)))
	signUpSlots = make(hashSlots, max(1, runtime.GOMAXPROCS(0)/2))
)

// hashWait is how long a request waits for a slot before it is answered 503:
// a queue longer than this is a flood, and waiting would only hold memory.
const hashWait = time.Second

// run calls f in a slot, or returns ErrBusy when none frees up in time.
func (s hashSlots) run(ctx context.Context, f func()) error {
	select {
	case s <- struct{}{}:
	default:
		t := time.NewTimer(hashWait)
		defer t.Stop()
		select {
		case s <- struct{}{}:
		case <-t.C:
			return ErrBusy
		case <-ctx.Done():
			return ErrBusy
		}
	}
	defer func() { <-s }()
	f()
	return nil
}

// hashPassword returns a PHC-format argon2id hash, computed in a sign-up slot.
func hashPassword(ctx context.Context, password string) (string, error) {
	var hash string
	err := signUpSlots.run(ctx, func() { hash = newHash(password) })
	return hash, err
}

func newHash(password string) string {
	salt := make([]byte, argonSaltLen)
	rand.Read(salt) // never fails (crypto/rand)
	sum := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(sum))
}

// checkPassword reports whether password matches a hash from hashPassword,
// reading the parameters from the hash so that they can be raised later. It
// runs in a sign-in slot.
func checkPassword(ctx context.Context, hash, password string) (ok bool, err error) {
	err = signInSlots.run(ctx, func() { ok = matches(hash, password) })
	return ok, err
}

func matches(hash, password string) bool {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var version int
	var memory, passes uint32
	var threads uint8
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &memory, &passes, &threads); err != nil {
		return false
	}
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, passes, memory, threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// dummyHash is checked against when an email is unknown, so that an unknown
// email costs the same time as a wrong password.
var dummyHash = newHash("modelswitch-dummy-password")
