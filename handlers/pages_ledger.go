package handlers

import (
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
	"modelswitch/db/apikey"
	"modelswitch/db/money"
	"modelswitch/errs"
	"modelswitch/gateway"
	"modelswitch/views"
	"modelswitch/web/request"
)

// LedgerPages shows the account's usage and transactions in the dashboard,
// read with the same query parameters and store methods as the JSON API.
type LedgerPages struct {
	Store   *db.Store
	Catalog *gateway.Catalog
}

// Usage: GET /dashboard/usage, filtered as GET /api/usage is.
func (h *LedgerPages) Usage(c *fiber.Ctx) error {
	ctx, userID := c.UserContext(), request.UserID(c)
	keys, err := h.Store.ListKeys(ctx, userID, apikey.Proxy)
	if err != nil {
		return err
	}
	p := views.UsagePage{Page: newPage(c, "Usage", "usage"), Filter: views.UsageFilter{Bucket: "day"}}
	names := map[int64]string{}
	for _, k := range keys {
		names[k.ID] = k.Name
		p.Filter.Keys = append(p.Filter.Keys, views.Option{Value: strconv.FormatInt(k.ID, 10), Label: k.Name + " (" + k.Prefix + ")"})
	}
	for _, m := range h.Catalog.Models() {
		p.Filter.Models = append(p.Filter.Models, views.Option{Value: m.ID, Label: m.ID})
	}
	q, err := readUsageQuery(c, time.Now())
	if e, ok := errs.As(err); ok && e.Kind == errs.Invalid {
		p.Error = e.Message
		return render(c, fiber.StatusBadRequest, views.UsageView(p))
	}
	if err != nil {
		return err
	}
	p.Filter.From, p.Filter.To = q.From.Format(time.DateOnly), q.To.Format(time.DateOnly)
	p.Filter.Bucket, p.Filter.Model = q.Bucket, q.Model
	if q.KeyID != 0 {
		p.Filter.KeyID = strconv.FormatInt(q.KeyID, 10)
	}
	q.ByKey, q.ByModel = true, true
	rows, err := h.Store.SumUsage(ctx, userID, q)
	if err != nil {
		return err
	}
	p.Chart, p.ByKey, p.ByModel, p.Total = summarize(rows, q, names)
	return render(c, fiber.StatusOK, views.UsageView(p))
}

// summarize turns usage by bucket, key and model into the page's chart
// (every bucket of the period, empty ones too) and its tables.
func summarize(rows []db.UsageRow, q db.UsageQuery, names map[int64]string) (views.Chart, []views.UsageLine, []views.UsageLine, views.UsageLine) {
	type sum struct {
		requests, in, out int64
		cost              money.USD
	}
	add := func(s *sum, r db.UsageRow) {
		s.requests, s.in, s.out, s.cost = s.requests+r.Requests, s.in+r.InputTokens, s.out+r.OutputTokens, s.cost+r.Cost
	}
	perBucket := map[time.Time]money.USD{}
	byKey, byModel := map[int64]*sum{}, map[string]*sum{}
	var keyOrder []int64
	var modelOrder []string
	var total sum
	for _, r := range rows {
		perBucket[r.Start.UTC()] += r.Cost
		if byKey[r.KeyID] == nil {
			byKey[r.KeyID] = &sum{}
			keyOrder = append(keyOrder, r.KeyID)
		}
		if byModel[r.Model] == nil {
			byModel[r.Model] = &sum{}
			modelOrder = append(modelOrder, r.Model)
		}
		add(byKey[r.KeyID], r)
		add(byModel[r.Model], r)
		add(&total, r)
	}
	line := func(name string, s sum) views.UsageLine {
		return views.UsageLine{Name: name, Requests: s.requests, InputTokens: s.in, OutputTokens: s.out, Cost: dollars(s.cost)}
	}
	var keys, models []views.UsageLine
	for _, id := range keyOrder {
		keys = append(keys, line(keyName(names, id), *byKey[id]))
	}
	for _, m := range modelOrder {
		models = append(models, line(m, *byModel[m]))
	}

	var chart views.Chart
	if len(rows) == 0 {
		return chart, keys, models, line("All", total)
	}
	step, label := 24*time.Hour, "Jan 2"
	if q.Bucket == "hour" {
		step, label = time.Hour, "Jan 2 15:04"
	}
	var most money.USD
	for _, cost := range perBucket {
		most = max(most, cost)
	}
	for t := q.From.Truncate(step); t.Before(q.To); t = t.Add(step) {
		b := views.Bar{Label: t.Format(label), Cost: dollars(perBucket[t])}
		if most > 0 {
			b.Height = float64(perBucket[t]) / float64(most)
		}
		chart.Bars = append(chart.Bars, b)
	}
	chart.MaxCost = dollars(most)
	return chart, keys, models, line("All", total)
}

// Transactions: GET /dashboard/transactions, paged as GET /api/transactions is.
func (h *LedgerPages) Transactions(c *fiber.Ctx) error {
	f, err := readEntryFilter(c)
	if err != nil {
		return err
	}
	entries, more, err := h.Store.ListEntries(c.UserContext(), request.UserID(c), f)
	if err != nil {
		return err
	}
	names, err := h.keyNames(c)
	if err != nil {
		return err
	}
	p := views.TransactionsPage{Page: newPage(c, "Transactions", "transactions"), Type: f.Type, First: f.StartingAfter == 0}
	now := time.Now()
	for _, e := range entries {
		row := views.TransactionRow{ID: e.ID, Type: e.Type, Amount: dollars(e.Amount), Credit: e.Amount > 0,
			BalanceAfter: dollars(e.BalanceAfter), Description: e.Description, Created: views.NewTime(e.CreatedAt, now, true)}
		if e.Amount > 0 {
			row.Amount = "+" + row.Amount
		}
		if e.Type == db.EntryUsage && e.KeyID != nil {
			row.Detail = fmt.Sprintf("%s · %d in, %d out tokens", keyName(names, *e.KeyID), *e.InputTokens, *e.OutputTokens)
		}
		p.Rows = append(p.Rows, row)
	}
	if more {
		next := url.Values{"starting_after": {strconv.FormatInt(entries[len(entries)-1].ID, 10)}}
		if f.Type != "" {
			next.Set("type", f.Type)
		}
		p.Older = "/dashboard/transactions?" + next.Encode()
	}
	return render(c, fiber.StatusOK, views.TransactionsView(p))
}

// keyNames maps the account's proxy key ids to their names.
func (h *LedgerPages) keyNames(c *fiber.Ctx) (map[int64]string, error) {
	keys, err := h.Store.ListKeys(c.UserContext(), request.UserID(c), apikey.Proxy)
	names := make(map[int64]string, len(keys))
	for _, k := range keys {
		names[k.ID] = k.Name
	}
	return names, err
}

// keyName is a key's name, or says it was deleted: usage outlives keys.
func keyName(names map[int64]string, id int64) string {
	if name, ok := names[id]; ok {
		return name
	}
	return fmt.Sprintf("Key %d (deleted)", id)
}
