package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strings"
	"unicode"
)

// echo is the built-in model: it answers "Echo: " and the last user message,
// the same way every time, without any network, and reports its usage like
// any upstream.
type echo struct{}

// echoMessageTokens is what each message adds to the prompt, as with real
// chat models, which wrap every message in a few tokens of markup.
const echoMessageTokens = 3

// echoDimensions is the length of echo's embeddings.
const echoDimensions = 8

func (echo) Send(ctx context.Context, req Request) (*Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch req.Endpoint {
	case ChatCompletions:
		return echoChat(ctx, req.Body)
	case Embeddings:
		return echoEmbeddings(req.Body)
	}
	return echoRefusal(http.StatusNotFound, "The echo model answers chat/completions and embeddings only."), nil
}

type echoMessage struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type echoChoice struct {
	Index        int          `json:"index"`
	Message      *echoMessage `json:"message,omitempty"`
	Delta        *echoMessage `json:"delta,omitempty"`
	Logprobs     *struct{}    `json:"logprobs"` // always null, as OpenAI sends it
	FinishReason *string      `json:"finish_reason"`
}

type echoUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

type echoCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []echoChoice `json:"choices"`
	Usage   *echoUsage   `json:"usage,omitempty"`
}

// echoReply is echo's answer to one chat request.
type echoReply struct {
	completion   echoCompletion // without choices
	content      string
	finishReason string
	choices      int
	stream       bool
	includeUsage bool
}

func echoChat(ctx context.Context, body []byte) (*Response, error) {
	var in struct {
		Model    string `json:"model"`
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
		MaxTokens           int64 `json:"max_tokens"`
		MaxCompletionTokens int64 `json:"max_completion_tokens"`
		N                   int   `json:"n"`
		Stream              bool  `json:"stream"`
		StreamOptions       struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return echoRefusal(http.StatusBadRequest, "The echo model could not read the request: "+err.Error()), nil
	}
	var prompt int64
	var last string
	for _, m := range in.Messages {
		text := contentText(m.Content)
		prompt += echoMessageTokens + EstimateTokens(text)
		if m.Role == "user" {
			last = text
		}
	}
	sum := sha256.Sum256(body)
	r := echoReply{
		completion: echoCompletion{
			ID: "chatcmpl-echo-" + hex.EncodeToString(sum[:12]), Object: "chat.completion", Model: in.Model,
		},
		choices: max(in.N, 1), stream: in.Stream, includeUsage: in.StreamOptions.IncludeUsage,
	}
	r.content, r.finishReason = truncate(words("Echo: "+last), firstSet(in.MaxCompletionTokens, in.MaxTokens))
	completion := EstimateTokens(r.content) * int64(r.choices)
	r.completion.Usage = &echoUsage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
	if r.stream {
		return r.streamed(ctx), nil
	}
	return r.whole(), nil
}

func (r echoReply) whole() *Response {
	c := r.completion
	for i := range r.choices {
		c.Choices = append(c.Choices, echoChoice{Index: i,
			Message:      &echoMessage{Role: "assistant", Content: &r.content},
			FinishReason: &r.finishReason})
	}
	return echoJSON(http.StatusOK, c)
}

// streamed writes the reply through a pipe, a chunk a word, so that it
// streams like an upstream's; it stops when ctx is done or the reader closes.
func (r echoReply) streamed(ctx context.Context) *Response {
	pr, pw := io.Pipe()
	go func() {
		defer pw.Close()
		stop := context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })
		defer stop()
		for _, chunk := range r.chunks() {
			// AfterFunc closes the pipe in a goroutine of its own; checking
			// here stops the stream at once when ctx ends between chunks.
			if err := ctx.Err(); err != nil {
				pw.CloseWithError(err)
				return
			}
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
	}()
	return &Response{Status: http.StatusOK, ContentType: "text/event-stream", Body: pr}
}

// chunks are the reply's events, [DONE] last.
func (r echoReply) chunks() [][]byte {
	base := r.completion
	base.Object, base.Usage = "chat.completion.chunk", nil
	var events [][]byte
	add := func(c echoCompletion) {
		data, _ := json.Marshal(c)
		events = append(events, append(append([]byte("data: "), data...), "\n\n"...))
	}
	pieces := words(r.content)
	if len(pieces) == 0 {
		pieces = []string{""} // the role still comes in a first chunk
	}
	for i := range r.choices {
		for j, piece := range pieces {
			delta := &echoMessage{Content: &piece}
			if j == 0 {
				delta.Role = "assistant"
			}
			c := base
			c.Choices = []echoChoice{{Index: i, Delta: delta}}
			add(c)
		}
		c := base
		c.Choices = []echoChoice{{Index: i, Delta: &echoMessage{}, FinishReason: &r.finishReason}}
		add(c)
	}
	if r.includeUsage {
		c := base
		c.Choices, c.Usage = []echoChoice{}, r.completion.Usage
		add(c)
	}
	return append(events, []byte("data: [DONE]\n\n"))
}

// words splits text into words, each with the spaces before it, so that they
// join back into text.
func words(text string) []string {
	var out []string
	start, prev := 0, ' '
	for i, r := range text {
		if unicode.IsSpace(r) && !unicode.IsSpace(prev) && i > start {
			out = append(out, text[start:i])
			start = i
		}
		prev = r
	}
	if start < len(text) {
		out = append(out, text[start:])
	}
	return out
}

// truncate keeps the longest run of words that fits in limit tokens (0: no limit).
func truncate(ws []string, limit int64) (content, finishReason string) {
	var kept tally
	for i, w := range ws {
		next := kept
		next.add(w)
		if limit > 0 && next.tokens() > limit {
			return strings.Join(ws[:i], ""), "length"
		}
		kept = next
	}
	return strings.Join(ws, ""), "stop"
}

func echoEmbeddings(body []byte) (*Response, error) {
	var in struct {
		Model          string          `json:"model"`
		Input          json.RawMessage `json:"input"`
		EncodingFormat string          `json:"encoding_format"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return echoRefusal(http.StatusBadRequest, "The echo model could not read the request: "+err.Error()), nil
	}
	var texts []string
	var one string
	if json.Unmarshal(in.Input, &one) == nil {
		texts = []string{one}
	} else if json.Unmarshal(in.Input, &texts) != nil {
		return echoRefusal(http.StatusBadRequest, `The echo model embeds text only: send "input" as a string or an array of strings.`), nil
	}
	if in.EncodingFormat != "" && in.EncodingFormat != "float" && in.EncodingFormat != "base64" {
		return echoRefusal(http.StatusBadRequest, `"encoding_format" must be "float" or "base64".`), nil
	}
	type embedding struct {
		Object    string `json:"object"`
		Index     int    `json:"index"`
		Embedding any    `json:"embedding"`
	}
	data := make([]embedding, len(texts))
	var tokens int64
	for i, text := range texts {
		tokens += EstimateTokens(text)
		var vector any = echoVector(text)
		if in.EncodingFormat == "base64" {
			vector = base64Floats(echoVector(text))
		}
		data[i] = embedding{Object: "embedding", Index: i, Embedding: vector}
	}
	return echoJSON(http.StatusOK, map[string]any{
		"object": "list", "data": data, "model": in.Model,
		"usage": map[string]int64{"prompt_tokens": tokens, "total_tokens": tokens},
	}), nil
}

// echoVector is a unit vector drawn from the SHA-256 of text: the same text,
// the same vector.
func echoVector(text string) []float32 {
	sum := sha256.Sum256([]byte(text))
	v := make([]float32, echoDimensions)
	var norm float64
	for i := range v {
		x := float64(int16(binary.BigEndian.Uint16(sum[2*i:]))) / math.MaxInt16
		v[i], norm = float32(x), norm+x*x
	}
	for i := range v {
		v[i] = float32(float64(v[i]) / math.Sqrt(norm))
	}
	return v
}

// base64Floats is OpenAI's base64 encoding of an embedding: little-endian float32s.
func base64Floats(v []float32) string {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return base64.StdEncoding.EncodeToString(b)
}

// echoRefusal is an OpenAI-shaped error answer, as an upstream would send it.
func echoRefusal(status int, message string) *Response {
	return echoJSON(status, map[string]any{"error": map[string]any{
		"message": message, "type": "invalid_request_error", "param": nil, "code": nil,
	}})
}

func echoJSON(status int, v any) *Response {
	body, _ := json.Marshal(v) // echo's own values always marshal
	return &Response{Status: status, ContentType: "application/json", Body: io.NopCloser(bytes.NewReader(body))}
}
