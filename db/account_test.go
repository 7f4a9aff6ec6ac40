package db_test

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/db/money"
	"modelswitch/errs"
)

// handles lists the handles of the account's live sessions.
func handles(t *testing.T, userID int64) map[string]db.SessionType {
	t.Helper()
	list, err := store.ListSessions(ctx, userID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]db.SessionType{}
	for _, s := range list {
		got[s.Handle] = s.Kind
	}
	return got
}

func newSession(t *testing.T, userID int64, kind db.SessionType) db.Session {
	t.Helper()
	s, err := store.CreateSession(ctx, userID, kind, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func live(s db.Session, kind db.SessionType) bool {
	_, err := store.TouchSession(ctx, s.ID, kind, 0)
	return err == nil
}

func TestSessionListAndSignOutAreScopedToTheAccount(t *testing.T) {
	u, other := newUser(t), newUser(t)
	browser := newSession(t, u.ID, db.BrowserSession)
	api := newSession(t, u.ID, db.APISession)
	theirs := newSession(t, other.ID, db.BrowserSession)

	want := map[string]db.SessionType{db.SessionHandle(browser.ID): db.BrowserSession, db.SessionHandle(api.ID): db.APISession}
	got := handles(t, u.ID)
	if len(got) != 2 || got[db.SessionHandle(browser.ID)] != db.BrowserSession || got[db.SessionHandle(api.ID)] != db.APISession {
		t.Fatalf("sessions %v, want %v", got, want)
	}
	for h := range got {
		if strings.Contains(browser.ID+api.ID, h) {
			t.Fatalf("a handle is part of a session id: %s", h)
		}
	}

	// Another account's handle is not found, and its session lives on.
	wantKind(t, store.DeleteSessionByHandle(ctx, u.ID, db.SessionHandle(theirs.ID)), errs.NotFound)
	wantKind(t, store.DeleteSessionByHandle(ctx, u.ID, "not a handle"), errs.NotFound)
	if !live(theirs, db.BrowserSession) {
		t.Fatal("signing out another account's session by its handle ended it")
	}
	if err := store.DeleteSessionByHandle(ctx, u.ID, db.SessionHandle(api.ID)); err != nil {
		t.Fatal(err)
	}
	if live(api, db.APISession) || !live(browser, db.BrowserSession) {
		t.Fatal("signing out the API session did not end it alone")
	}
	wantKind(t, store.DeleteSessionByHandle(ctx, u.ID, db.SessionHandle(api.ID)), errs.NotFound)

	// A browser session idle past the timeout has ended: it is not listed.
	if err := store.Exec(ctx, `UPDATE sessions SET last_seen_at = now() - interval '2 hours' WHERE id = $1`, browser.ID); err != nil {
		t.Fatal(err)
	}
	if got := handles(t, u.ID); len(got) != 0 {
		t.Fatalf("an idle browser session is listed: %v", got)
	}
}

func TestChangePassword(t *testing.T) {
	u := newUser(t)
	addr := freshAddr()
	keep := newSession(t, u.ID, db.BrowserSession)
	otherBrowser := newSession(t, u.ID, db.BrowserSession)
	api := newSession(t, u.ID, db.APISession)
	reset, err := store.RequestPasswordReset(ctx, u.Email, addr)
	if err != nil || reset == nil {
		t.Fatalf("reset: %v %v", reset, err)
	}

	e := wantKind(t, store.ChangePassword(ctx, u.ID, "wrong password", "new password 1", addr, keep.ID), errs.Invalid)
	if e.Field != "current_password" {
		t.Fatalf("wrong current password: field %q", e.Field)
	}
	e = wantKind(t, store.ChangePassword(ctx, u.ID, "correct horse", "short", addr, keep.ID), errs.Invalid)
	if e.Field != "new_password" {
		t.Fatalf("short new password: field %q", e.Field)
	}
	if !live(otherBrowser, db.BrowserSession) || !live(api, db.APISession) {
		t.Fatal("a refused change ended sessions")
	}

	if err := store.ChangePassword(ctx, u.ID, "correct horse", "new password 1", addr, keep.ID); err != nil {
		t.Fatal(err)
	}
	if !live(keep, db.BrowserSession) || live(otherBrowser, db.BrowserSession) || live(api, db.APISession) {
		t.Fatal("a change must end every other session, API tokens included, and keep this one")
	}
	wantKind(t, store.CheckPasswordReset(ctx, reset.Token), errs.NotFound)
	wantKind(t, func() error { _, err := store.CheckPassword(ctx, u.Email, "correct horse", addr); return err }(), errs.Unauthorized)
	if _, err := store.CheckPassword(ctx, u.Email, "new password 1", addr); err != nil {
		t.Fatalf("the new password does not sign in: %v", err)
	}
}

func TestChangePasswordIsThrottled(t *testing.T) {
	u := newUser(t)
	addr := freshAddr()
	for range 5 {
		wantKind(t, store.ChangePassword(ctx, u.ID, "wrong password", "new password 1", addr, ""), errs.Invalid)
	}
	e := wantKind(t, store.ChangePassword(ctx, u.ID, "correct horse", "new password 1", addr, ""), errs.RateLimited)
	if e.RetryAfter <= 0 {
		t.Fatalf("no Retry-After: %v", e)
	}
	if _, err := store.CheckPassword(ctx, u.Email, "correct horse", freshAddr()); err != nil {
		t.Fatalf("a throttled change changed the password: %v", err)
	}
}

func TestDeleteAccount(t *testing.T) {
	u, other := newUser(t), newUser(t)
	sess := newSession(t, u.ID, db.APISession)
	key, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "doomed"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.AddCredits(ctx, u.Email, db.Credit{Amount: 5 * money.Dollar}); err != nil {
		t.Fatal(err)
	}
	reset, err := store.RequestPasswordReset(ctx, u.Email, freshAddr())
	if err != nil || reset == nil {
		t.Fatalf("reset: %v %v", reset, err)
	}
	// Two replicas' key caches hold the key.
	a, b := newCache(t), newCache(t)
	poll(t, 5*time.Second, "both caches to hold the key", func() bool {
		return a.Listening() && b.Listening() && active(a, key.Secret) && active(b, key.Secret) &&
			a.Cached(apikey.Proxy, apikey.Digest(key.Secret)) && b.Cached(apikey.Proxy, apikey.Digest(key.Secret))
	})

	for _, wrong := range []string{"", other.Email, "x" + u.Email} {
		wantKind(t, store.DeleteAccount(ctx, u.ID, wrong), errs.Invalid)
	}
	// The right email, for another account's id, deletes nothing either.
	wantKind(t, store.DeleteAccount(ctx, other.ID, u.Email), errs.Invalid)
	if !live(sess, db.APISession) {
		t.Fatal("a refused deletion ended a session")
	}

	if err := store.DeleteAccount(ctx, u.ID, "  "+strings.ToUpper(u.Email)+" "); err != nil {
		t.Fatal(err)
	}
	// Cached for 10 s, the key must be dropped at once: the cascade deleted
	// its row, and the api_keys trigger notified both replicas.
	poll(t, 2*time.Second, "both caches to refuse the key", func() bool {
		_, errA := a.VerifyKey(ctx, apikey.Proxy, apikey.Digest(key.Secret))
		_, errB := b.VerifyKey(ctx, apikey.Proxy, apikey.Digest(key.Secret))
		return errs.Is(errA, errs.Unauthorized) && errs.Is(errB, errs.Unauthorized)
	})
	if live(sess, db.APISession) {
		t.Fatal("a session of the deleted account lives on")
	}
	wantKind(t, store.CheckPasswordReset(ctx, reset.Token), errs.NotFound)
	if _, err := store.GetBalance(ctx, u.ID); !errors.Is(err, sql.ErrNoRows) {
		t.Fatalf("the balance of the deleted account: %v", err)
	}
	if entries, _, err := store.ListEntries(ctx, u.ID, db.EntryFilter{Limit: 10}); err != nil || len(entries) != 0 {
		t.Fatalf("ledger entries of the deleted account: %v %v", entries, err)
	}
	if _, err := store.CheckPassword(ctx, u.Email, "correct horse", freshAddr()); !errs.Is(err, errs.Unauthorized) {
		t.Fatalf("the deleted account signs in: %v", err)
	}
	if _, err := store.CheckPassword(ctx, other.Email, "correct horse", freshAddr()); err != nil {
		t.Fatalf("the other account was touched: %v", err)
	}
}

func TestPasswordReset(t *testing.T) {
	u := newUser(t)
	addr := freshAddr()
	sessions := []db.Session{newSession(t, u.ID, db.BrowserSession), newSession(t, u.ID, db.APISession)}

	// No account: nothing to send, and no error that would tell.
	if r, err := store.RequestPasswordReset(ctx, "nobody-"+u.Email, addr); r != nil || err != nil {
		t.Fatalf("unknown email: %v %v", r, err)
	}
	wantKind(t, func() error { _, err := store.RequestPasswordReset(ctx, "not an email", addr); return err }(), errs.Invalid)

	first, err := store.RequestPasswordReset(ctx, " "+strings.ToUpper(u.Email), addr)
	if err != nil || first == nil || first.Email != u.Email || len(first.Token) != 43 {
		t.Fatalf("reset: %+v %v", first, err)
	}
	second, err := store.RequestPasswordReset(ctx, u.Email, addr)
	if err != nil || second == nil || second.Token == first.Token {
		t.Fatalf("second reset: %+v %v", second, err)
	}
	for _, tok := range []string{first.Token, second.Token} {
		if err := store.CheckPasswordReset(ctx, tok); err != nil {
			t.Fatalf("a fresh link does not work: %v", err)
		}
	}
	last := "A" // the token with its last character changed
	if strings.HasSuffix(first.Token, last) {
		last = "B"
	}
	for _, bad := range []string{"", "x", first.Token[:42] + last, strings.Repeat("A", 43)} {
		wantKind(t, store.CheckPasswordReset(ctx, bad), errs.NotFound)
	}

	// A bad password leaves the link working.
	e := wantKind(t, func() error { _, err := store.ResetPassword(ctx, first.Token, "short"); return err }(), errs.Invalid)
	if e.Field != "password" {
		t.Fatalf("short password: %v", e)
	}
	if err := store.CheckPasswordReset(ctx, first.Token); err != nil {
		t.Fatalf("a refused password used the link up: %v", err)
	}

	got, err := store.ResetPassword(ctx, first.Token, "brand new password")
	if err != nil || got.ID != u.ID || got.Email != u.Email {
		t.Fatalf("reset: %+v %v", got, err)
	}
	for _, s := range sessions {
		if _, err := store.TouchSession(ctx, s.ID, db.BrowserSession, 0); err == nil {
			t.Fatal("a session outlived the reset")
		}
		if _, err := store.TouchSession(ctx, s.ID, db.APISession, 0); err == nil {
			t.Fatal("a session outlived the reset")
		}
	}
	// Used once; and the account's other link ended with it.
	wantKind(t, func() error { _, err := store.ResetPassword(ctx, first.Token, "another password"); return err }(), errs.NotFound)
	wantKind(t, store.CheckPasswordReset(ctx, second.Token), errs.NotFound)
	if _, err := store.CheckPassword(ctx, u.Email, "brand new password", freshAddr()); err != nil {
		t.Fatalf("the new password does not sign in: %v", err)
	}
	wantKind(t, func() error { _, err := store.CheckPassword(ctx, u.Email, "correct horse", freshAddr()); return err }(), errs.Unauthorized)
}

func TestPasswordResetWorksOnceWhenSentTwiceAtOnce(t *testing.T) {
	u := newUser(t)
	r, err := store.RequestPasswordReset(ctx, u.Email, freshAddr())
	if err != nil || r == nil {
		t.Fatal(r, err)
	}
	use := func(i int) error {
		_, err := store.ResetPassword(ctx, r.Token, fmt.Sprintf("concurrent password %d", i))
		return err
	}
	var wg sync.WaitGroup
	results := make([]error, 4)
	for i := range results {
		wg.Go(func() { results[i] = use(i) })
	}
	wg.Wait()
	ok := 0
	for i, err := range results {
		if errors.Is(err, db.ErrBusy) {
			// No hashing slot in time (a loaded machine): this one never
			// reached the link; it tries again, after the others.
			err = use(i)
		}
		switch {
		case err == nil:
			ok++
		case !errs.Is(err, errs.NotFound):
			t.Fatalf("a use failed otherwise: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of 4 uses of one link succeeded, want 1", ok)
	}
}

func TestPasswordResetExpiresAfter30Minutes(t *testing.T) {
	u := newUser(t)
	r, err := store.RequestPasswordReset(ctx, u.Email, freshAddr())
	if err != nil || r == nil {
		t.Fatal(r, err)
	}
	at := func(d time.Duration) *db.Store { return store.WithClock(func() time.Time { return time.Now().Add(d) }) }
	if err := at(29*time.Minute).CheckPasswordReset(ctx, r.Token); err != nil {
		t.Fatalf("after 29 minutes: %v", err)
	}
	wantKind(t, at(31*time.Minute).CheckPasswordReset(ctx, r.Token), errs.NotFound)
	wantKind(t, func() error {
		_, err := at(31*time.Minute).ResetPassword(ctx, r.Token, "too late password")
		return err
	}(), errs.NotFound)
	if _, err := store.CheckPassword(ctx, u.Email, "correct horse", freshAddr()); err != nil {
		t.Fatalf("an expired link changed the password: %v", err)
	}
}

func TestPasswordResetRequestsAreThrottled(t *testing.T) {
	// Per email, known or not, from one address: the same refusal.
	known := newUser(t)
	for _, email := range []string{known.Email, "unknown-" + known.Email} {
		addr := freshAddr()
		for i := range 5 {
			if _, err := store.RequestPasswordReset(ctx, email, addr); err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
		}
		e := wantKind(t, func() error { _, err := store.RequestPasswordReset(ctx, email, freshAddr()); return err }(), errs.RateLimited)
		if e.RetryAfter <= 0 || e.RetryAfter > time.Hour {
			t.Fatalf("Retry-After %v", e.RetryAfter)
		}
	}
	// Per address, whatever the emails.
	addr := freshAddr()
	for i := range 20 {
		if _, err := store.RequestPasswordReset(ctx, fmt.Sprintf("spread-%d-%s", i, known.Email), addr); err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
	}
	wantKind(t, func() error { _, err := store.RequestPasswordReset(ctx, "one-more-"+known.Email, addr); return err }(), errs.RateLimited)
}
