package mail_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"io"
	"math/big"
	"mime"
	qp "mime/quotedprintable"
	"net"
	"net/mail"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	mailer "modelswitch/web/mail"
)

// fakeSMTP is a mail server that speaks just enough SMTP (EHLO, STARTTLS,
// AUTH PLAIN, MAIL, RCPT, DATA, QUIT) to receive what a client sends.
type fakeSMTP struct {
	addr     string
	tls      *tls.Config // offers STARTTLS when set
	implicit bool        // TLS from the first byte
	auth     bool        // offers AUTH PLAIN (after STARTTLS when that is offered)
	silent   bool        // never greets

	mu       sync.Mutex
	commands []string // as received, AUTH's argument left out
	mails    chan received
}

type received struct {
	from, user, pass string
	to               []string
	data             string
	tls              bool
}

func startSMTP(t *testing.T, f *fakeSMTP) *fakeSMTP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if f.implicit {
		ln = tls.NewListener(ln, f.tls)
	}
	f.addr, f.mails = ln.Addr().String(), make(chan received, 10)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { f.serve(conn) })
		}
	})
	return f
}

func (f *fakeSMTP) note(cmd string) {
	f.mu.Lock()
	f.commands = append(f.commands, cmd)
	f.mu.Unlock()
}

func (f *fakeSMTP) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.commands...)
}

func (f *fakeSMTP) serve(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if f.silent {
		io.Copy(io.Discard, conn)
		return
	}
	tp := textproto.NewConn(conn)
	secure := f.implicit
	var m received
	tp.PrintfLine("220 fake.test ESMTP")
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		if verb == "AUTH" {
			f.note("AUTH")
		} else {
			f.note(line)
		}
		switch verb {
		case "EHLO":
			ext := []string{"fake.test", "8BITMIME"}
			if f.tls != nil && !secure {
				ext = append(ext, "STARTTLS")
			}
			if f.auth && (secure || f.tls == nil) {
				ext = append(ext, "AUTH PLAIN")
			}
			for i, e := range ext {
				sep := "-"
				if i == len(ext)-1 {
					sep = " "
				}
				tp.PrintfLine("250%s%s", sep, e)
			}
		case "STARTTLS":
			tp.PrintfLine("220 go ahead")
			tc := tls.Server(conn, f.tls)
			if tc.Handshake() != nil {
				return
			}
			conn, tp, secure = tc, textproto.NewConn(tc), true
		case "AUTH":
			mech, resp, _ := strings.Cut(arg, " ")
			raw, err := base64.StdEncoding.DecodeString(resp)
			parts := strings.Split(string(raw), "\x00")
			if mech != "PLAIN" || err != nil || len(parts) != 3 {
				tp.PrintfLine("535 bad credentials")
				continue
			}
			m.user, m.pass = parts[1], parts[2]
			tp.PrintfLine("235 ok")
		case "MAIL":
			m.from = strings.Trim(strings.TrimPrefix(arg, "FROM:"), "<>")
			m.from, _, _ = strings.Cut(m.from, ">")
			tp.PrintfLine("250 ok")
		case "RCPT":
			m.to = append(m.to, strings.Trim(strings.TrimPrefix(arg, "TO:"), "<>"))
			tp.PrintfLine("250 ok")
		case "DATA":
			tp.PrintfLine("354 go ahead")
			data, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			m.data, m.tls = string(data), secure
			f.mails <- m
			m = received{}
			tp.PrintfLine("250 queued")
		case "QUIT":
			tp.PrintfLine("221 bye")
			return
		default:
			tp.PrintfLine("250 ok")
		}
	}
}

// wait returns the next mail the server received.
func (f *fakeSMTP) wait(t *testing.T) received {
	t.Helper()
	select {
	case m := <-f.mails:
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("no mail arrived; the server saw %q", f.seen())
		return received{}
	}
}

// testCert is a self-signed certificate for mail.test and 127.0.0.1, and a
// client config that trusts it.
func testCert(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mail.test"},
		DNSNames: []string{"mail.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		&tls.Config{RootCAs: roots, ServerName: "mail.test"}
}

// parse reads a received message and decodes its quoted-printable text.
func parse(t *testing.T, data string) (*mail.Message, string) {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(data))
	if err != nil {
		t.Fatalf("not a mail message: %v\n%s", err, data)
	}
	if msg.Header.Get("Content-Transfer-Encoding") != "quoted-printable" {
		t.Fatalf("Content-Transfer-Encoding %q", msg.Header.Get("Content-Transfer-Encoding"))
	}
	body, err := io.ReadAll(quotedPrintable(msg.Body))
	if err != nil {
		t.Fatal(err)
	}
	return msg, string(body)
}

const link = "https://modelswitch.test/reset-password?token=AbC-_123xyzAbC-_123xyzAbC-_123xyzAbC-_123xyz9"

var message = mailer.Message{To: "ada@example.com", Subject: "Reset your ModelSwitch password — now",
	Text: "Hello.\n\nChoose a new password here:\n\n" + link + "\n\n.\nA line with only a dot, above.\n"}

func send(t *testing.T, s *mailer.SMTP) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Send(ctx, message)
}

func TestMailSMTPDeliversTheMessage(t *testing.T) {
	srv := startSMTP(t, &fakeSMTP{})
	s, err := mailer.NewSMTP("smtp://" + srv.addr + "?from=ModelSwitch+%3Cnoreply%40modelswitch.test%3E")
	if err != nil {
		t.Fatal(err)
	}
	if err := send(t, s); err != nil {
		t.Fatal(err)
	}
	m := srv.wait(t)
	if m.from != "noreply@modelswitch.test" || len(m.to) != 1 || m.to[0] != "ada@example.com" || m.user != "" {
		t.Fatalf("envelope: %+v", m)
	}
	msg, body := parse(t, m.data)
	subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil || subject != message.Subject {
		t.Fatalf("Subject %q (%v)", msg.Header.Get("Subject"), err)
	}
	if msg.Header.Get("From") != `"ModelSwitch" <noreply@modelswitch.test>` || msg.Header.Get("To") != "<ada@example.com>" ||
		msg.Header.Get("Message-ID") == "" || !strings.HasPrefix(msg.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("headers: %v", msg.Header)
	}
	if _, err := msg.Header.Date(); err != nil {
		t.Fatalf("Date: %v", err)
	}
	body = strings.ReplaceAll(body, "\r\n", "\n")
	if body != message.Text {
		t.Fatalf("body %q, want %q", body, message.Text)
	}
	if !strings.Contains(body, "\n"+link+"\n") {
		t.Fatalf("the link is not on a line of its own: %q", body)
	}
	if got := srv.seen(); got[len(got)-1] != "QUIT" {
		t.Fatalf("the client did not QUIT: %q", got)
	}
}

func TestMailSMTPUsesSTARTTLSBeforeCredentials(t *testing.T) {
	serverTLS, clientTLS := testCert(t)
	srv := startSMTP(t, &fakeSMTP{tls: serverTLS, auth: true})
	s, err := mailer.NewSMTP("smtp://mailer:p%40ss%20word@" + srv.addr + "?from=noreply@modelswitch.test")
	if err != nil {
		t.Fatal(err)
	}
	s.TLS = clientTLS
	if err := send(t, s); err != nil {
		t.Fatal(err)
	}
	m := srv.wait(t)
	if !m.tls || m.user != "mailer" || m.pass != "p@ss word" {
		t.Fatalf("tls %v, credentials %q %q", m.tls, m.user, m.pass)
	}
	got := strings.Join(srv.seen(), "|")
	if !strings.Contains(got, "STARTTLS|EHLO localhost|AUTH|MAIL") {
		t.Fatalf("commands %s: want STARTTLS, EHLO again, then AUTH", got)
	}
}

func TestMailSMTPImplicitTLS(t *testing.T) {
	serverTLS, clientTLS := testCert(t)
	srv := startSMTP(t, &fakeSMTP{tls: serverTLS, implicit: true, auth: true})
	s, err := mailer.NewSMTP("smtps://mailer:secret@" + srv.addr + "?from=noreply@modelswitch.test")
	if err != nil || !s.ImplicitTLS {
		t.Fatal(s, err)
	}
	s.TLS = clientTLS
	if err := send(t, s); err != nil {
		t.Fatal(err)
	}
	if m := srv.wait(t); !m.tls || m.pass != "secret" {
		t.Fatalf("tls %v, password %q", m.tls, m.pass)
	}
	if got := srv.seen(); strings.Contains(strings.Join(got, "|"), "STARTTLS") {
		t.Fatalf("STARTTLS inside TLS: %q", got)
	}
}

func TestMailSMTPNeverSendsCredentialsInTheClear(t *testing.T) {
	srv := startSMTP(t, &fakeSMTP{auth: true}) // no STARTTLS
	s, err := mailer.NewSMTP("smtp://mailer:secret@mail.test:25?from=noreply@modelswitch.test")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = srv.addr // mail.test, reached on loopback: not localhost to net/smtp
	err = send(t, s)
	if err == nil || !strings.Contains(err.Error(), "AUTH") {
		t.Fatalf("error %v, want AUTH refused over an unencrypted connection", err)
	}
	for _, c := range srv.seen() {
		if c == "AUTH" || strings.HasPrefix(c, "MAIL") {
			t.Fatalf("the client went on without TLS: %q", srv.seen())
		}
	}
}

func TestMailSMTPGivesUpAtTheDeadline(t *testing.T) {
	srv := startSMTP(t, &fakeSMTP{silent: true})
	s, err := mailer.NewSMTP("smtp://" + srv.addr + "?from=noreply@modelswitch.test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := s.Send(ctx, message); err == nil {
		t.Fatal("a server that never answers took the mail")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Send took %v past a 200 ms deadline", d)
	}
}

func TestMailSMTPRefusesHeaderInjection(t *testing.T) {
	srv := startSMTP(t, &fakeSMTP{})
	s, err := mailer.NewSMTP("smtp://" + srv.addr + "?from=noreply@modelswitch.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []mailer.Message{
		{To: "ada@example.com\r\nBcc: eve@example.com", Subject: "x", Text: "x"},
		{To: "Ada <ada@example.com>", Subject: "x", Text: "x"},
		{To: "ada@example.com", Subject: "x\r\nBcc: eve@example.com", Text: "x"},
	} {
		if err := s.Send(context.Background(), m); err == nil {
			t.Errorf("sent %+v", m)
		}
	}
	if got := srv.seen(); len(got) != 0 {
		t.Fatalf("a refused message reached the server: %q", got)
	}
}

func TestMailNewSMTP(t *testing.T) {
	s, err := mailer.NewSMTP("smtp://user:pw@smtp.example.com?from=noreply@example.com")
	if err != nil || s.Addr != "smtp.example.com:587" || s.Host != "smtp.example.com" || s.Username != "user" ||
		s.Password != "pw" || s.From.Address != "noreply@example.com" || s.ImplicitTLS {
		t.Fatalf("%+v %v", s, err)
	}
	if s, err := mailer.NewSMTP("smtps://smtp.example.com?from=noreply@example.com"); err != nil || s.Addr != "smtp.example.com:465" || !s.ImplicitTLS {
		t.Fatalf("%+v %v", s, err)
	}
	for _, bad := range []string{
		"http://user:hunter2@smtp.example.com?from=noreply@example.com",
		"smtp://user:hunter2@smtp.example.com",
		"smtp://user:hunter2@smtp.example.com?from=not-an-address",
		"smtp://user:hunter2@smtp.example.com?from=noreply@example.com&tls=maybe",
		"smtp://user:hunter2@?from=noreply@example.com",
		"smtp://user:hunter2@smtp.example.com:bad port?from=noreply@example.com",
		"::hunter2",
	} {
		_, err := mailer.NewSMTP(bad)
		if err == nil {
			t.Errorf("%s: accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error quotes the password: %v", err)
		}
	}
}

// quotedPrintable decodes a quoted-printable body.
func quotedPrintable(r io.Reader) io.Reader { return qp.NewReader(bufio.NewReader(r)) }
