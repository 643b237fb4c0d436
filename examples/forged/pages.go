package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/forgekit/forgekit/forge"
)

// page is what the layout renders around a page's content.
type page struct {
	Title        string
	Flash, Error string
	User         *forge.User
	CSRF         string
	CSS, JS      string
	Repo         *repoView
	Data         any

	spliced [][]byte // large fragments, written in place of their markers
}

// splice is a large rendered fragment (a file list, a file, a diff) that
// render writes into the page as it is: the template writes a marker for
// it, so that its bytes are neither turned into a string nor copied
// through fmt, which html/template does to every value (a warm page of
// git/git's root spent most of its time and memory there).
type splice []byte

// spliceMark is what the template writes for the i-th splice. Nothing a
// visitor controls reaches a page unescaped, so "<!--" comes only from
// the templates themselves.
func spliceMark(i int) string { return "<!--forged:splice:" + strconv.Itoa(i) + "-->" }

func (p *page) splice(b splice) template.HTML {
	p.spliced = append(p.spliced, b)
	return template.HTML(spliceMark(len(p.spliced) - 1))
}

// securityHeaders go on every HTML page: no framing, no sniffing, and a
// policy that allows only this site's own scripts and styles (README
// HTML is sanitized by the renderer; this is the second line).
func securityHeaders(h http.Header) {
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Add("Vary", "Cookie")
}

// render writes the page called name. Pages that set their own
// Cache-Control (the repository pages) keep it; others are not cached.
func (s *server) render(w http.ResponseWriter, r *http.Request, sess *session, status int, name string, p *page) {
	if sess != nil {
		p.User = sess.user
		p.CSRF = s.csrfToken(sess)
	}
	p.CSS, p.JS = s.assets.urls["style.css"], s.assets.urls["forged.js"]
	buf, _ := s.pageBuffers.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	defer s.putPageBuffer(buf)
	if err := s.pageSets[name].ExecuteTemplate(buf, "layout", p); err != nil {
		s.fail(w, r, fmt.Errorf("template %s: %w", name, err))
		return
	}
	h := w.Header()
	securityHeaders(h)
	if h.Get("Cache-Control") == "" {
		if sess != nil {
			h.Set("Cache-Control", "private, no-store")
		} else {
			h.Set("Cache-Control", "no-cache")
		}
	}
	// The page, with each splice in place of its marker.
	out := buf.Bytes()
	var parts [][]byte
	n := 0
	for i, b := range p.spliced {
		mark := spliceMark(i)
		j := bytes.Index(out, []byte(mark))
		if j < 0 {
			continue
		}
		parts = append(parts, out[:j], b)
		n += j + len(b)
		out = out[j+len(mark):]
	}
	parts = append(parts, out)
	n += len(out)
	h.Set("Content-Length", strconv.Itoa(n))
	w.WriteHeader(status)
	for _, part := range parts {
		if _, err := w.Write(part); err != nil {
			return
		}
	}
}

// putPageBuffer keeps a page's buffer for the next page: a page of a
// large directory is a few hundred kilobytes, and growing a new buffer
// for each one was a fifth of a warm page's time.
func (s *server) putPageBuffer(b *bytes.Buffer) {
	if b.Cap() > 4<<20 {
		return // an unusual page; let it go
	}
	b.Reset()
	s.pageBuffers.Put(b)
}

// fragment renders one of the fragments' templates.
func (s *server) fragment(name string, data any) ([]byte, error) {
	var buf bytes.Buffer
	if err := s.fragments.ExecuteTemplate(&buf, name, data); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// cached returns a viewlet from the fragment cache, rendering it with the
// fragment template name and the data load returns when it is missing.
func (s *server) cached(ctx context.Context, key string, deps []string, name string, load func(ctx context.Context) (any, error)) (template.HTML, error) {
	b, err := s.cachedSplice(ctx, key, deps, name, load)
	return template.HTML(b), err
}

// cachedSplice is cached for large fragments, which render splices into
// the page.
func (s *server) cachedSplice(ctx context.Context, key string, deps []string, name string, load func(ctx context.Context) (any, error)) (splice, error) {
	return s.cache.GetOrRender(ctx, key, deps, func(ctx context.Context) ([]byte, error) {
		data, err := load(ctx)
		if err != nil {
			return nil, err
		}
		return s.fragment(name, data)
	})
}

func (s *server) notFound(w http.ResponseWriter, r *http.Request) {
	_, sess := s.withSession(r)
	w.Header().Del("Cache-Control")
	s.render(w, r, sess, http.StatusNotFound, "error", &page{Title: "Not found", Data: "There is nothing here, or you may not see it."})
}

// fail answers 500 and logs err; after the request's time limit it writes
// nothing, since timebox answers (503) or cuts the response itself.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	s.log.Error("page failed", "id", requestID(r), "path", r.URL.Path, "err", err)
	w.Header().Del("Cache-Control")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, "Something went wrong (request %s).\n", requestID(r))
}

// redirect answers a form post with 303 See Other.
func redirect(w http.ResponseWriter, r *http.Request, to string) {
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// requireLogin sends anonymous visitors to the login page.
func (s *server) requireLogin(w http.ResponseWriter, r *http.Request) (*http.Request, *session, bool) {
	r, sess := s.withSession(r)
	if sess == nil {
		http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return r, nil, false
	}
	return r, sess, true
}

// post checks a signed-in form post: the session and its CSRF token.
func (s *server) post(w http.ResponseWriter, r *http.Request) (*http.Request, *session, bool) {
	r, sess := s.withSession(r)
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if sess == nil {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return r, nil, false
	}
	if !s.checkCSRF(r, sess) {
		http.Error(w, "invalid or missing CSRF token; reload the form and try again", http.StatusForbidden)
		return r, nil, false
	}
	return r, sess, true
}

// Explore.

const defaultExploreEvery = 30 * time.Second

type exploreRepo struct {
	Owner, Name, Description string
	Views                    int64
	Pushed                   time.Time
}

type exploreSection struct {
	Title string
	Repos []exploreRepo
}

func (s *server) explore(w http.ResponseWriter, r *http.Request) {
	r, sess := s.withSession(r)
	every := s.exploreEvery
	if every <= 0 {
		every = defaultExploreEvery
	}
	// The lists are public and the same for everyone: one fragment per
	// period of every, invalidated by pushes and visibility changes.
	slot := time.Now().UnixNano() / int64(every)
	html, err := s.cached(r.Context(), fmt.Sprintf("explore|%d|%d", every, slot), []string{"explore"}, "explorelist", s.exploreLists)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, sess, http.StatusOK, "explore", &page{Title: "Explore", Data: html})
}

// exploreLists ranks the public repositories by views today, this week
// and in all time (counting), and by the latest push.
func (s *server) exploreLists(ctx context.Context) (any, error) {
	now := time.Now().UTC()
	end := now.Add(time.Hour)
	var out struct{ Sections []exploreSection }
	for _, p := range []struct {
		title string
		from  time.Time
	}{
		{"Most viewed today", now.Truncate(24 * time.Hour)},
		{"Most viewed this week", now.Add(-7 * 24 * time.Hour)},
		{"Most viewed of all time", time.Unix(0, 0)},
	} {
		// Ask for more than shown: private repositories are left out.
		top, err := s.views.MostViewed(ctx, p.from, end, 30)
		if err != nil {
			return nil, err
		}
		sec := exploreSection{Title: p.title}
		for _, e := range top {
			owner, name, _ := strings.Cut(e.ID, "/")
			info, err := s.forge.Meta.RepoInfo(ctx, owner, name)
			if err != nil || info.Private {
				continue
			}
			sec.Repos = append(sec.Repos, exploreRepo{Owner: info.Owner, Name: info.Name, Description: info.Description, Views: e.N})
			if len(sec.Repos) == 10 {
				break
			}
		}
		out.Sections = append(out.Sections, sec)
	}
	recent, err := s.forge.Meta.Repos(ctx, forge.RepoQuery{PublicOnly: true, Limit: 10})
	if err != nil {
		return nil, err
	}
	sec := exploreSection{Title: "Recently pushed"}
	for _, r := range recent {
		sec.Repos = append(sec.Repos, exploreRepo{Owner: r.Owner, Name: r.Name, Description: r.Description, Pushed: r.PushedAt})
	}
	out.Sections = append(out.Sections, sec)
	return out, nil
}

// User page.

func (s *server) userPage(w http.ResponseWriter, r *http.Request) {
	r, sess := s.withSession(r)
	owner := r.PathValue("owner")
	u, err := s.forge.Meta.User(r.Context(), owner)
	if err != nil {
		s.notFound(w, r)
		return
	}
	all, err := s.forge.Meta.Repos(r.Context(), forge.RepoQuery{Owner: u.Name, Limit: 1000})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var visible []forge.RepoInfo
	for _, ri := range all {
		if !ri.Private || s.forge.Level(r.Context(), principal(sess), &ri) >= forge.ActionRead {
			visible = append(visible, ri)
		}
	}
	s.render(w, r, sess, http.StatusOK, "user", &page{Title: u.Name, Data: struct {
		Name  string
		Repos []forge.RepoInfo
	}{u.Name, visible}})
}

// Sign in and out.

func (s *server) loginForm(w http.ResponseWriter, r *http.Request) {
	r, sess := s.withSession(r)
	if sess != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.render(w, r, nil, http.StatusOK, "login", &page{Title: "Sign in", Data: loginData{Next: localPath(r.URL.Query().Get("next"))}})
}

type loginData struct{ Name, Next string }

func (s *server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	name, pass := r.PostFormValue("name"), r.PostFormValue("password")
	data := loginData{Name: name, Next: localPath(r.PostFormValue("next"))}
	a, ok := s.logins.begin(s.clientIP(r), name)
	if !ok {
		w.Header().Set("Retry-After", fmt.Sprint(int(loginEvery.Seconds())))
		s.render(w, r, nil, http.StatusTooManyRequests, "login", &page{Title: "Sign in", Error: "Too many attempts; wait a few seconds and try again.", Data: data})
		return
	}
	u, err := s.forge.CheckPassword(r.Context(), name, pass)
	if err != nil {
		if !errors.Is(err, forge.ErrBadCredentials) {
			// Not the visitor's failure: nothing counted, try later.
			a.undecided()
			s.log.Error("login", "id", requestID(r), "err", err)
			w.Header().Set("Retry-After", "5")
			s.render(w, r, nil, http.StatusServiceUnavailable, "login", &page{Title: "Sign in", Error: "Signing in is not possible right now; try again in a moment.", Data: data})
			return
		}
		a.failed()
		s.render(w, r, nil, http.StatusUnauthorized, "login", &page{Title: "Sign in", Error: "Wrong user name or password.", Data: data})
		return
	}
	a.succeeded()
	s.startSession(w, r, u)
	redirect(w, r, data.Next)
}

func (s *server) logout(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.post(w, r); !ok {
		return
	}
	s.endSession(w, r)
	redirect(w, r, "/")
}

// New repository.

type newData struct {
	Name, Description string
	Private           bool
}

func (s *server) newForm(w http.ResponseWriter, r *http.Request) {
	r, sess, ok := s.requireLogin(w, r)
	if !ok {
		return
	}
	s.render(w, r, sess, http.StatusOK, "new", &page{Title: "New repository", Data: newData{}})
}

func (s *server) newRepo(w http.ResponseWriter, r *http.Request) {
	r, sess, ok := s.post(w, r)
	if !ok {
		return
	}
	d := newData{Name: strings.TrimSpace(r.PostFormValue("name")), Description: strings.TrimSpace(r.PostFormValue("description")), Private: r.PostFormValue("private") != ""}
	info, err := s.forge.CreateRepo(r.Context(), sess.user.Name, d.Name, d.Private, d.Description)
	if err != nil {
		msg := err.Error()
		switch {
		case errors.Is(err, forge.ErrExists):
			msg = "You already have a repository called " + d.Name + "."
		case errors.Is(err, forge.ErrInvalidName):
			msg = strings.TrimPrefix(msg, "forge: ")
		default:
			s.fail(w, r, err)
			return
		}
		s.render(w, r, sess, http.StatusUnprocessableEntity, "new", &page{Title: "New repository", Error: msg, Data: d})
		return
	}
	s.cache.Invalidate(r.Context(), "explore")
	redirect(w, r, "/"+info.Owner+"/"+info.Name)
}

// Account settings.

type settingsData struct {
	Tokens   []forge.TokenInfo
	NewToken string
}

func (s *server) settings(w http.ResponseWriter, r *http.Request) {
	r, sess, ok := s.requireLogin(w, r)
	if !ok {
		return
	}
	flash := ""
	if r.URL.Query().Get("changed") != "" {
		flash = "Password changed. Your other sessions have ended."
	}
	s.settingsPage(w, r, sess, http.StatusOK, flash, "", "")
}

func (s *server) settingsPage(w http.ResponseWriter, r *http.Request, sess *session, status int, flash, errMsg, token string) {
	toks, err := s.forge.Meta.Tokens(r.Context(), sess.user.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, sess, status, "settings", &page{Title: "Settings", Flash: flash, Error: errMsg, Data: settingsData{Tokens: toks, NewToken: token}})
}

func (s *server) settingsPost(w http.ResponseWriter, r *http.Request) {
	r, sess, ok := s.post(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	switch r.PostFormValue("action") {
	case "password":
		// A stolen session must not make a password oracle.
		a, ok := s.logins.begin(s.clientIP(r), sess.user.Name)
		if !ok {
			s.settingsPage(w, r, sess, http.StatusTooManyRequests, "", "Too many attempts; wait a few seconds.", "")
			return
		}
		if _, err := s.forge.CheckPassword(ctx, sess.user.Name, r.PostFormValue("current")); err != nil {
			if !errors.Is(err, forge.ErrBadCredentials) {
				a.undecided()
				s.fail(w, r, err)
				return
			}
			a.failed()
			s.settingsPage(w, r, sess, http.StatusForbidden, "", "The current password is wrong.", "")
			return
		}
		a.succeeded()
		if err := s.forge.SetPassword(ctx, sess.user.Name, r.PostFormValue("new")); err != nil {
			s.settingsPage(w, r, sess, http.StatusUnprocessableEntity, "", strings.TrimPrefix(err.Error(), "forge: "), "")
			return
		}
		// Every session of the user ended with the old stamp; this
		// browser gets a new one.
		u, err := s.forge.Meta.User(ctx, sess.user.Name)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.startSession(w, r, u)
		redirect(w, r, "/settings?changed=1")
	case "token":
		ttl, err := time.ParseDuration(r.PostFormValue("expires"))
		if err != nil || ttl < 0 {
			ttl = 30 * 24 * time.Hour
		}
		name := strings.TrimSpace(r.PostFormValue("name"))
		if name == "" || len(name) > 100 {
			s.settingsPage(w, r, sess, http.StatusUnprocessableEntity, "", "A token needs a name of at most 100 characters.", "")
			return
		}
		tok, err := s.forge.CreateToken(ctx, sess.user.Name, name, forge.Scope(r.PostFormValue("scope")), ttl)
		if err != nil {
			s.settingsPage(w, r, sess, http.StatusUnprocessableEntity, "", strings.TrimPrefix(err.Error(), "forge: "), "")
			return
		}
		// The token is in this response only: never cached.
		s.settingsPage(w, r, sess, http.StatusOK, "", "", tok)
	case "revoke":
		if err := s.forge.RevokeToken(ctx, sess.user.Name, r.PostFormValue("name")); err != nil && !errors.Is(err, forge.ErrNotFound) {
			s.fail(w, r, err)
			return
		}
		redirect(w, r, "/settings")
	default:
		http.Error(w, "unknown action", http.StatusBadRequest)
	}
}

// Administration.

type adminData struct {
	Users       []forge.User
	Maintenance []forge.MaintainResult
	Slow        time.Duration
	Stats       string
	NewPassword string
	ProfileURL  string
}

func (s *server) adminHome(w http.ResponseWriter, r *http.Request) {
	s.adminOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, sess := s.withSession(r)
		s.adminPage(w, r, sess, "", "", "")
	})).ServeHTTP(w, r)
}

func (s *server) adminPage(w http.ResponseWriter, r *http.Request, sess *session, flash, pass, profileURL string) {
	users, err := s.forge.Meta.Users(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d := adminData{Users: users, Maintenance: s.maint.Results(), Slow: s.cfg.slowThreshold, NewPassword: pass, ProfileURL: profileURL}
	d.Stats = fmt.Sprintf("fragments  %+v\nviews      %+v\ngit        %+v\ntime boxes %+v\nslow       %+v\narchives   %+v",
		s.cache.Stats(), s.views.Stats(), s.git.Stats(), s.tbox.Stats(), s.watchdog.Stats(), s.archiver.Stats())
	s.render(w, r, sess, http.StatusOK, "admin", &page{Title: "Administration", Flash: flash, Data: d})
}

func (s *server) adminPost(w http.ResponseWriter, r *http.Request) {
	r, sess, ok := s.post(w, r)
	if !ok {
		return
	}
	if !sess.user.Admin {
		s.notFound(w, r)
		return
	}
	switch r.PostFormValue("action") {
	case "adduser":
		pass := randomPassword()
		u, err := s.forge.CreateUser(r.Context(), strings.TrimSpace(r.PostFormValue("name")), strings.TrimSpace(r.PostFormValue("email")), pass, r.PostFormValue("admin") != "")
		if err != nil {
			s.adminPage(w, r, sess, strings.TrimPrefix(err.Error(), "forge: "), "", "")
			return
		}
		s.adminPage(w, r, sess, "Created "+u.Name+".", pass, "")
	case "profile":
		p := localPath(r.PostFormValue("path"))
		sep := "?"
		if strings.Contains(p, "?") {
			sep = "&"
		}
		path, _, _ := strings.Cut(p, "?")
		tok := s.profiler.Token(sess.user.Name, path, 10*time.Minute)
		s.adminPage(w, r, sess, "", "", s.baseURL(r)+p+sep+"__profile__="+url.QueryEscape(tok))
	default:
		http.Error(w, "unknown action", http.StatusBadRequest)
	}
}

// Operations.

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintln(w, "ok")
}

// readyz checks the database and, when configured, memcached.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var problems []string
	if err := s.forge.Meta.Ping(ctx); err != nil {
		problems = append(problems, "database: "+err.Error())
	}
	if s.mc != nil {
		if err := s.mc.Ping(); err != nil {
			problems = append(problems, "memcached: "+err.Error())
		}
	}
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(problems, "\n"))
		return
	}
	fmt.Fprintln(w, "ready")
}
