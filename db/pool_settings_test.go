package db

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestConnectionSettings: every connection string gets the store's timeouts
// and lib/pq's binary_parameters (one round trip per query with
// parameters), in either form, and keeps what the operator set.
func TestConnectionSettings(t *testing.T) {
	cfg := Config{StatementTimeout: 5 * time.Second, LockTimeout: 2 * time.Second}
	u, err := url.Parse(withSessionSettings("postgres://db.example/app?sslmode=disable&lock_timeout=900", cfg))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("binary_parameters") != "yes" || q.Get("statement_timeout") != "5000" || q.Get("lock_timeout") != "900" || q.Get("sslmode") != "disable" {
		t.Fatalf("URL form: %s", u)
	}
	kv := withSessionSettings("host=db.example dbname=app binary_parameters=no", cfg)
	if !strings.Contains(kv, "binary_parameters=no") || strings.Count(kv, "binary_parameters=") != 1 ||
		!strings.Contains(kv, "statement_timeout=5000") || !strings.Contains(kv, "lock_timeout=2000") {
		t.Fatalf("key=value form: %s", kv)
	}
}
