package handlers

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/db/money"
	"modelswitch/errs"
	"modelswitch/views"
	"modelswitch/web/request"
)

// KeysPages serves one kind of key in the dashboard: /dashboard/keys for
// proxy keys and /dashboard/billing-keys for billing keys. It calls the same
// store methods as KeysAPI.
type KeysPages struct {
	Store *db.Store
	Kind  apikey.Kind
}

var sections = map[apikey.Kind]views.KeySection{
	apikey.Proxy: {
		Path: "/dashboard/keys", Heading: "API Keys", Nav: "keys", Noun: "API key", Spending: true,
		Intro: "Proxy keys (ms-…) authenticate your inference requests. Rename or deactivate a key at any time; deleting it is permanent.",
	},
	apikey.Billing: {
		Path: "/dashboard/billing-keys", Heading: "Billing Keys", Nav: "billing-keys", Noun: "billing key",
		Intro: "Billing keys (mk-…) let your scripts manage API keys and read balance, usage and transactions through the /api endpoints. Rename or deactivate a key at any time; deleting it is permanent.",
	},
}

// The row forms that can fail and be shown again, open, with their errors.
const (
	renameForm = "rename"
	expiryForm = "expiry"
	limitsForm = "limits"
)

// rowFailure is a row form that failed: shown again, open, with its errors.
type rowFailure struct {
	id   int64
	kind string // renameForm, expiryForm or limitsForm
	form views.Form
}

// page loads a page of the account's keys, as the request's q, sort and
// page select (the query string of a GET, or of a row form's action);
// failed, when set, marks the row whose form failed. A bad q, sort or page
// lists the first page of every key, with the error in p.List.Error.
func (h *KeysPages) page(c *fiber.Ctx, form views.Form, failed *rowFailure) (views.KeysPage, error) {
	ctx, userID := c.UserContext(), request.UserID(c)
	kind := sections[h.Kind]
	p := views.KeysPage{Page: newPage(c, kind.Heading, kind.Nav), Section: kind, Form: form}
	q, err := readListQuery(c)
	var list db.KeyList
	if err == nil {
		list, err = h.Store.ListKeysQuery(ctx, userID, h.Kind, q)
	}
	if e, ok := errs.As(err); ok && e.Kind == errs.Invalid {
		// The message never repeats what was sent (it could be a whole key).
		p.List.Error, q = e.Message, db.KeyQuery{}
		list, err = h.Store.ListKeysQuery(ctx, userID, h.Kind, q)
	}
	if err != nil {
		return views.KeysPage{}, err
	}
	p.List = views.KeyList{Query: strings.TrimSpace(q.Search), Sort: q.Sort, Page: list.Page, Pages: list.Pages, Total: list.Total,
		First: (list.Page-1)*db.KeysPerPage + 1, Any: list.Total > 0, Error: p.List.Error, Row: int64(c.QueryInt("row"))}
	if p.List.Sort == "" {
		p.List.Sort = db.SortCreated
	}
	if !p.List.Any && p.List.Query != "" {
		all, err := h.Store.ListKeysQuery(ctx, userID, h.Kind, db.KeyQuery{})
		if err != nil {
			return views.KeysPage{}, err
		}
		p.List.Any = all.Total > 0
	}
	now := time.Now()
	p.Rows = make([]views.KeyRow, len(list.Keys))
	for i, k := range list.Keys {
		r := keyRow(k, now)
		// Once this row is deleted, focus goes to the one below it, or
		// above it for the last.
		switch {
		case i+1 < len(list.Keys):
			r.Next = list.Keys[i+1].ID
		case i > 0:
			r.Next = list.Keys[i-1].ID
		}
		if failed != nil && failed.id == k.ID {
			switch failed.kind {
			case limitsForm:
				r.Limits = &failed.form
			case expiryForm:
				r.Expiry = &failed.form
			default:
				r.Rename = &failed.form
			}
		}
		p.Rows[i] = r
	}
	return p, nil
}

// readListQuery reads the list's q, sort and page from the query string;
// the store checks q and sort.
func readListQuery(c *fiber.Ctx) (db.KeyQuery, error) {
	// Fiber reuses the request's memory: copy what the page keeps.
	q := db.KeyQuery{Search: strings.Clone(c.Query("q")), Sort: strings.Clone(c.Query("sort"))}
	if raw := c.Query("page"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 {
			return db.KeyQuery{}, errs.InvalidField("page", "invalid_page", "Pages are numbered from 1.")
		}
		q.Page = n
	}
	return q, nil
}

func keyRow(k db.Key, now time.Time) views.KeyRow {
	r := views.KeyRow{
		ID: k.ID, Name: k.Name, Prefix: k.Prefix, Status: string(k.Status(now)), Active: k.Active,
		Created:  views.NewTime(k.CreatedAt, now, false),
		LastUsed: views.OptionalTime(k.LastUsedAt, now, true),
	}
	if k.Hint != nil && len(k.Prefix) > 4 {
		// "ms-abc1xxxx" and "wxyz" show as "ms-abc1…wxyz".
		r.Hint = strings.TrimSuffix(k.Prefix, "xxxx") + "…" + *k.Hint
	}
	if k.ExpiresAt != nil {
		e := views.NewExpiry(*k.ExpiresAt)
		r.Expires = &e
	}
	if k.Kind != apikey.Proxy {
		return r
	}
	r.Usage = dollars(k.Usage)
	r.Models = strings.Join(k.Models, ", ")
	settings := views.Form{Values: map[string]string{"models": r.Models}}
	if k.Limit != nil {
		r.Limit = dollars(*k.Limit)
		r.Remaining = dollars(*k.LimitRemaining())
		settings.Values["limit"] = k.Limit.String()
	}
	if k.LimitReset != nil {
		r.Limit += " " + *k.LimitReset
		settings.Values["limit_reset"] = *k.LimitReset
	}
	r.Limits = &settings
	return r
}

// Show: GET the page: ?q searches names and key prefixes, ?sort=created or
// last_used, ?page from 1 (KeysPerPage keys each). htmx asks for the card
// alone. After a row action without JavaScript it shows what the action did.
func (h *KeysPages) Show(c *fiber.Ctx) error {
	p, err := h.page(c, views.Form{}, nil)
	if err != nil {
		return err
	}
	c.Vary("HX-Request")
	status := fiber.StatusOK
	if p.List.Error != "" {
		status = fiber.StatusBadRequest
	}
	if isHTMX(c) && c.Get("HX-Target") == "keys-card" {
		if status != fiber.StatusOK {
			status = fiber.StatusUnprocessableEntity // swapped in, like every form error
		}
		return render(c, status, views.KeyTable(p, false))
	}
	p.Notice = readNotice(c, sections[h.Kind].Path)
	return render(c, status, views.KeysView(p))
}

// Create: POST name and expires_at (a date). With htmx the answer is the
// reveal modal plus the refreshed table and form; without JavaScript it is
// the page with the key shown once. Neither is cached: every dashboard
// answer is no-store (web.pageHeaders).
func (h *KeysPages) Create(c *fiber.Ctx) error {
	values := formValues(c, "name", "expires_at", "limit", "limit_reset", "models")
	k, err := h.create(c, values)
	if err == nil {
		return h.reveal(c, k)
	}
	form, ok := formErrors(err, values)
	if !ok {
		return err
	}
	if isHTMX(c) {
		c.Set("HX-Retarget", "#create-form")
		c.Set("HX-Reswap", "outerHTML")
		return render(c, fiber.StatusUnprocessableEntity, views.CreateForm(sections[h.Kind], form, pageCSRF(c), false))
	}
	p, err := h.page(c, form, nil)
	if err != nil {
		return err
	}
	return render(c, fiber.StatusUnprocessableEntity, views.KeysView(p))
}

// create makes the key once per form: the form's one-time token
// (views.FormTokenField) makes a second submit of it by the same session (a
// double click without JavaScript, a reload of the answer) wait for the
// first and show the key that one made, whatever its fields say, instead
// of making a key whose secret nobody sees. The token works for that
// session alone: another one gets its own key.
func (h *KeysPages) create(c *fiber.Ctx, values map[string]string) (db.CreatedKey, error) {
	createKey := func() (db.CreatedKey, error) {
		expires, err := endOfDay(values["expires_at"])
		if err != nil {
			return db.CreatedKey{}, err
		}
		in := db.KeyInput{Name: values["name"], ExpiresAt: expires}
		if h.Kind == apikey.Proxy {
			if in.Limit, in.LimitReset, in.Models, err = readLimitsForm(values); err != nil {
				return db.CreatedKey{}, err
			}
		}
		return h.Store.CreateKey(c.UserContext(), request.UserID(c), h.Kind, in)
	}
	info := request.Get(c)
	token := c.FormValue(views.FormTokenField)
	if token == "" || info.SessionID == "" {
		return createKey()
	}
	// A form is sent again within seconds or minutes; its key is not
	// shown again after that.
	const tokenTTL = 10 * time.Minute
	claim, replay, err := h.Store.ClaimIdempotencyKey(c.UserContext(), db.IdempotencyKey{
		UserID: info.UserID, Scope: "form:" + info.SessionID, Value: strings.Clone(token),
		Request: []byte(c.Path()), TTL: tokenTTL, Wait: true,
	})
	if err != nil {
		return db.CreatedKey{}, err
	}
	type sent struct {
		ID        int64
		Name, Key string
	}
	if replay != nil {
		var k sent
		if err := json.Unmarshal(replay.Payload, &k); err != nil {
			return db.CreatedKey{}, err
		}
		return db.CreatedKey{Key: db.Key{ID: k.ID, Name: k.Name, Kind: h.Kind}, Secret: k.Key}, nil
	}
	settle := context.WithoutCancel(c.UserContext())
	k, err := createKey()
	if err != nil {
		// Nothing was made: the form may be sent again. Should letting go
		// fail, the claim lapses within a minute.
		claim.Release(settle)
		return db.CreatedKey{}, err
	}
	payload, err := json.Marshal(sent{k.ID, k.Name, k.Secret})
	if err == nil {
		// Should saving fail, this answer still shows the key; a second
		// submit then waits out its deadline and is refused.
		claim.Save(settle, fiber.StatusCreated, payload)
	}
	return k, nil
}

func (h *KeysPages) reveal(c *fiber.Ctx, k db.CreatedKey) error {
	p, err := h.page(c, views.Form{}, nil)
	if err != nil {
		return err
	}
	revealed := views.Revealed{Name: k.Name, Key: k.Secret}
	if isHTMX(c) {
		return render(c, fiber.StatusCreated, views.Join(
			views.RevealModal(p.Section, revealed),
			views.KeyTable(p, true),
			views.CreateForm(p.Section, views.Form{}, p.CSRF, true),
		))
	}
	p.Revealed = &revealed
	return render(c, fiber.StatusCreated, views.KeysView(p))
}

// endOfDay reads a date input ("2026-12-31") as the first instant after
// that day in UTC.
func endOfDay(date string) (*time.Time, error) {
	if date == "" {
		return nil, nil
	}
	d, err := time.Parse(time.DateOnly, date)
	if err != nil {
		return nil, errs.InvalidField("expires_at", "invalid_expires_at", "Enter the expiry as a date, like 2026-12-31.")
	}
	t := d.AddDate(0, 0, 1)
	return &t, nil
}

// Update: POST name and/or active to /{id}: rename, deactivate, reactivate.
func (h *KeysPages) Update(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	var up db.KeyUpdate
	if name := c.FormValue("name"); c.Request().PostArgs().Has("name") {
		up.Name = &name
	}
	if raw := c.FormValue("active"); raw != "" {
		active, perr := strconv.ParseBool(raw)
		if perr != nil {
			return errs.InvalidField("active", "invalid_type", "active must be true or false.")
		}
		up.Active = &active
	}
	k, err := h.Store.UpdateKey(c.UserContext(), request.UserID(c), h.Kind, id, up)
	if e, ok := errs.As(err); ok && e.Kind == errs.Invalid && up.Name != nil {
		form, _ := formErrors(err, map[string]string{"name": *up.Name})
		return h.failed(c, &rowFailure{id: id, kind: renameForm, form: form})
	}
	if err != nil {
		return err
	}
	switch {
	case up.Name != nil:
		return h.done(c, notice{code: "renamed", name: k.Name}, actionFocus(id, renameForm))
	case k.Active:
		return h.done(c, notice{code: "reactivated", name: k.Name}, actionFocus(id, "toggle"))
	}
	return h.done(c, notice{code: "deactivated", name: k.Name}, actionFocus(id, "toggle"))
}

// UpdateExpiry: POST expires_at (a date; empty, or never=true, for none) to
// /{id}/expiry. The key works to the end of that day (UTC), as on create.
func (h *KeysPages) UpdateExpiry(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	values := formValues(c, "expires_at")
	var expires *time.Time
	if never := c.FormValue("never"); never != "true" {
		expires, err = endOfDay(strings.TrimSpace(values["expires_at"]))
	}
	var k db.Key
	if err == nil {
		k, err = h.Store.UpdateKey(c.UserContext(), request.UserID(c), h.Kind, id, db.KeyUpdate{ExpiresAt: db.Change[time.Time]{Set: true, Value: expires}})
	}
	if form, ok := formErrors(err, values); ok && errs.Is(err, errs.Invalid) {
		return h.failed(c, &rowFailure{id: id, kind: expiryForm, form: form})
	}
	if err != nil {
		return err
	}
	if k.ExpiresAt == nil {
		return h.done(c, notice{code: "never", name: k.Name}, actionFocus(id, expiryForm))
	}
	return h.done(c, notice{code: "expires", name: k.Name, when: views.NewExpiry(*k.ExpiresAt).String()}, actionFocus(id, expiryForm))
}

// UpdateLimits: POST limit, limit_reset and models to /{id}/limits. The
// form sends all three: an empty field clears it.
func (h *KeysPages) UpdateLimits(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	values := formValues(c, "limit", "limit_reset", "models")
	limit, reset, models, err := readLimitsForm(values)
	var k db.Key
	if err == nil {
		up := db.KeyUpdate{Limit: db.Change[money.USD]{Set: true, Value: limit}, LimitReset: db.Change[string]{Set: true, Value: reset},
			Models: db.Change[[]string]{Set: true}}
		if models != nil {
			up.Models.Value = &models
		}
		k, err = h.Store.UpdateKey(c.UserContext(), request.UserID(c), h.Kind, id, up)
	}
	if form, ok := formErrors(err, values); ok && errs.Is(err, errs.Invalid) {
		return h.failed(c, &rowFailure{id: id, kind: limitsForm, form: form})
	}
	if err != nil {
		return err
	}
	return h.done(c, notice{code: "limits", name: k.Name}, actionFocus(id, limitsForm))
}

// readLimitsForm reads a proxy key's spending fields from a form: empty
// means none (no limit, no reset, every model).
func readLimitsForm(values map[string]string) (limit *money.USD, reset *string, models []string, err error) {
	if raw := strings.TrimSpace(values["limit"]); raw != "" {
		v, perr := money.Parse(strings.TrimPrefix(raw, "$"))
		if perr != nil {
			return nil, nil, nil, errs.InvalidField("limit", "invalid_limit", "Enter the limit in US dollars, like 10 or 2.50, or leave it empty for no limit.")
		}
		limit = &v
	}
	if raw := values["limit_reset"]; raw != "" {
		reset = &raw
	}
	for _, m := range strings.Split(values["models"], ",") {
		if m = strings.TrimSpace(m); m != "" {
			models = append(models, m)
		}
	}
	return limit, reset, models, nil
}

// Delete: POST /{id}/delete, after the confirmation that names the key;
// next, when sent, is the row that takes focus after it.
func (h *KeysPages) Delete(c *fiber.Ctx) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	k, err := h.Store.DeleteKeyReturning(c.UserContext(), request.UserID(c), h.Kind, id)
	if err != nil {
		return err
	}
	next, _ := strconv.ParseInt(c.FormValue("next"), 10, 64)
	return h.done(c, notice{code: "deleted", name: k.Name}, func(p views.KeysPage) string {
		for _, r := range p.Rows {
			if r.ID == next {
				return "key-" + strconv.FormatInt(r.ID, 10)
			}
		}
		if len(p.Rows) > 0 {
			return "key-" + strconv.FormatInt(p.Rows[0].ID, 10)
		}
		return "key-name" // the create form's name field
	})
}

// actionFocus is a row action's own button or pop-over summary, where focus
// stays after it.
func actionFocus(id int64, action string) func(views.KeysPage) string {
	return func(views.KeysPage) string { return "key-" + strconv.FormatInt(id, 10) + "-" + action }
}

// done answers a row action that worked. With htmx it is the card again,
// saying what happened and which element takes focus; without JavaScript it
// is a redirect back to the same list, whose page then shows the notice.
func (h *KeysPages) done(c *fiber.Ctx, n notice, focus func(views.KeysPage) string) error {
	path := sections[h.Kind].Path
	if !isHTMX(c) {
		q, err := readListQuery(c)
		if err != nil {
			q = db.KeyQuery{}
		}
		l := views.KeyList{Query: q.Search, Sort: q.Sort, Page: q.Page}
		u := l.URL(path)
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		return c.Redirect(u+sep+n.query(request.Get(c).CSRF, path), fiber.StatusSeeOther)
	}
	p, err := h.page(c, views.Form{}, nil)
	if err != nil {
		return err
	}
	p.Done = &views.Done{Message: n.message(), Focus: focus(p)}
	return render(c, fiber.StatusOK, views.KeyTable(p, false))
}

// failed answers a row form with errors: the card (htmx) or the page, with
// the form open again, its input kept and its errors beside it.
func (h *KeysPages) failed(c *fiber.Ctx, f *rowFailure) error {
	p, err := h.page(c, views.Form{}, f)
	if err != nil {
		return err
	}
	if isHTMX(c) {
		return render(c, fiber.StatusUnprocessableEntity, views.KeyTable(p, false))
	}
	return render(c, fiber.StatusUnprocessableEntity, views.KeysView(p))
}

// keyNotices are what a row action did, one fixed sentence per code, filled in
// with the key's name and, for an expiry, its new last day.
var keyNotices = map[string]string{
	"renamed":     "Key renamed to “%s”.",
	"deactivated": "Key “%s” deactivated.",
	"reactivated": "Key “%s” reactivated.",
	"expires":     "Key “%s” now works until %s.",
	"never":       "Key “%s” no longer expires.",
	"limits":      "Limits of key “%s” saved.",
	"deleted":     "Key “%s” deleted.",
}

// notice is what a row action did.
type notice struct {
	code, name, when string
}

func (n notice) message() string {
	format, ok := keyNotices[n.code]
	if !ok {
		return ""
	}
	if n.code == "expires" {
		return fmt.Sprintf(format, n.name, n.when)
	}
	return fmt.Sprintf(format, n.name)
}

// query carries the notice across a redirect without JavaScript: its code,
// the name (a deleted key cannot be looked up), the day, and a MAC keyed
// with the session's CSRF secret, so that nobody can make a link that shows
// words of their choosing in someone else's dashboard.
func (n notice) query(csrf, path string) string {
	v := url.Values{"done": {n.code}, "name": {n.name}}
	if n.when != "" {
		v.Set("when", n.when)
	}
	v.Set("sig", n.mac(csrf, path))
	return v.Encode()
}

func (n notice) mac(csrf, path string) string {
	m := hmac.New(sha256.New, []byte(csrf))
	for _, part := range []string{"modelswitch key notice", path, n.code, n.name, n.when} {
		m.Write([]byte(part))
		m.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// readNotice is the notice that a redirect after a row action carries, or
// "" when there is none or its MAC does not match this session.
func readNotice(c *fiber.Ctx, path string) string {
	n := notice{code: c.Query("done"), name: c.Query("name"), when: c.Query("when")}
	csrf := request.Get(c).CSRF
	if n.code == "" || csrf == "" || keyNotices[n.code] == "" {
		return ""
	}
	if !hmac.Equal([]byte(c.Query("sig")), []byte(n.mac(csrf, path))) {
		return ""
	}
	return strings.Clone(n.message())
}
