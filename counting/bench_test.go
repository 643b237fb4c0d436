package counting_test

// go test ./counting -run '^$' -bench . -benchtime 3x

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/forgekit/forgekit/counting"
	"github.com/forgekit/forgekit/counting/sqlite"
	"github.com/forgekit/forgekit/internal/testenv"
)

// BenchmarkCount: Count from all cores on 1000 ids, then the same number
// of counts from one goroutine, in the same run. Targets on 2 cores: ≥ 20 M
// counts/s, ≥ 1.8x one goroutine's rate, 0 allocs.
func BenchmarkCount(b *testing.B) {
	st, err := sqlite.Open(filepath.Join(b.TempDir(), "v.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	c := counting.New(st)
	c.Interval = time.Hour // no flush in the middle of the measurement
	defer c.Close()
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprint("video/", i)
		c.Count(ids[i])
	}
	b.ReportAllocs()
	// One goroutine per P, each with its share of b.N. Not b.RunParallel:
	// with -benchtime Nx its goroutines take iterations one at a time
	// from a shared atomic, which costs more than a Count and hides how
	// Count itself scales.
	procs := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	start := time.Now()
	for g := range procs {
		n := b.N / procs
		if g < b.N%procs {
			n++
		}
		wg.Go(func() {
			i := (g + 1) * 7919
			for range n {
				c.Count(ids[i%len(ids)])
				i++
			}
		})
	}
	wg.Wait()
	parallel := time.Since(start)
	b.StopTimer()
	start = time.Now()
	for i := range b.N {
		c.Count(ids[i%len(ids)])
	}
	single := time.Since(start)
	b.ReportMetric(float64(b.N)/parallel.Seconds()/1e6, "Mcounts/s")
	b.ReportMetric(float64(b.N)/single.Seconds()/1e6, "one-goroutine-Mcounts/s")
	b.ReportMetric(single.Seconds()/parallel.Seconds(), "x-one-goroutine")
	if got, want := c.Stats().Counted, int64(2*b.N+len(ids)); got != want {
		b.Fatalf("Counted = %d, want %d", got, want)
	}
}

// BenchmarkEndToEnd: sustained counting with flushes vs the naive
// per-hit upsert in the same SQLite setup, one process each. Target (with
// two processes): ≥ 100x.
func BenchmarkEndToEnd(b *testing.B) {
	dir := b.TempDir()
	ctx := context.Background()
	var oursRate, naiveRate float64
	for b.Loop() {
		st, err := sqlite.Open(filepath.Join(dir, fmt.Sprint("ours", time.Now().UnixNano(), ".db")))
		if err != nil {
			b.Fatal(err)
		}
		c := counting.New(st)
		c.Interval = 100 * time.Millisecond
		const hits = 2_000_000
		start := time.Now()
		for i := range hits {
			c.Count(fmt.Sprint("video/", i%1000))
		}
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
		oursRate += hits / time.Since(start).Seconds()
		st.Close()

		db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, fmt.Sprint("naive", time.Now().UnixNano(), ".db"))+"?_journal_mode=WAL&_busy_timeout=5000&_synchronous=NORMAL")
		if err != nil {
			b.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		db.Exec(`CREATE TABLE views (id TEXT, bucket INTEGER, n INTEGER, PRIMARY KEY (id, bucket)) WITHOUT ROWID`)
		const naiveHits = 5000
		start = time.Now()
		for i := range naiveHits {
			bucket := time.Now().Truncate(time.Hour).Unix()
			if _, err := db.ExecContext(ctx, `INSERT INTO views VALUES (?, ?, 1) ON CONFLICT (id, bucket) DO UPDATE SET n = n + 1`, fmt.Sprint("video/", i%1000), bucket); err != nil {
				b.Fatal(err)
			}
		}
		naiveRate += naiveHits / time.Since(start).Seconds()
		db.Close()
	}
	n := float64(b.N)
	b.ReportMetric(oursRate/n, "counting-counts/s")
	b.ReportMetric(naiveRate/n, "naive-counts/s")
	b.ReportMetric(oursRate/naiveRate, "x-naive")
}

// naiveChild upserts one row per hit, as a per-view UPDATE n = n + 1
// would, and prints how many writes failed.
func naiveChild(f []string) int {
	ids, _ := strconv.Atoi(f[1])
	hits, _ := strconv.Atoi(f[2])
	db, err := sql.Open("sqlite3", "file:"+f[0]+"?_journal_mode=WAL&_busy_timeout=5000&_synchronous=NORMAL")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	failed := 0
	for i := range hits {
		bucket := time.Now().Truncate(time.Hour).Unix()
		if _, err := db.Exec(`INSERT INTO views (id, bucket, n) VALUES (?, ?, 1) ON CONFLICT (id, bucket) DO UPDATE SET n = n + 1`, fmt.Sprint("video/", i%ids), bucket); err != nil {
			failed++
		}
	}
	fmt.Println(failed)
	return 0
}

// BenchmarkTwoWriters: two processes counting into one SQLite file,
// counting vs the naive per-hit upsert; reports counts per second of both
// and the naive writers' failed writes. Target: ≥ 100x.
func BenchmarkTwoWriters(b *testing.B) {
	run := func(spec string) (time.Duration, int) {
		start := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		failed := 0
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := exec.Command(os.Args[0], "-test.run=^$")
				cmd.Env = append(os.Environ(), childEnv+"="+spec)
				out, err := cmd.Output()
				if err != nil {
					b.Errorf("%s: %v", spec, err)
					return
				}
				n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
				mu.Lock()
				failed += n
				mu.Unlock()
			}()
		}
		wg.Wait()
		return time.Since(start), failed
	}
	var oursRate, naiveRate float64
	var naiveFailed int
	for b.Loop() {
		dir := b.TempDir()
		ours := filepath.Join(dir, "ours.db")
		st, err := sqlite.Open(ours)
		if err != nil {
			b.Fatal(err)
		}
		st.Close()
		const perID, ids = 2000, 500 // 1 M hits per process
		d, _ := run(fmt.Sprintf("%s,%d,%d", ours, ids, perID))
		oursRate += 2 * perID * ids / d.Seconds()

		naive := filepath.Join(dir, "naive.db")
		st, _ = sqlite.Open(naive) // same schema
		st.Close()
		const naiveHits = 3000
		d, failed := run(fmt.Sprintf("naive,%s,%d,%d", naive, ids, naiveHits))
		naiveRate += 2 * naiveHits / d.Seconds()
		naiveFailed += failed
	}
	n := float64(b.N)
	b.ReportMetric(oursRate/n, "counting-counts/s")
	b.ReportMetric(naiveRate/n, "naive-counts/s")
	b.ReportMetric(oursRate/naiveRate, "x-naive")
	b.ReportMetric(float64(naiveFailed)/n, "naive-failed-writes")
}

// BenchmarkMostViewed: top 10 over a 30-day window for
// FORGEKIT_BENCH_IDS ids (skipped when unset; the figure is
// 100000), every id viewed every hour with a long tail (a few ids get
// most views), stored as the defaults keep it: the last 7 days in hourly
// rows, all 30 in daily rows. Each iteration runs MostViewed and the
// anchor, one GROUP BY over the same rows (what MostViewed did before),
// and reports both and the ratio. Target (100k ids): ≤ 20 ms.
//
// The data is bulk-loaded with SQL; set FORGEKIT_BENCH_COUNTING_DB to a
// path to keep it between runs.
func BenchmarkMostViewed(b *testing.B) {
	ids, _ := strconv.Atoi(os.Getenv("FORGEKIT_BENCH_IDS"))
	if ids <= 0 {
		b.Skip("set FORGEKIT_BENCH_IDS (e.g. 100000) to generate the data set")
	}
	now := time.Now().UTC().Truncate(time.Hour)
	from, to := now.Add(-30*24*time.Hour), now.Add(time.Hour)
	rolled := now.Add(-7 * 24 * time.Hour).Truncate(24 * time.Hour)
	path := os.Getenv("FORGEKIT_BENCH_COUNTING_DB")
	if path == "" {
		path = filepath.Join(b.TempDir(), "v.db")
	}
	path = fmt.Sprintf("%s.%d.%d", path, ids, now.Unix())
	if _, err := os.Stat(path); err != nil {
		if err := loadViews(path, ids, from, to, rolled); err != nil {
			b.Fatal(err)
		}
	}
	st, err := sqlite.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	anchor, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		b.Fatal(err)
	}
	defer anchor.Close()
	ctx := context.Background()
	c := counting.New(st)
	defer c.Close()
	var tOurs, tAnchor time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		top, err := c.MostViewed(ctx, from, to, 10)
		if err != nil || len(top) != 10 {
			b.Fatal(err, len(top))
		}
		t1 := time.Now()
		rows, err := anchor.QueryContext(ctx, `SELECT id, SUM(n) AS total FROM (
			SELECT id, n FROM views WHERE bucket >= ? AND bucket < ?
			UNION ALL SELECT id, n FROM views_daily WHERE bucket >= ? AND bucket < ?)
			GROUP BY id ORDER BY total DESC, id LIMIT 10`, rolled.Unix(), to.Unix(), from.Unix(), rolled.Unix())
		if err != nil {
			b.Fatal(err)
		}
		var got []counting.Entry
		for rows.Next() {
			var e counting.Entry
			if err := rows.Scan(&e.ID, &e.N); err != nil {
				b.Fatal(err)
			}
			got = append(got, e)
		}
		rows.Close()
		tOurs, tAnchor = tOurs+t1.Sub(t0), tAnchor+time.Since(t1)
		if fmt.Sprint(got) != fmt.Sprint(top) {
			b.Fatalf("MostViewed %v, GROUP BY %v", top, got)
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(tOurs.Microseconds())/1e3/n, "mostviewed-ms")
	b.ReportMetric(float64(tAnchor.Microseconds())/1e3/n, "groupby-ms")
	b.ReportMetric(float64(tAnchor)/float64(tOurs), "x-groupby")
}

// loadViews writes the benchmark's data set in a few statements: hourly
// rows from rolled to to, daily rows over [from, to), 1 + 100000/(i+1)
// views of video/i per hour.
func loadViews(path string, ids int, from, to, rolled time.Time) error {
	st, err := sqlite.Open(path + ".tmp") // the schema
	if err != nil {
		return err
	}
	st.Close()
	db, err := sql.Open("sqlite3", "file:"+path+".tmp?_journal_mode=WAL&_synchronous=OFF")
	if err != nil {
		return err
	}
	defer db.Close()
	gen := `WITH RECURSIVE i(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM i WHERE x < ? - 1),
		t(b) AS (SELECT ? UNION ALL SELECT b + ? FROM t WHERE b + ? < ?) `
	hourly := gen + `INSERT INTO views SELECT 'video/' || x, b, 1 + 100000 / (x + 1) FROM i, t`
	daily := gen + `INSERT INTO views_daily SELECT 'video/' || x, b, 24 * (1 + 100000 / (x + 1)) FROM i, t`
	day := 24 * time.Hour
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{hourly, []any{ids, rolled.Unix(), 3600, 3600, to.Unix()}},
		{daily, []any{ids, from.Truncate(day).Unix(), 86400, 86400, to.Unix()}},
		{`UPDATE counting_meta SET v = ? WHERE k = 'rolled_before'`, []any{rolled.Unix()}},
	} {
		if _, err := db.Exec(q.sql, q.args...); err != nil {
			return err
		}
	}
	if _, err := db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return err
	}
	db.Close()
	return os.Rename(path+".tmp", path)
}

// BenchmarkThreeInstances: three counters, as three instances of an
// application would have, each with its own store handle, count 20,000
// distinct ids per round (5 views each) and flush at the same time, into
// one SQLite file or one PostgreSQL database (started by the benchmark).
// It reports the counts flushed per second and whether the stored totals
// are exact (1) or not (0).
//
//	go test ./counting -run '^$' -bench ThreeInstances -benchtime 10x
func BenchmarkThreeInstances(b *testing.B) {
	const instances, ids, per = 3, 20000, 5
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			var open func() counting.Store
			switch backend {
			case "sqlite":
				path := filepath.Join(b.TempDir(), "v.db")
				open = func() counting.Store {
					st, err := sqlite.Open(path)
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { st.Close() })
					return st
				}
			case "postgres":
				dsn := testenv.Postgres(b)
				open = func() counting.Store {
					db, err := sql.Open("pgx", dsn)
					if err != nil {
						b.Fatal(err)
					}
					st, err := counting.NewPostgres(context.Background(), db)
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { st.Close() })
					return st
				}
			}
			counters := make([]*counting.Counter, instances)
			for i := range counters {
				counters[i] = counting.New(open())
				counters[i].Interval = time.Hour // flushed by the benchmark
			}
			names := make([]string, ids)
			for i := range names {
				names[i] = fmt.Sprintf("repo/%05d", i)
			}
			ctx := context.Background()
			var failed atomic.Int64
			start := time.Now()
			b.ResetTimer()
			for b.Loop() {
				var wg sync.WaitGroup
				for _, c := range counters {
					wg.Go(func() {
						for _, id := range names {
							c.Add(id, per)
						}
						if err := c.Flush(ctx); err != nil {
							failed.Add(1)
						}
					})
				}
				wg.Wait()
			}
			elapsed := time.Since(start)
			b.StopTimer()
			var want int64
			for _, c := range counters {
				if err := c.Close(); err != nil {
					b.Fatal(err)
				}
				want += c.Stats().Counted
			}
			sums, err := open().Sums(ctx, counting.Query{From: past, To: future, Limit: ids})
			if err != nil {
				b.Fatal(err)
			}
			var got int64
			for _, s := range sums {
				got += s.N
			}
			exact := 0.0
			if got == want {
				exact = 1
			}
			b.ReportMetric(float64(want)/elapsed.Seconds(), "counts/s")
			b.ReportMetric(float64(instances*ids*b.N)/elapsed.Seconds(), "rows/s")
			b.ReportMetric(exact, "exact")
			b.ReportMetric(float64(failed.Load()), "failed-flushes")
		})
	}
}

// BenchmarkTotalManyIDs: Total of one id (what a page showing its view
// count asks on every view) while the counter knows 100,000 ids.
func BenchmarkTotalManyIDs(b *testing.B) {
	st, err := sqlite.Open(filepath.Join(b.TempDir(), "v.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	c := counting.New(st)
	c.Interval = time.Hour
	defer c.Close()
	for i := range 100000 {
		c.Count(fmt.Sprint("repo/", i))
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Total(ctx, "repo/42", time.Unix(0, 0), time.Now().Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMemoryPerID: the heap a Counter keeps per distinct id
// counted from one goroutine, before and after a flush (which leaves the
// shard's cleared map for reuse, and the pending map at its size), not
// counting the id strings the caller holds.
func BenchmarkMemoryPerID(b *testing.B) {
	const n = 100_000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprint("video/", i)
	}
	ctx := context.Background()
	var perID float64
	for b.Loop() {
		st, err := sqlite.Open(filepath.Join(b.TempDir(), "v.db"))
		if err != nil {
			b.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c := counting.New(st)
		c.Interval = time.Hour
		for _, id := range ids {
			c.Count(id)
		}
		if err := c.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		for _, id := range ids {
			c.Count(id)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perID = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
		c.Close()
		st.Close()
	}
	b.ReportMetric(perID, "bytes/id")
}
