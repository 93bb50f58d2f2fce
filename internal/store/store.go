// Package store keeps the hub's state in a SQL database: the embedded SQLite
// file by default, PostgreSQL when the operator gives a DSN.
//
// One package serves both databases: the SQL is the same apart from
// placeholders and a few column types, so the schema lives twice (under
// migrations/) and the queries once. Migrations are embedded and applied by
// Open. The store knows rows, not rules: authorization, enrolment policy and
// encoding belong to the domain packages that call it. It must never log
// payloads or credentials.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/custos-iot/custos/internal/errs"
)

//go:embed migrations
var migrations embed.FS

// Dialect names a supported database.
type Dialect string

// The supported databases.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// Config says which database to open.
type Config struct {
	// Path is the SQLite database file. Used when DSN is empty.
	Path string
	// DSN is a PostgreSQL connection string (URL or key=value form). When
	// set, PostgreSQL is used instead of SQLite.
	DSN string
	// Schema is the PostgreSQL schema to use; created if missing. Default "custos".
	Schema string
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Store is an open database with the Custos schema.
type Store struct {
	db      *sql.DB
	dialect Dialect
	now     func() time.Time
	// writer orders the ingest and compaction transactions (see writeLock).
	writer writeLock
	// compacting serializes SQLite compaction passes.
	compacting sync.Mutex
}

// Open opens (creating if needed) the database and applies pending migrations.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Store{now: cfg.Now}
	var err error
	if cfg.DSN != "" {
		s.dialect = Postgres
		s.db, err = openPostgres(ctx, cfg)
	} else {
		s.dialect = SQLite
		s.db, err = openSQLite(cfg.Path)
	}
	if err != nil {
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

func openSQLite(path string) (*sql.DB, error) {
	if path == "" {
		return nil, errs.E(errs.Invalid, "store: no SQLite path and no PostgreSQL DSN given")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: create directory for %s: %w", path, err)
	}
	// synchronous(FULL): in WAL mode every commit is fsynced before it
	// returns, so an acknowledged batch survives power loss. The ingest
	// path groups many batches into one commit to make that affordable.
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(1)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// One writer at a time is SQLite's rule; more connections serve readers.
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: restrict %s: %w", path, err)
	}
	return db, nil
}

var schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func openPostgres(ctx context.Context, cfg Config) (*sql.DB, error) {
	schema := cfg.Schema
	if schema == "" {
		schema = "custos"
	}
	if !schemaRE.MatchString(schema) {
		return nil, errs.E(errs.Invalid, "store: schema name must be lower-case letters, digits and '_'")
	}
	pc, err := pgx.ParseConfig(cfg.DSN)
	if err != nil {
		// pgx's message may quote the DSN, which can hold a password.
		return nil, errs.E(errs.Invalid, "store: cannot parse the PostgreSQL DSN")
	}
	boot := stdlib.OpenDB(*pc)
	_, err = boot.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+schema)
	if isUnique(err) {
		// Another replica created it at the same moment.
		err = nil
	}
	boot.Close()
	if err != nil {
		return nil, errs.E(errs.Unavailable, fmt.Errorf("store: create schema %s: %w", schema, err))
	}
	pc.RuntimeParams["search_path"] = schema
	db := stdlib.OpenDB(*pc)
	db.SetMaxOpenConns(16)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, errs.E(errs.Unavailable, fmt.Errorf("store: connect to PostgreSQL: %w", err))
	}
	return db, nil
}

func (s *Store) migrate(ctx context.Context) error {
	sub, err := fs.Sub(migrations, "migrations/"+string(s.dialect))
	if err != nil {
		return err
	}
	d := goose.DialectSQLite3
	if s.dialect == Postgres {
		d = goose.DialectPostgres
	}
	// Features land as numbered migrations in parallel; a database that applied
	// a later number must still take an earlier one added since.
	opts := []goose.ProviderOption{goose.WithDisableGlobalRegistry(true), goose.WithAllowOutofOrder(true)}
	if s.dialect == Postgres {
		// Replicas starting together take turns (an advisory lock).
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return err
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(d, s.db, sub, opts...)
	if err != nil {
		return fmt.Errorf("store: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("store: apply migrations: %w", err)
	}
	return nil
}

// Dialect reports which database the store runs on.
func (s *Store) Dialect() Dialect { return s.dialect }

// DB exposes the database for tests and maintenance commands.
func (s *Store) DB() *sql.DB { return s.db }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// q rewrites a query written with '?' placeholders for the dialect. The
// queries of this package never hold a literal '?'.
func (s *Store) q(query string) string {
	if s.dialect != Postgres {
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

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// isUnique reports whether err is a unique-constraint violation.
func isUnique(err error) bool {
	if err == nil {
		return false
	}
	m := err.Error()
	return strings.Contains(m, "UNIQUE constraint failed") || strings.Contains(m, "SQLSTATE 23505") || strings.Contains(m, "PRIMARY KEY constraint failed")
}

func notFound(what string, err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return errs.E(errs.NotFound, what+" not found")
	}
	return err
}
