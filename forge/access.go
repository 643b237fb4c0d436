package forge

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"
	"time"
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
