package counting_test

import (
	"context"
	"errors"
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

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/forgekit/forgekit/counting"
	"github.com/forgekit/forgekit/counting/sqlite"
	"github.com/forgekit/forgekit/internal/testenv"
)

const childEnv = "COUNTING_TEST_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(child(spec))
	}
	goleak.VerifyTestMain(m)
}

// child counts in a subprocess: "path,ids,perID[,crash]", or for the
// benchmark "naive,path,ids,hits" (per-hit upserts, printing the failed
// writes).
func child(spec string) int {
	f := strings.Split(spec, ",")
	if f[0] == "naive" {
		return naiveChild(f[1:])
	}
	ids, _ := strconv.Atoi(f[1])
	per, _ := strconv.Atoi(f[2])
	st, err := sqlite.Open(f[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c := counting.New(st)
	c.Interval = 5 * time.Millisecond
	for range per {
		for i := range ids {
			c.Count(fmt.Sprint("video/", i))
		}
	}
	if len(f) > 3 { // crash: once flushed, die without Close
		for deadline := time.Now().Add(30 * time.Second); c.Stats().Pending > 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		fmt.Println("counted")
		select {}
	}
	if err := c.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	st.Close()
	return 0
}

// testStore is what the tests use of a store.
type testStore interface {
	counting.Store
	counting.UniqueStore
	Close() error
}

// open returns a fresh store: a SQLite file, or a PostgreSQL database in
// the run of TestOnPostgres.
func open(t *testing.T) testStore {
	if testenv.OnPostgres() != nil {
		return openPostgres(t)
	}
	st, _ := openSQLite(t)
	return st
}

// openSQLite returns a fresh SQLite store and its file, for the tests of
// what only SQLite does (several processes on one file).
func openSQLite(t *testing.T) (*counting.SQLiteStore, string) {
	path := filepath.Join(t.TempDir(), "views.db")
	st, err := sqlite.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return st, path
}

// shared returns an opener of stores on one fresh database, as several
// instances of a site have: one SQLite file, or one PostgreSQL database
// in the run of TestOnPostgres.
func shared(t *testing.T) func() testStore {
	if testenv.OnPostgres() != nil {
		dsn := testenv.OnPostgres().NewDatabase(t)
		return func() testStore { return openPostgresAt(t, dsn) }
	}
	path := filepath.Join(t.TempDir(), "views.db")
	return func() testStore {
		st, err := sqlite.Open(path)
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		return st
	}
}

var (
	past   = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	future = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
)

func TestExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	st := open(t)
	c := counting.New(st)
	c.Interval = 2 * time.Millisecond
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				c.Count(fmt.Sprint("id", (g+i)%50))
			}
		}()
	}
	wg.Wait()
	require.NoError(t, c.Close())
	ctx := context.Background()
	var sum int64
	for i := range 50 {
		n, err := c.Total(ctx, fmt.Sprint("id", i), past, future)
		require.NoError(t, err)
		assert.Equal(t, int64(16*5000/50), n)
		sum += n
	}
	assert.Equal(t, int64(16*5000), sum)
	s := c.Stats()
	assert.Equal(t, int64(80000), s.Flushed)
	assert.Zero(t, s.Pending)
}

func TestUnflushedCountsAreSeen(t *testing.T) {
	t.Parallel()
	st := open(t)
	c := counting.New(st)
	c.Interval = time.Hour
	defer c.Close()
	for range 3 {
		c.Count("b")
	}
	c.Count("a")
	top, err := c.MostViewed(context.Background(), past, future, 10)
	require.NoError(t, err)
	assert.Equal(t, []counting.Entry{{ID: "b", N: 3}, {ID: "a", N: 1}}, top)
	require.NoError(t, c.Flush(context.Background()))
	c.Count("a")
	top, _ = c.MostViewed(context.Background(), past, future, 1)
	assert.Equal(t, []counting.Entry{{ID: "b", N: 3}}, top)
	n, _ := c.Total(context.Background(), "a", past, future)
	assert.Equal(t, int64(2), n)
}

func TestInvalidIDs(t *testing.T) {
	t.Parallel()
	st := open(t)
	c := counting.New(st)
	defer c.Close()
	c.Count("")
	c.Count(strings.Repeat("x", counting.MaxIDLen+1))
	c.Add("ok", -5)
	assert.Equal(t, int64(3), c.Stats().Invalid)
	assert.Zero(t, c.Stats().Counted)
	_, err := c.MostViewed(context.Background(), future, past, 10)
	assert.ErrorIs(t, err, counting.ErrWindow)
}

func TestTwoProcessesOneFile(t *testing.T) {
	t.Parallel()
	st, path := openSQLite(t)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"="+path+",20,2000")
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("%v: %s", err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	c := counting.New(st)
	defer c.Close()
	top, err := c.MostViewed(context.Background(), past, future, 100)
	require.NoError(t, err)
	require.Len(t, top, 20)
	for _, e := range top {
		assert.Equal(t, int64(2*2000), e.N, "%s: every count of both processes", e.ID)
	}
}

func TestCrashLosesAtMostOneInterval(t *testing.T) {
	t.Parallel()
	st, path := openSQLite(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path+",10,1000,crash")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	buf := make([]byte, 8)
	out.Read(buf) // "counted": everything it counted has been flushed
	cmd.Process.Kill()
	cmd.Wait()
	c := counting.New(st)
	defer c.Close()
	top, err := c.MostViewed(context.Background(), past, future, 100)
	require.NoError(t, err)
	require.Len(t, top, 10)
	for _, e := range top {
		// Flushed counts survive SIGKILL: committed transactions.
		assert.Equal(t, int64(1000), e.N)
	}
}

// failing wraps a store and fails its writes while broken is set.
type failing struct {
	counting.Store
	broken atomic.Bool
}

func (f *failing) Add(ctx context.Context, d []counting.Delta) error {
	if f.broken.Load() {
		return errors.New("disk full")
	}
	return f.Store.Add(ctx, d)
}

func TestFailedFlushKeepsAndRetries(t *testing.T) {
	t.Parallel()
	st := open(t)
	f := &failing{Store: st}
	c := counting.New(f)
	c.Interval = time.Hour
	c.MaxPending = 5
	defer c.Close()
	f.broken.Store(true)
	for i := range 3 {
		c.Count(fmt.Sprint("v", i))
	}
	assert.Error(t, c.Flush(context.Background()))
	c.Count("v0")
	assert.Error(t, c.Flush(context.Background()))
	assert.Equal(t, int64(2), c.Stats().FlushErrors)
	assert.Equal(t, int64(4), c.Stats().Pending)
	f.broken.Store(false)
	require.NoError(t, c.Flush(context.Background()))
	n, _ := st.Sums(context.Background(), counting.Query{From: past, To: future, ID: "v0"})
	require.Len(t, n, 1)
	assert.Equal(t, int64(2), n[0].N)
	assert.Zero(t, c.Stats().Pending)

	// Beyond MaxPending the oldest are dropped, and counted.
	f.broken.Store(true)
	for i := range 10 {
		c.Count(fmt.Sprint("w", i))
	}
	assert.Error(t, c.Flush(context.Background()))
	s := c.Stats()
	assert.Equal(t, int64(5), s.Dropped)
	assert.Equal(t, int64(5), s.Pending)
	f.broken.Store(false)
}

func TestLockedDatabaseWaits(t *testing.T) {
	t.Parallel()
	st, path := openSQLite(t)
	c := counting.New(st)
	c.Interval = time.Hour
	defer c.Close()
	// Another process holds the write lock for a while.
	other, err := sqlite.Open(path)
	require.NoError(t, err)
	defer other.Close()
	held, hold := make(chan struct{}), make(chan struct{})
	go other.HoldWriteLockForTest(held, hold)
	_, ok := <-held
	require.True(t, ok, "the other process has the lock")
	c.Count("x")
	// The lock goes while the flush waits for it (a flush that did not
	// wait would fail with "database is locked" first).
	go func() { time.Sleep(200 * time.Millisecond); close(hold) }()
	require.NoError(t, c.Flush(context.Background()), "the flush waits out the lock (busy timeout)")
	n, _ := c.Total(context.Background(), "x", past, future)
	assert.Equal(t, int64(1), n)
}

func TestBucketsAndRollup(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	day := time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC) // a DST day in Europe: irrelevant in UTC
	var deltas []counting.Delta
	for h := range 48 {
		deltas = append(deltas, counting.Delta{ID: "clip", Bucket: day.Add(time.Duration(h) * time.Hour), N: int64(h + 1)})
	}
	require.NoError(t, st.Add(ctx, deltas))
	sum := func(from, to time.Time) int64 {
		s, err := st.Sums(ctx, counting.Query{From: from, To: to, ID: "clip"})
		require.NoError(t, err)
		if len(s) == 0 {
			return 0
		}
		return s[0].N
	}
	assert.Equal(t, int64(300), sum(day, day.Add(24*time.Hour)), "1..24")
	assert.Equal(t, int64(25), sum(day.Add(24*time.Hour), day.Add(25*time.Hour)), "the first hour of the next day")
	assert.Equal(t, int64(0), sum(day.Add(-time.Hour), day), "before")
	series, err := st.Sums(ctx, counting.Query{From: day, To: day.Add(3 * time.Hour), ID: "clip", ByBucket: true})
	require.NoError(t, err)
	require.Len(t, series, 3)
	assert.Equal(t, day.Add(2*time.Hour), series[2].Bucket)

	// Roll up the first day: day totals are unchanged.
	require.NoError(t, st.Rollup(ctx, day.Add(24*time.Hour)))
	assert.Equal(t, int64(300), sum(day, day.Add(24*time.Hour)))
	assert.Equal(t, int64(48*49/2), sum(day, day.Add(48*time.Hour)))
	series, _ = st.Sums(ctx, counting.Query{From: day, To: day.Add(48 * time.Hour), ID: "clip", ByBucket: true})
	assert.Equal(t, 1+24, len(series), "one daily row, then 24 hourly")
	// Rolling up again adds nothing twice.
	require.NoError(t, st.Rollup(ctx, day.Add(24*time.Hour)))
	assert.Equal(t, int64(300), sum(day, day.Add(24*time.Hour)))
}

func TestFilterAndTrending(t *testing.T) {
	t.Parallel()
	st := open(t)
	c := counting.New(st)
	c.Interval = time.Hour
	c.TrendingWindow = 10 * time.Minute
	c.TrendingK = 8
	c.Filter = func(id, viewer string) bool { return !strings.HasPrefix(viewer, "bot:") }
	defer c.Close()
	c.Hit("a", "bot:google")
	for range 50 {
		c.Hit("hot", "s1")
	}
	for i := range 20 {
		c.Hit(fmt.Sprint("cold", i), "s2")
	}
	for range 10 {
		c.Hit("warm", "s3")
	}
	require.NoError(t, c.Flush(context.Background()))
	assert.Equal(t, int64(1), c.Stats().Filtered)
	top := c.Trending(2)
	require.Len(t, top, 2)
	assert.Equal(t, "hot", top[0].ID)
	assert.Equal(t, int64(50), top[0].N)
	assert.Equal(t, "warm", top[1].ID, "Space-Saving keeps the heavy hitters with 8 counters among 22 ids")
	assert.GreaterOrEqual(t, top[1].N, int64(10), "estimates never undercount")
	off := counting.New(st)
	defer off.Close()
	assert.Nil(t, off.Trending(5), "off by default")
}

func TestUniqueViewers(t *testing.T) {
	t.Parallel()
	st, path := openSQLite(t)
	c := counting.New(st)
	c.Interval = time.Hour
	c.Unique = true
	defer c.Close()
	for i := range 20000 {
		c.Hit("clip", fmt.Sprint("viewer-", i%10000)) // every viewer twice
	}
	c.Hit("other", "viewer-1")
	est := func(c *counting.Counter, id string) int64 {
		n, err := c.Uniques(context.Background(), id, past, future)
		require.NoError(t, err)
		return n
	}
	assert.InDelta(t, 10000, est(c, "clip"), 10000*0.05, "unflushed")
	assert.Equal(t, int64(1), est(c, "other"))
	require.NoError(t, c.Flush(context.Background()))
	assert.InDelta(t, 10000, est(c, "clip"), 10000*0.05, "flushed")

	// Another process's viewers merge in; shared ones are not counted twice.
	st2, err := sqlite.Open(path)
	require.NoError(t, err)
	defer st2.Close()
	c2 := counting.New(st2)
	c2.Interval, c2.Unique = time.Hour, true
	for i := 5000; i < 15000; i++ {
		c2.Hit("clip", fmt.Sprint("viewer-", i))
	}
	require.NoError(t, c2.Close())
	assert.InDelta(t, 15000, est(c, "clip"), 15000*0.05)
	n, _ := c.Total(context.Background(), "clip", past, future)
	assert.Equal(t, int64(30000), n)

	plain := counting.New(st)
	defer plain.Close()
	_, err = plain.Uniques(context.Background(), "clip", past, future)
	assert.ErrorIs(t, err, counting.ErrNoUniques)
}

func TestSeriesIncludesUnflushed(t *testing.T) {
	t.Parallel()
	st := open(t)
	c := counting.New(st)
	c.Interval = time.Hour
	defer c.Close()
	c.Count("s")
	require.NoError(t, c.Flush(context.Background()))
	c.Add("s", 2)
	series, err := c.Series(context.Background(), "s", past, future)
	require.NoError(t, err)
	require.Len(t, series, 1, "flushed and unflushed views of this hour share its bucket")
	assert.Equal(t, int64(3), series[0].N)
	assert.Equal(t, time.Now().UTC().Truncate(time.Hour), series[0].Bucket)
}

// TestIdleShardsAreRetired: a shard that stays empty for a few flushes
// is dropped, counts that find it retired go to a new one, and none is
// lost while counting and flushing race.
func TestIdleShardsAreRetired(t *testing.T) {
	t.Parallel()
	c := counting.New(open(t))
	c.Interval = time.Hour
	defer c.Close()
	ctx := context.Background()
	c.Count("a")
	require.Equal(t, 1, counting.ShardsForTest(c))
	for range 4 { // one that drains, three that find it empty
		require.NoError(t, c.Flush(ctx))
	}
	assert.Zero(t, counting.ShardsForTest(c))
	c.Count("a") // the pool may still hand out the retired shard
	assert.Equal(t, 1, counting.ShardsForTest(c))

	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		defer close(stop)
		for range 300 {
			assert.NoError(t, c.Flush(ctx))
		}
	}()
	const goroutines, each = 4, 2000
	for range goroutines {
		wg.Go(func() {
			for i := range each {
				c.Count("b")
				if i%100 == 0 {
					runtime.Gosched() // idle spells, for retirements
				}
			}
		})
	}
	wg.Wait()
	<-stop
	require.NoError(t, c.Flush(ctx))
	a, err := c.Total(ctx, "a", past, future)
	require.NoError(t, err)
	b, err := c.Total(ctx, "b", past, future)
	require.NoError(t, err)
	assert.Equal(t, int64(2), a)
	assert.Equal(t, int64(goroutines*each), b)
	s := c.Stats()
	assert.Equal(t, int64(2+goroutines*each), s.Counted)
	assert.Zero(t, s.Pending)
}

func TestOnQuery(t *testing.T) {
	t.Parallel()
	c := counting.New(open(t))
	var queries atomic.Int64
	c.OnQuery = func(ctx context.Context, d time.Duration) { queries.Add(1) }
	defer c.Close()
	ctx := context.Background()
	c.Count("a")
	require.NoError(t, c.Flush(ctx))
	_, err := c.Total(ctx, "a", past, future)
	require.NoError(t, err)
	_, err = c.MostViewed(ctx, past, future, 10)
	require.NoError(t, err)
	_, err = c.Series(ctx, "a", past, future)
	require.NoError(t, err)
	assert.Equal(t, int64(3), queries.Load(), "one per reader; the flush is not a request's")
}
