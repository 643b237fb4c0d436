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
	level := f.Allowed(ctx, p, r)
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

// Allowed is the most p may do with the repository r (0: not even read
// it), for listings that hold the metadata already; Can and Access build
// on it. (A collaborator's Level is one input: the owner, site
// administrators and public visibility are the others.)
func (f *Forge) Allowed(ctx context.Context, p *Principal, r *RepoInfo) Action {
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
	if p.User.Admin || (r.OwnerID != 0 && p.User.ID == r.OwnerID) {
		return ActionAdmin // ownership is by user id: a new user of a deleted user's name owns nothing
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

// Authenticate returns the principal of a request's credentials: an
// access token in an "Authorization: token T" or "Bearer T" header (as
// GitHub's API clients send it), or HTTP Basic with a user name and
// password, or any user name and a token as the password. No
// credentials is anonymous (nil, nil). Wrong
// credentials are ErrBadCredentials; other errors (a database that does
// not answer, too many password checks at once) are not the client's
// fault and must not count as failed logins.
//
// A git client sends its password with every request of a clone or push,
// and an argon2id check costs about 27 ms and 19 MiB, so a password that
// was right is remembered for loginCacheTTL, keyed by a SHA-256 of name
// and password: a remembered login still reads the user (one query), so
// that a deleted or demoted user, or a changed password, takes effect at
// once.
func (f *Forge) Authenticate(r *http.Request) (*Principal, error) {
	ctx := r.Context()
	if tok, ok := headerToken(r); ok {
		u, scope, err := f.Meta.CheckToken(ctx, tok)
		if err != nil {
			return nil, err
		}
		return &Principal{User: u, Scope: scope}, nil
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return nil, nil
	}
	if IsToken(pass) {
		u, scope, err := f.Meta.CheckToken(ctx, pass)
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
		u, err := f.Meta.UserByID(ctx, c.id)
		switch {
		case err == nil && u.Stamp == c.stamp && !u.Disabled:
			return &Principal{User: u}, nil
		case err != nil && !errors.Is(err, ErrNoUser):
			return nil, err
		}
		f.forgetLogins() // deleted, disabled, or the password changed: check again
	}
	u, err := f.CheckPassword(ctx, user, pass)
	if err != nil {
		return nil, err
	}
	f.authMu.Lock()
	if f.authCache == nil || len(f.authCache) >= loginCacheMax {
		f.authCache = make(map[[32]byte]cachedLogin) // crude, bounded: start over
	}
	f.authCache[key] = cachedLogin{id: u.ID, stamp: u.Stamp, expires: now.Add(loginCacheTTL)}
	f.authMu.Unlock()
	return &Principal{User: u}, nil
}

// headerToken is the token of an "Authorization: token T" or "Bearer T"
// header, as GitHub's clients send them.
func headerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !(strings.EqualFold(scheme, "token") || strings.EqualFold(scheme, "bearer")) {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// CheckPassword returns the user if password is theirs (ErrBadCredentials
// if not), with at most MaxPasswordChecks argon2id hashes at once: each
// takes 19 MiB and tens of milliseconds, and guessers send many at once.
// A check that cannot start before ctx ends fails with
// ErrTooManyPasswordChecks.
func (f *Forge) CheckPassword(ctx context.Context, name, password string) (*User, error) {
	f.checksOnce.Do(func() {
		n := f.MaxPasswordChecks
		if n <= 0 {
			n = DefaultMaxPasswordChecks
		}
		f.checks = make(chan struct{}, n)
	})
	wait := time.NewTimer(passwordCheckWait)
	defer wait.Stop()
	select {
	case f.checks <- struct{}{}:
	case <-ctx.Done():
		return nil, ErrTooManyPasswordChecks
	case <-wait.C:
		return nil, ErrTooManyPasswordChecks
	}
	defer func() { <-f.checks }()
	return f.Meta.CheckPassword(ctx, name, password)
}

// passwordCheckWait bounds the wait for a password check to start.
const passwordCheckWait = 5 * time.Second

// forgetLogins drops the remembered password logins.
func (f *Forge) forgetLogins() {
	f.authMu.Lock()
	f.authCache = nil
	f.authMu.Unlock()
}
