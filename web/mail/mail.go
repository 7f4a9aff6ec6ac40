// Package mail sends the service's mail: password reset links. A Sender
// delivers one message. SMTP speaks to the mail server of SMTP_URL; Log
// writes each message to the server log instead (development); Unsent sends
// nothing (production without SMTP_URL); Outbox sends in the background, so
// that no request waits on a mail server and no answer's timing tells
// whether a mail went out.
package mail

import (
	"context"
	"errors"
	"log/slog"
	"strings"
)

// Message is one plain-text mail to one recipient.
type Message struct {
	To      string // an address: name@example.com
	Subject string
	Text    string
}

// Sender delivers messages.
type Sender interface {
	Send(ctx context.Context, m Message) error
}

// New returns the sender for SMTP_URL: SMTP when it is set; otherwise Log
// in development and Unsent in production, where a reset link must never
// reach the log.
func New(smtpURL string, production bool, log *slog.Logger) (Sender, error) {
	switch {
	case smtpURL != "":
		return NewSMTP(smtpURL)
	case production:
		return Unsent{}, nil
	}
	return Log{Log: log}, nil
}

// Log writes each message to the server log instead of sending it, for
// development without SMTP_URL: its line is the only one that ever holds a
// reset link.
type Log struct{ Log *slog.Logger }

func (l Log) Send(_ context.Context, m Message) error {
	l.Log.Info("mail not sent (SMTP_URL is not set); it reads", "to", m.To, "subject", m.Subject, "text", m.Text)
	return nil
}

// ErrNotConfigured is Unsent's answer.
var ErrNotConfigured = errors.New("mail: SMTP_URL is not set, so no mail is sent")

// Unsent sends nothing: production without SMTP_URL.
type Unsent struct{}

func (Unsent) Send(context.Context, Message) error { return ErrNotConfigured }

// checkHeader refuses a header value that could start another header.
func checkHeader(name, value string) error {
	if strings.ContainsAny(value, "\r\n\x00") {
		return errors.New("mail: the " + name + " header holds a line break")
	}
	return nil
}
