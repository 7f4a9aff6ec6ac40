package views

import (
	"context"
	"io"
	"net/http"
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
