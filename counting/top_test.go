package counting_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/counting"
	"github.com/forgekit/forgekit/counting/sqlite"
)

// model is the brute-force reference: every delta ever added, and the
// rollup point before which a day counts whole when it starts inside the
// window.
type model struct {
	deltas []counting.Delta
	rolled time.Time
}

func (m *model) totals(from, to time.Time) map[string]int64 {
	out := make(map[string]int64)
	for _, d := range m.deltas {
		t := d.Bucket
		if t.Before(m.rolled) {
			t = t.Truncate(24 * time.Hour)
		}
		if !t.Before(from) && t.Before(to) {
			out[d.ID] += d.N
		}
	}
	return out
}

func (m *model) top(from, to time.Time, limit int) []counting.Sum {
	var out []counting.Sum
	for id, n := range m.totals(from, to) {
		out = append(out, counting.Sum{ID: id, N: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].N != out[j].N {
			return out[i].N > out[j].N
		}
		return out[i].ID < out[j].ID
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}

// TestTopMatchesBruteForce checks the threshold algorithm against a
// brute-force total over random data: skewed and flat counts (many
// ties), before and after rollups, on windows aligned to hours, days and
// neither.
func TestTopMatchesBruteForce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		ids   int
		count func(r *rand.Rand, i int) int64
	}{
		{"skewed", 300, func(r *rand.Rand, i int) int64 { return 1 + int64(r.IntN(1000/(i+1)+1)) }},
		{"flat", 200, func(r *rand.Rand, i int) int64 { return 1 + int64(r.IntN(3)) }},
		{"equal", 50, func(r *rand.Rand, i int) int64 { return 5 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := open(t)
			ctx := context.Background()
			r := rand.New(rand.NewPCG(1, uint64(len(tc.name))))
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			m := &model{}
			// 10 days of hourly buckets; each id seen in a random third of them.
			for h := range 10 * 24 {
				var batch []counting.Delta
				for i := range tc.ids {
					if r.IntN(3) == 0 {
						batch = append(batch, counting.Delta{ID: fmt.Sprintf("v%03d", i), Bucket: start.Add(time.Duration(h) * time.Hour), N: tc.count(r, i)})
					}
				}
				require.NoError(t, st.Add(ctx, batch))
				m.deltas = append(m.deltas, batch...)
			}
			check := func(stage string) {
				for range 40 {
					from := start.Add(time.Duration(r.IntN(11*24*60)-12*60) * time.Minute)
					to := from.Add(time.Duration(1+r.IntN(8*24*60)) * time.Minute)
					switch r.IntN(3) {
					case 0: // hour-aligned
						from, to = from.Truncate(time.Hour), to.Truncate(time.Hour).Add(time.Hour)
					case 1: // day-aligned
						from, to = from.Truncate(24*time.Hour), to.Truncate(24*time.Hour).Add(24*time.Hour)
					}
					limit := 1 + r.IntN(12)
					got, err := st.Sums(ctx, counting.Query{From: from, To: to, Limit: limit})
					require.NoError(t, err)
					want := m.top(from, to, limit)
					if len(want) == 0 {
						assert.Empty(t, got, "%s [%v, %v)", stage, from, to)
						continue
					}
					require.Equal(t, want, got, "%s [%v, %v) top %d", stage, from, to, limit)
				}
			}
			check("hourly")
			cut := start.Add(4 * 24 * time.Hour)
			require.NoError(t, st.Rollup(ctx, cut.Add(5*time.Hour)), "rounded down to the day")
			m.rolled = cut
			check("rolled up")
			// A late delta for a rolled-up day counts in that day.
			late := counting.Delta{ID: "v007", Bucket: start.Add(30 * time.Hour), N: 1000}
			require.NoError(t, st.Add(ctx, []counting.Delta{late}))
			m.deltas = append(m.deltas, late)
			check("late delta")
		})
	}
}

// TestMigrateVersion0 opens a file written by the first schema (daily
// rows only for rolled-up days, no version) and checks that every total
// survives the migration.
func TestMigrateVersion0(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite3", "file:"+path)
	require.NoError(t, err)
	day := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC).Unix()
	for _, q := range []string{
		`CREATE TABLE views (id TEXT NOT NULL, bucket INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (id, bucket)) WITHOUT ROWID`,
		`CREATE INDEX views_by_bucket ON views (bucket, id, n)`,
		`CREATE TABLE views_daily (id TEXT NOT NULL, bucket INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (id, bucket)) WITHOUT ROWID`,
		`CREATE INDEX views_daily_by_bucket ON views_daily (bucket, id, n)`,
		// Two rolled-up days, then two days of hourly rows.
		fmt.Sprintf(`INSERT INTO views_daily VALUES ('a', %d, 10), ('b', %d, 3), ('a', %d, 1)`, day, day, day+86400),
		fmt.Sprintf(`INSERT INTO views VALUES ('a', %d, 2), ('b', %d, 7), ('b', %d, 5)`, day+2*86400, day+2*86400+3600, day+3*86400),
	} {
		_, err := db.Exec(q)
		require.NoError(t, err, q)
	}
	require.NoError(t, db.Close())

	st, err := sqlite.Open(path)
	require.NoError(t, err)
	defer st.Close()
	ctx := context.Background()
	at := func(d int) time.Time { return time.Unix(day+int64(d)*86400, 0).UTC() }
	top, err := st.Sums(ctx, counting.Query{From: at(0), To: at(4), Limit: 10})
	require.NoError(t, err)
	assert.Equal(t, []counting.Sum{{ID: "b", N: 15}, {ID: "a", N: 13}}, top)
	top, err = st.Sums(ctx, counting.Query{From: at(2), To: at(4), Limit: 10})
	require.NoError(t, err)
	assert.Equal(t, []counting.Sum{{ID: "b", N: 12}, {ID: "a", N: 2}}, top)
	series, err := st.Sums(ctx, counting.Query{From: at(0), To: at(4), ID: "b", ByBucket: true})
	require.NoError(t, err)
	assert.Len(t, series, 3, "one daily row, then the hourly rows")
	// Opening again does not fold twice.
	require.NoError(t, st.Close())
	st2, err := sqlite.Open(path)
	require.NoError(t, err)
	defer st2.Close()
	top, err = st2.Sums(ctx, counting.Query{From: at(0), To: at(4), Limit: 10})
	require.NoError(t, err)
	assert.Equal(t, []counting.Sum{{ID: "b", N: 15}, {ID: "a", N: 13}}, top)
}
