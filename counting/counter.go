// Package counting provides conflict-free view counters: Count on every
// hit, with no I/O, contended lock or allocation on the request path; a background
// flush adds the accumulated deltas into time buckets with one upsert
// transaction (`n = n + excluded.n`), which commutes, so any number of
// processes sharing a database add up exactly; and MostViewed, Total and
// Series over any window, including what this process has not flushed.
//
// Durability: Close and Flush write everything; a crash loses at most the
// counts of this process's current flush interval. A failed flush (full
// disk, locked database) keeps its deltas in memory and retries them, up
// to MaxPending; beyond it the oldest are dropped and counted, never
// silently. Counts are attributed to the bucket in which they are flushed,
// so a count may land up to one Interval late at a bucket boundary.
//
// Ids are strings of 1 to MaxIDLen bytes; Count ignores (and counts)
// others. All times are UTC. Counts wait for the flush in shards, one per
// P (see shard.go), whose maps keep their largest size for reuse, so
// memory grows with the number of distinct ids counted between flushes:
// about 160 bytes each with 100k ids of about 12 bytes
// (BenchmarkMemoryPerID), besides the id strings the caller holds. A
// shard idle for three flushes is dropped.
package counting

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Counter.
const (
	DefaultInterval   = time.Second
	DefaultBucket     = time.Hour
	DefaultRetention  = 7 * 24 * time.Hour
	DefaultMaxPending = 1 << 20
	MaxIDLen          = 512
)

// Delta is an amount to add to one id in one bucket.
type Delta struct {
	ID     string
	Bucket time.Time // start of the bucket, UTC
	N      int64
}

// Sum is a total for one id (and, in a series, one bucket).
type Sum struct {
	ID     string
	Bucket time.Time // zero unless the query grouped by bucket
	N      int64
}

// Query selects sums from a Store.
type Query struct {
	From, To time.Time // [From, To)
	ID       string    // one id; empty for all
	ByBucket bool      // one Sum per bucket instead of per id
	Limit    int       // the largest sums only, if positive (per id)
}

// Store keeps the counts. Implementations must make Add one transaction
// that adds (never overwrites), so that concurrent writers commute.
type Store interface {
	Add(ctx context.Context, deltas []Delta) error
	Sums(ctx context.Context, q Query) ([]Sum, error)
	// Rollup folds buckets older than before into daily rows.
	Rollup(ctx context.Context, before time.Time) error
}

// Counter counts views. Set its fields before the first Count; it starts
// its flush goroutine then. A Counter is safe for concurrent use.
type Counter struct {
	// Interval is the time between flushes. If zero, DefaultInterval.
	Interval time.Duration
	// Bucket is the bucket size. If zero, DefaultBucket.
	Bucket time.Duration
	// Retention is how long buckets are kept before they are rolled into
	// daily rows. If zero, DefaultRetention.
	Retention time.Duration
	// MaxPending bounds the deltas kept while flushes fail. If zero,
	// DefaultMaxPending.
	MaxPending int
	// Logger receives flush failures. If nil, nothing is logged.
	Logger *slog.Logger

	// Filter, if set, decides whether a Hit counts: return false for
	// bots, crawlers, the owner's own views. It runs on the request
	// path; keep it cheap.
	Filter func(id, viewer string) bool

	// OnQuery, if set, is told of every store query a reader (Total,
	// MostViewed, Series, Uniques) made, with its context and time, for
	// per-request accounting (slowlog's Work, which this package does
	// not import). Flushes run in the background and are not told.
	OnQuery func(ctx context.Context, d time.Duration)

	// TrendingWindow, if positive, keeps an in-memory top of the ids
	// viewed in the last TrendingWindow (rounded to minutes), fed by the
	// flushes, for Trending. Off by default.
	TrendingWindow time.Duration

	// TrendingK is the number of ids each minute of the trending window
	// tracks (Space-Saving). If zero, DefaultTrendingK.
	TrendingK int

	// Unique, if set, also keeps unique viewers per id and day from the
	// viewer keys given to Hit, for Uniques (HyperLogLog sketches; the
	// store must implement UniqueStore, as SQLiteStore does). Hit then
	// takes a sharded lock. Off by default.
	Unique bool

	trend   *trending
	uniques [uniqueShards]uniqueShard

	store Store

	once    sync.Once
	stop    chan struct{}
	done    chan struct{}
	closed  atomic.Bool
	shards  shards     // the counts since the last flush
	flushMu sync.Mutex // serializes flushes

	pmu     sync.Mutex // guards pending
	pending map[pendingKey]int64

	// drained is what flushes have taken out of the shards: Counted is
	// drained plus what the shards hold. Count touches no shared counter
	// (one atomic that every core bumps costs more than the rest of it).
	drained                                          int64 // guarded by pmu
	flushed, flushErrors, dropped, invalid, filtered atomic.Int64
	lastRollup                                       time.Time // guarded by flushMu
}

type pendingKey struct {
	id     string
	bucket int64
}

// Stats are the counters of a Counter.
type Stats struct {
	Counted     int64 // Count calls accepted
	Flushed     int64 // counts written to the store
	FlushErrors int64 // failed flushes
	Dropped     int64 // counts dropped because MaxPending was reached
	Invalid     int64 // Count calls with an invalid id
	Filtered    int64 // Hit calls the Filter rejected
	Pending     int64 // counts waiting for a flush
}

// New returns a Counter writing to store.
func New(store Store) *Counter {
	return &Counter{store: store}
}

func (c *Counter) start() {
	c.once.Do(func() {
		c.stop = make(chan struct{})
		c.done = make(chan struct{})
		c.pending = make(map[pendingKey]int64)
		if c.TrendingWindow > 0 {
			k := c.TrendingK
			if k <= 0 {
				k = DefaultTrendingK
			}
			c.trend = newTrending(c.TrendingWindow, k)
		}
		go c.loop()
	})
}

func (c *Counter) interval() time.Duration {
	if c.Interval > 0 {
		return c.Interval
	}
	return DefaultInterval
}

func (c *Counter) bucket() time.Duration {
	if c.Bucket > 0 {
		return c.Bucket
	}
	return DefaultBucket
}

// Count adds one view of id. It does no I/O, takes no lock another core
// holds, and allocates only when id is new to the shard it lands in.
func (c *Counter) Count(id string) {
	c.Add(id, 1)
}

// Hit counts one view of id by viewer (a session or client key), unless
// Filter rejects it. Rejected hits are counted in Stats.Filtered.
func (c *Counter) Hit(id, viewer string) {
	if c.Filter != nil && !c.Filter(id, viewer) {
		c.filtered.Add(1)
		return
	}
	if c.Unique && viewer != "" && len(id) > 0 && len(id) <= MaxIDLen {
		c.addUnique(id, viewer, time.Now())
	}
	c.Add(id, 1)
}

// Trending returns the ids most viewed in the last TrendingWindow, as
// flushed so far; nil when trending is off. Counts are Space-Saving
// estimates: never below the truth, above it by at most the smallest
// tracked count of a minute.
func (c *Counter) Trending(limit int) []Entry {
	c.start()
	if c.trend == nil {
		return nil
	}
	return c.trend.top(time.Now(), limit)
}

// Add adds n views of id.
func (c *Counter) Add(id string, n int64) {
	if len(id) == 0 || len(id) > MaxIDLen || n <= 0 {
		c.invalid.Add(1)
		return
	}
	c.start()
	c.shards.add(id, n)
}

func (c *Counter) loop() {
	defer close(c.done)
	t := time.NewTicker(c.interval())
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 10*c.interval()+10*time.Second)
			if err := c.Flush(ctx); err != nil && c.Logger != nil {
				c.Logger.Warn("counting: flush failed; deltas kept for the next one", "err", err)
			}
			cancel()
		}
	}
}

// Flush writes the counts accumulated so far (and those kept from failed
// flushes) in one transaction. On failure they stay in memory.
func (c *Counter) Flush(ctx context.Context) error {
	c.start()
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	now := time.Now().UTC()
	bucket := now.Truncate(c.bucket()).Unix()
	// Take every shard's counts: increments racing with the drain land
	// in the next flush, none is lost.
	var fresh map[string]int64
	if c.trend != nil {
		fresh = make(map[string]int64)
	}
	c.pmu.Lock()
	c.shards.drain(func(id string, n int64) {
		c.drained += n
		c.pending[pendingKey{id, bucket}] += n
		if fresh != nil {
			fresh[id] += n
		}
	})
	deltas := make([]Delta, 0, len(c.pending))
	for k, n := range c.pending {
		deltas = append(deltas, Delta{ID: k.id, Bucket: time.Unix(k.bucket, 0).UTC(), N: n})
	}
	c.pmu.Unlock()
	if len(fresh) > 0 {
		c.trend.add(now, fresh)
	}
	if len(deltas) > 0 {
		if err := c.store.Add(ctx, deltas); err != nil {
			c.flushErrors.Add(1)
			c.trimPending()
			return fmt.Errorf("counting: flush: %w", err)
		}
		c.pmu.Lock()
		var total int64
		for _, d := range deltas {
			k := pendingKey{d.ID, d.Bucket.Unix()}
			if c.pending[k] -= d.N; c.pending[k] == 0 {
				delete(c.pending, k)
			}
			total += d.N
		}
		c.flushed.Add(total)
		c.pmu.Unlock()
	}
	if err := c.flushUniques(ctx); err != nil {
		c.flushErrors.Add(1)
		return fmt.Errorf("counting: flush unique viewers: %w", err)
	}
	if now.Sub(c.lastRollup) > time.Hour {
		ret := c.Retention
		if ret <= 0 {
			ret = DefaultRetention
		}
		if err := c.store.Rollup(ctx, now.Add(-ret).Truncate(24*time.Hour)); err != nil {
			return fmt.Errorf("counting: rollup: %w", err)
		}
		c.lastRollup = now
	}
	return nil
}

// trimPending drops the oldest deltas beyond MaxPending.
func (c *Counter) trimPending() {
	max := c.MaxPending
	if max <= 0 {
		max = DefaultMaxPending
	}
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if len(c.pending) <= max {
		return
	}
	keys := make([]pendingKey, 0, len(c.pending))
	for k := range c.pending {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].bucket < keys[j].bucket })
	for _, k := range keys[:len(keys)-max] {
		c.dropped.Add(c.pending[k])
		delete(c.pending, k)
	}
}

// Close stops the flush goroutine and writes everything.
func (c *Counter) Close() error {
	c.start()
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(c.stop)
	<-c.done
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return c.Flush(ctx)
}

// Stats returns the counters. It walks every id seen since the start, so
// it is for monitoring, not for every request.
func (c *Counter) Stats() Stats {
	// Under pmu a flush is not halfway through moving counts from the
	// cells to pending, so Counted - Flushed - Dropped is what waits.
	c.pmu.Lock()
	defer c.pmu.Unlock()
	s := Stats{
		Counted:     c.drained,
		Flushed:     c.flushed.Load(),
		FlushErrors: c.flushErrors.Load(),
		Dropped:     c.dropped.Load(),
		Invalid:     c.invalid.Load(),
		Filtered:    c.filtered.Load(),
	}
	c.shards.each(func(_ string, n int64) { s.Counted += n })
	s.Pending = s.Counted - s.Flushed - s.Dropped
	return s
}

// unflushed returns this process's counts not yet in the store, by id,
// attributed to the bucket of now.
func (c *Counter) unflushed(q Query, now time.Time) map[string]int64 {
	out := make(map[string]int64)
	b := now.Truncate(c.bucket())
	inWindow := !b.Before(q.From) && b.Before(q.To)
	c.pmu.Lock()
	for k, n := range c.pending {
		t := time.Unix(k.bucket, 0)
		if (q.ID == "" || q.ID == k.id) && !t.Before(q.From) && t.Before(q.To) {
			out[k.id] += n
		}
	}
	c.pmu.Unlock()
	switch {
	case !inWindow:
	case q.ID != "":
		// One id (Total, on every page that shows a count): a lookup,
		// not a walk over every id this counter has seen.
		if n := c.shards.get(q.ID); n != 0 {
			out[q.ID] += n
		}
	default:
		c.shards.each(func(id string, n int64) { out[id] += n })
	}
	return out
}

// Entry is an id and its count.
type Entry struct {
	ID string
	N  int64
}

// ErrWindow is returned for a window whose end is not after its start.
var ErrWindow = errors.New("counting: empty time window")

// MostViewed returns the limit ids with the most views in [from, to),
// counting this process's unflushed views too.
func (c *Counter) MostViewed(ctx context.Context, from, to time.Time, limit int) ([]Entry, error) {
	if !to.After(from) {
		return nil, ErrWindow
	}
	q := Query{From: from.UTC(), To: to.UTC()}
	extra := c.unflushed(q, time.Now().UTC())
	// Ask for more than limit: unflushed counts may lift an id into the
	// top that the store's top does not contain.
	q.Limit = limit + len(extra)
	sums, err := c.sums(ctx, q)
	if err != nil {
		return nil, err
	}
	totals := make(map[string]int64, len(sums)+len(extra))
	for _, s := range sums {
		totals[s.ID] += s.N
	}
	for id, n := range extra {
		totals[id] += n
	}
	return top(totals, limit), nil
}

// sums asks the store, telling OnQuery.
func (c *Counter) sums(ctx context.Context, q Query) ([]Sum, error) {
	defer c.queried(ctx, time.Now())
	return c.store.Sums(ctx, q)
}

func (c *Counter) queried(ctx context.Context, start time.Time) {
	if c.OnQuery != nil {
		c.OnQuery(ctx, time.Since(start))
	}
}

// top returns the limit largest totals, largest first, ties by id.
func top(totals map[string]int64, limit int) []Entry {
	out := make([]Entry, 0, len(totals))
	for id, n := range totals {
		out = append(out, Entry{ID: id, N: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].N != out[j].N {
			return out[i].N > out[j].N
		}
		return out[i].ID < out[j].ID
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// Total returns the views of id in [from, to), unflushed ones included.
func (c *Counter) Total(ctx context.Context, id string, from, to time.Time) (int64, error) {
	if !to.After(from) {
		return 0, ErrWindow
	}
	q := Query{From: from.UTC(), To: to.UTC(), ID: id}
	sums, err := c.sums(ctx, q)
	if err != nil {
		return 0, err
	}
	n := c.unflushed(q, time.Now().UTC())[id]
	for _, s := range sums {
		n += s.N
	}
	return n, nil
}

// Series returns the views of id per bucket in [from, to), for graphs,
// unflushed ones included; buckets older than the retention are daily.
func (c *Counter) Series(ctx context.Context, id string, from, to time.Time) ([]Sum, error) {
	if !to.After(from) {
		return nil, ErrWindow
	}
	q := Query{From: from.UTC(), To: to.UTC(), ID: id, ByBucket: true}
	sums, err := c.sums(ctx, q)
	if err != nil {
		return nil, err
	}
	// Unflushed counts, each in its own bucket: kept deltas of failed
	// flushes where they were counted, the current ones in this bucket.
	extra := make(map[int64]int64)
	c.pmu.Lock()
	for k, n := range c.pending {
		if t := time.Unix(k.bucket, 0); k.id == id && !t.Before(q.From) && t.Before(q.To) {
			extra[k.bucket] += n
		}
	}
	c.pmu.Unlock()
	if b := time.Now().UTC().Truncate(c.bucket()); !b.Before(q.From) && b.Before(q.To) {
		if n := c.shards.get(id); n != 0 {
			extra[b.Unix()] += n
		}
	}
	for i := range sums {
		sums[i].N += extra[sums[i].Bucket.Unix()]
		delete(extra, sums[i].Bucket.Unix())
	}
	for b, n := range extra {
		sums = append(sums, Sum{ID: id, Bucket: time.Unix(b, 0).UTC(), N: n})
	}
	sort.Slice(sums, func(i, j int) bool { return sums[i].Bucket.Before(sums[j].Bucket) })
	return sums, nil
}
