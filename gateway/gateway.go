// Package gateway forwards OpenAI-compatible inference requests to model
// providers and meters what they produce. Its vocabulary:
//
//   - The catalog is the set of models the router serves (MODELS_FILE), each
//     with its prices, its limits and its provider.
//   - A provider sends one request upstream and hands back the answer's
//     status and body: openai (any OpenAI-compatible HTTP API) or echo
//     (built in, deterministic, no network).
//   - A call is one client request prepared for its model: the body to
//     forward, the estimate of its input and the most it can cost (the hold).
//   - The relay passes a streamed answer to the client event by event while
//     metering it; Read meters an unstreamed one.
//
// The package knows nothing of HTTP servers, accounts or the ledger. A handler
// prepares a call, holds call.Hold, sends it, relays or reads the answer and
// charges call.Cost(result.Usage).
package gateway

import (
	"crypto/rand"
	"strings"
)

const (
	base62      = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	generationN = 24 // 24 × log2(62) ≈ 143 bits
)

// NewGenerationID returns a new inference id: "gen-" and 24 random base62
// characters.
func NewGenerationID() string {
	var b strings.Builder
	b.Grow(len("gen-") + generationN)
	b.WriteString("gen-")
	buf := make([]byte, 32)
	for n := 0; n < generationN; {
		rand.Read(buf) // never fails: crypto/rand aborts the program instead
		for _, c := range buf {
			// Rejection sampling: 248 = 4 × 62, so keeping c < 248 avoids modulo bias.
			if c < 248 && n < generationN {
				b.WriteByte(base62[c%62])
				n++
			}
		}
	}
	return b.String()
}
