// Package session keeps the dashboard's browser sessions: a gorilla/sessions
// cookie, signed and encrypted with keys derived from SECRET_KEY, that holds
// a CSRF token and the id of a server-side session row. The row makes a
// session revocable at once on every replica; the cookie makes the CSRF token
// valid on every replica without shared memory.
package session

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gorilla/sessions"

	"modelswitch/db"
	"modelswitch/web/request"
	"modelswitch/web/session/csrf"
)

const (
	cookieName = "modelswitch_session"
	// IdleTimeout ends a session nobody used for this long.
	IdleTimeout = time.Hour
	// AbsoluteTimeout ends every session this long after sign-in.
	AbsoluteTimeout = 12 * time.Hour
	// CSRFField and CSRFHeader carry the token on forms and htmx requests.
	CSRFField  = "_csrf"
	CSRFHeader = "X-CSRF-Token"
)

// Manager loads, starts and ends browser sessions.
type Manager struct {
	cookies *sessions.CookieStore
	store   *db.Store
}

// New returns a manager; secure marks cookies Secure (production).
func New(hashKey, blockKey []byte, secure bool, store *db.Store) *Manager {
	cookies := sessions.NewCookieStore(hashKey, blockKey)
	cookies.MaxAge(int(AbsoluteTimeout.Seconds()))
	cookies.Options.Path = "/"
	cookies.Options.HttpOnly = true
	cookies.Options.Secure = secure
	cookies.Options.SameSite = http.SameSiteLaxMode
	return &Manager{cookies: cookies, store: store}
}

// Load reads the session cookie, checks the server-side session, and gives
// every visitor a CSRF token before their first form.
func (m *Manager) Load(c *fiber.Ctx) error {
	cookie, _ := m.cookies.New(cookieRequest(c), cookieName) // a bad cookie yields a new session
	info := request.Get(c)
	info.CSRF, _ = cookie.Values["csrf"].(string)
	sid, _ := cookie.Values["sid"].(string)
	dirty := false
	if info.CSRF == "" {
		info.CSRF = randomToken()
		cookie.Values["csrf"] = info.CSRF
		dirty = true
	}
	if sid != "" {
		userID, err := m.store.TouchSession(c.UserContext(), sid, db.BrowserSession, IdleTimeout)
		switch {
		case err == db.ErrSessionEnded:
			delete(cookie.Values, "sid")
			dirty = true
		case err != nil:
			return err
		default:
			info.UserID, info.SessionID = userID, sid
			info.Email, _ = cookie.Values["email"].(string)
		}
	}
	if dirty {
		if err := m.save(c, cookie); err != nil {
			return err
		}
	}
	return c.Next()
}

// CheckCSRF refuses state-changing requests without the session's token.
func CheckCSRF(c *fiber.Ctx) error {
	switch c.Method() {
	case fiber.MethodGet, fiber.MethodHead, fiber.MethodOptions:
		return c.Next()
	}
	sent := c.Get(CSRFHeader)
	if sent == "" {
		sent = c.FormValue(CSRFField)
	}
	// Pages show the token masked (views, csrf.Mask).
	if !csrf.Matches(sent, request.Get(c).CSRF) {
		return ErrCSRF
	}
	return c.Next()
}

// ErrCSRF answers a request whose CSRF token is missing or wrong.
var ErrCSRF = fiber.NewError(fiber.StatusForbidden, "This form has expired. Reload the page and try again.")

// SignIn starts a fresh session for the user: a new server-side id and a new
// CSRF token, so that nothing from before sign-in carries over.
func (m *Manager) SignIn(c *fiber.Ctx, user db.User) error {
	info := request.Get(c)
	if info.SessionID != "" {
		if err := m.store.DeleteSession(c.UserContext(), info.SessionID); err != nil {
			return err
		}
	}
	sess, err := m.store.CreateSession(c.UserContext(), user.ID, db.BrowserSession, AbsoluteTimeout)
	if err != nil {
		return err
	}
	cookie := sessions.NewSession(m.cookies, cookieName)
	cookie.Options = m.options()
	cookie.Values["sid"] = sess.ID
	cookie.Values["email"] = user.Email
	cookie.Values["csrf"] = randomToken()
	info.CSRF, info.UserID, info.Email, info.SessionID = cookie.Values["csrf"].(string), user.ID, user.Email, sess.ID
	return m.save(c, cookie)
}

// SignOut ends this session at once; everywhere also ends every other
// session of the account, API tokens included.
func (m *Manager) SignOut(c *fiber.Ctx, everywhere bool) error {
	info := request.Get(c)
	var err error
	switch {
	case everywhere && info.UserID != 0:
		err = m.store.DeleteUserSessions(c.UserContext(), info.UserID)
	case info.SessionID != "":
		err = m.store.DeleteSession(c.UserContext(), info.SessionID)
	}
	if err != nil {
		return err
	}
	cookie := sessions.NewSession(m.cookies, cookieName)
	cookie.Options = m.options()
	cookie.Options.MaxAge = -1
	info.CSRF, info.UserID, info.Email, info.SessionID = "", 0, "", ""
	return m.save(c, cookie)
}

// options copies the store's cookie options, so one cookie's changes stay its own.
func (m *Manager) options() *sessions.Options {
	o := *m.cookies.Options
	return &o
}

func (m *Manager) save(c *fiber.Ctx, cookie *sessions.Session) error {
	w := &headerWriter{header: http.Header{}}
	if err := m.cookies.Save(cookieRequest(c), w, cookie); err != nil {
		return err
	}
	for _, v := range w.header.Values("Set-Cookie") {
		c.Response().Header.Add(fiber.HeaderSetCookie, v)
	}
	return nil
}

// cookieRequest and headerWriter bridge gorilla/sessions, which speaks
// net/http, to fasthttp: only cookies cross the bridge.
func cookieRequest(c *fiber.Ctx) *http.Request {
	return &http.Request{Header: http.Header{"Cookie": {string(c.Request().Header.Peek(fiber.HeaderCookie))}}}
}

type headerWriter struct{ header http.Header }

func (w *headerWriter) Header() http.Header         { return w.header }
func (w *headerWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *headerWriter) WriteHeader(int)             {}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
