package counting

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// PostgresStore keeps counts in PostgreSQL, for deployments of several
// machines: the tables, statements and top-N algorithm of SQLiteStore, on
// a *sql.DB that the caller opens with its PostgreSQL driver (pgx's
// stdlib, lib/pq), so that this package imports none. Any number of
// processes on any number of machines may share the database: a flush is
// one statement per table that adds to the rows (never overwrites) and
// locks them in one order, so concurrent flushes neither lose counts nor
// deadlock. Top-N queries read one repeatable-read snapshot. A
// PostgresStore is safe for concurrent use.
type PostgresStore struct {
	sqlStore
}

const postgresSchema = `
CREATE TABLE IF NOT EXISTS views (
	id     TEXT   NOT NULL,
	bucket BIGINT NOT NULL, -- Unix seconds of the bucket start, UTC
	n      BIGINT NOT NULL,
	PRIMARY KEY (id, bucket)
);
CREATE INDEX IF NOT EXISTS views_top ON views (bucket, n, id);
CREATE TABLE IF NOT EXISTS views_daily (
	id     TEXT   NOT NULL,
	bucket BIGINT NOT NULL, -- Unix seconds of the day start, UTC
	n      BIGINT NOT NULL,
	PRIMARY KEY (id, bucket)
);
CREATE INDEX IF NOT EXISTS views_daily_top ON views_daily (bucket, n, id);
CREATE TABLE IF NOT EXISTS counting_meta (
	k TEXT   PRIMARY KEY,
	v BIGINT NOT NULL
);
INSERT INTO counting_meta (k, v) VALUES ('rolled_before', 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS uniques (
	id     TEXT   NOT NULL,
	day    BIGINT NOT NULL, -- Unix seconds of the day start, UTC
	sketch BYTEA  NOT NULL,
	PRIMARY KEY (id, day)
);
`

// NewPostgres returns a store in db, creating its tables if needed
// (processes starting together take turns through an advisory lock).
// The store owns db: Close closes it.
func NewPostgres(ctx context.Context, db *sql.DB) (*PostgresStore, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("counting: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(7270003)`); err != nil {
		return nil, fmt.Errorf("counting: schema: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(7270003)`)
	if _, err := conn.ExecContext(ctx, postgresSchema); err != nil {
		return nil, fmt.Errorf("counting: schema: %w", err)
	}
	return &PostgresStore{sqlStore{w: db, r: db, pg: true}}, nil
}

// Close closes the database.
func (s *PostgresStore) Close() error { return s.close() }

// Add implements Store. Each delta is added to its bucket row and to its
// day's row in the same transaction, so the two never disagree.
func (s *PostgresStore) Add(ctx context.Context, deltas []Delta) error { return s.add(ctx, deltas) }

// Rollup implements Store, as SQLiteStore.Rollup.
func (s *PostgresStore) Rollup(ctx context.Context, before time.Time) error {
	return s.rollup(ctx, before)
}

// Sums implements Store. All of one call reads one snapshot.
func (s *PostgresStore) Sums(ctx context.Context, q Query) ([]Sum, error) { return s.sums(ctx, q) }

// AddSketches implements UniqueStore: read, merge and write back in one
// transaction, which processes take in turn (an advisory lock).
func (s *PostgresStore) AddSketches(ctx context.Context, sk []Sketch) error {
	return s.addSketches(ctx, sk)
}

// Sketches implements UniqueStore.
func (s *PostgresStore) Sketches(ctx context.Context, id string, from, to time.Time) ([][]byte, error) {
	return s.sketches(ctx, id, from, to)
}
