package seal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/custos-iot/custos/internal/errs"
)

// The key store's schema. It is small and changes rarely, so it is applied
// with CREATE ... IF NOT EXISTS rather than versioned migrations.
//
// subject_keys holds one wrapped keyset per live subject, with the IDs of
// its keys in clear (Tink's binary format drops its cleartext KeysetInfo), so
// that Destroy can name them without unwrapping. destroyed holds the
// evidence of every destroyed key: reason "erase" for Destroy, "retire" for
// Retire. Neither table holds key material in clear; key IDs are not secret
// (every ciphertext carries one).
var schema = map[bool][]string{
	false: { // SQLite
		`CREATE TABLE IF NOT EXISTS subject_keys (
			subject_id     TEXT PRIMARY KEY,
			tenant_id      TEXT NOT NULL,
			kek_id         TEXT NOT NULL,
			wrapped        BLOB NOT NULL,
			created_ms     INTEGER NOT NULL,
			updated_ms     INTEGER NOT NULL,
			primary_key_id INTEGER NOT NULL,
			primary_ms     INTEGER NOT NULL,
			key_count      INTEGER NOT NULL,
			key_ids        TEXT NOT NULL
		)`,
		`CREATE INDEX IF NOT EXISTS subject_keys_kek ON subject_keys (kek_id)`,
		`CREATE TABLE IF NOT EXISTS destroyed (
			subject_id   TEXT NOT NULL,
			tenant_id    TEXT NOT NULL,
			destroyed_ms INTEGER NOT NULL,
			key_ids      TEXT NOT NULL,
			kek_id       TEXT NOT NULL,
			reason       TEXT NOT NULL
		)`,
		`CREATE INDEX IF NOT EXISTS destroyed_subject ON destroyed (subject_id)`,
	},
	true: { // PostgreSQL
		`CREATE TABLE IF NOT EXISTS subject_keys (
			subject_id     TEXT PRIMARY KEY,
			tenant_id      TEXT NOT NULL,
			kek_id         TEXT NOT NULL,
			wrapped        BYTEA NOT NULL,
			created_ms     BIGINT NOT NULL,
			updated_ms     BIGINT NOT NULL,
			primary_key_id BIGINT NOT NULL,
			primary_ms     BIGINT NOT NULL,
			key_count      INTEGER NOT NULL,
			key_ids        TEXT NOT NULL
		)`,
		`CREATE INDEX IF NOT EXISTS subject_keys_kek ON subject_keys (kek_id)`,
		`CREATE TABLE IF NOT EXISTS destroyed (
			subject_id   TEXT NOT NULL,
			tenant_id    TEXT NOT NULL,
			destroyed_ms BIGINT NOT NULL,
			key_ids      TEXT NOT NULL,
			kek_id       TEXT NOT NULL,
			reason       TEXT NOT NULL
		)`,
		`CREATE INDEX IF NOT EXISTS destroyed_subject ON destroyed (subject_id)`,
	},
}

func openSQLite(path string) (*sql.DB, error) {
	if path == "" {
		return nil, errs.E(errs.Invalid, "seal: no key store path and no PostgreSQL DSN given")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("seal: create directory for %s: %w", path, err)
	}
	// Create the file 0600 before SQLite does, so that the -wal and -shm
	// files SQLite derives from it are 0600 from the start too.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("seal: open key store %s: %w", path, err)
	}
	f.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("seal: restrict key store %s: %w", path, err)
	}
	// secure_delete(ON) on every connection: SQLite overwrites deleted and
	// replaced content with zeros, so a destroyed or rewrapped keyset does
	// not linger in free space. synchronous(FULL): an acknowledged key is
	// durable before data is sealed under it.
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "secure_delete(1)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("seal: open key store %s: %w", path, err)
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("seal: open key store %s: %w", path, err)
	}
	return db, nil
}

var schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func openPostgres(ctx context.Context, dsn, schema string) (*sql.DB, error) {
	if schema == "" {
		schema = "custos_keys"
	}
	if !schemaRE.MatchString(schema) {
		return nil, errs.E(errs.Invalid, "seal: schema name must be lower-case letters, digits and '_'")
	}
	pc, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN, which can hold a password.
		return nil, errs.E(errs.Invalid, "seal: cannot parse the PostgreSQL DSN")
	}
	boot := stdlib.OpenDB(*pc)
	_, err = boot.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+schema)
	boot.Close()
	if err != nil {
		return nil, errs.E(errs.Unavailable, fmt.Errorf("seal: create schema %s: %w", schema, err))
	}
	pc.RuntimeParams["search_path"] = schema
	db := stdlib.OpenDB(*pc)
	db.SetMaxOpenConns(16)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, errs.E(errs.Unavailable, fmt.Errorf("seal: connect to PostgreSQL: %w", err))
	}
	return db, nil
}

func (k *Keys) migrate(ctx context.Context) error {
	for _, stmt := range schema[k.pg] {
		if _, err := k.db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("seal: apply key store schema: %w", err)
		}
	}
	return nil
}

// q rewrites a query written with '?' placeholders for the dialect. The
// queries of this package never hold a literal '?'.
func (k *Keys) q(query string) string {
	if !k.pg {
		return query
	}
	var b strings.Builder
	n := 0
	for _, c := range query {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// scrub removes what a delete or rewrite left behind in the live key store
// files. SQLite: with secure_delete on, the deleted cells are zeroed in the
// page images the delete wrote to the WAL; a TRUNCATE checkpoint copies them
// into the database file and truncates the WAL, which held the older page
// images. PostgreSQL: VACUUM removes the dead row versions from the heap.
func (k *Keys) scrub(ctx context.Context) error {
	if k.pg {
		if _, err := k.db.ExecContext(ctx, "VACUUM subject_keys"); err != nil {
			return errs.E(errs.Unavailable, fmt.Errorf("vacuum key store: %w", err))
		}
		return nil
	}
	// A checkpoint cannot finish while a reader holds an old snapshot;
	// busy_timeout makes SQLite wait for it, and we retry a few times.
	var last error
	for attempt := 0; attempt < 50; attempt++ {
		var busy, logFrames, done int
		err := k.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &done)
		if err == nil && busy == 0 {
			return nil
		}
		last = err
		if err == nil {
			last = errors.New("checkpoint blocked by readers")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return errs.E(errs.Unavailable, fmt.Errorf("checkpoint key store: %w", last))
}
