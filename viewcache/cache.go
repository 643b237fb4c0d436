// Package viewcache provides a cache of rendered page fragments
// ("viewlets"): a byte-bounded in-process LRU (L1) over memcached (L2),
// with dependency invalidation, stampede control and stale-while-
// revalidate.
//
// GetOrRender returns the cached bytes of a fragment or runs its render
// function once, stores and returns the result. Every fragment names the
// things it depends on ("repo:alice/proj", "user:42"); each dependency has
// a generation counter (in memcached when there is one, so that every
// process sees it, in process memory otherwise), and an entry records the
// generations it was rendered under. Invalidate bumps the counters, one
// atomic incr each, so no tag list can race. A lookup fetches the entry and
// the current generations of its dependencies in one multi-get round trip.
//
// Stampedes are contained twice: concurrent misses of one key in a process
// share one render (a caller that gives up does not fail the others), and
// across processes a short memcached "add" lock lets one process render
// while the others serve the stale entry or wait briefly. After SoftTTL an
// entry is served stale while one background render refreshes it; after
// TTL it is gone. memcached being down, slow or returning garbage is a
// miss, never an error: a circuit breaker stops calling a dead server and
// probes it again later.
//
// The lookups can go through a Getter, which does a multi-get in one round
// trip per server without gomemcache's goroutine per call.
//
// With memcached, an L1 entry is trusted for at most L1TTL without asking
// memcached for its generations again: that is the bound on how long
// another process's invalidation may take to be seen here (this process's
// own invalidations are seen at once).
package viewcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/sync/singleflight"
)

// Defaults for Cache.
const (
	DefaultMaxBytes = 64 << 20
	DefaultTTL      = 10 * time.Minute
	DefaultL1TTL    = time.Second
	DefaultLockTTL  = 10 * time.Second
	DefaultLockWait = 500 * time.Millisecond
	maxKeyLen       = 250 // memcached's limit
)

// Cache is a two-tier fragment cache. Configure it before first use; it is
// then safe for concurrent use. Close waits for background refreshes.
type Cache struct {
	// Memcache is the shared tier. If nil, the cache is in-process only.
	Memcache *memcache.Client

	// Getter, if set, does the shared tier's lookups in place of
	// Memcache.GetMulti. A *Getter built from the same ServerSelector as
	// Memcache does them without a goroutine per lookup (see Getter). It
	// is used only when Memcache is set: writes, invalidations and locks
	// always go through Memcache.
	Getter MultiGetter

	// MaxBytes bounds the in-process tier by the bytes of its entries. If
	// zero, DefaultMaxBytes; if negative, there is no in-process tier.
	MaxBytes int64

	// TTL is how long an entry may be served at all. If zero, DefaultTTL.
	TTL time.Duration

	// SoftTTL, if positive, is the age after which an entry is served
	// stale while one background render refreshes it.
	SoftTTL time.Duration

	// Jitter, between 0 and 1, spreads TTL and SoftTTL by up to that
	// fraction, so that entries rendered together do not expire together.
	Jitter float64

	// Beta, if positive, enables probabilistic early refresh (XFetch):
	// an entry is refreshed before its soft expiry with a probability
	// that grows as it approaches, in proportion to how long it took to
	// render. 1 is the usual value.
	Beta float64

	// MinAge, if positive, keeps an invalidated entry in service until it
	// is this old, which bounds how often a hot fragment is rebuilt.
	MinAge time.Duration

	// L1TTL bounds how long an in-process entry is served without
	// checking the shared generations, when Memcache is set. If zero,
	// DefaultL1TTL.
	L1TTL time.Duration

	// LockWait is how long a process waits for another that holds the
	// render lock of a key it has no stale entry for. If zero,
	// DefaultLockWait.
	LockWait time.Duration

	// MaxParallel bounds the concurrent renders of one
	// GetOrRenderMulti. If zero, DefaultMaxParallel.
	MaxParallel int

	// Logger receives memcached errors at debug level. If nil, nothing
	// is logged.
	Logger *slog.Logger

	// RunDetached, if set, runs each render that may outlive the request
	// that asked for it (the one render of concurrent misses, which goes
	// on when its caller gives up; a refresh in the background), for
	// example with a slowlog Watchdog's Do, so that a slow render is
	// watched as work of its own that names the request that started it.
	// It must call f, with a context derived from ctx, and return when f
	// does. If nil, renders just run.
	RunDetached func(ctx context.Context, name string, f func(ctx context.Context))

	// OnWork, if set, is told of the work done for a request, for
	// per-request accounting (slowlog's Work, which this package does
	// not import): an Asked for every fragment asked for, a RemoteGet
	// for every round trip to memcached, a Rendered, with its time, for
	// every render. key is the fragment's key (for Asked and Rendered).
	// It runs on the request path and must be cheap.
	OnWork func(ctx context.Context, ev WorkEvent, key string, d time.Duration)

	prefix string
	now    func() time.Time // the clock of expiries; nil means time.Now (tests set it)

	once   sync.Once
	l2     *l2
	shards [l1Shards]l1Shard // the in-process tier, sharded by key so that hits scale with cores

	// gens is this process's view of the generations (string → uint64),
	// read lock-free on every hit; gmu serializes its writers.
	gens sync.Map
	gmu  sync.Mutex

	flight  singleflight.Group
	refresh sync.WaitGroup // background refreshes, for Close

	// l1Hits is bumped on every in-process hit, from every core.
	l1Hits hitCounter

	l2Hits, staleHits, misses, renders, coalesced, evictions, l2Errors, invalidations atomic.Int64
}

// clock is the time by which entries expire.
func (c *Cache) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// hitCounter is a counter that every core bumps at once. A single atomic
// counter of hits was the one write each hit made to shared memory, and it
// alone kept the hits of a hot key from scaling: two cores took longer
// per hit than one (168 vs 115 ns). Spreading the adds over random
// stripes does not help either, since a stripe then changes owner on half
// the adds. hitCounter gives each P a counter of its own through a
// sync.Pool (whose Get and Put are per-P), and keeps every counter it ever
// made in a list, so that none is lost when the pool is emptied by a
// garbage collection. After a collection the pool's misses take counters
// from the list again rather than making more, so the list stays bounded.
type hitCounter struct {
	pool sync.Pool // *hitShard

	mu     sync.Mutex // guards shards and next
	shards []*hitShard
	next   int
}

type hitShard struct {
	n atomic.Int64
	_ [120]byte // a shard to itself: adjacent cache lines are fetched in pairs
}

func (h *hitCounter) Add(n int64) {
	s, _ := h.pool.Get().(*hitShard)
	if s == nil {
		s = h.shard()
	}
	s.n.Add(n)
	h.pool.Put(s)
}

// shard returns a counter for a P whose pooled one is gone.
func (h *hitCounter) shard() *hitShard {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.shards) < 2*runtime.GOMAXPROCS(0) {
		s := new(hitShard)
		h.shards = append(h.shards, s)
		return s
	}
	h.next = (h.next + 1) % len(h.shards)
	return h.shards[h.next]
}

func (h *hitCounter) Load() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var sum int64
	for _, s := range h.shards {
		sum += s.n.Load()
	}
	return sum
}

// Stats are the counters of a Cache.
type Stats struct {
	L1Hits        int64 // fresh hits in process memory
	L2Hits        int64 // fresh hits in memcached
	StaleHits     int64 // stale entries served (soft-expired, invalidated within MinAge, or while another process renders); not counted as hits, since they can hide a dead origin
	Misses        int64 // lookups that found nothing servable
	Renders       int64 // render calls
	Coalesced     int64 // callers that waited for another's render
	Evictions     int64 // in-process entries evicted for space
	L2Errors      int64 // memcached failures (each a miss); calls skipped while the circuit breaker is open are not counted
	Invalidations int64 // dependencies invalidated
	Entries       int   // in-process entries
	Bytes         int64 // in-process bytes
}

// l1Shards is the number of independent LRUs of the in-process tier; each
// gets an equal share of MaxBytes.
const l1Shards = 16

type l1Shard struct {
	mu    sync.Mutex // guards lru and bytes
	lru   *simplelru.LRU[string, *l1Entry]
	bytes int64

	// index mirrors lru's contents for lock-free hits: a hot fragment's
	// hits then scale with the cores instead of queueing on mu.
	index sync.Map // string → *l1Entry
}

// touchEvery is how often a hit moves its entry to the front of the LRU.
// Moving needs the shard's write lock; doing it on every hit would make a
// hot fragment's hits queue behind each other instead of scaling with the
// cores. Recency at this granularity is all eviction needs.
const touchEvery = 100 * time.Millisecond

// get returns the entry of key, moving it to the front at most every
// touchEvery.
func (sh *l1Shard) get(key string, now time.Time) (*l1Entry, bool) {
	v, ok := sh.index.Load(key)
	if !ok {
		return nil, false
	}
	le := v.(*l1Entry)
	if now.UnixNano()-le.touched.Load() > int64(touchEvery) {
		le.touched.Store(now.UnixNano())
		sh.mu.Lock()
		sh.lru.Get(key)
		sh.mu.Unlock()
	}
	return le, true
}

func (c *Cache) shard(key string) *l1Shard {
	// FNV-1a, inlined to keep the hit path free of allocations.
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return &c.shards[h%l1Shards]
}

type l1Entry struct {
	e       *entry
	deps    []string
	checked time.Time    // when its generations were last confirmed with memcached
	touched atomic.Int64 // when it last moved to the front, in Unix ns
}

// New returns a cache whose keys live under namespace and version: bump
// version when templates change, so that no old HTML is served.
func New(namespace, version string) *Cache {
	return &Cache{prefix: namespace + ":" + version + ":"}
}

func (c *Cache) init() {
	c.once.Do(func() {
		for i := range c.shards {
			sh := &c.shards[i]
			sh.lru, _ = simplelru.NewLRU[string, *l1Entry](math.MaxInt32, func(k string, v *l1Entry) {
				sh.bytes -= v.e.size() + int64(len(k))
				sh.index.CompareAndDelete(k, v)
			})
		}
		if c.Memcache != nil {
			c.l2 = &l2{mc: c.Memcache, getter: c.Getter, threshold: DefaultBreakerThreshold, cooldown: DefaultBreakerCooldown}
			if c.l2.getter == nil {
				c.l2.getter = c.Memcache
			}
		}
	})
}

// Close waits for background refreshes to finish.
func (c *Cache) Close() error {
	c.refresh.Wait()
	return nil
}

// Stats returns the cache's counters.
func (c *Cache) Stats() Stats {
	c.init()
	var entries int
	var bytes int64
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		entries, bytes = entries+sh.lru.Len(), bytes+sh.bytes
		sh.mu.Unlock()
	}
	return Stats{
		L1Hits: c.l1Hits.Load(), L2Hits: c.l2Hits.Load(), StaleHits: c.staleHits.Load(),
		Misses: c.misses.Load(), Renders: c.renders.Load(), Coalesced: c.coalesced.Load(),
		Evictions: c.evictions.Load(), L2Errors: c.l2Errors.Load(), Invalidations: c.invalidations.Load(),
		Entries: entries, Bytes: bytes,
	}
}

// memKey makes a memcached-safe key: namespaced, and hashed when it is too
// long or has characters memcached does not allow.
func (c *Cache) memKey(kind, key string) string {
	k := c.prefix + kind + key
	if legalKey(k) {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	return c.prefix + kind + "#" + hex.EncodeToString(sum[:])
}

func safeKey(k string) bool {
	for i := 0; i < len(k); i++ {
		if k[i] <= ' ' || k[i] == 0x7f {
			return false
		}
	}
	return true
}

// genKey is not versioned: an invalidation holds for every renderer
// version.
func (c *Cache) genKey(dep string) string {
	k := c.prefix[:strings.IndexByte(c.prefix, ':')+1] + "gen:" + dep
	if legalKey(k) {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	return "gen#" + hex.EncodeToString(sum[:])
}

// Render produces a fragment.
type Render func(ctx context.Context) ([]byte, error)

// WorkEvent is a kind of work Cache.OnWork is told of.
type WorkEvent int

// The events of Cache.OnWork.
const (
	Asked     WorkEvent = iota // a fragment asked for
	RemoteGet                  // a round trip to memcached
	Rendered                   // a fragment rendered, with its time
)

func (c *Cache) work(ctx context.Context, ev WorkEvent, key string, d time.Duration) {
	if c.OnWork != nil {
		c.OnWork(ctx, ev, key, d)
	}
}

// GetOrRender returns the fragment for key, which depends on deps, from
// the cache or from render. Only render's own error is ever returned.
func (c *Cache) GetOrRender(ctx context.Context, key string, deps []string, render Render) ([]byte, error) {
	c.init()
	c.work(ctx, Asked, key, 0)
	now := c.clock()

	// L1.
	var local *entry // valid by this process's view, but due for a check
	if c.MaxBytes >= 0 {
		le, ok := c.shard(key).get(key, now)
		if ok {
			fresh, valid := c.judgeLocal(le.e, le.deps, now)
			trusted := c.l2 == nil || now.Sub(le.checked) < c.l1TTL()
			if valid && !trusted && fresh {
				local = le.e
			}
			if valid && trusted {
				if fresh {
					c.l1Hits.Add(1)
					return le.e.value, nil
				}
				c.staleHits.Add(1)
				c.refreshAsync(ctx, key, deps, render)
				return le.e.value, nil
			}
		}
	}

	// L2: the entry and its dependencies' generations in one round trip.
	var stale *entry
	if c.l2 != nil {
		e, gens, err := c.fetch(ctx, key, deps)
		if err != nil && local != nil {
			// memcached is unreachable: what this process has is the
			// best there is.
			c.l1Hits.Add(1)
			return local.value, nil
		}
		if err == nil && e != nil {
			fresh, valid := c.judge(e, gens, now)
			if valid {
				c.storeL1(key, deps, e, now)
				if fresh {
					c.l2Hits.Add(1)
					return e.value, nil
				}
				c.staleHits.Add(1)
				c.refreshAsync(ctx, key, deps, render)
				return e.value, nil
			}
			if now.Before(e.hard) {
				stale = e // invalidated: servable only while another renders
			}
		}
	}
	c.misses.Add(1)
	return c.renderShared(ctx, key, deps, render, stale)
}

// judge says whether e is fresh, and whether it may be served at all,
// given the current generations of its dependencies.
func (c *Cache) judge(e *entry, gens []uint64, now time.Time) (fresh, valid bool) {
	same := len(gens) == len(e.gens)
	for i := 0; same && i < len(gens); i++ {
		same = gens[i] == e.gens[i]
	}
	return c.judgeSame(e, same, now)
}

// judgeLocal is judge against this process's view of the generations,
// without copying them.
func (c *Cache) judgeLocal(e *entry, deps []string, now time.Time) (fresh, valid bool) {
	same := len(deps) == len(e.gens)
	for i := 0; same && i < len(deps); i++ {
		same = c.gen(deps[i]) == e.gens[i]
	}
	return c.judgeSame(e, same, now)
}

// gen returns this process's view of dep's generation.
func (c *Cache) gen(dep string) uint64 {
	if v, ok := c.gens.Load(dep); ok {
		return v.(uint64)
	}
	return 0
}

// raiseGen records a generation read from memcached, if it is newer.
func (c *Cache) raiseGen(dep string, n uint64) {
	if n <= c.gen(dep) {
		return
	}
	c.gmu.Lock()
	defer c.gmu.Unlock()
	if n > c.gen(dep) {
		c.gens.Store(dep, n)
	}
}

func (c *Cache) judgeSame(e *entry, same bool, now time.Time) (fresh, valid bool) {
	if !now.Before(e.hard) {
		return false, false
	}
	if !same {
		// Invalidated; MinAge keeps a young entry in service.
		return false, c.MinAge > 0 && now.Sub(e.created) < c.MinAge
	}
	if c.SoftTTL > 0 && !now.Before(e.soft) {
		return false, true
	}
	if c.Beta > 0 && c.SoftTTL > 0 && e.render > 0 {
		// XFetch: refresh early with a probability growing towards soft.
		// In float64: render × Beta may not fit a Duration.
		early := float64(e.render) * c.Beta * -math.Log(rand.Float64())
		if early >= float64(e.soft.Sub(now)) {
			return false, true
		}
	}
	return true, true
}

// localGens returns this process's view of the generations.
func (c *Cache) localGens(deps []string) []uint64 {
	g := make([]uint64, len(deps))
	for i, d := range deps {
		g[i] = c.gen(d)
	}
	return g
}

// fetch gets the entry of key and the generations of deps from memcached.
func (c *Cache) fetch(ctx context.Context, key string, deps []string) (*entry, []uint64, error) {
	c.work(ctx, RemoteGet, "", 0)
	keys := make([]string, 0, len(deps)+1)
	keys = append(keys, c.memKey("v:", key))
	for _, d := range deps {
		keys = append(keys, c.genKey(d))
	}
	items, err := c.l2.getMulti(keys)
	if err != nil {
		c.l2Error("get", err)
		return nil, nil, err
	}
	return c.parse(items, keys, deps)
}

// parse picks an entry and the generations of its deps out of a
// multi-get answer, and updates this process's view of the generations.
// keys are the memcached keys asked for: the entry's, then one per dep.
func (c *Cache) parse(items map[string]*memcache.Item, keys []string, deps []string) (*entry, []uint64, error) {
	gens := make([]uint64, len(deps))
	for i, d := range deps {
		if it, ok := items[keys[1+i]]; ok {
			n, perr := strconv.ParseUint(strings.TrimSpace(string(it.Value)), 10, 64)
			if perr != nil {
				c.l2Error("generation", perr)
				return nil, nil, perr // a garbled counter: miss, render, store nothing wrong
			}
			gens[i] = n
		}
		c.raiseGen(d, gens[i])
	}
	it, ok := items[keys[0]]
	if !ok {
		return nil, gens, nil
	}
	e, err := decode(it.Value)
	if err != nil {
		c.l2Error("decode", err) // corrupt or foreign: a miss
		return nil, gens, nil
	}
	return e, gens, nil
}

// l1Get returns a fresh, trusted in-process entry's value.
func (c *Cache) l1Get(key string, now time.Time) ([]byte, bool) {
	v, ok := c.l1Fresh(key, now)
	if ok {
		c.l1Hits.Add(1)
	}
	return v, ok
}

// l1Fresh returns the in-process entry of key if it may be served as a
// fresh hit, without counting it.
func (c *Cache) l1Fresh(key string, now time.Time) ([]byte, bool) {
	if c.MaxBytes < 0 {
		return nil, false
	}
	le, ok := c.shard(key).get(key, now)
	if !ok {
		return nil, false
	}
	fresh, valid := c.judgeLocal(le.e, le.deps, now)
	if !fresh || !valid || (c.l2 != nil && now.Sub(le.checked) >= c.l1TTL()) {
		return nil, false
	}
	return le.e.value, true
}

func (c *Cache) l2Error(op string, err error) {
	if errors.Is(err, memcache.ErrCacheMiss) || errors.Is(err, errBreakerOpen) {
		return // a skipped call is not a failure of memcached
	}
	c.l2Errors.Add(1)
	if c.Logger != nil {
		c.Logger.Debug("viewcache: memcached", "op", op, "err", err)
	}
}

// renderShared renders key once per process, under the cross-process
// lock, and stores the result.
func (c *Cache) renderShared(ctx context.Context, key string, deps []string, render Render, stale *entry) ([]byte, error) {
	ch := c.flight.DoChan(key, func() (any, error) {
		// A caller that missed just before the previous render of key
		// stored it starts a new flight after that one ended: what it
		// stored answers.
		if v, ok := c.l1Fresh(key, c.clock()); ok {
			return v, nil
		}
		// Detached: a caller that gives up must not fail the others.
		rctx := context.WithoutCancel(ctx)
		if c.l2 != nil {
			lk := c.memKey("lock:", key)
			err := c.l2.add(&memcache.Item{Key: lk, Value: []byte{'1'}, Expiration: int32(DefaultLockTTL / time.Second)})
			if errors.Is(err, memcache.ErrNotStored) {
				// Another process is rendering.
				if stale != nil {
					c.staleHits.Add(1)
					return stale.value, nil
				}
				if e := c.awaitOther(ctx, key, deps); e != nil {
					return e.value, nil
				}
			} else if err == nil {
				defer c.l2.delete(lk)
			}
		}
		return c.renderDetached(rctx, key, deps, render)
	})
	select {
	case res := <-ch:
		if res.Shared {
			c.coalesced.Add(1)
		}
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.([]byte), nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// awaitOther polls memcached for the entry another process is rendering.
func (c *Cache) awaitOther(ctx context.Context, key string, deps []string) *entry {
	wait := c.LockWait
	if wait <= 0 {
		wait = DefaultLockWait
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		time.Sleep(wait / 10)
		e, gens, err := c.fetch(ctx, key, deps)
		if err != nil {
			return nil
		}
		if e != nil {
			if _, valid := c.judge(e, gens, c.clock()); valid {
				c.storeL1(key, deps, e, c.clock())
				return e
			}
		}
	}
	return nil
}

// renderStore renders and stores under the generations read before the
// render, so that an invalidation during the render is not lost.
func (c *Cache) renderStore(ctx context.Context, key string, deps []string, render Render) ([]byte, error) {
	var gens []uint64
	if c.l2 != nil {
		if _, g, err := c.fetch(ctx, key, deps); err == nil {
			gens = g
		}
	}
	if gens == nil {
		gens = c.localGens(deps)
	}
	start := time.Now()
	c.renders.Add(1)
	value, err := safeRender(ctx, render)
	c.work(ctx, Rendered, key, time.Since(start))
	if err != nil {
		return nil, err
	}
	now := c.clock()
	e := &entry{value: value, gens: gens, created: now, render: now.Sub(start)}
	ttl := c.jitter(c.ttl())
	e.hard = now.Add(ttl)
	e.soft = e.hard
	if c.SoftTTL > 0 && c.SoftTTL < ttl {
		e.soft = now.Add(c.jitter(c.SoftTTL))
	}
	c.storeL1(key, deps, e, now)
	if c.l2 != nil {
		exp := int32((ttl + time.Second - 1) / time.Second)
		if err := c.l2.set(&memcache.Item{Key: c.memKey("v:", key), Value: encode(e), Expiration: exp}); err != nil {
			c.l2Error("set", err)
		}
	}
	return value, nil
}

// renderDetached is renderStore for a render that may outlive the
// request that asked for it, through RunDetached when it is set.
func (c *Cache) renderDetached(ctx context.Context, key string, deps []string, render Render) (value []byte, err error) {
	if c.RunDetached == nil {
		return c.renderStore(ctx, key, deps, render)
	}
	ran := false
	c.RunDetached(ctx, "render "+key, func(ctx context.Context) {
		ran = true
		value, err = c.renderStore(ctx, key, deps, render)
	})
	if !ran {
		return nil, errors.New("viewcache: RunDetached did not run the render")
	}
	return value, err
}

// ErrRenderPanic is wrapped by the error returned when a render function
// panicked. The panic is turned into an error because renders run under
// singleflight, which would otherwise re-panic on a goroutine that no
// handler can recover.
var ErrRenderPanic = errors.New("viewcache: render panicked")

func safeRender(ctx context.Context, render Render) (value []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v\n%s", ErrRenderPanic, p, debug.Stack())
		}
	}()
	return render(ctx)
}

func (c *Cache) refreshAsync(ctx context.Context, key string, deps []string, render Render) {
	c.refresh.Add(1)
	go func() {
		defer c.refresh.Done()
		// Shared with concurrent misses of the key; errors keep the stale
		// entry in service.
		c.flight.Do(key, func() (any, error) {
			return c.renderDetached(context.WithoutCancel(ctx), key, deps, render)
		})
	}()
}

func (c *Cache) storeL1(key string, deps []string, e *entry, checked time.Time) {
	if c.MaxBytes < 0 {
		return
	}
	max := c.MaxBytes
	if max == 0 {
		max = DefaultMaxBytes
	}
	max /= l1Shards
	size := e.size() + int64(len(key))
	if size > max/2 {
		return // one fragment may not crowd out the others
	}
	sh := c.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old, ok := sh.lru.Peek(key); ok && old.e.created.After(e.created) {
		return
	}
	le := &l1Entry{e: e, deps: deps, checked: checked}
	le.touched.Store(checked.UnixNano())
	if old, ok := sh.lru.Peek(key); ok {
		sh.bytes -= old.e.size() + int64(len(key)) // Add replaces without the eviction callback
	}
	sh.lru.Add(key, le)
	sh.index.Store(key, le)
	sh.bytes += size
	for sh.bytes > max {
		if _, _, ok := sh.lru.RemoveOldest(); !ok {
			break
		}
		c.evictions.Add(1)
	}
}

func (c *Cache) ttl() time.Duration {
	if c.TTL > 0 {
		return c.TTL
	}
	return DefaultTTL
}

func (c *Cache) l1TTL() time.Duration {
	if c.L1TTL > 0 {
		return c.L1TTL
	}
	return DefaultL1TTL
}

func (c *Cache) jitter(d time.Duration) time.Duration {
	if c.Jitter <= 0 {
		return d
	}
	return d - time.Duration(float64(d)*min(c.Jitter, 1)*rand.Float64())
}

// Invalidate makes every entry that depends on any of deps stale, in every
// process sharing the memcached servers. It returns an error only when
// memcached could not record an invalidation (this process's own tier is
// invalidated regardless).
func (c *Cache) Invalidate(ctx context.Context, deps ...string) error {
	c.init()
	var errs []error
	for _, d := range deps {
		c.invalidations.Add(1)
		var n uint64
		if c.l2 != nil {
			var err error
			if n, err = c.l2.incr(c.genKey(d)); err != nil {
				c.l2Error("incr", err)
				errs = append(errs, err)
			}
		}
		c.gmu.Lock()
		if cur := c.gen(d); n <= cur {
			n = cur + 1
		}
		c.gens.Store(d, n)
		c.gmu.Unlock()
	}
	return errors.Join(errs...)
}
