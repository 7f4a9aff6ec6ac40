package mail_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	mailer "modelswitch/web/mail"
)

// logBuffer is a log that tests can read while it is written.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newLog() (*logBuffer, *slog.Logger) {
	var b logBuffer
	return &b, slog.New(slog.NewJSONHandler(&b, nil))
}

func TestMailNewPicksTheSender(t *testing.T) {
	_, log := newLog()
	for _, c := range []struct {
		url        string
		production bool
		want       string
	}{
		{"", false, "mail.Log"},
		{"", true, "mail.Unsent"},
		{"smtp://mail.example.com?from=noreply@example.com", true, "*mail.SMTP"},
	} {
		s, err := mailer.New(c.url, c.production, log)
		if err != nil {
			t.Fatal(err)
		}
		if got := typeName(s); got != c.want {
			t.Errorf("New(%q, %v) is a %s, want %s", c.url, c.production, got, c.want)
		}
	}
	if _, err := mailer.New("smtp://mail.example.com", false, log); err == nil {
		t.Error("an SMTP_URL without from was taken")
	}
	if err := (mailer.Unsent{}).Send(context.Background(), message); !errors.Is(err, mailer.ErrNotConfigured) {
		t.Errorf("Unsent: %v", err)
	}
}

func typeName(s mailer.Sender) string {
	switch s.(type) {
	case mailer.Log:
		return "mail.Log"
	case mailer.Unsent:
		return "mail.Unsent"
	case *mailer.SMTP:
		return "*mail.SMTP"
	}
	return "something else"
}

func TestMailLogWritesTheMessageInOneInfoLine(t *testing.T) {
	buf, log := newLog()
	if err := (mailer.Log{Log: log}).Send(context.Background(), message); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `"level":"INFO"`) || !strings.Contains(lines[0], link) ||
		!strings.Contains(lines[0], message.To) {
		t.Fatalf("log: %q", lines)
	}
}

// recorder is a Sender that keeps what it is given, and fails when told.
type recorder struct {
	mu   sync.Mutex
	got  []mailer.Message
	fail error
	hold chan struct{} // when set, each Send waits for it
}

func (r *recorder) Send(ctx context.Context, m mailer.Message) error {
	if r.hold != nil {
		<-r.hold
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, m)
	return r.fail
}

func (r *recorder) sent() []mailer.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]mailer.Message(nil), r.got...)
}

func TestMailOutboxSendsInOrderAndDrainsOnClose(t *testing.T) {
	_, log := newLog()
	r := &recorder{hold: make(chan struct{})}
	o := mailer.NewOutbox(r, log)
	for _, to := range []string{"a@example.com", "b@example.com", "c@example.com"} {
		// Queued at once although the sender is stuck.
		if err := o.Send(context.Background(), mailer.Message{To: to, Subject: "s", Text: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(r.sent()); n != 0 {
		t.Fatalf("%d sent while the sender was held", n)
	}
	close(r.hold)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := o.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, m := range r.sent() {
		order = append(order, m.To)
	}
	if strings.Join(order, ",") != "a@example.com,b@example.com,c@example.com" {
		t.Fatalf("sent %v", order)
	}
	if err := o.Send(context.Background(), message); !errors.Is(err, mailer.ErrOutboxClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if err := o.Close(ctx); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
}

func TestMailOutboxLogsFailuresWithoutTheText(t *testing.T) {
	buf, log := newLog()
	r := &recorder{fail: errors.New("550 mailbox unavailable")}
	o := mailer.NewOutbox(r, log)
	if err := o.Send(context.Background(), message); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := o.Close(ctx); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "550 mailbox unavailable") || !strings.Contains(out, `"level":"ERROR"`) {
		t.Fatalf("the failure is not logged: %q", out)
	}
	if strings.Contains(out, "token=") || strings.Contains(out, message.To) {
		t.Fatalf("the log holds the text or the recipient: %q", out)
	}
}

func TestMailOutboxRefusesWhenFull(t *testing.T) {
	_, log := newLog()
	r := &recorder{hold: make(chan struct{})}
	o := mailer.NewOutbox(r, log)
	defer func() {
		close(r.hold)
		o.Close(context.Background())
	}()
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		err = o.Send(context.Background(), message)
	}
	if !errors.Is(err, mailer.ErrOutboxFull) {
		t.Fatalf("1000 messages behind a stuck server: %v", err)
	}
}
