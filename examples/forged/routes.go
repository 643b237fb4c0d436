package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/klauspost/compress/gzhttp"

	"github.com/forgekit/forgekit/slowlog"
	"github.com/forgekit/forgekit/timebox"
)

// archiveTimeout bounds an archive request (a cold archive of a large
// repository takes a while; a page should not).
const archiveTimeout = 5 * time.Minute

// futureSegments are first path segments kept for pages to come (an
// API, search, organizations, ...): no user may take them now, or their
// pages would be unreachable later.
var futureSegments = []string{"api", "assets", "search", "user", "users", "org", "orgs", "repo", "repos", "help", "about", "raw", "archive", "info", "objects", "refs", "hooks", "trash"}

// pages are every page's route, declared once: the forge's own pages,
// whose first path segments are reserved (see reservedName), and the
// pages of owners and repositories, whose first segment is a wildcard.
// Metrics and time limits name routes by these patterns.
var pages = []struct {
	pattern string
	handler func(s *server) http.Handler
}{
	{"GET /{$}", func(s *server) http.Handler { return http.HandlerFunc(s.explore.explore) }},
	{"GET /explore", func(s *server) http.Handler { return http.HandlerFunc(s.explore.explore) }},
	{"GET /search", func(s *server) http.Handler { return http.HandlerFunc(s.explore.search) }},
	{"GET /login", func(s *server) http.Handler { return http.HandlerFunc(s.account.loginForm) }},
	{"POST /login", func(s *server) http.Handler { return http.HandlerFunc(s.account.login) }},
	{"GET /register", func(s *server) http.Handler { return http.HandlerFunc(s.account.registerForm) }},
	{"POST /register", func(s *server) http.Handler { return http.HandlerFunc(s.account.register) }},
	{"POST /logout", func(s *server) http.Handler { return http.HandlerFunc(s.account.logout) }},
	{"GET /new", func(s *server) http.Handler { return http.HandlerFunc(s.account.newForm) }},
	{"POST /new", func(s *server) http.Handler { return http.HandlerFunc(s.account.newRepo) }},
	{"GET /settings", func(s *server) http.Handler { return http.HandlerFunc(s.account.settings) }},
	{"POST /settings", func(s *server) http.Handler { return http.HandlerFunc(s.account.settingsPost) }},
	{"GET /admin/{$}", func(s *server) http.Handler { return http.HandlerFunc(s.admin.adminHome) }},
	{"POST /admin/{$}", func(s *server) http.Handler { return http.HandlerFunc(s.admin.adminPost) }},
	{"GET /admin/jobs", func(s *server) http.Handler { return s.adminOnly(http.HandlerFunc(s.admin.jobs)) }},
	{"POST /admin/jobs", func(s *server) http.Handler { return http.HandlerFunc(s.admin.jobsPost) }},
	{"GET /admin/slow/", func(s *server) http.Handler {
		return s.adminOnly(http.StripPrefix("/admin/slow", s.watchdog.ReportsHandler()))
	}},
	{"GET /admin/profiles/", func(s *server) http.Handler {
		return s.adminOnly(http.StripPrefix("/admin/profiles/", s.profiler.Handler()))
	}},
	{"GET /api/v1/user", func(s *server) http.Handler { return s.api.handle(s.api.me) }},
	{"POST /api/v1/user/repos", func(s *server) http.Handler { return s.api.handle(s.api.createRepo) }},
	{"GET /api/v1/users/{name}", func(s *server) http.Handler { return s.api.handle(s.api.user) }},
	{"GET /api/v1/users/{name}/repos", func(s *server) http.Handler { return s.api.handle(s.api.userRepos) }},
	{"GET /api/v1/repos/{owner}/{repo}", func(s *server) http.Handler { return s.api.handle(s.api.repo) }},
	{"GET /api/v1/repos/{owner}/{repo}/branches", func(s *server) http.Handler { return s.api.handle(s.api.branches) }},
	{"GET /api/v1/repos/{owner}/{repo}/tags", func(s *server) http.Handler { return s.api.handle(s.api.tags) }},
	{"GET /api/v1/repos/{owner}/{repo}/commits", func(s *server) http.Handler { return s.api.handle(s.api.commits) }},
	{"GET /api/v1/repos/{owner}/{repo}/commits/{sha}", func(s *server) http.Handler { return s.api.handle(s.api.commit) }},
	{"GET /api/v1/repos/{owner}/{repo}/contents/{path...}", func(s *server) http.Handler { return s.api.handle(s.api.contents) }},
	{"PUT /api/v1/repos/{owner}/{repo}/collaborators/{name}", func(s *server) http.Handler { return s.api.handle(s.api.collaborator) }},
	{"POST /api/v1/repos/{owner}/{repo}/hooks", func(s *server) http.Handler { return s.api.handle(s.api.createHook) }},
	{"/api/", func(s *server) http.Handler { return s.api.handle(s.api.notFound) }},
	{"GET /static/{file}", func(s *server) http.Handler { return http.HandlerFunc(s.static) }},
	{"GET /favicon.ico", func(s *server) http.Handler { return http.HandlerFunc(s.notFound) }},
	{"GET /robots.txt", func(s *server) http.Handler { return http.HandlerFunc(s.robots) }},
	{"GET /healthz", func(s *server) http.Handler { return http.HandlerFunc(s.ops.healthz) }},
	{"GET /readyz", func(s *server) http.Handler { return http.HandlerFunc(s.ops.readyz) }},
	{"GET /metrics", func(s *server) http.Handler { return s.ops.internal(s.metrics.handler()) }},

	{"GET /{owner}", func(s *server) http.Handler { return http.HandlerFunc(s.explore.userPage) }},
	{"GET /{owner}/{repo}", func(s *server) http.Handler { return http.HandlerFunc(s.repo.repoHome) }},
	{"GET /{owner}/{repo}/tree", func(s *server) http.Handler { return http.HandlerFunc(s.repo.treeRef) }},
	{"GET /{owner}/{repo}/tree/{rest...}", func(s *server) http.Handler { return http.HandlerFunc(s.repo.tree) }},
	{"GET /{owner}/{repo}/blob/{rest...}", func(s *server) http.Handler { return http.HandlerFunc(s.repo.blob) }},
	{"GET /{owner}/{repo}/blame/{rest...}", func(s *server) http.Handler { return http.HandlerFunc(s.repo.blame) }},
	{"GET /{owner}/{repo}/raw/{rest...}", func(s *server) http.Handler { return http.HandlerFunc(s.repo.raw) }},
	{"GET /{owner}/{repo}/commits/{rest...}", func(s *server) http.Handler { return http.HandlerFunc(s.repo.commits) }},
	{"GET /{owner}/{repo}/branches", func(s *server) http.Handler { return http.HandlerFunc(s.repo.branches) }},
	{"POST /{owner}/{repo}/branches", func(s *server) http.Handler { return http.HandlerFunc(s.repo.deleteBranch) }},
	{"GET /{owner}/{repo}/tags", func(s *server) http.Handler { return http.HandlerFunc(s.repo.tags) }},
	{"GET /{owner}/{repo}/tags.atom", func(s *server) http.Handler { return http.HandlerFunc(s.repo.tagsFeed) }},
	{"GET /{owner}/{repo}/compare", func(s *server) http.Handler { return http.HandlerFunc(s.repo.compareForm) }},
	{"GET /{owner}/{repo}/compare/{spec...}", func(s *server) http.Handler { return http.HandlerFunc(s.repo.compare) }},
	{"GET /{owner}/{repo}/commit/{sha}", func(s *server) http.Handler { return http.HandlerFunc(s.repo.commit) }},
	{"GET /{owner}/{repo}/archive/{rest...}", func(s *server) http.Handler { return http.HandlerFunc(s.repo.archive) }},
	{"GET /{owner}/{repo}/lastcommits/{rest...}", func(s *server) http.Handler { return http.HandlerFunc(s.repo.lastCommitsFragment) }},
	{"GET /{owner}/{repo}/search", func(s *server) http.Handler { return http.HandlerFunc(s.repo.repoSearch) }},
	{"GET /{owner}/{repo}/settings", func(s *server) http.Handler { return http.HandlerFunc(s.settings.repoSettings) }},
	{"POST /{owner}/{repo}/settings", func(s *server) http.Handler { return http.HandlerFunc(s.settings.repoSettingsPost) }},
}

// firstSegment is the first segment of a route pattern's path: a name
// ("login"), a wildcard ("{owner}"), or "{$}" for the root.
func firstSegment(pattern string) string {
	path := patternPath(pattern)
	first, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return first
}

// patternPath is a route pattern's path, without its method.
func patternPath(pattern string) string {
	if _, path, ok := strings.Cut(pattern, " "); ok {
		return path
	}
	return pattern
}

// reserved are the first path segments of the site's own pages and
// futureSegments.
var reserved = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range futureSegments {
		m[n] = true
	}
	for _, p := range pages {
		if first := firstSegment(p.pattern); first != "" && !strings.HasPrefix(first, "{") {
			m[first] = true
		}
	}
	return m
}()

// reservedName reports whether name is a first path segment of the
// site's own pages, which no user may take.
func reservedName(name string) bool { return reserved[strings.ToLower(name)] }

// routeTable is the site's routes: the forge's own pages, and the pages
// of owners and repositories.
type routeTable struct {
	site, repo *http.ServeMux
}

// mux is the mux that serves r's path.
func (t *routeTable) mux(r *http.Request) *http.ServeMux {
	first, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if first == "" || reservedName(first) {
		return t.site
	}
	return t.repo
}

// routes builds the handler: request ids and the access log outermost,
// then slowlog's watchdog, on-demand profiling and timebox's per-route
// limits (longer for a profiled request); then git traffic goes to gitproto and the rest, gzipped and
// guarded against cross-origin form posts, to the pages.
func (s *server) routes() http.Handler {
	t := &routeTable{site: http.NewServeMux(), repo: http.NewServeMux()}
	for _, p := range pages {
		mux := t.site
		if first := firstSegment(p.pattern); strings.HasPrefix(first, "{") && first != "{$}" {
			mux = t.repo
		}
		mux.Handle(p.pattern, p.handler(s))
	}
	s.table = t

	cop := http.NewCrossOriginProtection()
	site := gzhttp.GzipHandler(cop.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.mux(r).ServeHTTP(w, r)
	})))

	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if gitRequest(r) {
			s.gitFront.serveGit(w, r)
			return
		}
		site.ServeHTTP(w, r)
	})
	h = &timebox.Handler{
		Handler: h,
		Timeout: s.cfg.pageTimeout,
		Route:   s.route,
		TimeoutFor: func(r *http.Request) time.Duration {
			if slowlog.Profiled(r.Context()) {
				return s.cfg.profileTimeout // bounded, but outside the page's limit
			}
			switch rt := s.route(r); {
			case strings.HasPrefix(rt, "git "):
				return s.cfg.gitTimeout
			case rt == "/{owner}/{repo}/archive/{rest...}", rt == "/{owner}/{repo}/lastcommits/{rest...}":
				return archiveTimeout
			}
			return 0
		},
		OnExpire: func(r *http.Request, e *timebox.Expired) {
			slowlog.Capture(r.Context(), "time limit reached: "+e.Error())
		},
		Logger: s.log,
	}
	s.tbox = h.(*timebox.Handler)
	// The profiler outside the time limits, so that they know a profiled
	// request when they see one.
	h = s.profiler.Middleware(h)
	h = s.watchdog.Handler(h)
	return s.accessLog(h)
}

// unmatched is the route of requests no pattern serves: one label for
// all of them, so that random paths cannot add metric series.
const unmatched = "unmatched"

// route names r's route for logs, metrics, slow reports and time limits:
// the path of the mux pattern that serves it, "git SERVICE", or
// unmatched. Labels come from the patterns only: their number is fixed.
func (s *server) route(r *http.Request) string {
	if gitRequest(r) {
		p := r.URL.Path
		switch {
		case strings.HasSuffix(p, "/git-receive-pack"), r.URL.Query().Get("service") == "git-receive-pack":
			return "git push"
		case strings.HasSuffix(p, "/git-upload-pack"), strings.HasSuffix(p, "/info/refs"):
			return "git fetch"
		}
		return "git dumb"
	}
	if s.table == nil {
		return unmatched
	}
	_, pattern := s.table.mux(r).Handler(r)
	if pattern == "" {
		return unmatched
	}
	return patternPath(pattern)
}

// newRequestID returns 16 random hex digits.
func newRequestID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type requestIDKey struct{}

// requestID is the id accessLog gave the request.
func requestID(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey{}).(string)
	return id
}

// statusWriter records what a handler answered, for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush keeps streaming responses (git packs) streaming.
func (w *statusWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

// accessLog gives every request an id (a trusted proxy's, or a new one),
// echoes it in X-Request-Id, and logs one JSON line and the metrics when
// the request ends.
func (s *server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if id == "" || len(id) > 64 || !s.trusted(r) {
			id = newRequestID()
		}
		rt := s.route(r)
		// The request's work (queries, fragment lookups, renders, git
		// runs) is counted into work by whatever does it, through the
		// context; work it detaches keeps the context's values and
		// counts here too.
		work := &slowlog.Work{OnRepeat: func(rep slowlog.Repeat) { s.repeated(rt, rep) }}
		ctx := slowlog.WithWork(context.WithValue(r.Context(), requestIDKey{}, id), work)
		r = r.WithContext(ctx)
		w.Header().Set("X-Request-Id", id)
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		d := time.Since(start)
		t := work.Tally()
		s.metrics.observe(r.Method, rt, sw.status, d, sw.bytes)
		s.metrics.observeWork(rt, t)
		attrs := []slog.Attr{slog.String("id", id), slog.String("method", r.Method), slog.String("route", rt),
			slog.String("path", r.URL.Path), slog.Int("status", sw.status), slog.Int64("bytes", sw.bytes), slog.Float64("ms", ms(d))}
		attrs = append(attrs, workAttrs(t)...)
		attrs = append(attrs, slog.String("client", s.clientIP(r)), slog.String("agent", r.UserAgent()))
		s.log.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
	})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

// workAttrs are the log fields of a request's or a job's work.
func workAttrs(t slowlog.Tally) []slog.Attr {
	return []slog.Attr{slog.Int64("queries", t.Queries), slog.Float64("query_ms", ms(t.QueryTime)),
		slog.Int64("cache_lookups", t.CacheLookups), slog.Int64("renders", t.Renders),
		slog.Int64("git_runs", t.GitRuns), slog.Float64("git_ms", ms(t.GitTime)), slog.Int64("objects", t.Objects)}
}

// repeated logs work repeated within one request (an N+1), once per
// route and statement or key for the life of the process, with the
// stack of the call that crossed the limit.
func (s *server) repeated(route string, rep slowlog.Repeat) {
	key := route + "\x00" + rep.Kind.String() + "\x00" + rep.Key
	if _, seen := s.repeats.LoadOrStore(key, true); seen {
		return
	}
	s.log.Warn("repeated work in one request", "route", route, "kind", rep.Kind.String(), "count", rep.Count,
		"key", rep.Key, "stack", rep.String())
}
