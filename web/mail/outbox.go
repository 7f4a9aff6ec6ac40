package mail

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Outbox sends messages through another Sender in the background, one at a
// time and in order. Send only queues: a request answers at once whatever
// the mail server does. A message lost with its process (a crash before it
// was sent) is a reset link the user asks for again.
type Outbox struct {
	next Sender
	log  *slog.Logger

	mu     sync.Mutex
	closed bool
	queue  chan Message
	done   chan struct{}
}

const (
	outboxSize  = 256              // messages waiting; beyond that, Send refuses
	sendTimeout = 30 * time.Second // one message, connection included
)

// ErrOutboxFull and ErrOutboxClosed are Send's refusals.
var (
	ErrOutboxFull   = errors.New("mail: too many messages are waiting to be sent")
	ErrOutboxClosed = errors.New("mail: the server is shutting down")
)

// NewOutbox starts sending through next; Close stops it.
func NewOutbox(next Sender, log *slog.Logger) *Outbox {
	o := &Outbox{next: next, log: log, queue: make(chan Message, outboxSize), done: make(chan struct{})}
	go o.run()
	return o
}

// Send queues m.
func (o *Outbox) Send(_ context.Context, m Message) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return ErrOutboxClosed
	}
	select {
	case o.queue <- m:
		return nil
	default:
		return ErrOutboxFull
	}
}

func (o *Outbox) run() {
	defer close(o.done)
	for m := range o.queue {
		ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
		if err := o.next.Send(ctx, m); err != nil {
			// Neither the recipient nor the text: the text holds a secret.
			o.log.Error("mail not sent", "subject", m.Subject, "error", err)
		}
		cancel()
	}
}

// Close sends what is queued, until ctx ends.
func (o *Outbox) Close(ctx context.Context) error {
	o.mu.Lock()
	if !o.closed {
		o.closed = true
		close(o.queue)
	}
	o.mu.Unlock()
	select {
	case <-o.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
