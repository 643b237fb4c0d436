package counting

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	_ "github.com/mattn/go-sqlite3" // the database/sql driver "sqlite3"
)

// SQLiteStore keeps counts in a SQLite file: one row per id and bucket
// (hourly, or Counter.Bucket) in views, and one row per id and UTC day in
// views_daily, written together by every Add with an additive upsert.
// Rollup deletes the bucket rows of old days, whose daily rows remain.
// It uses WAL, a busy timeout and one writer connection, so several
// processes on one machine can share the file. A SQLiteStore is safe for
// concurrent use.
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

// OpenSQLite opens (creating if needed) the database at path.
func OpenSQLite(path string) (*SQLiteStore, error) {
	// Readable by its owner alone (what people viewed is nobody else's
	// business); SQLite gives its journal files the same mode.
	if f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); err == nil {
		f.Close()
	} else if !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("counting: %w", err)
	}
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_busy_timeout", fmt.Sprint(DefaultBusyTimeout.Milliseconds()))
	q.Set("_synchronous", "NORMAL")
	dsn := "file:" + path + "?" + q.Encode()
	// The writer takes the write lock at BEGIN: no upgrade deadlocks.
	w, err := sql.Open("sqlite3", dsn+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("counting: %w", err)
	}
	w.SetMaxOpenConns(1)
	if _, err := w.Exec(schema + uniqueSchema); err != nil {
		w.Close()
		return nil, fmt.Errorf("counting: schema: %w", err)
	}
	if err := migrate(w); err != nil {
		w.Close()
		return nil, fmt.Errorf("counting: migrate: %w", err)
	}
	// Readers take a snapshot at their first read (deferred BEGIN).
	r, err := sql.Open("sqlite3", dsn+"&_txlock=deferred&mode=ro")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("counting: %w", err)
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
