package slowlog

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is a kind of work a request does.
type Kind uint8

// The kinds of work a Work counts.
const (
	Query       Kind = iota // a SQL statement, with its time
	CacheLookup             // a lookup in a fragment cache
	CacheGet                // a round trip to a shared cache (memcached)
	Render                  // a fragment rendered on a miss, with its time
	GitRun                  // a git process, with its time
	Object                  // a git object read by browsing
	numKinds
)

var kindNames = [numKinds]string{"queries", "cache lookups", "cache gets", "renders", "git runs", "objects"}

// String returns the kind's name, plural, as the work line writes it.
func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("kind %d", k)
}

// DefaultRepeatLimit is the default Work.RepeatLimit.
const DefaultRepeatLimit = 10

// Work is the tally of the work one request or job did: how many SQL
// queries, cache lookups, renders, git processes and object reads, and
// the time of those that have one. The code doing the work counts it
// with Count or CountKey on the request's context; a Work put there with
// WithWork receives it. Counting costs a context lookup and two atomic
// adds, no allocation.
//
// CountKey also watches for repeated work: the same statement with the
// same arguments, or the same cache key, asked more than RepeatLimit
// times in one request is the signature of an N+1. OnRepeat hears of it
// once per key, with the stack of the call that crossed the limit.
//
// Set the fields before the Work is shared. A Work is safe for
// concurrent use: goroutines a request starts count into it too, and so
// does work detached from the request (a render finished in the
// background) when its context carries the request's values.
type Work struct {
	// RepeatLimit is how many times one key may be counted before
	// OnRepeat is told. If zero, DefaultRepeatLimit; if negative, keys
	// are not watched.
	RepeatLimit int

	// OnRepeat, if set, is called once per key that crosses
	// RepeatLimit, in the goroutine that crossed it.
	OnRepeat func(Repeat)

	n, d [numKinds]atomic.Int64

	mu   sync.Mutex     // guards seen
	seen map[uint64]int // key hash → times counted
	seed maphash.Seed   // set with seen
}

// Repeat describes work repeated past Work.RepeatLimit.
type Repeat struct {
	Kind  Kind
	Key   string // the statement or cache key, at most 200 bytes
	Count int    // times counted when the limit was crossed
	Stack []Frame
}

// String renders the repeat for a log line.
func (r Repeat) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s repeated %d times: %s", r.Kind, r.Count, r.Key)
	for _, f := range r.Stack {
		fmt.Fprintf(&b, "\n  %s\n      %s:%d", f.Func, f.File, f.Line)
	}
	return b.String()
}

type workKey struct{}

// WithWork returns a context that carries w: the work done under it is
// counted into w.
func WithWork(ctx context.Context, w *Work) context.Context {
	return context.WithValue(ctx, workKey{}, w)
}

// WorkFrom returns the Work of ctx, or nil.
func WorkFrom(ctx context.Context) *Work {
	w, _ := ctx.Value(workKey{}).(*Work)
	return w
}

// Count counts one unit of kind, taking d, into the Work of ctx; without
// one it does nothing.
func Count(ctx context.Context, kind Kind, d time.Duration) {
	if w, _ := ctx.Value(workKey{}).(*Work); w != nil {
		w.Add(kind, d)
	}
}

// CountN counts n units of kind, taking d in all, into the Work of ctx.
func CountN(ctx context.Context, kind Kind, n int64, d time.Duration) {
	if w, _ := ctx.Value(workKey{}).(*Work); w != nil {
		w.add(kind, n, d)
	}
}

// CountKey is Count for work that has a key, a statement and its
// arguments or a cache key, which the Work also watches for repeats.
// The arguments are hashed, not kept.
func CountKey(ctx context.Context, kind Kind, d time.Duration, key string, args ...any) {
	if w, _ := ctx.Value(workKey{}).(*Work); w != nil {
		w.Add(kind, d)
		w.repeat(kind, key, args)
	}
}

// Add counts one unit of kind, taking d.
func (w *Work) Add(kind Kind, d time.Duration) { w.add(kind, 1, d) }

func (w *Work) add(kind Kind, n int64, d time.Duration) {
	if kind >= numKinds || n <= 0 {
		return
	}
	w.n[kind].Add(n)
	if d > 0 {
		w.d[kind].Add(int64(d))
	}
}

func (w *Work) repeat(kind Kind, key string, args []any) {
	limit := w.RepeatLimit
	if limit == 0 {
		limit = DefaultRepeatLimit
	}
	if limit < 0 {
		return
	}
	w.mu.Lock()
	if w.seen == nil {
		w.seen = make(map[uint64]int)
		w.seed = maphash.MakeSeed()
	}
	h := hashKey(w.seed, kind, key, args)
	w.seen[h]++
	n := w.seen[h]
	w.mu.Unlock()
	if n == limit+1 && w.OnRepeat != nil {
		if len(key) > 200 {
			key = key[:200]
		}
		w.OnRepeat(Repeat{Kind: kind, Key: key, Count: n, Stack: callers(3)})
	}
}

// hashKey hashes the kind, the key and the arguments' values without
// formatting them.
func hashKey(seed maphash.Seed, kind Kind, key string, args []any) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	h.WriteByte(byte(kind))
	h.WriteString(key)
	var buf [8]byte
	for _, a := range args {
		h.WriteByte(0)
		switch v := a.(type) {
		case string:
			h.WriteString(v)
		case []byte:
			h.Write(v)
		case int64:
			h.Write(binary.LittleEndian.AppendUint64(buf[:0], uint64(v)))
		case int:
			h.Write(binary.LittleEndian.AppendUint64(buf[:0], uint64(v)))
		case bool:
			if v {
				h.WriteByte(1)
			}
		case float64:
			h.Write(binary.LittleEndian.AppendUint64(buf[:0], math.Float64bits(v)))
		case nil:
		default:
			h.WriteString(fmt.Sprint(v)) // rare types; &h must not escape
		}
	}
	return h.Sum64()
}

func callers(skip int) []Frame {
	pcs := make([]uintptr, 32)
	pcs = pcs[:runtime.Callers(skip+1, pcs)]
	frames := runtime.CallersFrames(pcs)
	var out []Frame
	for {
		f, more := frames.Next()
		out = append(out, Frame{Func: f.Function, File: f.File, Line: f.Line})
		if !more {
			return out
		}
	}
}

// Tally returns what w has counted so far.
func (w *Work) Tally() Tally {
	return Tally{
		Queries:      w.n[Query].Load(),
		QueryTime:    time.Duration(w.d[Query].Load()),
		CacheLookups: w.n[CacheLookup].Load(),
		CacheGets:    w.n[CacheGet].Load(),
		Renders:      w.n[Render].Load(),
		RenderTime:   time.Duration(w.d[Render].Load()),
		GitRuns:      w.n[GitRun].Load(),
		GitTime:      time.Duration(w.d[GitRun].Load()),
		Objects:      w.n[Object].Load(),
	}
}

// Tally is what a Work counted.
type Tally struct {
	Queries      int64
	QueryTime    time.Duration
	CacheLookups int64
	CacheGets    int64
	Renders      int64
	RenderTime   time.Duration
	GitRuns      int64
	GitTime      time.Duration
	Objects      int64
}

// IsZero reports whether nothing was counted.
func (t Tally) IsZero() bool { return t == Tally{} }

// String renders the tally as one line, for example
// "3 queries (1.2ms), 5 cache lookups, 1 render (4ms), 2 git runs (30ms)",
// leaving out what is zero.
func (t Tally) String() string {
	var parts []string
	add := func(n int64, one, many string, d time.Duration) {
		if n == 0 {
			return
		}
		s := fmt.Sprintf("%d %s", n, many)
		if n == 1 {
			s = "1 " + one
		}
		if d > 0 {
			s += " (" + d.Round(10*time.Microsecond).String() + ")"
		}
		parts = append(parts, s)
	}
	add(t.Queries, "query", "queries", t.QueryTime)
	add(t.CacheLookups, "cache lookup", "cache lookups", 0)
	add(t.CacheGets, "cache get", "cache gets", 0)
	add(t.Renders, "render", "renders", t.RenderTime)
	add(t.GitRuns, "git run", "git runs", t.GitTime)
	add(t.Objects, "object", "objects", 0)
	if len(parts) == 0 {
		return "nothing counted"
	}
	return strings.Join(parts, ", ")
}
