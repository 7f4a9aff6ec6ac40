package gateway

import (
	"context"
	"io"
	"time"
)

// Provider sends requests to one upstream. Send returns as soon as the
// upstream has answered with a status and headers (echo: at once); the caller
// reads and closes Response.Body.
//
// Send fails with an *errs.Error of kind UpstreamTimeout when the upstream
// does not connect or answer in time, of kind Upstream for any other transport
// failure, and with ctx.Err() when ctx is done.
type Provider interface {
	Send(ctx context.Context, req Request) (*Response, error)
}

// Endpoint is the OpenAI API path a request is for, relative to the base URL.
type Endpoint string

const (
	ChatCompletions Endpoint = "chat/completions"
	Embeddings      Endpoint = "embeddings"
)

// Request is one request for an upstream.
type Request struct {
	Endpoint Endpoint
	Body     []byte // already rewritten for the upstream (Call.Body)
	Stream   bool
}

// Response is an upstream's answer, its body not yet read.
type Response struct {
	Status      int
	ContentType string
	// RetryAfter is the upstream's Retry-After, when it sent one in seconds.
	RetryAfter time.Duration
	Body       io.ReadCloser
}
