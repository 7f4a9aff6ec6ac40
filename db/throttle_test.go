package db_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"modelswitch/db"
	"modelswitch/db/dbtest"
	"modelswitch/errs"
)

// fail makes n failed sign-ins to email from addr.
func fail(t *testing.T, email, addr string, n int) {
	t.Helper()
	if err := failures(email, addr, n); err != nil {
		t.Fatal(err)
	}
}

// failures is fail for other goroutines than the test's.
func failures(email, addr string, n int) error {
	for i := range n {
		if _, err := store.CheckPassword(ctx, email, "wrong horse", addr); err != db.ErrBadCredentials {
			return fmt.Errorf("failure %d from %s: %v", i+1, addr, err)
		}
	}
	return nil
}

func signIn(t *testing.T, u db.User, addr string) error {
	t.Helper()
	got, err := store.CheckPassword(ctx, u.Email, "correct horse", addr)
	if err == nil && got.ID != u.ID {
		t.Fatalf("signed in as %d, want %d", got.ID, u.ID)
	}
	return err
}

// TestThrottleSuccessClearsItsAddress: the owner's sign-in clears the
// account's failures from that address, so a few typos never add up.
func TestThrottleSuccessClearsItsAddress(t *testing.T) {
	u, home := newUser(t), freshAddr()
	fail(t, u.Email, home, 4)
	if err := signIn(t, u, home); err != nil {
		t.Fatal(err)
	}
	fail(t, u.Email, home, 5)
	wantKind(t, signIn(t, u, home), errs.RateLimited)
}

// TestThrottleDistributedGuesser: failures spread over many addresses lock
// the account once they pass the loose per-account limit of 100, and the
// owner's sign-ins in between do not wipe them out.
func TestThrottleDistributedGuesser(t *testing.T) {
	u, home := newUser(t), freshAddr()
	guessers := make([]string, 20)
	for i := range guessers {
		guessers[i] = freshAddr()
	}
	// Guess in parallel, no more at once than there are sign-in slots, so
	// that no guess waits for a slot.
	guess := func(addrs []string) {
		var wg sync.WaitGroup
		work := make(chan string)
		results := make(chan error, len(addrs))
		for range runtime.GOMAXPROCS(0) {
			wg.Go(func() {
				for addr := range work {
					results <- failures(u.Email, addr, 5) // the limit from one address
				}
			})
		}
		for _, a := range addrs {
			work <- a
		}
		close(work)
		wg.Wait()
		close(results)
		for err := range results {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	guess(guessers[:19])
	if err := signIn(t, u, home); err != nil {
		t.Fatalf("owner after 95 failures elsewhere: %v", err)
	}
	guess(guessers[19:])
	err := signIn(t, u, home)
	if e := wantKind(t, err, errs.RateLimited); e.RetryAfter <= 0 || e.RetryAfter > 15*time.Minute {
		t.Fatalf("retry after %v", e.RetryAfter)
	}
	wantKind(t, signIn(t, u, freshAddr()), errs.RateLimited)
}

// TestSignInBusy: with every sign-in slot taken, a sign-in is answered 503
// busy and is not counted against anyone.
func TestSignInBusy(t *testing.T) {
	u, addr := newUser(t), freshAddr()
	fail(t, u.Email, addr, 4)
	release := db.HoldHashSlots(false)
	_, err := store.CheckPassword(ctx, u.Email, "wrong horse", addr)
	release()
	if err != db.ErrBusy {
		t.Fatalf("sign-in with no free slot: %v, want busy", err)
	}
	fail(t, u.Email, addr, 1) // the fifth, still allowed
	wantKind(t, signIn(t, u, addr), errs.RateLimited)
}

// TestSignupsPerAddress: an address may create 10 accounts an hour; invalid
// input and sign-ups refused as busy are not counted; a sign-up flood leaves
// signing in alone.
func TestSignupsPerAddress(t *testing.T) {
	if got := store.SignupsPerHour; got != 10 {
		t.Fatalf("default SignupsPerHour %d, want 10", got)
	}
	addr := freshAddr()
	signup := func() error {
		_, err := store.CreateUser(ctx, dbtest.Email("signup"), "correct horse", addr)
		return err
	}
	for i := range 9 {
		if err := signup(); err != nil {
			t.Fatalf("sign-up %d: %v", i+1, err)
		}
	}
	u := newUser(t)
	release := db.HoldHashSlots(true)
	if err := signup(); err != db.ErrBusy {
		release()
		t.Fatalf("sign-up with no free slot: %v, want busy", err)
	}
	// Signing in has slots of its own.
	err := signIn(t, u, freshAddr())
	release()
	if err != nil {
		t.Fatalf("sign-in during a sign-up flood: %v", err)
	}
	if _, err := store.CreateUser(ctx, "not-an-email", "correct horse", addr); !errs.Is(err, errs.Invalid) {
		t.Fatalf("invalid sign-up: %v", err)
	}
	if err := signup(); err != nil {
		t.Fatalf("tenth sign-up: %v", err)
	}
	e := wantKind(t, signup(), errs.RateLimited)
	if e.Code != "too_many_signups" || e.RetryAfter <= 0 || e.RetryAfter > time.Hour || !strings.Contains(e.Message, "at most 10 an hour") {
		t.Fatalf("refused %+v", e)
	}
	// Invalid input is still told what is wrong with it.
	if _, err := store.CreateUser(ctx, "ok@example.com", "short", addr); !errs.Is(err, errs.Invalid) {
		t.Fatalf("invalid sign-up over the limit: %v", err)
	}
	// Another address in the same IPv6 /64 is the same client.
	if _, err := store.CreateUser(ctx, dbtest.Email("signup"), "correct horse", strings.TrimSuffix(addr, "1")+"2"); !errs.Is(err, errs.RateLimited) {
		t.Fatalf("sign-up from the same /64: %v", err)
	}
	if _, err := store.CreateUser(ctx, dbtest.Email("signup"), "correct horse", freshAddr()); err != nil {
		t.Fatalf("sign-up from another address: %v", err)
	}
}

// TestSignupLimitConfigurable: SignupsPerHour sets the limit.
func TestSignupLimitConfigurable(t *testing.T) {
	s := *store
	s.SignupsPerHour = 2
	addr := freshAddr()
	for i := range 3 {
		_, err := s.CreateUser(ctx, dbtest.Email("signup"), "correct horse", addr)
		if (i < 2) != (err == nil) {
			t.Fatalf("sign-up %d of a limit of 2: %v", i+1, err)
		}
	}
}
