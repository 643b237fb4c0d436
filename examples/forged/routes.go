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

	"github.com/forgekit/forgekit/slowlog"
	"github.com/forgekit/forgekit/timebox"
)

// archiveTimeout bounds an archive request (a cold archive of a large
// repository takes a while; a page should not).
const archiveTimeout = 5 * time.Minute

// siteSegments are the first path segments that are the forge's own
// pages; every other first segment is an owner. forge.CheckName reserves
// them all, so no owner can shadow them.
var siteSegments = map[string]bool{
	"": true, "explore": true, "login": true, "logout": true, "new": true,
	"settings": true, "admin": true, "static": true, "healthz": true,
	"readyz": true, "metrics": true, "favicon.ico": true, "robots.txt": true,
}

// routes builds the handler: request ids and the access log outermost,
// then slowlog's watchdog, timebox's per-route limits and on-demand
// profiling; then git traffic goes to gitproto and the rest, gzipped and
// guarded against cross-origin form posts, to the pages.
func (s *server) routes() http.Handler {
	site := http.NewServeMux()
	site.HandleFunc("GET /{$}", s.explore)
	site.HandleFunc("GET /explore", s.explore)
	site.HandleFunc("GET /login", s.loginForm)
	site.HandleFunc("POST /login", s.login)
	site.HandleFunc("POST /logout", s.logout)
	site.HandleFunc("GET /new", s.newForm)
	site.HandleFunc("POST /new", s.newRepo)
	site.HandleFunc("GET /settings", s.settings)
	site.HandleFunc("POST /settings", s.settingsPost)
	site.HandleFunc("GET /admin/{$}", s.adminHome)
	site.HandleFunc("POST /admin/{$}", s.adminPost)
	site.Handle("GET /admin/slow/", s.adminOnly(http.StripPrefix("/admin/slow", s.watchdog.ReportsHandler())))
	site.Handle("GET /admin/profiles/", s.adminOnly(http.StripPrefix("/admin/profiles/", s.profiler.Handler())))
	site.HandleFunc("GET /static/{file}", s.static)
	site.HandleFunc("GET /robots.txt", s.robots)
	site.HandleFunc("GET /healthz", s.healthz)
	site.HandleFunc("GET /readyz", s.readyz)
	site.Handle("GET /metrics", s.internal(s.metrics.handler()))

	repo := http.NewServeMux()
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

	cop := http.NewCrossOriginProtection()
	pages := gzhttp.GzipHandler(cop.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		first, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		if siteSegments[first] {
			site.ServeHTTP(w, r)
			return
		}
		repo.ServeHTTP(w, r)
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
		TimeoutFor: func(r *http.Request) time.Duration {
			switch rt := route(r); {
			case strings.HasPrefix(rt, "git "):
				return s.cfg.gitTimeout
			case rt == "/{owner}/{repo}/archive", rt == "/{owner}/{repo}/lastcommits":
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
// login is limited: a client address whose Basic-auth attempts failed
// loginBurst times gets 429 without its credentials being checked (each
// check costs an argon2id hash) until its limiter refills. Successes
// cost nothing; a git client's first, credential-less request is not an
// attempt.
func (s *server) serveGit(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := r.BasicAuth(); !ok {
		s.git.ServeHTTP(w, r)
		return
	}
	key := "git:" + s.clientIP(r)
	if s.logins.exhausted(key) {
		w.Header().Set("Retry-After", strconv.Itoa(int(loginEvery.Seconds())))
		http.Error(w, "too many failed logins from your address; try again later", http.StatusTooManyRequests)
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	s.git.ServeHTTP(sw, r)
	if sw.status == http.StatusUnauthorized {
		s.logins.allow(key) // a failure: take a token
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

// route names r's route for logs, metrics, slow reports and time limits:
// a mux pattern without the method, or "git SERVICE".
func route(r *http.Request) string {
	p := r.URL.Path
	if gitRequest(r) {
		switch {
		case strings.HasSuffix(p, "/git-receive-pack"), r.URL.Query().Get("service") == "git-receive-pack":
			return "git push"
		case strings.HasSuffix(p, "/git-upload-pack"), strings.HasSuffix(p, "/info/refs"):
			return "git fetch"
		}
		return "git dumb"
	}
	parts := strings.SplitN(strings.TrimPrefix(p, "/"), "/", 4)
	if siteSegments[parts[0]] {
		if parts[0] == "" {
			return "/"
		}
		if len(parts) > 1 && parts[0] == "admin" && parts[1] != "" {
			return "/admin/" + parts[1]
		}
		return "/" + parts[0]
	}
	switch len(parts) {
	case 1:
		return "/{owner}"
	case 2:
		return "/{owner}/{repo}"
	}
	return "/{owner}/{repo}/" + parts[2]
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
		rt := route(r)
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
