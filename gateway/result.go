package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode"

	"modelswitch/errs"
)

// Usage is what an answer consumed, in tokens.
type Usage struct {
	Input, Output int64
	Estimated     bool // the upstream reported no usage: these are the router's estimates
}

// Statuses of a Result.
const (
	StatusCompleted          = "completed"
	StatusClientDisconnected = "client_disconnected"
	StatusUpstreamError      = "upstream_error"
)

// Result is what the router learnt from an answer.
type Result struct {
	Usage        Usage
	FinishReason string // the upstream's, "" if it sent none
	Status       string // StatusCompleted, StatusClientDisconnected or StatusUpstreamError
	Produced     bool   // any output came: when false, the caller charges nothing
	Body         []byte // unstreamed only: the upstream's body, for the client as it is
}

// DefaultReadLimit caps an unstreamed answer when Read is given no limit.
const DefaultReadLimit = 32 << 20

// errorBodyLimit caps how much of an upstream's error answer is read.
const errorBodyLimit = 64 << 10

// messageLimit caps an upstream's message passed on to the client, in characters.
const messageLimit = 500

var errBrokenAnswer = &errs.Error{Kind: errs.Upstream, Code: "upstream_error",
	Message: "The model provider's answer broke off. Try again."}

// Read reads an unstreamed 2xx answer of at most limit bytes and meters it,
// from its "usage" or, when it has none, from an estimate of its output.
// Errors are *errs.Error, or context.Canceled when the caller cancelled.
func (c *Call) Read(resp *Response, limit int64) (Result, error) {
	if limit <= 0 {
		limit = DefaultReadLimit
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return Result{}, readError(err)
	}
	if int64(len(body)) > limit {
		return Result{}, &errs.Error{Kind: errs.Upstream, Code: "upstream_error",
			Message: fmt.Sprintf("The model provider's answer is over %d bytes. Ask for less.", limit)}
	}
	r := Result{Status: StatusCompleted, Produced: true, Body: body}
	usage, finishReason := meteredFields(body)
	r.FinishReason = finishReason
	if usage != nil {
		r.Usage = usage.usage()
		return r, nil
	}
	// No usage: the output is estimated from the text of every choice.
	var answer struct {
		Choices []struct {
			Message output `json:"message"`
		} `json:"choices"`
	}
	_ = json.Unmarshal(body, &answer)
	var produced tally
	for _, choice := range answer.Choices {
		choice.Message.count(&produced)
	}
	r.Usage = Usage{Input: c.InputTokens, Output: produced.tokens(), Estimated: true}
	return r, nil
}

// meteredFields reads an answer's usage and its first choice's finish
// reason, and nothing else: the answer is scanned, not decoded. Each is read
// on its own, so that an odd "choices" cannot hide the usage; a member of the
// wrong shape counts as absent, a count that is not a whole number as 0.
func meteredFields(body []byte) (usage *upstreamUsage, finishReason string) {
	start := skipSpace(body, 0)
	if !json.Valid(body) || body[start] != '{' {
		return nil, ""
	}
	eachMember(body, start, func(key []byte, vs, ve int) { // the last of a name sent twice wins, as in encoding/json
		v := body[vs:ve]
		switch {
		case keyIs(key, "usage"):
			usage = nil
			if v[0] == '{' {
				usage = &upstreamUsage{}
				eachMember(v, 0, func(key []byte, s, e int) {
					switch {
					case keyIs(key, "prompt_tokens"):
						usage.PromptTokens = wholeNumber(v[s:e])
					case keyIs(key, "completion_tokens"):
						usage.CompletionTokens = wholeNumber(v[s:e])
					}
				})
			}
		case keyIs(key, "choices"):
			finishReason = ""
			if first := skipSpace(v, 1); v[0] == '[' && v[first] == '{' {
				eachMember(v, first, func(key []byte, s, e int) {
					if keyIs(key, "finish_reason") {
						finishReason = ""
						if v[s] == '"' {
							finishReason = jsonString(v[s:e])
						}
					}
				})
			}
		}
	})
	return usage, finishReason
}

// wholeNumber is a JSON number written as a whole number, else 0.
func wholeNumber(raw []byte) int64 {
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// readError is what a failed read of an answer becomes.
func readError(err error) error {
	if e, ok := errs.As(err); ok {
		return e
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return errTimeout
	}
	return errBrokenAnswer
}

// UpstreamError reads a non-2xx answer and turns it into the client's error:
// a 4xx keeps its status and the upstream's message, anything else is a 502.
// A refusal of the router's own credentials (401, 403, 407) is a 502 too:
// passed on, it would tell the client that its key is wrong.
func (c *Call) UpstreamError(resp *Response) *errs.Error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
	msg := c.upstreamMessage(resp.ContentType, raw)
	status := fmt.Sprintf("%d %s", resp.Status, http.StatusText(resp.Status))
	switch {
	case resp.Status == http.StatusUnauthorized || resp.Status == http.StatusForbidden || resp.Status == http.StatusProxyAuthRequired:
		return &errs.Error{Kind: errs.Upstream, Code: "upstream_error",
			Message: fmt.Sprintf("The model provider refused the router's credentials (%s). Tell the operator of this router.", status)}
	case resp.Status >= 400 && resp.Status < 500:
		if msg == "" {
			msg = fmt.Sprintf("The model provider refused the request (%s).", status)
		}
		return &errs.Error{Kind: errs.Upstream, Status: resp.Status, Code: "upstream_error", Message: msg, RetryAfter: resp.RetryAfter}
	default:
		text := fmt.Sprintf("The model provider failed (%s). Try again later.", status)
		if msg != "" {
			text = fmt.Sprintf("The model provider failed (%s): %s", status, msg)
		}
		return &errs.Error{Kind: errs.Upstream, Code: "upstream_error", Message: text, RetryAfter: resp.RetryAfter}
	}
}

// upstreamMessage finds the message in an error answer: OpenAI's
// {"error": {"message"}}, {"error": "..."}, {"message"} (vLLM), {"detail"}
// (FastAPI), or plain text. It is made one printable line, short, and
// without the upstream's key.
func (c *Call) upstreamMessage(contentType string, raw []byte) string {
	var msg string
	var shapes struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
		Detail  json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(raw, &shapes) == nil {
		var nested struct {
			Message string `json:"message"`
		}
		switch {
		case json.Unmarshal(shapes.Error, &nested) == nil && nested.Message != "":
			msg = nested.Message
		case json.Unmarshal(shapes.Error, &msg) == nil && msg != "":
		case shapes.Message != "":
			msg = shapes.Message
		default:
			_ = json.Unmarshal(shapes.Detail, &msg)
		}
	} else if !json.Valid(raw) && !strings.Contains(contentType, "html") {
		msg = string(raw)
	}
	msg = strings.Join(strings.Fields(strings.Map(printable, msg)), " ")
	if key := c.Model.apiKey; key != "" {
		msg = strings.ReplaceAll(msg, key, "[redacted]")
	}
	if r := []rune(msg); len(r) > messageLimit {
		msg = string(r[:messageLimit]) + "…"
	}
	return msg
}

func printable(r rune) rune {
	if unicode.IsPrint(r) {
		return r
	}
	return ' '
}

// upstreamUsage is OpenAI's usage object.
type upstreamUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
}

func (u upstreamUsage) usage() Usage {
	return Usage{Input: max(u.PromptTokens, 0), Output: max(u.CompletionTokens, 0)}
}

// output is a choice's message or a chunk's delta: what is billed as output.
type output struct {
	Content          json.RawMessage `json:"content"`
	Refusal          string          `json:"refusal"`
	Reasoning        string          `json:"reasoning"`         // OpenRouter, vLLM
	ReasoningContent string          `json:"reasoning_content"` // DeepSeek, vLLM
	ToolCalls        []struct {
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	} `json:"tool_calls"`
}

// count adds the output's text to t and reports whether there was any.
func (o output) count(t *tally) bool {
	before := *t
	t.add(contentText(o.Content))
	t.add(o.Refusal)
	t.add(o.Reasoning)
	t.add(o.ReasoningContent)
	for _, call := range o.ToolCalls {
		t.add(call.Function.Name)
		t.add(call.Function.Arguments)
	}
	return *t != before
}

// contentText is the text of a message's content: a string, or the text
// parts of an array of parts.
func contentText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return ""
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}
