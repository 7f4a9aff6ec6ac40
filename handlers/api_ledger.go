package handlers

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"modelswitch/db"
	"modelswitch/db/money"
	"modelswitch/errs"
	"modelswitch/web/request"
)

// LedgerAPI serves an account's balance, usage, transactions and
// generations to billing keys.
type LedgerAPI struct {
	Store *db.Store
}

// Balance: GET /api/balance.
func (h *LedgerAPI) Balance(c *fiber.Ctx) error {
	if err := onlyQuery(c); err != nil {
		return err
	}
	b, err := h.Store.GetBalance(c.UserContext(), request.UserID(c))
	if err != nil {
		return err
	}
	return c.JSON(struct {
		Balance      money.USD `json:"balance"`
		TotalCredits money.USD `json:"totalCredits"`
		TotalUsage   money.USD `json:"totalUsage"`
		Held         money.USD `json:"held"`
		Currency     string    `json:"currency"`
	}{b.Available(), b.Credits, b.Usage, b.Held, "usd"})
}

type transaction struct {
	ID           int64     `json:"id"`
	Type         string    `json:"type"`
	Amount       money.USD `json:"amount"`
	BalanceAfter money.USD `json:"balanceAfter"`
	Description  string    `json:"description"`
	CreatedAt    string    `json:"createdAt"`
	KeyID        *int64    `json:"keyId,omitempty"`
	Model        *string   `json:"model,omitempty"`
	GenerationID *string   `json:"generationId,omitempty"`
	InputTokens  *int64    `json:"inputTokens,omitempty"`
	OutputTokens *int64    `json:"outputTokens,omitempty"`
}

// Transactions: GET /api/transactions?limit&starting_after&type&key_id.
func (h *LedgerAPI) Transactions(c *fiber.Ctx) error {
	f, err := readEntryFilter(c)
	if err != nil {
		return err
	}
	entries, more, err := h.Store.ListEntries(c.UserContext(), request.UserID(c), f)
	if err != nil {
		return err
	}
	out := make([]transaction, len(entries))
	for i, e := range entries {
		out[i] = transaction{e.ID, e.Type, e.Amount, e.BalanceAfter, e.Description, timestamp(e.CreatedAt),
			e.KeyID, e.Model, e.GenerationID, e.InputTokens, e.OutputTokens}
	}
	return c.JSON(fiber.Map{"transactions": out, "hasMore": more})
}

// readEntryFilter reads the transactions list's query; the dashboard's
// Transactions page takes the same.
func readEntryFilter(c *fiber.Ctx) (db.EntryFilter, error) {
	f := db.EntryFilter{Limit: 20}
	if err := onlyQuery(c, "limit", "starting_after", "type", "key_id"); err != nil {
		return f, err
	}
	var err error
	if f.Limit, err = queryInt(c, "limit", 20, 1, 100); err != nil {
		return f, err
	}
	if f.StartingAfter, err = queryID(c, "starting_after"); err != nil {
		return f, err
	}
	if f.KeyID, err = queryID(c, "key_id"); err != nil {
		return f, err
	}
	switch f.Type = c.Query("type"); f.Type {
	case "", db.EntryCredit, db.EntryAdjustment, db.EntryUsage:
	default:
		return f, errs.InvalidField("type", "invalid_type", `Use type=credit, adjustment or usage.`)
	}
	return f, nil
}

type usageFigures struct {
	Requests     int64     `json:"requests"`
	InputTokens  int64     `json:"inputTokens"`
	OutputTokens int64     `json:"outputTokens"`
	Cost         money.USD `json:"cost"`
}

type usageBucket struct {
	Start string  `json:"start"`
	KeyID *int64  `json:"keyId,omitempty"`
	Model *string `json:"model,omitempty"`
	usageFigures
}

// Usage: GET /api/usage?from&to&bucket&group_by&key_id&model.
func (h *LedgerAPI) Usage(c *fiber.Ctx) error {
	q, err := readUsageQuery(c, time.Now())
	if err != nil {
		return err
	}
	rows, err := h.Store.SumUsage(c.UserContext(), request.UserID(c), q)
	if err != nil {
		return err
	}
	data := make([]usageBucket, len(rows))
	var total usageFigures
	for i, r := range rows {
		data[i] = usageBucket{Start: timestamp(r.Start), usageFigures: usageFigures{r.Requests, r.InputTokens, r.OutputTokens, r.Cost}}
		if q.ByKey {
			data[i].KeyID = &r.KeyID
		}
		if q.ByModel {
			data[i].Model = &r.Model
		}
		total.Requests += r.Requests
		total.InputTokens += r.InputTokens
		total.OutputTokens += r.OutputTokens
		total.Cost += r.Cost
	}
	return c.JSON(fiber.Map{"from": timestamp(q.From), "to": timestamp(q.To), "bucket": q.Bucket, "data": data, "total": total})
}

// maxUsageSpan bounds one usage query, so that an answer stays small.
const maxUsageSpan = 366 * 24 * time.Hour

// readUsageQuery reads /api/usage's query; the dashboard's Usage page takes
// the same. Usage is kept per hour: from is widened down and to up to whole
// hours. By default it is the 30 days up to the end of the current bucket.
func readUsageQuery(c *fiber.Ctx, now time.Time) (db.UsageQuery, error) {
	q := db.UsageQuery{Bucket: c.Query("bucket", "day")}
	if err := onlyQuery(c, "from", "to", "bucket", "group_by", "key_id", "model"); err != nil {
		return q, err
	}
	var step time.Duration
	switch q.Bucket {
	case "day":
		step = 24 * time.Hour
	case "hour":
		step = time.Hour
	default:
		return q, errs.InvalidField("bucket", "invalid_bucket", "Use bucket=day or bucket=hour.")
	}
	to, err := queryTime(c, "to")
	if err != nil {
		return q, err
	}
	if to.IsZero() {
		to = now.UTC().Truncate(step).Add(step)
	}
	from, err := queryTime(c, "from")
	if err != nil {
		return q, err
	}
	if from.IsZero() {
		from = to.Add(-30 * 24 * time.Hour)
	}
	q.From, q.To = from.Truncate(time.Hour), to.Add(time.Hour-time.Nanosecond).Truncate(time.Hour)
	if !q.From.Before(q.To) {
		return q, errs.InvalidField("from", "invalid_from", "from must be before to.")
	}
	if q.To.Sub(q.From) > maxUsageSpan {
		return q, errs.InvalidField("from", "invalid_from", "Ask for at most 366 days at a time.")
	}
	if g := c.Query("group_by"); g != "" {
		for _, part := range strings.Split(g, ",") {
			switch strings.TrimSpace(part) {
			case "key":
				q.ByKey = true
			case "model":
				q.ByModel = true
			default:
				return q, errs.InvalidField("group_by", "invalid_group_by", "group_by takes key, model or key,model.")
			}
		}
	}
	if q.KeyID, err = queryID(c, "key_id"); err != nil {
		return q, err
	}
	if q.Model, err = queryText(c, "model", 200); err != nil {
		return q, err
	}
	return q, nil
}

// Generation: GET /api/generations/{id}.
func (h *LedgerAPI) Generation(c *fiber.Ctx) error {
	if err := onlyQuery(c); err != nil {
		return err
	}
	g, err := h.Store.GetGeneration(c.UserContext(), request.UserID(c), c.Params("id"))
	if err != nil {
		return err
	}
	return c.JSON(struct {
		ID           string    `json:"id"`
		Model        string    `json:"model"`
		KeyID        int64     `json:"keyId"`
		Streamed     bool      `json:"streamed"`
		Status       string    `json:"status"`
		InputTokens  int64     `json:"inputTokens"`
		OutputTokens int64     `json:"outputTokens"`
		Estimated    bool      `json:"estimated"`
		Cost         money.USD `json:"cost"`
		LatencyMs    int64     `json:"latencyMs"`
		FinishReason string    `json:"finishReason"`
		CreatedAt    string    `json:"createdAt"`
	}{g.ID, g.Model, g.KeyID, g.Streamed, g.Status, g.InputTokens, g.OutputTokens, g.Estimated, g.Cost, g.LatencyMs, g.FinishReason, timestamp(g.CreatedAt)})
}

// onlyQuery refuses query parameters other than names, and any sent twice,
// so that a misspelt parameter is an error rather than silently ignored.
func onlyQuery(c *fiber.Ctx, names ...string) error {
	var err error
	seen := map[string]bool{}
	c.Context().QueryArgs().VisitAll(func(k, _ []byte) {
		key := string(k)
		switch {
		case err != nil:
		case seen[key]:
			err = errs.InvalidField(key, "duplicate_parameter", fmt.Sprintf("The parameter %q is sent twice.", key))
		case !contains(names, key):
			err = errs.InvalidField(key, "unknown_parameter", fmt.Sprintf("Unknown parameter %q. Allowed: %s.", key, strings.Join(names, ", ")))
		}
		seen[key] = true
	})
	return err
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func queryInt(c *fiber.Ctx, name string, def, min, max int) (int, error) {
	raw := c.Query(name)
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < min || n > max || strconv.Itoa(n) != raw {
		return 0, errs.InvalidField(name, "invalid_"+name, fmt.Sprintf("%s must be a whole number from %d to %d.", name, min, max))
	}
	return n, nil
}

// queryID reads an optional positive integer id; 0 when absent.
func queryID(c *fiber.Ctx, name string) (int64, error) {
	raw := c.Query(name)
	if raw == "" {
		return 0, nil
	}
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != raw {
		return 0, errs.InvalidField(name, "invalid_"+name, name+" must be a positive integer id.")
	}
	return id, nil
}

// queryText reads an optional plain-text value: valid UTF-8 without control
// characters, at most max bytes (PostgreSQL refuses the rest with an error).
func queryText(c *fiber.Ctx, name string, max int) (string, error) {
	raw := c.Query(name)
	if len(raw) > max || !utf8.ValidString(raw) || strings.ContainsFunc(raw, unicode.IsControl) {
		return "", errs.InvalidField(name, "invalid_"+name, fmt.Sprintf("%s must be plain text of at most %d bytes.", name, max))
	}
	return raw, nil
}

// queryTime reads an RFC 3339 time or a date (midnight UTC); zero when absent.
func queryTime(c *fiber.Ctx, name string) (time.Time, error) {
	raw := c.Query(name)
	if raw == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, raw); err == nil && t.Year() >= 2000 && t.Year() <= 9999 {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, raw); err == nil && t.Year() >= 2000 {
		return t, nil
	}
	return time.Time{}, errs.InvalidField(name, "invalid_"+name, name+` must be an RFC 3339 time ("2026-11-01T00:00:00Z") or a date ("2026-11-01").`)
}
