package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"modelswitch/errs"
)

// openAI is any OpenAI-compatible HTTP API: OpenAI, vLLM, Ollama, Groq, ...
type openAI struct {
	baseURL   string // without a trailing "/"
	apiKey    string // "" sends no Authorization
	idle      time.Duration
	transport *http.Transport
}

func newOpenAI(baseURL, apiKey string, t Timeouts) *openAI {
	dialer := &net.Dialer{Timeout: t.Connect, KeepAlive: 30 * time.Second}
	return &openAI{
		baseURL: baseURL,
		apiKey:  apiKey,
		idle:    t.Idle,
		transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           dialer.DialContext,
			ForceAttemptHTTP2:     true, // a custom dialer turns HTTP/2 off unless asked
			TLSHandshakeTimeout:   t.Connect,
			ResponseHeaderTimeout: t.FirstByte,
			MaxIdleConnsPerHost:   256, // the default, 2, would reconnect under any real concurrency
			IdleConnTimeout:       90 * time.Second,
		},
	}
}

var (
	errTimeout = &errs.Error{Kind: errs.UpstreamTimeout, Code: "upstream_timeout",
		Message: "The model provider did not answer in time. Try again later."}
	errUnreachable = &errs.Error{Kind: errs.Upstream, Code: "upstream_error",
		Message: "The model provider could not be reached. Try again later."}
	errStalled = &errs.Error{Kind: errs.UpstreamTimeout, Code: "upstream_timeout",
		Message: "The model provider stopped sending its answer. Try again later."}
)

func (p *openAI) Send(ctx context.Context, req Request) (*Response, error) {
	// Cancelled by the body's idle timer or Close, as well as by the caller.
	reqCtx, cancel := context.WithCancel(ctx)
	hreq, err := http.NewRequestWithContext(reqCtx, http.MethodPost, p.baseURL+"/"+string(req.Endpoint), bytes.NewReader(req.Body))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("gateway: building the upstream request: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	if p.apiKey != "" {
		hreq.Header.Set("Authorization", "Bearer "+p.apiKey)
	}
	if req.Stream {
		hreq.Header.Set("Accept", "text/event-stream")
		// A compressed stream could be held back by the decompressor.
		hreq.Header.Set("Accept-Encoding", "identity")
	} else {
		hreq.Header.Set("Accept", "application/json")
	}
	resp, err := p.transport.RoundTrip(hreq)
	if err != nil {
		cancel()
		var netErr net.Error
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			return nil, errTimeout // the caller's bound on the whole inference
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.As(err, &netErr) && netErr.Timeout():
			return nil, errTimeout
		default:
			return nil, errUnreachable
		}
	}
	return &Response{
		Status:      resp.StatusCode,
		ContentType: resp.Header.Get("Content-Type"),
		RetryAfter:  retryAfter(resp.Header.Get("Retry-After")),
		Body:        newIdleBody(resp.Body, p.idle, cancel),
	}, nil
}

// retryAfter reads a Retry-After in seconds; dates are rare from APIs and ignored.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	s, err := strconv.Atoi(v)
	if err != nil || s <= 0 {
		return 0
	}
	return time.Duration(s) * time.Second
}

// idleBody fails a read, and cancels the upstream request, when no byte has
// come for idle.
type idleBody struct {
	body     io.ReadCloser
	idle     time.Duration
	timer    *time.Timer
	timedOut atomic.Bool
	cancel   context.CancelFunc
}

func newIdleBody(body io.ReadCloser, idle time.Duration, cancel context.CancelFunc) *idleBody {
	b := &idleBody{body: body, idle: idle, cancel: cancel}
	b.timer = time.AfterFunc(idle, func() {
		b.timedOut.Store(true)
		cancel()
	})
	b.timer.Stop()
	return b
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.idle)
	n, err := b.body.Read(p)
	b.timer.Stop()
	if err != nil && err != io.EOF && b.timedOut.Load() {
		return n, errStalled
	}
	return n, err
}

// Close cancels the request first, so that it never waits on a read in flight.
func (b *idleBody) Close() error {
	b.timer.Stop()
	b.cancel()
	return b.body.Close()
}
