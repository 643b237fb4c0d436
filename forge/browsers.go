package forge

import (
	"context"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Defaults for Browsers.
const (
	DefaultOpenBrowsers = 256
	DefaultRefsTTL      = time.Second
)

// Browsers keeps what browsing a repository needs from one request to
// the next: its Browser (which holds the mapped commit-graph, remapped
// when maintenance rewrites it; objects are read from the packs as they
// are at each call), its refs for RefsTTL, and the full commit ids
// already found in it. Reading the refs is most of the cost of a warm
// page otherwise. Repositories are keyed by directory; tell Browsers
// when their refs change (RefsChanged) or the directory stops meaning
// the repository (Forget).
//
// The exported fields must not change after the first call. A Browsers
// is safe for concurrent use.
type Browsers struct {
	// Max is the most repositories kept open. If zero,
	// DefaultOpenBrowsers.
	Max int

	// RefsTTL is how long a repository's refs are reused: pushes this
	// process serves drop them at once (RefsChanged), another process's
	// are seen within RefsTTL. If zero, DefaultRefsTTL.
	RefsTTL time.Duration

	once     sync.Once
	open     *lru.Cache[string, *Browser]
	refs     *lru.Cache[string, refsEntry]
	resolved *lru.Cache[string, string] // dir|full id -> the commit it names
}

type refsEntry struct {
	refs []Ref
	head string // the branch HEAD names
	at   time.Time
}

func (p *Browsers) init() {
	p.once.Do(func() {
		n := p.Max
		if n <= 0 {
			n = DefaultOpenBrowsers
		}
		p.open, _ = lru.NewWithEvict(n, func(_ string, b *Browser) { b.Close() })
		p.refs, _ = lru.New[string, refsEntry](4 * n)
		p.resolved, _ = lru.New[string, string](64 * n)
	})
}

// Open returns the Browser of the repository in dir, opening it if
// needed. The caller must not close it.
func (p *Browsers) Open(dir string) (*Browser, error) {
	p.init()
	if b, ok := p.open.Get(dir); ok {
		return b, nil
	}
	b, err := Browse(dir)
	if err != nil {
		return nil, err
	}
	if old, ok, _ := p.open.PeekOrAdd(dir, b); ok {
		b.Close()
		return old, nil
	}
	return b, nil
}

// Refs returns the branches and tags of the repository in dir, and the
// branch HEAD names, as Browser.Refs does, reused for RefsTTL.
func (p *Browsers) Refs(ctx context.Context, dir string) ([]Ref, string, error) {
	p.init()
	ttl := p.RefsTTL
	if ttl <= 0 {
		ttl = DefaultRefsTTL
	}
	if e, ok := p.refs.Get(dir); ok && time.Since(e.at) < ttl {
		return e.refs, e.head, nil
	}
	b, err := p.Open(dir)
	if err != nil {
		return nil, "", err
	}
	refs, head, err := b.Refs(ctx)
	if err != nil {
		return nil, "", err
	}
	p.refs.Add(dir, refsEntry{refs, head, time.Now()})
	return refs, head, nil
}

// SplitRef splits rest ("REF/PATH", as in the URLs of a forge's pages)
// into a ref, the commit it names, and a path, with this precedence:
//
//  1. a full commit id that names a commit: that commit, whatever refs
//     are called (GitPolicy refuses pushes of refs named like commit
//     ids, but an imported repository may have them);
//  2. the longest branch or tag name that rest starts with, up to a
//     "/" (so refs with slashes resolve); of a branch and a tag of the
//     same name, the branch;
//  3. an abbreviated commit id (4 to 39 hex digits), if unambiguous.
//
// Anything else is ErrNotFound. Full commit ids found once are
// remembered: a commit never changes.
func (p *Browsers) SplitRef(ctx context.Context, dir, rest string) (ref, commit, path string, err error) {
	p.init()
	first, path, _ := strings.Cut(rest, "/")
	path = strings.Trim(path, "/")
	if IsCommitID(first) {
		if c, ok := p.resolved.Get(dir + "|" + first); ok {
			return first, c, path, nil
		}
		b, err := p.Open(dir)
		if err != nil {
			return "", "", "", err
		}
		if c, err := b.Resolve(ctx, first); err == nil && c == first {
			p.resolved.Add(dir+"|"+first, c)
			return first, c, path, nil
		}
	}
	refs, _, err := p.Refs(ctx, dir)
	if err != nil {
		return "", "", "", err
	}
	for _, rf := range refs {
		longer := len(rf.Name) > len(ref) || (len(rf.Name) == len(ref) && !rf.Tag)
		if (rest == rf.Name || strings.HasPrefix(rest, rf.Name+"/")) && longer {
			ref, commit = rf.Name, rf.Commit
		}
	}
	if ref != "" {
		return ref, commit, strings.Trim(rest[len(ref):], "/"), nil
	}
	if len(first) < 4 || len(first) >= 40 || strings.Trim(first, "0123456789abcdef") != "" {
		return "", "", "", ErrNotFound
	}
	b, err := p.Open(dir)
	if err != nil {
		return "", "", "", err
	}
	if commit, err = b.Resolve(ctx, first); err != nil {
		return "", "", "", ErrNotFound
	}
	return first, commit, path, nil
}

// RefsChanged drops the refs kept for dir (after a push, or a change of
// the default branch).
func (p *Browsers) RefsChanged(dir string) {
	p.init()
	p.refs.Remove(dir)
}

// Forget drops everything kept for dir, when the directory no longer
// means the repository it did (renamed, deleted).
func (p *Browsers) Forget(dir string) {
	p.init()
	p.refs.Remove(dir)
	p.open.Remove(dir)
	for _, k := range p.resolved.Keys() {
		if strings.HasPrefix(k, dir+"|") {
			p.resolved.Remove(k)
		}
	}
}

// Close closes the Browsers kept open.
func (p *Browsers) Close() {
	p.init()
	p.open.Purge()
}
