package db_test

import (
	"sync"
	"testing"
	"time"

	"modelswitch/db"
)

// The ledger at scale: one account with a million usage entries over 30
// days, 10 keys and 5 models, seeded in bulk once per run.
var (
	millionOnce sync.Once
	millionUser db.User
	millionNow  = time.Now().UTC().Truncate(time.Hour)
)

func seedMillion(b *testing.B) db.User {
	b.Helper()
	millionOnce.Do(func() {
		millionUser = newUser(b)
		start := time.Now()
		err := store.Exec(ctx, `
			INSERT INTO ledger_entries (user_id, type, amount, balance_after, description, created_at, key_id, model,
				generation_id, input_tokens, output_tokens, estimated, streamed, status, finish_reason, latency_ms)
			SELECT $1::bigint, 'usage', -1000, 0, 'model/' || (i % 5), $2::timestamptz - i * interval '2592 milliseconds', 1000000 + i % 10,
				'model/' || (i % 5), 'gen-bench-' || $1::bigint || '-' || i, 10, 20, false, false, 'completed', 'stop', 5
			FROM generate_series(1, 1000000) AS i`, millionUser.ID, millionNow)
		if err == nil {
			err = store.Exec(ctx, `
				INSERT INTO usage_hourly (user_id, hour, key_id, model, requests, input_tokens, output_tokens, cost)
				SELECT user_id, date_trunc('hour', created_at, 'UTC'), key_id, model, count(*), sum(input_tokens), sum(output_tokens), -sum(amount)
				FROM ledger_entries WHERE user_id = $1 GROUP BY 1, 2, 3, 4`, millionUser.ID)
		}
		if err == nil {
			err = store.Exec(ctx, `ANALYZE ledger_entries; ANALYZE usage_hourly`)
		}
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("seeded 1,000,000 usage entries in %s", time.Since(start).Round(time.Millisecond))
	})
	return millionUser
}

// BenchmarkSumUsage30Days1M is GET /api/usage's query for 30 days, by day,
// grouped by key and model: the largest answer (30 × 10 × 5 rows).
func BenchmarkSumUsage30Days1M(b *testing.B) {
	u := seedMillion(b)
	q := db.UsageQuery{From: millionNow.Add(-30 * 24 * time.Hour), To: millionNow.Add(time.Hour), Bucket: "day", ByKey: true, ByModel: true}
	for b.Loop() {
		rows, err := store.SumUsage(ctx, u.ID, q)
		if err != nil || len(rows) < 300 {
			b.Fatalf("%d rows, %v", len(rows), err)
		}
	}
}

// BenchmarkListEntries1M is GET /api/transactions: the newest page, a page
// half a million entries deep, and a page filtered by type and key.
func BenchmarkListEntries1M(b *testing.B) {
	u := seedMillion(b)
	first, _, err := store.ListEntries(ctx, u.ID, db.EntryFilter{Limit: 1})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		f    db.EntryFilter
	}{
		{"newest", db.EntryFilter{Limit: 100}},
		{"deep", db.EntryFilter{Limit: 100, StartingAfter: first[0].ID - 500_000}},
		{"usage-of-one-key", db.EntryFilter{Limit: 100, Type: db.EntryUsage, KeyID: 1000003, StartingAfter: first[0].ID - 500_000}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				page, _, err := store.ListEntries(ctx, u.ID, c.f)
				if err != nil || len(page) != 100 {
					b.Fatalf("%d entries, %v", len(page), err)
				}
			}
		})
	}
}

// BenchmarkSumUsageFromEntries1M is the baseline the hourly rollup saves:
// the same 30-day aggregate computed from the entries themselves.
func BenchmarkSumUsageFromEntries1M(b *testing.B) {
	u := seedMillion(b)
	for b.Loop() {
		if err := store.Exec(ctx, `
			SELECT date_trunc('day', created_at, 'UTC'), key_id, model, count(*), sum(input_tokens), sum(output_tokens), -sum(amount)
			FROM ledger_entries
			WHERE user_id = $1 AND type = 'usage' AND created_at >= $2 AND created_at < $3
			GROUP BY 1, 2, 3`, u.ID, millionNow.Add(-30*24*time.Hour), millionNow.Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
}
