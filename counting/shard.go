package counting

import "sync"

// Counts wait for the next flush in shards, one per P in practice: Count
// takes a shard from a sync.Pool (which keeps one per P), adds to its
// map under its own lock, and puts it back. A shard is only ever held by
// one goroutine, so its lock is uncontended except against a flush, and
// its cache lines stay with the core that counts in it. Counting the
// same ids from every core into one map of atomics, as before, moved
// each id's line between the cores at every count: two cores counted no
// faster than one.

// shard holds counts not yet flushed.
type shard struct {
	mu      sync.Mutex       // guards n and retired
	n       map[string]int64 // id → count since the last flush
	retired bool             // dropped by a flush: counts go elsewhere
	// Owned by the flush (under Counter.flushMu).
	spare map[string]int64 // the cleared map of the last flush, reused
	idle  int              // flushes in a row that found n empty
	_     [64]byte         // keeps the next shard's lock off this line
}

// shards is the set of shards of a Counter.
type shards struct {
	pool sync.Pool // *shard, kept per P
	mu   sync.Mutex
	all  []*shard // guarded by mu; every live shard, pooled or held
}

// add adds n to id in some shard.
func (ss *shards) add(id string, n int64) {
	for {
		s, _ := ss.pool.Get().(*shard)
		if s == nil {
			s = ss.grow()
		}
		s.mu.Lock()
		if s.retired {
			// Retired while it sat in the pool: let it go.
			s.mu.Unlock()
			continue
		}
		s.n[id] += n
		s.mu.Unlock()
		ss.pool.Put(s)
		return
	}
}

func (ss *shards) grow() *shard {
	s := &shard{n: make(map[string]int64)}
	ss.mu.Lock()
	ss.all = append(ss.all, s)
	ss.mu.Unlock()
	return s
}

func (ss *shards) list() []*shard {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return append([]*shard(nil), ss.all...)
}

// retireAfter is the number of flushes in a row that must find a shard
// empty before it is dropped: a P that stops counting (or a shard the
// pool lost to a GC) does not keep its maps forever.
const retireAfter = 3

// drain calls fn with every id's count since the last drain and zeroes
// them. The caller holds Counter.flushMu.
func (ss *shards) drain(fn func(id string, n int64)) {
	for _, s := range ss.list() {
		s.mu.Lock()
		if len(s.n) == 0 {
			// Nothing to take; s.n stays the shard's, and is not
			// touched after the unlock.
			if s.idle++; s.idle >= retireAfter {
				s.retired = true
			}
			retired := s.retired
			s.mu.Unlock()
			if retired {
				ss.remove(s)
			}
			continue
		}
		s.idle = 0
		if s.spare == nil {
			s.spare = make(map[string]int64, len(s.n))
		}
		taken := s.n
		s.n, s.spare = s.spare, nil
		s.mu.Unlock()
		for id, n := range taken {
			fn(id, n)
		}
		clear(taken) // kept for the next flush: no allocation once warm
		s.spare = taken
	}
}

func (ss *shards) remove(s *shard) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for i, t := range ss.all {
		if t == s {
			ss.all = append(ss.all[:i], ss.all[i+1:]...)
			return
		}
	}
}

// get returns id's count not yet drained. Total calls it on every page
// that shows a count: it walks the shards under ss.mu rather than
// copying their list (ss.mu before a shard's lock, never the reverse).
func (ss *shards) get(id string) int64 {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	var total int64
	for _, s := range ss.all {
		s.mu.Lock()
		total += s.n[id]
		s.mu.Unlock()
	}
	return total
}

// each calls fn with every id's count not yet drained, shard by shard
// (an id may come more than once). fn must not count.
func (ss *shards) each(fn func(id string, n int64)) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, s := range ss.all {
		s.mu.Lock()
		for id, n := range s.n {
			fn(id, n)
		}
		s.mu.Unlock()
	}
}
