package gitproto

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// DefaultPackCacheBytes is the size of a PackCache created with maxBytes 0.
const DefaultPackCacheBytes = 1 << 30

// DefaultSendWait is PackCache.SendWait's default.
const DefaultSendWait = time.Second

// PackCache shares pack generations among identical fetches and keeps
// their output on disk, which is what makes a clone storm cheap: when 50
// CI jobs clone the same commit, one git pack-objects runs and the other
// 49 clients stream its output as it is written, then later clones read
// the finished file.
//
// Requests are identical when their repository, Git-Protocol value and
// request body match byte for byte and the repository's refs have not
// changed (the same fingerprint as AdvertCache, plus a generation that
// Handler bumps on every push it serves). Entries are evicted least
// recently used beyond the byte budget. A generation is not tied to the
// request that started it: it goes on while any reader is still
// attached and is cancelled when the last one leaves.
//
// The cache owns its directory and clears it when created; it does not
// survive restarts. When a write fails (a full disk), the requests
// reading that generation fail and later ones start a new generation.
// A PackCache is safe for concurrent use.
type PackCache struct {
	// SendWait is how long a fetch over HTTP waits for its generation
	// to finish so that the response goes out whole, with a
	// Content-Length, copied by the kernel (sendfile) rather than
	// streamed through the process as the file grows: what makes a
	// storm of identical clones cost little more than one. If zero,
	// DefaultSendWait is used; if negative, responses are always
	// streamed. (A generation that takes longer is streamed as before,
	// so a client never waits silently for longer than this.)
	SendWait time.Duration

	dir      string
	maxBytes int64

	mu      sync.Mutex // guards entries, lru, bytes, gens and seq
	entries map[string]*packEntry
	lru     *simplelru.LRU[string, *packEntry] // finished entries only
	bytes   int64
	gens    map[string]uint64
	seq     uint64
	now     func() time.Time // the clock; nil means time.Now (tests set it)

	hits, shared, misses, bypassed, evictions, failures, whole atomic.Int64
}

// PackCacheStats are the counters of a PackCache.
type PackCacheStats struct {
	Hits      int64 // served from a finished entry
	Shared    int64 // joined a generation in flight
	Misses    int64 // started a generation
	Bypassed  int64 // refs changed too recently to trust the fingerprint
	Evictions int64
	Failures  int64 // generations that failed
	Whole     int64 // responses sent whole from a finished file (sendfile where the connection allows)
	Entries   int
	Bytes     int64
}

type packEntry struct {
	key  string
	repo string
	path string

	mu      sync.Mutex // guards the fields below
	size    int64
	done    bool
	err     error
	notify  chan struct{} // closed and replaced on every change
	readers int
	cancel  context.CancelFunc
}

// NewPackCache returns a cache that keeps at most maxBytes (0 means
// DefaultPackCacheBytes) of pack responses in dir, which it creates if
// needed and clears of earlier contents.
func NewPackCache(dir string, maxBytes int64) (*PackCache, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultPackCacheBytes
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("gitproto: pack cache: %w", err)
	}
	old, err := filepath.Glob(filepath.Join(dir, "*.pack-response"))
	if err != nil {
		return nil, fmt.Errorf("gitproto: pack cache: %w", err)
	}
	for _, f := range old {
		os.Remove(f)
	}
	c := &PackCache{dir: dir, maxBytes: maxBytes, entries: make(map[string]*packEntry), gens: make(map[string]uint64)}
	c.lru, _ = simplelru.NewLRU[string, *packEntry](math.MaxInt32, nil)
	return c, nil
}

// Stats returns the cache's counters.
func (c *PackCache) Stats() PackCacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return PackCacheStats{
		Hits:      c.hits.Load(),
		Shared:    c.shared.Load(),
		Misses:    c.misses.Load(),
		Bypassed:  c.bypassed.Load(),
		Evictions: c.evictions.Load(),
		Failures:  c.failures.Load(),
		Whole:     c.whole.Load(),
		Entries:   c.lru.Len(),
		Bytes:     c.bytes,
	}
}

// Invalidate drops every cached pack of the repository in dir. Handler
// calls it after each push; call it after changing a repository by other
// means if the change could alter a pack without changing a ref.
func (c *PackCache) Invalidate(dir string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gens[dir]++
	for _, k := range c.lru.Keys() {
		if e, ok := c.lru.Peek(k); ok && e.repo == dir {
			c.removeLocked(e)
		}
	}
	for k, e := range c.entries {
		if e.repo == dir {
			delete(c.entries, k) // in flight: finishes for its readers, never stored
		}
	}
}

// packKey identifies a request independently of the repository state.
func packKey(dir, protocol string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(dir))
	h.Write([]byte{0})
	h.Write([]byte(protocol))
	h.Write([]byte{0})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// serve writes the response for key to w, joining or starting a
// generation.
func (c *PackCache) serve(ctx context.Context, key, repo string, w io.Writer, generate func(context.Context, io.Writer) error) (hit bool, err error) {
	fp, racy := refsFingerprint(repo, clock(c.now))
	if racy {
		c.bypassed.Add(1)
		return false, generate(ctx, w)
	}
	c.mu.Lock()
	full := key + "-" + strconv.FormatUint(fp, 16) + "-" + strconv.FormatUint(c.gens[repo], 16)
	e := c.entries[full]
	if e != nil {
		e.mu.Lock()
		if e.err != nil || (!e.done && e.readers == 0) {
			e.mu.Unlock()
			e = nil // failed or being cancelled: start afresh
		} else {
			e.readers++
			if e.done {
				c.hits.Add(1)
				c.lru.Get(full) // mark as recently used
			} else {
				c.shared.Add(1)
			}
			e.mu.Unlock()
			hit = true
		}
	}
	var rf *os.File
	if e != nil {
		// Open the reading handle before letting go of the lock, so that
		// an eviction cannot remove the file in between.
		var oerr error
		if rf, oerr = os.Open(e.path); oerr != nil {
			c.mu.Unlock()
			c.detach(e)
			return false, fmt.Errorf("gitproto: pack cache: %w", oerr)
		}
	}
	if e == nil {
		c.seq++
		e = &packEntry{
			key:     full,
			repo:    repo,
			path:    filepath.Join(c.dir, full+"-"+strconv.FormatUint(c.seq, 10)+".pack-response"),
			notify:  make(chan struct{}),
			readers: 1,
		}
		f, ferr := os.OpenFile(e.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if ferr != nil {
			c.mu.Unlock()
			// No room on disk for the cache must not fail the fetch.
			c.failures.Add(1)
			return false, generate(ctx, w)
		}
		if rf, ferr = os.Open(e.path); ferr != nil {
			f.Close()
			os.Remove(e.path)
			c.mu.Unlock()
			c.failures.Add(1)
			return false, generate(ctx, w)
		}
		c.entries[full] = e
		c.misses.Add(1)
		gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		e.cancel = cancel
		go c.generate(gctx, e, f, generate)
	}
	c.mu.Unlock()
	defer c.detach(e)
	defer rf.Close()
	if fs, ok := w.(fileSender); ok && c.SendWait >= 0 {
		if size, ok := c.waitDone(ctx, e, knob(c.SendWait, DefaultSendWait)); ok {
			c.whole.Add(1)
			return hit, fs.sendFile(rf, size)
		}
	}
	return hit, c.stream(ctx, e, rf, w)
}

// fileSender is a response that can send a finished file as its whole
// body (responseWriter, for HTTP).
type fileSender interface {
	sendFile(f *os.File, size int64) error
}

// waitDone waits up to d for e's generation to finish well, and returns
// its size.
func (c *PackCache) waitDone(ctx context.Context, e *packEntry, d time.Duration) (int64, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		e.mu.Lock()
		size, done, err, notify := e.size, e.done, e.err, e.notify
		e.mu.Unlock()
		if done {
			return size, err == nil
		}
		select {
		case <-notify:
		case <-timer.C:
			return 0, false
		case <-ctx.Done():
			return 0, false
		}
	}
}

// generate runs one generation into f and records its outcome.
func (c *PackCache) generate(ctx context.Context, e *packEntry, f *os.File, generate func(context.Context, io.Writer) error) {
	defer e.cancel()
	err := generate(ctx, &entryWriter{e: e, f: f})
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("gitproto: pack cache: %w", cerr)
	}
	e.mu.Lock()
	e.done, e.err = true, err
	size := e.size
	close(e.notify)
	e.notify = make(chan struct{})
	e.mu.Unlock()

	c.mu.Lock()
	defer c.mu.Unlock()
	stored := c.entries[e.key] == e
	if stored {
		delete(c.entries, e.key)
	}
	if err != nil || !stored || size > c.maxBytes/2 {
		if err != nil {
			c.failures.Add(1)
		}
		os.Remove(e.path) // open readers keep their handle
		return
	}
	c.lru.Add(e.key, e)
	c.entries[e.key] = e
	c.bytes += size
	c.evictLocked()
}

// evictLocked removes the least recently used finished entries without
// readers until the cache fits its budget. c.mu must be held.
func (c *PackCache) evictLocked() {
	for _, k := range c.lru.Keys() {
		if c.bytes <= c.maxBytes {
			return
		}
		e, _ := c.lru.Peek(k)
		c.removeLocked(e)
		c.evictions.Add(1)
	}
}

func (c *PackCache) removeLocked(e *packEntry) {
	if c.lru.Remove(e.key) {
		c.bytes -= e.size
	}
	if c.entries[e.key] == e {
		delete(c.entries, e.key)
	}
	os.Remove(e.path) // readers still streaming keep their open handle
}

// detach ends one reader; the last reader of an unfinished generation
// cancels it.
func (c *PackCache) detach(e *packEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.readers--
	if e.readers == 0 && !e.done {
		e.cancel()
		if c.entries[e.key] == e {
			delete(c.entries, e.key)
		}
	}
}

// stream copies the entry's bytes to w as they are written.
func (c *PackCache) stream(ctx context.Context, e *packEntry, f *os.File, w io.Writer) error {
	buf := make([]byte, 64<<10)
	var off int64
	for {
		e.mu.Lock()
		size, done, err, notify := e.size, e.done, e.err, e.notify
		e.mu.Unlock()
		if off < size {
			n, rerr := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return werr
				}
				off += int64(n)
			}
			if rerr != nil && !errors.Is(rerr, io.EOF) {
				return fmt.Errorf("gitproto: pack cache: %w", rerr)
			}
			continue
		}
		if done {
			return err
		}
		select {
		case <-notify:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// entryWriter appends to the entry's file and wakes its readers.
type entryWriter struct {
	e *packEntry
	f *os.File
}

func (w *entryWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if n > 0 {
		w.e.mu.Lock()
		w.e.size += int64(n)
		close(w.e.notify)
		w.e.notify = make(chan struct{})
		w.e.mu.Unlock()
	}
	if err != nil {
		return n, fmt.Errorf("gitproto: pack cache: %w", err)
	}
	return n, nil
}
