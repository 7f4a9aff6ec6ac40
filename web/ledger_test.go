package web

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/db/money"
)

// ledgerGenSeq makes generation ids unique across tests and runs.
var ledgerGenSeq atomic.Int64

// userOf returns the account id behind a proxy key ("Bearer ms-…").
func userOf(t *testing.T, ms string) int64 {
	t.Helper()
	k, err := store.VerifyKey(context.Background(), apikey.Proxy, apikey.Digest(strings.TrimPrefix(ms, "Bearer ")))
	if err != nil {
		t.Fatal(err)
	}
	return k.UserID
}

// meter writes one usage entry through the store's meter, as the gateway
// does, and returns its generation id. It flushes the meter, so that the
// entry is written when it returns; the budget the meter reserved ahead
// stays held until it goes idle (heldBack).
func meter(t *testing.T, userID int64, keyID int, model string, cost money.USD, in, out int64) string {
	t.Helper()
	ctx := context.Background()
	tk, err := store.Meter().Admit(ctx, userID, int64(keyID), model, usd("0.01"))
	if err != nil {
		t.Fatal(err)
	}
	gen := fmt.Sprintf("gen-ledgertest-%d-%d", time.Now().UnixNano(), ledgerGenSeq.Add(1))
	tk.Finish(&db.Usage{GenerationID: gen, Model: model, InputTokens: in, OutputTokens: out,
		Cost: cost, Status: "completed", FinishReason: "stop", Latency: 42 * time.Millisecond})
	if err := store.Meter().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return gen
}

// heldBack waits until the account holds exactly want: the meter has
// returned what it reserved ahead, which it does within a second of the
// last request.
func heldBack(t testing.TB, userID int64, want money.USD) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("the account holds %s", want), func() bool {
		b, err := store.GetBalance(context.Background(), userID)
		if err != nil {
			t.Fatal(err)
		}
		// The meter tops a lease up again right after returning it while
		// the account looks busy: 0 held is settled once it let go.
		return b.Held == want && (want != 0 || !store.Meter().Tracks(userID))
	})
}

func list(t *testing.T, v any) []map[string]any {
	t.Helper()
	raw, ok := v.([]any)
	if !ok {
		t.Fatalf("not a JSON array: %#v", v)
	}
	out := make([]map[string]any, len(raw))
	for i, e := range raw {
		out[i] = e.(map[string]any)
	}
	return out
}

func keysOf(t *testing.T, mk string) []map[string]any {
	t.Helper()
	return list(t, expect(t, call(t, "GET", "/api/keys", mk, nil), 200).body["keys"])
}

func TestLedgerBadQueries(t *testing.T) {
	jwt := signup(t)
	mk := billingKey(t, jwt)
	cases := []struct {
		path, field, code string // code "" only needs to be present
	}{
		{"/api/transactions?limit=0", "limit", ""},
		{"/api/transactions?limit=101", "limit", ""},
		{"/api/transactions?limit=abc", "limit", ""},
		{"/api/transactions?limit=05", "limit", ""},
		{"/api/transactions?limit=-1", "limit", ""},
		{"/api/transactions?starting_after=0", "starting_after", ""},
		{"/api/transactions?starting_after=-1", "starting_after", ""},
		{"/api/transactions?starting_after=x", "starting_after", ""},
		{"/api/transactions?starting_after=1.5", "starting_after", ""},
		{"/api/transactions?type=refund", "type", ""},
		{"/api/transactions?key_id=0", "key_id", ""},
		{"/api/transactions?foo=1", "foo", "unknown_parameter"},
		{"/api/transactions?limit=1&limit=2", "limit", "duplicate_parameter"},
		{"/api/usage?bucket=week", "bucket", ""},
		{"/api/usage?from=yesterday", "from", ""},
		{"/api/usage?to=2026-13-01", "to", ""},
		{"/api/usage?from=2026-02-01&to=2026-01-01", "from", ""},
		{"/api/usage?from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from", ""},
		{"/api/usage?from=2025-01-01&to=2026-01-03", "from", ""}, // 367 days
		{"/api/usage?group_by=user", "group_by", ""},
		{"/api/usage?group_by=key,user", "group_by", ""},
		{"/api/usage?key_id=abc", "key_id", ""},
		{"/api/usage?foo=1", "foo", "unknown_parameter"},
		{"/api/usage?bucket=day&bucket=hour", "bucket", "duplicate_parameter"},
		{"/api/balance?foo=1", "foo", "unknown_parameter"},
		{"/api/usage?model=%00", "model", "invalid_model"},
		{"/api/usage?model=%FF", "model", "invalid_model"},
		{"/api/usage?model=" + strings.Repeat("m", 201), "model", "invalid_model"},
	}
	for _, c := range cases {
		r := call(t, "GET", c.path, mk, nil)
		code := r.errCode()
		if r.status != 400 || r.errField() != c.field || code == "" || (c.code != "" && code != c.code) {
			t.Errorf("GET %s: %d %s; want 400 field %q code %q", c.path, r.status, r.raw, c.field, c.code)
		}
	}
	// Ids no generation can have are simply not found.
	for _, id := range []string{"%FF", "%00", "gen-%C3%28", strings.Repeat("g", 300)} {
		if r := call(t, "GET", "/api/generations/"+id, mk, nil); r.status != 404 || r.errCode() != "generation_not_found" {
			t.Errorf("GET /api/generations/%s: %d %s", id, r.status, r.raw)
		}
	}
	// The limits themselves are fine.
	for _, path := range []string{
		"/api/transactions?limit=1", "/api/transactions?limit=100", "/api/transactions?type=credit",
		"/api/usage?from=2025-01-01&to=2026-01-02", "/api/usage?bucket=hour&group_by=model,key",
		"/api/usage?model=openai/gpt-4o-mini",
	} {
		expect(t, call(t, "GET", path, mk, nil), 200)
	}

	// Spending fields of proxy keys.
	r := expect(t, call(t, "POST", "/api/keys", mk, map[string]any{"name": "Limited", "limit": 2.5, "limit_reset": "monthly", "models": []string{"modelswitch/echo"}}), 201)
	keyPath := fmt.Sprintf("/api/keys/%v", r.body["id"])
	before := keysOf(t, mk)
	bodies := []struct {
		name, body, field string
	}{
		{"negative limit", `"limit": -1`, "limit"},
		{"string limit", `"limit": "5"`, "limit"},
		{"exponent limit", `"limit": 1e2`, "limit"},
		{"10 decimals", `"limit": 0.0000000001`, "limit"},
		{"boolean limit", `"limit": true`, "limit"},
		{"yearly reset", `"limit_reset": "yearly"`, "limit_reset"},
		{"numeric reset", `"limit_reset": 1`, "limit_reset"},
		{"empty models", `"models": []`, "models"},
		{"string models", `"models": "x"`, "models"},
		{"number in models", `"models": [1]`, "models"},
		{"empty model id", `"models": [""]`, "models"},
	}
	for _, b := range bodies {
		r := call(t, "POST", "/api/keys", mk, `{"name": "x", `+b.body+`}`)
		if r.status != 400 || r.errField() != b.field || r.errCode() == "" {
			t.Errorf("POST %s: %d %s; want 400 field %q", b.name, r.status, r.raw, b.field)
		}
		r = call(t, "PUT", keyPath, mk, `{`+b.body+`}`)
		if r.status != 400 || r.errField() != b.field || r.errCode() == "" {
			t.Errorf("PUT %s: %d %s; want 400 field %q", b.name, r.status, r.raw, b.field)
		}
	}
	// A refused update changes no field, even alongside a valid one.
	r = call(t, "PUT", keyPath, mk, `{"name": "Renamed", "limit": -1}`)
	if r.status != 400 || r.errField() != "limit" {
		t.Errorf("PUT name with bad limit: %d %s", r.status, r.raw)
	}
	if after := keysOf(t, mk); !reflect.DeepEqual(before, after) {
		t.Errorf("refused requests changed the keys:\nbefore %v\nafter  %v", before, after)
	}

	// Billing keys take none of the spending fields.
	billingBefore := len(list(t, expect(t, call(t, "GET", "/api/billing-keys", jwt, nil), 200).body["keys"]))
	for _, body := range []string{
		`{"name": "x", "limit": 1}`, `{"name": "x", "limit_reset": "daily"}`, `{"name": "x", "models": ["modelswitch/echo"]}`,
	} {
		r := call(t, "POST", "/api/billing-keys", jwt, body)
		field := strings.Split(strings.TrimPrefix(body, `{"name": "x", "`), `"`)[0]
		if r.status != 400 || r.errCode() != "unknown_field" || r.errField() != field {
			t.Errorf("POST /api/billing-keys %s: %d %s; want 400 unknown_field %q", body, r.status, r.raw, field)
		}
	}
	if n := len(list(t, expect(t, call(t, "GET", "/api/billing-keys", jwt, nil), 200).body["keys"])); n != billingBefore {
		t.Errorf("%d billing keys after refused creates, want %d", n, billingBefore)
	}
	// A billing key object carries no spending fields.
	for _, k := range list(t, expect(t, call(t, "GET", "/api/billing-keys", jwt, nil), 200).body["keys"]) {
		for _, f := range []string{"limit", "limitReset", "limitRemaining", "usage", "models"} {
			if _, ok := k[f]; ok {
				t.Errorf("billing key object has %q: %v", f, k)
			}
		}
	}
}

func TestLedgerEndpoints(t *testing.T) {
	acct := fundedAccount(t, "1")
	keyA, msA := proxyKey(t, acct.mk)
	keyB, _ := proxyKey(t, acct.mk)
	user := userOf(t, msA)
	ctx := context.Background()

	type use struct {
		key     int
		model   string
		cost    money.USD
		in, out int64
		gen     string
	}
	uses := []*use{
		{key: keyA, model: "modelswitch/echo", cost: usd("0.001"), in: 10, out: 20},
		{key: keyA, model: "other/model", cost: usd("0.002"), in: 30, out: 40},
		{key: keyB, model: "modelswitch/echo", cost: usd("0.004"), in: 50, out: 60},
	}
	for i, u := range uses {
		u.gen = meter(t, user, u.key, u.model, u.cost, u.in, u.out)
		if i == 1 { // an adjustment between usage entries
			if _, _, err := store.AddCredits(ctx, acct.email, db.Credit{Amount: usd("-0.1"), Note: "Correction"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A request in flight holds money.
	hold, err := store.PlaceHold(ctx, user, int64(keyB), "modelswitch/echo", usd("0.0005"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Settle(ctx, hold, nil)
	heldBack(t, user, usd("0.0005"))

	// Balance: exact figures.
	b := balance(t, acct.mk)
	if dollars(b["totalCredits"]) != usd("0.9") || dollars(b["totalUsage"]) != usd("0.007") || dollars(b["held"]) != usd("0.0005") ||
		dollars(b["balance"]) != usd("0.8925") || b["currency"] != "usd" || len(b) != 5 {
		t.Errorf("balance %v; want 0.8925 = 0.9 - 0.007 - 0.0005", b)
	}

	// Usage, default: 30 days of days, the total adds up the data.
	r := expect(t, call(t, "GET", "/api/usage", acct.mk, nil), 200)
	from, err1 := time.Parse(time.RFC3339, fmt.Sprint(r.body["from"]))
	to, err2 := time.Parse(time.RFC3339, fmt.Sprint(r.body["to"]))
	if err1 != nil || err2 != nil || to.Sub(from) != 30*24*time.Hour || !to.After(time.Now()) || to.Sub(time.Now()) > 24*time.Hour ||
		r.body["bucket"] != "day" || !to.Equal(to.Truncate(24*time.Hour)) {
		t.Errorf("default usage window: %s", r.raw)
	}
	checkTotal := func(r response, requests, in, out int64, cost money.USD) []map[string]any {
		t.Helper()
		data := list(t, r.body["data"])
		var sum struct{ req, in, out int64 }
		var sumCost money.USD
		for _, d := range data {
			sum.req += int64(d["requests"].(float64))
			sum.in += int64(d["inputTokens"].(float64))
			sum.out += int64(d["outputTokens"].(float64))
			sumCost += dollars(d["cost"])
			if _, err := time.Parse(time.RFC3339, fmt.Sprint(d["start"])); err != nil {
				t.Errorf("bucket start %v", d["start"])
			}
		}
		total := r.body["total"].(map[string]any)
		if sum.req != requests || sum.in != in || sum.out != out || sumCost != cost ||
			total["requests"] != float64(requests) || total["inputTokens"] != float64(in) || total["outputTokens"] != float64(out) || dollars(total["cost"]) != cost {
			t.Errorf("usage %s; want %d requests, %d in, %d out, cost %s", r.raw, requests, in, out, cost)
		}
		return data
	}
	for _, d := range checkTotal(r, 3, 90, 120, usd("0.007")) {
		if _, ok := d["keyId"]; ok {
			t.Errorf("ungrouped bucket has keyId: %v", d)
		}
		if _, ok := d["model"]; ok {
			t.Errorf("ungrouped bucket has model: %v", d)
		}
	}

	// Grouped by key and model: every row names both, and the sums per pair
	// are the entries'.
	r = expect(t, call(t, "GET", "/api/usage?group_by=key,model", acct.mk, nil), 200)
	type pair struct {
		key   int
		model string
	}
	got := map[pair]money.USD{}
	for _, d := range checkTotal(r, 3, 90, 120, usd("0.007")) {
		k, okK := d["keyId"].(float64)
		m, okM := d["model"].(string)
		if !okK || !okM {
			t.Errorf("grouped row without keyId and model: %v", d)
		}
		got[pair{int(k), m}] += dollars(d["cost"])
	}
	want := map[pair]money.USD{}
	for _, u := range uses {
		want[pair{u.key, u.model}] += u.cost
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("usage by key and model %v, want %v", got, want)
	}

	// Grouped by model, one model.
	r = expect(t, call(t, "GET", "/api/usage?group_by=model&model=modelswitch/echo", acct.mk, nil), 200)
	for _, d := range checkTotal(r, 2, 60, 80, usd("0.005")) {
		if d["model"] != "modelswitch/echo" {
			t.Errorf("model filter let through %v", d)
		}
		if _, ok := d["keyId"]; ok {
			t.Errorf("row grouped by model has keyId: %v", d)
		}
	}
	// One key.
	r = expect(t, call(t, "GET", fmt.Sprintf("/api/usage?key_id=%d&group_by=key", keyB), acct.mk, nil), 200)
	for _, d := range checkTotal(r, 1, 50, 60, usd("0.004")) {
		if d["keyId"] != float64(keyB) {
			t.Errorf("key filter let through %v", d)
		}
	}
	// Hourly buckets start on whole hours.
	r = expect(t, call(t, "GET", "/api/usage?bucket=hour", acct.mk, nil), 200)
	if r.body["bucket"] != "hour" {
		t.Errorf("bucket %v", r.body["bucket"])
	}
	for _, d := range checkTotal(r, 3, 90, 120, usd("0.007")) {
		start, _ := time.Parse(time.RFC3339, fmt.Sprint(d["start"]))
		if !start.Equal(start.Truncate(time.Hour)) || time.Since(start) > 2*time.Hour {
			t.Errorf("hour bucket %v", d)
		}
	}
	// A window before the usage has none.
	r = expect(t, call(t, "GET", "/api/usage?from=2020-01-01&to=2020-02-01", acct.mk, nil), 200)
	checkTotal(r, 0, 0, 0, 0)

	// Transactions, newest first: usage 3, usage 2 ... and the first credit.
	r = expect(t, call(t, "GET", "/api/transactions", acct.mk, nil), 200)
	all := list(t, r.body["transactions"])
	if r.body["hasMore"] != false || len(all) != 5 {
		t.Fatalf("transactions %s; want 5 and no more", r.raw)
	}
	wantTypes := []string{"usage", "adjustment", "usage", "usage", "credit"}
	wantAmounts := []string{"-0.004", "-0.1", "-0.002", "-0.001", "1"}
	wantAfter := []string{"0.893", "0.897", "0.997", "0.999", "1"}
	wantUse := []*use{uses[2], nil, uses[1], uses[0], nil}
	for i, e := range all {
		if e["type"] != wantTypes[i] || dollars(e["amount"]) != usd(wantAmounts[i]) || dollars(e["balanceAfter"]) != usd(wantAfter[i]) {
			t.Errorf("transaction %d: %v; want %s %s after %s", i, e, wantTypes[i], wantAmounts[i], wantAfter[i])
		}
		if _, err := time.Parse(time.RFC3339, fmt.Sprint(e["createdAt"])); err != nil || e["description"] == nil {
			t.Errorf("transaction %d: %v", i, e)
		}
		if i > 0 && e["id"].(float64) >= all[i-1]["id"].(float64) {
			t.Errorf("transactions not newest first: %s", r.raw)
		}
		usageFields := []string{"keyId", "model", "generationId", "inputTokens", "outputTokens"}
		if u := wantUse[i]; u != nil {
			if e["keyId"] != float64(u.key) || e["model"] != u.model || e["generationId"] != u.gen ||
				e["inputTokens"] != float64(u.in) || e["outputTokens"] != float64(u.out) {
				t.Errorf("usage transaction %d: %v; want %+v", i, e, *u)
			}
		} else {
			for _, f := range usageFields {
				if _, ok := e[f]; ok {
					t.Errorf("%v transaction has %q: %v", e["type"], f, e)
				}
			}
		}
	}
	if e := all[1]; e["description"] != "Correction" {
		t.Errorf("adjustment description %v", e["description"])
	}

	// Paging one at a time visits each entry once, in order.
	var paged []any
	after := ""
	for page := 0; page < 10; page++ {
		r = expect(t, call(t, "GET", "/api/transactions?limit=1"+after, acct.mk, nil), 200)
		txs := list(t, r.body["transactions"])
		if len(txs) != 1 {
			t.Fatalf("page %d: %s", page, r.raw)
		}
		paged = append(paged, txs[0]["id"])
		if more := len(paged) < len(all); r.body["hasMore"] != more {
			t.Fatalf("page %d: hasMore %v, want %v", page, r.body["hasMore"], more)
		}
		if r.body["hasMore"] == false {
			break
		}
		after = fmt.Sprintf("&starting_after=%d", int64(txs[0]["id"].(float64)))
	}
	var allIDs []any
	for _, e := range all {
		allIDs = append(allIDs, e["id"])
	}
	if !reflect.DeepEqual(paged, allIDs) {
		t.Errorf("paged ids %v, want %v", paged, allIDs)
	}
	r = expect(t, call(t, "GET", "/api/transactions"+strings.Replace(after, "&", "?", 1)+"&limit=100", acct.mk, nil), 200)
	if txs := list(t, r.body["transactions"]); len(txs) != 1 || txs[0]["id"] != allIDs[4] || r.body["hasMore"] != false {
		t.Errorf("last page %s", r.raw)
	}

	// Filters.
	r = expect(t, call(t, "GET", "/api/transactions?type=usage", acct.mk, nil), 200)
	if txs := list(t, r.body["transactions"]); len(txs) != 3 || txs[0]["generationId"] != uses[2].gen || txs[2]["generationId"] != uses[0].gen {
		t.Errorf("type=usage: %s", r.raw)
	}
	r = expect(t, call(t, "GET", "/api/transactions?type=credit", acct.mk, nil), 200)
	if txs := list(t, r.body["transactions"]); len(txs) != 1 || txs[0]["type"] != "credit" {
		t.Errorf("type=credit: %s", r.raw)
	}
	r = expect(t, call(t, "GET", "/api/transactions?type=adjustment", acct.mk, nil), 200)
	if txs := list(t, r.body["transactions"]); len(txs) != 1 || txs[0]["type"] != "adjustment" {
		t.Errorf("type=adjustment: %s", r.raw)
	}
	r = expect(t, call(t, "GET", fmt.Sprintf("/api/transactions?key_id=%d", keyA), acct.mk, nil), 200)
	if txs := list(t, r.body["transactions"]); len(txs) != 2 || txs[0]["generationId"] != uses[1].gen || txs[1]["generationId"] != uses[0].gen {
		t.Errorf("key_id=%d: %s", keyA, r.raw)
	}
	r = expect(t, call(t, "GET", fmt.Sprintf("/api/transactions?key_id=%d&limit=1", keyA), acct.mk, nil), 200)
	if txs := list(t, r.body["transactions"]); len(txs) != 1 || txs[0]["generationId"] != uses[1].gen || r.body["hasMore"] != true {
		t.Errorf("key_id=%d&limit=1: %s", keyA, r.raw)
	}

	// One generation.
	u := uses[1]
	g := expect(t, call(t, "GET", "/api/generations/"+u.gen, acct.mk, nil), 200).body
	for _, f := range []string{"id", "model", "keyId", "streamed", "status", "inputTokens", "outputTokens", "cost", "latencyMs", "finishReason", "createdAt"} {
		if _, ok := g[f]; !ok {
			t.Errorf("generation has no %q: %v", f, g)
		}
	}
	if g["id"] != u.gen || g["model"] != u.model || g["keyId"] != float64(u.key) || g["streamed"] != false || g["status"] != "completed" ||
		g["inputTokens"] != float64(u.in) || g["outputTokens"] != float64(u.out) || dollars(g["cost"]) != u.cost ||
		g["latencyMs"] != float64(42) || g["finishReason"] != "stop" {
		t.Errorf("generation %v; want %+v", g, *u)
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(g["createdAt"])); err != nil {
		t.Errorf("generation createdAt %v", g["createdAt"])
	}
	r = expect(t, call(t, "GET", "/api/generations/gen-does-not-exist", acct.mk, nil), 404)
	if r.errCode() != "generation_not_found" {
		t.Errorf("unknown generation: %s", r.raw)
	}

	// Keys with spending limits.
	r = expect(t, call(t, "POST", "/api/keys", acct.mk, `{"name": "Limited", "limit": 2.5, "limit_reset": "monthly", "models": ["modelswitch/echo"]}`), 201)
	k := r.body
	if dollars(k["limit"]) != usd("2.5") || k["limitReset"] != "monthly" || !reflect.DeepEqual(k["models"], []any{"modelswitch/echo"}) ||
		k["usage"] != float64(0) || dollars(k["limitRemaining"]) != usd("2.5") || !strings.HasPrefix(fmt.Sprint(k["key"]), "ms-") {
		t.Errorf("created key %s", r.raw)
	}
	limitedPath := fmt.Sprintf("/api/keys/%v", k["id"])
	r = expect(t, call(t, "PUT", limitedPath, acct.mk, `{"limit": null}`), 200)
	if v, ok := r.body["limit"]; !ok || v != nil {
		t.Errorf("limit after clearing: %s", r.raw)
	}
	if v, ok := r.body["limitRemaining"]; !ok || v != nil {
		t.Errorf("limitRemaining after clearing: %s", r.raw)
	}
	if r.body["limitReset"] != "monthly" || !reflect.DeepEqual(r.body["models"], []any{"modelswitch/echo"}) || r.body["usage"] != float64(0) {
		t.Errorf("clearing the limit changed other fields: %s", r.raw)
	}
	// Usage and what is held count against limitRemaining.
	r = expect(t, call(t, "PUT", fmt.Sprintf("/api/keys/%d", keyB), acct.mk, `{"limit": 1, "limit_reset": null}`), 200)
	if dollars(r.body["usage"]) != usd("0.004") || dollars(r.body["limitRemaining"]) != usd("0.9955") {
		t.Errorf("key B with a limit of 1, 0.004 spent and 0.0005 held: %s", r.raw)
	}

	keys := keysOf(t, acct.mk)
	if len(keys) != 3 {
		t.Fatalf("%d keys, want 3", len(keys))
	}
	for _, key := range keys {
		for _, f := range []string{"limit", "limitReset", "limitRemaining", "usage", "models"} {
			if _, ok := key[f]; !ok {
				t.Errorf("key object has no %q: %v", f, key)
			}
		}
		switch key["id"] {
		case float64(keyA):
			if key["limit"] != nil || key["limitReset"] != nil || key["limitRemaining"] != nil || key["models"] != nil || dollars(key["usage"]) != usd("0.003") {
				t.Errorf("key A %v", key)
			}
		case k["id"]:
			if key["limit"] != nil || key["limitReset"] != "monthly" || key["limitRemaining"] != nil || key["usage"] != float64(0) {
				t.Errorf("limited key %v", key)
			}
		}
	}
}

func TestLedgerOtherAccounts(t *testing.T) {
	aliceJWT := signup(t)
	alice := billingKey(t, aliceJWT)
	aliceKey, aliceMS := proxyKey(t, alice)
	bob := fundedAccount(t, "1")
	bobKey, bobMS := proxyKey(t, bob.mk)
	bobGen := meter(t, userOf(t, bobMS), bobKey, "modelswitch/echo", usd("0.001"), 1, 2)

	r := expect(t, call(t, "GET", "/api/generations/"+bobGen, alice, nil), 404)
	if r.errCode() != "generation_not_found" {
		t.Errorf("bob's generation for alice: %s", r.raw)
	}
	expect(t, call(t, "GET", "/api/generations/"+bobGen, bob.mk, nil), 200)

	for _, path := range []string{"/api/transactions", fmt.Sprintf("/api/transactions?key_id=%d", bobKey), "/api/transactions?type=usage",
		fmt.Sprintf("/api/transactions?key_id=%d", aliceKey)} {
		r := expect(t, call(t, "GET", path, alice, nil), 200)
		if txs := list(t, r.body["transactions"]); len(txs) != 0 || r.body["hasMore"] != false {
			t.Errorf("alice GET %s: %s", path, r.raw)
		}
	}
	for _, path := range []string{"/api/usage", fmt.Sprintf("/api/usage?key_id=%d&group_by=key", bobKey), "/api/usage?group_by=model&model=modelswitch/echo"} {
		r := expect(t, call(t, "GET", path, alice, nil), 200)
		total := r.body["total"].(map[string]any)
		if data := list(t, r.body["data"]); len(data) != 0 || total["requests"] != float64(0) || total["cost"] != float64(0) {
			t.Errorf("alice GET %s: %s", path, r.raw)
		}
	}
	// Bob's own key filter does show his entry.
	r = expect(t, call(t, "GET", fmt.Sprintf("/api/transactions?key_id=%d", bobKey), bob.mk, nil), 200)
	if txs := list(t, r.body["transactions"]); len(txs) != 1 || txs[0]["generationId"] != bobGen {
		t.Errorf("bob's key_id filter: %s", r.raw)
	}
	b := balance(t, alice)
	if b["balance"] != float64(0) || b["totalCredits"] != float64(0) || b["totalUsage"] != float64(0) || b["held"] != float64(0) {
		t.Errorf("alice's balance %v", b)
	}

	// Bob's key cannot be changed by Alice.
	bobKeysBefore := keysOf(t, bob.mk)
	for _, body := range []string{`{"limit": 1}`, `{"limit": null}`, `{"models": ["modelswitch/echo"]}`, `{"active": false}`} {
		r := expect(t, call(t, "PUT", fmt.Sprintf("/api/keys/%d", bobKey), alice, body), 404)
		if r.errCode() != "key_not_found" {
			t.Errorf("alice PUT bob's key %s: %s", body, r.raw)
		}
	}
	if after := keysOf(t, bob.mk); !reflect.DeepEqual(bobKeysBefore, after) {
		t.Errorf("bob's keys changed:\nbefore %v\nafter  %v", bobKeysBefore, after)
	}

	// Only a billing key reads the ledger.
	for _, path := range []string{"/api/balance", "/api/usage", "/api/transactions", "/api/generations/" + bobGen} {
		for _, cred := range []struct{ name, header string }{
			{"proxy key", aliceMS}, {"bob's proxy key", bobMS}, {"session jwt", aliceJWT}, {"none", ""},
		} {
			r := call(t, "GET", path, cred.header, nil)
			if r.status != 401 || r.errCode() == "" || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("GET %s with %s: %d %s", path, cred.name, r.status, r.raw)
			}
		}
	}
}
