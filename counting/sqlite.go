package counting

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
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
	w, r *sql.DB
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
	return &SQLiteStore{w: w, r: r}, nil
}

// Close closes the database.
func (s *SQLiteStore) Close() error {
	err := s.w.Close()
	if rerr := s.r.Close(); err == nil {
		err = rerr
	}
	return err
}

// Add implements Store. Each delta is added to its bucket row and to its
// day's row in the same transaction, so the two never disagree.
func (s *SQLiteStore) Add(ctx context.Context, deltas []Delta) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	hourly, err := tx.PrepareContext(ctx, `INSERT INTO views (id, bucket, n) VALUES (?, ?, ?)
		ON CONFLICT (id, bucket) DO UPDATE SET n = n + excluded.n`)
	if err != nil {
		return err
	}
	defer hourly.Close()
	daily, err := tx.PrepareContext(ctx, `INSERT INTO views_daily (id, bucket, n) VALUES (?, ?, ?)
		ON CONFLICT (id, bucket) DO UPDATE SET n = n + excluded.n`)
	if err != nil {
		return err
	}
	defer daily.Close()
	for _, d := range deltas {
		b := d.Bucket.Unix()
		if _, err := hourly.ExecContext(ctx, d.ID, b, d.N); err != nil {
			return err
		}
		if _, err := daily.ExecContext(ctx, d.ID, floorDay(b), d.N); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Rollup implements Store: the bucket rows of the days before before
// (rounded down to a UTC day) are deleted; their daily rows stay.
// Queries count a day before that point whole when it starts inside the
// window.
func (s *SQLiteStore) Rollup(ctx context.Context, before time.Time) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	cut := floorDay(before.Unix())
	if _, err := tx.ExecContext(ctx, `DELETE FROM views WHERE bucket < ?`, cut); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE counting_meta SET v = MAX(v, ?) WHERE k = 'rolled_before'`, cut); err != nil {
		return err
	}
	return tx.Commit()
}

func floorDay(t int64) int64 {
	m := t % day
	if m < 0 {
		m += day
	}
	return t - m
}

// span is a range [from, to) of bucket starts, Unix seconds.
type span struct{ from, to int64 }

// window is a query window split by where its counts live: bucket rows
// in hours, daily rows in days.
type window struct {
	hours, days []span
}

func (w *window) add(dst *[]span, from, to int64) {
	if to > from {
		*dst = append(*dst, span{from, to})
	}
}

// plainWindow splits [from, to) at the rollup point: bucket rows after
// it, daily rows before it (a day counting whole when it starts in the
// window), as Total and Series read it.
func plainWindow(from, to, rolled int64) window {
	var w window
	w.add(&w.hours, max(from, rolled), to)
	w.add(&w.days, from, min(to, rolled))
	return w
}

// topWindow is plainWindow with the whole days after the rollup point
// read from their daily rows: the same counts in far fewer rows and
// lists.
func topWindow(from, to, rolled int64) window {
	var w window
	w.add(&w.days, from, min(to, rolled))
	start := max(from, rolled)
	fullFrom, fullTo := floorDay(start+day-1), floorDay(to)
	if fullTo <= fullFrom {
		w.add(&w.hours, start, to)
		return w
	}
	w.add(&w.hours, start, fullFrom)
	w.add(&w.hours, fullTo, to)
	w.add(&w.days, fullFrom, fullTo)
	return w
}

// where returns "(bucket >= ? AND bucket < ?) OR ..." for spans.
func where(spans []span, args *[]any) string {
	var b strings.Builder
	b.WriteByte('(')
	for i, sp := range spans {
		if i > 0 {
			b.WriteString(" OR ")
		}
		b.WriteString("(bucket >= ? AND bucket < ?)")
		*args = append(*args, sp.from, sp.to)
	}
	b.WriteByte(')')
	return b.String()
}

// union returns a query of (id, bucket, n) rows of w, narrowed by extra
// (a condition with its args, or "").
func (w window) union(extra string, extraArgs []any, args *[]any) string {
	var parts []string
	for _, t := range []struct {
		table string
		spans []span
	}{{"views", w.hours}, {"views_daily", w.days}} {
		if len(t.spans) == 0 {
			continue
		}
		q := `SELECT id, bucket, n FROM ` + t.table + ` WHERE ` + where(t.spans, args)
		if extra != "" {
			q += ` AND ` + extra
			*args = append(*args, extraArgs...)
		}
		parts = append(parts, q)
	}
	if len(parts) == 0 {
		return `SELECT '' AS id, 0 AS bucket, 0 AS n WHERE 0`
	}
	return strings.Join(parts, ` UNION ALL `)
}

// rolledBefore reads the rollup point within q's snapshot.
func rolledBefore(ctx context.Context, q queryer) (int64, error) {
	var v int64
	err := q.QueryRowContext(ctx, `SELECT v FROM counting_meta WHERE k = 'rolled_before'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return v, err
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Sums implements Store. All of one call reads one snapshot.
func (s *SQLiteStore) Sums(ctx context.Context, q Query) ([]Sum, error) {
	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("counting: %w", err)
	}
	defer tx.Rollback()
	rolled, err := rolledBefore(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("counting: %w", err)
	}
	from, to := q.From.Unix(), q.To.Unix()
	if !q.ByBucket && q.ID == "" && q.Limit > 0 {
		out, err := topN(ctx, tx, topWindow(from, to, rolled), q.Limit)
		if err != nil {
			return nil, fmt.Errorf("counting: %w", err)
		}
		return out, nil
	}
	w := plainWindow(from, to, rolled)
	var args []any
	var inner string
	if q.ID != "" {
		inner = w.union(`id = ?`, []any{q.ID}, &args)
	} else {
		inner = w.union("", nil, &args)
	}
	var query string
	if q.ByBucket {
		query = `SELECT id, bucket, SUM(n) FROM (` + inner + `) GROUP BY id, bucket ORDER BY bucket`
	} else {
		query = `SELECT id, 0, SUM(n) AS total FROM (` + inner + `) GROUP BY id ORDER BY total DESC, id`
		if q.Limit > 0 {
			query += ` LIMIT ?`
			args = append(args, q.Limit)
		}
	}
	rows, err := tx.QueryContext(ctx, query, args...)
	out, err := scanSums(rows, err, q.ByBucket)
	if err != nil {
		return nil, fmt.Errorf("counting: %w", err)
	}
	return out, nil
}

// scanSums reads (id, bucket, n) rows; the bucket is kept if byBucket.
func scanSums(rows *sql.Rows, err error, byBucket bool) ([]Sum, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Sum
	for rows.Next() {
		var sm Sum
		var bucket int64
		if err := rows.Scan(&sm.ID, &bucket, &sm.N); err != nil {
			return nil, err
		}
		if byBucket {
			sm.Bucket = time.Unix(bucket, 0).UTC()
		}
		out = append(out, sm)
	}
	return out, rows.Err()
}
