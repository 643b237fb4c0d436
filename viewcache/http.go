package viewcache

import (
	"bytes"
	"context"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Viewlets lets templates include cached fragments. With its FuncMap
// installed, a template writes
//
//	{{viewlet $.Ctx "readme" (printf "readme:%s" .Repo) (deps "repo:alice/proj") .}}
//
// to include the template named "readme", executed with the last
// argument as data, cached under the key with the given dependencies. In
// ESI mode the fragment is still rendered into the cache, but the page
// gets an <esi:include> pointing at the fragment handler (Cache.Handler)
// instead, so that Varnish assembles the page and purges fragments by
// dependency. A Viewlets is safe for concurrent use once set up.
type Viewlets struct {
	Cache     *Cache
	Templates *template.Template // where fragment templates are looked up; the set the FuncMap is installed in

	// ESI switches to emitting <esi:include src="FragmentURL+key"/>.
	ESI bool

	// FragmentURL is the URL prefix where Cache.Handler is mounted.
	FragmentURL string
}

// ErrNoTemplate is returned by the viewlet function for a template name
// that is not in the set.
var ErrNoTemplate = errors.New("viewcache: no such template")

// FuncMap returns the "viewlet" and "deps" template functions.
func (v *Viewlets) FuncMap() template.FuncMap {
	return template.FuncMap{
		"viewlet": v.Include,
		"deps":    func(d ...string) []string { return d },
	}
}

// Include returns the cached fragment (or, with ESI, the include tag).
func (v *Viewlets) Include(ctx context.Context, name, key string, deps []string, data any) (template.HTML, error) {
	b, err := v.Render(ctx, name, key, deps, func(context.Context) (any, error) { return data, nil })
	if err != nil {
		return "", err
	}
	if v.ESI {
		src := v.FragmentURL + url.PathEscape(key)
		return template.HTML(`<esi:include src="` + template.HTMLEscapeString(src) + `"/>`), nil
	}
	return template.HTML(b), nil // rendered by html/template: already escaped
}

// Render returns the fragment of the template name, cached under key
// with deps, as bytes (for a page that writes large fragments as they
// are, without converting them to template.HTML). On a miss it executes
// the template with the data load returns: load runs only when the
// fragment must be rendered, so that what it shows is read only then.
// It never emits ESI.
func (v *Viewlets) Render(ctx context.Context, name, key string, deps []string, load func(ctx context.Context) (any, error)) ([]byte, error) {
	return v.Cache.GetOrRender(ctx, key, deps, func(ctx context.Context) ([]byte, error) {
		t := v.Templates.Lookup(name)
		if t == nil {
			return nil, ErrNoTemplate
		}
		data, err := load(ctx)
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	})
}

// Lookup tells the fragment handler how to produce a fragment by key.
type Lookup func(r *http.Request, key string) (deps []string, render Render, ok bool)

// Handler serves fragments by key (the path after prefix, unescaped), for
// ESI includes: from the cache, or rendered through lookup. Responses
// carry Cache-Control (public, for TTL or SoftTTL when set) and the
// fragment's dependencies in Surrogate-Key (Fastly, Varnish Plus) and
// xkey (Varnish's xkey module), so that the front cache purges by
// dependency. Keys lookup does not know are 404.
func (c *Cache) Handler(prefix string, lookup Lookup) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		raw, ok := strings.CutPrefix(r.URL.EscapedPath(), prefix)
		key, err := url.PathUnescape(raw)
		if !ok || err != nil || key == "" {
			http.NotFound(w, r)
			return
		}
		deps, render, ok := lookup(r, key)
		if !ok {
			http.NotFound(w, r)
			return
		}
		b, err := c.GetOrRender(r.Context(), key, deps, render)
		if err != nil {
			http.Error(w, "fragment failed", http.StatusInternalServerError)
			return
		}
		age := c.ttl()
		if c.SoftTTL > 0 {
			age = c.SoftTTL
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(age.Seconds())))
		if len(deps) > 0 {
			keys := strings.Join(deps, " ")
			h.Set("Surrogate-Key", keys)
			h.Set("xkey", keys)
		}
		h.Set("Content-Length", strconv.Itoa(len(b)))
		if r.Method == http.MethodGet {
			w.Write(b)
		}
	})
}
