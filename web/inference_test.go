package web

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"modelswitch/db"
	"modelswitch/db/money"
	"modelswitch/gateway"
)

// serve runs the app with catalog on a loopback port, as a client sees it.
func serve(t *testing.T, catalog *gateway.Catalog) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := New(testCfg, sharedAddrStore(), catalog, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go a.Listener(ln)
	t.Cleanup(func() { a.ShutdownWithTimeout(5 * time.Second) })
	return "http://" + ln.Addr().String()
}

// account is a signed-up account with credits and a billing key.
type account struct {
	email, mk string
}

func fundedAccount(t *testing.T, credits string) account {
	t.Helper()
	jwt, email := signupWithEmail(t)
	mk := billingKey(t, jwt)
	if credits != "0" {
		if _, _, err := store.AddCredits(context.Background(), email, db.Credit{Amount: usd(credits)}); err != nil {
			t.Fatal(err)
		}
	}
	return account{email, mk}
}

func usd(s string) money.USD {
	v, err := money.Parse(s)
	if err != nil {
		panic(err)
	}
	return v
}

func sdk(base, key string) *openai.Client {
	c := openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0))
	return &c
}

func chatParams(model, text string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(text)}}
}

// wantAPIError checks that err is the SDK's typed error with status and code.
func wantAPIError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != status || apiErr.Code != code {
		t.Fatalf("error %v, want the SDK's %d %s", err, status, code)
	}
}

func balance(t *testing.T, mk string) map[string]any {
	t.Helper()
	return expect(t, call(t, "GET", "/api/balance", mk, nil), 200).body
}

// settled waits until the account holds nothing, and returns its balance:
// every request has finished, its charge is written and the budget reserved
// ahead is returned, which the contract gives a second.
func settled(t *testing.T, mk string) map[string]any {
	t.Helper()
	var b map[string]any
	waitUntil(t, "nothing is held", func() bool {
		b = balance(t, mk)
		return b["held"] == float64(0)
	})
	return b
}

// generationOf waits until the generation is written (within a second of
// its end), and returns it.
func generationOf(t *testing.T, mk, id string) map[string]any {
	t.Helper()
	var r response
	waitUntil(t, "generation "+id+" is written", func() bool {
		r = call(t, "GET", "/api/generations/"+id, mk, nil)
		return r.status != 404
	})
	return expect(t, r, 200).body
}

func TestInferenceWithTheOpenAISDK(t *testing.T) {
	base := serve(t, builtinCatalog)
	acct := fundedAccount(t, "1")
	_, ms := proxyKey(t, acct.mk)
	client := sdk(base, strings.TrimPrefix(ms, "Bearer "))
	ctx := context.Background()

	models, err := client.Models.List(ctx)
	if err != nil || len(models.Data) != 1 || models.Data[0].ID != "modelswitch/echo" || !strings.Contains(models.Data[0].RawJSON(), `"pricing":{"input":1,"output":2}`) {
		t.Fatalf("models: %+v %v", models, err)
	}

	// Unstreamed: the answer, its usage, its generation id, its exact charge.
	var res *http.Response
	completion, err := client.Chat.Completions.New(ctx, chatParams("modelswitch/echo", "hello there"), option.WithResponseInto(&res))
	if err != nil {
		t.Fatal(err)
	}
	if got := completion.Choices[0].Message.Content; got != "Echo: hello there" {
		t.Fatalf("content %q", got)
	}
	gen := res.Header.Get("X-Generation-Id")
	if !strings.HasPrefix(gen, "gen-") {
		t.Fatalf("X-Generation-Id %q", gen)
	}
	in, out := completion.Usage.PromptTokens, completion.Usage.CompletionTokens
	cost := money.PerMillion(money.Dollar).Cost(in) + money.PerMillion(2*money.Dollar).Cost(out)
	g := generationOf(t, acct.mk, gen)
	if g["model"] != "modelswitch/echo" || g["streamed"] != false || g["inputTokens"] != float64(in) || g["outputTokens"] != float64(out) ||
		g["status"] != "completed" || g["finishReason"] != "stop" || dollars(g["cost"]) != cost {
		t.Fatalf("generation %v; want cost %s for %d in, %d out", g, cost, in, out)
	}
	b := settled(t, acct.mk)
	if dollars(b["balance"]) != usd("1")-cost || dollars(b["totalUsage"]) != cost {
		t.Fatalf("balance %v, want 1 - %s", b, cost)
	}

	// Streamed without include_usage: no usage chunk reaches the client, but
	// the request is metered all the same.
	stream := client.Chat.Completions.NewStreaming(ctx, chatParams("modelswitch/echo", "one two three"), option.WithResponseInto(&res))
	var text strings.Builder
	for stream.Next() {
		chunk := stream.Current()
		if len(chunk.Choices) == 0 || chunk.JSON.Usage.Valid() && chunk.Usage.TotalTokens > 0 {
			t.Fatalf("a usage chunk reached a client that did not ask: %s", chunk.RawJSON())
		}
		text.WriteString(chunk.Choices[0].Delta.Content)
	}
	if err := stream.Err(); err != nil || text.String() != "Echo: one two three" {
		t.Fatalf("stream: %q %v", text.String(), err)
	}
	streamGen := res.Header.Get("X-Generation-Id")
	if g := generationOf(t, acct.mk, streamGen); g["streamed"] != true || g["outputTokens"].(float64) == 0 {
		t.Fatalf("streamed generation %v", g)
	}

	// Streamed with include_usage: the last chunk carries it.
	p := chatParams("modelswitch/echo", "count me")
	p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream = client.Chat.Completions.NewStreaming(ctx, p)
	var usage openai.CompletionUsage
	for stream.Next() {
		if c := stream.Current(); len(c.Choices) == 0 {
			usage = c.Usage
		}
	}
	if stream.Err() != nil || usage.TotalTokens == 0 {
		t.Fatalf("usage chunk: %+v %v", usage, stream.Err())
	}

	emb, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "modelswitch/echo",
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "b"}}})
	if err != nil || len(emb.Data) != 2 || len(emb.Data[0].Embedding) == 0 || emb.Usage.PromptTokens == 0 {
		t.Fatalf("embeddings: %+v %v", emb, err)
	}

	// Every charge is in the transactions (a stream is charged as it ends,
	// which may be just after the client read its last event), and the
	// ledger adds up.
	b = settled(t, acct.mk)
	tx := expect(t, call(t, "GET", "/api/transactions?type=usage", acct.mk, nil), 200).body["transactions"].([]any)
	if len(tx) != 4 {
		t.Fatalf("%d usage transactions, want 4", len(tx))
	}
	var charged money.USD
	for _, e := range tx {
		charged -= dollars(e.(map[string]any)["amount"])
	}
	if dollars(b["totalUsage"]) != charged || dollars(b["balance"]) != usd("1")-charged {
		t.Fatalf("balance %v; transactions charge %s", b, charged)
	}
	k := expect(t, call(t, "GET", "/v1/key", ms, nil), 200).body
	if dollars(k["usage"]) != charged || k["limit"] != nil || k["limitRemaining"] != nil {
		t.Fatalf("GET /v1/key: %v", k)
	}
}

func TestInferenceRefusals(t *testing.T) {
	base := serve(t, builtinCatalog)
	ctx := context.Background()

	broke := fundedAccount(t, "0")
	_, ms := proxyKey(t, broke.mk)
	_, err := sdk(base, strings.TrimPrefix(ms, "Bearer ")).Chat.Completions.New(ctx, chatParams("modelswitch/echo", "hi"))
	wantAPIError(t, err, 402, "insufficient_credits")

	acct := fundedAccount(t, "1")
	r := expect(t, call(t, "POST", "/api/keys", acct.mk, map[string]any{"name": "limited", "limit": 0.000001, "models": []string{"modelswitch/echo"}}), 201)
	limited := sdk(base, r.body["key"].(string))
	_, err = limited.Chat.Completions.New(ctx, chatParams("modelswitch/echo", "hi"))
	wantAPIError(t, err, 402, "key_limit_exceeded")
	_, err = limited.Chat.Completions.New(ctx, chatParams("other/model", "hi"))
	wantAPIError(t, err, 404, "model_not_found")

	// Changing the allow-list and the limit works on the very next request.
	id := fmt.Sprint(r.body["id"])
	expect(t, call(t, "PUT", "/api/keys/"+id, acct.mk, map[string]any{"limit": nil}), 200)
	if _, err := limited.Chat.Completions.New(ctx, chatParams("modelswitch/echo", "hi")); err != nil {
		t.Fatalf("after lifting the limit: %v", err)
	}
	expect(t, call(t, "PUT", "/api/keys/"+id, acct.mk, map[string]any{"models": []string{"someone/else"}}), 200)
	_, err = limited.Chat.Completions.New(ctx, chatParams("modelswitch/echo", "hi"))
	wantAPIError(t, err, 403, "model_not_allowed")

	// A request that could cost more than any balance (max_tokens near
	// 2^63) is refused as unaffordable, not failed.
	huge := chatParams("modelswitch/echo", "hi")
	huge.MaxTokens = openai.Int(math.MaxInt64)
	_, open := proxyKey(t, acct.mk)
	_, err = sdk(base, strings.TrimPrefix(open, "Bearer ")).Chat.Completions.New(ctx, huge)
	wantAPIError(t, err, 402, "insufficient_credits")

	_, err = sdk(base, "ms-notakey").Chat.Completions.New(ctx, chatParams("modelswitch/echo", "hi"))
	wantAPIError(t, err, 401, "wrong_credentials")
	_, err = sdk(base, strings.TrimPrefix(acct.mk, "Bearer ")).Models.List(ctx)
	wantAPIError(t, err, 401, "wrong_credentials")

	// Refusals cost nothing.
	if b := balance(t, broke.mk); b["totalUsage"] != float64(0) || b["held"] != float64(0) {
		t.Fatalf("a refused request was charged: %v", b)
	}
	settled(t, acct.mk)
	tx := expect(t, call(t, "GET", "/api/transactions?type=usage", acct.mk, nil), 200).body["transactions"].([]any)
	if len(tx) != 1 {
		t.Fatalf("%d usage entries, want only the one that ran", len(tx))
	}
}

// TestConcurrentInferenceNeverOverspends sends 100 requests at once against a
// balance that covers 10 of them.
func TestConcurrentInferenceNeverOverspends(t *testing.T) {
	base := serve(t, builtinCatalog)
	acct := fundedAccount(t, "0")
	_, ms := proxyKey(t, acct.mk)
	client := sdk(base, strings.TrimPrefix(ms, "Bearer "))
	p := chatParams("modelswitch/echo", "hi")
	p.MaxTokens = openai.Int(1000)
	// One request holds its input and 1000 output tokens at $2 per million.
	probe, err := builtinCatalog.Prepare(gateway.ChatCompletions, []byte(`{"model":"modelswitch/echo","messages":[{"role":"user","content":"hi"}],"max_tokens":1000}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.AddCredits(context.Background(), acct.email, db.Credit{Amount: 10 * probe.Hold}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var ok, refused atomic.Int32
	for range 100 {
		wg.Go(func() {
			_, err := client.Chat.Completions.New(context.Background(), p)
			var apiErr *openai.Error
			switch {
			case err == nil:
				ok.Add(1)
			case errors.As(err, &apiErr) && apiErr.Code == "insufficient_credits":
				refused.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() < 10 || ok.Load()+refused.Load() != 100 {
		t.Fatalf("%d answered, %d refused", ok.Load(), refused.Load())
	}
	b := settled(t, acct.mk)
	total := dollars(b["totalCredits"]) - dollars(b["totalUsage"])
	if total < 0 || b["held"] != float64(0) || dollars(b["balance"]) != total {
		t.Fatalf("overspent: %v", b)
	}
	tx := expect(t, call(t, "GET", "/api/transactions?type=usage&limit=100", acct.mk, nil), 200).body["transactions"].([]any)
	if len(tx) != int(ok.Load()) {
		t.Fatalf("%d usage entries for %d answers", len(tx), ok.Load())
	}
}

// fakeUpstream is an OpenAI-compatible server whose behaviour is chosen by
// the upstream model name; it records what it received.
type fakeUpstream struct {
	*httptest.Server
	mu        sync.Mutex
	bodies    []string
	cancelled chan struct{} // closed when a "hang" stream's request is cancelled
	arrived   chan struct{} // a "slow" request has arrived
	release   chan struct{} // closing it lets "slow" requests answer
}

// received is the body of the i-th request the upstream received.
func (f *fakeUpstream) received(i int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[i]
}

func newFakeUpstream(t *testing.T) *fakeUpstream {
	f := &fakeUpstream{cancelled: make(chan struct{}), arrived: make(chan struct{}, 1), release: make(chan struct{})}
	var once sync.Once
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.bodies = append(f.bodies, string(raw))
		f.mu.Unlock()
		var req struct{ Model string }
		json.Unmarshal(raw, &req)
		model := req.Model
		chunk := func(content string) string {
			return `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"` + content + `"},"finish_reason":null}]}` + "\n\n"
		}
		switch model {
		case "ok":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"ok","choices":[{"index":0,"message":{"role":"assistant","content":"fine"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":2000,"total_tokens":3000}}`)
		case "nousage":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"x","choices":[{"index":0,"message":{"role":"assistant","content":"twelve chars"},"finish_reason":"stop"}]}`)
		case "busy":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(429)
			io.WriteString(w, `{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}`)
		case "broken":
			w.WriteHeader(500)
			io.WriteString(w, `{"error":{"message":"The server had an error"}}`)
		case "cut":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, chunk("partial answer"))
			w.(http.Flusher).Flush()
			// The connection drops without [DONE].
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		case "slow":
			f.arrived <- struct{}{}
			<-f.release
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"slow","choices":[{"index":0,"message":{"role":"assistant","content":"late"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}`)
		case "hang":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, chunk("first"))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			once.Do(func() { close(f.cancelled) })
		}
	}))
	t.Cleanup(f.Close)
	return f
}

// dollars reads an amount the API sent as a JSON number.
func dollars(v any) money.USD {
	f, _ := v.(float64)
	return usd(strconv.FormatFloat(f, 'f', -1, 64))
}

func fakeCatalog(t *testing.T, f *fakeUpstream) *gateway.Catalog {
	t.Helper()
	var b strings.Builder
	b.WriteString("models:\n")
	for _, m := range []string{"ok", "nousage", "busy", "broken", "cut", "hang", "slow"} {
		fmt.Fprintf(&b, "  - {id: fake/%s, provider: openai, base_url: %q, input_price: 0.15, output_price: 0.6, max_output_tokens: 4000}\n", m, f.URL)
	}
	path := filepath.Join(t.TempDir(), "models.yaml")
	os.WriteFile(path, []byte(b.String()), 0o600)
	c, err := gateway.LoadCatalog(path, os.Getenv, gateway.Timeouts{Idle: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGatewayAgainstAFakeUpstream(t *testing.T) {
	up := newFakeUpstream(t)
	base := serve(t, fakeCatalog(t, up))
	acct := fundedAccount(t, "1")
	_, ms := proxyKey(t, acct.mk)
	client := sdk(base, strings.TrimPrefix(ms, "Bearer "))
	ctx := context.Background()

	// The body is forwarded as sent, with the upstream's model name; unknown
	// fields and numbers untouched.
	body := `{"model": "fake/ok", "messages": [{"role": "user", "content": "hi"}], "temperature": 1.0, "seed": 12345678901234567890, "x_custom": {"b": 1, "a": 2}}`
	req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", ms)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(raw), `"content":"fine"`) {
		t.Fatalf("through the gateway: %d %s", res.StatusCode, raw)
	}
	if got, want := up.received(0), strings.Replace(body, `"fake/ok"`, `"ok"`, 1); got != want {
		t.Fatalf("forwarded body\n%s\nwant\n%s", got, want)
	}
	// 1000 tokens in at $0.15/M and 2000 out at $0.60/M: exactly $0.00135.
	g := generationOf(t, acct.mk, res.Header.Get("X-Generation-Id"))
	if g["cost"] != 0.00135 || g["estimated"] != false {
		t.Fatalf("generation %v, want cost 0.00135", g)
	}

	// No usage from the upstream: estimated from the text, and said so.
	var hres *http.Response
	if _, err := client.Chat.Completions.New(ctx, chatParams("fake/nousage", "hi"), option.WithResponseInto(&hres)); err != nil {
		t.Fatal(err)
	}
	g = generationOf(t, acct.mk, hres.Header.Get("X-Generation-Id"))
	if g["estimated"] != true || g["outputTokens"].(float64) < 4 {
		t.Fatalf("estimated generation %v", g)
	}

	// Upstream errors keep their status and message and cost nothing.
	before := settled(t, acct.mk)["totalUsage"]
	_, err = client.Chat.Completions.New(ctx, chatParams("fake/busy", "hi"))
	wantAPIError(t, err, 429, "upstream_error")
	if apiErr := (*openai.Error)(nil); !errors.As(err, &apiErr) || !strings.Contains(apiErr.Message, "Rate limit reached") {
		t.Fatalf("upstream message lost: %v", err)
	}
	_, err = client.Chat.Completions.New(ctx, chatParams("fake/broken", "hi"))
	wantAPIError(t, err, 502, "upstream_error")
	if after := settled(t, acct.mk); after["totalUsage"] != before {
		t.Fatalf("failed upstream requests were charged: %v", after)
	}

	// A stream cut midway is charged for what it produced.
	stream := client.Chat.Completions.NewStreaming(ctx, chatParams("fake/cut", "hi"), option.WithResponseInto(&hres))
	for stream.Next() {
	}
	if stream.Err() == nil {
		t.Fatal("a cut stream ended without an error")
	}
	cutGen := hres.Header.Get("X-Generation-Id")
	if g := generationOf(t, acct.mk, cutGen); g["status"] != "upstream_error" || g["outputTokens"].(float64) == 0 {
		t.Fatalf("cut stream %v", g)
	}

	// A client that goes away cancels the upstream request within 2 seconds,
	// and what was produced is charged.
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	hang := `{"model":"fake/hang","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", ms, len(hang), hang)
	hr, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || hr.StatusCode != 200 {
		t.Fatalf("hang stream: %v %v", hr, err)
	}
	hangGen := hr.Header.Get("X-Generation-Id")
	line, _ := bufio.NewReader(hr.Body).ReadString('\n')
	if !strings.Contains(line, "first") {
		t.Fatalf("first event %q", line)
	}
	conn.Close()
	select {
	case <-up.cancelled:
	case <-time.After(2 * time.Second):
		t.Fatal("the upstream request was not cancelled within 2 seconds of the client leaving")
	}
	if g := generationOf(t, acct.mk, hangGen); g["status"] != "client_disconnected" {
		t.Fatalf("abandoned stream %v", g)
	}
	settled(t, acct.mk)

	// A client that leaves before an unstreamed answer arrives is charged
	// for it all the same: the upstream did the work.
	conn, err = net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	slow := `{"model":"fake/slow","messages":[{"role":"user","content":"hi"}]}`
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", ms, len(slow), slow)
	select {
	case <-up.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request never reached the upstream")
	}
	conn.Close()
	close(up.release)
	waitUntil(t, "the abandoned answer is charged", func() bool {
		tx := call(t, "GET", "/api/transactions?type=usage&limit=1", acct.mk, nil).body["transactions"].([]any)
		return len(tx) == 1 && tx[0].(map[string]any)["inputTokens"] == float64(10) && tx[0].(map[string]any)["outputTokens"] == float64(5)
	})
}
