package handlers

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/db/money"
	"modelswitch/gateway"
	"modelswitch/web/request"
)

// maxInference bounds one inference from the request to the last byte of
// its answer; the meter drops a hold only past db.HoldTTL, which is longer.
const maxInference = 10 * time.Minute

// heartbeat is how long a quiet stream waits before it writes a comment:
// fasthttp says nothing when a client goes away, so a failed write is how a
// disconnect is seen. The first write after a disconnect may still succeed,
// so the upstream is cancelled within two heartbeats.
const heartbeat = 500 * time.Millisecond

// Inference serves /v1 to proxy keys: the model list, the key itself, and
// chat completions and embeddings forwarded through the gateway. Every
// inference is held before it is forwarded and charged after it answered,
// through the store's meter (db.Meter).
type Inference struct {
	Store   *db.Store
	Catalog *gateway.Catalog
	Log     *slog.Logger

	models     sync.Once // the catalog is fixed at start: /v1/models is encoded once
	modelsJSON []byte

	// Every upstream call runs under base; Drain cancels it and waits for
	// the inferences in flight to be charged.
	start    sync.Once
	base     context.Context
	stop     context.CancelFunc
	inflight sync.WaitGroup
}

func (h *Inference) upstream() context.Context {
	h.start.Do(func() { h.base, h.stop = context.WithCancel(context.Background()) })
	return h.base
}

// Drain ends the inferences still in flight once the server stopped
// waiting for them (a stream can last minutes): each upstream call is
// cancelled, and what it produced until then is charged, before the
// meter's last write. It returns when all are charged or ctx ends.
func (h *Inference) Drain(ctx context.Context) error {
	h.upstream()
	h.stop()
	done := make(chan struct{})
	go func() { h.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("inferences still in flight after the drain: %w", ctx.Err())
	}
}

type pricing struct {
	Input  money.PerMillion `json:"input"`
	Output money.PerMillion `json:"output"`
}

type modelObject struct {
	ID      string  `json:"id"`
	Object  string  `json:"object"`
	Created int64   `json:"created"`
	OwnedBy string  `json:"owned_by"`
	Pricing pricing `json:"pricing"`
}

// Models: GET /v1/models → the configured models, in OpenAI's list shape,
// each with its price in USD per million tokens.
func (h *Inference) Models(c *fiber.Ctx) error {
	h.models.Do(func() {
		models := h.Catalog.Models()
		data := make([]modelObject, len(models))
		for i, m := range models {
			data[i] = modelObject{m.ID, "model", m.Created, m.OwnedBy, pricing{m.InputPrice, m.OutputPrice}}
		}
		h.modelsJSON, _ = c.App().Config().JSONEncoder(fiber.Map{"object": "list", "data": data}) // plain values: cannot fail
	})
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(h.modelsJSON)
}

// Key: GET /v1/key → the calling key's own object, as /api/keys lists it.
func (h *Inference) Key(c *fiber.Ctx) error {
	info := request.Get(c)
	k, err := h.Store.GetKey(c.UserContext(), info.UserID, apikey.Proxy, info.KeyID)
	if err != nil {
		return err
	}
	return c.JSON(newKeyObject(k))
}

// Chat: POST /v1/chat/completions, streamed or not.
func (h *Inference) Chat(c *fiber.Ctx) error { return h.forward(c, gateway.ChatCompletions) }

// Embeddings: POST /v1/embeddings.
func (h *Inference) Embeddings(c *fiber.Ctx) error { return h.forward(c, gateway.Embeddings) }

// forward holds the most the request can cost, sends it upstream and
// answers with the upstream's answer once it has one, so that an upstream
// error keeps its status; then it charges what was produced. A request that
// fails before any output is produced costs nothing.
func (h *Inference) forward(c *fiber.Ctx, endpoint gateway.Endpoint) error {
	call, err := h.Catalog.Prepare(endpoint, c.Body())
	if err != nil {
		return err
	}
	info := request.Get(c)
	// The key as verified: the key cache drops it on any change of its
	// limit or models, so admission needs no query of its own.
	ticket, err := h.Store.Meter().AdmitKey(c.UserContext(), info.Key, call.Model.ID, call.Hold)
	if err != nil {
		return err
	}
	h.inflight.Add(1)
	gen := &generation{call: call, ticket: ticket, id: gateway.NewGenerationID(), start: time.Now(), done: h.inflight.Done}
	c.Set("X-Generation-Id", gen.id)

	// A streamed answer outlives this handler: the upstream call has a
	// context of its own, cancelled when the answer ends, the client goes
	// or the server drains.
	ctx, cancel := context.WithTimeout(h.upstream(), maxInference)
	resp, err := call.Send(ctx)
	if err == nil && resp.Status >= 300 {
		err = call.UpstreamError(resp)
		resp.Body.Close()
	}
	if err != nil {
		cancel()
		gen.settle(gateway.Result{})
		return err
	}
	if !call.Stream {
		defer cancel()
		defer resp.Body.Close()
		res, err := call.Read(resp, 0)
		gen.settle(res)
		if err != nil {
			return err
		}
		c.Set(fiber.HeaderContentType, resp.ContentType)
		return c.Status(resp.Status).Send(res.Body)
	}
	done := request.Stream(c)
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set("X-Accel-Buffering", "no") // nginx: pass events on as they come
	c.Status(resp.Status)
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		defer cancel()
		defer resp.Body.Close()
		gen.settle(call.Relay(ctx, cancel, resp, flusher{w}, gateway.RelayOptions{Heartbeat: heartbeat}))
		done(resp.Status)
	})
	return nil
}

// flusher adapts fasthttp's stream writer to the gateway's.
type flusher struct{ *bufio.Writer }

// generation is one inference on its way through the gateway.
type generation struct {
	call   *gateway.Call
	ticket *db.Ticket
	id     string
	start  time.Time
	done   func() // after it is charged
}

// settle charges what res produced, or releases the hold when nothing was.
// It runs after the client may have gone; it only queues the charge, which
// the meter writes within a fraction of a second and retries until written.
func (g *generation) settle(res gateway.Result) {
	var u *db.Usage
	if res.Produced {
		u = &db.Usage{
			GenerationID: g.id, Model: g.call.Model.ID,
			InputTokens: res.Usage.Input, OutputTokens: res.Usage.Output, Estimated: res.Usage.Estimated,
			Cost: g.call.Cost(res.Usage), Streamed: g.call.Stream, Status: res.Status,
			FinishReason: res.FinishReason, Latency: time.Since(g.start),
		}
	}
	g.ticket.Finish(u)
	g.done()
}
