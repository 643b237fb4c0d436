package main

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/forgekit/forgekit/forge"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// templateVersion is part of every cached fragment's key (viewcache's
// renderer version) and of every ETag: a hash of the templates, so that
// no process serves fragments, and no client keeps pages, of older ones.
var templateVersion = func() string {
	h := sha256.New()
	fs.WalkDir(templateFS, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := templateFS.ReadFile(p)
			fmt.Fprintf(h, "%s\x00%d\x00", p, len(b))
			h.Write(b)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)[:6])
}()

// assets are the static files, fingerprinted: /static/NAME.HASH.EXT never
// changes, so it is served as immutable.
type assets struct {
	files map[string][]byte // by fingerprinted name
	urls  map[string]string // plain name → /static/fingerprinted name
}

func loadAssets() (*assets, error) {
	a := &assets{files: map[string][]byte{}, urls: map[string]string{}}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		name := path.Base(p)
		if name == "style.css" {
			b = append(b, "\n/* syntax highlighting */\n"+forge.HighlightCSS()...)
		}
		sum := sha256.Sum256(b)
		ext := path.Ext(name)
		fp := strings.TrimSuffix(name, ext) + "." + hex.EncodeToString(sum[:6]) + ext
		a.files[fp] = b
		a.urls[name] = "/static/" + fp
		return nil
	})
	return a, err
}

func (s *site) static(w http.ResponseWriter, r *http.Request) {
	b, ok := s.assets.files[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	h.Set("X-Content-Type-Options", "nosniff")
	switch path.Ext(r.PathValue("file")) {
	case ".css":
		h.Set("Content-Type", "text/css; charset=utf-8")
	case ".js":
		h.Set("Content-Type", "text/javascript; charset=utf-8")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}

func (s *site) robots(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=86400")
	// Archives and raw files are costly and useless to crawlers.
	fmt.Fprint(w, "User-agent: *\nDisallow: /*/*/archive/\nDisallow: /*/*/raw/\nDisallow: /*/*/lastcommits/\n")
}

var funcs = template.FuncMap{
	"ago":   ago,
	"iso":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"short": short,
	"size":  humanSize,
	// splice puts a large fragment into the page as it is (see render).
	"splice": func(p *page, b splice) template.HTML { return p.splice(b) },
}

// templates parses one set per page: the layout, the fragments and the
// page's own "content".
func (s *site) templates() error {
	base, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/fragments.html")
	if err != nil {
		return err
	}
	pages, _ := fs.Glob(templateFS, "templates/*.html")
	s.pageSets = make(map[string]*template.Template)
	for _, p := range pages {
		name := strings.TrimSuffix(path.Base(p), ".html")
		if name == "layout" || name == "fragments" {
			continue
		}
		t, err := base.Clone()
		if err != nil {
			return err
		}
		if t, err = t.ParseFS(templateFS, p); err != nil {
			return err
		}
		s.pageSets[name] = t
	}
	s.fragments = base
	return nil
}

// ago says how long ago t was, roughly.
func ago(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return plural(int(d/time.Minute), "minute") + " ago"
	case d < 24*time.Hour:
		return plural(int(d/time.Hour), "hour") + " ago"
	case d < 30*24*time.Hour:
		return plural(int(d/(24*time.Hour)), "day") + " ago"
	case d < 365*24*time.Hour:
		return plural(int(d/(30*24*time.Hour)), "month") + " ago"
	}
	return "on " + t.Format("2 Jan 2006")
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

func humanSize(n int64) string {
	switch {
	case n < 1024:
		return fmt.Sprintf("%d B", n)
	case n < 1024*1024:
		return fmt.Sprintf("%.1f KiB", float64(n)/1024)
	case n < 1024*1024*1024:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1024*1024))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1024*1024*1024))
}
