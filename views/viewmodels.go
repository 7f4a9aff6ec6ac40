// Package views holds the dashboard's templ components and the view models
// they render. Handlers build view models; views never see database rows.
package views

import (
	"fmt"
	"time"
)

// Page is what every page's layout needs.
type Page struct {
	Title   string
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
}

// KeySection is what differs between the Billing Keys and API Keys pages.
type KeySection struct {
	Path     string // "/dashboard/keys"
	Heading  string
	Intro    string
	Nav      string // the section's name in the header: "keys"
	Noun     string // "API key"
	Editable bool   // rename, deactivate and spending limits (proxy keys only)
}

// KeyRow is one key in a table.
type KeyRow struct {
	ID       int64
	Name     string
	Prefix   string
	Status   string // Active, Inactive or Expired
	Active   bool
	Created  Time
	Expires  *Time
	LastUsed *Time
	Rename   *Form // set when a rename failed, to show its error

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
	Exact string
}

// NewTime formats t for a table: a date, or how long ago for recent past
// times when relative is set.
func NewTime(t time.Time, now time.Time, relative bool) Time {
	t = t.UTC()
	exact := t.Format("2006-01-02 15:04:05 UTC")
	if relative {
		switch d := now.Sub(t); {
		case d < time.Minute:
			return Time{"just now", exact}
		case d < time.Hour:
			return Time{fmt.Sprintf("%d min ago", int(d.Minutes())), exact}
		case d < 24*time.Hour:
			return Time{fmt.Sprintf("%d h ago", int(d.Hours())), exact}
		}
	}
	return Time{t.Format("Jan 2, 2006"), exact}
}

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
