package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

// echoCall prepares body for the built-in echo model and sends it.
func echoCall(t *testing.T, endpoint Endpoint, body string) (*Call, *Response) {
	t.Helper()
	c, err := LoadCatalog("", env(nil), Timeouts{})
	if err != nil {
		t.Fatal(err)
	}
	call, err := c.Prepare(endpoint, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := call.Send(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return call, resp
}

type completion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Delta struct {
			Role    *string `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
		TotalTokens      int64 `json:"total_tokens"`
	} `json:"usage"`
}

func TestEchoChat(t *testing.T) {
	body := `{"model": "modelswitch/echo", "messages": [
		{"role": "system", "content": "Be brief."},
		{"role": "user", "content": "first"},
		{"role": "assistant", "content": "Echo: first"},
		{"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}, {"type": "text", "text": "world"}]}]}`
	call, resp := echoCall(t, ChatCompletions, body)
	if resp.Status != 200 || resp.ContentType != "application/json" {
		t.Fatalf("status %d, content type %q", resp.Status, resp.ContentType)
	}
	r, err := call.Read(resp, 0)
	if err != nil {
		t.Fatal(err)
	}
	var c completion
	if err := json.Unmarshal(r.Body, &c); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.ID, "chatcmpl-echo-") || c.Object != "chat.completion" || c.Model != "echo" || len(c.Choices) != 1 {
		t.Fatalf("completion %s", r.Body)
	}
	msg := c.Choices[0].Message
	if msg.Role != "assistant" || msg.Content != "Echo: Hello world" || *c.Choices[0].FinishReason != "stop" {
		t.Errorf("choice %+v, finish %q", msg, *c.Choices[0].FinishReason)
	}
	prompt := 4*echoMessageTokens + EstimateTokens("Be brief.") + EstimateTokens("first") + EstimateTokens("Echo: first") + EstimateTokens("Hello world")
	output := EstimateTokens("Echo: Hello world")
	if c.Usage == nil || c.Usage.PromptTokens != prompt || c.Usage.CompletionTokens != output || c.Usage.TotalTokens != prompt+output {
		t.Errorf("usage %+v, want %d + %d", c.Usage, prompt, output)
	}
	if want := (Usage{Input: prompt, Output: output}); r.Usage != want || r.Status != StatusCompleted || !r.Produced || r.FinishReason != "stop" {
		t.Errorf("result %+v, want usage %+v", r, want)
	}
	if call.InputTokens < prompt {
		t.Errorf("the input estimate %d is below echo's own count %d", call.InputTokens, prompt)
	}

	_, again := echoCall(t, ChatCompletions, body)
	if second, _ := io.ReadAll(again.Body); !bytes.Equal(second, r.Body) {
		t.Errorf("the same request answered twice differently:\n%s\n%s", r.Body, second)
	}
}

func TestEchoChatTruncates(t *testing.T) {
	for _, param := range []string{"max_tokens", "max_completion_tokens"} {
		body := `{"model": "modelswitch/echo", "messages": [{"role": "user", "content": "one two three four five six"}], "` + param + `": 5}`
		call, resp := echoCall(t, ChatCompletions, body)
		r, err := call.Read(resp, 0)
		if err != nil {
			t.Fatal(err)
		}
		var c completion
		_ = json.Unmarshal(r.Body, &c)
		content := c.Choices[0].Message.Content
		if content != "Echo: one two" || r.FinishReason != "length" {
			t.Errorf("%s 5: content %q, finish %q; want \"Echo: one two\", length", param, content, r.FinishReason)
		}
		if r.Usage.Output != EstimateTokens(content) || r.Usage.Output > 5 {
			t.Errorf("%s 5: %d output tokens", param, r.Usage.Output)
		}
	}
}

// events reads a whole SSE body into its data payloads.
func events(t *testing.T, body io.Reader) []string {
	t.Helper()
	var out []string
	s := bufio.NewScanner(body)
	for s.Scan() {
		if data, ok := strings.CutPrefix(s.Text(), "data: "); ok {
			out = append(out, data)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEchoStream(t *testing.T) {
	for _, includeUsage := range []bool{false, true} {
		body := `{"model": "echo", "stream": true, "n": 2, "messages": [{"role": "user", "content": "Hello  big\nworld"}]}`
		if includeUsage {
			body = strings.Replace(body, `"stream": true`, `"stream": true, "stream_options": {"include_usage": true}`, 1)
		}
		resp, err := echo{}.Send(context.Background(), Request{Endpoint: ChatCompletions, Body: []byte(body), Stream: true})
		if err != nil || resp.Status != 200 || resp.ContentType != "text/event-stream" {
			t.Fatalf("status %d, content type %q, error %v", resp.Status, resp.ContentType, err)
		}
		data := events(t, resp.Body)
		resp.Body.Close()
		if data[len(data)-1] != "[DONE]" {
			t.Fatalf("last event %q, want [DONE]", data[len(data)-1])
		}
		texts := map[int]string{}
		finishes := 0
		var usage *completion
		for i, d := range data[:len(data)-1] {
			var c completion
			if err := json.Unmarshal([]byte(d), &c); err != nil || c.Object != "chat.completion.chunk" || c.Model != "echo" {
				t.Fatalf("event %d %q", i, d)
			}
			if len(c.Choices) == 0 {
				usage = &c
				continue
			}
			ch := c.Choices[0]
			if ch.Delta.Content != nil {
				if first := texts[ch.Index] == ""; (ch.Delta.Role != nil) != first {
					t.Errorf("event %d: role %v; only a choice's first chunk has one", i, ch.Delta.Role)
				}
				texts[ch.Index] += *ch.Delta.Content
			}
			if ch.FinishReason != nil {
				finishes++
			}
		}
		if texts[0] != "Echo: Hello  big\nworld" || texts[1] != texts[0] || finishes != 2 {
			t.Errorf("streamed choices %v, %d finish reasons", texts, finishes)
		}
		// 4 words and a finish for each of 2 choices, then usage when asked.
		if chunks, want := len(data)-1, 2*5+map[bool]int{false: 0, true: 1}[includeUsage]; chunks != want {
			t.Errorf("include_usage %v: %d chunks, want %d", includeUsage, chunks, want)
		}
		if (usage != nil) != includeUsage || usage != nil && usage.Usage.CompletionTokens != 2*EstimateTokens(texts[0]) {
			t.Errorf("include_usage %v: usage chunk %+v", includeUsage, usage)
		}
	}
}

func TestEchoStreamStopsWhenCancelled(t *testing.T) {
	c, _ := LoadCatalog("", env(nil), Timeouts{})
	call, err := c.Prepare(ChatCompletions, []byte(`{"model": "modelswitch/echo", "stream": true, "messages": [{"role": "user", "content": "a b c d e f g"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := call.Send(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := bufio.NewReader(resp.Body)
	if _, err := first.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	cancel()
	rest, err := io.ReadAll(first)
	if err != context.Canceled || bytes.Contains(rest, []byte("[DONE]")) {
		t.Errorf("after cancel: read %q, error %v; want the stream cut with context.Canceled", rest, err)
	}
	if _, err := call.Send(ctx); err != context.Canceled {
		t.Errorf("send with a done context: %v", err)
	}
}

func TestEchoEmbeddings(t *testing.T) {
	type embeddings struct {
		Object string `json:"object"`
		Model  string `json:"model"`
		Data   []struct {
			Object    string          `json:"object"`
			Index     int             `json:"index"`
			Embedding json.RawMessage `json:"embedding"`
		} `json:"data"`
		Usage struct {
			PromptTokens int64 `json:"prompt_tokens"`
			TotalTokens  int64 `json:"total_tokens"`
		} `json:"usage"`
	}
	read := func(body string) (embeddings, Result) {
		call, resp := echoCall(t, Embeddings, body)
		r, err := call.Read(resp, 0)
		if err != nil || resp.Status != 200 {
			t.Fatalf("status %d, error %v", resp.Status, err)
		}
		var e embeddings
		if err := json.Unmarshal(r.Body, &e); err != nil {
			t.Fatal(err)
		}
		return e, r
	}
	floats, r := read(`{"model": "modelswitch/echo", "input": ["hello", "world", "hello"]}`)
	if floats.Object != "list" || floats.Model != "echo" || len(floats.Data) != 3 {
		t.Fatalf("embeddings %+v", floats)
	}
	if tokens := 2*EstimateTokens("hello") + EstimateTokens("world"); floats.Usage.PromptTokens != tokens || floats.Usage.TotalTokens != tokens ||
		r.Usage != (Usage{Input: tokens}) {
		t.Errorf("usage %+v, result %+v; want %d tokens", floats.Usage, r.Usage, tokens)
	}
	vectors := make([][]float32, 3)
	for i, d := range floats.Data {
		if d.Object != "embedding" || d.Index != i || json.Unmarshal(d.Embedding, &vectors[i]) != nil || len(vectors[i]) != echoDimensions {
			t.Fatalf("embedding %d: %+v", i, d)
		}
		var norm float64
		for _, x := range vectors[i] {
			norm += float64(x) * float64(x)
		}
		if math.Abs(norm-1) > 1e-5 {
			t.Errorf("embedding %d has length %f, want 1", i, math.Sqrt(norm))
		}
	}
	if string(floats.Data[0].Embedding) != string(floats.Data[2].Embedding) || string(floats.Data[0].Embedding) == string(floats.Data[1].Embedding) {
		t.Error("the same text must embed the same, and different texts differently")
	}

	encoded, _ := read(`{"model": "modelswitch/echo", "input": "hello", "encoding_format": "base64"}`)
	var b64 string
	_ = json.Unmarshal(encoded.Data[0].Embedding, &b64)
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != 4*echoDimensions {
		t.Fatalf("base64 embedding %q: %v", b64, err)
	}
	for i := range echoDimensions {
		if x := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); x != vectors[0][i] {
			t.Errorf("base64 dimension %d = %v, float %v", i, x, vectors[0][i])
		}
	}

	call, resp := echoCall(t, Embeddings, `{"model": "modelswitch/echo", "input": [[1, 2, 3]]}`)
	if e := call.UpstreamError(resp); resp.Status != 400 || e.HTTPStatus() != 400 || !strings.Contains(e.Message, "embeds text only") {
		t.Errorf("token arrays: status %d, error %v", resp.Status, e)
	}
}

func TestEchoRelayHidesUsage(t *testing.T) {
	call, resp := echoCall(t, ChatCompletions, `{"model": "modelswitch/echo", "stream": true, "messages": [{"role": "user", "content": "Hello world"}]}`)
	w := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := call.Relay(ctx, cancel, resp, w, RelayOptions{Heartbeat: time.Minute})
	if r.Status != StatusCompleted || !r.Produced || r.Usage.Estimated || r.Usage.Output != EstimateTokens("Echo: Hello world") || r.FinishReason != "stop" {
		t.Errorf("result %+v", r)
	}
	if strings.Contains(w.String(), `"usage"`) || !strings.HasSuffix(w.String(), "data: [DONE]\n\n") {
		t.Errorf("the client, who did not ask for usage, got\n%s", w.String())
	}
}
