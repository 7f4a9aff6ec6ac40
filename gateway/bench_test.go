package gateway

import (
	"bytes"
	"io"
	"testing"
)

// The gateway's own work on each inference, apart from the network: reading
// the client's request, and metering an unstreamed answer. make bench
// measures the whole path.

func BenchmarkPrepare(b *testing.B) {
	c := testCatalog(b)
	body := []byte(`{"model":"test/gpt","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}],"max_tokens":100}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Prepare(ChatCompletions, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRead(b *testing.B) {
	call, err := testCatalog(b).Prepare(ChatCompletions, []byte(`{"model":"test/gpt","messages":[{"role":"user","content":"Say hello."}]}`))
	if err != nil {
		b.Fatal(err)
	}
	answer := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-up","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}`)
	b.ReportAllocs()
	for b.Loop() {
		res, err := call.Read(&Response{Status: 200, Body: io.NopCloser(bytes.NewReader(answer))}, 0)
		if err != nil || res.Usage.Output != 9 {
			b.Fatal(err, res.Usage)
		}
	}
}
