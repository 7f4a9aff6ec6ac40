package web

import (
	"fmt"
	"reflect"
	"testing"
)

func TestKeysPagination(t *testing.T) {
	jwt := signup(t)
	mk := billingKey(t, jwt)
	otherMK := billingKey(t, signup(t))
	var created []any
	for range 5 {
		id, _ := proxyKey(t, mk)
		created = append([]any{float64(id)}, created...) // newest first
		proxyKey(t, otherMK)                             // another account's, in between
	}

	// Without a query: every key, newest first, and no more.
	r := expect(t, call(t, "GET", "/api/keys", mk, nil), 200)
	all := list(t, r.body["keys"])
	if r.body["hasMore"] != false || len(all) != 5 {
		t.Fatalf("list %s; want 5 keys and no more", r.raw)
	}
	var ids []any
	for _, k := range all {
		ids = append(ids, k["id"])
	}
	if !reflect.DeepEqual(ids, created) {
		t.Fatalf("ids %v; want %v", ids, created)
	}

	// Pages of two visit each key once, in the same order.
	var paged []any
	after := ""
	for page := 0; page < 5; page++ {
		r = expect(t, call(t, "GET", "/api/keys?limit=2"+after, mk, nil), 200)
		keys := list(t, r.body["keys"])
		for _, k := range keys {
			paged = append(paged, k["id"])
		}
		if more := len(paged) < 5; r.body["hasMore"] != more || len(keys) != min(2, 5-2*page) {
			t.Fatalf("page %d: %s", page, r.raw)
		}
		if r.body["hasMore"] == false {
			break
		}
		after = fmt.Sprintf("&starting_after=%v", keys[len(keys)-1]["id"])
	}
	if !reflect.DeepEqual(paged, created) {
		t.Fatalf("paged ids %v; want %v", paged, created)
	}

	// Billing keys page the same way, with the session.
	billingKey(t, jwt)
	r = expect(t, call(t, "GET", "/api/billing-keys?limit=1", jwt, nil), 200)
	if keys := list(t, r.body["keys"]); len(keys) != 1 || r.body["hasMore"] != true || keys[0]["name"] != "Automation" {
		t.Fatalf("billing keys page %s", r.raw)
	}
	first := list(t, r.body["keys"])[0]["id"]
	r = expect(t, call(t, "GET", fmt.Sprintf("/api/billing-keys?starting_after=%v", first), jwt, nil), 200)
	if keys := list(t, r.body["keys"]); len(keys) != 1 || r.body["hasMore"] != false || keys[0]["id"] == first {
		t.Fatalf("billing keys second page %s", r.raw)
	}

	// Bad parameters: 400 naming the parameter.
	for query, field := range map[string]string{
		"limit=0": "limit", "limit=1001": "limit", "limit=-1": "limit", "limit=ten": "limit", "limit=01": "limit", "limit=": "",
		"starting_after=0": "starting_after", "starting_after=x": "starting_after", "starting_after=1.5": "starting_after",
		"limit=1&limit=2": "limit", "cursor=5": "cursor", "type=proxy": "type",
	} {
		r := call(t, "GET", "/api/keys?"+query, mk, nil)
		if field == "" {
			expect(t, r, 200) // an empty value is the default
			continue
		}
		if r.status != 400 || r.errField() != field {
			t.Errorf("?%s: %d %s; want 400 on %q", query, r.status, r.raw, field)
		}
	}
	r = call(t, "GET", "/api/billing-keys?limit=x", jwt, nil)
	if r.status != 400 || r.errField() != "limit" {
		t.Errorf("billing keys ?limit=x: %d %s", r.status, r.raw)
	}
}

// TestKeysPaginationScoped: a cursor is only a position; another account's
// keys never show.
func TestKeysPaginationScoped(t *testing.T) {
	mk := billingKey(t, signup(t))
	mine, _ := proxyKey(t, mk)
	otherMK := billingKey(t, signup(t))
	theirs, _ := proxyKey(t, otherMK)
	proxyKey(t, otherMK)
	r := expect(t, call(t, "GET", fmt.Sprintf("/api/keys?starting_after=%d", theirs+1), mk, nil), 200)
	if keys := list(t, r.body["keys"]); len(keys) != 1 || keys[0]["id"] != float64(mine) || r.body["hasMore"] != false {
		t.Fatalf("list after another account's key: %s", r.raw)
	}
}

// TestKeysListOverCap: an account with more keys than the cap (from before
// it, or a cap lowered since) gets the cap's worth per page.
func TestKeysListOverCap(t *testing.T) {
	mk := billingKey(t, signup(t))
	for range 4 {
		proxyKey(t, mk)
	}
	a := limitedApp(t, 1000, 3)
	r := expect(t, callOn(t, a, "GET", "/api/keys", mk, nil), 200)
	keys := list(t, r.body["keys"])
	if len(keys) != 3 || r.body["hasMore"] != true {
		t.Fatalf("over the cap: %s", r.raw)
	}
	r = expect(t, callOn(t, a, "GET", fmt.Sprintf("/api/keys?starting_after=%v", keys[2]["id"]), mk, nil), 200)
	if len(list(t, r.body["keys"])) != 1 || r.body["hasMore"] != false {
		t.Fatalf("second page over the cap: %s", r.raw)
	}
	r = expect(t, callOn(t, a, "GET", "/api/keys?limit=4", mk, nil), 400)
	if r.errField() != "limit" || r.body["error"].(map[string]any)["message"] != "limit must be a whole number from 1 to 3." {
		t.Fatalf("limit over the cap: %s", r.raw)
	}
}
