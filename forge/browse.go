package forge

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/diff"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Browser reads a repository through go-git: refs, trees, blobs, history
// and the last commit of every entry of a directory. Every call takes a
// context and stops when it is done. A Browser is safe for concurrent use
// (go-git's object storage is).
type Browser struct {
	repo *git.Repository
}

// Browse opens the repository in dir.
func Browse(dir string) (*Browser, error) {
	r, err := git.PlainOpen(dir)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	return &Browser{repo: r}, nil
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
	iter, err := b.repo.References()
	if err != nil {
		return nil, "", fmt.Errorf("forge: %w", err)
	}
	err = iter.ForEach(func(r *plumbing.Reference) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if r.Type() != plumbing.HashReference {
			return nil
		}
		switch {
		case r.Name().IsBranch():
			refs = append(refs, Ref{Name: r.Name().Short(), Commit: r.Hash().String()})
		case r.Name().IsTag():
			h := r.Hash()
			if t, err := b.repo.TagObject(h); err == nil {
				if c, err := t.Commit(); err == nil {
					h = c.Hash
				}
			}
			refs = append(refs, Ref{Name: r.Name().Short(), Tag: true, Commit: h.String()})
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	sort.Slice(refs, func(i, j int) bool {
		if refs[i].Tag != refs[j].Tag {
			return !refs[i].Tag
		}
		return refs[i].Name < refs[j].Name
	})
	if head, err := b.repo.Reference(plumbing.HEAD, false); err == nil {
		defaultBranch = head.Target().Short()
	}
	return refs, defaultBranch, nil
}

// Resolve turns a branch, a tag (with slashes too), a full or short
// commit id into a commit id.
func (b *Browser) Resolve(ctx context.Context, rev string) (string, error) {
	if rev == "" || strings.ContainsAny(rev, "^~:@{}\\ ") || strings.HasPrefix(rev, "-") {
		return "", fmt.Errorf("%w: revision %q", ErrNotFound, rev)
	}
	h, err := b.repo.ResolveRevision(plumbing.Revision(rev))
	if err != nil {
		return "", fmt.Errorf("%w: revision %q", ErrNotFound, rev)
	}
	c, err := b.repo.CommitObject(*h)
	if err != nil {
		if t, terr := b.repo.TagObject(*h); terr == nil {
			if c, err = t.Commit(); err == nil {
				return c.Hash.String(), nil
			}
		}
		return "", fmt.Errorf("%w: revision %q", ErrNotFound, rev)
	}
	return c.Hash.String(), nil
}

// Entry is one entry of a tree.
type Entry struct {
	Name string
	Type string // "blob", "tree", "commit" (submodule) or "symlink"
	Mode string // octal, as git ls-tree prints it
	Size int64  // blobs only
	Hash string
}

func (b *Browser) commit(commit string) (*object.Commit, error) {
	c, err := b.repo.CommitObject(plumbing.NewHash(commit))
	if err != nil {
		return nil, fmt.Errorf("%w: commit %s", ErrNotFound, commit)
	}
	return c, nil
}

func (b *Browser) dirTree(c *object.Commit, dir string) (*object.Tree, error) {
	t, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	dir = strings.Trim(dir, "/")
	if dir == "" {
		return t, nil
	}
	sub, err := t.Tree(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, dir)
	}
	return sub, nil
}

// Tree lists the directory dir ("" for the root) of commit, directories
// first, as git ls-tree -l would.
func (b *Browser) Tree(ctx context.Context, commit, dir string) ([]Entry, error) {
	c, err := b.commit(commit)
	if err != nil {
		return nil, err
	}
	t, err := b.dirTree(c, dir)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(t.Entries))
	for _, e := range t.Entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		en := Entry{Name: e.Name, Mode: fmt.Sprintf("%06o", uint32(e.Mode)), Hash: e.Hash.String()}
		switch e.Mode {
		case filemode.Dir:
			en.Type = "tree"
		case filemode.Submodule:
			en.Type = "commit"
		case filemode.Symlink:
			en.Type = "symlink"
		default:
			en.Type = "blob"
			if o, err := b.repo.Storer.EncodedObject(plumbing.BlobObject, e.Hash); err == nil {
				en.Size = o.Size()
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
	c, err := b.commit(commit)
	if err != nil {
		return nil, err
	}
	f, err := c.File(strings.Trim(p, "/"))
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	r, err := f.Reader()
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, max))
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	head := data[:min(len(data), 8000)]
	return &Blob{Data: data, Size: f.Size, Binary: bytes.IndexByte(head, 0) >= 0, Truncated: f.Size > int64(len(data))}, nil
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
// newest commit that changed it, in one walk of the history for the whole
// directory (the per-entry `git log -1 -- path` that made Gitea's tree
// view take seconds is what this replaces). Only the directory's own tree
// is compared at each commit, so the cost grows with history depth, not
// with the number of entries. If budget passes (or ctx ends) before every
// entry is found, the entries found so far are returned with complete
// false. The result depends only on (repository, commit, dir), so callers
// may cache it forever.
func (b *Browser) LastCommits(ctx context.Context, commit, dir string, budget time.Duration) (map[string]*CommitInfo, bool, error) {
	start, err := b.commit(commit)
	if err != nil {
		return nil, false, err
	}
	dir = strings.Trim(dir, "/")
	want, err := b.dirTree(start, dir)
	if err != nil {
		return nil, false, err
	}
	left := make(map[string]bool, len(want.Entries))
	for _, e := range want.Entries {
		left[e.Name] = true
	}
	out := make(map[string]*CommitInfo, len(left))
	var deadline time.Time
	if budget > 0 {
		deadline = time.Now().Add(budget)
	}
	entries := func(c *object.Commit) map[string]plumbing.Hash {
		m := map[string]plumbing.Hash{}
		if t, err := b.dirTree(c, dir); err == nil {
			for _, e := range t.Entries {
				m[e.Name] = e.Hash
			}
		}
		return m
	}
	seen := map[plumbing.Hash]bool{start.Hash: true}
	q := &commitQueue{start}
	cache := map[plumbing.Hash]map[string]plumbing.Hash{}
	get := func(c *object.Commit) map[string]plumbing.Hash {
		if m, ok := cache[c.Hash]; ok {
			return m
		}
		m := entries(c)
		cache[c.Hash] = m
		return m
	}
	for q.Len() > 0 && len(left) > 0 {
		if ctx.Err() != nil || (!deadline.IsZero() && time.Now().After(deadline)) {
			return out, false, nil
		}
		c := heap.Pop(q).(*object.Commit)
		mine := get(c)
		delete(cache, c.Hash)
		var parents []map[string]plumbing.Hash
		c.Parents().ForEach(func(p *object.Commit) error {
			parents = append(parents, get(p))
			if !seen[p.Hash] {
				seen[p.Hash] = true
				heap.Push(q, p)
			}
			return nil
		})
		for name := range left {
			h := mine[name]
			changed := true
			for _, pm := range parents {
				if pm[name] == h {
					changed = false // TREESAME to a parent: the change is older
					break
				}
			}
			if changed {
				out[name] = info(c)
				delete(left, name)
			}
		}
	}
	return out, len(left) == 0, nil
}

// commitQueue orders commits newest first by committer time.
type commitQueue []*object.Commit

func (q commitQueue) Len() int           { return len(q) }
func (q commitQueue) Less(i, j int) bool { return q[i].Committer.When.After(q[j].Committer.When) }
func (q commitQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *commitQueue) Push(x any)        { *q = append(*q, x.(*object.Commit)) }
func (q *commitQueue) Pop() any          { old := *q; c := old[len(old)-1]; *q = old[:len(old)-1]; return c }

// LogPath returns up to limit commits reachable from commit that changed
// path (a file or a directory), newest first, after skipping skip.
func (b *Browser) LogPath(ctx context.Context, commit, p string, skip, limit int) ([]*CommitInfo, error) {
	p = strings.Trim(p, "/")
	if p == "" {
		return b.Log(ctx, commit, skip, limit)
	}
	return b.log(ctx, &git.LogOptions{
		From:       plumbing.NewHash(commit),
		Order:      git.LogOrderCommitterTime,
		PathFilter: func(f string) bool { return f == p || strings.HasPrefix(f, p+"/") },
	}, skip, limit)
}

// FileChange is one file of a commit's diff.
type FileChange struct {
	From, To string // paths; From empty for an addition, To empty for a deletion
	Binary   bool
	Patch    string // unified diff of the file, empty when Truncated or Binary
}

// CommitDiff is a commit with its changes against its first parent.
type CommitDiff struct {
	*CommitInfo
	Message   string
	Parents   []string
	Files     []FileChange
	Truncated bool // the patch text passed the cap; later files have no patch
}

// Commit returns commit and its diff against its first parent (the empty
// tree for a root commit), with renames detected, keeping at most
// maxPatch bytes of patch text.
func (b *Browser) Commit(ctx context.Context, commit string, maxPatch int) (*CommitDiff, error) {
	c, err := b.commit(commit)
	if err != nil {
		return nil, err
	}
	d := &CommitDiff{CommitInfo: info(c), Message: c.Message}
	for _, h := range c.ParentHashes {
		d.Parents = append(d.Parents, h.String())
	}
	to, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	var from *object.Tree
	if c.NumParents() > 0 {
		p, err := c.Parent(0)
		if err != nil {
			return nil, fmt.Errorf("forge: %w", err)
		}
		if from, err = p.Tree(); err != nil {
			return nil, fmt.Errorf("forge: %w", err)
		}
	}
	changes, err := object.DiffTreeWithOptions(ctx, from, to, &object.DiffTreeOptions{DetectRenames: true, RenameScore: 60, RenameLimit: 1000})
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	patch, err := changes.PatchContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	used := 0
	for _, fp := range patch.FilePatches() {
		fromF, toF := fp.Files()
		fc := FileChange{Binary: fp.IsBinary()}
		if fromF != nil {
			fc.From = fromF.Path()
		}
		if toF != nil {
			fc.To = toF.Path()
		}
		if !fc.Binary && !d.Truncated {
			var sb strings.Builder
			for _, ch := range fp.Chunks() {
				prefix := " "
				switch ch.Type() {
				case diff.Add:
					prefix = "+"
				case diff.Delete:
					prefix = "-"
				}
				for _, line := range strings.SplitAfter(ch.Content(), "\n") {
					if line != "" {
						sb.WriteString(prefix + line)
					}
				}
			}
			if used+sb.Len() > maxPatch {
				d.Truncated = true
			} else {
				fc.Patch = sb.String()
				used += sb.Len()
			}
		}
		d.Files = append(d.Files, fc)
	}
	sort.Slice(d.Files, func(i, j int) bool { return d.Files[i].To+d.Files[i].From < d.Files[j].To+d.Files[j].From })
	return d, nil
}
