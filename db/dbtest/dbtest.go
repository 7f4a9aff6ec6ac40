// Package dbtest gives each test package a fresh, migrated PostgreSQL
// database, created from TEST_DATABASE_URL and dropped afterwards.
package dbtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/lib/pq"

	"modelswitch/db"
)

// Main runs a package's tests against a database of its own and returns the
// exit code: use it as os.Exit(dbtest.Main(m, &store)) in TestMain.
// Without TEST_DATABASE_URL the package is skipped, so that `go test ./...`
// still runs every package that needs no database; under CI it fails.
func Main(m *testing.M, store **db.Store) int {
	base := os.Getenv("TEST_DATABASE_URL")
	if base == "" {
		fmt.Fprintln(os.Stderr, "skipped: TEST_DATABASE_URL is not set. Run `make test`, which starts a PostgreSQL for the tests, or set it to a server where tests may create databases.")
		if os.Getenv("CI") != "" {
			return 1
		}
		return 0
	}
	testURL, drop, err := create(base)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dbtest:", err)
		return 1
	}
	defer drop()
	s, err := db.Open(context.Background(), db.Config{URL: testURL})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dbtest:", err)
		return 1
	}
	if err := s.Migrate(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "dbtest: migrate:", err)
		return 1
	}
	*store = s
	code := m.Run()
	s.Close()
	return code
}

// URL creates another fresh database and returns its URL, for tests that
// need an empty one (migrations); it is dropped when t ends.
func URL(t testing.TB) string {
	u, drop, err := create(os.Getenv("TEST_DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	return u
}

func create(base string) (string, func(), error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme == "" {
		return "", nil, fmt.Errorf("TEST_DATABASE_URL must be a postgres:// URL")
	}
	admin, err := sql.Open("postgres", base)
	if err != nil {
		return "", nil, err
	}
	raw := make([]byte, 6)
	rand.Read(raw)
	name := "modelswitch_test_" + hex.EncodeToString(raw)
	if _, err := admin.Exec(`CREATE DATABASE ` + name); err != nil { // name is ours: hex only
		admin.Close()
		return "", nil, fmt.Errorf("create test database: %w", err)
	}
	u.Path = "/" + name
	drop := func() {
		admin.Exec(`DROP DATABASE IF EXISTS ` + name + ` WITH (FORCE)`)
		admin.Close()
	}
	return u.String(), drop, nil
}

var emailSeq atomic.Int64

// Email is an address no other test, in this run or an earlier one on the
// same database, has used: label says which test made it.
func Email(label string) string {
	return fmt.Sprintf("%s-%d-%d@example.com", label, time.Now().UnixNano(), emailSeq.Add(1))
}
