package slowlog_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/slowlog"
)

func TestWorkCounts(t *testing.T) {
	t.Parallel()
	w := &slowlog.Work{}
	ctx := slowlog.WithWork(context.Background(), w)
	require.Same(t, w, slowlog.WorkFrom(ctx))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 25 {
				slowlog.CountKey(ctx, slowlog.Query, time.Millisecond, "SELECT 1")
			}
			slowlog.Count(ctx, slowlog.CacheLookup, 0)
			slowlog.Count(ctx, slowlog.GitRun, 10*time.Millisecond)
		})
	}
	wg.Wait()
	slowlog.Count(ctx, slowlog.Render, 2*time.Millisecond)
	got := w.Tally()
	assert.Equal(t, slowlog.Tally{
		Queries: 100, QueryTime: 100 * time.Millisecond,
		CacheLookups: 4,
		Renders:      1, RenderTime: 2 * time.Millisecond,
		GitRuns: 4, GitTime: 40 * time.Millisecond,
	}, got)
	assert.Equal(t, "100 queries (100ms), 4 cache lookups, 1 render (2ms), 4 git runs (40ms)", got.String())

	// Without a Work, counting does nothing.
	slowlog.Count(context.Background(), slowlog.Query, time.Second)
	slowlog.CountKey(context.Background(), slowlog.Query, time.Second, "x")
	assert.Nil(t, slowlog.WorkFrom(context.Background()))
	assert.Equal(t, "nothing counted", slowlog.Tally{}.String())
}

func TestRepeatReportedOnce(t *testing.T) {
	t.Parallel()
	var got []slowlog.Repeat
	w := &slowlog.Work{OnRepeat: func(r slowlog.Repeat) { got = append(got, r) }}
	ctx := slowlog.WithWork(context.Background(), w)
	for i := range 30 {
		// An N+1: the same statement with the same argument, and the
		// same statement with different arguments, which is not one.
		slowlog.CountKey(ctx, slowlog.Query, 0, "SELECT * FROM repos WHERE owner_id = ?", int64(7))
		slowlog.CountKey(ctx, slowlog.Query, 0, "SELECT * FROM repos WHERE owner_id = ?", int64(i))
		slowlog.CountKey(ctx, slowlog.CacheLookup, 0, "frag:readme")
	}
	require.Len(t, got, 2)
	assert.Equal(t, slowlog.Query, got[0].Kind)
	assert.Equal(t, 11, got[0].Count)
	assert.Equal(t, "SELECT * FROM repos WHERE owner_id = ?", got[0].Key)
	assert.Equal(t, slowlog.CacheLookup, got[1].Kind)
	require.NotEmpty(t, got[0].Stack)
	assert.Contains(t, got[0].Stack[0].Func, "TestRepeatReportedOnce", "the stack starts at the caller of CountKey")
	assert.True(t, strings.HasPrefix(got[0].String(), "queries repeated 11 times: SELECT"))

	// A negative limit turns the watch off; a small one fires early.
	off := &slowlog.Work{RepeatLimit: -1, OnRepeat: func(slowlog.Repeat) { t.Error("watched") }}
	octx := slowlog.WithWork(context.Background(), off)
	for range 50 {
		slowlog.CountKey(octx, slowlog.Query, 0, "SELECT 1")
	}
	fired := 0
	small := &slowlog.Work{RepeatLimit: 2, OnRepeat: func(slowlog.Repeat) { fired++ }}
	sctx := slowlog.WithWork(context.Background(), small)
	for range 3 {
		slowlog.CountKey(sctx, slowlog.Query, 0, "SELECT 1", "a", []byte("b"), true, 1.5, nil, 3, time.Unix(0, 0))
	}
	assert.Equal(t, 1, fired)
}

// deepContext is a context as deep as a request's in forged: the
// server's, the watchdog's, a deadline and a few values above the Work.
func deepContext(b *testing.B, w *slowlog.Work) context.Context {
	type k int
	ctx := slowlog.WithWork(context.Background(), w)
	for i := range 6 {
		ctx = context.WithValue(ctx, k(i), i)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Hour)
	b.Cleanup(cancel)
	return ctx
}

// BenchmarkCount: one counted event from a request's context. Target:
// ≤ 50 ns, 0 allocations.
func BenchmarkCount(b *testing.B) {
	ctx := deepContext(b, &slowlog.Work{})
	b.ReportAllocs()
	for b.Loop() {
		slowlog.Count(ctx, slowlog.Query, time.Microsecond)
	}
}

// BenchmarkCountKey: a counted event watched for repeats (a query with
// two arguments).
func BenchmarkCountKey(b *testing.B) {
	ctx := deepContext(b, &slowlog.Work{RepeatLimit: 1 << 30})
	b.ReportAllocs()
	for b.Loop() {
		slowlog.CountKey(ctx, slowlog.Query, time.Microsecond, "SELECT id FROM repos WHERE owner_id = ? AND name = ?", int64(42), "proj")
	}
}

// TestReportCarriesWork: a slow report of a request whose context has a
// Work says what it had done so far.
func TestReportCarriesWork(t *testing.T) {
	t.Parallel()
	reports := make(chan *slowlog.Report, 16)
	wd := &slowlog.Watchdog{Threshold: 10 * time.Millisecond, Sink: slowlog.SinkFunc(func(ctx context.Context, r *slowlog.Report) error {
		reports <- r
		return nil
	})}
	defer wd.Close()
	got := make(chan *slowlog.Report, 1)
	h := wd.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slowlog.CountKey(r.Context(), slowlog.Query, time.Millisecond, "SELECT 1")
		got <- <-reports // stay slow until the report is out
	}))
	work := &slowlog.Work{}
	req := httptest.NewRequest("GET", "/slow", nil)
	h.ServeHTTP(httptest.NewRecorder(), req.WithContext(slowlog.WithWork(req.Context(), work)))
	r := <-got
	require.NotNil(t, r.Work)
	assert.Equal(t, int64(1), r.Work.Queries)
	assert.Contains(t, r.String(), "\nWork: 1 query (1ms)\n")
}

// BenchmarkWorkOverhead: what work accounting adds to a request that
// makes 3 queries and 5 fragment lookups: the Work and its context
// value, the counts, the tally for the access log; against the same
// request without a Work (where counting is a lookup that finds
// nothing), in the same run.
func BenchmarkWorkOverhead(b *testing.B) {
	page := func(ctx context.Context) {
		for i := range 3 {
			slowlog.CountKey(ctx, slowlog.Query, time.Microsecond, "SELECT * FROM repos WHERE id = ?", int64(i))
		}
		for range 5 {
			slowlog.CountKey(ctx, slowlog.CacheLookup, 0, "frag")
		}
	}
	base := deepContext(b, nil)
	var sink slowlog.Tally
	measure := func(with bool) (time.Duration, float64) {
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		start := time.Now()
		for range b.N {
			if with {
				w := &slowlog.Work{OnRepeat: func(slowlog.Repeat) {}}
				page(slowlog.WithWork(base, w))
				sink = w.Tally()
			} else {
				page(base)
			}
		}
		d := time.Since(start)
		runtime.ReadMemStats(&ms1)
		return d, float64(ms1.Mallocs-ms0.Mallocs) / float64(b.N)
	}
	without, aw := measure(false)
	with, bw := measure(true)
	_ = sink
	b.ReportMetric(float64(with-without)/float64(b.N), "added-ns/req")
	b.ReportMetric(bw-aw, "added-allocs/req")
}
