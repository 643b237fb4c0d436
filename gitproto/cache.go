package gitproto

import (
	"bytes"
	"context"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/sync/singleflight"
)

// DefaultAdvertCacheBytes is the size of an AdvertCache whose MaxBytes is
// zero.
const DefaultAdvertCacheBytes = 64 << 20

// advertGenTimeout bounds one shared advertisement generation, which runs
// detached from the request that started it.
const advertGenTimeout = time.Minute

// AdvertCache keeps ref advertisements (info/refs, and protocol v2
// ls-refs answers) in memory. CI systems and IDEs poll them every few
// seconds, so on a busy forge they are most of the git requests, and each
// one otherwise costs a git process. An entry is keyed by the repository,
// service, protocol and request, and by a fingerprint of the repository's
// refs on disk, so it is invalidated exactly by any change of the refs,
// whoever made it; pushes through the Handler also drop it at once.
// Identical misses in flight share one generation.
//
// An AdvertCache is safe for concurrent use. The zero value is ready to
// use with DefaultAdvertCacheBytes.
type AdvertCache struct {
	// MaxBytes bounds the bytes held. If zero, DefaultAdvertCacheBytes.
	MaxBytes int64

	mu    sync.Mutex // guards lru, bytes and gens
	lru   *simplelru.LRU[advertFullKey, []byte]
	bytes int64
	gens  map[string]uint64 // per repository directory, bumped by Invalidate

	flight singleflight.Group
	now    func() time.Time // the clock; nil means time.Now (tests set it)

	hits, misses, bypassed, evictions atomic.Int64
}

// AdvertCacheStats are the counters of an AdvertCache.
type AdvertCacheStats struct {
	Hits      int64 // answered from memory
	Misses    int64 // generated (shared generations count once per request)
	Bypassed  int64 // refs changed too recently to trust the fingerprint
	Evictions int64
	Entries   int
	Bytes     int64
}

type advertKey struct {
	dir      string
	service  Service
	protocol string
	body     string // v2 ls-refs request
}

type advertFullKey struct {
	advertKey
	fp  uint64
	gen uint64
}

// Stats returns the cache's counters.
func (c *AdvertCache) Stats() AdvertCacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := AdvertCacheStats{
		Hits:      c.hits.Load(),
		Misses:    c.misses.Load(),
		Bypassed:  c.bypassed.Load(),
		Evictions: c.evictions.Load(),
		Bytes:     c.bytes,
	}
	if c.lru != nil {
		s.Entries = c.lru.Len()
	}
	return s
}

// Invalidate drops what the cache knows of the repository in dir.
func (c *AdvertCache) Invalidate(dir string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gens == nil {
		c.gens = make(map[string]uint64)
	}
	c.gens[dir]++
	if c.lru == nil {
		return
	}
	for _, k := range c.lru.Keys() {
		if k.dir == dir {
			c.lru.Remove(k)
		}
	}
}

func (c *AdvertCache) maxBytes() int64 {
	if c.MaxBytes > 0 {
		return c.MaxBytes
	}
	return DefaultAdvertCacheBytes
}

// serve writes prefix and the advertisement for key to w, from the cache
// or from generate.
func (c *AdvertCache) serve(ctx context.Context, key advertKey, w io.Writer, prefix []byte, generate func(context.Context, io.Writer) error) (hit bool, err error) {
	fp, racy := refsFingerprint(key.dir, clock(c.now))
	if racy {
		c.bypassed.Add(1)
		return false, generate(ctx, &prefixWriter{w: w, prefix: prefix})
	}
	c.mu.Lock()
	full := advertFullKey{advertKey: key, fp: fp, gen: c.gens[key.dir]}
	var data []byte
	if c.lru != nil {
		data, hit = c.lru.Get(full)
	}
	c.mu.Unlock()
	if hit {
		c.hits.Add(1)
		return true, writeAll(w, prefix, data)
	}
	c.misses.Add(1)
	ch := c.flight.DoChan(flightKey(full), func() (any, error) {
		gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), advertGenTimeout)
		defer cancel()
		var buf bytes.Buffer
		if err := generate(gctx, &buf); err != nil {
			return nil, err
		}
		data := buf.Bytes()
		c.put(full, data)
		return data, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return false, res.Err
		}
		return res.Shared, writeAll(w, prefix, res.Val.([]byte))
	case <-ctx.Done():
		return false, context.Cause(ctx)
	}
}

func flightKey(k advertFullKey) string {
	var b bytes.Buffer
	b.WriteString(k.dir)
	b.WriteByte(0)
	b.WriteString(string(k.service))
	b.WriteByte(0)
	b.WriteString(k.protocol)
	b.WriteByte(0)
	b.WriteString(k.body)
	var n [16]byte
	for i := range 8 {
		n[i] = byte(k.fp >> (8 * i))
		n[8+i] = byte(k.gen >> (8 * i))
	}
	b.Write(n[:])
	return b.String()
}

func (c *AdvertCache) put(k advertFullKey, data []byte) {
	size := int64(len(data) + len(k.dir) + len(k.body) + 64)
	max := c.maxBytes()
	if size > max/4 {
		return // one entry may not crowd out everything else
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gens[k.dir] != k.gen {
		return // invalidated while generating
	}
	if c.lru == nil {
		c.lru, _ = simplelru.NewLRU[advertFullKey, []byte](math.MaxInt32, func(k advertFullKey, v []byte) {
			c.bytes -= int64(len(v) + len(k.dir) + len(k.body) + 64)
		})
	}
	if c.lru.Contains(k) {
		return
	}
	c.lru.Add(k, data)
	c.bytes += size
	for c.bytes > max {
		if _, _, ok := c.lru.RemoveOldest(); !ok {
			break
		}
		c.evictions.Add(1)
	}
}

func writeAll(w io.Writer, prefix, data []byte) error {
	if len(prefix) == 0 {
		_, err := w.Write(data)
		return err
	}
	buf := make([]byte, 0, len(prefix)+len(data))
	_, err := w.Write(append(append(buf, prefix...), data...))
	return err
}
