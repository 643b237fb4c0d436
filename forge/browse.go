package forge

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
)

// Browser reads a repository: refs, trees, blobs, history and the last
// commit of every entry of a directory, through its pack files and its
// commit-graph directly (see objectReader and commitGraph: go-git loads
// a pack's whole index into memory and hashes every object it resolves,
// which a repository of git's size turns into seconds and gigabytes),
// and diffs through git. Every call takes a context and stops when it is
// done. A Browser is safe for concurrent use; set Git before the first
// call.
type Browser struct {
	// Git is the git binary that diffs and patches run (git's own diff,
	// byte for byte). If empty, "git" on PATH.
	Git string

	dir string

	gmu     sync.Mutex // guards cg, cgStamp and closed
	cg      *commitGraph
	cgStamp time.Time
	closed  bool
}

// Close releases the commit-graph the Browser keeps mapped. Walks
// running on it finish; later calls map it again as needed.
func (b *Browser) Close() error {
	b.gmu.Lock()
	defer b.gmu.Unlock()
	b.closed = true
	if b.cg != nil {
		b.cg.close()
		b.cg = nil
	}
	return nil
}

// Browse opens the repository in dir (bare, or a work tree with .git).
func Browse(dir string) (*Browser, error) {
	if fi, err := os.Stat(filepath.Join(dir, ".git")); err == nil && fi.IsDir() {
		dir = filepath.Join(dir, ".git")
	}
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); err != nil {
		return nil, fmt.Errorf("forge: %s is not a git repository: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "objects")); err != nil {
		return nil, fmt.Errorf("forge: %s is not a git repository: %w", dir, err)
	}
	return &Browser{dir: dir}, nil
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
	objs, err := b.objects(ctx)
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

// objects opens a reader of the repository's objects for one call; the
// objects it reads are counted into the slowlog.Work of ctx when it is
// closed.
func (b *Browser) objects(ctx context.Context) (*objectReader, error) {
	r, err := openObjectReader(b.dir, len(plumbing.ZeroHash))
	if r != nil {
		r.ctx = ctx
	}
	return r, err
}

// Resolve turns a branch, a tag (with slashes too), a full or short
// commit id, or HEAD, into a commit id. A full commit id that names a
// commit means it, whatever refs are called; then a branch, then a tag of
// that name; then an abbreviated id that names one object.
func (b *Browser) Resolve(ctx context.Context, rev string) (string, error) {
	if rev == "" || strings.ContainsAny(rev, "^~:@{}\\ ") || strings.HasPrefix(rev, "-") {
		return "", fmt.Errorf("%w: revision %q", ErrNotFound, rev)
	}
	objs, err := b.objects(ctx)
	if err != nil {
		return "", err
	}
	defer objs.close()
	if rev == "HEAD" {
		if rev, err = ReadHead(b.dir); err != nil {
			return "", fmt.Errorf("%w: HEAD", ErrNotFound)
		}
	}
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
	objs, err := b.objects(ctx)
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

// Blob is the content of a file.
type Blob struct {
	Data      []byte // up to the cap
	Size      int64
	Binary    bool // a NUL byte in the first 8000 bytes, as git decides
	Truncated bool
}

// Blob reads the file at p of commit, at most max bytes.
func (b *Browser) Blob(ctx context.Context, commit, p string, max int64) (*Blob, error) {
	objs, err := b.objects(ctx)
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

// Log returns up to limit commits reachable from commit, newest first,
// after skipping skip, as git log would.
func (b *Browser) Log(ctx context.Context, commit string, skip, limit int) ([]*CommitInfo, error) {
	return b.LogPath(ctx, commit, "", skip, limit)
}

// LogPath returns up to limit commits reachable from commit that changed
// path (a file or a directory; "" for every commit), newest first, after
// skipping skip, as git log -- path lists them: history simplified the
// way git does it by default (a commit whose path is the same as one
// parent's is not shown, and only that parent is followed), with the
// commit-graph's changed-path Bloom filters ruling out most commits
// without a tree read. A limit of 0 or less returns them all.
func (b *Browser) LogPath(ctx context.Context, commit, p string, skip, limit int) ([]*CommitInfo, error) {
	objs, err := b.objects(ctx)
	if err != nil {
		return nil, err
	}
	defer objs.close()
	g := b.graph()
	if g != nil {
		defer g.release()
	}
	ci := newCommitIndex(objs, g)
	ids, err := ci.history(ctx, plumbing.NewHash(commit), p, skip, limit)
	if err != nil {
		return nil, err
	}
	out := make([]*CommitInfo, 0, len(ids))
	for _, id := range ids {
		h := ci.hash(id)
		typ, data, err := objs.read(h)
		if err != nil || typ != plumbing.CommitObject {
			return nil, fmt.Errorf("forge: commit %s: %v", h, err)
		}
		out = append(out, parseCommitInfo(h, data))
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
	objs, err := b.objects(ctx)
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
	w := newLastWalk(newCommitIndex(objs, g), dir, names)
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
	objs, err := b.objects(ctx)
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
	if b.cg != nil && (!stamp.Equal(b.cgStamp) || b.closed) {
		b.cg.close()
		b.cg = nil
	}
	if stamp.IsZero() || b.closed {
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
