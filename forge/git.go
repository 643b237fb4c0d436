package forge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/slowlog"
)

// GitPolicy is the forge's rules for git traffic, as the hooks of a
// gitproto.Handler: who may fetch and push (Authorize), push-to-create
// into one's own namespace (OnMissingRepo), what a push may change
// (PreReceive) and what follows it (PostReceive). Each rule is a method,
// so that it can be read, tested and reused by other transports. A
// GitPolicy is safe for concurrent use.
type GitPolicy struct {
	f *Forge
}

// GitPolicy returns the forge's git policy.
func (f *Forge) GitPolicy() *GitPolicy { return &GitPolicy{f: f} }

// GitHandler returns a gitproto.Handler serving the forge's repositories
// with its GitPolicy: anonymous clone of public repositories, Basic
// authentication (password or token) for the rest, push-to-create into
// one's own namespace (private by default), and protected branches that
// refuse force-pushes and deletion. Its git processes are counted into
// the slowlog.Work of their request. The caller may set more fields
// (caches, admission, limits) before serving.
func (f *Forge) GitHandler() *gitproto.Handler {
	p := f.GitPolicy()
	return &gitproto.Handler{
		Engine: &gitproto.GitEngine{OnRun: func(ctx context.Context, _ gitproto.Service, d time.Duration) {
			slowlog.Count(ctx, slowlog.GitRun, d)
		}},
		Resolver:      f.Store.Resolver(),
		Realm:         "forgekit",
		Authorizer:    p,
		OnMissingRepo: p.OnMissingRepo,
		PreReceive:    p.PreReceive,
		PostReceive:   p.PostReceive,
	}
}

func splitRepo(repo string) (owner, name string, ok bool) {
	owner, name, ok = strings.Cut(strings.TrimSuffix(repo, ".git"), "/")
	return owner, name, ok && !strings.Contains(name, "/")
}

// gitRequest is what a git request's authorization loaded, for the
// hooks of the same request (see gitproto.ContextAuthorizer).
type gitRequest struct {
	repo *RepoInfo // nil when the repository does not exist (yet)
}

type gitRequestKey struct{}

// Authorize implements gitproto.Authorizer; see AuthorizeContext.
func (g *GitPolicy) Authorize(r *http.Request, repo string, op gitproto.Op) (string, error) {
	_, who, err := g.AuthorizeContext(r, repo, op)
	return who, err
}

// AuthorizeContext implements gitproto.ContextAuthorizer with
// Forge.Access, authenticating the request's Basic credentials (a
// password or a token). A push into one's own namespace is allowed for a
// repository that does not exist yet, so that OnMissingRepo can create
// it. The context it returns carries the repository's metadata to
// PreReceive and PostReceive, which then do not read it again.
func (g *GitPolicy) AuthorizeContext(r *http.Request, repo string, op gitproto.Op) (context.Context, string, error) {
	if _, _, ok := splitRepo(repo); !ok {
		return nil, "", gitproto.ErrNotFound
	}
	p, err := g.f.Authenticate(r)
	switch {
	case errors.Is(err, ErrBadCredentials):
		return nil, "", gitproto.ErrUnauthorized
	case err != nil:
		// The credentials were not judged (a database that does not
		// answer, too many password checks at once): 503, which a
		// login limiter does not count as a failure.
		g.f.logger().WarnContext(r.Context(), "forge: git credentials not checked", "repo", repo, "err", err)
		return nil, "", gitproto.ErrUnavailable
	}
	return g.AuthorizePrincipal(r.Context(), p, repo, op)
}

// AuthorizePrincipal decides as AuthorizeContext does for a principal
// that another transport authenticated (an SSH key: see KeyPrincipal;
// nil for anonymous), so that every transport follows one rule.
func (g *GitPolicy) AuthorizePrincipal(ctx context.Context, p *Principal, repo string, op gitproto.Op) (context.Context, string, error) {
	owner, name, ok := splitRepo(repo)
	if !ok {
		return nil, "", gitproto.ErrNotFound
	}
	a := ActionRead
	if op == gitproto.Write {
		a = ActionWrite
	}
	who := ""
	if p != nil {
		who = p.User.Name
	}
	info, _, err := g.f.Access(ctx, p, owner, name, a)
	switch {
	case err == nil:
		return context.WithValue(ctx, gitRequestKey{}, &gitRequest{repo: info}), who, nil
	case errors.Is(err, ErrLoginRequired):
		return nil, "", gitproto.ErrUnauthorized
	case errors.Is(err, ErrNotFound) && a == ActionWrite && p != nil && strings.EqualFold(p.User.Name, owner) && p.Scope != ScopeRead:
		return nil, who, nil // push-to-create into one's own namespace
	case errors.Is(err, ErrNotFound):
		return nil, "", gitproto.ErrNotFound
	case errors.Is(err, ErrForbidden):
		return nil, "", gitproto.ErrForbidden
	}
	return nil, "", err
}

// repoInfo returns the metadata of the pushed repository: the one its
// authorization loaded, or (for a repository created by this push) read
// now.
func (g *GitPolicy) repoInfo(ctx context.Context, repo string) (*RepoInfo, error) {
	if gr, ok := ctx.Value(gitRequestKey{}).(*gitRequest); ok && gr.repo != nil {
		return gr.repo, nil
	}
	owner, name, _ := splitRepo(repo)
	return g.f.Meta.RepoInfo(ctx, owner, name)
}

// OnMissingRepo creates a private repository for a push into the
// pusher's own namespace, as Forge.CreateRepo does (default branch
// protected).
func (g *GitPolicy) OnMissingRepo(ctx context.Context, repo, principal string) (string, error) {
	owner, name, ok := splitRepo(repo)
	if !ok || !strings.EqualFold(owner, principal) {
		return "", gitproto.ErrNotFound
	}
	info, err := g.f.CreateRepo(ctx, principal, name, true, "")
	if err != nil {
		return "", fmt.Errorf("%w: %v", gitproto.ErrNotFound, err)
	}
	r, err := g.f.Store.Get(info.Owner, info.Name)
	if err != nil {
		return "", fmt.Errorf("%w: %v", gitproto.ErrNotFound, err)
	}
	return r.Dir, nil
}

// PreReceive refuses, ref by ref:
//   - force-pushes to and deletion of protected branches;
//   - branches and tags named like a full commit id (40 or 64 hex
//     digits), which would make a commit's URL show something else;
//   - new branches and tags named under a protected branch
//     ("main/docs" when main is protected), which would shadow what
//     URLs under the branch's name show.
func (g *GitPolicy) PreReceive(ctx context.Context, p *gitproto.Push) error {
	r, err := g.repoInfo(ctx, p.Repo)
	if err != nil {
		return err
	}
	patterns, err := g.f.Meta.ProtectedBranches(ctx, r.ID)
	if err != nil {
		return err
	}
	for _, u := range p.Updates {
		short, isBranch := strings.CutPrefix(u.Ref, "refs/heads/")
		if !isBranch {
			short, _ = strings.CutPrefix(u.Ref, "refs/tags/")
		}
		if !u.IsDelete() && short != u.Ref {
			if isObjectID(short) {
				p.Reject(u.Ref, "a ref named like a commit id is refused: it would hide that commit in URLs")
				continue
			}
			if under := protectedPrefix(short, patterns); under != "" {
				p.Reject(u.Ref, "refs under the protected branch "+under+" are refused")
				continue
			}
		}
		if !isBranch || !protected(short, patterns) || u.IsCreate() {
			continue
		}
		if u.IsDelete() {
			p.Reject(u.Ref, "protected branch: cannot be deleted")
			continue
		}
		if ff, err := p.IsAncestor(ctx, u.Old, u.New); err != nil {
			return err
		} else if !ff {
			p.Reject(u.Ref, "protected branch: force-push refused")
		}
	}
	return nil
}

// PostReceive makes the first branch pushed into a repository its
// default when HEAD names a branch that does not exist (a project whose
// branch is master pushed into a new repository, whose HEAD names main)
// and tells the OnPush listeners, before the pusher's git finishes: a
// clone or a page right after the push sees it. What nobody waits for
// runs after, in the background (see Forge.Wait): the push time and the
// repository's size (a walk of its files) are recorded and the webhooks
// are queued.
func (g *GitPolicy) PostReceive(ctx context.Context, p *gitproto.Push) {
	r, err := g.repoInfo(ctx, p.Repo)
	if err != nil {
		return
	}
	if err := g.f.adoptPushedHead(ctx, r, p.Dir, p.Updates); err != nil {
		g.f.logger().WarnContext(ctx, "forge: setting the default branch after a push", "repo", p.Repo, "err", err)
	}
	g.f.afterPush(ctx, r, p.Dir, p.Principal, p.Updates, func(old, new string) bool {
		ff, err := p.IsAncestor(ctx, old, new)
		return err == nil && ff
	})
}

// afterPush tells the OnPush listeners what a push (or a branch deleted
// on the web) changed, then records it and queues its webhooks in the
// background. ff says whether a ref's update from old to new kept every
// commit.
func (f *Forge) afterPush(ctx context.Context, r *RepoInfo, dir, pusher string, updates []gitproto.RefUpdate, ff func(old, new string) bool) {
	now := time.Now()
	ev := PushEvent{Repo: r.Owner + "/" + r.Name, RepoID: r.ID, Dir: dir, Pusher: pusher, Updates: updates, At: now.UTC()}
	for _, u := range updates {
		if u.IsCreate() {
			continue
		}
		if u.IsDelete() || !ff(u.Old, u.New) {
			ev.Dropped = true
			break
		}
	}
	for _, l := range f.OnPush {
		l(ctx, ev)
	}
	ctx = context.WithoutCancel(ctx) // the push's request is about to end
	// Recorded before answering, not in the background: the feeds list
	// pushes in the order of their rows, which must be the order in which
	// they happened, and a page right after the push shows its time (and
	// has the ETag it will keep). Only the size, a walk of the
	// repository's files, is left for later.
	var err error
	if ev.ID, err = f.Meta.recordPush(ctx, r.ID, pusher, updates, now); err != nil {
		f.logger().WarnContext(ctx, "forge: recording a push for the feeds", "repo", ev.Repo, "err", err)
	}
	w := PushWork{RepoID: r.ID, Event: ev}
	if f.Enqueue != nil {
		err := f.Enqueue(ctx, w)
		if err == nil {
			return
		}
		f.logger().WarnContext(ctx, "forge: queueing a push's work: doing it in this process", "repo", ev.Repo, "err", err)
	}
	f.background(func() {
		if err := f.FinishPush(ctx, w); err != nil {
			f.logger().WarnContext(ctx, "forge: recording a push", "repo", ev.Repo, "err", err)
		}
	})
}

// PushWork is what a push leaves for after its answer: recording the
// repository's new size (a walk of its files) and its webhook
// deliveries. It is plain data, for a queue to keep as JSON; RepoID is
// here because Event's (like its Dir) is not marshalled: Event is also
// the webhooks' body.
type PushWork struct {
	RepoID int64     `json:"repo_id"`
	Event  PushEvent `json:"event"`
}

// FinishPush does w: it records the repository's size and the push's
// webhook deliveries, and hands those to the Deliverer. It may run more
// than once for one push (a queue's retry, a process killed midway):
// a delivery is recorded once per push and webhook (see Deliverer.Push).
// A repository deleted since has nothing left to do.
func (f *Forge) FinishPush(ctx context.Context, w PushWork) error {
	r, repo, err := f.RepoByID(ctx, w.RepoID)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := f.Meta.resized(ctx, r.ID, dirSize(repo.Dir)); err != nil {
		return err
	}
	if f.Deliverer != nil {
		return f.Deliverer.Push(ctx, r.ID, w.Event)
	}
	return nil
}

// adoptPushedHead points HEAD at a branch the push created when the
// branch HEAD names does not exist: the configured default if it was
// pushed, else main, else master, else the first branch of the push.
func (f *Forge) adoptPushedHead(ctx context.Context, r *RepoInfo, dir string, updates []gitproto.RefUpdate) error {
	var created []string
	for _, u := range updates {
		if b, ok := strings.CutPrefix(u.Ref, "refs/heads/"); ok && u.IsCreate() {
			created = append(created, b)
		}
	}
	if len(created) == 0 {
		return nil
	}
	head, err := ReadHead(dir)
	if err == nil && branchExists(dir, head) {
		return nil
	}
	pick := created[0]
	for _, want := range []string{head, "main", "master"} {
		if i := indexOf(created, want); i >= 0 {
			pick = created[i]
			break
		}
	}
	return f.setDefaultBranch(ctx, r, dir, pick)
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// isObjectID reports whether s is a full SHA-1 or SHA-256 object id.
func isObjectID(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	return strings.Trim(s, "0123456789abcdefABCDEF") == ""
}

func protected(branch string, patterns []string) bool {
	for _, pat := range patterns {
		if ok, _ := path.Match(pat, branch); ok {
			return true
		}
	}
	return false
}

// protectedPrefix returns the protected branch that ref is named under
// (ref "main/docs" is under "main"), or "".
func protectedPrefix(ref string, patterns []string) string {
	for i := 0; i < len(ref); i++ {
		if ref[i] == '/' && protected(ref[:i], patterns) {
			return ref[:i]
		}
	}
	return ""
}

// dirSize adds up the sizes of the files under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
