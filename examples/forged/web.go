package main

import (
	"errors"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/forgekit/forgekit/counting"
	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/slowlog"
	"github.com/forgekit/forgekit/viewcache"
)

// The handlers are grouped by area, each group a type holding what its
// pages use: the site (what every page shares), repository pages,
// repository settings, the account's pages, explore and user pages, the
// administrator's pages, git, and operations. server assembles them
// (server.go) and routes to them (routes.go).

// site is what every page shares: the templates and the fragment cache,
// sessions and CSRF tokens, the client's address, and the forge. Its
// methods render, fail and guard pages. It is safe for concurrent use.
type site struct {
	cfg         *config
	log         *slog.Logger
	forge       *forge.Forge
	cache       *viewcache.Cache
	viewlets    *viewcache.Viewlets           // fragments rendered through the cache
	key         []byte                        // signs sessions and CSRF tokens
	pageSets    map[string]*template.Template // by page name: layout, fragments and the page
	fragments   *template.Template            // layout and fragments only
	assets      *assets
	pageBuffers sync.Pool // *bytes.Buffer, see putPageBuffer
	sshPort     int       // of -ssh-addr, set before serving; 0 without
}

// repoPages are a repository's pages: home, trees, files, history,
// commits, archives.
type repoPages struct {
	*site
	browsers    *forge.Browsers
	lastCommits *forge.LastCommitCache
	archiver    *forge.Archiver
	views       *counting.Counter
	blames      *fills // blames that outlast a page's budget
	code        *codeIndex

	// pageBudget is how long a page waits for the last commits of a
	// directory. If zero, lastCommitBudget.
	pageBudget time.Duration
}

// repoSettings are a repository's settings, and what changes to a
// repository (settings, pushes) make the caches drop.
type repoSettings struct {
	*site
	browsers *forge.Browsers
	purger   *purger
	code     *codeIndex
}

// accountPages are signing in and out, one's settings and new
// repositories.
type accountPages struct {
	*site
	logins   *loginLimiter
	profiler *slowlog.Profiler
}

// explorePages list repositories: the site's and a user's.
type explorePages struct {
	*site
	views *counting.Counter
	code  *codeIndex

	// every is how long the explore lists are reused. If zero,
	// defaultExploreEvery.
	every time.Duration
}

// adminPages are the site administrator's.
type adminPages struct {
	*site
	profiler *slowlog.Profiler
	watchdog *slowlog.Watchdog
	maint    *forge.Maintainer
	queue    *queue
	stats    func() string // every component's counters
}

// gitFront is git traffic: login limits in front of forge's handler.
type gitFront struct {
	*site
	git    *gitproto.Handler
	logins *loginLimiter
}

// apiPages are the JSON API (api.go).
type apiPages struct {
	*site
	pages    *repoPages // shares its cached lists
	browsers *forge.Browsers
	logins   *loginLimiter
}

// ops are the operators' endpoints: health, readiness, metrics.
type ops struct {
	*site
	mc      *memcache.Client
	metrics *metrics
}

// openRepo checks that the request may do a on the repository of its
// URL. Whoever may not read it gets 404, as if it did not exist; a reader
// who may not do more gets 404 for the pages that need more too, except
// that an anonymous visitor of a public repository is sent to sign in.
func (s *site) openRepo(w http.ResponseWriter, r *http.Request, a forge.Action, tab string) (*http.Request, *session, *repoView, bool) {
	r, sess := s.withSession(r)
	ctx := r.Context()
	owner, name := r.PathValue("owner"), strings.TrimSuffix(r.PathValue("repo"), ".git")
	p := principal(sess)
	info, level, err := s.forge.Access(ctx, p, owner, name, a)
	if err != nil {
		if a > forge.ActionRead && sess == nil && s.forge.Can(ctx, nil, owner, name, forge.ActionRead) == nil {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return r, nil, nil, false
		}
		if !errors.Is(err, forge.ErrNotFound) && !errors.Is(err, forge.ErrLoginRequired) && !errors.Is(err, forge.ErrForbidden) {
			s.fail(w, r, err)
			return r, nil, nil, false
		}
		s.notFound(w, r)
		return r, nil, nil, false
	}
	repo, err := s.forge.Store.Get(info.Owner, info.Name)
	if err != nil {
		s.notFound(w, r)
		return r, nil, nil, false
	}
	rv := &repoView{
		Info:     info,
		Base:     "/" + info.Owner + "/" + info.Name,
		CloneURL: s.baseURL(r) + "/" + info.Owner + "/" + info.Name + ".git",
		SSHURL:   s.sshURL(r, info.Owner+"/"+info.Name+".git"),
		Tab:      tab,
		CanAdmin: level >= forge.ActionAdmin,
		CanWrite: level >= forge.ActionWrite,
		dir:      repo.Dir,
		key:      strings.ToLower(info.Owner + "/" + info.Name),
	}
	return r, sess, rv, true
}

// trusted reports whether the direct peer of r is a trusted proxy.
func (s *site) trusted(r *http.Request) bool {
	if len(s.cfg.trustedProxies) == 0 {
		return false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return s.trustedAddr(a.Unmap())
}

func (s *site) trustedAddr(a netip.Addr) bool {
	for _, p := range s.cfg.trustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientIP is the address of the client: the peer, or behind trusted
// proxies the last address in X-Forwarded-For that is not one of them.
func (s *site) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if !s.trusted(r) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		if !s.trustedAddr(a.Unmap()) {
			return a.Unmap().String()
		}
	}
	return host
}
