// Command fakeupstream is an OpenAI-compatible server that answers at once,
// for measuring the gateway against an upstream of known speed:
//
//	fakeupstream -addr 127.0.0.1:9100 [-delay 20ms]
//
// POST /v1/chat/completions answers a fixed completion with usage, streamed
// (ten content chunks and a usage chunk) when the request says "stream": true,
// after delay.
package main

import (
	"bytes"
	"flag"
	"io"
	"log"
	"net/http"
	"time"
)

const completion = `{"id":"chatcmpl-fake","object":"chat.completion","created":1,"model":"fake","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the fake upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}`

const chunk = "data: {\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"fake\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"},\"finish_reason\":null}]}\n\n"

const usageChunk = "data: {\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"fake\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":10,\"total_tokens\":22}}\n\ndata: [DONE]\n\n"

func main() {
	addr := flag.String("addr", "127.0.0.1:9100", "address to listen on")
	delay := flag.Duration("delay", 0, "how long to wait before answering")
	flag.Parse()
	http.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		time.Sleep(*delay) // a model at work
		if !bytes.Contains(body, []byte(`"stream":true`)) && !bytes.Contains(body, []byte(`"stream": true`)) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, completion)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		f := w.(http.Flusher)
		for range 10 {
			io.WriteString(w, chunk)
			f.Flush()
		}
		io.WriteString(w, usageChunk)
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}
