package forge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/forgekit/forgekit/slowlog"
	"github.com/go-git/go-git/v5/plumbing"
	lru "github.com/hashicorp/golang-lru/v2"
)

// Defaults of LastCommitCache.
const (
	DefaultLastCommitWorkers = 2
	DefaultLastCommitQueue   = 64
	DefaultLastCommitTimeout = 10 * time.Minute
	DefaultLastCommitMemory  = 32 << 20
)

// LastCommitCache answers "the last commit of every entry of this
// directory at this commit" for a process: from memory, from files under
// Dir that outlive the process, or from a walk (Browser.LastCommits) in
// a bounded pool. A walk runs once per (repository, commit, directory)
// however many ask, keyed by commit id, never by the ref a URL named; it
// runs detached from the requests that wait for it (with the pprof
// labels of the one that started it), up to Timeout, so that a slow walk
// completes once instead of starting over at every view. A walk reuses
// the results known for older commits of the same directory: an entry
// whose chain of history reaches such a commit takes its answer there, so
// after a push only the new commits are walked.
//
// Results depend only on their key, so they are kept forever (memory is
// bounded; files are pruned by repository when it is deleted, or by the
// operator). Several processes may share Dir: files are written whole
// and renamed into place. A LastCommitCache is safe for concurrent use;
// set its fields before first use.
type LastCommitCache struct {
	// Dir keeps results across restarts. If empty, they are kept in
	// memory only.
	Dir string

	// Workers is how many walks run at once. If zero,
	// DefaultLastCommitWorkers.
	Workers int

	// Queue is how many walks may wait for a worker; Get returns
	// ErrLastCommitsBusy past it. If zero, DefaultLastCommitQueue.
	Queue int

	// Timeout bounds one walk. If zero, DefaultLastCommitTimeout.
	Timeout time.Duration

	// Memory bounds the bytes of results kept in memory. If zero,
	// DefaultLastCommitMemory.
	Memory int64

	// Logger receives a line per walk, and failed walks. If nil,
	// nothing is logged.
	Logger *slog.Logger

	// RunDetached, if set, runs each walk (which outlives the request
	// that started it), for example with a slowlog Watchdog's Do, so
	// that a slow walk is watched as work of its own that names the
	// request that started it. It must call f, with a context derived
	// from ctx, and return when f does. If nil, walks just run.
	RunDetached func(ctx context.Context, name string, f func(ctx context.Context))

	once    sync.Once
	slots   chan struct{}
	mem     *lru.Cache[string, *lastResult]
	memUsed atomic.Int64

	mu      sync.Mutex // guards flights, queued and known
	flights map[string]*lastFlight
	queued  int
	known   map[string]map[plumbing.Hash]bool // repo|dir → commits with results

	walks, hits, diskHits, reused, failures atomic.Int64
}

// LastCommitStats are the counters of a LastCommitCache.
type LastCommitStats struct {
	Walks    int64 // walks run
	Hits     int64 // answers from memory
	DiskHits int64 // answers from files
	Reused   int64 // walks that took answers from an older commit's result
	Failures int64 // walks that failed or timed out
	Running  int   // walks in flight (running or queued)
	Memory   int64 // bytes of results in memory
}

// Stats returns the cache's counters.
func (c *LastCommitCache) Stats() LastCommitStats {
	c.init()
	c.mu.Lock()
	running := len(c.flights)
	c.mu.Unlock()
	return LastCommitStats{Walks: c.walks.Load(), Hits: c.hits.Load(), DiskHits: c.diskHits.Load(),
		Reused: c.reused.Load(), Failures: c.failures.Load(), Running: running, Memory: c.memUsed.Load()}
}

type lastResult struct {
	Entries map[string]*CommitInfo `json:"entries"`
	size    int64
}

type lastFlight struct {
	done chan struct{}
	res  *lastResult
	err  error
}

func (c *LastCommitCache) init() {
	c.once.Do(func() {
		w := c.Workers
		if w <= 0 {
			w = DefaultLastCommitWorkers
		}
		c.slots = make(chan struct{}, w)
		c.mem, _ = lru.NewWithEvict[string, *lastResult](1<<30, func(_ string, r *lastResult) { c.memUsed.Add(-r.size) })
		c.flights = map[string]*lastFlight{}
		c.known = map[string]map[plumbing.Hash]bool{}
	})
}

func (c *LastCommitCache) limit() int64 {
	if c.Memory > 0 {
		return c.Memory
	}
	return DefaultLastCommitMemory
}

// keys of a result: the repository (its directory), the directory in
// it, the commit.
func repoKey(b *Browser) string {
	sum := sha256.Sum256([]byte(b.dir))
	return hex.EncodeToString(sum[:10])
}

func dirKey(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return hex.EncodeToString(sum[:10])
}

func (c *LastCommitCache) key(b *Browser, commit, dir string) string {
	return repoKey(b) + "/" + dirKey(dir) + "/" + commit
}

func (c *LastCommitCache) file(key string) string {
	return filepath.Join(c.Dir, filepath.FromSlash(key)+".json")
}

// Lookup returns the last commits of the entries of dir at commit if
// they are known, without walking.
func (c *LastCommitCache) Lookup(b *Browser, commit, dir string) (map[string]*CommitInfo, bool) {
	c.init()
	dir = strings.Trim(dir, "/")
	r := c.load(c.key(b, commit, dir))
	if r == nil {
		return nil, false
	}
	return r.Entries, true
}

// Pending reports whether a walk for (b, commit, dir) is queued or
// running: a page should not wait for it again.
func (c *LastCommitCache) Pending(b *Browser, commit, dir string) bool {
	c.init()
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.flights[c.key(b, commit, strings.Trim(dir, "/"))]
	return ok
}

// Get returns the last commits of the entries of dir at commit: known,
// or from a walk that it starts or joins. It waits until the walk ends
// or ctx is done; the walk goes on without it. The commit must be a full
// commit id the caller resolved (an unknown one fails in the walk, but
// costs a queue slot until then).
func (c *LastCommitCache) Get(ctx context.Context, b *Browser, commit, dir string) (map[string]*CommitInfo, error) {
	c.init()
	dir = strings.Trim(dir, "/")
	key := c.key(b, commit, dir)
	if r := c.load(key); r != nil {
		return r.Entries, nil
	}
	c.mu.Lock()
	f, ok := c.flights[key]
	if !ok {
		q := c.Queue
		if q <= 0 {
			q = DefaultLastCommitQueue
		}
		if c.queued >= q+cap(c.slots) {
			c.mu.Unlock()
			return nil, ErrLastCommitsBusy
		}
		f = &lastFlight{done: make(chan struct{})}
		c.flights[key] = f
		c.queued++
		go c.detached(labelled(ctx), key, f, b, commit, dir)
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		if f.err != nil {
			return nil, f.err
		}
		return f.res.Entries, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// labelled is a context free of ctx's deadline and cancellation that
// carries its pprof labels (request id, route) and its slowlog.Work, so
// that profiles, slow reports and work accounting tie the walk to the
// request that started it.
func labelled(ctx context.Context) context.Context {
	var kv []string
	pprof.ForLabels(ctx, func(k, v string) bool {
		kv = append(kv, k, v)
		return true
	})
	bg := context.Background()
	if len(kv) > 0 {
		bg = pprof.WithLabels(bg, pprof.Labels(kv...))
	}
	if w := slowlog.WorkFrom(ctx); w != nil {
		bg = slowlog.WithWork(bg, w) // the walk's objects count as the request's work
	}
	return bg
}

// detached runs a walk through RunDetached, or as it is.
func (c *LastCommitCache) detached(ctx context.Context, key string, f *lastFlight, b *Browser, commit, dir string) {
	pprof.SetGoroutineLabels(ctx)
	if c.RunDetached == nil {
		c.walk(ctx, key, f, b, commit, dir)
		return
	}
	ran := false
	c.RunDetached(ctx, "last commits of "+dir+"/ at "+commit[:min(12, len(commit))], func(ctx context.Context) {
		ran = true
		c.walk(ctx, key, f, b, commit, dir)
	})
	if !ran {
		c.walk(ctx, key, f, b, commit, dir) // a broken hook must not lose the walk
	}
}

func (c *LastCommitCache) walk(ctx context.Context, key string, f *lastFlight, b *Browser, commit, dir string) {
	defer func() {
		c.mu.Lock()
		delete(c.flights, key)
		c.queued--
		c.mu.Unlock()
		close(f.done)
	}()
	c.slots <- struct{}{}
	defer func() { <-c.slots }()
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultLastCommitTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c.walks.Add(1)
	start := time.Now()
	known := c.knownCommits(key)
	byHash := map[string]*CommitInfo{} // infos of the known results used
	found, complete, stats, err := b.lastCommits(ctx, commit, dir, time.Time{}, func(h plumbing.Hash) map[string]plumbing.Hash {
		if !known[h] {
			return nil
		}
		r := c.load(c.keyAt(key, h))
		if r == nil {
			return nil
		}
		out := make(map[string]plumbing.Hash, len(r.Entries))
		for n, ci := range r.Entries {
			out[n] = plumbing.NewHash(ci.Hash)
			byHash[ci.Hash] = ci
		}
		return out
	})
	if err == nil && !complete {
		err = fmt.Errorf("forge: last commits of %q at %s: %w", dir, commit, context.Cause(ctx))
	}
	var res *lastResult
	if err == nil {
		res, err = c.infos(ctx, b, byHash, found)
	}
	if err != nil {
		c.failures.Add(1)
		f.err = err
		if c.Logger != nil {
			c.Logger.WarnContext(ctx, "forge: last-commit walk failed", "dir", b.dir, "path", dir, "commit", commit, "err", err)
		}
		return
	}
	if len(byHash) > 0 {
		c.reused.Add(1)
	}
	if c.Logger != nil {
		c.Logger.InfoContext(ctx, "forge: last commits walked", "dir", b.dir, "path", dir, "commit", commit,
			"took_ms", float64(time.Since(start).Microseconds())/1e3, "commits", stats.Visited, "tree_reads", stats.TreeReads, "reused", len(byHash) > 0)
	}
	c.store(key, res)
	f.res = res
}

// keyAt is key for another commit of the same repository and directory.
func (c *LastCommitCache) keyAt(key string, h plumbing.Hash) string {
	return key[:strings.LastIndexByte(key, '/')+1] + h.String()
}

// infos turns a walk's answers into commit infos, reusing those of the
// known results they came from (byHash).
func (c *LastCommitCache) infos(ctx context.Context, b *Browser, byHash map[string]*CommitInfo, found map[string]plumbing.Hash) (*lastResult, error) {
	missing := map[string]plumbing.Hash{}
	res := &lastResult{Entries: make(map[string]*CommitInfo, len(found))}
	for n, h := range found {
		if ci, ok := byHash[h.String()]; ok {
			res.Entries[n] = ci
		} else {
			missing[n] = h
		}
	}
	decoded, err := b.commitInfos(ctx, missing)
	if err != nil {
		return nil, err
	}
	for n, ci := range decoded {
		res.Entries[n] = ci
	}
	return res, nil
}

// knownCommits lists the commits with results for key's repository and
// directory: in memory and in Dir.
func (c *LastCommitCache) knownCommits(key string) map[plumbing.Hash]bool {
	group := key[:strings.LastIndexByte(key, '/')]
	c.mu.Lock()
	set, ok := c.known[group]
	if !ok {
		set = map[plumbing.Hash]bool{}
		if c.Dir != "" {
			ents, _ := os.ReadDir(filepath.Join(c.Dir, filepath.FromSlash(group)))
			for _, e := range ents {
				if h, ok := strings.CutSuffix(e.Name(), ".json"); ok && len(h) == 40 {
					set[plumbing.NewHash(h)] = true
				}
			}
		}
		if len(c.known) >= 4096 {
			clear(c.known) // bounded; rebuilt from Dir as needed
		}
		c.known[group] = set
	}
	out := make(map[plumbing.Hash]bool, len(set))
	for h := range set {
		out[h] = true
	}
	c.mu.Unlock()
	return out
}

// load returns the result of key from memory, else from its file.
func (c *LastCommitCache) load(key string) *lastResult {
	if r, ok := c.mem.Get(key); ok {
		c.hits.Add(1)
		return r
	}
	if c.Dir == "" {
		return nil
	}
	data, err := os.ReadFile(c.file(key))
	if err != nil {
		return nil
	}
	r := &lastResult{}
	if err := json.Unmarshal(data, r); err != nil || r.Entries == nil {
		return nil // a damaged file is walked again, and rewritten
	}
	c.diskHits.Add(1)
	r.size = int64(len(data))
	c.remember(key, r)
	return r
}

func (c *LastCommitCache) remember(key string, r *lastResult) {
	if r.size > c.limit() {
		return
	}
	if old, ok := c.mem.Peek(key); ok {
		c.memUsed.Add(-old.size)
	}
	c.mem.Add(key, r)
	c.memUsed.Add(r.size)
	for c.memUsed.Load() > c.limit() {
		if _, _, ok := c.mem.RemoveOldest(); !ok {
			break
		}
	}
}

// store keeps a new result in memory and in its file.
func (c *LastCommitCache) store(key string, r *lastResult) {
	data, err := json.Marshal(r)
	if err != nil {
		return
	}
	r.size = int64(len(data))
	c.remember(key, r)
	group, commit := key[:strings.LastIndexByte(key, '/')], key[strings.LastIndexByte(key, '/')+1:]
	c.mu.Lock()
	if set, ok := c.known[group]; ok {
		set[plumbing.NewHash(commit)] = true
	}
	c.mu.Unlock()
	if c.Dir == "" {
		return
	}
	path := c.file(key)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if werr != nil || cerr != nil || os.Rename(tmp.Name(), path) != nil {
		os.Remove(tmp.Name()) // a full disk loses the file, not the answer
	}
}
