package mail

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/url"
	"strings"
	"time"
)

// SMTP sends through a mail server: smtp://user:pass@host:587?from=… with
// STARTTLS whenever the server offers it, or smtps://…:465 with TLS from the
// first byte. Credentials are only ever sent over TLS (or to localhost), as
// net/smtp's PLAIN auth insists.
type SMTP struct {
	Addr     string // host:port
	Host     string // the server's name, checked against its certificate
	From     *mail.Address
	Username string
	Password string
	// ImplicitTLS speaks TLS from the first byte (smtps://).
	ImplicitTLS bool
	// TLS, when set, replaces the default of the system's roots and Host
	// as the server name.
	TLS *tls.Config
}

// NewSMTP reads an SMTP_URL. Its errors never quote the URL, which may hold
// a password.
func NewSMTP(raw string) (*SMTP, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("SMTP_URL is not a URL: use smtp://user:password@host:587?from=noreply@example.com")
	}
	s := &SMTP{Host: u.Hostname()}
	port := u.Port()
	switch u.Scheme {
	case "smtp":
		port = cmp.Or(port, "587")
	case "smtps":
		port = cmp.Or(port, "465")
		s.ImplicitTLS = true
	default:
		return nil, errors.New("SMTP_URL must start with smtp:// (STARTTLS when offered) or smtps:// (TLS)")
	}
	if s.Host == "" {
		return nil, errors.New("SMTP_URL names no host: use smtp://user:password@host:587?from=noreply@example.com")
	}
	s.Addr = net.JoinHostPort(s.Host, port)
	if u.User != nil {
		s.Username = u.User.Username()
		s.Password, _ = u.User.Password()
	}
	q := u.Query()
	for k := range q {
		if k != "from" {
			return nil, fmt.Errorf("SMTP_URL: unknown parameter %q; the only one is from", k)
		}
	}
	if q.Get("from") == "" {
		return nil, errors.New("SMTP_URL needs the sender's address: ?from=noreply@example.com")
	}
	if s.From, err = mail.ParseAddress(q.Get("from")); err != nil {
		return nil, errors.New("SMTP_URL: from is not an email address, like noreply@example.com or ModelSwitch <noreply@example.com>")
	}
	return s, nil
}

func (s *SMTP) tlsConfig() *tls.Config {
	if s.TLS != nil {
		return s.TLS
	}
	return &tls.Config{ServerName: s.Host, MinVersion: tls.VersionTLS12}
}

// Send delivers m within ctx's deadline.
func (s *SMTP) Send(ctx context.Context, m Message) error {
	body, err := s.compose(m, time.Now())
	if err != nil {
		return err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("mail: connect to %s: %w", s.Addr, err)
	}
	defer conn.Close()
	// net/smtp knows no context: the deadline and a cancel reach it
	// through the connection.
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if s.ImplicitTLS {
		conn = tls.Client(conn, s.tlsConfig())
	}
	c, err := smtp.NewClient(conn, s.Host)
	if err != nil {
		return fmt.Errorf("mail: greeting from %s: %w", s.Addr, err)
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		return fmt.Errorf("mail: EHLO: %w", err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok && !s.ImplicitTLS {
		if err := c.StartTLS(s.tlsConfig()); err != nil {
			return fmt.Errorf("mail: STARTTLS: %w", err)
		}
	}
	if s.Username != "" {
		if ok, _ := c.Extension("AUTH"); !ok {
			return errors.New("mail: SMTP_URL has credentials but the server offers no AUTH")
		}
		if err := c.Auth(smtp.PlainAuth("", s.Username, s.Password, s.Host)); err != nil {
			return fmt.Errorf("mail: AUTH: %w", err)
		}
	}
	if err := c.Mail(s.From.Address); err != nil {
		return fmt.Errorf("mail: MAIL FROM: %w", err)
	}
	if err := c.Rcpt(m.To); err != nil {
		return fmt.Errorf("mail: RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("mail: DATA: %w", err)
	}
	if _, err := w.Write(body); err != nil {
		return fmt.Errorf("mail: DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("mail: DATA: %w", err)
	}
	return c.Quit()
}

// compose writes m as an RFC 5322 message, its text quoted-printable.
func (s *SMTP) compose(m Message, now time.Time) ([]byte, error) {
	to, err := mail.ParseAddress(m.To)
	if err != nil || to.Address != m.To {
		return nil, errors.New("mail: the recipient is not one plain address")
	}
	if err := checkHeader("Subject", m.Subject); err != nil {
		return nil, err
	}
	id := make([]byte, 16)
	rand.Read(id)
	domain := s.From.Address[strings.LastIndexByte(s.From.Address, '@')+1:]
	var b bytes.Buffer
	for _, h := range [][2]string{
		{"From", s.From.String()},
		{"To", to.String()},
		{"Subject", mime.QEncoding.Encode("utf-8", m.Subject)},
		{"Date", now.Format(time.RFC1123Z)},
		{"Message-ID", "<" + hex.EncodeToString(id) + "@" + domain + ">"},
		{"MIME-Version", "1.0"},
		{"Content-Type", `text/plain; charset="utf-8"`},
		{"Content-Transfer-Encoding", "quoted-printable"},
	} {
		b.WriteString(h[0] + ": " + h[1] + "\r\n")
	}
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	qp.Write([]byte(m.Text)) // line breaks become CRLF
	qp.Close()
	return b.Bytes(), nil
}
