package counting

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// sqlStore is the storage of counts in a SQL database through
// database/sql, shared by SQLiteStore and PostgresStore: the same tables
// (views, views_daily, counting_meta, uniques), the same statements with
// the placeholders rewritten for PostgreSQL, and the same top-N
// algorithm. It is safe for concurrent use.
type sqlStore struct {
	w, r *sql.DB // writer and readers (one pool for PostgreSQL)
	pg   bool    // PostgreSQL: $n placeholders, arrays, advisory locks
}

func (s *sqlStore) close() error {
	err := s.w.Close()
	if s.r != s.w {
		if rerr := s.r.Close(); err == nil {
			err = rerr
		}
	}
	return err
}

// rebind rewrites ? placeholders as $1, $2, ... for PostgreSQL. (No
// statement of this package has a ? inside a string literal.)
func (s *sqlStore) rebind(q string) string { return rebind(s.pg, q) }

func rebind(pg bool, q string) string {
	if !pg || !strings.Contains(q, "?") {
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

// snapshot is a read-only transaction in which every statement sees the
// same data (PostgreSQL's default, read committed, would not), with
// placeholders rewritten.
type snapshot struct {
	tx *sql.Tx
	pg bool
}

func (s *sqlStore) snapshot(ctx context.Context) (*snapshot, error) {
	var opts *sql.TxOptions
	if s.pg {
		opts = &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}
	}
	tx, err := s.r.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &snapshot{tx: tx, pg: s.pg}, nil
}

func (t *snapshot) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, rebind(t.pg, q), args...)
}

func (t *snapshot) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, rebind(t.pg, q), args...)
}

// addPostgres adds the deltas with one statement per table: the rows are
// summed per key (one statement may not update a row twice) and sorted,
// so that concurrent writers take their row locks in the same order and
// never deadlock.
func (s *sqlStore) addPostgres(ctx context.Context, tx *sql.Tx, deltas []Delta) error {
	type key struct {
		id     string
		bucket int64
	}
	for _, table := range []string{"views", "views_daily"} {
		sums := make(map[key]int64, len(deltas))
		for _, d := range deltas {
			b := d.Bucket.Unix()
			if table == "views_daily" {
				b = floorDay(b)
			}
			sums[key{d.ID, b}] += d.N
		}
		keys := make([]key, 0, len(sums))
		for k := range sums {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if keys[i].id != keys[j].id {
				return keys[i].id < keys[j].id
			}
			return keys[i].bucket < keys[j].bucket
		})
		ids, buckets, ns := make([]string, len(keys)), make([]int64, len(keys)), make([]int64, len(keys))
		for i, k := range keys {
			ids[i], buckets[i], ns[i] = k.id, k.bucket, sums[k]
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (id, bucket, n)
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) ORDER BY 1, 2
			ON CONFLICT (id, bucket) DO UPDATE SET n = `+table+`.n + excluded.n`, ids, buckets, ns); err != nil {
			return err
		}
	}
	return nil
}

// add adds each delta to its bucket row and to its day's row in one
// transaction.
func (s *sqlStore) add(ctx context.Context, deltas []Delta) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if s.pg {
		if err := s.addPostgres(ctx, tx, deltas); err != nil {
			return err
		}
		return tx.Commit()
	}
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

// rollup deletes the bucket rows of the days before before and moves the
// rollup point.
func (s *sqlStore) rollup(ctx context.Context, before time.Time) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	cut := floorDay(before.Unix())
	if _, err := tx.ExecContext(ctx, s.rebind(`DELETE FROM views WHERE bucket < ?`), cut); err != nil {
		return err
	}
	// v = the larger of v and the cut (MAX in SQLite, GREATEST in PostgreSQL).
	if _, err := tx.ExecContext(ctx, s.rebind(`UPDATE counting_meta SET v = CASE WHEN v > ? THEN v ELSE ? END WHERE k = 'rolled_before'`), cut, cut); err != nil {
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
		return `SELECT '' AS id, 0 AS bucket, 0 AS n WHERE 1 = 0`
	}
	return strings.Join(parts, ` UNION ALL `)
}

// rolledBefore reads the rollup point within q's snapshot.
func rolledBefore(ctx context.Context, q *snapshot) (int64, error) {
	var v int64
	err := q.QueryRowContext(ctx, `SELECT v FROM counting_meta WHERE k = 'rolled_before'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return v, err
}

// sums answers a Query from one snapshot.
func (s *sqlStore) sums(ctx context.Context, q Query) ([]Sum, error) {
	tx, err := s.snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("counting: %w", err)
	}
	defer tx.tx.Rollback()
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
		query = `SELECT id, bucket, SUM(n) FROM (` + inner + `) AS u GROUP BY id, bucket ORDER BY bucket`
	} else {
		query = `SELECT id, 0, SUM(n) AS total FROM (` + inner + `) AS u GROUP BY id ORDER BY total DESC, id`
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

// addSketches reads, merges and writes back the sketches in one
// transaction that processes take in turn: SQLite's immediate
// transaction, or a PostgreSQL advisory lock held until it ends (two
// new sketches of one key inserted at once would otherwise lose one).
func (s *sqlStore) addSketches(ctx context.Context, sk []Sketch) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if s.pg {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7270002)`); err != nil {
			return err
		}
	}
	for _, x := range sk {
		in, err := unmarshalHLL(x.Data)
		if err != nil {
			return err
		}
		var old []byte
		err = tx.QueryRowContext(ctx, s.rebind(`SELECT sketch FROM uniques WHERE id = ? AND day = ?`), x.ID, x.Day.Unix()).Scan(&old)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		default:
			if cur, err := unmarshalHLL(old); err == nil {
				in.merge(cur)
			}
		}
		if _, err := tx.ExecContext(ctx, s.rebind(`INSERT INTO uniques (id, day, sketch) VALUES (?, ?, ?)
			ON CONFLICT (id, day) DO UPDATE SET sketch = excluded.sketch`), x.ID, x.Day.Unix(), in.marshal()); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// sketches returns the stored sketches of id in the days of [from, to).
func (s *sqlStore) sketches(ctx context.Context, id string, from, to time.Time) ([][]byte, error) {
	rows, err := s.r.QueryContext(ctx, s.rebind(`SELECT sketch FROM uniques WHERE id = ? AND day >= ? AND day < ?`), id, from.Unix(), to.Unix())
	if err != nil {
		return nil, fmt.Errorf("counting: %w", err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, fmt.Errorf("counting: %w", err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}
