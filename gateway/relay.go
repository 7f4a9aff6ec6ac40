package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"time"

	"modelswitch/errs"
)

// Flusher is the client's side of a stream: each event is written, then
// flushed. An error from either means the client went away.
type Flusher interface {
	io.Writer
	Flush() error
}

// RelayOptions tune Relay.
type RelayOptions struct {
	// Heartbeat is how long the client may go without a byte before it is
	// sent an SSE comment, so that proxies keep the connection: default 1s.
	Heartbeat time.Duration
}

const (
	// maxEventLine caps one line of the upstream's stream.
	maxEventLine = 4 << 20
	// drainWait is how long Relay waits, after [DONE], for the upstream's
	// body to end, so that its connection goes back to the pool.
	drainWait = 250 * time.Millisecond
)

var keepAlive = []byte(": keep-alive\n\n")

// event is one Server-Sent Event of the upstream's stream, or its failure.
type event struct {
	raw  []byte // the event's lines, ended by "\n", then the blank line
	data string // its data lines joined by "\n"
	done bool   // data: [DONE]
	err  error  // the stream failed before [DONE]; no event
}

// Relay passes a 2xx streamed answer to w event by event, as the upstream
// sends them, while metering it. It hides the usage chunk that Prepare asked
// for when the client did not ask for it. When writing to w fails or ctx is
// done, it calls cancel, which must end the upstream request, and returns at
// once. When the upstream breaks off, it sends the client an SSE error event.
// The caller closes resp.Body afterwards.
func (c *Call) Relay(ctx context.Context, cancel context.CancelFunc, resp *Response, w Flusher, opt RelayOptions) Result {
	if opt.Heartbeat <= 0 {
		opt.Heartbeat = time.Second
	}
	events := make(chan event)
	stop := make(chan struct{})
	defer close(stop)
	go readEvents(resp.Body, events, stop)

	m := meter{call: c}
	heartbeat := time.NewTimer(opt.Heartbeat)
	defer heartbeat.Stop()
	send := func(b []byte) bool {
		if _, err := w.Write(b); err != nil || w.Flush() != nil {
			cancel()
			return false
		}
		heartbeat.Reset(opt.Heartbeat)
		return true
	}
	for {
		select {
		case <-ctx.Done():
			cancel()
			return m.result(StatusClientDisconnected)
		case <-heartbeat.C:
			if !send(keepAlive) {
				return m.result(StatusClientDisconnected)
			}
		case ev := <-events:
			if ev.err != nil {
				if ctx.Err() != nil { // the read failed because the client went away
					cancel()
					return m.result(StatusClientDisconnected)
				}
				send(upstreamErrorEvent(ev.err))
				return m.result(StatusUpstreamError)
			}
			if m.count(ev) {
				continue
			}
			if !send(ev.raw) {
				return m.result(StatusClientDisconnected)
			}
			if ev.done {
				select { // events is closed once the body has ended
				case <-events:
				case <-time.After(drainWait):
				}
				return m.result(StatusCompleted)
			}
		}
	}
}

// readEvents sends the events of body until [DONE], the end of body or stop,
// then closes events. After [DONE] it reads body to its end.
func readEvents(body io.Reader, events chan<- event, stop <-chan struct{}) {
	defer close(events)
	send := func(ev event) bool {
		select {
		case events <- ev:
			return true
		case <-stop:
			return false
		}
	}
	lines := bufio.NewScanner(body)
	lines.Buffer(make([]byte, 0, 64<<10), maxEventLine)
	var raw bytes.Buffer
	var data []string
	next := func() event {
		ev := event{raw: append(bytes.Clone(raw.Bytes()), '\n'), data: strings.Join(data, "\n")}
		ev.done = data != nil && strings.TrimSpace(ev.data) == "[DONE]"
		raw.Reset()
		data = nil
		return ev
	}
	for lines.Scan() {
		line := lines.Bytes()
		if len(line) > 0 {
			raw.Write(line)
			raw.WriteByte('\n')
			if value, ok := strings.CutPrefix(string(line), "data"); ok && (value == "" || value[0] == ':') {
				data = append(data, strings.TrimPrefix(strings.TrimPrefix(value, ":"), " "))
			}
			continue
		}
		if raw.Len() == 0 {
			continue
		}
		ev := next()
		if !send(ev) {
			return
		}
		if ev.done {
			_, _ = io.Copy(io.Discard, body)
			return
		}
	}
	// An event cut short by the end of the body still counts: some servers
	// end with "data: [DONE]\n" and no blank line.
	if raw.Len() > 0 {
		if ev := next(); !send(ev) || ev.done {
			return
		}
	}
	err := lines.Err()
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	send(event{err: err})
}

// upstreamErrorEvent tells the client, in OpenAI's shape, that the stream
// broke off.
func upstreamErrorEvent(err error) []byte {
	e, ok := errs.As(err)
	if !ok {
		e = &errs.Error{Code: "upstream_error", Message: "The model provider's stream broke off before its end. Try again."}
	}
	body, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message": e.Message, "type": "api_error", "code": e.Code, "param": nil,
	}})
	return append(append([]byte("data: "), body...), "\n\n"...)
}

// meter keeps account of a stream as it passes.
type meter struct {
	call         *Call
	usage        *upstreamUsage // the latest the upstream sent
	produced     tally          // the text of the deltas, for an estimate
	gotOutput    bool           // any output or usage came
	finishReason string
}

// count meters one event and reports whether the client must not see it:
// the usage-only chunk it did not ask for.
func (m *meter) count(ev event) (hidden bool) {
	if ev.done || ev.data == "" {
		return false
	}
	var chunk struct {
		Choices []struct {
			Delta        output `json:"delta"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage *upstreamUsage `json:"usage"`
	}
	if json.Unmarshal([]byte(ev.data), &chunk) != nil {
		return false
	}
	for _, choice := range chunk.Choices {
		if choice.Delta.count(&m.produced) {
			m.gotOutput = true
		}
		if choice.FinishReason != "" {
			m.finishReason = choice.FinishReason
		}
	}
	if chunk.Usage != nil {
		m.usage, m.gotOutput = chunk.Usage, true
	}
	return chunk.Usage != nil && len(chunk.Choices) == 0 && !m.call.IncludeUsage
}

func (m *meter) result(status string) Result {
	r := Result{Status: status, Produced: m.gotOutput, FinishReason: m.finishReason}
	if m.usage != nil {
		r.Usage = m.usage.usage()
	} else {
		r.Usage = Usage{Input: m.call.InputTokens, Output: m.produced.tokens(), Estimated: true}
	}
	return r
}
