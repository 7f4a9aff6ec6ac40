package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"modelswitch/errs"
)

const upstreamKey = "sk-test-0123456789abcdef"

// upstreamCatalog serves test/gpt (upstream name gpt-up, $2 and $4 per
// million tokens) from the OpenAI-compatible API at baseURL.
func upstreamCatalog(t *testing.T, baseURL string, timeouts Timeouts) *Catalog {
	t.Helper()
	path := writeFile(t, "models.yaml", fmt.Sprintf(`models:
  - id: test/gpt
    provider: openai
    base_url: %s/v1
    api_key_env: TEST_KEY
    upstream_model: gpt-up
    input_price: 2
    output_price: 4
`, baseURL))
	c, err := LoadCatalog(path, env(map[string]string{"TEST_KEY": upstreamKey}), timeouts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// send prepares body for test/gpt and sends it.
func send(t *testing.T, c *Catalog, endpoint Endpoint, body string) (*Call, *Response, error) {
	t.Helper()
	call, err := c.Prepare(endpoint, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := call.Send(context.Background())
	if err == nil {
		t.Cleanup(func() { resp.Body.Close() })
	}
	return call, resp, err
}

// received is what a fake upstream was sent.
type received struct {
	method, path, authorization, contentType, accept string
	body                                             string
}

func record(r *http.Request) received {
	body, _ := io.ReadAll(r.Body)
	return received{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), r.Header.Get("Accept"), string(body)}
}

// sse writes events to an upstream's client, flushing each one.
func sse(w http.ResponseWriter, events ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	for _, e := range events {
		io.WriteString(w, e)
		w.(http.Flusher).Flush()
	}
}

func TestOpenAIForwards(t *testing.T) {
	requests := make(chan received, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests <- record(r)
		if r.Header.Get("Accept") == "text/event-stream" {
			sse(w, chunk("Hi"), usageChunk, doneEvent)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}`)
	}))
	defer upstream.Close()
	c := upstreamCatalog(t, upstream.URL, Timeouts{})

	body := `{"model":"test/gpt", "messages":[{"role":"user","content":"Hi"}], "temperature": 1.0, "x_custom": {"n": 12345678901234567890}}`
	call, resp, err := send(t, c, ChatCompletions, body)
	if err != nil {
		t.Fatal(err)
	}
	want := received{"POST", "/v1/chat/completions", "Bearer " + upstreamKey, "application/json", "application/json",
		strings.Replace(body, "test/gpt", "gpt-up", 1)}
	if got := <-requests; got != want {
		t.Errorf("upstream received\n%+v\nwant\n%+v", got, want)
	}
	r, err := call.Read(resp, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 || resp.ContentType != "application/json" || r.Usage != (Usage{Input: 11, Output: 3}) || r.FinishReason != "stop" || !strings.HasPrefix(string(r.Body), `{"id":"x"`) {
		t.Errorf("status %d, result %+v", resp.Status, r)
	}
	if cost := call.Cost(r.Usage); cost != 11*2000+3*4000 {
		t.Errorf("cost %d nano-dollars", cost)
	}

	streamed := `{"model":"test/gpt","stream":true,"messages":[{"role":"user","content":"Hi"}]}`
	call, resp, err = send(t, c, ChatCompletions, streamed)
	if err != nil {
		t.Fatal(err)
	}
	want.accept = "text/event-stream"
	want.body = `{"model":"gpt-up","stream":true,"messages":[{"role":"user","content":"Hi"}],"stream_options":{"include_usage":true}}`
	if got := <-requests; got != want {
		t.Errorf("upstream received\n%+v\nwant\n%+v", got, want)
	}
	w := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if r := call.Relay(ctx, cancel, resp, w, RelayOptions{}); r.Status != StatusCompleted || r.Usage != (Usage{Input: 7, Output: 2}) {
		t.Errorf("relayed %+v", r)
	}
	if w.String() != chunk("Hi")+doneEvent {
		t.Errorf("the client got %q", w.String())
	}

	if _, _, err = send(t, c, Embeddings, `{"model":"test/gpt","input":"Hi"}`); err != nil {
		t.Fatal(err)
	}
	if got := <-requests; got.path != "/v1/embeddings" || got.body != `{"model":"gpt-up","input":"Hi"}` {
		t.Errorf("upstream received %+v", got)
	}
}

func TestOpenAIWithoutKey(t *testing.T) {
	authorization := make(chan []string, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		authorization <- r.Header.Values("Authorization")
		io.WriteString(w, `{}`)
	}))
	defer upstream.Close()
	path := writeFile(t, "models.yaml", "models:\n  - id: local/llama\n    provider: openai\n    base_url: "+upstream.URL+"\n    input_price: 0\n    output_price: 0\n")
	c, err := LoadCatalog(path, env(nil), Timeouts{})
	if err != nil {
		t.Fatal(err)
	}
	call, err := c.Prepare(ChatCompletions, []byte(`{"model":"local/llama","messages":[{}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := call.Send(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := <-authorization; len(got) != 0 {
		t.Errorf("sent Authorization %q with no key configured", got)
	}
}

func TestOpenAIReusesConnections(t *testing.T) {
	var conns atomic.Int32
	upstream := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept") == "text/event-stream" {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, chunk("Hi")+usageChunk+doneEvent)
			return
		}
		io.WriteString(w, `{"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}))
	upstream.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			conns.Add(1)
		}
	}
	upstream.Start()
	defer upstream.Close()
	c := upstreamCatalog(t, upstream.URL, Timeouts{})
	for range 3 {
		call, resp, err := send(t, c, ChatCompletions, `{"model":"test/gpt","messages":[{}]}`)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := call.Read(resp, 0); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		call, resp, err = send(t, c, ChatCompletions, `{"model":"test/gpt","stream":true,"messages":[{}]}`)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		call.Relay(ctx, cancel, resp, &recorder{}, RelayOptions{})
		resp.Body.Close()
		cancel()
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("6 requests in a row opened %d connections, want 1", n)
	}
}

func TestOpenAITimeouts(t *testing.T) {
	t.Run("connect", func(t *testing.T) {
		// A peer that accepts TCP but never answers the TLS handshake.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var mu sync.Mutex
		var held []net.Conn
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				held = append(held, conn)
				mu.Unlock()
			}
		}()
		defer func() {
			mu.Lock()
			defer mu.Unlock()
			for _, conn := range held {
				conn.Close()
			}
		}()
		c := upstreamCatalog(t, "https://"+l.Addr().String(), Timeouts{Connect: 20 * time.Millisecond})
		_, _, err = send(t, c, ChatCompletions, `{"model":"test/gpt","messages":[{}]}`)
		if !errs.Is(err, errs.UpstreamTimeout) {
			t.Errorf("error %v, want an upstream timeout", err)
		}
	})

	t.Run("first byte", func(t *testing.T) {
		stopped := make(chan struct{})
		upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body) // a server notices a client leave once it has read the request
			<-r.Context().Done()        // never answers
			close(stopped)
		}))
		defer upstream.Close()
		c := upstreamCatalog(t, upstream.URL, Timeouts{FirstByte: 20 * time.Millisecond})
		_, _, err := send(t, c, ChatCompletions, `{"model":"test/gpt","messages":[{}]}`)
		if e, ok := errs.As(err); !ok || e.Kind != errs.UpstreamTimeout || e.HTTPStatus() != 504 || e.Code != "upstream_timeout" {
			t.Errorf("error %v, want a 504 upstream_timeout", err)
		}
		waitClosed(t, stopped, "the upstream request was not cancelled after the timeout")
	})

	t.Run("idle", func(t *testing.T) {
		stopped := make(chan struct{})
		upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			sse(w, chunk("Hel")) // then nothing
			<-r.Context().Done()
			close(stopped)
		}))
		defer upstream.Close()
		c := upstreamCatalog(t, upstream.URL, Timeouts{Idle: 20 * time.Millisecond})
		call, resp, err := send(t, c, ChatCompletions, `{"model":"test/gpt","stream":true,"messages":[{}]}`)
		if err != nil {
			t.Fatal(err)
		}
		w := &recorder{}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := call.Relay(ctx, cancel, resp, w, RelayOptions{Heartbeat: time.Hour})
		waitClosed(t, stopped, "the upstream request was not cancelled after the idle timeout")
		if r.Status != StatusUpstreamError || !r.Produced || !r.Usage.Estimated {
			t.Errorf("result %+v", r)
		}
		if !strings.HasSuffix(w.String(), `"code":"upstream_timeout","message":"The model provider stopped sending its answer. Try again later.","param":null,"type":"api_error"}}`+"\n\n") {
			t.Errorf("the client got %q", w.String())
		}
	})

	t.Run("idle unstreamed", func(t *testing.T) {
		upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, `{"choices": [`)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}))
		defer upstream.Close()
		c := upstreamCatalog(t, upstream.URL, Timeouts{Idle: 20 * time.Millisecond})
		call, resp, err := send(t, c, ChatCompletions, `{"model":"test/gpt","messages":[{}]}`)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := call.Read(resp, 0); !errs.Is(err, errs.UpstreamTimeout) {
			t.Errorf("error %v, want an upstream timeout", err)
		}
	})
}

// waitClosed fails the test unless ch is closed within 2 seconds.
func waitClosed(t *testing.T, ch <-chan struct{}, failure string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(2 * time.Second):
		t.Fatal(failure)
	}
}

func TestOpenAIUnreachable(t *testing.T) {
	upstream := httptest.NewServer(http.NotFoundHandler())
	upstream.Close()
	c := upstreamCatalog(t, upstream.URL, Timeouts{})
	_, _, err := send(t, c, ChatCompletions, `{"model":"test/gpt","messages":[{}]}`)
	if e, ok := errs.As(err); !ok || e.Kind != errs.Upstream || e.HTTPStatus() != 502 || e.Code != "upstream_error" {
		t.Errorf("error %v, want a 502 upstream_error", err)
	}

	call, _ := c.Prepare(ChatCompletions, []byte(`{"model":"test/gpt","messages":[{}]}`))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := call.Send(ctx); err != context.Canceled {
		t.Errorf("send with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestOpenAIClientGoneStopsUpstream(t *testing.T) {
	stopped := make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		sse(w, chunk("a"), chunk("b"), chunk("c"), chunk("d"))
		<-r.Context().Done()
		close(stopped)
	}))
	defer upstream.Close()
	c := upstreamCatalog(t, upstream.URL, Timeouts{})
	call, err := c.Prepare(ChatCompletions, []byte(`{"model":"test/gpt","stream":true,"messages":[{}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := call.Send(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := call.Relay(ctx, cancel, resp, &recorder{failAt: 3}, RelayOptions{})
	waitClosed(t, stopped, "the upstream request was still open 2 seconds after the client went away")
	if r.Status != StatusClientDisconnected || !r.Produced || !r.Usage.Estimated {
		t.Errorf("result %+v", r)
	}
}

func TestOpenAIBrokenStream(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sse(w, chunk("Hello"), chunk(" there"))
		panic(http.ErrAbortHandler) // drops the connection mid-stream
	}))
	defer upstream.Close()
	c := upstreamCatalog(t, upstream.URL, Timeouts{})
	call, resp, err := send(t, c, ChatCompletions, `{"model":"test/gpt","stream":true,"messages":[{}]}`)
	if err != nil {
		t.Fatal(err)
	}
	w := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := call.Relay(ctx, cancel, resp, w, RelayOptions{})
	if r.Status != StatusUpstreamError || !r.Produced || r.Usage != (Usage{Input: call.InputTokens, Output: EstimateTokens("Hello there"), Estimated: true}) {
		t.Errorf("result %+v", r)
	}
	if !strings.HasPrefix(w.String(), chunk("Hello")+chunk(" there")+`data: {"error":`) {
		t.Errorf("the client got %q", w.String())
	}
}

func TestUpstreamError(t *testing.T) {
	long := strings.Repeat("x", 2*messageLimit)
	tests := []struct {
		name        string
		status      int
		contentType string
		body        string
		wantStatus  int
		wantMessage string
		retryAfter  time.Duration
	}{
		{"rate limited", 429, "application/json", `{"error":{"message":"Rate limit reached for gpt-up.","type":"requests","code":"rate_limit_exceeded"}}`,
			429, "Rate limit reached for gpt-up.", 7 * time.Second},
		{"bad request", 400, "application/json", `{"error":{"message":"  Invalid value for 'temperature':\n\tmust be <= 2. "}}`,
			400, "Invalid value for 'temperature': must be <= 2.", 0},
		{"key in a message", 400, "application/json", `{"error":{"message":"Bad key ` + upstreamKey + ` used"}}`,
			400, "Bad key [redacted] used", 0},
		{"error as a string", 404, "application/json", `{"error":"model gpt-up not found"}`, 404, "model gpt-up not found", 0},
		{"vLLM", 400, "application/json", `{"object":"error","message":"max_tokens is too large","type":"BadRequestError"}`, 400, "max_tokens is too large", 0},
		{"FastAPI", 422, "application/json", `{"detail":"Field required"}`, 422, "Field required", 0},
		{"no message", 409, "application/json", `{}`, 409, "The model provider refused the request (409 Conflict).", 0},
		{"long message", 400, "text/plain", long, 400, long[:messageLimit] + "…", 0},
		{"upstream failure", 500, "text/plain", "boom\n", 502, "The model provider failed (500 Internal Server Error): boom", 0},
		{"overloaded", 503, "text/html", "<html>Service Unavailable</html>", 502, "The model provider failed (503 Service Unavailable). Try again later.", 3 * time.Second},
		{"router's key refused", 401, "application/json", `{"error":{"message":"Incorrect API key provided: sk-test-****cdef"}}`,
			502, "The model provider refused the router's credentials (401 Unauthorized). Tell the operator of this router.", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.contentType)
				if tt.retryAfter > 0 {
					w.Header().Set("Retry-After", fmt.Sprint(tt.retryAfter.Seconds()))
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer upstream.Close()
			call, resp, err := send(t, upstreamCatalog(t, upstream.URL, Timeouts{}), ChatCompletions, `{"model":"test/gpt","messages":[{}]}`)
			if err != nil {
				t.Fatal(err)
			}
			e := call.UpstreamError(resp)
			if e.Kind != errs.Upstream || e.Code != "upstream_error" || e.HTTPStatus() != tt.wantStatus || e.Message != tt.wantMessage || e.RetryAfter != tt.retryAfter {
				t.Errorf("error %+v (status %d), want status %d, message %q, retry after %v", e, e.HTTPStatus(), tt.wantStatus, tt.wantMessage, tt.retryAfter)
			}
			if strings.Contains(e.Message, upstreamKey) {
				t.Errorf("the message shows the upstream key: %q", e.Message)
			}
		})
	}
}

// TestOpenAICallerDeadline: the caller's bound on a whole inference running
// out is a timeout (504), before the answer starts and while it is read.
func TestOpenAICallerDeadline(t *testing.T) {
	var streamed atomic.Bool
	cancelled := make(chan struct{}, 2)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // net/http notices a closed connection only after the body
		if streamed.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.(http.Flusher).Flush() // headers, then no body
		}
		<-r.Context().Done() // the router gave up on the request
		cancelled <- struct{}{}
	}))
	defer upstream.Close()
	c := upstreamCatalog(t, upstream.URL, Timeouts{})
	call, err := c.Prepare(ChatCompletions, []byte(`{"model":"test/gpt","messages":[{}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := call.Send(ctx); !errs.Is(err, errs.UpstreamTimeout) {
		t.Fatalf("deadline before the answer: %v, want upstream_timeout", err)
	}
	streamed.Store(true)
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	resp, err := call.Send(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := call.Read(resp, 0); !errs.Is(err, errs.UpstreamTimeout) {
		t.Fatalf("deadline while reading: %v, want upstream_timeout", err)
	}
	for i := range 2 {
		select {
		case <-cancelled:
		case <-time.After(2 * time.Second):
			t.Fatalf("upstream request %d still running after the deadline", i+1)
		}
	}
}
