package forge

import (
	"container/heap"
	"context"
	"fmt"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
)

// commitIndex gives history walks the commits they visit by small ids:
// positions in the commit-graph when the repository has one, else (and
// for commits newer than the graph) commits decoded from their objects.
// It is not safe for concurrent use.
type commitIndex struct {
	objs      *objectReader
	g         *commitGraph             // nil if the repository has none
	nodes     []walkNode               // commits outside the graph, by id - g.n
	nodeIDs   map[plumbing.Hash]uint32 // their ids
	parents   []uint32                 // parentsOf's buffer
	treeReads int
}

// walkNode is a commit outside the commit-graph, decoded from its
// object.
type walkNode struct {
	hash, tree plumbing.Hash
	parentIDs  []plumbing.Hash // until parentsOf resolves them
	parents    []uint32
	resolved   bool
	date       int64
}

func newCommitIndex(objs *objectReader, g *commitGraph) *commitIndex {
	return &commitIndex{objs: objs, g: g, nodeIDs: map[plumbing.Hash]uint32{}}
}

// graphN is the number of commits in the graph (ids below it are graph
// positions).
func (w *commitIndex) graphN() uint32 {
	if w.g == nil {
		return 0
	}
	return w.g.n
}

// id returns the id of commit h, decoding it if the graph does not have
// it.
func (w *commitIndex) id(h plumbing.Hash) (uint32, error) {
	if w.g != nil {
		if pos, ok := w.g.lookup(h); ok {
			return pos, nil
		}
	}
	if id, ok := w.nodeIDs[h]; ok {
		return id, nil
	}
	typ, data, err := w.objs.read(h)
	if err != nil || typ != plumbing.CommitObject {
		return 0, fmt.Errorf("%w: commit %s", ErrNotFound, h)
	}
	// Parents are looked up when the walk reaches the commit, not now:
	// without a commit-graph, that would decode the whole history.
	c := parseCommit(h, data)
	n := walkNode{hash: h, tree: c.Tree, date: c.When.Unix(), parentIDs: c.Parents}
	id := w.graphN() + uint32(len(w.nodes))
	w.nodes = append(w.nodes, n)
	w.nodeIDs[h] = id
	return id, nil
}

// read returns the content of an object of type t, which the caller
// must not change.
func (w *commitIndex) read(t plumbing.ObjectType, h plumbing.Hash) ([]byte, error) {
	typ, data, err := w.objs.read(h)
	if err != nil {
		return nil, err
	}
	if typ != t {
		return nil, fmt.Errorf("forge: %s is a %s, not a %s", h, typ, t)
	}
	return data, nil
}

func (w *commitIndex) hash(id uint32) plumbing.Hash {
	if id < w.graphN() {
		return w.g.hash(id)
	}
	return w.nodes[id-w.graphN()].hash
}

func (w *commitIndex) rootTree(id uint32) plumbing.Hash {
	if id < w.graphN() {
		return w.g.tree(id)
	}
	return w.nodes[id-w.graphN()].tree
}

// parentsOf returns the parents of id; the slice is valid until the next
// call.
func (w *commitIndex) parentsOf(id uint32) ([]uint32, error) {
	if id < w.graphN() {
		w.parents = w.g.parents(id, w.parents[:0])
		return w.parents, nil
	}
	n := &w.nodes[id-w.graphN()]
	if !n.resolved {
		var ids []uint32
		for _, p := range n.parentIDs {
			pid, err := w.id(p)
			if err != nil {
				return nil, err
			}
			ids = append(ids, pid)
		}
		n = &w.nodes[id-w.graphN()] // id may have grown the slice
		n.parents, n.parentIDs, n.resolved = ids, nil, true
	}
	return n.parents, nil
}

// order is a commit's priority in a walk that visits children before
// parents: commits outside the graph (the newest) first, then by
// topological level, then by date.
func (w *commitIndex) order(id uint32) (uint32, int64) {
	if id < w.graphN() {
		date, level := w.g.dateAndLevel(id)
		return level, date
	}
	return ^uint32(0), w.nodes[id-w.graphN()].date
}

// date is a commit's committer time.
func (w *commitIndex) date(id uint32) int64 {
	if id < w.graphN() {
		d, _ := w.g.dateAndLevel(id)
		return d
	}
	return w.nodes[id-w.graphN()].date
}

// bloom is the commit's changed-path filter, if it has one.
func (w *commitIndex) bloom(id uint32) (bloomFilter, bool) {
	if id < w.graphN() {
		return w.g.bloom(id)
	}
	return bloomFilter{}, false
}

// pathSteps finds what a path names in commits' trees, reading each tree
// along the path once: (tree, depth) → the next tree.
type pathSteps struct {
	comps   []string
	anyLast bool // the last component may be a file; else only a directory
	steps   map[stepKey]pathEntry
}

type stepKey struct {
	tree  plumbing.Hash
	depth int
}

type pathEntry struct {
	hash plumbing.Hash
	mode uint32
}

func newPathSteps(p string, anyLast bool) pathSteps {
	ps := pathSteps{anyLast: anyLast, steps: map[stepKey]pathEntry{}}
	if p = strings.Trim(p, "/"); p != "" {
		ps.comps = strings.Split(p, "/")
	}
	return ps
}

// hash is the id of what the path names in commit id (zero if nothing).
func (ps *pathSteps) hash(w *commitIndex, id uint32) (plumbing.Hash, error) {
	e, err := ps.entry(w, id)
	return e.hash, err
}

// entry is the id and mode of what the path names in commit id.
func (ps *pathSteps) entry(w *commitIndex, id uint32) (pathEntry, error) {
	e := pathEntry{hash: w.rootTree(id), mode: 0o040000}
	for depth, name := range ps.comps {
		k := stepKey{e.hash, depth}
		next, ok := ps.steps[k]
		if !ok {
			data, err := w.read(plumbing.TreeObject, e.hash)
			if err != nil {
				return pathEntry{}, fmt.Errorf("forge: tree %s: %w", e.hash, err)
			}
			w.treeReads++
			mode, h := findEntry(data, name)
			last := depth == len(ps.comps)-1
			if mode == 0o040000 || (mode != 0 && last && ps.anyLast) {
				next = pathEntry{hash: h, mode: mode}
			}
			if len(ps.steps) > 1<<20 {
				clear(ps.steps) // bounded; walks move on, so old steps are rarely needed again
			}
			ps.steps[k] = next
		}
		if e = next; e.hash.IsZero() {
			break
		}
	}
	return e, nil
}

// historyQueue orders commits newest first by committer date, and in
// the order they were queued among equal dates, as git log does.
type historyQueue struct {
	items []historyItem
	seq   int
}

type historyItem struct {
	id   uint32
	date int64
	seq  int
}

func (q *historyQueue) Len() int { return len(q.items) }
func (q *historyQueue) Less(i, j int) bool {
	a, b := q.items[i], q.items[j]
	if a.date != b.date {
		return a.date > b.date
	}
	return a.seq < b.seq
}
func (q *historyQueue) Swap(i, j int) { q.items[i], q.items[j] = q.items[j], q.items[i] }
func (q *historyQueue) Push(x any)    { q.items = append(q.items, x.(historyItem)) }
func (q *historyQueue) Pop() any {
	it := q.items[len(q.items)-1]
	q.items = q.items[:len(q.items)-1]
	return it
}

func (q *historyQueue) add(id uint32, date int64) {
	q.seq++
	heap.Push(q, historyItem{id: id, date: date, seq: q.seq})
}

// history lists the commits reachable from start that git log -- p
// shows (all of them for p ""), newest first, after skipping skip, at
// most limit (all if limit <= 0): a date-ordered walk with git's default
// history simplification. At a commit where p is the same as in a
// parent, only the first such parent is followed and the commit is not
// shown; the changed-path Bloom filters rule out most such commits
// without reading a tree.
func (w *commitIndex) history(ctx context.Context, start plumbing.Hash, p string, skip, limit int) ([]uint32, error) {
	sid, err := w.id(start)
	if err != nil {
		return nil, err
	}
	p = strings.Trim(p, "/")
	ps := newPathSteps(p, true)
	var keys [2][]bloomKey
	for v := uint32(1); v <= 2; v++ {
		for d := p; d != ""; {
			keys[v-1] = append(keys[v-1], newBloomKey(d, v))
			i := strings.LastIndexByte(d, '/')
			if i < 0 {
				break
			}
			d = d[:i]
		}
	}
	seen := map[uint32]bool{sid: true}
	q := &historyQueue{}
	q.add(sid, w.date(sid))
	var out []uint32
	n := 0
	for q.Len() > 0 && (limit <= 0 || len(out) < limit) {
		if n%64 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		id := heap.Pop(q).(historyItem).id
		pp, err := w.parentsOf(id)
		if err != nil {
			return nil, err
		}
		parents := append([]uint32(nil), pp...)
		show, follow := true, parents
		if p != "" {
			show, follow, err = w.simplify(ps, keys, id, parents)
			if err != nil {
				return nil, err
			}
		}
		for _, pid := range follow {
			if !seen[pid] {
				seen[pid] = true
				q.add(pid, w.date(pid))
			}
		}
		if !show {
			continue
		}
		if n++; n <= skip {
			continue
		}
		out = append(out, id)
	}
	return out, nil
}

// simplify decides, as git's history simplification does for one path,
// whether commit id is shown and which parents the walk follows.
func (w *commitIndex) simplify(ps pathSteps, keys [2][]bloomKey, id uint32, parents []uint32) (show bool, follow []uint32, err error) {
	if len(parents) == 0 {
		e, err := ps.entry(w, id)
		return !e.hash.IsZero(), nil, err
	}
	if f, ok := w.bloom(id); ok {
		changed := true
		for _, k := range keys[f.version-1] {
			if !f.mayContain(k) {
				changed = false
				break
			}
		}
		if !changed {
			return false, parents[:1], nil // the same as in the first parent
		}
	}
	mine, err := ps.entry(w, id)
	if err != nil {
		return false, nil, err
	}
	for _, pid := range parents {
		pe, err := ps.entry(w, pid)
		if err != nil {
			return false, nil, err
		}
		if pe == mine {
			return false, []uint32{pid}, nil
		}
	}
	return true, parents, nil
}
