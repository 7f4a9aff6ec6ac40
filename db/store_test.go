package db_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/db/dbtest"
	"modelswitch/errs"
)

var store *db.Store

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m, &store)) }

var ctx = context.Background()

func newUser(t testing.TB) db.User {
	t.Helper()
	u, err := store.CreateUser(ctx, dbtest.Email("store"), "correct horse", freshAddr())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func wantKind(t *testing.T, err error, kind errs.Kind) *errs.Error {
	t.Helper()
	e, ok := errs.As(err)
	if !ok || e.Kind != kind {
		t.Fatalf("error = %v, want kind %d", err, kind)
	}
	return e
}

func TestMigrateTwiceConcurrently(t *testing.T) {
	url := dbtest.URL(t)
	s, err := db.Open(ctx, db.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- s.Migrate(ctx) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestCreateUser(t *testing.T) {
	email := fmt.Sprintf("  Mixed.Case%d@Example.com ", time.Now().UnixNano())
	u, err := store.CreateUser(ctx, email, "12345678", freshAddr())
	if err != nil {
		t.Fatal(err)
	}
	if u.ID <= 0 || u.Email != email[2:len(email)-1] {
		t.Fatalf("user = %+v", u)
	}
	_, err = store.CreateUser(ctx, "mixed.case"+email[12:], "another password", freshAddr())
	if wantKind(t, err, errs.Conflict); err != db.ErrEmailTaken {
		t.Fatalf("duplicate email regardless of case: %v", err)
	}
	for _, bad := range []struct{ email, password, field string }{
		{"", "12345678", "email"},
		{"not-an-email", "12345678", "email"},
		{"Name <x@example.com>", "12345678", "email"},
		{"ok@example.com", "1234567", "password"},
		{"ok@example.com", string(make([]byte, 257)), "password"},
	} {
		_, err := store.CreateUser(ctx, bad.email, bad.password, freshAddr())
		if e := wantKind(t, err, errs.Invalid); e.Field != bad.field {
			t.Errorf("%q/%q: field %q, want %q", bad.email, bad.password, e.Field, bad.field)
		}
	}
}

// addrSeq numbers client addresses, so that each run of a test (-count)
// counts sign-ups and sign-ins from addresses of its own: the database
// outlives a run.
var addrSeq atomic.Int64

// freshAddr is an IPv6 address in a /64 of its own, since throttles count
// an IPv6 client by its /64.
func freshAddr() string {
	n := addrSeq.Add(1)
	return fmt.Sprintf("2001:db8:%x:%x::1", n>>16, n&0xffff)
}

func TestCheckPasswordAndThrottle(t *testing.T) {
	u := newUser(t)
	home, other := freshAddr(), freshAddr()
	got, err := store.CheckPassword(ctx, u.Email, "correct horse", home)
	if err != nil || got.ID != u.ID {
		t.Fatalf("right password: %v %+v", err, got)
	}
	_, errWrong := store.CheckPassword(ctx, u.Email, "wrong horse", other)
	_, errUnknown := store.CheckPassword(ctx, dbtest.Email("nobody"), "wrong horse", other)
	if errWrong != db.ErrBadCredentials || errUnknown != db.ErrBadCredentials {
		t.Fatalf("wrong password %v, unknown email %v: want the same error", errWrong, errUnknown)
	}
	// Four more failures reach the limit of five for the account from there:
	// even the right password is refused there.
	for i := 0; i < 4; i++ {
		if _, err := store.CheckPassword(ctx, u.Email, "wrong horse", other); err != db.ErrBadCredentials {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	_, err = store.CheckPassword(ctx, u.Email, "correct horse", other)
	if e := wantKind(t, err, errs.RateLimited); e.RetryAfter <= 0 || e.RetryAfter > 15*time.Minute || e.Code != "too_many_attempts" {
		t.Fatalf("refused %+v", e)
	}
	// The owner at their own address is not locked out by failures elsewhere.
	if got, err := store.CheckPassword(ctx, u.Email, "correct horse", home); err != nil || got.ID != u.ID {
		t.Fatalf("owner at home: %v", err)
	}
	// Nor is another account at the guesser's address.
	v := newUser(t)
	if _, err := store.CheckPassword(ctx, v.Email, "correct horse", other); err != nil {
		t.Fatal(err)
	}
}

func TestThrottlePerAddress(t *testing.T) {
	var err error
	addr := freshAddr()
	for i := 0; i < 60; i++ {
		if _, err = store.CheckPassword(ctx, dbtest.Email("guess"), "password", addr); err != db.ErrBadCredentials {
			if i != 50 {
				t.Fatalf("attempt %d refused; the limit is 50", i+1)
			}
			break
		}
	}
	wantKind(t, err, errs.RateLimited)
}

func TestKeysLifecycle(t *testing.T) {
	u, other := newUser(t), newUser(t)
	a, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "  First  "})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	b, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "Second", ExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "First" || a.Prefix != apikey.Prefix(a.Secret) || !a.Active || a.ExpiresAt != nil {
		t.Fatalf("created %+v", a.Key)
	}
	if b.ExpiresAt == nil || !b.ExpiresAt.Equal(exp.UTC().Truncate(time.Second)) {
		t.Fatalf("expiry %v, want %v", b.ExpiresAt, exp)
	}
	if _, err := store.CreateKey(ctx, u.ID, apikey.Billing, db.KeyInput{Name: "Billing"}); err != nil {
		t.Fatal(err)
	}

	keys, err := store.ListKeys(ctx, u.ID, apikey.Proxy)
	if err != nil || len(keys) != 2 || keys[0].ID != b.ID || keys[1].ID != a.ID {
		t.Fatalf("list = %+v, %v; want [second, first]", keys, err)
	}
	if keys, _ := store.ListKeys(ctx, other.ID, apikey.Proxy); len(keys) != 0 {
		t.Fatalf("another account sees %d keys", len(keys))
	}

	// Another account, or the other kind, cannot touch the key.
	name := "Stolen"
	_, err = store.UpdateKey(ctx, other.ID, apikey.Proxy, a.ID, db.KeyUpdate{Name: &name})
	if err != db.ErrKeyNotFound {
		t.Fatalf("update by another account: %v", err)
	}
	if err := store.DeleteKey(ctx, other.ID, apikey.Proxy, a.ID); err != db.ErrKeyNotFound {
		t.Fatalf("delete by another account: %v", err)
	}
	if err := store.DeleteKey(ctx, u.ID, apikey.Billing, a.ID); err != db.ErrKeyNotFound {
		t.Fatalf("delete as the wrong kind: %v", err)
	}

	// Partial update: only the fields sent change.
	off := false
	k, err := store.UpdateKey(ctx, u.ID, apikey.Proxy, a.ID, db.KeyUpdate{Active: &off})
	if err != nil || k.Active || k.Name != "First" {
		t.Fatalf("deactivate: %+v %v", k, err)
	}
	name = "Renamed"
	k, err = store.UpdateKey(ctx, u.ID, apikey.Proxy, a.ID, db.KeyUpdate{Name: &name})
	if err != nil || k.Active || k.Name != "Renamed" {
		t.Fatalf("rename: %+v %v", k, err)
	}
	_, err = store.UpdateKey(ctx, u.ID, apikey.Proxy, a.ID, db.KeyUpdate{})
	wantKind(t, err, errs.Invalid)

	if err := store.DeleteKey(ctx, u.ID, apikey.Proxy, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := store.DeleteKey(ctx, u.ID, apikey.Proxy, a.ID); err != db.ErrKeyNotFound {
		t.Fatalf("second delete: %v", err)
	}
}

func TestKeyValidation(t *testing.T) {
	u := newUser(t)
	past := time.Now().Add(-time.Second)
	cases := []struct {
		in    db.KeyInput
		field string
	}{
		{db.KeyInput{Name: ""}, "name"},
		{db.KeyInput{Name: "   "}, "name"},
		{db.KeyInput{Name: "tab\there"}, "name"},
		{db.KeyInput{Name: "nul\x00"}, "name"},
		{db.KeyInput{Name: "é" + fmt.Sprintf("%0100d", 0)}, "name"},
		{db.KeyInput{Name: "ok", ExpiresAt: &past}, "expires_at"},
	}
	for _, c := range cases {
		_, err := store.CreateKey(ctx, u.ID, apikey.Proxy, c.in)
		if e := wantKind(t, err, errs.Invalid); e.Field != c.field {
			t.Errorf("%q: field %q, want %q", c.in.Name, e.Field, c.field)
		}
	}
	if _, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "日本語" + fmt.Sprintf("%097d", 0)}); err != nil {
		t.Fatalf("100 characters of multi-byte text: %v", err)
	}
	if keys, _ := store.ListKeys(ctx, u.ID, apikey.Proxy); len(keys) != 1 {
		t.Fatalf("failed creates left %d keys", len(keys)-1)
	}
}

func TestVerifyKey(t *testing.T) {
	u := newUser(t)
	k, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "auth"})
	if err != nil {
		t.Fatal(err)
	}
	digest := apikey.Digest(k.Secret)
	got, err := store.VerifyKey(ctx, apikey.Proxy, digest)
	if err != nil || got.ID != k.ID || got.UserID != u.ID || got.Status(time.Now()) != db.KeyActive {
		t.Fatalf("active key: %+v %v", got, err)
	}
	if _, err := store.VerifyKey(ctx, apikey.Billing, digest); err != db.ErrUnknownKey {
		t.Fatalf("a proxy key verified as a billing key: %v", err)
	}
	if got.LastUsedAt != nil {
		t.Fatal("verifying wrote a last use: it must only read")
	}
	if err := store.RecordKeyUse(ctx, got); err != nil {
		t.Fatal(err)
	}
	got, _ = store.VerifyKey(ctx, apikey.Proxy, digest)
	if got.LastUsedAt == nil || time.Since(*got.LastUsedAt) > time.Minute {
		t.Fatalf("last use not recorded: %v", got.LastUsedAt)
	}
	off := false
	store.UpdateKey(ctx, u.ID, apikey.Proxy, k.ID, db.KeyUpdate{Active: &off})
	got, _ = store.VerifyKey(ctx, apikey.Proxy, digest)
	if got.Status(time.Now()) != db.KeyInactive {
		t.Fatalf("deactivated key: %s", got.Status(time.Now()))
	}
	store.DeleteKey(ctx, u.ID, apikey.Proxy, k.ID)
	_, err = store.VerifyKey(ctx, apikey.Proxy, digest)
	wantKind(t, err, errs.Unauthorized)
}

func TestKeyStatus(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	past, future := now.Add(-time.Second), now.Add(time.Second)
	for _, c := range []struct {
		key  db.Key
		want db.KeyStatus
	}{
		{db.Key{Active: true}, db.KeyActive},
		{db.Key{Active: true, ExpiresAt: &future}, db.KeyActive},
		{db.Key{Active: true, ExpiresAt: &now}, db.KeyExpired},
		{db.Key{Active: true, ExpiresAt: &past}, db.KeyExpired},
		{db.Key{Active: false, ExpiresAt: &past}, db.KeyInactive},
		{db.Key{Active: false}, db.KeyInactive},
	} {
		if got := c.key.Status(now); got != c.want {
			t.Errorf("%+v: %s, want %s", c.key, got, c.want)
		}
	}
}

func TestConcurrentCreatesAndDeletes(t *testing.T) {
	u := newUser(t)
	var wg sync.WaitGroup
	failures := make(chan error, 200)
	for i := range 200 {
		wg.Go(func() {
			_, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: fmt.Sprint("key ", i)})
			failures <- err
		})
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		if err != nil {
			t.Fatal(err)
		}
	}
	keys, err := store.ListKeys(ctx, u.ID, apikey.Proxy)
	if err != nil || len(keys) != 200 {
		t.Fatalf("%d keys after 200 concurrent creates (%v)", len(keys), err)
	}

	results := make(chan error, 2)
	for range 2 {
		wg.Go(func() { results <- store.DeleteKey(ctx, u.ID, apikey.Proxy, keys[0].ID) })
	}
	wg.Wait()
	a, b := <-results, <-results
	if (a == nil) == (b == nil) || !errors.Is(errors.Join(a, b), db.ErrKeyNotFound) {
		t.Fatalf("two deletes: %v and %v; want one success and one not found", a, b)
	}
}

// TestSessionSeenWithoutAWritePerRequest: a browser session is marked as
// seen only once its last sight is SessionSeenEvery old; since the stored
// sight may lag that much, the session lives on for that much past its idle
// timeout, and ends after.
func TestSessionSeenWithoutAWritePerRequest(t *testing.T) {
	u := newUser(t)
	s := createSession(t, u.ID, db.BrowserSession, time.Hour)
	seenAgo := func(d time.Duration) time.Time {
		t.Helper()
		if err := store.Exec(ctx, `UPDATE sessions SET last_seen_at = now() - make_interval(secs => $2) WHERE id = $1`, s.ID, d.Seconds()); err != nil {
			t.Fatal(err)
		}
		at, err := store.SessionLastSeen(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		return at
	}
	touch := func() time.Time {
		t.Helper()
		if id, err := store.TouchSession(ctx, s.ID, db.BrowserSession, time.Hour); err != nil || id != u.ID {
			t.Fatalf("live session: %d %v", id, err)
		}
		at, err := store.SessionLastSeen(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		return at
	}
	if before := seenAgo(db.SessionSeenEvery / 2); !touch().Equal(before) {
		t.Fatal("a session seen recently was written again")
	}
	if before := seenAgo(db.SessionSeenEvery + time.Second); !touch().After(before.Add(db.SessionSeenEvery)) {
		t.Fatal("a session not seen for a while was not marked as seen")
	}
	seenAgo(time.Hour + db.SessionSeenEvery/2)
	if listed, err := store.ListSessions(ctx, u.ID, time.Hour); err != nil || len(listed) != 1 {
		t.Fatalf("a session within its timeout and the lag: listed %d, %v", len(listed), err)
	}
	touch()
	seenAgo(time.Hour + db.SessionSeenEvery + time.Second)
	if _, err := store.TouchSession(ctx, s.ID, db.BrowserSession, time.Hour); err != db.ErrSessionEnded {
		t.Fatalf("a session idle for longer than its timeout and the lag: %v", err)
	}
	if listed, err := store.ListSessions(ctx, u.ID, time.Hour); err != nil || len(listed) != 0 {
		t.Fatalf("an ended session listed: %d, %v", len(listed), err)
	}
}

func TestSessions(t *testing.T) {
	u := newUser(t)
	s, err := store.CreateSession(ctx, u.ID, db.APISession, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := store.TouchSession(ctx, s.ID, db.APISession, 0); err != nil || id != u.ID {
		t.Fatalf("live session: %d %v", id, err)
	}
	if _, err := store.TouchSession(ctx, s.ID, db.BrowserSession, 0); err != db.ErrSessionEnded {
		t.Fatalf("an API session used as a browser session: %v", err)
	}
	if err := store.DeleteSession(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := store.TouchSession(ctx, s.ID, db.APISession, 0); err != db.ErrSessionEnded {
		t.Fatalf("deleted session: %v", err)
	}
	short := createSession(t, u.ID, db.BrowserSession, -time.Second)
	if _, err := store.TouchSession(ctx, short.ID, db.BrowserSession, time.Hour); err != db.ErrSessionEnded {
		t.Fatalf("expired session: %v", err)
	}

	// Signing out everywhere ends sessions of both types, each checked as
	// its own type, and leaves other accounts' sessions alone.
	browser := createSession(t, u.ID, db.BrowserSession, time.Hour)
	api := createSession(t, u.ID, db.APISession, time.Hour)
	other := newUser(t)
	bystander := createSession(t, other.ID, db.BrowserSession, time.Hour)
	for _, live := range []struct {
		s   db.Session
		typ db.SessionType
	}{{browser, db.BrowserSession}, {api, db.APISession}} {
		if id, err := store.TouchSession(ctx, live.s.ID, live.typ, time.Hour); err != nil || id != u.ID {
			t.Fatalf("%s session before signing out: %d %v", live.typ, id, err)
		}
	}
	if err := store.DeleteUserSessions(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := store.TouchSession(ctx, browser.ID, db.BrowserSession, time.Hour); err != db.ErrSessionEnded {
		t.Fatalf("browser session after signing out everywhere: %v", err)
	}
	if _, err := store.TouchSession(ctx, api.ID, db.APISession, 0); err != db.ErrSessionEnded {
		t.Fatalf("API session after signing out everywhere: %v", err)
	}
	if id, err := store.TouchSession(ctx, bystander.ID, db.BrowserSession, time.Hour); err != nil || id != other.ID {
		t.Fatalf("another account's session after signing out everywhere: %d %v", id, err)
	}
}

func createSession(t *testing.T, userID int64, typ db.SessionType, ttl time.Duration) db.Session {
	t.Helper()
	s, err := store.CreateSession(ctx, userID, typ, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func BenchmarkVerifyKey(b *testing.B) {
	u := newUser(b)
	k, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := store.VerifyKey(ctx, apikey.Proxy, apikey.Digest(k.Secret)); err != nil {
			b.Fatal(err)
		}
	}
}
