package db_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/errs"
)

// TestKeyHint: a key's last four characters are kept at creation and read
// back with it; a key from before the column has none.
func TestKeyHint(t *testing.T) {
	u := newUser(t)
	k, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: "Hinted"})
	if err != nil {
		t.Fatal(err)
	}
	if k.Hint == nil || *k.Hint != k.Secret[len(k.Secret)-4:] {
		t.Fatalf("hint %v for a key ending in %s", k.Hint, k.Secret[len(k.Secret)-4:])
	}
	got, err := store.GetKey(ctx, u.ID, apikey.Proxy, k.ID)
	if err != nil || got.Hint == nil || *got.Hint != *k.Hint || got.Prefix != k.Secret[:7]+"xxxx" {
		t.Fatalf("read back %+v %v", got, err)
	}
	// Made before hints were kept: no hint, and still listed and verified.
	if err := store.Exec(ctx, `UPDATE api_keys SET hint = NULL WHERE id = $1`, k.ID); err != nil {
		t.Fatal(err)
	}
	list, err := store.ListKeysQuery(ctx, u.ID, apikey.Proxy, db.KeyQuery{})
	if err != nil || len(list.Keys) != 1 || list.Keys[0].Hint != nil {
		t.Fatalf("old key %+v %v", list, err)
	}
	if _, err := store.VerifyKey(ctx, apikey.Proxy, apikey.Digest(k.Secret)); err != nil {
		t.Fatalf("a key without a hint no longer verifies: %v", err)
	}
	// The column takes four base62 characters or nothing.
	if err := store.Exec(ctx, `UPDATE api_keys SET hint = 'abc' WHERE id = $1`, k.ID); err == nil {
		t.Fatal("a three-character hint was stored")
	}
}

// TestListKeysQuery: search, sort and pages of 50, within one account and
// one kind.
func TestListKeysQuery(t *testing.T) {
	u, other := newUser(t), newUser(t)
	var keys []db.CreatedKey // oldest first
	for i := range 120 {
		name := fmt.Sprintf("Key %03d", i)
		if i%40 == 7 {
			name = fmt.Sprintf("Production EU %d", i)
		}
		k, err := store.CreateKey(ctx, u.ID, apikey.Proxy, db.KeyInput{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	// Same names on another account and on a billing key: never listed here.
	if _, err := store.CreateKey(ctx, other.ID, apikey.Proxy, db.KeyInput{Name: "Production EU other"}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.CreateKey(ctx, u.ID, apikey.Billing, db.KeyInput{Name: "Production EU billing"}); err != nil {
		t.Fatal(err)
	}
	list := func(q db.KeyQuery) db.KeyList {
		t.Helper()
		l, err := store.ListKeysQuery(ctx, u.ID, apikey.Proxy, q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		return l
	}
	ids := func(l db.KeyList) []int64 {
		out := make([]int64, len(l.Keys))
		for i, k := range l.Keys {
			out[i] = k.ID
		}
		return out
	}

	// Pages of 50, newest first, each key once.
	seen := map[int64]bool{}
	for page, want := range []int{50, 50, 20} {
		l := list(db.KeyQuery{Page: page + 1})
		if len(l.Keys) != want || l.Total != 120 || l.Pages != 3 || l.Page != page+1 {
			t.Fatalf("page %d: %d keys, total %d, pages %d", page+1, len(l.Keys), l.Total, l.Pages)
		}
		for i, k := range l.Keys {
			if seen[k.ID] || (i > 0 && k.ID > l.Keys[i-1].ID) {
				t.Fatalf("page %d: key %d out of order or repeated", page+1, k.ID)
			}
			seen[k.ID] = true
		}
	}
	if first := list(db.KeyQuery{}); first.Keys[0].ID != keys[119].ID || first.Page != 1 {
		t.Fatalf("the first page starts with %d, want the newest %d", first.Keys[0].ID, keys[119].ID)
	}
	// A page past the end is the last page.
	if l := list(db.KeyQuery{Page: 99}); l.Page != 3 || len(l.Keys) != 20 || l.Keys[19].ID != keys[0].ID {
		t.Fatalf("page 99: page %d with %d keys", l.Page, len(l.Keys))
	}

	// Search: any part of the name in any case.
	l := list(db.KeyQuery{Search: "  production eu "})
	if l.Total != 3 || len(l.Keys) != 3 || l.Pages != 1 {
		t.Fatalf("search by name: %d keys: %v", l.Total, ids(l))
	}
	for _, k := range l.Keys {
		if !strings.HasPrefix(k.Name, "Production EU ") || k.UserID != u.ID || k.Kind != apikey.Proxy {
			t.Fatalf("search by name found %+v", k)
		}
	}
	// By prefix, with or without its tag, as the API shows it, by the last
	// four, and as the dashboard shows a key.
	target := keys[57]
	tail := target.Secret[len(target.Secret)-4:]
	for _, q := range []string{target.Secret[:7], target.Secret[3:7], target.Prefix, tail, target.Secret[:7] + "…" + tail, target.Secret[:7] + "..." + tail} {
		l := list(db.KeyQuery{Search: q})
		found := false
		for _, k := range l.Keys {
			found = found || k.ID == target.ID
		}
		if !found {
			t.Errorf("search %q: %v, want key %d among them", q, ids(l), target.ID)
		}
	}
	if l := list(db.KeyQuery{Search: target.Secret[:7] + "…" + tail}); l.Total != 1 {
		t.Errorf("the dashboard's form of a key matched %d keys", l.Total)
	}
	if l := list(db.KeyQuery{Search: "no such key"}); l.Total != 0 || len(l.Keys) != 0 || l.Pages != 1 || l.Page != 1 {
		t.Fatalf("no match: %+v", l)
	}
	// Characters that mean something to LIKE are plain text.
	if l := list(db.KeyQuery{Search: "%"}); l.Total != 0 {
		t.Fatalf("%% matched %d keys", l.Total)
	}
	if l := list(db.KeyQuery{Search: "Key 1_0"}); l.Total != 0 {
		t.Fatalf("_ matched %d keys", l.Total)
	}

	// By last use, most recent first; keys never used after, newest first.
	for _, k := range []db.CreatedKey{keys[3], keys[90], keys[10]} {
		if err := store.RecordKeyUse(ctx, k.Key); err != nil {
			t.Fatal(err)
		}
	}
	l = list(db.KeyQuery{Sort: db.SortLastUsed})
	want := []int64{keys[10].ID, keys[90].ID, keys[3].ID, keys[119].ID, keys[118].ID}
	if got := ids(l)[:5]; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("by last use %v, want %v", got, want)
	}
	if l = list(db.KeyQuery{Sort: db.SortLastUsed, Search: "production"}); l.Total != 3 || l.Keys[0].LastUsedAt != nil {
		t.Fatalf("search sorted by last use: %v", ids(l))
	}

	// Bad queries name their field.
	for q, field := range map[*db.KeyQuery]string{
		{Search: strings.Repeat("x", 101)}: "q",
		{Search: "a\x00b"}:                 "q",
		{Search: "bad \xff utf-8"}:         "q",
		{Search: target.Secret}:            "q",
		{Sort: "name"}:                     "sort",
		{Page: -1}:                         "page",
	} {
		_, err := store.ListKeysQuery(ctx, u.ID, apikey.Proxy, *q)
		if e := wantKind(t, err, errs.Invalid); e.Field != field {
			t.Errorf("%+v: error on %q, want %q", *q, e.Field, field)
		}
	}
	if _, err := store.ListKeysQuery(ctx, u.ID, apikey.Proxy, db.KeyQuery{Search: strings.Repeat("é", 100)}); err != nil {
		t.Fatalf("100 characters: %v", err)
	}
	// The cap on pages keeps a huge page number an ordinary last page.
	if l := list(db.KeyQuery{Page: 1 << 40}); l.Page != 3 {
		t.Fatalf("page 2^40 is page %d", l.Page)
	}
}

// TestUpdateKeyExpiry: an expiry can be set, moved and cleared after
// creation, for both kinds, with the rule of create: in the future.
func TestUpdateKeyExpiry(t *testing.T) {
	u, other := newUser(t), newUser(t)
	for _, kind := range []apikey.Kind{apikey.Proxy, apikey.Billing} {
		k, err := store.CreateKey(ctx, u.ID, kind, db.KeyInput{Name: "Expiring"})
		if err != nil {
			t.Fatal(err)
		}
		at := time.Now().Add(48 * time.Hour).Round(time.Millisecond)
		got, err := store.UpdateKey(ctx, u.ID, kind, k.ID, db.KeyUpdate{ExpiresAt: db.Change[time.Time]{Set: true, Value: &at}})
		if err != nil || got.ExpiresAt == nil || !got.ExpiresAt.Equal(at.Truncate(time.Second)) || got.Name != "Expiring" || !got.Active {
			t.Fatalf("%s: set %v: %+v %v", kind, at, got.ExpiresAt, err)
		}
		past := time.Now().Add(-time.Minute)
		_, err = store.UpdateKey(ctx, u.ID, kind, k.ID, db.KeyUpdate{ExpiresAt: db.Change[time.Time]{Set: true, Value: &past}})
		if e := wantKind(t, err, errs.Invalid); e.Field != "expires_at" || e.Code != "invalid_expires_at" {
			t.Fatalf("%s: past: %+v", kind, e)
		}
		if got, _ := store.GetKey(ctx, u.ID, kind, k.ID); got.ExpiresAt == nil || !got.ExpiresAt.Equal(at.Truncate(time.Second)) {
			t.Fatalf("%s: a refused expiry changed the key: %v", kind, got.ExpiresAt)
		}
		// Another account's key, or the other kind's id: not found.
		_, err = store.UpdateKey(ctx, other.ID, kind, k.ID, db.KeyUpdate{ExpiresAt: db.Change[time.Time]{Set: true}})
		if err != db.ErrKeyNotFound {
			t.Fatalf("%s: another account's key: %v", kind, err)
		}
		// Null clears it.
		got, err = store.UpdateKey(ctx, u.ID, kind, k.ID, db.KeyUpdate{ExpiresAt: db.Change[time.Time]{Set: true}})
		if err != nil || got.ExpiresAt != nil {
			t.Fatalf("%s: clear: %v %v", kind, got.ExpiresAt, err)
		}
		// Left out, it stays.
		got, err = store.UpdateKey(ctx, u.ID, kind, k.ID, db.KeyUpdate{Name: ptrOf("Renamed")})
		if err != nil || got.ExpiresAt != nil || got.Name != "Renamed" {
			t.Fatalf("%s: rename: %+v %v", kind, got, err)
		}
	}
	// A billing key's empty update names only the fields it takes.
	k, _ := store.CreateKey(ctx, u.ID, apikey.Billing, db.KeyInput{Name: "B"})
	_, err := store.UpdateKey(ctx, u.ID, apikey.Billing, k.ID, db.KeyUpdate{})
	if e := wantKind(t, err, errs.Invalid); e.Code != "empty_update" || !strings.Contains(e.Message, "expires_at") || strings.Contains(e.Message, "limit") {
		t.Fatalf("empty billing update: %+v", e)
	}
}

// TestDeleteKeyReturning: a delete returns the key it removed, once, and
// only the account's own.
func TestDeleteKeyReturning(t *testing.T) {
	u, other := newUser(t), newUser(t)
	k, err := store.CreateKey(ctx, u.ID, apikey.Billing, db.KeyInput{Name: "Going"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.DeleteKeyReturning(ctx, other.ID, apikey.Billing, k.ID); err != db.ErrKeyNotFound {
		t.Fatalf("another account deleted it: %v", err)
	}
	got, err := store.DeleteKeyReturning(ctx, u.ID, apikey.Billing, k.ID)
	if err != nil || got.ID != k.ID || got.Name != "Going" {
		t.Fatalf("delete: %+v %v", got, err)
	}
	if _, err := store.DeleteKeyReturning(ctx, u.ID, apikey.Billing, k.ID); err != db.ErrKeyNotFound {
		t.Fatalf("deleted twice: %v", err)
	}
}

func ptrOf[T any](v T) *T { return &v }
