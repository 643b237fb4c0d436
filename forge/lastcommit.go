package forge

import (
	"bytes"
	"container/heap"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	lru "github.com/hashicorp/golang-lru/v2/simplelru"
)

// The last commit of every entry of a directory.
//
// git log -1 -- PATH walks history from a commit and, at each commit
// where PATH is the same as in a parent (TREESAME), follows that parent
// alone: until it finds the commit that changed PATH, its walk is a
// single chain. So the answer for an entry at commit C is C itself if C
// changed it (against every parent), else the answer at the first
// parent C's entry is the same as. lastWalk follows the chains of all
// the entries of a directory at once, grouping the entries that stand
// on the same commit, and visits commits children first (by
// topological level from the commit-graph, then by date), so that a
// commit is looked at once for all the entries that reach it. At each
// commit it asks, in this order:
//
//   - the root trees of the commit and its first parent: equal, and
//     nothing changed;
//   - the changed-path Bloom filter of the commit (maintenance writes
//     them): the directory, then each entry, that certainly did not
//     change against the first parent moves on without a tree read;
//   - the trees, read and parsed once per tree hash, for what remains.
//
// The chains also make results reusable: an entry that reaches a commit
// whose answer for the directory is known takes it from there (known),
// so that after a push only the new commits are walked.

// maxWalkTrees bounds the bytes of parsed trees a walk keeps: the trees
// of the commits at the walk's front, which are all it needs again.
const maxWalkTrees = 32 << 20

// lastWalk is one walk; it is not safe for concurrent use.
type lastWalk struct {
	*commitIndex
	dir   pathSteps // the directory
	names []string  // its entries at the start
	index map[string]int
	// keys[v-1][i] is the Bloom key of entry i for filter version v;
	// dirKeys[v-1] those of the directory and each directory above it.
	keys, dirKeys [2][]bloomKey

	pending map[uint32]*pendingSet // entries standing on a commit
	queue   walkQueue              // commits with pending entries
	trees   *lru.LRU[plumbing.Hash, *walkTree]
	treeMem int

	found []plumbing.Hash // per entry; zero while unknown
	left  int             // entries without an answer
	known func(plumbing.Hash) map[string]plumbing.Hash

	// Counters, for tests and benchmarks.
	visited, bloomSkips int
}

type pendingSet struct {
	bits   []uint64
	queued bool
}

// walkTree is a parsed directory tree: the mode and hash of each of the
// walk's entries that it has (mode 0 for the missing).
type walkTree struct {
	modes  []uint32
	hashes []plumbing.Hash
}

func newLastWalk(ci *commitIndex, dir string, names []string) *lastWalk {
	w := &lastWalk{commitIndex: ci, dir: newPathSteps(dir, false), names: names, index: make(map[string]int, len(names)),
		pending: map[uint32]*pendingSet{}, found: make([]plumbing.Hash, len(names)), left: len(names)}
	for i, n := range names {
		w.index[n] = i
	}
	w.trees, _ = lru.NewLRU[plumbing.Hash, *walkTree](1<<30, func(_ plumbing.Hash, t *walkTree) { w.treeMem -= t.size() })
	for v := uint32(1); v <= 2; v++ {
		for _, n := range names {
			p := n
			if dir != "" {
				p = dir + "/" + n
			}
			w.keys[v-1] = append(w.keys[v-1], newBloomKey(p, v))
		}
		for d := dir; d != ""; {
			w.dirKeys[v-1] = append(w.dirKeys[v-1], newBloomKey(d, v))
			i := strings.LastIndexByte(d, '/')
			if i < 0 {
				break
			}
			d = d[:i]
		}
	}
	return w
}

func (t *walkTree) size() int { return len(t.modes)*4 + len(t.hashes)*len(plumbing.Hash{}) + 64 }

// tree returns the parsed directory tree h, for the walk's entries.
func (w *lastWalk) tree(h plumbing.Hash) (*walkTree, error) {
	if t, ok := w.trees.Get(h); ok {
		return t, nil
	}
	t := &walkTree{modes: make([]uint32, len(w.names)), hashes: make([]plumbing.Hash, len(w.names))}
	if !h.IsZero() {
		data, err := w.read(plumbing.TreeObject, h)
		if err != nil {
			return nil, fmt.Errorf("forge: tree %s: %w", h, err)
		}
		w.treeReads++
		hl := len(plumbing.Hash{})
		for len(data) > 0 {
			sp := bytes.IndexByte(data, ' ')
			nul := bytes.IndexByte(data, 0)
			if sp < 0 || nul < sp || nul+1+hl > len(data) {
				return nil, fmt.Errorf("forge: tree %s is malformed", h)
			}
			if i, ok := w.index[string(data[sp+1:nul])]; ok {
				t.modes[i] = parseMode(data[:sp])
				copy(t.hashes[i][:], data[nul+1:])
			}
			data = data[nul+1+hl:]
		}
	}
	w.trees.Add(h, t)
	w.treeMem += t.size()
	for w.treeMem > maxWalkTrees && w.trees.Len() > 1 {
		w.trees.RemoveOldest()
	}
	return t, nil
}

// findEntry returns the mode and hash of name in the raw tree data (mode
// 0 if it is missing).
func findEntry(data []byte, name string) (uint32, plumbing.Hash) {
	hl := len(plumbing.Hash{})
	for len(data) > 0 {
		sp := bytes.IndexByte(data, ' ')
		nul := bytes.IndexByte(data, 0)
		if sp < 0 || nul < sp || nul+1+hl > len(data) {
			break
		}
		if string(data[sp+1:nul]) == name {
			var h plumbing.Hash
			copy(h[:], data[nul+1:])
			return parseMode(data[:sp]), h
		}
		data = data[nul+1+hl:]
	}
	return 0, plumbing.ZeroHash
}

func parseMode(b []byte) uint32 {
	var m uint32
	for _, c := range b {
		m = m<<3 | uint32(c-'0')
	}
	return m
}

// walkQueue orders commit ids by the walk's priority.
type walkQueue struct {
	ids  []uint32
	less func(a, b uint32) bool
}

func (q *walkQueue) Len() int           { return len(q.ids) }
func (q *walkQueue) Less(i, j int) bool { return q.less(q.ids[i], q.ids[j]) }
func (q *walkQueue) Swap(i, j int)      { q.ids[i], q.ids[j] = q.ids[j], q.ids[i] }
func (q *walkQueue) Push(x any)         { q.ids = append(q.ids, x.(uint32)) }
func (q *walkQueue) Pop() any {
	id := q.ids[len(q.ids)-1]
	q.ids = q.ids[:len(q.ids)-1]
	return id
}

// move puts the entries of bits on commit id: they take its known
// answer if there is one, else they wait there.
func (w *lastWalk) move(id uint32, bits []uint64) {
	if w.known != nil {
		if ans := w.known(w.hash(id)); ans != nil {
			eachBit(bits, func(i int) {
				if h, ok := ans[w.names[i]]; ok && w.found[i].IsZero() {
					w.found[i] = h
					w.left--
					bits[i/64] &^= 1 << (i % 64)
				}
			})
		}
	}
	empty := true
	for _, b := range bits {
		if b != 0 {
			empty = false
			break
		}
	}
	if empty {
		return
	}
	p := w.pending[id]
	if p == nil {
		p = &pendingSet{bits: make([]uint64, len(bits))}
		w.pending[id] = p
	}
	for i, b := range bits {
		p.bits[i] |= b
	}
	if !p.queued {
		p.queued = true
		heap.Push(&w.queue, id)
	}
}

func eachBit(bits []uint64, f func(i int)) {
	for wi, b := range bits {
		for b != 0 {
			j := 0
			for b&(1<<j) == 0 {
				j++
			}
			f(wi*64 + j)
			b &^= 1 << j
		}
	}
}

// run walks from start until every entry has its answer, ctx is done or
// deadline passes (zero: none); it reports whether it completed.
func (w *lastWalk) run(ctx context.Context, start plumbing.Hash, deadline time.Time) (bool, error) {
	w.queue.less = func(a, b uint32) bool {
		la, da := w.order(a)
		lb, db := w.order(b)
		if la != lb {
			return la > lb
		}
		return da > db
	}
	sid, err := w.id(start)
	if err != nil {
		return false, err
	}
	all := make([]uint64, (len(w.names)+63)/64)
	for i := range w.names {
		all[i/64] |= 1 << (i % 64)
	}
	w.move(sid, all)
	for w.queue.Len() > 0 && w.left > 0 {
		if w.visited%64 == 0 {
			if ctx.Err() != nil || (!deadline.IsZero() && time.Now().After(deadline)) {
				return false, nil
			}
		}
		id := heap.Pop(&w.queue).(uint32)
		p := w.pending[id]
		delete(w.pending, id)
		w.visited++
		if err := w.visit(id, p.bits); err != nil {
			return false, err
		}
	}
	return w.left == 0, nil
}

// visit moves on, or answers, the entries standing on commit id.
func (w *lastWalk) visit(id uint32, bits []uint64) error {
	ps, err := w.parentsOf(id)
	if err != nil {
		return err
	}
	parents := append([]uint32(nil), ps...)
	if len(parents) == 0 {
		// A root commit: the entries that reached it exist in it (they
		// are TREESAME to the commit they came from), so it made them.
		eachBit(bits, func(i int) { w.answer(i, id) })
		return nil
	}
	p1 := parents[0]
	if w.rootTree(id) == w.rootTree(p1) {
		w.move(p1, bits)
		return nil
	}
	var filter bloomFilter
	hasFilter := false
	if id < w.graphN() {
		filter, hasFilter = w.g.bloom(id)
	}
	if hasFilter {
		for _, k := range w.dirKeys[filter.version-1] {
			if !filter.mayContain(k) {
				w.bloomSkips++
				w.move(p1, bits) // nothing under the directory changed
				return nil
			}
		}
	}
	mine, err := w.dir.hash(w.commitIndex, id)
	if err != nil {
		return err
	}
	d1, err := w.dir.hash(w.commitIndex, p1)
	if err != nil {
		return err
	}
	if mine == d1 {
		w.move(p1, bits)
		return nil
	}
	// Entries the filter rules out follow the first parent; the others
	// are compared in the trees.
	same := make([]uint64, len(bits))
	maybe := make([]uint64, len(bits))
	eachBit(bits, func(i int) {
		if hasFilter && !filter.mayContain(w.keys[filter.version-1][i]) {
			same[i/64] |= 1 << (i % 64)
			w.bloomSkips++
		} else {
			maybe[i/64] |= 1 << (i % 64)
		}
	})
	w.move(p1, same)
	if isZero(maybe) {
		return nil
	}
	t, err := w.tree(mine)
	if err != nil {
		return err
	}
	// For each parent in order, the entries TREESAME to it follow it.
	for _, p := range parents {
		dp := d1
		if p != p1 {
			if dp, err = w.dir.hash(w.commitIndex, p); err != nil {
				return err
			}
		}
		pt, err := w.tree(dp)
		if err != nil {
			return err
		}
		follow := make([]uint64, len(bits))
		eachBit(maybe, func(i int) {
			if t.modes[i] == pt.modes[i] && t.hashes[i] == pt.hashes[i] {
				follow[i/64] |= 1 << (i % 64)
				maybe[i/64] &^= 1 << (i % 64)
			}
		})
		w.move(p, follow)
		if isZero(maybe) {
			return nil
		}
	}
	// Different from every parent: this commit changed them.
	eachBit(maybe, func(i int) { w.answer(i, id) })
	return nil
}

func (w *lastWalk) answer(i int, id uint32) {
	if w.found[i].IsZero() {
		w.found[i] = w.hash(id)
		w.left--
	}
}

func isZero(bits []uint64) bool {
	for _, b := range bits {
		if b != 0 {
			return false
		}
	}
	return true
}
