package main

import (
	"bytes"
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"

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
	Feed         string // the page's Atom feed, if it has one
	Registration bool   // visitors may sign up

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
func (s *site) render(w http.ResponseWriter, r *http.Request, sess *session, status int, name string, p *page) {
	if sess != nil {
		p.User = sess.user
		p.CSRF = s.csrfToken(sess)
	}
	p.CSS, p.JS = s.assets.urls["style.css"], s.assets.urls["forged.js"]
	p.Registration = s.cfg.registration
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
func (s *site) putPageBuffer(b *bytes.Buffer) {
	if b.Cap() > 4<<20 {
		return // an unusual page; let it go
	}
	b.Reset()
	s.pageBuffers.Put(b)
}

// fragment renders one of the fragments' templates, uncached (for
// fragments cached by a key the caller builds, or not at all).
func (s *site) fragment(name string, data any) ([]byte, error) {
	var buf bytes.Buffer
	if err := s.fragments.ExecuteTemplate(&buf, name, data); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// cached returns a fragment from the fragment cache, rendering it with
// the fragment template name and the data load returns when it is
// missing.
func (s *site) cached(ctx context.Context, key string, deps []string, name string, load func(ctx context.Context) (any, error)) (template.HTML, error) {
	b, err := s.viewlets.Render(ctx, name, key, deps, load)
	return template.HTML(b), err
}

// cachedSplice is cached for large fragments, which render splices into
// the page.
func (s *site) cachedSplice(ctx context.Context, key string, deps []string, name string, load func(ctx context.Context) (any, error)) (splice, error) {
	return s.viewlets.Render(ctx, name, key, deps, load)
}

func (s *site) notFound(w http.ResponseWriter, r *http.Request) {
	_, sess := s.withSession(r)
	w.Header().Del("Cache-Control")
	s.render(w, r, sess, http.StatusNotFound, "error", &page{Title: "Not found", Data: "There is nothing here, or you may not see it."})
}

// fail answers 500 and logs err; after the request's time limit it writes
// nothing, since timebox answers (503) or cuts the response itself.
func (s *site) fail(w http.ResponseWriter, r *http.Request, err error) {
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
func (s *site) requireLogin(w http.ResponseWriter, r *http.Request) (*http.Request, *session, bool) {
	r, sess := s.withSession(r)
	if sess == nil {
		http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return r, nil, false
	}
	return r, sess, true
}

// post checks a signed-in form post: the session and its CSRF token.
func (s *site) post(w http.ResponseWriter, r *http.Request) (*http.Request, *session, bool) {
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

// User page.

// Sign in and out.

// New repository.

// Account settings.

// Administration.

// Operations.
