package viewcache_test

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/forgekit/forgekit/internal/testenv"
	"github.com/forgekit/forgekit/viewcache"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// counter is a render function that counts its calls.
type counter struct {
	n     atomic.Int64
	delay time.Duration
}

func (c *counter) render(ctx context.Context) ([]byte, error) {
	n := c.n.Add(1)
	if c.delay > 0 {
		time.Sleep(c.delay)
	}
	return []byte("render " + strconv.FormatInt(n, 10)), nil
}

func get(t *testing.T, c *viewcache.Cache, key string, deps []string, r *counter) string {
	t.Helper()
	b, err := c.GetOrRender(context.Background(), key, deps, r.render)
	require.NoError(t, err)
	return string(b)
}

func TestInProcess(t *testing.T) {
	t.Parallel()
	c := viewcache.New("forge", "v1")
	defer c.Close()
	var r counter
	assert.Equal(t, "render 1", get(t, c, "readme:alice/proj", []string{"repo:alice/proj"}, &r))
	assert.Equal(t, "render 1", get(t, c, "readme:alice/proj", []string{"repo:alice/proj"}, &r))
	require.NoError(t, c.Invalidate(context.Background(), "repo:bob/other"))
	assert.Equal(t, "render 1", get(t, c, "readme:alice/proj", []string{"repo:alice/proj"}, &r), "unrelated dependency")
	require.NoError(t, c.Invalidate(context.Background(), "repo:alice/proj"))
	assert.Equal(t, "render 2", get(t, c, "readme:alice/proj", []string{"repo:alice/proj"}, &r))
	s := c.Stats()
	assert.Equal(t, int64(2), s.L1Hits)
	assert.Equal(t, int64(2), s.Renders)
}

func TestMinAge(t *testing.T) {
	t.Parallel()
	c := viewcache.New("forge", "v1")
	c.MinAge = time.Hour
	var r counter
	get(t, c, "k", []string{"d"}, &r)
	c.Invalidate(context.Background(), "d")
	assert.Equal(t, "render 1", get(t, c, "k", []string{"d"}, &r), "young entries outlive invalidation")
	assert.Equal(t, int64(1), c.Stats().StaleHits)
}

func TestStaleWhileRevalidate(t *testing.T) {
	t.Parallel()
	c := viewcache.New("forge", "v1")
	c.SoftTTL = 20 * time.Millisecond
	c.TTL = time.Hour
	clock := newFakeClock()
	c.SetClockForTest(clock.now)
	var r counter
	get(t, c, "k", nil, &r)
	clock.advance(30 * time.Millisecond)
	assert.Equal(t, "render 1", get(t, c, "k", nil, &r), "stale served at once")
	c.Close() // waits for the background refresh
	assert.Equal(t, "render 2", get(t, c, "k", nil, &r))
}

func TestByteBound(t *testing.T) {
	t.Parallel()
	c := viewcache.New("forge", "v1")
	c.MaxBytes = 64 << 10
	for i := range 500 {
		size := 100 + (i*797)%6000
		_, err := c.GetOrRender(context.Background(), fmt.Sprint("k", i), nil, func(context.Context) ([]byte, error) {
			return make([]byte, size), nil
		})
		require.NoError(t, err)
		assert.LessOrEqual(t, c.Stats().Bytes, int64(64<<10))
	}
	assert.Positive(t, c.Stats().Evictions)
}

func TestSingleRenderPerProcess(t *testing.T) {
	t.Parallel()
	c := viewcache.New("forge", "v1")
	r := &counter{delay: 50 * time.Millisecond}
	var wg sync.WaitGroup
	// One caller gives up early; the others must not fail with it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	wg.Add(1)
	go func() { defer wg.Done(); c.GetOrRender(ctx, "hot", nil, r.render) }()
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := c.GetOrRender(context.Background(), "hot", nil, r.render)
			assert.NoError(t, err)
			assert.Equal(t, "render 1", string(b))
		}()
	}
	wg.Wait()
	assert.Equal(t, int64(1), r.n.Load())
	assert.Positive(t, c.Stats().Coalesced)
}

func TestRenderErrorIsNotCached(t *testing.T) {
	t.Parallel()
	c := viewcache.New("forge", "v1")
	_, err := c.GetOrRender(context.Background(), "k", nil, func(context.Context) ([]byte, error) { return nil, fmt.Errorf("boom") })
	assert.EqualError(t, err, "boom")
	var r counter
	assert.Equal(t, "render 1", get(t, c, "k", nil, &r))
}

func memcached(t *testing.T) (*memcache.Client, string) {
	addr := testenv.Memcached(t)
	mc := memcache.New(addr)
	mc.Timeout = 200 * time.Millisecond
	t.Cleanup(func() { mc.Close() })
	return mc, addr
}

func TestSharedMemcached(t *testing.T) {
	t.Parallel()
	mc, addr := memcached(t)
	a, b := viewcache.New("forge", "v1"), viewcache.New("forge", "v1")
	a.Memcache, b.Memcache = mc, memcache.New(addr) // two processes' clients
	a.MaxBytes, b.MaxBytes = -1, -1                 // memcached only: every lookup sees the shared state
	defer b.Memcache.Close()
	var ra, rb counter
	long := "tree:" + strings.Repeat("deep/path/", 40) // over 250 bytes: hashed
	assert.Equal(t, "render 1", get(t, a, long, []string{"repo:alice/proj"}, &ra))
	assert.Equal(t, "render 1", get(t, b, long, []string{"repo:alice/proj"}, &rb), "b sees a's render")
	assert.Zero(t, rb.n.Load())
	require.NoError(t, b.Invalidate(context.Background(), "repo:alice/proj"))
	assert.Equal(t, "render 2", get(t, a, long, []string{"repo:alice/proj"}, &ra), "a sees b's invalidation")
	assert.Equal(t, int64(1), b.Stats().L2Hits)

	// Another renderer version never sees old HTML.
	v2 := viewcache.New("forge", "v2")
	v2.Memcache = mc
	var r2 counter
	assert.Equal(t, "render 1", get(t, v2, long, []string{"repo:alice/proj"}, &r2))
	assert.Equal(t, int64(1), r2.n.Load())
}

func TestL1WithMemcached(t *testing.T) {
	t.Parallel()
	mc, _ := memcached(t)
	// Within L1TTL the in-process copy answers (a long L1TTL, so that a
	// loaded machine cannot make this a question of timing).
	a := viewcache.New("forge", "v1")
	a.Memcache, a.L1TTL = mc, time.Hour
	var ra counter
	get(t, a, "k", []string{"d"}, &ra)
	get(t, a, "k", []string{"d"}, &ra)
	assert.Equal(t, int64(1), a.Stats().L1Hits)
	// Past L1TTL (here at once) memcached is asked again, and another
	// instance's invalidation is seen.
	c, b := viewcache.New("forge", "v1"), viewcache.New("forge", "v1")
	c.Memcache, c.L1TTL, b.Memcache = mc, time.Nanosecond, mc
	var rc counter
	assert.Equal(t, "render 1", get(t, c, "k2", []string{"d2"}, &rc))
	require.NoError(t, b.Invalidate(context.Background(), "d2"))
	assert.Equal(t, "render 2", get(t, c, "k2", []string{"d2"}, &rc))
}

func TestCorruptValuesAreMisses(t *testing.T) {
	t.Parallel()
	mc, _ := memcached(t)
	c := viewcache.New("forge", "v1")
	c.Memcache, c.MaxBytes = mc, -1
	var r counter
	get(t, c, "k", nil, &r)
	// Overwrite every key of the namespace with garbage.
	for _, k := range []string{"forge:v1:v:k"} {
		require.NoError(t, mc.Set(&memcache.Item{Key: k, Value: []byte("VC1 not really an envelope")}))
	}
	assert.Equal(t, "render 2", get(t, c, "k", nil, &r))
	require.NoError(t, mc.Set(&memcache.Item{Key: "forge:gen:d", Value: []byte("garbage")}))
	assert.Equal(t, "render 1", get(t, c, "k2", []string{"d"}, &counter{}), "garbled generation is a miss, not an error")
	assert.Positive(t, c.Stats().L2Errors)
}

func TestMemcachedDies(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "memcached", "memcached")
	port := testenv.FreePort(t)
	cmd := exec.Command(bin, "-u", "nobody", "-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0")
	require.NoError(t, cmd.Start())
	defer cmd.Wait()
	defer cmd.Process.Kill()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	testenv.WaitListening(t, addr, 10*time.Second)
	mc := memcache.New(addr)
	mc.Timeout = 100 * time.Millisecond
	defer mc.Close()
	c := viewcache.New("forge", "v1")
	c.Memcache, c.L1TTL = mc, time.Millisecond
	var r counter
	get(t, c, "k", []string{"d"}, &r)
	cmd.Process.Kill()
	cmd.Wait() // it is gone
	for range 20 {
		b, err := c.GetOrRender(context.Background(), "k", []string{"d"}, r.render)
		require.NoError(t, err, "a dead memcached is never an error page")
		assert.Equal(t, "render 1", string(b), "served from process memory")
	}
	b, err := c.GetOrRender(context.Background(), "other", nil, r.render)
	require.NoError(t, err)
	assert.Equal(t, "render 2", string(b))
	assert.Error(t, c.Invalidate(context.Background(), "d"), "the invalidation could not be shared")
	assert.Equal(t, "render 3", get(t, c, "k", []string{"d"}, &r), "but holds in this process")
	assert.Positive(t, c.Stats().L2Errors)
}

func memcachedB(b *testing.B) (*memcache.Client, string) {
	addr := testenv.Memcached(b)
	mc := memcache.New(addr)
	mc.Timeout = time.Second
	b.Cleanup(func() { mc.Close() })
	return mc, addr
}

func TestCrossProcessRenderLock(t *testing.T) {
	t.Parallel()
	_, addr := memcached(t)
	a, b := viewcache.New("lock", "v1"), viewcache.New("lock", "v1")
	a.Memcache, b.Memcache = memcache.New(addr), memcache.New(addr)
	defer a.Memcache.Close()
	defer b.Memcache.Close()
	a.MaxBytes, b.MaxBytes = -1, -1
	b.LockWait = 5 * time.Second
	started := make(chan struct{})
	slow := func(context.Context) ([]byte, error) {
		close(started)
		time.Sleep(200 * time.Millisecond)
		return []byte("from a"), nil
	}
	done := make(chan []byte)
	go func() {
		v, _ := a.GetOrRender(context.Background(), "k", nil, slow)
		done <- v
	}()
	<-started
	var rb counter
	v, err := b.GetOrRender(context.Background(), "k", nil, rb.render)
	require.NoError(t, err)
	assert.Equal(t, "from a", string(v), "b waited for a's render instead of rendering too")
	assert.Zero(t, rb.n.Load())
	assert.Equal(t, "from a", string(<-done))
}

func TestCircuitBreaker(t *testing.T) {
	t.Parallel()
	dead := memcache.New("127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))) // nothing listens
	dead.Timeout = 50 * time.Millisecond
	defer dead.Close()
	c := viewcache.New("forge", "v1")
	c.Memcache, c.MaxBytes = dead, -1
	var r counter
	for range 50 {
		_, err := c.GetOrRender(context.Background(), "k", nil, r.render)
		require.NoError(t, err)
	}
	assert.Equal(t, int64(50), r.n.Load())
	// After a few failures the breaker stops calling the dead server.
	assert.LessOrEqual(t, c.Stats().L2Errors, int64(viewcache.DefaultBreakerThreshold))
}

func TestXFetchRefreshesEarly(t *testing.T) {
	t.Parallel()
	c := viewcache.New("forge", "v1")
	c.SoftTTL, c.TTL = time.Hour, 2*time.Hour
	c.Beta = 1e15 // so large that a 1 ms render makes the refresh all but certain (it fails to come only if -ln(rand) < 3.6e-9)
	r := &counter{delay: time.Millisecond}
	get(t, c, "k", nil, r)
	assert.Equal(t, "render 1", get(t, c, "k", nil, r), "served while it refreshes")
	c.Close()
	assert.Equal(t, int64(2), r.n.Load(), "refreshed long before SoftTTL")
	assert.Equal(t, int64(1), c.Stats().StaleHits)
}

// Jitter may only shorten a TTL, never lengthen it. (That it spreads
// expiries is not observed here: it is random by design.)
func TestJitterNeverOutlivesTTL(t *testing.T) {
	t.Parallel()
	c := viewcache.New("forge", "v1")
	c.TTL, c.Jitter = 40*time.Millisecond, 1
	clock := newFakeClock()
	c.SetClockForTest(clock.now)
	var r counter
	for i := range 20 {
		get(t, c, fmt.Sprint("k", i), nil, &r)
	}
	clock.advance(60 * time.Millisecond) // every entry is older than TTL now
	for i := range 20 {
		get(t, c, fmt.Sprint("k", i), nil, &r)
	}
	assert.Equal(t, int64(40), r.n.Load(), "all expired by TTL, jittered or not")
}

func TestRenderPanicIsAnError(t *testing.T) {
	t.Parallel()
	c := viewcache.New("forge", "v1")
	_, err := c.GetOrRender(context.Background(), "k", nil, func(context.Context) ([]byte, error) { panic("template bug") })
	assert.ErrorIs(t, err, viewcache.ErrRenderPanic)
	assert.Contains(t, err.Error(), "template bug")
	var r counter
	assert.Equal(t, "render 1", get(t, c, "k", nil, &r))
}

// Hits are counted per core; none is lost to concurrency or to the
// garbage collector emptying the pool that holds the per-core counters.
func TestHitsCountedExactly(t *testing.T) {
	t.Parallel()
	c := viewcache.New("forge", "v1")
	var r counter
	get(t, c, "k", []string{"d"}, &r)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				if g == 0 && i%100 == 0 {
					runtime.GC()
				}
				c.GetOrRender(context.Background(), "k", []string{"d"}, r.render)
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, int64(8000), c.Stats().L1Hits)
	assert.Equal(t, int64(1), r.n.Load())
}

// TestRunDetached: renders that may outlive their caller run through the
// hook, which the application uses to watch them (slowlog's Do).
func TestRunDetached(t *testing.T) {
	t.Parallel()
	c := viewcache.New("t", "1")
	defer c.Close()
	var mu sync.Mutex
	var names []string
	c.RunDetached = func(ctx context.Context, name string, f func(context.Context)) {
		mu.Lock()
		names = append(names, name)
		mu.Unlock()
		f(ctx)
	}
	b, err := c.GetOrRender(context.Background(), "k", nil, func(context.Context) ([]byte, error) { return []byte("v"), nil })
	require.NoError(t, err)
	assert.Equal(t, "v", string(b))
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"render k"}, names)

	broken := viewcache.New("t", "1")
	defer broken.Close()
	broken.RunDetached = func(context.Context, string, func(context.Context)) {}
	_, err = broken.GetOrRender(context.Background(), "k", nil, func(context.Context) ([]byte, error) { return []byte("v"), nil })
	assert.Error(t, err, "a hook that does not run the render fails it")
}

// fakeClock is a clock that moves only when told.
type fakeClock struct{ t atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.t.Store(time.Now().UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.t.Add(int64(d)) }

// TestOnWork: the hook hears of every lookup, memcached round trip and
// render, in process and over memcached.
func TestOnWork(t *testing.T) {
	t.Parallel()
	type event struct {
		ev  viewcache.WorkEvent
		key string
	}
	var mu sync.Mutex
	var got []event
	var rendered time.Duration
	record := func(ctx context.Context, ev viewcache.WorkEvent, key string, d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, event{ev, key})
		rendered += d
	}
	take := func() []event {
		mu.Lock()
		defer mu.Unlock()
		out := got
		got = nil
		return out
	}
	render := func(ctx context.Context) ([]byte, error) { time.Sleep(time.Millisecond); return []byte("x"), nil }
	ctx := context.Background()

	local := viewcache.New("t", "v1")
	local.OnWork = record
	_, err := local.GetOrRender(ctx, "a", nil, render)
	require.NoError(t, err)
	assert.Equal(t, []event{{viewcache.Asked, "a"}, {viewcache.Rendered, "a"}}, take())
	assert.GreaterOrEqual(t, rendered, time.Millisecond)
	_, err = local.GetOrRender(ctx, "a", nil, render)
	require.NoError(t, err)
	assert.Equal(t, []event{{viewcache.Asked, "a"}}, take(), "a hit is a lookup only")

	mc, _ := memcached(t)
	shared := viewcache.New("t", "v1")
	shared.Memcache, shared.MaxBytes, shared.OnWork = mc, -1, record
	_, err = shared.GetOrRender(ctx, "b", []string{"dep"}, render)
	require.NoError(t, err)
	// The lookup's round trip, then the render's own, then the render.
	assert.Equal(t, []event{{viewcache.Asked, "b"}, {viewcache.RemoteGet, ""}, {viewcache.RemoteGet, ""}, {viewcache.Rendered, "b"}}, take())
	_, err = shared.GetOrRenderMulti(ctx, []viewcache.Item{{Key: "b", Deps: []string{"dep"}, Render: render}, {Key: "c", Render: render}})
	require.NoError(t, err)
	ev := take()
	require.GreaterOrEqual(t, len(ev), 3)
	assert.Equal(t, []event{{viewcache.Asked, "b"}, {viewcache.Asked, "c"}, {viewcache.RemoteGet, ""}}, ev[:3])
	assert.Contains(t, ev, event{viewcache.Rendered, "c"})
	assert.NotContains(t, ev, event{viewcache.Rendered, "b"}, "b came from memcached")
}
