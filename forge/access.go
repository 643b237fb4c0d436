package forge

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/forgekit/forgekit/gitproto"
)

// Action is what a principal wants to do with a repository.
type Action int

// The actions, each implying the ones before.
const (
	ActionRead  Action = iota + 1 // browse, clone, fetch
	ActionWrite                   // push
	ActionAdmin                   // settings, collaborators, delete
)

// Principal is who makes a request: a user, and for token logins the
// token's scope. A nil *Principal is anonymous.
type Principal struct {
	User  *User
	Scope Scope // "" for a password login (everything the user may do)
}

var (
	// ErrForbidden is returned by Can when the principal sees the
	// repository but may not do the action.
	ErrForbidden = errors.New("forge: forbidden")
	// ErrLoginRequired is returned by Can to an anonymous principal that
	// needs to log in (for a private repository, indistinguishable from a
	// missing one).
	ErrLoginRequired = errors.New("forge: login required")
)

// Forge ties the repository store and the metadata together and makes the
// one access decision every entry point uses. Set its fields before use;
// it is then safe for concurrent use and must not be copied.
type Forge struct {
	Store *Store
	Meta  *Meta

	// Deliverer, if set, sends push events to the repositories' webhooks.
	Deliverer *Deliverer

	// OnPush listeners are called after every push that moved refs (the
	// server uses them to invalidate fragment caches and count activity).
	OnPush []func(ctx context.Context, ev PushEvent)

	// A git client sends its password with every request of a clone or
	// push, and an argon2id check costs about 27 ms and 19 MiB here, so a
	// successful password login is remembered for loginCacheTTL, keyed by
	// a SHA-256 of name and password (the password itself is not kept).
	authMu    sync.Mutex // guards authCache
	authCache map[[32]byte]cachedLogin
}

const (
	loginCacheTTL = time.Minute
	loginCacheMax = 4096
)

type cachedLogin struct {
	user    *User
	expires time.Time
}

// Can decides whether p may do a on owner/name. Private repositories (and
// missing ones) are ErrNotFound to anyone who may not read them, or
// ErrLoginRequired when anonymous, so that nobody learns they exist.
func (f *Forge) Can(ctx context.Context, p *Principal, owner, name string, a Action) error {
	_, _, err := f.Access(ctx, p, owner, name, a)
	return err
}

// Access is Can that also returns, when p may do a, the repository's
// metadata and the most p may do with it, so that a page deciding
// several things (read it, show its settings link) asks the database
// once.
func (f *Forge) Access(ctx context.Context, p *Principal, owner, name string, a Action) (*RepoInfo, Action, error) {
	r, err := f.Meta.RepoInfo(ctx, owner, name)
	if errors.Is(err, ErrNotFound) {
		if p == nil {
			return nil, 0, ErrLoginRequired
		}
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	level := f.Level(ctx, p, r)
	switch {
	case level >= a:
		return r, level, nil
	case level == 0 && p == nil:
		return nil, 0, ErrLoginRequired
	case level == 0:
		return nil, 0, ErrNotFound
	case p == nil:
		return nil, 0, ErrLoginRequired
	}
	return nil, 0, ErrForbidden
}

// Level is the most p may do with the repository r (0: not even read
// it), for listings that hold the metadata already; Can and Access build
// on it.
func (f *Forge) Level(ctx context.Context, p *Principal, r *RepoInfo) Action {
	level := f.level(ctx, p, r)
	if p != nil && p.Scope == ScopeRead && level > ActionRead {
		level = ActionRead // a read token can do no more, whoever holds it
	}
	return level
}

// level is the highest action p may do on r (0: not even read).
func (f *Forge) level(ctx context.Context, p *Principal, r *RepoInfo) Action {
	var l Action
	if !r.Private {
		l = ActionRead
	}
	if p == nil || p.User == nil {
		return l
	}
	if p.User.Admin || strings.EqualFold(p.User.Name, r.Owner) {
		return ActionAdmin
	}
	c, err := f.Meta.Collaborator(ctx, r.ID, p.User.ID)
	if err != nil {
		return l
	}
	switch c {
	case LevelAdmin:
		return ActionAdmin
	case LevelWrite:
		return ActionWrite
	case LevelRead:
		return max(l, ActionRead)
	}
	return l
}

// Authenticate returns the principal of a request's HTTP Basic
// credentials: a user name and password, or any user name and an access
// token as the password. No credentials is anonymous (nil, nil).
func (f *Forge) Authenticate(r *http.Request) (*Principal, error) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return nil, nil
	}
	if strings.HasPrefix(pass, tokenPrefix) {
		u, scope, err := f.Meta.CheckToken(r.Context(), pass)
		if err != nil {
			return nil, err
		}
		return &Principal{User: u, Scope: scope}, nil
	}
	key := sha256.Sum256([]byte(strings.ToLower(user) + "\x00" + pass))
	now := time.Now()
	f.authMu.Lock()
	c, ok := f.authCache[key]
	f.authMu.Unlock()
	if ok && now.Before(c.expires) {
		return &Principal{User: c.user}, nil
	}
	u, err := f.Meta.CheckPassword(r.Context(), user, pass)
	if err != nil {
		return nil, err
	}
	f.authMu.Lock()
	if f.authCache == nil || len(f.authCache) >= loginCacheMax {
		f.authCache = make(map[[32]byte]cachedLogin) // crude, bounded: start over
	}
	f.authCache[key] = cachedLogin{user: u, expires: now.Add(loginCacheTTL)}
	f.authMu.Unlock()
	return &Principal{User: u}, nil
}

func splitRepo(repo string) (owner, name string, ok bool) {
	owner, name, ok = strings.Cut(strings.TrimSuffix(repo, ".git"), "/")
	return owner, name, ok && !strings.Contains(name, "/")
}

// GitHandler returns a gitproto.Handler serving the forge's repositories
// with its access rules: anonymous clone of public repositories, Basic
// authentication (password or token) for the rest, push-to-create into
// one's own namespace (private by default), and protected branches that
// refuse force-pushes and deletion. The caller may set more fields
// (caches, admission, limits) before serving.
func (f *Forge) GitHandler() *gitproto.Handler {
	return &gitproto.Handler{
		Resolver: f.Store.Resolver(),
		Realm:    "forgekit",
		Authorizer: gitproto.AuthorizerFunc(func(r *http.Request, repo string, op gitproto.Op) (string, error) {
			owner, name, ok := splitRepo(repo)
			if !ok {
				return "", gitproto.ErrNotFound
			}
			p, err := f.Authenticate(r)
			if err != nil {
				return "", gitproto.ErrUnauthorized
			}
			a := ActionRead
			if op == gitproto.Write {
				a = ActionWrite
			}
			who := ""
			if p != nil {
				who = p.User.Name
			}
			err = f.Can(r.Context(), p, owner, name, a)
			switch {
			case err == nil:
				return who, nil
			case errors.Is(err, ErrLoginRequired):
				return "", gitproto.ErrUnauthorized
			case errors.Is(err, ErrNotFound) && a == ActionWrite && p != nil && strings.EqualFold(p.User.Name, owner) && p.Scope != ScopeRead:
				return who, nil // push-to-create into one's own namespace
			case errors.Is(err, ErrNotFound):
				return "", gitproto.ErrNotFound
			case errors.Is(err, ErrForbidden):
				return "", gitproto.ErrForbidden
			}
			return "", err
		}),
		OnMissingRepo: func(ctx context.Context, repo, principal string) (string, error) {
			owner, name, ok := splitRepo(repo)
			if !ok || !strings.EqualFold(owner, principal) {
				return "", gitproto.ErrNotFound
			}
			r, err := f.Store.Create(ctx, principal, name)
			if err != nil {
				return "", fmt.Errorf("%w: %v", gitproto.ErrNotFound, err)
			}
			if _, err := f.Meta.CreateRepoInfo(ctx, RepoInfo{Owner: r.Owner, Name: r.Name, Private: true}); err != nil {
				f.Store.Delete(ctx, r.Owner, r.Name)
				return "", err
			}
			return r.Dir, nil
		},
		PreReceive: func(ctx context.Context, p *gitproto.Push) error {
			owner, name, _ := splitRepo(p.Repo)
			r, err := f.Meta.RepoInfo(ctx, owner, name)
			if err != nil {
				return err
			}
			patterns, err := f.Meta.ProtectedBranches(ctx, r.ID)
			if err != nil {
				return err
			}
			for _, u := range p.Updates {
				branch, ok := strings.CutPrefix(u.Ref, "refs/heads/")
				if !ok || !protected(branch, patterns) || u.IsCreate() {
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
		},
		PostReceive: func(ctx context.Context, p *gitproto.Push) {
			owner, name, _ := splitRepo(p.Repo)
			r, err := f.Meta.RepoInfo(ctx, owner, name)
			if err != nil {
				return
			}
			now := time.Now()
			f.Meta.Pushed(ctx, r.ID, now, dirSize(p.Dir))
			ev := PushEvent{Repo: r.Owner + "/" + r.Name, Pusher: p.Principal, Updates: p.Updates, At: now.UTC()}
			for _, l := range f.OnPush {
				l(ctx, ev)
			}
			if f.Deliverer != nil {
				f.Deliverer.Push(ctx, r.ID, ev)
			}
		},
	}
}

func protected(branch string, patterns []string) bool {
	for _, pat := range patterns {
		if ok, _ := path.Match(pat, branch); ok {
			return true
		}
	}
	return false
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
