package counting

import (
	"context"
	"database/sql"
	"math"
	"sort"
	"strings"
)

// Limits of the threshold algorithm in topN, past which one aggregate
// query over the window is cheaper.
const (
	// maxTopLists bounds the sorted lists (days and partial-day
	// buckets) a window may have: each round reads a page of every
	// list, so more than about a year of days costs more per round
	// than it saves.
	maxTopLists = 400
	// maxTopSeen bounds the distinct ids read: flat counts make the
	// algorithm read nearly every row, and then a GROUP BY is faster.
	maxTopSeen = 20000
	// maxTopPage bounds the rows read from one list in one round.
	maxTopPage = 4096
	// idsPerQuery bounds the ids of one totals query (SQLite allows
	// 32766 parameters; fewer keep each statement small).
	idsPerQuery = 500
)

// topList is one sorted list of the threshold algorithm: the rows of one
// bucket of one table, read in descending (n, id) order a page at a
// time, resuming after the last row read.
type topList struct {
	table  string
	bucket int64
	lastN  int64
	lastID string
	done   bool
}

// topN returns the limit ids with the largest totals over w, largest
// first, ties by id, using Fagin's threshold algorithm: read every list
// a page deeper each round, total every id seen for the first time by
// random access (primary key), and stop once the limit-th total beats
// the sum of the last counts read from each list, which bounds every id
// not yet seen. Exact, not an estimate.
func topN(ctx context.Context, tx *snapshot, w window, limit int) ([]Sum, error) {
	lists, err := topLists(ctx, tx, w)
	if err != nil {
		return nil, err
	}
	if len(lists) > maxTopLists {
		return aggregateTop(ctx, tx, w, limit)
	}
	seen := make(map[string]bool)
	var best []Sum
	page := max(limit, 16)
	for {
		var fresh []string
		var threshold int64
		open := false
		for _, l := range lists {
			if l.done {
				continue
			}
			rows, err := tx.QueryContext(ctx, `SELECT id, n FROM `+l.table+
				` WHERE bucket = ? AND (n, id) < (?, ?) ORDER BY n DESC, id DESC LIMIT ?`,
				l.bucket, l.lastN, l.lastID, page)
			if err != nil {
				return nil, err
			}
			got := 0
			for rows.Next() {
				if err := rows.Scan(&l.lastID, &l.lastN); err != nil {
					rows.Close()
					return nil, err
				}
				got++
				if !seen[l.lastID] {
					seen[l.lastID] = true
					fresh = append(fresh, l.lastID)
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return nil, err
			}
			if got < page {
				l.done = true // an unseen id has nothing in this list
			} else {
				threshold += l.lastN
				open = true
			}
		}
		totals, err := totalsOf(ctx, tx, w, fresh)
		if err != nil {
			return nil, err
		}
		best = append(best, totals...)
		sortSums(best)
		// Strictly greater: an unseen id equal to the threshold could
		// still win the tie on its id.
		if !open || (len(best) >= limit && best[limit-1].N > threshold) {
			break
		}
		if len(seen) > maxTopSeen {
			return aggregateTop(ctx, tx, w, limit)
		}
		page = min(page*2, maxTopPage)
	}
	if len(best) > limit {
		best = best[:limit]
	}
	return best, nil
}

// topLists enumerates the buckets that have rows in w, one list each.
// Each step is one index seek, so empty stretches cost nothing.
func topLists(ctx context.Context, tx *snapshot, w window) ([]*topList, error) {
	var lists []*topList
	for _, t := range []struct {
		table string
		spans []span
	}{{"views", w.hours}, {"views_daily", w.days}} {
		for _, sp := range t.spans {
			next := sp.from
			for len(lists) <= maxTopLists {
				var b sql.NullInt64
				if err := tx.QueryRowContext(ctx, `SELECT MIN(bucket) FROM `+t.table+
					` WHERE bucket >= ? AND bucket < ?`, next, sp.to).Scan(&b); err != nil {
					return nil, err
				}
				if !b.Valid {
					break
				}
				lists = append(lists, &topList{table: t.table, bucket: b.Int64, lastN: math.MaxInt64})
				next = b.Int64 + 1
			}
		}
	}
	return lists, nil
}

// totalsOf returns the totals over w of ids, by primary-key lookups.
func totalsOf(ctx context.Context, tx *snapshot, w window, ids []string) ([]Sum, error) {
	var out []Sum
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), idsPerQuery)]
		ids = ids[len(chunk):]
		in := make([]any, len(chunk))
		for i, id := range chunk {
			in[i] = id
		}
		cond := `id IN (?` + strings.Repeat(`, ?`, len(chunk)-1) + `)`
		var args []any
		inner := w.union(cond, in, &args)
		rows, err := tx.QueryContext(ctx, `SELECT id, 0, SUM(n) FROM (`+inner+`) AS u GROUP BY id`, args...)
		sums, err := scanSums(rows, err, false)
		if err != nil {
			return nil, err
		}
		out = append(out, sums...)
	}
	return out, nil
}

// aggregateTop is the plain query: sum every row of the window.
func aggregateTop(ctx context.Context, tx *snapshot, w window, limit int) ([]Sum, error) {
	var args []any
	inner := w.union("", nil, &args)
	args = append(args, limit)
	rows, err := tx.QueryContext(ctx, `SELECT id, 0, SUM(n) AS total FROM (`+inner+
		`) AS u GROUP BY id ORDER BY total DESC, id LIMIT ?`, args...)
	return scanSums(rows, err, false)
}

// sortSums orders by N descending, then by id.
func sortSums(s []Sum) {
	sort.Slice(s, func(i, j int) bool {
		if s[i].N != s[j].N {
			return s[i].N > s[j].N
		}
		return s[i].ID < s[j].ID
	})
}
