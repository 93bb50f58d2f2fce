// Package testenv gives tests the real services they need, or says clearly
// why a test cannot run.
//
// Outside CI a test whose service is missing is skipped with a message that
// says how to provide it. With CI=true a missing service fails the test: CI
// must never pass by silently skipping what it exists to check.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// CI reports whether the tests run in CI (CI=true), where every service is required.
func CI() bool { return os.Getenv("CI") == "true" }

// DefaultPostgresDSN is used when CUSTOS_TEST_POSTGRES is not set.
const DefaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// Unavailable skips the test, or fails it in CI, explaining what is missing.
func Unavailable(t testing.TB, what, how string) {
	t.Helper()
	if CI() {
		t.Fatalf("%s is required in CI (CI=true) but unavailable: %s", what, how)
	}
	t.Skipf("skipping: %s unavailable (%s); CI runs this test", what, how)
}

// Postgres returns a DSN for PostgreSQL and a fresh schema name that is
// dropped when the test ends. CUSTOS_TEST_POSTGRES overrides the DSN.
func Postgres(t testing.TB) (dsn, schema string) {
	t.Helper()
	dsn = os.Getenv("CUSTOS_TEST_POSTGRES")
	if dsn == "" {
		dsn = DefaultPostgresDSN
	}
	conn, err := net.DialTimeout("tcp", "127.0.0.1:5432", 2*time.Second)
	if err == nil {
		conn.Close()
	}
	if err != nil && os.Getenv("CUSTOS_TEST_POSTGRES") == "" {
		Unavailable(t, "PostgreSQL", "nothing listens on 127.0.0.1:5432; start it or set CUSTOS_TEST_POSTGRES to a DSN")
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		Unavailable(t, "PostgreSQL", "cannot parse CUSTOS_TEST_POSTGRES")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		Unavailable(t, "PostgreSQL", "ping failed: "+err.Error())
	}
	var b [6]byte
	rand.Read(b[:])
	schema = "custos_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		db.Exec("DROP SCHEMA IF EXISTS " + schema + " CASCADE")
		db.Close()
	})
	return dsn, schema
}
