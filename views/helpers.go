package views

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/a-h/templ"
)

func rowPath(k KeySection, r KeyRow) string {
	return k.Path + "/" + strconv.FormatInt(r.ID, 10)
}

func statusClass(status string) string {
	switch status {
	case "Active":
		return "bg-emerald-50 text-emerald-800 ring-emerald-600/30"
	case "Expired":
		return "bg-amber-50 text-amber-900 ring-amber-600/30"
	}
	return "bg-slate-100 text-slate-700 ring-slate-500/30"
}

func renameValue(r KeyRow) string {
	if r.Rename != nil {
		return r.Rename.Value("name")
	}
	return r.Name
}

func renameError(r KeyRow) string {
	if r.Rename != nil {
		return r.Rename.Error("name")
	}
	return ""
}

func article(noun string) string {
	if noun != "" && noun[0] == 'A' {
		return "an"
	}
	return "a"
}

func statusText(status int) string {
	return strconv.Itoa(status) + " " + http.StatusText(status)
}

// Join renders components one after another: a main swap target followed
// by out-of-band swaps.
func Join(components ...templ.Component) templ.Component {
	return templ.ComponentFunc(func(ctx context.Context, w io.Writer) error {
		for _, c := range components {
			if err := c.Render(ctx, w); err != nil {
				return err
			}
		}
		return nil
	})
}

// The chart's bars are 8 units wide with 2 between, 100 units at the most.
func chartViewBox(n int) string { return "0 0 " + strconv.Itoa(n*10) + " 100" }
func barX(i int) string         { return strconv.Itoa(i*10 + 1) }
func barHeight(b Bar) string    { return strconv.FormatFloat(b.Height*100, 'f', 2, 64) }
func barY(b Bar) string         { return strconv.FormatFloat(100-b.Height*100, 'f', 2, 64) }

// typeURL is the first page of the transactions of a type.
func typeURL(typ string) string {
	if typ == "" {
		return "/dashboard/transactions"
	}
	return "/dashboard/transactions?type=" + typ
}

// resetOptions are the choices of a key's limit reset.
var resetOptions = []Option{{"", "Never"}, {"daily", "Daily"}, {"weekly", "Weekly"}, {"monthly", "Monthly"}}

// limitsForm is a row's Limits form: after a failed save what was sent,
// otherwise the key's settings.
func limitsForm(r KeyRow) Form {
	if r.Limits != nil {
		return *r.Limits
	}
	return Form{}
}

// rowID is the id of a key's table row.
func rowID(r KeyRow) string { return "key-" + strconv.FormatInt(r.ID, 10) }

// actionID is the id of a row's button or pop-over summary: "key-7-rename".
func actionID(r KeyRow, action string) string { return rowID(r) + "-" + action }

// rowURLs are where a row's forms post: the key's path, then query, the
// list's search, sort and page, so that the answer shows the same list.
// They are built once a row (and query once a page), not once a form.
type rowURLs struct{ key, limits, expiry, delete string }

func newRowURLs(p KeysPage, r KeyRow, query string) rowURLs {
	path := rowPath(p.Section, r)
	return rowURLs{path + query, path + "/limits" + query, path + "/expiry" + query, path + "/delete" + query}
}

// values is the list at page n as a query, leaving out the defaults.
func (l KeyList) values(n int) url.Values {
	v := url.Values{}
	if l.Query != "" {
		v.Set("q", l.Query)
	}
	if l.Sort != "" && l.Sort != SortCreated {
		v.Set("sort", l.Sort)
	}
	if n > 1 {
		v.Set("page", strconv.Itoa(n))
	}
	return v
}

// SortCreated is the default sort, left out of URLs.
const SortCreated = "created"

// PageURL is the list's page n at path.
func (l KeyList) PageURL(path string, n int) string { return withQuery(path, l.values(n)) }

// URL is the list as shown, at path.
func (l KeyList) URL(path string) string { return l.PageURL(path, l.Page) }

// Cleared is the list without its search, at path.
func (l KeyList) Cleared(path string) string {
	l.Query = ""
	return l.PageURL(path, 1)
}

func withQuery(path string, v url.Values) string {
	if len(v) == 0 {
		return path
	}
	return path + "?" + v.Encode()
}

// param is one hidden field of a GET form.
type param struct{ Name, Value string }

// cancelParams are the fields of a delete confirmation's Cancel form: the
// list as shown, and a "row" that differs from the current URL's, so that
// submitting it always loads the page again (closing the pop-over) and
// never only jumps to the row.
func cancelParams(l KeyList, r KeyRow) []param {
	var out []param
	v := l.values(l.Page)
	for _, name := range []string{"q", "sort", "page"} {
		if v.Has(name) {
			out = append(out, param{name, v.Get(name)})
		}
	}
	if l.Row != r.ID {
		out = append(out, param{"row", strconv.FormatInt(r.ID, 10)})
	}
	return out
}

// sortOptions are the choices of the list's sort.
var sortOptions = []Option{{SortCreated, "Newest first"}, {"last_used", "Recently used"}}

// keyTag is the section's key tag: "ms-" or "mk-".
func keyTag(k KeySection) string {
	if k.Spending {
		return "ms-"
	}
	return "mk-"
}

// listSummary says how many keys match and which are shown.
func listSummary(k KeySection, l KeyList, rows int) string {
	noun := k.Noun + "s"
	if l.Total == 1 {
		noun = k.Noun
	}
	s := fmt.Sprintf("%d %s", l.Total, noun)
	if l.Query != "" {
		verb := "match"
		if l.Total == 1 {
			verb = "matches"
		}
		s += fmt.Sprintf(" %s “%s”", verb, l.Query)
	}
	if l.Pages > 1 {
		first := l.First
		s += fmt.Sprintf(", showing %d–%d", first, first+rows-1)
	}
	return s + "."
}

// expiryValue is the date in a row's Expiry form: after a failed save what
// was sent, otherwise the last day the key works.
func expiryValue(r KeyRow) string {
	switch {
	case r.Expiry != nil:
		return r.Expiry.Value("expires_at")
	case r.Expires != nil:
		return r.Expires.Date
	}
	return ""
}

func expiryError(r KeyRow) string {
	if r.Expiry != nil {
		return r.Expiry.Error("expires_at")
	}
	return ""
}

// input holds the optional attributes of a field's input.
type input struct {
	autocomplete, placeholder, inputMode, describedBy, testID string
	minLength, maxLength                                      int
	required                                                  bool
	plainText                                                 bool // no autocapitalize, no spellcheck: an email typed to confirm
}
