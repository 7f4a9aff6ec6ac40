// Package views holds the dashboard's templ components and the view models
// they render. Handlers build view models; views never see database rows.
package views

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"time"
)

// Page is what every page's layout needs.
type Page struct {
	Title string
	// CSRF is the session's CSRF token masked for this page (csrf.Mask):
	// the same on every form of one page, never the same on two pages.
	CSRF    string
	Email   string // the signed-in account; empty on the sign-in pages
	Balance string // the account's balance, "$4.999972"; empty when signed out
	Nav     string // "keys", "billing-keys", "usage" or "transactions": the current section
}

// Form is a submitted form: the values to show again and what was wrong.
type Form struct {
	Values map[string]string
	Errors map[string]string // field → message; "" for the whole form
}

// Value is the submitted value of field, kept on a re-render.
func (f Form) Value(field string) string { return f.Values[field] }

// Error is the message for field, "" when it is fine.
func (f Form) Error(field string) string { return f.Errors[field] }

// AuthPage is the sign-in or sign-up page.
type AuthPage struct {
	Page
	SignUp bool
	Form   Form
}

// KeysPage lists one kind of key.
type KeysPage struct {
	Page
	Section  KeySection
	Rows     []KeyRow
	Form     Form
	Revealed *Revealed // set on the page that answers a create without JavaScript
	List     KeyList   // the search, sort and page shown
	Notice   string    // what the last row action did, shown after its redirect (no JavaScript)
	Done     *Done     // what the row action this table answers did (htmx)
}

// KeySection is what differs between the Billing Keys and API Keys pages.
// Both kinds can be renamed, deactivated, given a new expiry and deleted.
type KeySection struct {
	Path     string // "/dashboard/keys"
	Heading  string
	Intro    string
	Nav      string // the section's name in the header: "keys"
	Noun     string // "API key"
	Spending bool   // spend limits and allowed models (proxy keys only)
}

// KeyList is the search, sort and page of a list of keys, and where the
// page lies in it.
type KeyList struct {
	Query string // the search as typed; "" lists every key
	Sort  string // "created" or "last_used"
	Page  int    // from 1
	Pages int
	Total int    // keys that match the search
	First int    // the number of the page's first key in the list, from 1
	Any   bool   // the account has keys of this kind, matching or not
	Error string // a bad search, sort or page: what to do instead
	Row   int64  // the row a Cancel without JavaScript came back to
}

// Done is what a row action did: announced to screen readers, shown
// briefly, and where focus goes once the table is swapped in.
type Done struct {
	Message string // "Key “Production” deactivated."
	Focus   string // the id of the element to focus
}

// KeyRow is one key in a table.
type KeyRow struct {
	ID       int64
	Name     string
	Prefix   string // "ms-abc1xxxx", as the API shows it
	Hint     string // "ms-abc1…wxyz"; "" for keys made before last fours were kept
	Status   string // Active, Inactive or Expired
	Active   bool
	Created  Time
	Expires  *Expiry
	LastUsed *Time
	Next     int64 // the row that takes focus once this one is deleted; 0 for none
	Rename   *Form // set when a rename failed, to show its error
	Expiry   *Form // set when an expiry change failed

	// Spending, for proxy keys.
	Usage     string // "$0.25" in the current window
	Limit     string // "$10 monthly", "" without a limit
	Remaining string // "$9.75", "" without a limit
	Models    string // "modelswitch/echo, …", "" for every model
	Limits    *Form  // the limits form's values and, after a failed save, its errors
}

// Revealed is a key just created: shown once.
type Revealed struct {
	Name string
	Key  string
}

// Time is a time shown in a human form, with the exact time on hover.
type Time struct {
	Human string
	Exact string // "2026-11-25 11:55:00 UTC"
	ISO   string // "2026-11-25T11:55:00Z", for a <time datetime>
}

// NewTime formats t for a table: a date, or how long ago for recent past
// times when relative is set.
func NewTime(t time.Time, now time.Time, relative bool) Time {
	t = t.UTC()
	v := Time{Human: t.Format("Jan 2, 2006"), Exact: t.Format("2006-01-02 15:04:05 UTC"), ISO: t.Format(time.RFC3339)}
	if relative {
		switch d := now.Sub(t); {
		case d < time.Minute:
			v.Human = "just now"
		case d < time.Hour:
			v.Human = fmt.Sprintf("%d min ago", int(d.Minutes()))
		case d < 24*time.Hour:
			v.Human = fmt.Sprintf("%d h ago", int(d.Hours()))
		}
	}
	return v
}

// Expiry is when a key stops working, shown as the last day it works.
type Expiry struct {
	Day    string // "Dec 26, 2026": the last day the key works
	Detail string // "end of day UTC", or when on that day: "14:30:00 UTC"
	Date   string // the same day for a date input: "2026-12-26"
	ISO    string // the instant it stops: "2026-12-27T00:00:00Z"
}

// NewExpiry shows an expiry. A key stops working at the instant it
// expires, so one that expires at midnight UTC (every expiry chosen as a
// date) works to the end of the day before: that day is shown.
func NewExpiry(t time.Time) Expiry {
	t = t.UTC()
	e := Expiry{ISO: t.Format(time.RFC3339)}
	day, detail := t, t.Format("15:04:05")+" UTC"
	if t.Hour() == 0 && t.Minute() == 0 && t.Second() == 0 && t.Nanosecond() == 0 {
		day, detail = t.AddDate(0, 0, -1), "end of day UTC"
	}
	e.Day, e.Detail, e.Date = day.Format("Jan 2, 2006"), detail, day.Format(time.DateOnly)
	return e
}

// String is the expiry in one line: "Dec 26, 2026, end of day UTC".
func (e Expiry) String() string { return e.Day + ", " + e.Detail }

// OptionalTime is NewTime for a time that may be unset.
func OptionalTime(t *time.Time, now time.Time, relative bool) *Time {
	if t == nil {
		return nil
	}
	v := NewTime(*t, now, relative)
	return &v
}

// ErrorPage is an error shown as a page.
type ErrorPage struct {
	Page
	Status  int
	Message string
}

// UsagePage is spend over time with the same filters as /api/usage, and
// the same figures by key and by model.
type UsagePage struct {
	Page
	Filter  UsageFilter
	Error   string // a bad filter, shown above the form
	Chart   Chart
	ByKey   []UsageLine
	ByModel []UsageLine
	Total   UsageLine
}

// UsageFilter is the usage form's values, as the query sends them.
type UsageFilter struct {
	From, To string // dates, "2026-11-01"
	Bucket   string // day or hour
	KeyID    string
	Model    string
	Keys     []Option // the account's proxy keys
	Models   []Option // the catalog's models
}

// Option is one choice of a select.
type Option struct {
	Value, Label string
}

// Chart is spend per bucket, drawn as bars in an SVG on the server.
type Chart struct {
	Bars    []Bar
	MaxCost string // the value of the tallest bar, for the axis
}

// Bar is one bucket of the chart. Height is a share of the tallest, 0 to 1.
type Bar struct {
	Label  string // "Nov 26" or "Nov 26 14:00"
	Cost   string // "$0.000028"
	Height float64
}

// UsageLine is the usage of one key, one model, or all of them.
type UsageLine struct {
	Name         string
	Requests     int64
	InputTokens  int64
	OutputTokens int64
	Cost         string
}

// TransactionsPage is one page of the ledger, newest first.
type TransactionsPage struct {
	Page
	Type  string // the type filter: "", credit, adjustment or usage
	Rows  []TransactionRow
	Older string // the URL of the next, older page; "" on the last
	First bool   // this is the newest page
}

// TransactionRow is one ledger entry.
type TransactionRow struct {
	ID           int64
	Type         string
	Amount       string // "+$5", "−$0.000013"
	Credit       bool   // the amount adds to the balance
	BalanceAfter string
	Description  string
	Detail       string // "key 2 · 5 in, 4 out tokens"
	Created      Time
}

// SettingsPage is the account's settings: its password, its sessions and
// deleting it.
type SettingsPage struct {
	Page
	Notice   string // what the last action did, after its redirect
	Password Form   // the change-password form after a failed try
	Sessions []SessionRow
	Delete   Form // the delete-account form after a failed try
}

// SessionRow is one live session of the account.
type SessionRow struct {
	Handle   string // names the session in URLs; never its secret id
	Kind     string // "Browser" or "API token"
	Current  bool   // the session of this page
	Created  Time
	LastSeen *Time // nil where it is not recorded (API tokens)
	Expires  Time
}

// ForgotPage asks for the email to send a password reset link to. Sent is
// the answer, the same whether an account has that email or not.
type ForgotPage struct {
	Page
	Form Form
	Sent bool
	// NoMail: this server sends no mail (production without SMTP_URL), so
	// the page says so instead of offering a form whose link never comes.
	NoMail bool
}

// ResetPage sets a new password through a reset link.
type ResetPage struct {
	Page
	Token   string // the link's, posted back with the form
	Invalid bool   // the link is unknown, used or expired
	Form    Form
}

// LandingPage is the home page of signed-out visitors: what ModelSwitch is.
type LandingPage struct {
	Page
	BaseURL string // this server, as the visitor reached it: "https://modelswitch.example"
}

// FormTokenField names the one-time token of a create form. The server
// remembers the answer to a token for a while, so that a second submit of
// the same form (a double click without JavaScript, a reload of the answer)
// shows the key the first one made instead of making another.
const FormTokenField = "form_token"

// newFormToken mints a form's one-time token as the form is drawn: nothing
// is stored until the form is sent.
func newFormToken() string {
	raw := make([]byte, 32)
	rand.Read(raw)
	return base64.RawURLEncoding.EncodeToString(raw)
}
