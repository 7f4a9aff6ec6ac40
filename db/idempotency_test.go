package db_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"modelswitch/db"
	"modelswitch/db/apikey"
)

// idemStore is the test store with an idempotency secret.
func idemStore() *db.Store {
	return store.WithIdempotencySecret([]byte("idempotency test secret, 32 bytes!"))
}

func idemKey(userID int64, value, request string) db.IdempotencyKey {
	return db.IdempotencyKey{UserID: userID, Scope: "api", Value: value, Request: []byte(request)}
}

// mustClaim claims k and fails the test unless it was a fresh claim.
func mustClaim(t *testing.T, s *db.Store, k db.IdempotencyKey) *db.IdempotencyClaim {
	t.Helper()
	claim, replay, err := s.ClaimIdempotencyKey(ctx, k)
	if err != nil || replay != nil || claim == nil {
		t.Fatalf("claim: %v, replay %v", err, replay)
	}
	return claim
}

func mustReplay(t *testing.T, s *db.Store, k db.IdempotencyKey) *db.Replay {
	t.Helper()
	claim, replay, err := s.ClaimIdempotencyKey(ctx, k)
	if err != nil || claim != nil || replay == nil {
		t.Fatalf("want a replay: claim %v, error %v", claim, err)
	}
	return replay
}

func TestIdempotencyReplaysTheFirstAnswer(t *testing.T) {
	s := idemStore()
	u, other := newUser(t), newUser(t)
	k := idemKey(u.ID, "retry-1", "POST /api/keys {name}")
	claim := mustClaim(t, s, k)

	// In flight: a second request is refused, or waits with Wait.
	if _, _, err := s.ClaimIdempotencyKey(ctx, k); !errors.Is(err, db.ErrIdempotencyInProgress) {
		t.Fatalf("while in flight: %v", err)
	}
	// The waiter reads the clock once per look: a second look means it
	// found the key in flight and is waiting.
	var looks atomic.Int32
	waiting := make(chan struct{})
	waiter := s.WithClock(func() time.Time {
		if looks.Add(1) == 2 {
			close(waiting)
		}
		return time.Now()
	})
	var waited *db.Replay
	done := make(chan struct{})
	go func() {
		defer close(done)
		wk := k
		wk.Wait = true
		_, waited, _ = waiter.ClaimIdempotencyKey(ctx, wk)
	}()
	select {
	case <-waiting:
	case <-done:
		t.Fatal("the waiter returned without waiting")
	}
	if err := claim.Save(ctx, 201, []byte(`{"key":"first"}`)); err != nil {
		t.Fatal(err)
	}
	<-done
	if waited == nil || waited.Status != 201 || string(waited.Payload) != `{"key":"first"}` {
		t.Fatalf("the waiting request got %+v", waited)
	}

	r := mustReplay(t, s, k)
	if r.Status != 201 || string(r.Payload) != `{"key":"first"}` {
		t.Fatalf("replay %d %q", r.Status, r.Payload)
	}
	// The same key for another request is refused.
	if _, _, err := s.ClaimIdempotencyKey(ctx, idemKey(u.ID, "retry-1", "POST /api/keys {other}")); !errors.Is(err, db.ErrIdempotencyKeyReused) {
		t.Fatalf("another request with the key: %v", err)
	}
	// Keys are the account's and the scope's own: the same value elsewhere
	// starts afresh, and never opens the first answer.
	mustClaim(t, s, idemKey(other.ID, "retry-1", "POST /api/keys {name}"))
	inSession := k
	inSession.Scope = "form:session"
	mustClaim(t, s, inSession)
	// Another server secret derives other keys: nothing to replay.
	mustClaim(t, store.WithIdempotencySecret([]byte("another secret, another 32 bytes!!")), k)
	// Without a secret the store refuses to work, rather than store keys in clear.
	if _, _, err := store.ClaimIdempotencyKey(ctx, k); err == nil {
		t.Fatal("a store without an idempotency secret claimed a key")
	}
}

func TestIdempotencyReleaseLetsTheKeyBeUsedAgain(t *testing.T) {
	s := idemStore()
	u := newUser(t)
	k := idemKey(u.ID, "fails-first", "request")
	first := mustClaim(t, s, k)
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	claim := mustClaim(t, s, idemKey(u.ID, "fails-first", "another request after a failure"))
	if err := claim.Save(ctx, 200, []byte("second")); err != nil {
		t.Fatal(err)
	}
	// A released claim cannot save over the key's next use.
	first.Save(ctx, 200, []byte("first"))
	if r := mustReplay(t, s, idemKey(u.ID, "fails-first", "another request after a failure")); string(r.Payload) != "second" {
		t.Fatalf("replay %q", r.Payload)
	}
}

func TestIdempotencyKeysExpire(t *testing.T) {
	s := idemStore()
	u := newUser(t)
	k := idemKey(u.ID, "expires", "request")
	if err := mustClaim(t, s, k).Save(ctx, 201, []byte("day one")); err != nil {
		t.Fatal(err)
	}
	at := func(d time.Duration) *db.Store { return s.WithClock(func() time.Time { return time.Now().Add(d) }) }
	if r := mustReplay(t, at(23*time.Hour), k); string(r.Payload) != "day one" {
		t.Fatalf("replay after 23 h: %q", r.Payload)
	}
	// After 24 hours the key is free again, for any request.
	later := at(24*time.Hour + time.Minute)
	mustClaim(t, later, idemKey(u.ID, "expires", "another request")).Save(ctx, 201, []byte("day two"))
	if r := mustReplay(t, later, idemKey(u.ID, "expires", "another request")); string(r.Payload) != "day two" {
		t.Fatalf("replay %q", r.Payload)
	}

	// A short TTL, as dashboard forms use.
	short := idemKey(u.ID, "form", "POST /dashboard/keys")
	short.TTL = 10 * time.Minute
	mustClaim(t, s, short).Save(ctx, 201, []byte("x"))
	mustReplay(t, at(9*time.Minute), short)
	mustClaim(t, at(11*time.Minute), short)

	// The sweep removes expired rows, and only those.
	gone := idemKey(u.ID, "swept", "request")
	mustClaim(t, s, gone).Save(ctx, 201, []byte("old"))
	if _, err := at(25 * time.Hour).DeleteExpiredIdempotencyKeys(ctx); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, s, gone) // the row was swept: a fresh claim
	n, err := s.DeleteExpiredIdempotencyKeys(ctx)
	if err != nil || n != 0 {
		t.Fatalf("sweeping now removed %d rows (%v); none has expired", n, err)
	}
}

func TestIdempotencyAbandonedClaimLapses(t *testing.T) {
	s := idemStore()
	u := newUser(t)
	k := idemKey(u.ID, "crashed", "request")
	stale := mustClaim(t, s, k) // its request died without an answer
	// Within a minute the key is still in flight; after that it may be claimed again.
	if _, _, err := s.WithClock(func() time.Time { return time.Now().Add(50 * time.Second) }).ClaimIdempotencyKey(ctx, k); !errors.Is(err, db.ErrIdempotencyInProgress) {
		t.Fatalf("50 s later: %v", err)
	}
	fresh := mustClaim(t, s.WithClock(func() time.Time { return time.Now().Add(2 * time.Minute) }), k)
	// The stale claim can no longer write or release the key.
	stale.Save(ctx, 201, []byte("late"))
	stale.Release(ctx)
	if err := fresh.Save(ctx, 201, []byte("fresh")); err != nil {
		t.Fatal(err)
	}
	if r := mustReplay(t, s, k); string(r.Payload) != "fresh" {
		t.Fatalf("replay %q", r.Payload)
	}
}

// TestIdempotencyStoresNoSecret: the table holds neither the Idempotency-Key
// nor the answer in any readable form, only digests and ciphertext.
func TestIdempotencyStoresNoSecret(t *testing.T) {
	s := idemStore()
	u := newUser(t)
	secret, err := apikey.Generate(apikey.Proxy)
	if err != nil {
		t.Fatal(err)
	}
	value := "idempotency-key-4f1b2c"
	answer := []byte(`application/json` + "\n" + `{"id":1,"key":"` + secret + `","name":"Production"}`)
	if err := mustClaim(t, s, idemKey(u.ID, value, `POST /api/keys {"name":"Production"}`)).Save(ctx, 201, answer); err != nil {
		t.Fatal(err)
	}
	rows, err := s.IdempotencyRows(ctx)
	if err != nil || len(rows) == 0 {
		t.Fatalf("rows %v, %v", rows, err)
	}
	body := strings.TrimPrefix(secret, "ms-")
	for _, row := range rows {
		for _, needle := range []string{secret, body, body[:16], value, "Production"} {
			for _, form := range []string{needle, hex.EncodeToString([]byte(needle))} {
				if strings.Contains(strings.ToLower(row), strings.ToLower(form)) {
					t.Fatalf("the table holds %q in clear: %s", needle, row)
				}
			}
		}
	}
	// And it opens again with the key.
	r := mustReplay(t, s, idemKey(u.ID, value, `POST /api/keys {"name":"Production"}`))
	if !bytes.Equal(r.Payload, answer) {
		t.Fatalf("replay %q", r.Payload)
	}
}

// TestIdempotencyConcurrentClaims: of many requests with one key at once,
// exactly one does the work; those that wait all get its answer.
func TestIdempotencyConcurrentClaims(t *testing.T) {
	s := idemStore()
	u := newUser(t)
	k := idemKey(u.ID, "burst", "request")
	k.Wait = true
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var (
		mu       sync.Mutex
		claims   int
		payloads []string
		wg       sync.WaitGroup
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			claim, replay, err := s.ClaimIdempotencyKey(ctx, k)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Errorf("claim: %v", err)
			case claim != nil:
				claims++
				payloads = append(payloads, "the answer")
				if err := claim.Save(ctx, 201, []byte("the answer")); err != nil {
					t.Error(err)
				}
			default:
				payloads = append(payloads, string(replay.Payload))
			}
		}()
	}
	wg.Wait()
	if claims != 1 || len(payloads) != 8 {
		t.Fatalf("%d claims, %d answers; want 1 and 8", claims, len(payloads))
	}
	for _, p := range payloads {
		if p != "the answer" {
			t.Fatalf("answers %q", payloads)
		}
	}
}
