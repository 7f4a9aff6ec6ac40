package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is the client's side of a stream. It keeps what was flushed, hands
// each flush to flushes when that is set, and fails every write from the
// failAt-th on (0: never).
type recorder struct {
	mu      sync.Mutex
	out     bytes.Buffer
	pending bytes.Buffer
	writes  int
	failAt  int
	flushes chan string
}

var errClientGone = errors.New("client gone")

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes++
	if r.failAt > 0 && r.writes >= r.failAt {
		return 0, errClientGone
	}
	return r.pending.Write(p)
}

func (r *recorder) Flush() error {
	r.mu.Lock()
	flushed := r.pending.String()
	r.out.WriteString(flushed)
	r.pending.Reset()
	r.mu.Unlock()
	if r.flushes != nil {
		r.flushes <- flushed
	}
	return nil
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

func chunk(content string) string {
	return `data: {"choices":[{"index":0,"delta":{"content":` + quote(content) + `},"finish_reason":null}]}` + "\n\n"
}

const (
	finishChunk = `data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n"
	usageChunk  = `data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}` + "\n\n"
	doneEvent   = "data: [DONE]\n\n"
)

// streamCall is a call to test/gpt with an input estimate of 100 tokens.
func streamCall(t *testing.T, includeUsage bool) *Call {
	return &Call{Model: testCatalog(t).models[0], Endpoint: ChatCompletions, Stream: true, IncludeUsage: includeUsage, InputTokens: 100}
}

// relay runs Relay on a body the test writes to, and gives its result on a channel.
func relay(call *Call, w *recorder, opt RelayOptions) (upstream *io.PipeWriter, cancelled <-chan struct{}, result <-chan Result) {
	body, upstream := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	results := make(chan Result, 1)
	go func() {
		results <- call.Relay(ctx, cancel, &Response{Status: 200, Body: body}, w, opt)
		body.Close()
	}()
	return upstream, ctx.Done(), results
}

func TestRelayPassesEventsOneByOne(t *testing.T) {
	for _, includeUsage := range []bool{false, true} {
		w := &recorder{flushes: make(chan string)}
		upstream, _, result := relay(streamCall(t, includeUsage), w, RelayOptions{Heartbeat: time.Hour})
		// Each event must reach the client before the upstream sends the next.
		steps := []struct{ sent, relayed string }{
			{": OPENROUTER PROCESSING\r\n\r\n", ": OPENROUTER PROCESSING\n\n"},
			{strings.ReplaceAll(chunk("Hel"), "\n", "\r\n"), chunk("Hel")},
			{"data: {\"choices\": [{\"index\": 0,\ndata: \"delta\": {\"content\": \"lo\"}}]}\n\n",
				"data: {\"choices\": [{\"index\": 0,\ndata: \"delta\": {\"content\": \"lo\"}}]}\n\n"},
			{"data: not JSON at all\n\n", "data: not JSON at all\n\n"},
			{"event: message\nid: 4\n" + finishChunk, "event: message\nid: 4\n" + finishChunk},
			{usageChunk, usageChunk},
			{doneEvent, doneEvent},
		}
		for _, step := range steps {
			if _, err := io.WriteString(upstream, step.sent); err != nil {
				t.Fatal(err)
			}
			if step.sent == usageChunk && !includeUsage {
				continue // hidden: nothing reaches the client
			}
			if got := <-w.flushes; got != step.relayed {
				t.Fatalf("relayed %q, want %q", got, step.relayed)
			}
		}
		upstream.Close()
		r := <-result
		want := Result{Status: StatusCompleted, Produced: true, FinishReason: "stop", Usage: Usage{Input: 7, Output: 2}}
		if r.Status != want.Status || r.Produced != want.Produced || r.FinishReason != want.FinishReason || r.Usage != want.Usage {
			t.Errorf("include usage %v: result %+v, want %+v", includeUsage, r, want)
		}
		if got := strings.Contains(w.String(), `"usage"`); got != includeUsage {
			t.Errorf("include usage %v: the client saw the usage chunk: %v", includeUsage, got)
		}
	}
}

func TestRelayEstimatesWithoutUsage(t *testing.T) {
	w := &recorder{}
	upstream, _, result := relay(streamCall(t, false), w, RelayOptions{})
	go func() {
		io.WriteString(upstream, chunk("Hello")+chunk(" wörld")+finishChunk+"data: [DONE]\n") // no blank line at the end
		upstream.Close()
	}()
	r := <-result
	want := Usage{Input: 100, Output: EstimateTokens("Hello wörld"), Estimated: true}
	if r.Status != StatusCompleted || !r.Produced || r.Usage != want {
		t.Errorf("result %+v, want completed with usage %+v", r, want)
	}
}

func TestRelayBrokenStream(t *testing.T) {
	tests := []struct {
		name     string
		sent     string
		fail     error // nil: the body just ends
		produced bool
	}{
		{"ends before [DONE]", chunk("Hello") + chunk(" there"), nil, true},
		{"read fails", chunk("Hello") + chunk(" there"), errors.New("connection reset"), true},
		{"fails before any output", ": ping\n\n", errors.New("connection reset"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &recorder{}
			upstream, _, result := relay(streamCall(t, false), w, RelayOptions{})
			go func() {
				io.WriteString(upstream, tt.sent)
				upstream.CloseWithError(tt.fail)
			}()
			r := <-result
			if r.Status != StatusUpstreamError || r.Produced != tt.produced || !r.Usage.Estimated {
				t.Errorf("result %+v", r)
			}
			if tt.produced && r.Usage.Output != EstimateTokens("Hello there") {
				t.Errorf("charged output %d, want the estimate of what came", r.Usage.Output)
			}
			const errorEvent = `data: {"error":{"code":"upstream_error","message":"The model provider's stream broke off before its end. Try again.","param":null,"type":"api_error"}}` + "\n\n"
			if want := tt.sent + errorEvent; w.String() != want {
				t.Errorf("the client got\n%q\nwant\n%q", w.String(), want)
			}
		})
	}
}

func TestRelayClientGone(t *testing.T) {
	w := &recorder{failAt: 3}
	upstream, cancelled, result := relay(streamCall(t, false), w, RelayOptions{})
	go io.WriteString(upstream, chunk("a")+chunk("b")+chunk("c")+chunk("d"))
	select {
	case <-cancelled:
	case <-time.After(2 * time.Second):
		t.Fatal("the upstream request was not cancelled within 2 seconds of the client going away")
	}
	r := <-result
	if r.Status != StatusClientDisconnected || !r.Produced || r.Usage != (Usage{Input: 100, Output: EstimateTokens("abc"), Estimated: true}) {
		t.Errorf("result %+v", r)
	}
	if w.String() != chunk("a")+chunk("b") {
		t.Errorf("the client got %q", w.String())
	}
}

func TestRelayHeartbeats(t *testing.T) {
	w := &recorder{flushes: make(chan string)}
	upstream, _, result := relay(streamCall(t, true), w, RelayOptions{Heartbeat: time.Millisecond})
	for range 2 {
		if got := <-w.flushes; got != ": keep-alive\n\n" {
			t.Fatalf("a quiet upstream: the client got %q, want a keep-alive comment", got)
		}
	}
	go func() {
		io.WriteString(upstream, chunk("late")+usageChunk+doneEvent)
		upstream.Close()
	}()
	for {
		select {
		case <-w.flushes:
			continue
		case r := <-result:
			if r.Status != StatusCompleted || r.Usage != (Usage{Input: 7, Output: 2}) {
				t.Errorf("result %+v", r)
			}
			if !strings.HasSuffix(w.String(), doneEvent) || !strings.Contains(w.String(), chunk("late")) {
				t.Errorf("the client got %q", w.String())
			}
			return
		}
	}
}

func TestRelayStopsWhenContextDone(t *testing.T) {
	body, upstream := io.Pipe()
	defer upstream.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.WriteString(upstream, chunk("partial"))
		cancel() // the server saw the client go
	}()
	w := &recorder{}
	r := streamCall(t, false).Relay(ctx, cancel, &Response{Status: 200, Body: body}, w, RelayOptions{Heartbeat: time.Hour})
	body.Close()
	if r.Status != StatusClientDisconnected {
		t.Errorf("result %+v", r)
	}
}
