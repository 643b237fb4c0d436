package counting

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// SQLiteStore keeps counts in a SQLite file: one row per id and bucket
// (hourly, or Counter.Bucket) in views, and one row per id and UTC day in
// views_daily, written together by every Add with an additive upsert.
// Rollup deletes the bucket rows of old days, whose daily rows remain.
// It uses WAL, a busy timeout and one writer connection, so several
// processes on one machine can share the file. A SQLiteStore is safe for
// concurrent use.
//
// This package imports no SQLite driver, so that programs counting in
// PostgreSQL build without cgo: package counting/sqlite opens a file
// with github.com/mattn/go-sqlite3 (sqlite.Open), and NewSQLite takes
// databases opened with any driver.
//
// Top-N queries (MostViewed) do not aggregate the whole window: the
// window is split into whole days (daily rows) and the buckets of its
// partial days, each read in descending order through the (bucket, n, id)
// index, and the threshold algorithm stops as soon as no unseen id can
// reach the top, all inside one read snapshot. On the skewed counts of
// real sites that reads a few rows per list; on flat counts it degrades
// to reading everything, which is what a GROUP BY does anyway.
type SQLiteStore struct {
	sqlStore
}

// DefaultBusyTimeout is how long a writer waits for another process's
// transaction before the flush fails (and is retried later).
const DefaultBusyTimeout = 5 * time.Second

const day = 86400

const schema = `
CREATE TABLE IF NOT EXISTS views (
	id     TEXT    NOT NULL,
	bucket INTEGER NOT NULL, -- Unix seconds of the bucket start, UTC
	n      INTEGER NOT NULL,
	PRIMARY KEY (id, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS views_daily (
	id     TEXT    NOT NULL,
	bucket INTEGER NOT NULL, -- Unix seconds of the day start, UTC
	n      INTEGER NOT NULL,
	PRIMARY KEY (id, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counting_meta (
	k TEXT    PRIMARY KEY,
	v INTEGER NOT NULL
) WITHOUT ROWID;
`

// schemaVersion is PRAGMA user_version once migrate has run. Version 0
// databases kept daily rows only for rolled-up days.
const schemaVersion = 1

// migrate brings a database to schemaVersion in one immediate
// transaction, so that processes opening the file together agree.
func migrate(db *sql.DB) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		return err
	}
	if v >= schemaVersion {
		return nil
	}
	// Version 0 to 1: daily rows for every day (folded from the bucket
	// rows still there), indexes in descending-count order, and the
	// day before which bucket rows are gone.
	for _, q := range []string{
		`INSERT INTO views_daily (id, bucket, n)
			SELECT id, bucket - bucket % 86400, SUM(n) FROM views GROUP BY 1, 2
			ON CONFLICT (id, bucket) DO UPDATE SET n = n + excluded.n`,
		`DROP INDEX IF EXISTS views_by_bucket`,
		`DROP INDEX IF EXISTS views_daily_by_bucket`,
		`CREATE INDEX IF NOT EXISTS views_top ON views (bucket, n, id)`,
		`CREATE INDEX IF NOT EXISTS views_daily_top ON views_daily (bucket, n, id)`,
		// Bucket rows exist from the first whole day that has any;
		// before it, only daily rows.
		`INSERT OR REPLACE INTO counting_meta (k, v) VALUES ('rolled_before', COALESCE(
			(SELECT (MIN(bucket) + 86399) / 86400 * 86400 FROM views),
			(SELECT MAX(bucket) + 86400 FROM views_daily), 0))`,
		`PRAGMA user_version = 1`,
	} {
		if _, err := tx.Exec(q); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// NewSQLite returns a store in a SQLite database, creating its tables
// or bringing older ones up to date. w must be a pool of one connection
// (SetMaxOpenConns(1)) whose transactions take the write lock at BEGIN
// (BEGIN IMMEDIATE), so that writers of several processes queue instead
// of deadlocking on a lock upgrade; r reads, ideally read-only, with
// deferred transactions. Both should use WAL and a busy timeout
// (DefaultBusyTimeout), which connection strings set per driver: package
// counting/sqlite opens them for github.com/mattn/go-sqlite3. The store
// owns w and r: Close closes them.
func NewSQLite(w, r *sql.DB) (*SQLiteStore, error) {
	if _, err := w.Exec(schema + uniqueSchema); err != nil {
		return nil, fmt.Errorf("counting: schema: %w", err)
	}
	if err := migrate(w); err != nil {
		return nil, fmt.Errorf("counting: migrate: %w", err)
	}
	return &SQLiteStore{sqlStore{w: w, r: r}}, nil
}

// Close closes the database.
func (s *SQLiteStore) Close() error { return s.close() }

// Add implements Store. Each delta is added to its bucket row and to its
// day's row in the same transaction, so the two never disagree.
func (s *SQLiteStore) Add(ctx context.Context, deltas []Delta) error { return s.add(ctx, deltas) }

// Rollup implements Store: the bucket rows of the days before before
// (rounded down to a UTC day) are deleted; their daily rows stay.
// Queries count a day before that point whole when it starts inside the
// window.
func (s *SQLiteStore) Rollup(ctx context.Context, before time.Time) error {
	return s.rollup(ctx, before)
}

// Sums implements Store. All of one call reads one snapshot.
func (s *SQLiteStore) Sums(ctx context.Context, q Query) ([]Sum, error) { return s.sums(ctx, q) }

// AddSketches implements UniqueStore: read, merge and write back in one
// immediate transaction, which serializes the processes sharing the file.
func (s *SQLiteStore) AddSketches(ctx context.Context, sk []Sketch) error {
	return s.addSketches(ctx, sk)
}

// Sketches implements UniqueStore.
func (s *SQLiteStore) Sketches(ctx context.Context, id string, from, to time.Time) ([][]byte, error) {
	return s.sketches(ctx, id, from, to)
}
