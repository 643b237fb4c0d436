package forge

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/object/commitgraph"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/go-git/go-billy/v5/osfs"
	commitgraphfmt "github.com/go-git/go-git/v5/plumbing/format/commitgraph/v2"
)

// Browser reads a repository through go-git: refs, trees, blobs, history
// and the last commit of every entry of a directory. Every call takes a
// context and stops when it is done. A Browser is safe for concurrent use
// (go-git's object storage is).
type Browser struct {
	// Git is the git binary that diffs and patches run (git's own diff,
	// byte for byte). If empty, "git" on PATH.
	Git string

	repo *git.Repository
	dir  string // for the commit-graph file

	gmu         sync.Mutex // guards graph, graphStamp, cg, cgStamp and closedGraph
	graphIdx    commitgraphfmt.Index
	graphStamp  time.Time // modification time of the file graphIdx was read from
	cg          *commitGraph
	cgStamp     time.Time
	closedGraph bool

	smu    sync.Mutex   // guards stores and closed
	stores []*walkStore // idle storages with open packs, for history walks
	closed bool
}

// maxIdleStores bounds the idle walk storages a Browser keeps (each
// holds a pack index in memory and its packs open).
const maxIdleStores = 2

// walkStore is a storage that keeps its pack files open, and the state
// of the pack directory it was opened on.
type walkStore struct {
	st    *filesystem.Storage
	stamp time.Time
}

func (b *Browser) packStamp() time.Time {
	fi, err := os.Stat(filepath.Join(b.dir, "objects", "pack"))
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

// takeStore lends a walk storage: an idle one opened on the current
// packs, or a new one. Stores opened on packs since replaced are closed.
func (b *Browser) takeStore() *walkStore {
	if b.dir == "" {
		return nil
	}
	stamp := b.packStamp()
	b.smu.Lock()
	for len(b.stores) > 0 {
		ws := b.stores[len(b.stores)-1]
		b.stores = b.stores[:len(b.stores)-1]
		if ws.stamp.Equal(stamp) {
			b.smu.Unlock()
			return ws
		}
		ws.st.Close()
	}
	b.smu.Unlock()
	st := filesystem.NewStorageWithOptions(osfs.New(b.dir), cache.NewObjectLRU(walkCacheBytes), filesystem.Options{KeepDescriptors: true})
	return &walkStore{st: st, stamp: stamp}
}

func (b *Browser) putStore(ws *walkStore) {
	b.smu.Lock()
	defer b.smu.Unlock()
	if b.closed || len(b.stores) >= maxIdleStores {
		ws.st.Close()
		return
	}
	b.stores = append(b.stores, ws)
}

// Close releases the pack files the Browser keeps open for history
// walks. Walks running on it finish; later ones open packs as needed.
func (b *Browser) Close() error {
	b.smu.Lock()
	defer b.smu.Unlock()
	b.closed = true
	for _, ws := range b.stores {
		ws.st.Close()
	}
	b.stores = nil
	b.gmu.Lock()
	b.closedGraph = true
	if b.cg != nil {
		b.cg.close()
		b.cg = nil
	}
	b.gmu.Unlock()
	return nil
}

// Object caches of a Browser. go-git's default is 96 MiB per
// repository, which an application keeping a Browser per repository (as
// forged does) multiplies; the history walks keep their own maps by tree
// hash and need little of it.
const (
	browseCacheBytes = 8 * cache.MiByte // the Browser's shared storage
	walkCacheBytes   = 2 * cache.MiByte // each pooled walk storage
)

// Browse opens the repository in dir (bare, or a work tree with .git).
func Browse(dir string) (*Browser, error) {
	if fi, err := os.Stat(filepath.Join(dir, ".git")); err == nil && fi.IsDir() {
		dir = filepath.Join(dir, ".git")
	}
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); err != nil {
		return nil, fmt.Errorf("forge: %s is not a git repository: %w", dir, err)
	}
	r, err := git.Open(filesystem.NewStorage(osfs.New(dir), cache.NewObjectLRU(browseCacheBytes)), nil)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	return &Browser{repo: r, dir: dir}, nil
}

// Ref is a branch or tag.
type Ref struct {
	Name   string // short name
	Tag    bool
	Commit string
}

// Refs returns the branches and tags (tags peeled to their commits), and
// the default branch (HEAD's target).
func (b *Browser) Refs(ctx context.Context) (refs []Ref, defaultBranch string, err error) {
	objs, err := b.objects()
	if err != nil {
		return nil, "", err
	}
	defer objs.close()
	if refs, err = readRefs(b.dir, objs); err != nil {
		return nil, "", err
	}
	sort.Slice(refs, func(i, j int) bool {
		if refs[i].Tag != refs[j].Tag {
			return !refs[i].Tag
		}
		return refs[i].Name < refs[j].Name
	})
	defaultBranch, _ = ReadHead(b.dir)
	return refs, defaultBranch, nil
}

// objects opens a reader of the repository's objects for one call.
func (b *Browser) objects() (*objectReader, error) {
	return openObjectReader(b.dir, len(plumbing.ZeroHash))
}

// Resolve turns a branch, a tag (with slashes too), a full or short
// commit id into a commit id. A full commit id that names a commit means
// it, whatever refs are called; then a branch, then a tag of that name;
// then an abbreviated id that names one object.
func (b *Browser) Resolve(ctx context.Context, rev string) (string, error) {
	if rev == "" || strings.ContainsAny(rev, "^~:@{}\\ ") || strings.HasPrefix(rev, "-") {
		return "", fmt.Errorf("%w: revision %q", ErrNotFound, rev)
	}
	objs, err := b.objects()
	if err != nil {
		return "", err
	}
	defer objs.close()
	if IsCommitID(rev) {
		if c, err := readCommit(objs, plumbing.NewHash(rev)); err == nil {
			return c.Hash, nil
		}
	}
	refs, err := readRefs(b.dir, objs)
	if err != nil {
		return "", err
	}
	for _, tag := range []bool{false, true} {
		for _, r := range refs {
			if r.Name == rev && r.Tag == tag {
				if c, err := readCommit(objs, plumbing.NewHash(r.Commit)); err == nil {
					return c.Hash, nil
				}
			}
		}
	}
	if h, err := objs.findPrefix(rev); err == nil {
		if c, err := readCommit(objs, h); err == nil {
			return c.Hash, nil
		}
	}
	return "", fmt.Errorf("%w: revision %q", ErrNotFound, rev)
}

// Entry is one entry of a tree.
type Entry struct {
	Name string
	Type string // "blob", "tree", "commit" (submodule) or "symlink"
	Mode string // octal, as git ls-tree prints it
	Size int64  // blobs only
	Hash string
}

// commit decodes commit with go-git, for the history walks that still
// go through it.
func (b *Browser) commit(commit string) (*object.Commit, error) {
	c, err := b.repo.CommitObject(plumbing.NewHash(commit))
	if err != nil {
		return nil, fmt.Errorf("%w: commit %s", ErrNotFound, commit)
	}
	return c, nil
}

// dirEntries reads the directory dir of commit: its entries as the tree
// object lists them.
func (b *Browser) dirEntries(objs *objectReader, commit, dir string) ([]rawEntry, error) {
	c, err := readCommit(objs, plumbing.NewHash(commit))
	if err != nil || c.Hash != commit {
		return nil, fmt.Errorf("%w: commit %s", ErrNotFound, commit)
	}
	mode, h, err := lookupPath(objs, c.Tree, dir)
	if err != nil {
		return nil, err
	}
	if mode != 0o040000 {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrNotFound, dir)
	}
	typ, data, err := objs.read(h)
	if err != nil || typ != plumbing.TreeObject {
		return nil, fmt.Errorf("forge: tree %s: %v", h, err)
	}
	return parseTree(data)
}

// Tree lists the directory dir ("" for the root) of commit, directories
// first, as git ls-tree -l would.
func (b *Browser) Tree(ctx context.Context, commit, dir string) ([]Entry, error) {
	objs, err := b.objects()
	if err != nil {
		return nil, err
	}
	defer objs.close()
	entries, err := b.dirEntries(objs, commit, dir)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(entries))
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		en := Entry{Name: e.name, Mode: fmt.Sprintf("%06o", e.mode), Hash: e.hash.String()}
		switch filemode.FileMode(e.mode) {
		case filemode.Dir:
			en.Type = "tree"
		case filemode.Submodule:
			en.Type = "commit"
		case filemode.Symlink:
			en.Type = "symlink"
		default:
			en.Type = "blob"
			// The size from the pack entry's header: no blob is read.
			if n, err := objs.size(e.hash); err == nil {
				en.Size = n
			}
		}
		out = append(out, en)
	}
	sort.SliceStable(out, func(i, j int) bool { return (out[i].Type == "tree") && out[j].Type != "tree" })
	return out, nil
}

// ErrTooLarge is reported (with Truncated) for blobs over the cap.
var ErrTooLarge = errors.New("forge: file too large")

// Blob is the content of a file.
type Blob struct {
	Data      []byte // up to the cap
	Size      int64
	Binary    bool // a NUL byte in the first 8000 bytes, as git decides
	Truncated bool
}

// Blob reads the file at p of commit, at most max bytes.
func (b *Browser) Blob(ctx context.Context, commit, p string, max int64) (*Blob, error) {
	objs, err := b.objects()
	if err != nil {
		return nil, err
	}
	defer objs.close()
	c, err := readCommit(objs, plumbing.NewHash(commit))
	if err != nil || c.Hash != commit {
		return nil, fmt.Errorf("%w: commit %s", ErrNotFound, commit)
	}
	if strings.Trim(p, "/") == "" {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	mode, h, err := lookupPath(objs, c.Tree, p)
	if err != nil {
		return nil, err
	}
	if mode == 0o040000 || mode == 0o160000 {
		return nil, fmt.Errorf("%w: %s is not a file", ErrNotFound, p)
	}
	data, size, err := objs.readPrefix(h, max)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	head := data[:min(len(data), 8000)]
	return &Blob{Data: data, Size: size, Binary: bytes.IndexByte(head, 0) >= 0, Truncated: size > int64(len(data))}, nil
}

// CommitInfo is what a listing shows of a commit.
type CommitInfo struct {
	Hash    string
	Author  string
	Email   string
	When    time.Time
	Subject string
}

func info(c *object.Commit) *CommitInfo {
	subject, _, _ := strings.Cut(c.Message, "\n")
	return &CommitInfo{Hash: c.Hash.String(), Author: c.Author.Name, Email: c.Author.Email, When: c.Committer.When, Subject: subject}
}

// Log returns up to limit commits reachable from commit, newest first,
// after skipping skip, as git log would.
func (b *Browser) Log(ctx context.Context, commit string, skip, limit int) ([]*CommitInfo, error) {
	return b.log(ctx, &git.LogOptions{From: plumbing.NewHash(commit), Order: git.LogOrderCommitterTime}, skip, limit)
}

// log runs a history walk and keeps the commits from skip to skip+limit.
func (b *Browser) log(ctx context.Context, opts *git.LogOptions, skip, limit int) ([]*CommitInfo, error) {
	iter, err := b.repo.Log(opts)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	defer iter.Close()
	var out []*CommitInfo
	n := 0
	errStop := errors.New("stop")
	err = iter.ForEach(func(c *object.Commit) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if n++; n <= skip {
			return nil
		}
		out = append(out, info(c))
		if len(out) == limit {
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	return out, nil
}

// LastCommits returns, for every entry of directory dir of commit, the
// newest commit that changed it, as git log -1 -- dir/entry finds it
// (history simplified the way git does by default), in one walk of the
// history for the whole directory that uses the commit-graph and its
// changed-path Bloom filters when the repository has them (see
// lastWalk). If budget passes (or ctx ends) before every entry is
// found, the entries found so far are returned with complete false. The
// result depends only on (repository, commit, dir), so callers may
// cache it forever.
func (b *Browser) LastCommits(ctx context.Context, commit, dir string, budget time.Duration) (map[string]*CommitInfo, bool, error) {
	var deadline time.Time
	if budget > 0 {
		deadline = time.Now().Add(budget)
	}
	found, complete, _, err := b.lastCommits(ctx, commit, dir, deadline, nil)
	if err != nil {
		return nil, false, err
	}
	out, err := b.commitInfos(ctx, found)
	return out, complete, err
}

// lastCommits runs a lastWalk; known, if set, gives answers known at
// commits (name → commit) that entries reaching them take. It returns
// the answers by name (commit ids), whether every entry has one, and the
// walk's counters.
func (b *Browser) lastCommits(ctx context.Context, commit, dir string, deadline time.Time, known func(plumbing.Hash) map[string]plumbing.Hash) (map[string]plumbing.Hash, bool, walkStats, error) {
	dir = strings.Trim(dir, "/")
	objs, err := b.objects()
	if err != nil {
		return nil, false, walkStats{}, err
	}
	defer objs.close()
	entries, err := b.dirEntries(objs, commit, dir)
	if err != nil {
		return nil, false, walkStats{}, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.name
	}
	g := b.graph()
	if g != nil {
		defer g.release()
	}
	w := newLastWalk(objs, g, dir, names)
	w.known = known
	complete, err := w.run(ctx, plumbing.NewHash(commit), deadline)
	if err != nil {
		return nil, false, walkStats{}, err
	}
	out := make(map[string]plumbing.Hash, len(names))
	for i, h := range w.found {
		if !h.IsZero() {
			out[names[i]] = h
		}
	}
	return out, complete, walkStats{Visited: w.visited, BloomSkips: w.bloomSkips, TreeReads: w.treeReads}, nil
}

// walkStats count a walk's work.
type walkStats struct {
	Visited, BloomSkips, TreeReads int
}

// commitInfos reads the commits of found, once each.
func (b *Browser) commitInfos(ctx context.Context, found map[string]plumbing.Hash) (map[string]*CommitInfo, error) {
	out := make(map[string]*CommitInfo, len(found))
	if len(found) == 0 {
		return out, nil
	}
	objs, err := b.objects()
	if err != nil {
		return nil, err
	}
	defer objs.close()
	infos := map[plumbing.Hash]*CommitInfo{}
	for name, h := range found {
		ci, ok := infos[h]
		if !ok {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			typ, data, err := objs.read(h)
			if err != nil || typ != plumbing.CommitObject {
				return nil, fmt.Errorf("forge: commit %s: %v", h, err)
			}
			ci = parseCommitInfo(h, data)
			infos[h] = ci
		}
		out[name] = ci
	}
	return out, nil
}

// graph returns the repository's commit-graph, mapped, with a reference
// the caller releases; nil when it has none (or it cannot be read). A
// graph rewritten by maintenance is mapped anew; walks still on the old
// one finish on it.
func (b *Browser) graph() *commitGraph {
	if b.dir == "" {
		return nil
	}
	var stamp time.Time
	for _, p := range []string{"objects/info/commit-graphs/commit-graph-chain", "objects/info/commit-graph"} {
		if fi, err := os.Stat(filepath.Join(b.dir, p)); err == nil {
			stamp = fi.ModTime()
			break
		}
	}
	b.gmu.Lock()
	defer b.gmu.Unlock()
	if b.cg != nil && (!stamp.Equal(b.cgStamp) || b.closedGraph) {
		b.cg.close()
		b.cg = nil
	}
	if stamp.IsZero() || b.closedGraph {
		return nil
	}
	if b.cg == nil {
		g, err := openCommitGraph(b.dir)
		if err != nil || g == nil {
			return nil
		}
		b.cg, b.cgStamp = g, stamp
	}
	if !b.cg.acquire() {
		return nil
	}
	return b.cg
}

// commitNodes walks history through the repository's commit-graph file
// when it has one (no commit object is decoded to find parents, times or
// root trees), else through the commit objects. Commits newer than the
// graph are read from their objects either way.
func (b *Browser) commitNodes() commitgraph.CommitNodeIndex {
	return b.commitNodesOn(b.repo.Storer)
}

func (b *Browser) commitNodesOn(s storer.EncodedObjectStorer) commitgraph.CommitNodeIndex {
	if idx := b.commitGraph(); idx != nil {
		return commitgraph.NewGraphCommitNodeIndex(idx, s)
	}
	return commitgraph.NewObjectCommitNodeIndex(s)
}

// commitGraph returns the repository's commit-graph index, read again
// when maintenance rewrites the file (the old one stays valid, only
// older), or nil.
func (b *Browser) commitGraph() commitgraphfmt.Index {
	if b.dir == "" {
		return nil
	}
	var stamp time.Time
	for _, p := range []string{"objects/info/commit-graph", "objects/info/commit-graphs/commit-graph-chain"} {
		if fi, err := os.Stat(filepath.Join(b.dir, p)); err == nil {
			stamp = fi.ModTime()
			break
		}
	}
	b.gmu.Lock()
	defer b.gmu.Unlock()
	if stamp.IsZero() {
		b.graphIdx = nil
		return nil
	}
	if b.graphIdx == nil || !stamp.Equal(b.graphStamp) {
		idx, err := commitgraphfmt.OpenChainOrFileIndex(osfs.New(b.dir))
		if err != nil {
			return nil
		}
		b.graphIdx, b.graphStamp = idx, stamp
	}
	return b.graphIdx
}

// pathWalk is the state of one history walk along a path (LogPath): the hash at the path per root tree, the next hash per tree
// along the path, and directory entries per tree hash, so that a tree is
// decoded once however many commits share it.
type pathWalk struct {
	store   storer.EncodedObjectStorer
	path    []string
	anyLast bool                                       // the last name may be a file (LogPath); else a directory
	dirs    map[plumbing.Hash]plumbing.Hash            // root tree → hash at path (zero if missing)
	steps   map[pathStep]plumbing.Hash                 // a tree along the path → the next hash
	entries map[plumbing.Hash]map[string]plumbing.Hash // directory tree → name → hash
}

type pathStep struct {
	tree  plumbing.Hash
	depth int
}

func newPathWalk(b *Browser, path []string, anyLast bool) *pathWalk {
	return &pathWalk{store: b.repo.Storer, path: path, anyLast: anyLast,
		dirs: map[plumbing.Hash]plumbing.Hash{}, steps: map[pathStep]plumbing.Hash{},
		entries: map[plumbing.Hash]map[string]plumbing.Hash{}}
}

// dirHash is the hash at the walk's path in c's tree (zero if c has
// nothing there), decoding only trees along the path not seen before.
func (w *pathWalk) dirHash(c commitgraph.CommitNode) (plumbing.Hash, error) {
	root, err := c.Tree()
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("forge: %w", err)
	}
	if h, ok := w.dirs[root.Hash]; ok {
		return h, nil
	}
	h := root.Hash
	for i, name := range w.path {
		k := pathStep{h, i}
		next, ok := w.steps[k]
		if !ok {
			t := root
			if i > 0 {
				if t, err = object.GetTree(w.store, h); err != nil {
					return plumbing.ZeroHash, fmt.Errorf("forge: %w", err)
				}
			}
			for _, e := range t.Entries {
				if e.Name == name && (e.Mode == filemode.Dir || (w.anyLast && i == len(w.path)-1)) {
					next = e.Hash
				}
			}
			w.steps[k] = next
		}
		if h = next; h.IsZero() {
			break
		}
	}
	w.dirs[root.Hash] = h
	return h, nil
}

// list returns the entries of the directory tree h (none for zero).
func (w *pathWalk) list(h plumbing.Hash) map[string]plumbing.Hash {
	if m, ok := w.entries[h]; ok {
		return m
	}
	m := map[string]plumbing.Hash{}
	if !h.IsZero() {
		if t, err := object.GetTree(w.store, h); err == nil {
			for _, e := range t.Entries {
				m[e.Name] = e.Hash
			}
		}
	}
	w.entries[h] = m
	return m
}

// nodeQueue orders commits newest first by committer time.
type nodeQueue []commitgraph.CommitNode

func (q nodeQueue) Len() int           { return len(q) }
func (q nodeQueue) Less(i, j int) bool { return q[i].CommitTime().After(q[j].CommitTime()) }
func (q nodeQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *nodeQueue) Push(x any)        { *q = append(*q, x.(commitgraph.CommitNode)) }
func (q *nodeQueue) Pop() any          { old := *q; c := old[len(old)-1]; *q = old[:len(old)-1]; return c }

// LogPath returns up to limit commits reachable from commit that changed
// path (a file or a directory), newest first, after skipping skip, as
// `git log -- path` lists them: history simplified the way git does it
// by default (a commit whose path is the same as one parent's is not
// shown, and only that parent is followed). It walks like LastCommits:
// through the commit-graph when there is one, comparing the hash at the
// path with the parents', so most commits cost one small tree decode.
// A limit of 0 or less returns them all.
func (b *Browser) LogPath(ctx context.Context, commit, p string, skip, limit int) ([]*CommitInfo, error) {
	p = strings.Trim(p, "/")
	if p == "" {
		return b.Log(ctx, commit, skip, limit)
	}
	w := newPathWalk(b, strings.Split(p, "/"), true)
	nodes := b.commitNodes()
	if ws := b.takeStore(); ws != nil {
		defer b.putStore(ws)
		w.store = ws.st
		nodes = b.commitNodesOn(ws.st)
	}
	start, err := nodes.Get(plumbing.NewHash(commit))
	if err != nil {
		return nil, fmt.Errorf("%w: commit %s", ErrNotFound, commit)
	}
	seen := map[plumbing.Hash]bool{start.ID(): true}
	q := &nodeQueue{start}
	var out []*CommitInfo
	n := 0
	for q.Len() > 0 && (limit <= 0 || len(out) < limit) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c := heap.Pop(q).(commitgraph.CommitNode)
		h, err := w.dirHash(c)
		if err != nil {
			return nil, err
		}
		var parents []commitgraph.CommitNode
		if err := c.ParentNodes().ForEach(func(p commitgraph.CommitNode) error {
			parents = append(parents, p)
			return nil
		}); err != nil {
			return nil, fmt.Errorf("forge: %w", err)
		}
		show, follow := !h.IsZero() || len(parents) > 0, parents
		for _, pn := range parents {
			ph, err := w.dirHash(pn)
			if err != nil {
				return nil, err
			}
			if ph == h {
				show, follow = false, []commitgraph.CommitNode{pn} // TREESAME: follow that parent alone
				break
			}
		}
		if len(parents) == 0 {
			show = !h.IsZero()
		}
		for _, pn := range follow {
			if !seen[pn.ID()] {
				seen[pn.ID()] = true
				heap.Push(q, pn)
			}
		}
		if !show {
			continue
		}
		if n++; n <= skip {
			continue
		}
		oc, err := c.Commit()
		if err != nil {
			return nil, fmt.Errorf("forge: %w", err)
		}
		out = append(out, info(oc))
	}
	return out, nil
}
