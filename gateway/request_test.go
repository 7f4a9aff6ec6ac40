package gateway

import (
	"encoding/json"
	"strings"
	"testing"

	"modelswitch/db/money"
	"modelswitch/errs"
)

// testCatalog serves one model, test/gpt, upstream "gpt-up", at $2 and $4
// per million tokens, from an upstream that is never called.
func testCatalog(t testing.TB) *Catalog {
	t.Helper()
	return newCatalog([]*Model{{
		ID: "test/gpt", OwnedBy: "test", UpstreamModel: "gpt-up",
		InputPrice: money.PerMillion(2 * money.Dollar), OutputPrice: money.PerMillion(4 * money.Dollar),
		MaxOutputTokens: 1000, Provider: echo{},
	}})
}

func TestPrepareKeepsEveryOtherByte(t *testing.T) {
	c := testCatalog(t)
	body := "{ \"temperature\": 1.0, \"model\" :\t\"test/gpt\",\n \"seed\": 12345678901234567890, \"top_p\": 1e2,\n" +
		` "messages": [{"role": "user", "content": "caf\u00e9 \"quoted\" ✓"}], "logit_bias": {"50256": -100},` +
		` "unknown": {"nested": [1, 2.50, null, true]}, "stream": false, "stream_options": {"include_usage": false} }`
	want := strings.Replace(body, `"test/gpt"`, `"gpt-up"`, 1)
	call, err := c.Prepare(ChatCompletions, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if string(call.Body) != want {
		t.Errorf("forwarded body\n%s\nwant\n%s", call.Body, want)
	}
	if call.Stream || call.IncludeUsage {
		t.Errorf("stream %v, include usage %v; want neither", call.Stream, call.IncludeUsage)
	}
}

func TestPrepareAsksForUsageWhenStreaming(t *testing.T) {
	c := testCatalog(t)
	tests := []struct {
		name, body, want string
		includeUsage     bool
	}{
		{"no stream_options",
			`{"model": "test/gpt", "messages": [{"role": "user", "content": "hi"}], "stream": true }`,
			`{"model": "gpt-up", "messages": [{"role": "user", "content": "hi"}], "stream": true,"stream_options":{"include_usage":true} }`, false},
		{"null stream_options",
			`{"stream": true, "stream_options": null, "model": "test/gpt", "messages": [{}]}`,
			`{"stream": true, "stream_options": {"include_usage":true}, "model": "gpt-up", "messages": [{}]}`, false},
		{"empty stream_options",
			`{"stream": true, "stream_options": { }, "model": "test/gpt", "messages": [{}]}`,
			`{"stream": true, "stream_options": {"include_usage":true }, "model": "gpt-up", "messages": [{}]}`, false},
		{"include_usage false",
			`{"stream": true, "stream_options": {"include_usage": false, "x": 1.0}, "model": "test/gpt", "messages": [{}]}`,
			`{"stream": true, "stream_options": {"include_usage": true, "x": 1.0}, "model": "gpt-up", "messages": [{}]}`, false},
		{"include_usage true",
			`{"stream": true, "stream_options": {"include_usage": true}, "model": "test/gpt", "messages": [{}]}`,
			`{"stream": true, "stream_options": {"include_usage": true}, "model": "gpt-up", "messages": [{}]}`, true},
		{"other stream_options",
			`{"stream": true, "stream_options": {"continuous_usage_stats": 1e0}, "model": "test/gpt", "messages": [{}]}`,
			`{"stream": true, "stream_options": {"include_usage":true,"continuous_usage_stats": 1e0}, "model": "gpt-up", "messages": [{}]}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			call, err := c.Prepare(ChatCompletions, []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if string(call.Body) != tt.want {
				t.Errorf("forwarded body\n%s\nwant\n%s", call.Body, tt.want)
			}
			if !call.Stream || call.IncludeUsage != tt.includeUsage {
				t.Errorf("stream %v, include usage %v; want true, %v", call.Stream, call.IncludeUsage, tt.includeUsage)
			}
		})
	}
}

func TestPrepareEmbeddings(t *testing.T) {
	c := testCatalog(t)
	body := `{"input": ["a", "b"], "model": "test/gpt", "dimensions": 256, "stream": true}`
	call, err := c.Prepare(Embeddings, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Replace(body, "test/gpt", "gpt-up", 1); string(call.Body) != want {
		t.Errorf("forwarded body %s, want %s", call.Body, want)
	}
	if call.Stream || call.MaxOutputTokens != 0 || call.Hold != c.models[0].InputPrice.Cost(call.InputTokens) {
		t.Errorf("embeddings call: stream %v, max output %d, hold %v", call.Stream, call.MaxOutputTokens, call.Hold)
	}
}

func TestPrepareHold(t *testing.T) {
	c := testCatalog(t)
	tests := []struct {
		name      string
		extra     string
		maxOutput int64
	}{
		{"model's maximum", ``, 1000},
		{"max_tokens", `, "max_tokens": 50`, 50},
		{"max_completion_tokens first", `, "max_tokens": 50, "max_completion_tokens": 70`, 70},
		{"null max_tokens", `, "max_tokens": null`, 1000},
		{"n choices", `, "max_tokens": 50, "n": 3`, 150},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"model": "test/gpt", "messages": [{"role": "user", "content": "Hello there"}]` + tt.extra + `}`
			call, err := c.Prepare(ChatCompletions, []byte(body))
			if err != nil {
				t.Fatal(err)
			}
			if call.MaxOutputTokens != tt.maxOutput {
				t.Errorf("max output tokens %d, want %d", call.MaxOutputTokens, tt.maxOutput)
			}
			if want := estimateBody([]byte(body)); call.InputTokens != want {
				t.Errorf("input tokens %d, want %d", call.InputTokens, want)
			}
			// $2 and $4 per million tokens: 2000 and 4000 nano-dollars a token.
			if want := money.USD(2000*call.InputTokens + 4000*tt.maxOutput); call.Hold != want {
				t.Errorf("hold %v, want %v", call.Hold, want)
			}
			if cost := call.Cost(Usage{Input: 10, Output: 5}); cost != 40_000 {
				t.Errorf("cost of 10 in, 5 out = %d nano-dollars, want 40000", cost)
			}
		})
	}
}

func TestPrepareRefuses(t *testing.T) {
	c := testCatalog(t)
	const msgs = `"messages": [{"role": "user", "content": "hi"}]`
	tests := []struct {
		name     string
		endpoint Endpoint
		body     string
		kind     errs.Kind
		field    string
	}{
		{"not JSON", ChatCompletions, `{"model": `, errs.Invalid, ""},
		{"empty body", ChatCompletions, ``, errs.Invalid, ""},
		{"an array", ChatCompletions, `[{"model": "test/gpt"}]`, errs.Invalid, ""},
		{"two objects", ChatCompletions, `{"model": "test/gpt"} {}`, errs.Invalid, ""},
		{"no model", ChatCompletions, `{` + msgs + `}`, errs.Invalid, "model"},
		{"null model", ChatCompletions, `{"model": null, ` + msgs + `}`, errs.Invalid, "model"},
		{"model not a string", ChatCompletions, `{"model": 4, ` + msgs + `}`, errs.Invalid, "model"},
		{"model twice", ChatCompletions, `{"model": "test/gpt", "model": "test/gpt", ` + msgs + `}`, errs.Invalid, "model"},
		{"model in another case", ChatCompletions, `{"model": "test/gpt", "Model": "other", ` + msgs + `}`, errs.Invalid, "Model"},
		{"unknown model", ChatCompletions, `{"model": "test/nope", ` + msgs + `}`, errs.NotFound, "model"},
		{"no messages", ChatCompletions, `{"model": "test/gpt"}`, errs.Invalid, "messages"},
		{"messages not an array", ChatCompletions, `{"model": "test/gpt", "messages": "hi"}`, errs.Invalid, "messages"},
		{"no message", ChatCompletions, `{"model": "test/gpt", "messages": []}`, errs.Invalid, "messages"},
		{"message not an object", ChatCompletions, `{"model": "test/gpt", "messages": ["hi"]}`, errs.Invalid, "messages"},
		{"stream not a bool", ChatCompletions, `{"model": "test/gpt", ` + msgs + `, "stream": "yes"}`, errs.Invalid, "stream"},
		{"stream_options not an object", ChatCompletions, `{"model": "test/gpt", ` + msgs + `, "stream_options": true}`, errs.Invalid, "stream_options"},
		{"include_usage not a bool", ChatCompletions, `{"model": "test/gpt", ` + msgs + `, "stream_options": {"include_usage": 1}}`, errs.Invalid, "stream_options.include_usage"},
		{"include_usage twice", ChatCompletions, `{"model": "test/gpt", ` + msgs + `, "stream_options": {"include_usage": true, "include_usage": false}}`, errs.Invalid, "stream_options.include_usage"},
		{"zero max_tokens", ChatCompletions, `{"model": "test/gpt", ` + msgs + `, "max_tokens": 0}`, errs.Invalid, "max_tokens"},
		{"negative max_tokens", ChatCompletions, `{"model": "test/gpt", ` + msgs + `, "max_tokens": -5}`, errs.Invalid, "max_tokens"},
		{"fractional max_tokens", ChatCompletions, `{"model": "test/gpt", ` + msgs + `, "max_tokens": 1.5}`, errs.Invalid, "max_tokens"},
		{"huge max_tokens", ChatCompletions, `{"model": "test/gpt", ` + msgs + `, "max_tokens": 99999999999999999999}`, errs.Invalid, "max_tokens"},
		{"text max_completion_tokens", ChatCompletions, `{"model": "test/gpt", ` + msgs + `, "max_completion_tokens": "10"}`, errs.Invalid, "max_completion_tokens"},
		{"too many choices", ChatCompletions, `{"model": "test/gpt", ` + msgs + `, "n": 129}`, errs.Invalid, "n"},
		{"no input", Embeddings, `{"model": "test/gpt"}`, errs.Invalid, "input"},
		{"empty input", Embeddings, `{"model": "test/gpt", "input": ""}`, errs.Invalid, "input"},
		{"empty input list", Embeddings, `{"model": "test/gpt", "input": [ ]}`, errs.Invalid, "input"},
		{"input a number", Embeddings, `{"model": "test/gpt", "input": 5}`, errs.Invalid, "input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Prepare(tt.endpoint, []byte(tt.body))
			e, ok := errs.As(err)
			if !ok {
				t.Fatalf("error %v is not an *errs.Error", err)
			}
			if e.Kind != tt.kind || e.Field != tt.field {
				t.Errorf("error %v: kind %v, field %q; want kind %v, field %q", e, e.Kind, e.Field, tt.kind, tt.field)
			}
			if want := map[errs.Kind]int{errs.Invalid: 400, errs.NotFound: 404}[tt.kind]; e.HTTPStatus() != want {
				t.Errorf("status %d, want %d", e.HTTPStatus(), want)
			}
			if tt.kind == errs.NotFound && (e.Code != "model_not_found" || !strings.Contains(e.Message, "GET /v1/models")) {
				t.Errorf("unknown model: %v", e)
			}
		})
	}
}

func TestEstimateTokens(t *testing.T) {
	tests := []struct {
		text string
		want int64
	}{
		{"", 0},
		{"a", 1},
		{"abc", 1},
		{"abcd", 2},
		{"héllo", 3},    // 4 ASCII bytes → 2, one é → 1
		{"日本語", 3},      // one per character
		{"\xff\xfe", 2}, // invalid UTF-8: one per byte
	}
	for _, tt := range tests {
		if got := EstimateTokens(tt.text); got != tt.want {
			t.Errorf("EstimateTokens(%q) = %d, want %d", tt.text, got, tt.want)
		}
	}
	// A real tokenizer (o200k) makes 9 tokens of this sentence.
	if got := EstimateTokens("The quick brown fox jumps over the lazy dog."); got < 9 || got > 20 {
		t.Errorf("estimate of a plain sentence %d, want 9 to 20", got)
	}
}

func TestEstimateBodySkipsInlineFiles(t *testing.T) {
	image := "data:image/png;base64," + strings.Repeat("iVBORw0KGgo", 10_000)
	body, _ := json.Marshal(map[string]any{"model": "test/gpt", "messages": []any{map[string]any{"role": "user", "content": []any{
		map[string]any{"type": "text", "text": "What is this?"},
		map[string]any{"type": "image_url", "image_url": map[string]string{"url": image}},
	}}}})
	got := estimateBody(body)
	if got < mediaTokens+EstimateTokens("What is this?") || got > mediaTokens+100 {
		t.Errorf("estimate of a message with a %d-byte image: %d tokens, want about %d", len(image), got, mediaTokens)
	}
	spaced := estimateBody([]byte("{\n    \"a\":    \"bc\"\n}"))
	if packed := estimateBody([]byte(`{"a":"bc"}`)); spaced != packed {
		t.Errorf("indentation counts: %d tokens spaced, %d packed", spaced, packed)
	}
}

func FuzzPrepare(f *testing.F) {
	f.Add(int8(0), []byte(`{"model": "test/gpt", "messages": [{"role": "user", "content": "hi"}], "stream": true}`))
	f.Add(int8(0), []byte(`{"stream": true, "stream_options": {"include_usage": false}, "model": "test/gpt", "messages": [{}], "max_tokens": 5}`))
	f.Add(int8(0), []byte(`{"stream":true,"stream_options":{},"model":"test/gpt","messages":[{}]}`))
	f.Add(int8(0), []byte(`{"mod\u0065l": "test/gpt", "messages": [{}], "n": 2}`))
	f.Add(int8(1), []byte(`{"model": "test/gpt", "input": ["a", "b"]}`))
	f.Add(int8(1), []byte(`{"model": "nope/x", "input": "a"}`))
	f.Add(int8(0), []byte(`[1, 2]`))
	c := testCatalog(f)
	f.Fuzz(func(t *testing.T, endpoint int8, body []byte) {
		ep := ChatCompletions
		if endpoint%2 != 0 {
			ep = Embeddings
		}
		call, err := c.Prepare(ep, body)
		if err != nil {
			if e, ok := errs.As(err); !ok || (e.Kind != errs.Invalid && e.Kind != errs.NotFound) {
				t.Fatalf("Prepare(%q) failed with %v, neither a 400 nor a 404", body, err)
			}
			return
		}
		if !json.Valid(call.Body) {
			t.Fatalf("forwarded body %q of %q is not JSON", call.Body, body)
		}
		var forwarded struct {
			Model         string `json:"model"`
			StreamOptions struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		if err := json.Unmarshal(call.Body, &forwarded); err != nil || forwarded.Model != "gpt-up" {
			t.Fatalf("forwarded body %q names model %q (%v)", call.Body, forwarded.Model, err)
		}
		if call.Stream && !forwarded.StreamOptions.IncludeUsage {
			t.Fatalf("streamed body %q does not ask for usage", call.Body)
		}
		if call.Hold < 0 || call.InputTokens <= 0 {
			t.Fatalf("hold %v, input %d for %q", call.Hold, call.InputTokens, body)
		}
	})
}

// TestPrepareKeepsNoReferenceToTheBody: Fiber reuses a request's buffer once
// its handler returns, while a stream still forwards the call's body.
func TestPrepareKeepsNoReferenceToTheBody(t *testing.T) {
	body := []byte(`{"model":"test/gpt","messages":[{"role":"user","content":"Hello"}],"stream":true}`)
	call, err := testCatalog(t).Prepare(ChatCompletions, body)
	if err != nil {
		t.Fatal(err)
	}
	want := string(call.Body)
	for i := range body {
		body[i] = ' '
	}
	if string(call.Body) != want {
		t.Fatalf("the call's body changed with the request's: %s", call.Body)
	}
}
