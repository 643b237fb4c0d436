package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/forgekit/forgekit/forge"
)

// Caps of what a page shows.
const (
	maxBlobShown = 1 << 20 // bytes of a README rendered
	// A file page shows at most maxLinesShown lines or maxBytesShown
	// bytes of a file, highlighted (GitHub stops near 1 MB); /raw has the
	// rest. Every file page's HTML stays under about a megabyte.
	maxLinesShown  = 5000
	maxBytesShown  = 256 << 10
	maxRawBytes    = 64 << 20 // bytes served by /raw (clone for more)
	commitsPerPage = 30
)

// repoView is what the layout shows of the current repository.
type repoView struct {
	Info     *forge.RepoInfo
	Base     string // /owner/name
	CloneURL string
	SSHURL   string // "" unless git over SSH is served
	Tab      string
	CanAdmin bool
	CanWrite bool
	Views    int64
	Refs     template.HTML
	Ref      string // the ref being browsed, as in the URL
	RefPath  string // Ref, escaped for a URL path
	Commit   string // what Ref resolved to; "" in an empty repository
	dir      string // the repository on disk
	key      string // lower-case owner/name: counting id and cache dependency
}

func (rv *repoView) deps() []string { return []string{"repo:" + rv.key} }

// crumb is one step of a path.
type crumb struct{ Name, URL string }

// escPath escapes each segment of p for a URL path.
func escPath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

// readRepo opens the repository of a page for reading and its Browser,
// counting the view if count: what every repository page starts with.
// On false the response is written.
func (s *repoPages) readRepo(w http.ResponseWriter, r *http.Request, tab string, count bool) (*http.Request, *session, *repoView, *forge.Browser, bool) {
	r, sess, rv, ok := s.openRepo(w, r, forge.ActionRead, tab)
	if !ok {
		return r, nil, nil, nil, false
	}
	br, err := s.browsers.Open(rv.dir)
	if err != nil {
		s.fail(w, r, err)
		return r, nil, nil, nil, false
	}
	if count {
		s.countView(r, sess, rv)
	}
	return r, sess, rv, br, true
}

// countView counts a page view of the repository (bots excluded) and
// reads the all-time total for the page.
func (s *repoPages) countView(r *http.Request, sess *session, rv *repoView) {
	if !isBot(r.UserAgent()) {
		viewer := s.clientIP(r)
		if sess != nil {
			viewer = "user:" + sess.user.Name
		}
		s.views.Hit(rv.key, viewer)
	}
	rv.Views, _ = s.views.Total(r.Context(), rv.key, time.Unix(0, 0), time.Now().Add(time.Hour))
}

// isBot recognizes crawlers by their user agents.
func isBot(ua string) bool {
	ua = strings.ToLower(ua)
	if ua == "" {
		return true
	}
	for _, w := range []string{"bot", "crawl", "spider", "slurp", "facebookexternalhit", "bingpreview", "mediapartners", "python-requests", "wget"} {
		if strings.Contains(ua, w) {
			return true
		}
	}
	return false
}

// defaultBranch is the branch a repository's home shows: the one HEAD
// names, as git clone checks out; if HEAD names no existing branch (a
// repository brought in from elsewhere), main, master or the first.
// "" for an empty repository.
func defaultBranch(refs []forge.Ref, head string) string {
	has := func(name string) bool {
		for _, r := range refs {
			if !r.Tag && r.Name == name {
				return true
			}
		}
		return false
	}
	for _, b := range []string{head, "main", "master"} {
		if b != "" && has(b) {
			return b
		}
	}
	for _, r := range refs {
		if !r.Tag {
			return r.Name
		}
	}
	return ""
}

// setRef resolves rest and fills the ref fields and the ref selector.
func (s *repoPages) setRef(ctx context.Context, rv *repoView, rest string) (p string, err error) {
	ref, commit, p, err := s.browsers.SplitRef(ctx, rv.dir, rest)
	if err != nil {
		return "", err
	}
	rv.Ref, rv.RefPath, rv.Commit = ref, escPath(ref), commit
	rv.Refs, err = s.refsFragment(ctx, rv)
	return p, err
}

type refLink struct{ Name, Path string }

// refsShown bounds the branches and the tags the ref selector lists
// (git/git has a thousand refs: listing them all made every page 110 KB
// heavier); the selector's field reaches the others.
const refsShown = 20

// refsFragment is the branch and tag selector, cached until a push: the
// default branch and the others by name, the newest tags by version.
func (s *repoPages) refsFragment(ctx context.Context, rv *repoView) (template.HTML, error) {
	key := "refs|" + rv.key + "|" + rv.Ref
	return s.cached(ctx, key, append(rv.deps(), "refs:"+rv.key), "refs", func(ctx context.Context) (any, error) {
		refs, head, err := s.browsers.Refs(ctx, rv.dir)
		if err != nil {
			return nil, err
		}
		d := struct {
			Base, Current                 string
			Branches, Tags                []refLink
			MoreBranches, MoreTags, Total int
		}{Base: rv.Base, Current: rv.Ref}
		var branches, tags []string
		for _, rf := range refs {
			if rf.Tag {
				tags = append(tags, rf.Name)
			} else if rf.Name != head {
				branches = append(branches, rf.Name)
			} else {
				d.Branches = append(d.Branches, refLink{rf.Name, escPath(rf.Name)})
			}
		}
		sort.Slice(tags, func(i, j int) bool { return versionLess(tags[j], tags[i]) })
		for _, n := range branches {
			if len(d.Branches) == refsShown {
				d.MoreBranches++
				continue
			}
			d.Branches = append(d.Branches, refLink{n, escPath(n)})
		}
		for _, n := range tags {
			if len(d.Tags) == refsShown {
				d.MoreTags++
				continue
			}
			d.Tags = append(d.Tags, refLink{n, escPath(n)})
		}
		d.Total = len(refs)
		return d, nil
	})
}

// versionLess orders names as versions: runs of digits by value, so
// that v2.10 comes after v2.9.
func versionLess(a, b string) bool {
	for a != "" && b != "" {
		da, db := digitsPrefix(a), digitsPrefix(b)
		if da != "" && db != "" {
			na, _ := strconv.ParseUint(strings.TrimLeft(da, "0")+"0", 10, 64)
			nb, _ := strconv.ParseUint(strings.TrimLeft(db, "0")+"0", 10, 64)
			if na != nb {
				return na < nb
			}
			a, b = a[len(da):], b[len(db):]
			continue
		}
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

func digitsPrefix(s string) string {
	i := 0
	for i < len(s) && i < 18 && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i]
}

// treeRef answers the ref selector's field: /{owner}/{repo}/tree?ref=R
// goes to the tree of R, if R is a branch, a tag or a commit.
func (s *repoPages) treeRef(w http.ResponseWriter, r *http.Request) {
	r, _, rv, _, ok := s.readRepo(w, r, "code", false)
	if !ok {
		return
	}
	ref, _, p, err := s.browsers.SplitRef(r.Context(), rv.dir, strings.TrimSpace(r.URL.Query().Get("ref")))
	if err != nil || p != "" {
		s.notFound(w, r)
		return
	}
	http.Redirect(w, r, rv.Base+"/tree/"+escPath(ref), http.StatusFound)
}

// pinned reports whether ref names the commit itself, so that the page
// can never change.
func pinned(ref, commit string) bool { return ref == commit }

// cacheHeaders sets a repository page's caching policy and answers 304
// when the client's copy is current. Pages of a public repository seen
// anonymously are public (immutable when the URL pins a commit); the
// rest are private. The ETag covers the commit, the repository's
// settings, the user and the template version; not the view count, which
// a 304 leaves as the client last saw it.
func (s *repoPages) cacheHeaders(w http.ResponseWriter, r *http.Request, sess *session, rv *repoView, pin bool) bool {
	h := w.Header()
	h.Set("Surrogate-Key", surrogateKey(rv.Info.ID))
	switch {
	case rv.Info.Private || sess != nil:
		h.Set("Cache-Control", "private, no-cache")
	case pin:
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	default:
		h.Set("Cache-Control", "public, no-cache")
	}
	sum := sha256.New()
	fmt.Fprintf(sum, "%s\x00%s\x00%s\x00%s\x00%v\x00%s\x00%s\x00%d", templateVersion, r.URL.Path, r.URL.RawQuery, rv.Commit,
		rv.Info.Private, rv.Info.Description, rv.Info.DefaultBranch, rv.Info.PushedAt.Unix())
	if sess != nil {
		fmt.Fprintf(sum, "\x00%s\x00%s", sess.user.Name, sess.nonce)
	}
	etag := `W/"` + hex.EncodeToString(sum.Sum(nil)[:12]) + `"`
	h.Set("ETag", etag)
	for _, c := range strings.Split(r.Header.Get("If-None-Match"), ",") {
		if c = strings.TrimSpace(c); c == etag || c == "*" || strings.TrimPrefix(c, "W/") == strings.TrimPrefix(etag, "W/") {
			h.Add("Vary", "Cookie")
			w.WriteHeader(http.StatusNotModified)
			return true
		}
	}
	return false
}

// Repository home and trees.

type repoData struct {
	Empty  bool
	Crumbs []crumb
	Files  splice
	Readme template.HTML
}

func (s *repoPages) repoHome(w http.ResponseWriter, r *http.Request) {
	r, sess, rv, br, ok := s.readRepo(w, r, "code", true)
	if !ok {
		return
	}
	refs, head, err := s.browsers.Refs(r.Context(), rv.dir)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	branch := defaultBranch(refs, head)
	if branch == "" {
		w.Header().Set("Cache-Control", "private, no-cache")
		s.render(w, r, sess, http.StatusOK, "repo", &page{Title: rv.Info.Owner + "/" + rv.Info.Name, Repo: rv, Data: repoData{Empty: true}})
		return
	}
	if _, err := s.setRef(r.Context(), rv, branch); err != nil {
		s.fail(w, r, err)
		return
	}
	s.treePage(w, r, sess, rv, br, "")
}

func (s *repoPages) tree(w http.ResponseWriter, r *http.Request) {
	r, sess, rv, br, ok := s.readRepo(w, r, "code", true)
	if !ok {
		return
	}
	dir, err := s.setRef(r.Context(), rv, r.PathValue("rest"))
	if err != nil {
		s.notFound(w, r)
		return
	}
	s.treePage(w, r, sess, rv, br, dir)
}

func (s *repoPages) treePage(w http.ResponseWriter, r *http.Request, sess *session, rv *repoView, br *forge.Browser, dir string) {
	ctx := r.Context()
	// A 304 first: a client holding this ETag had the page, so it exists.
	if s.cacheHeaders(w, r, sess, rv, pinned(rv.Ref, rv.Commit)) {
		return
	}
	files, err := s.filesFragment(ctx, br, rv, dir)
	if errors.Is(err, forge.ErrNotFound) {
		_, berr := br.Blob(ctx, rv.Commit, dir, 1)
		s.elsewhere(w, r, rv, dir, "blob", berr == nil)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	readme, err := s.readmeFragment(ctx, br, rv, dir)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	title := rv.Info.Owner + "/" + rv.Info.Name
	if dir != "" {
		title = dir + " · " + title
	}
	s.render(w, r, sess, http.StatusOK, "repo", &page{Title: title, Repo: rv, Data: repoData{
		Crumbs: crumbs(rv, dir, true), Files: files, Readme: readme}})
}

// elsewhere answers a tree or blob URL whose path is of the other kind:
// a redirect to the view that fits (to view) if exists, else 404. The
// caching headers set for the page go.
func (s *repoPages) elsewhere(w http.ResponseWriter, r *http.Request, rv *repoView, p, view string, exists bool) {
	w.Header().Del("Cache-Control")
	w.Header().Del("ETag")
	if exists {
		http.Redirect(w, r, rv.Base+"/"+view+"/"+rv.RefPath+"/"+escPath(p), http.StatusFound)
		return
	}
	s.notFound(w, r)
}

// crumbs links each directory of p.
func crumbs(rv *repoView, p string, lastIsDir bool) []crumb {
	out := []crumb{{Name: rv.Info.Name, URL: rv.Base + "/tree/" + rv.RefPath}}
	if p == "" {
		out[0].URL = ""
		return out
	}
	parts := strings.Split(p, "/")
	for i, part := range parts {
		c := crumb{Name: part, URL: rv.Base + "/tree/" + rv.RefPath + "/" + escPath(strings.Join(parts[:i+1], "/"))}
		if i == len(parts)-1 {
			c.URL = ""
		}
		out = append(out, c)
	}
	return out
}

type fileRow struct {
	Name, URL, Size, Target string
	IsDir                   bool
	Commit                  *forge.CommitInfo
}

type filesData struct {
	Base, FillURL, Parent string
	Entries               []fileRow
	Complete              bool
}

func (s *repoPages) filesKey(rv *repoView, dir string) string {
	return "files|" + rv.key + "|" + rv.Ref + "|" + rv.Commit + "|" + dir
}

// renderFiles renders the file list of dir, with the last commit of
// each entry when last is not nil.
func (s *repoPages) renderFiles(ctx context.Context, br *forge.Browser, rv *repoView, dir string, last map[string]*forge.CommitInfo) ([]byte, error) {
	entries, err := br.Tree(ctx, rv.Commit, dir)
	if err != nil {
		return nil, err
	}
	d := filesData{Base: rv.Base, Complete: last != nil,
		FillURL: rv.Base + "/lastcommits/" + escPath(dir) + "?ref=" + url.QueryEscape(rv.Ref) + "&c=" + rv.Commit}
	if dir != "" {
		d.Parent = rv.Base + "/tree/" + rv.RefPath + "/" + escPath(path.Dir(dir))
		if path.Dir(dir) == "." {
			d.Parent = rv.Base + "/tree/" + rv.RefPath
		}
	}
	for _, e := range entries {
		full := path.Join(dir, e.Name)
		row := fileRow{Name: e.Name, Commit: last[e.Name]}
		switch e.Type {
		case "tree":
			row.IsDir, row.URL = true, rv.Base+"/tree/"+rv.RefPath+"/"+escPath(full)
		case "commit":
			row.URL, row.Target = "#", "submodule @ "+e.Hash[:min(10, len(e.Hash))]
		default:
			row.URL, row.Size = rv.Base+"/blob/"+rv.RefPath+"/"+escPath(full), humanSize(e.Size)
		}
		d.Entries = append(d.Entries, row)
	}
	return s.fragment("files", d)
}

// errLastPending is why a complete file list cannot be rendered yet.
var errLastPending = errors.New("last commits not known yet")

// completeFiles returns the file list with the last commit of each
// entry if those are known (cached fragment, or results in memory or on
// disk), else errLastPending.
func (s *repoPages) completeFiles(ctx context.Context, br *forge.Browser, rv *repoView, dir string) ([]byte, error) {
	return s.cache.GetOrRender(ctx, s.filesKey(rv, dir), rv.deps(), func(ctx context.Context) ([]byte, error) {
		last, ok := s.lastCommits.Lookup(br, rv.Commit, dir)
		if !ok {
			return nil, errLastPending
		}
		return s.renderFiles(ctx, br, rv, dir, last)
	})
}

// filesFragment returns the file list with the last commit of each entry
// when they are known. Else the first view starts their walk and waits
// at most the page budget for it; past the budget, and at once for the
// views that come while it runs, the page gets the list without them and
// a URL for its script, which waits for the walk.
func (s *repoPages) filesFragment(ctx context.Context, br *forge.Browser, rv *repoView, dir string) (splice, error) {
	b, err := s.completeFiles(ctx, br, rv, dir)
	if !errors.Is(err, errLastPending) {
		return b, err
	}
	if !s.lastCommits.Pending(br, rv.Commit, dir) {
		wctx, cancel := context.WithTimeout(ctx, s.budget())
		_, err := s.lastCommits.Get(wctx, br, rv.Commit, dir)
		cancel()
		if err == nil {
			return s.completeFiles(ctx, br, rv, dir)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return s.cache.GetOrRender(ctx, "plain"+s.filesKey(rv, dir), rv.deps(), func(ctx context.Context) ([]byte, error) {
		return s.renderFiles(ctx, br, rv, dir, nil)
	})
}

// lastCommitsFragment serves the complete file list for the page's
// script: it waits for the walk. Its URL names the commit and the ref
// the page was browsing; a ref that does not name that commit is 404,
// before any work.
func (s *repoPages) lastCommitsFragment(w http.ResponseWriter, r *http.Request) {
	r, sess, rv, br, ok := s.readRepo(w, r, "code", false)
	if !ok {
		return
	}
	q := r.URL.Query()
	commit := q.Get("c")
	ref, resolved, rest, err := s.browsers.SplitRef(r.Context(), rv.dir, q.Get("ref"))
	if err != nil || resolved != commit || rest != "" || !forge.IsCommitID(commit) {
		s.notFound(w, r)
		return
	}
	rv.Ref, rv.Commit, rv.RefPath = ref, commit, escPath(ref)
	dir := strings.Trim(r.PathValue("rest"), "/")
	if s.cacheHeaders(w, r, sess, rv, true) { // the URL names the commit
		return
	}
	if _, err := s.lastCommits.Get(r.Context(), br, rv.Commit, dir); err != nil {
		if errors.Is(err, forge.ErrNotFound) {
			s.notFound(w, r)
			return
		}
		w.Header().Del("Cache-Control")
		w.Header().Del("ETag")
		http.Error(w, "the last commits are not ready; try again later", http.StatusServiceUnavailable)
		return
	}
	b, err := s.completeFiles(r.Context(), br, rv, dir)
	if err != nil {
		s.notFound(w, r)
		return
	}
	securityHeaders(w.Header())
	w.Write(b)
}

// readmeFragment renders the README of dir, if any.
func (s *repoPages) readmeFragment(ctx context.Context, br *forge.Browser, rv *repoView, dir string) (template.HTML, error) {
	key := "readme|" + rv.key + "|" + rv.Commit + "|" + dir
	b, err := s.cache.GetOrRender(ctx, key, rv.deps(), func(ctx context.Context) ([]byte, error) {
		entries, err := br.Tree(ctx, rv.Commit, dir)
		if err != nil {
			return nil, err
		}
		e, ok := forge.FindReadme(entries)
		if !ok {
			return []byte{}, nil
		}
		blob, err := br.Blob(ctx, rv.Commit, path.Join(dir, e.Name), maxBlobShown)
		if err != nil || blob.Binary {
			return []byte{}, err
		}
		var html template.HTML
		if forge.IsMarkdown(e.Name) {
			html, err = forge.RenderMarkdown(blob.Data)
		} else {
			html = template.HTML("<pre>" + template.HTMLEscapeString(string(blob.Data)) + "</pre>")
		}
		return []byte(html), err
	})
	return template.HTML(b), err
}

// Files.

type blobData struct {
	Crumbs []crumb
	View   splice
}

type blobView struct {
	Size, RawURL, BlameURL, HistoryURL string
	Binary, Truncated                  bool
	Shown                              int // lines shown when Truncated
	Lines                              []codeLine
	Rendered                           template.HTML
}

type codeLine struct {
	N    int
	HTML template.HTML
}

func (s *repoPages) blob(w http.ResponseWriter, r *http.Request) {
	r, sess, rv, br, ok := s.readRepo(w, r, "code", true)
	if !ok {
		return
	}
	ctx := r.Context()
	p, err := s.setRef(ctx, rv, r.PathValue("rest"))
	if err != nil || p == "" {
		s.notFound(w, r)
		return
	}
	if s.cacheHeaders(w, r, sess, rv, pinned(rv.Ref, rv.Commit)) {
		return
	}
	// The whole view of the file, by commit and path: a warm page reads
	// no object.
	key := "blob|" + rv.key + "|" + rv.Ref + "|" + rv.Commit + "|" + p
	view, err := s.cachedSplice(ctx, key, rv.deps(), "blobview", func(ctx context.Context) (any, error) {
		blob, err := br.Blob(ctx, rv.Commit, p, maxBytesShown)
		if err != nil {
			return nil, err
		}
		v := blobView{Size: humanSize(blob.Size), Binary: blob.Binary, Truncated: blob.Truncated,
			RawURL: rv.Base + "/raw/" + rv.RefPath + "/" + escPath(p), HistoryURL: rv.Base + "/commits/" + rv.RefPath + "/" + escPath(p),
			BlameURL: rv.Base + "/blame/" + rv.RefPath + "/" + escPath(p)}
		if blob.Binary {
			return v, nil
		}
		lines := strings.Split(strings.TrimSuffix(string(blob.Data), "\n"), "\n")
		if blob.Truncated && len(lines) > 1 {
			lines = lines[:len(lines)-1] // a line cut in the middle
		}
		if len(lines) > maxLinesShown {
			lines, v.Truncated = lines[:maxLinesShown], true
		}
		v.Shown = len(lines)
		for i, h := range forge.HighlightLines(path.Base(p), lines) {
			v.Lines = append(v.Lines, codeLine{i + 1, h})
		}
		if forge.IsMarkdown(p) && !v.Truncated {
			v.Rendered, err = forge.RenderMarkdown(blob.Data)
		}
		return v, err
	})
	if errors.Is(err, forge.ErrNotFound) {
		_, terr := br.Tree(ctx, rv.Commit, p)
		s.elsewhere(w, r, rv, p, "tree", terr == nil)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, sess, http.StatusOK, "blob", &page{Title: p + " · " + rv.Info.Owner + "/" + rv.Info.Name, Repo: rv,
		Data: blobData{Crumbs: crumbs(rv, p, false), View: view}})
}

// raw serves a file's bytes, never as HTML: text as text/plain, the rest
// as a download, in a sandbox.
func (s *repoPages) raw(w http.ResponseWriter, r *http.Request) {
	r, sess, rv, br, ok := s.readRepo(w, r, "code", false)
	if !ok {
		return
	}
	ref, commit, p, err := s.browsers.SplitRef(r.Context(), rv.dir, r.PathValue("rest"))
	if err != nil || p == "" {
		s.notFound(w, r)
		return
	}
	rv.Ref, rv.Commit = ref, commit
	blob, err := br.Blob(r.Context(), commit, p, maxRawBytes)
	if err != nil {
		s.notFound(w, r)
		return
	}
	if blob.Truncated {
		http.Error(w, "file too large for raw view; clone the repository", http.StatusRequestEntityTooLarge)
		return
	}
	if s.cacheHeaders(w, r, sess, rv, pinned(rv.Ref, rv.Commit)) {
		return
	}
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'")
	if blob.Binary {
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Disposition", `attachment; filename="`+strings.ReplaceAll(path.Base(p), `"`, "")+`"`)
	} else {
		h.Set("Content-Type", "text/plain; charset=utf-8")
	}
	h.Set("Content-Length", strconv.Itoa(len(blob.Data)))
	w.Write(blob.Data)
}

// History.

type logRow struct {
	*forge.CommitInfo
	URL string
}

func (s *repoPages) commits(w http.ResponseWriter, r *http.Request) {
	r, sess, rv, br, ok := s.readRepo(w, r, "commits", true)
	if !ok {
		return
	}
	ctx := r.Context()
	rest := r.PathValue("rest")
	if ref, ok := strings.CutSuffix(rest, ".atom"); ok {
		// The feed of a ref, unless the path is a file called so.
		if p, err := s.setRef(ctx, rv, ref); err == nil && p == "" {
			s.commitsFeed(w, r, sess, rv)
			return
		}
	}
	p, err := s.setRef(ctx, rv, rest)
	if err != nil {
		s.notFound(w, r)
		return
	}
	pg, _ := strconv.Atoi(r.URL.Query().Get("page"))
	pg = max(pg, 1)
	if pg > 10000 {
		s.notFound(w, r)
		return
	}
	if s.cacheHeaders(w, r, sess, rv, pinned(rv.Ref, rv.Commit)) {
		return
	}
	key := fmt.Sprintf("log|%s|%s|%s|%d", rv.key, rv.Commit, p, pg)
	var more bool
	log, err := s.cache.GetOrRender(ctx, key, rv.deps(), func(ctx context.Context) ([]byte, error) {
		var cs []*forge.CommitInfo
		var err error
		// One more than shown tells whether there is a next page.
		if p == "" {
			cs, err = br.Log(ctx, rv.Commit, (pg-1)*commitsPerPage, commitsPerPage+1)
		} else {
			cs, err = br.LogPath(ctx, rv.Commit, p, (pg-1)*commitsPerPage, commitsPerPage+1)
		}
		if err != nil {
			return nil, err
		}
		rows := make([]logRow, 0, len(cs))
		for i, c := range cs {
			if i == commitsPerPage {
				break
			}
			rows = append(rows, logRow{c, rv.Base + "/commit/" + c.Hash})
		}
		b, err := s.fragment("log", rows)
		if len(cs) > commitsPerPage {
			b = append(b, "<!--more-->"...)
		}
		return b, err
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	more = strings.HasSuffix(string(log), "<!--more-->")
	d := struct {
		Path       string
		Log        template.HTML
		Prev, Next string
	}{Path: p, Log: template.HTML(log)}
	base := rv.Base + "/commits/" + rv.RefPath
	if p != "" {
		base += "/" + escPath(p)
	}
	if pg > 1 {
		d.Prev = base + "?page=" + strconv.Itoa(pg-1)
	}
	if more {
		d.Next = base + "?page=" + strconv.Itoa(pg+1)
	}
	s.render(w, r, sess, http.StatusOK, "commits", &page{Title: "Commits · " + rv.Info.Owner + "/" + rv.Info.Name, Repo: rv, Data: d,
		Feed: rv.Base + "/commits/" + rv.RefPath + ".atom"})
}

// Limits of a commit page's diff: a page of at most about 10,000 lines
// of changes; the raw diff and patch have all of it.
var pageDiffLimits = forge.DiffLimits{Files: 300, FileLines: 3000, Lines: 10000, Bytes: 1 << 20}

// maxHighlightedDiffLines is how many lines of one file's diff are
// coloured; past it, plain text (lexing is the costly part).
const maxHighlightedDiffLines = 3000

type diffLineView struct {
	Class    string // "add", "del", "ctx" or "note"
	Sign     string
	Old, New int
	HTML     template.HTML
}

type hunkView struct {
	Header string
	Lines  []diffLineView
}

type diffFileView struct {
	forge.FileDiff
	Anchor string
	Hunks  []hunkView
}

type commitView struct {
	*forge.CommitDiff
	Base             string
	RawURL, PatchURL string // the whole diff, as text
	Files            []diffFileView
}

// diffView turns a commit's diff into what the page shows: every line
// with its numbers on both sides and its colours.
func diffView(d *forge.CommitDiff, base string) commitView {
	v := commitView{CommitDiff: d, Base: base, RawURL: base + "/commit/" + d.Hash + ".diff", PatchURL: base + "/commit/" + d.Hash + ".patch"}
	for i, f := range d.Files {
		fv := diffFileView{FileDiff: f, Anchor: "diff-" + strconv.Itoa(i)}
		var texts []string
		for _, h := range f.Hunks {
			for _, l := range h.Lines {
				if l.Kind != '\\' {
					texts = append(texts, l.Text)
				}
			}
		}
		var colored []template.HTML
		if len(texts) <= maxHighlightedDiffLines {
			colored = forge.HighlightLines(path.Base(f.Path()), texts)
		}
		k := 0
		for _, h := range f.Hunks {
			hv := hunkView{Header: h.Header}
			for _, l := range h.Lines {
				lv := diffLineView{Old: l.Old, New: l.New, Sign: string(l.Kind)}
				switch l.Kind {
				case '+':
					lv.Class = "add"
				case '-':
					lv.Class = "del"
				case '\\':
					lv.Class, lv.Sign, lv.HTML = "note", "", template.HTML(template.HTMLEscapeString("\\"+l.Text))
					hv.Lines = append(hv.Lines, lv)
					continue
				default:
					lv.Class, lv.Sign = "ctx", " "
				}
				if colored != nil {
					lv.HTML = colored[k]
				} else {
					lv.HTML = template.HTML(template.HTMLEscapeString(l.Text))
				}
				k++
				hv.Lines = append(hv.Lines, lv)
			}
			fv.Hunks = append(fv.Hunks, hv)
		}
		v.Files = append(v.Files, fv)
	}
	return v
}

// commit serves a commit's page, and its raw forms: {sha}.patch (as git
// format-patch -1 --stdout writes it) and {sha}.diff (as git diff
// {sha}^! does).
func (s *repoPages) commit(w http.ResponseWriter, r *http.Request) {
	r, sess, rv, br, ok := s.readRepo(w, r, "commits", true)
	if !ok {
		return
	}
	ctx := r.Context()
	sha := r.PathValue("sha")
	raw := ""
	for _, ext := range []string{".patch", ".diff"} {
		if rest, ok := strings.CutSuffix(sha, ext); ok {
			sha, raw = rest, ext
		}
	}
	if _, err := s.setRef(ctx, rv, sha); err != nil {
		s.notFound(w, r)
		return
	}
	if raw != "" {
		s.rawCommit(w, r, sess, rv, br, raw)
		return
	}
	if s.cacheHeaders(w, r, sess, rv, pinned(rv.Ref, rv.Commit)) {
		return
	}
	html, err := s.cachedSplice(ctx, "commit|"+rv.key+"|"+rv.Commit, rv.deps(), "diff", func(ctx context.Context) (any, error) {
		d, err := br.Commit(ctx, rv.Commit, pageDiffLimits)
		if err != nil {
			return nil, err
		}
		return diffView(d, rv.Base), nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, sess, http.StatusOK, "commit", &page{Title: "Commit " + rv.Commit[:10] + " · " + rv.Info.Owner + "/" + rv.Info.Name, Repo: rv, Data: html})
}

// rawCommit streams a commit's patch or diff as plain text. A URL naming
// the commit by its id never changes; one naming a ref is sent to it.
func (s *repoPages) rawCommit(w http.ResponseWriter, r *http.Request, sess *session, rv *repoView, br *forge.Browser, ext string) {
	if !pinned(rv.Ref, rv.Commit) {
		if rv.Info.Private || sess != nil {
			w.Header().Set("Cache-Control", "private, no-cache")
		} else {
			w.Header().Set("Cache-Control", "public, no-cache")
		}
		http.Redirect(w, r, rv.Base+"/commit/"+rv.Commit+ext, http.StatusFound)
		return
	}
	if s.cacheHeaders(w, r, sess, rv, true) {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'")
	write := br.RawDiff
	if ext == ".patch" {
		write = br.Patch
	}
	sw := &statusWriter{ResponseWriter: w}
	if err := write(r.Context(), rv.Commit, sw); err != nil {
		if sw.status == 0 {
			s.fail(w, r, err)
			return
		}
		s.log.Warn("raw commit failed", "id", requestID(r), "path", r.URL.Path, "err", err)
		panic(http.ErrAbortHandler) // cut the response rather than end it short
	}
}

// archive serves /archive/REF.tar.gz and .zip. A ref that is not a
// commit id is redirected to the commit's URL, which never changes and
// is cached as such (by browsers, Varnish, and the archiver on disk).
func (s *repoPages) archive(w http.ResponseWriter, r *http.Request) {
	r, sess, rv, ok := s.openRepo(w, r, forge.ActionRead, "code")
	if !ok {
		return
	}
	rest := r.PathValue("rest")
	format := ""
	for _, f := range []string{"tar.gz", "zip"} {
		if strings.HasSuffix(rest, "."+f) {
			format, rest = f, strings.TrimSuffix(rest, "."+f)
		}
	}
	if format == "" {
		s.notFound(w, r)
		return
	}
	ref, commit, p, err := s.browsers.SplitRef(r.Context(), rv.dir, rest)
	if err != nil || p != "" {
		s.notFound(w, r)
		return
	}
	if !pinned(ref, commit) {
		if rv.Info.Private || sess != nil {
			w.Header().Set("Cache-Control", "private, no-cache")
		} else {
			w.Header().Set("Cache-Control", "public, no-cache")
		}
		http.Redirect(w, r, rv.Base+"/archive/"+commit+"."+format, http.StatusFound)
		return
	}
	if rv.Info.Private {
		w.Header().Set("Cache-Control", "private, max-age=31536000, immutable")
	}
	w.Header().Set("Surrogate-Key", surrogateKey(rv.Info.ID))
	s.archiver.Serve(w, r, rv.dir, rv.Info.Name, commit, format)
}

// pushed is the forge's push listener: the ref selector and the explore
// lists change. Fragments keyed by commit stay valid.
func (s *repoSettings) pushed(ctx context.Context, ev forge.PushEvent) {
	if ev.Dropped {
		s.purger.purge(ctx, ev.RepoID, "commits dropped by a push")
	}
	key := strings.ToLower(ev.Repo)
	s.browsers.RefsChanged(ev.Dir)
	if err := s.cache.Invalidate(ctx, "refs:"+key, "explore"); err != nil {
		s.log.Warn("invalidate after push", "repo", ev.Repo, "err", err)
	}
}
