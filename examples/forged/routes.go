package main

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/gzhttp"

	"github.com/forgekit/forgekit/forge"
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

// sitePages are the forge's own pages. Their first path segments are
// reserved (see reservedName): no user may take them.
var sitePages = []struct {
	pattern string
	handler func(s *server) http.Handler
}{
	{"GET /{$}", func(s *server) http.Handler { return http.HandlerFunc(s.explore) }},
	{"GET /explore", func(s *server) http.Handler { return http.HandlerFunc(s.explore) }},
	{"GET /login", func(s *server) http.Handler { return http.HandlerFunc(s.loginForm) }},
	{"POST /login", func(s *server) http.Handler { return http.HandlerFunc(s.login) }},
	{"POST /logout", func(s *server) http.Handler { return http.HandlerFunc(s.logout) }},
	{"GET /new", func(s *server) http.Handler { return http.HandlerFunc(s.newForm) }},
	{"POST /new", func(s *server) http.Handler { return http.HandlerFunc(s.newRepo) }},
	{"GET /settings", func(s *server) http.Handler { return http.HandlerFunc(s.settings) }},
	{"POST /settings", func(s *server) http.Handler { return http.HandlerFunc(s.settingsPost) }},
	{"GET /admin/{$}", func(s *server) http.Handler { return http.HandlerFunc(s.adminHome) }},
	{"POST /admin/{$}", func(s *server) http.Handler { return http.HandlerFunc(s.adminPost) }},
	{"GET /admin/slow/", func(s *server) http.Handler {
		return s.adminOnly(http.StripPrefix("/admin/slow", s.watchdog.ReportsHandler()))
	}},
	{"GET /admin/profiles/", func(s *server) http.Handler {
		return s.adminOnly(http.StripPrefix("/admin/profiles/", s.profiler.Handler()))
	}},
	{"GET /static/{file}", func(s *server) http.Handler { return http.HandlerFunc(s.static) }},
	{"GET /favicon.ico", func(s *server) http.Handler { return http.HandlerFunc(s.notFound) }},
	{"GET /robots.txt", func(s *server) http.Handler { return http.HandlerFunc(s.robots) }},
	{"GET /healthz", func(s *server) http.Handler { return http.HandlerFunc(s.healthz) }},
	{"GET /readyz", func(s *server) http.Handler { return http.HandlerFunc(s.readyz) }},
	{"GET /metrics", func(s *server) http.Handler { return s.internal(s.metrics.handler()) }},
}

// reserved are the first path segments of sitePages and futureSegments.
var reserved = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range futureSegments {
		m[n] = true
	}
	for _, p := range sitePages {
		_, path, _ := strings.Cut(p.pattern, " ")
		if first, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/"); first != "" && first != "{$}" {
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
// then slowlog's watchdog, timebox's per-route limits and on-demand
// profiling; then git traffic goes to gitproto and the rest, gzipped and
// guarded against cross-origin form posts, to the pages.
func (s *server) routes() http.Handler {
	t := &routeTable{site: http.NewServeMux(), repo: http.NewServeMux()}
	for _, p := range sitePages {
		t.site.Handle(p.pattern, p.handler(s))
	}

	repo := t.repo
	repo.HandleFunc("GET /{owner}", s.userPage)
	repo.HandleFunc("GET /{owner}/{repo}", s.repoHome)
	repo.HandleFunc("GET /{owner}/{repo}/tree", s.treeRef)
	repo.HandleFunc("GET /{owner}/{repo}/tree/{rest...}", s.tree)
	repo.HandleFunc("GET /{owner}/{repo}/blob/{rest...}", s.blob)
	repo.HandleFunc("GET /{owner}/{repo}/raw/{rest...}", s.raw)
	repo.HandleFunc("GET /{owner}/{repo}/commits/{rest...}", s.commits)
	repo.HandleFunc("GET /{owner}/{repo}/commit/{sha}", s.commit)
	repo.HandleFunc("GET /{owner}/{repo}/archive/{rest...}", s.archive)
	repo.HandleFunc("GET /{owner}/{repo}/lastcommits/{rest...}", s.lastCommitsFragment)
	repo.HandleFunc("GET /{owner}/{repo}/settings", s.repoSettings)
	repo.HandleFunc("POST /{owner}/{repo}/settings", s.repoSettingsPost)
	s.table = t

	cop := http.NewCrossOriginProtection()
	pages := gzhttp.GzipHandler(cop.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.mux(r).ServeHTTP(w, r)
	})))

	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if gitRequest(r) {
			s.serveGit(w, r)
			return
		}
		pages.ServeHTTP(w, r)
	})
	h = s.profiler.Middleware(h)
	h = &timebox.Handler{
		Handler: h,
		Timeout: s.cfg.pageTimeout,
		Route:   s.route,
		TimeoutFor: func(r *http.Request) time.Duration {
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
	h = s.watchdog.Handler(h)
	return s.accessLog(h)
}

// serveGit serves git traffic, limiting failed logins the way the web
// login is limited (see loginLimiter): per client address, and for
// passwords per account. Each attempt is taken before the credentials
// are checked (each check costs an argon2id hash) and given back if they
// were right or could not be judged (503); a git client's first,
// credential-less request is not an attempt.
func (s *server) serveGit(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		s.git.ServeHTTP(w, r)
		return
	}
	account := user
	if forge.IsToken(pass) {
		account = "" // tokens are not guessable; the address's limit is enough
	}
	a, ok := s.logins.begin(s.clientIP(r), account)
	if !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(loginEvery.Seconds())))
		http.Error(w, "too many failed logins; try again later", http.StatusTooManyRequests)
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	s.git.ServeHTTP(sw, r)
	switch sw.status {
	case http.StatusUnauthorized:
		a.failed()
	case http.StatusServiceUnavailable:
		a.undecided()
	default:
		a.succeeded()
	}
}

// gitRequest reports whether r is Git smart or dumb HTTP: the three smart
// endpoints under /OWNER/REPO[.git], or any file under /OWNER/REPO.git/.
func gitRequest(r *http.Request) bool {
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 3)
	if len(parts) < 3 {
		return false
	}
	switch parts[2] {
	case "info/refs", "git-upload-pack", "git-receive-pack":
		return true
	}
	return strings.HasSuffix(parts[1], ".git")
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
	_, p, _ := strings.Cut(pattern, " ")
	return p
}

// newRequestID returns 16 random hex digits.
func newRequestID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// requestID is the id accessLog put on the request.
func requestID(r *http.Request) string { return r.Header.Get("X-Request-Id") }

// trusted reports whether the direct peer of r is a trusted proxy.
func (s *server) trusted(r *http.Request) bool {
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

func (s *server) trustedAddr(a netip.Addr) bool {
	for _, p := range s.cfg.trustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientIP is the address of the client: the peer, or behind trusted
// proxies the last address in X-Forwarded-For that is not one of them.
func (s *server) clientIP(r *http.Request) string {
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
		r.Header.Set("X-Request-Id", id)
		w.Header().Set("X-Request-Id", id)
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		d := time.Since(start)
		rt := s.route(r)
		s.metrics.observe(r.Method, rt, sw.status, d, sw.bytes)
		s.log.Info("request", "id", id, "method", r.Method, "route", rt, "path", r.URL.Path,
			"status", sw.status, "bytes", sw.bytes, "ms", float64(d.Microseconds())/1e3,
			"client", s.clientIP(r), "agent", r.UserAgent())
	})
}

// internal lets through loopback clients, trusted proxies and site
// administrators; others get 404. Metrics say more about the site than
// its visitors need to know.
func (s *server) internal(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a, err := netip.ParseAddr(s.clientIP(r)); err == nil && (a.IsLoopback() || s.trustedAddr(a)) {
			h.ServeHTTP(w, r)
			return
		}
		s.adminOnly(h).ServeHTTP(w, r)
	})
}
