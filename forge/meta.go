package forge

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx"
	_ "github.com/mattn/go-sqlite3"    // the database/sql driver "sqlite3"

	"github.com/forgekit/forgekit/slowlog"
)

//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrations embed.FS

// Meta is the forge's metadata (users, tokens, repositories,
// collaborators, protected branches, webhooks) in a SQL database: SQLite
// by default (WAL, busy timeout, foreign keys), or PostgreSQL for
// deployments of several machines (OpenMetaDSN). Both run the same
// statements through database/sql, portable SQL (upserts with ON
// CONFLICT, RETURNING for new ids, TRUE and FALSE), with the placeholders
// rewritten for PostgreSQL; the migrations are kept per database, with
// the same versions. A Meta is safe for concurrent use.
//
// There is deliberately no interface with a method per query: database/sql
// is the seam, and a third database would be a third dialect.
type Meta struct {
	db       *sql.DB
	postgres bool             // $n placeholders, BOOLEAN columns, advisory lock while migrating
	now      func() time.Time // the clock; nil means time.Now (tests set it)
}

// clock is the time now.
func (m *Meta) clock() time.Time {
	if m.now != nil {
		return m.now()
	}
	return time.Now()
}

// OpenMeta opens (creating and migrating if needed) the SQLite database
// at path.
func OpenMeta(ctx context.Context, path string) (*Meta, error) {
	if err := createPrivate(path); err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_busy_timeout=5000&_foreign_keys=on&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	return openMeta(ctx, db, false)
}

// OpenMetaDSN opens the metadata database named by dsn: a PostgreSQL URL
// (postgres://user@host/db?sslmode=disable, through pgx), or a SQLite
// file ("sqlite:PATH" or a plain path).
func OpenMetaDSN(ctx context.Context, dsn string) (*Meta, error) {
	if !IsPostgresDSN(dsn) {
		return OpenMeta(ctx, strings.TrimPrefix(dsn, "sqlite:"))
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	return openMeta(ctx, db, true)
}

// createPrivate creates the SQLite file at path readable by its owner
// alone (it holds password and token hashes, and webhook secrets); SQLite
// gives its journal files the same mode. An existing file is left as it
// is.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	return f.Close()
}

// IsPostgresDSN reports whether dsn names a PostgreSQL database.
func IsPostgresDSN(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

func openMeta(ctx context.Context, db *sql.DB, postgres bool) (*Meta, error) {
	m := &Meta{db: db, postgres: postgres}
	if err := m.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return m, nil
}

// Close closes the database.
func (m *Meta) Close() error { return m.db.Close() }

// rebind rewrites ? placeholders as $1, $2, ... for PostgreSQL. (No
// statement of this package has a ? inside a string literal.)
func (m *Meta) rebind(q string) string {
	if !m.postgres || !strings.Contains(q, "?") {
		return q
	}
	parts := strings.Split(q, "?")
	var b strings.Builder
	b.WriteString(parts[0])
	for i, p := range parts[1:] {
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(i + 1))
		b.WriteString(p)
	}
	return b.String()
}

// queryer is what *sql.DB, *sql.Conn and *sql.Tx have in common.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Every statement goes through exec, query or queryRow, which count it
// (with its time until the database answered, and its arguments for the
// repeated-work watch) into the Work of the request or job of ctx.

func (m *Meta) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	defer counted(ctx, time.Now(), q, args)
	return m.db.ExecContext(ctx, m.rebind(q), args...)
}

func (m *Meta) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	defer counted(ctx, time.Now(), q, args)
	return m.db.QueryContext(ctx, m.rebind(q), args...)
}

func (m *Meta) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	defer counted(ctx, time.Now(), q, args)
	return m.db.QueryRowContext(ctx, m.rebind(q), args...)
}

func counted(ctx context.Context, start time.Time, q string, args []any) {
	slowlog.CountKey(ctx, slowlog.Query, time.Since(start), q, args...)
}

// insert runs an INSERT ... RETURNING id and returns the id, or
// sql.ErrNoRows when ON CONFLICT DO NOTHING inserted nothing.
func (m *Meta) insert(ctx context.Context, q string, args ...any) (int64, error) {
	var id int64
	err := m.queryRow(ctx, q, args...).Scan(&id)
	return id, err
}

// migrate applies the embedded migrations of the database not applied
// yet, each in its own transaction, in the order of their version
// numbers. Processes opening the database together take turns: SQLite's
// immediate transactions, PostgreSQL's advisory lock.
func (m *Meta) migrate(ctx context.Context) error {
	dir := "migrations/sqlite"
	var q queryer = m.db
	if m.postgres {
		dir = "migrations/postgres"
		conn, err := m.db.Conn(ctx)
		if err != nil {
			return fmt.Errorf("forge: migrations: %w", err)
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(7270001)`); err != nil {
			return fmt.Errorf("forge: migrations: %w", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(7270001)`)
		q = conn
	}
	if _, err := q.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("forge: migrations: %w", err)
	}
	names, err := fs.Glob(migrations, dir+"/*.sql")
	if err != nil {
		return fmt.Errorf("forge: migrations: %w", err)
	}
	sort.Strings(names)
	for _, name := range names {
		base := path.Base(name)
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("forge: migration %s: bad version", base)
		}
		if err := m.apply(ctx, q, v, name); err != nil {
			return err
		}
	}
	return nil
}

func (m *Meta) apply(ctx context.Context, q queryer, version int, name string) error {
	begin := func() (*sql.Tx, error) {
		if c, ok := q.(*sql.Conn); ok {
			return c.BeginTx(ctx, nil)
		}
		return m.db.BeginTx(ctx, nil)
	}
	tx, err := begin()
	if err != nil {
		return fmt.Errorf("forge: migration %d: %w", version, err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, m.rebind(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`), version).Scan(&n); err != nil {
		return fmt.Errorf("forge: migration %d: %w", version, err)
	}
	if n > 0 {
		return nil
	}
	body, err := migrations.ReadFile(name)
	if err != nil {
		return fmt.Errorf("forge: migration %d: %w", version, err)
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return fmt.Errorf("forge: migration %d: %w", version, err)
	}
	if _, err := tx.ExecContext(ctx, m.rebind(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`), version, m.clock().Unix()); err != nil {
		return fmt.Errorf("forge: migration %d: %w", version, err)
	}
	return tx.Commit()
}

// SchemaVersion returns the highest migration applied.
func (m *Meta) SchemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	err := m.queryRow(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v)
	return int(v.Int64), err
}

// Ping checks that the database answers.
func (m *Meta) Ping(ctx context.Context) error { return m.db.PingContext(ctx) }
