package counting

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"
	"time"

	_ "github.com/mattn/go-sqlite3" // the database/sql driver "sqlite3"
)

// SQLiteStore keeps counts in a SQLite file: hourly (or Counter.Bucket)
// rows in views, rolled-up daily rows in views_daily, both keyed by (id,
// bucket) and written with an additive upsert. It uses WAL, a busy
// timeout and one writer connection, so several processes on one machine
// can share the file. A SQLiteStore is safe for concurrent use.
type SQLiteStore struct {
	w, r *sql.DB
}

// DefaultBusyTimeout is how long a writer waits for another process's
// transaction before the flush fails (and is retried later).
const DefaultBusyTimeout = 5 * time.Second

const schema = `
CREATE TABLE IF NOT EXISTS views (
	id     TEXT    NOT NULL,
	bucket INTEGER NOT NULL, -- Unix seconds of the bucket start, UTC
	n      INTEGER NOT NULL,
	PRIMARY KEY (id, bucket)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS views_by_bucket ON views (bucket, id, n);
CREATE TABLE IF NOT EXISTS views_daily (
	id     TEXT    NOT NULL,
	bucket INTEGER NOT NULL, -- Unix seconds of the day start, UTC
	n      INTEGER NOT NULL,
	PRIMARY KEY (id, bucket)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS views_daily_by_bucket ON views_daily (bucket, id, n);
`

// OpenSQLite opens (creating if needed) the database at path.
func OpenSQLite(path string) (*SQLiteStore, error) {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_busy_timeout", fmt.Sprint(DefaultBusyTimeout.Milliseconds()))
	q.Set("_synchronous", "NORMAL")
	q.Set("_txlock", "immediate") // take the write lock at BEGIN: no upgrade deadlocks
	dsn := "file:" + path + "?" + q.Encode()
	w, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("counting: %w", err)
	}
	w.SetMaxOpenConns(1)
	if _, err := w.Exec(schema + uniqueSchema); err != nil {
		w.Close()
		return nil, fmt.Errorf("counting: schema: %w", err)
	}
	r, err := sql.Open("sqlite3", dsn+"&mode=ro")
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

// Add implements Store.
func (s *SQLiteStore) Add(ctx context.Context, deltas []Delta) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `INSERT INTO views (id, bucket, n) VALUES (?, ?, ?)
		ON CONFLICT (id, bucket) DO UPDATE SET n = n + excluded.n`)
	if err != nil {
		return err
	}
	defer st.Close()
	for _, d := range deltas {
		if _, err := st.ExecContext(ctx, d.ID, d.Bucket.Unix(), d.N); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Rollup implements Store.
func (s *SQLiteStore) Rollup(ctx context.Context, before time.Time) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	cut := before.Unix()
	if _, err := tx.ExecContext(ctx, `INSERT INTO views_daily (id, bucket, n)
		SELECT id, bucket - bucket % 86400, SUM(n) FROM views WHERE bucket < ? GROUP BY 1, 2
		ON CONFLICT (id, bucket) DO UPDATE SET n = n + excluded.n`, cut); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM views WHERE bucket < ?`, cut); err != nil {
		return err
	}
	return tx.Commit()
}

// Sums implements Store. Daily rows count when their day starts inside
// the window.
func (s *SQLiteStore) Sums(ctx context.Context, q Query) ([]Sum, error) {
	var b strings.Builder
	args := []any{}
	b.WriteString(`SELECT id, bucket, n FROM views WHERE bucket >= ? AND bucket < ?`)
	args = append(args, q.From.Unix(), q.To.Unix())
	if q.ID != "" {
		b.WriteString(` AND id = ?`)
		args = append(args, q.ID)
	}
	b.WriteString(` UNION ALL SELECT id, bucket, n FROM views_daily WHERE bucket >= ? AND bucket < ?`)
	args = append(args, q.From.Unix(), q.To.Unix())
	if q.ID != "" {
		b.WriteString(` AND id = ?`)
		args = append(args, q.ID)
	}
	inner := b.String()
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
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("counting: %w", err)
	}
	defer rows.Close()
	var out []Sum
	for rows.Next() {
		var sm Sum
		var bucket int64
		if err := rows.Scan(&sm.ID, &bucket, &sm.N); err != nil {
			return nil, fmt.Errorf("counting: %w", err)
		}
		if q.ByBucket {
			sm.Bucket = time.Unix(bucket, 0).UTC()
		}
		out = append(out, sm)
	}
	return out, rows.Err()
}
