// Package views holds the dashboard's templ components and the view models
// they render. Handlers build view models; views never see database rows.
package views

import (
	"fmt"
	"time"
)

// Page is what every page's layout needs.
type Page struct {
	Title string
	CSRF  string
	Email string // the signed-in account; empty on the sign-in pages
	Nav   string // "billing-keys" or "keys": the current section
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
	Editable bool   // rename and deactivate (proxy keys only)
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
