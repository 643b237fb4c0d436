package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/forgekit/forgekit/forge"
)

// The JSON API under /api/v1, shaped like GitHub's REST API (v3) so that
// the clients and scripts people have speak to it: the same paths, field
// names, pagination (page, per_page and Link headers) and errors
// ({"message": ...}). It answers from the same forge as the pages, with
// the same access decision, and writes only through Forge's methods. It
// reads no cookies (so it needs no CSRF token): a caller authenticates
// each request with "Authorization: token T", "Bearer T", or Basic with
// a password or a token, under the sign-in limits.
//
// Non-goals: GitHub's full object graph (events, issues, pulls), ETag
// revalidation and GraphQL.

// Defaults of the API's pagination, as GitHub's.
const (
	apiPerPage    = 30
	apiMaxPerPage = 100
	// apiMaxContent is the largest file the contents endpoint returns
	// (GitHub's limit is 1 MB too); past it, encoding is "none".
	apiMaxContent = 1 << 20
)

// errAPI is an error the API answers with its status and message.
type errAPI struct {
	status int
	msg    string
}

func (e *errAPI) Error() string { return e.msg }

func apiErrorf(status int, format string, args ...any) error {
	return &errAPI{status, fmt.Sprintf(format, args...)}
}

var (
	errAPINotFound = &errAPI{http.StatusNotFound, "Not Found"}
	errAPIAuth     = &errAPI{http.StatusUnauthorized, "Requires authentication"}
)

// apiHandler is one endpoint: it writes its answer, or returns an error
// that apiPages.handle answers.
type apiHandler func(w http.ResponseWriter, r *http.Request, p *forge.Principal) error

// handle authenticates r (counting failures as the sign-in form does)
// and runs h, answering its errors as JSON.
func (s *apiPages) handle(h apiHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		p, err := s.authenticate(w, r)
		if err == nil {
			err = h(w, r, p)
		}
		if err == nil {
			return
		}
		var ae *errAPI
		switch {
		case errors.As(err, &ae):
		case errors.Is(err, forge.ErrNotFound), errors.Is(err, forge.ErrLoginRequired), errors.Is(err, forge.ErrNoUser):
			ae = errAPINotFound
		case errors.Is(err, forge.ErrForbidden):
			ae = &errAPI{http.StatusForbidden, "Must have the right to do this on the repository"}
		case r.Context().Err() != nil:
			return // timebox answers
		default:
			s.log.Error("api", "id", requestID(r), "path", r.URL.Path, "err", err)
			ae = &errAPI{http.StatusInternalServerError, "Something went wrong (request " + requestID(r) + ")"}
		}
		writeJSON(w, ae.status, map[string]string{"message": ae.msg})
	}
}

// authenticate returns the caller, nil for anonymous. Credentials take a
// sign-in attempt, given back when they were right.
func (s *apiPages) authenticate(w http.ResponseWriter, r *http.Request) (*forge.Principal, error) {
	if r.Header.Get("Authorization") == "" {
		return nil, nil
	}
	account := ""
	if user, pass, ok := r.BasicAuth(); ok && !forge.IsToken(pass) {
		account = user
	}
	a, ok := s.logins.begin(s.clientIP(r), account)
	if !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(loginEvery.Seconds())))
		return nil, &errAPI{http.StatusTooManyRequests, "Too many failed sign-ins; try again later"}
	}
	p, err := s.forge.Authenticate(r)
	switch {
	case errors.Is(err, forge.ErrBadCredentials):
		a.failed()
		return nil, &errAPI{http.StatusUnauthorized, "Bad credentials"}
	case err != nil:
		a.undecided()
		w.Header().Set("Retry-After", "5")
		return nil, &errAPI{http.StatusServiceUnavailable, "Cannot check credentials now; try again"}
	}
	a.succeeded()
	return p, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "private, no-cache")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
	return nil
}

// readJSON decodes a request body of at most 64 KiB into v.
func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	if err := dec.Decode(v); err != nil {
		return apiErrorf(http.StatusBadRequest, "Problems parsing JSON: %v", err)
	}
	return nil
}

// paging is a list request's page and per_page.
type paging struct{ page, perPage int }

func pagingOf(r *http.Request) (paging, error) {
	p := paging{1, apiPerPage}
	q := r.URL.Query()
	for _, f := range []struct {
		name string
		v    *int
		max  int
	}{{"page", &p.page, 100000}, {"per_page", &p.perPage, apiMaxPerPage}} {
		if s := q.Get(f.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				return p, apiErrorf(http.StatusBadRequest, "%s must be a positive number", f.name)
			}
			*f.v = min(n, f.max)
		}
	}
	return p, nil
}

func (p paging) skip() int { return (p.page - 1) * p.perPage }

// window returns the page's part of n items.
func (p paging) window(n int) (lo, hi int) {
	lo = min(p.skip(), n)
	return lo, min(lo+p.perPage, n)
}

// link sets the Link header of a page of a list: next when more is set,
// prev and first past the first page, last when total is known (≥ 0).
func (p paging) link(w http.ResponseWriter, r *http.Request, base string, more bool, total int) {
	at := func(n int) string {
		q := r.URL.Query()
		q.Set("page", strconv.Itoa(n))
		q.Set("per_page", strconv.Itoa(p.perPage))
		return "<" + base + r.URL.Path + "?" + q.Encode() + ">"
	}
	var rels []string
	if more {
		rels = append(rels, at(p.page+1)+`; rel="next"`)
	}
	if total >= 0 {
		rels = append(rels, at(max(1, (total+p.perPage-1)/p.perPage))+`; rel="last"`)
	}
	if p.page > 1 {
		rels = append(rels, at(1)+`; rel="first"`, at(p.page-1)+`; rel="prev"`)
	}
	if len(rels) > 0 {
		w.Header().Set("Link", strings.Join(rels, ", "))
	}
}

// JSON shapes, with GitHub's field names.

type apiUser struct {
	Login     string `json:"login"`
	ID        int64  `json:"id"`
	Type      string `json:"type"`
	SiteAdmin bool   `json:"site_admin"`
	HTMLURL   string `json:"html_url"`
	URL       string `json:"url"`
	ReposURL  string `json:"repos_url"`
	Email     string `json:"email,omitempty"`
}

type apiPermissions struct {
	Admin bool `json:"admin"`
	Push  bool `json:"push"`
	Pull  bool `json:"pull"`
}

type apiRepo struct {
	ID            int64           `json:"id"`
	Name          string          `json:"name"`
	FullName      string          `json:"full_name"`
	Owner         apiUser         `json:"owner"`
	Private       bool            `json:"private"`
	Visibility    string          `json:"visibility"`
	Description   string          `json:"description"`
	DefaultBranch string          `json:"default_branch"`
	HTMLURL       string          `json:"html_url"`
	CloneURL      string          `json:"clone_url"`
	URL           string          `json:"url"`
	PushedAt      *time.Time      `json:"pushed_at"`
	Size          int64           `json:"size"` // KiB, as GitHub's
	Permissions   *apiPermissions `json:"permissions,omitempty"`
}

type apiRefCommit struct {
	SHA string `json:"sha"`
	URL string `json:"url"`
}

type apiBranch struct {
	Name      string       `json:"name"`
	Commit    apiRefCommit `json:"commit"`
	Protected bool         `json:"protected"`
}

type apiTag struct {
	Name       string       `json:"name"`
	Commit     apiRefCommit `json:"commit"`
	ZipballURL string       `json:"zipball_url"`
	TarballURL string       `json:"tarball_url"`
	Message    string       `json:"message,omitempty"`
}

type apiPerson struct {
	Name  string    `json:"name"`
	Email string    `json:"email"`
	Date  time.Time `json:"date"`
}

type apiCommitFile struct {
	Filename         string `json:"filename"`
	PreviousFilename string `json:"previous_filename,omitempty"`
	Status           string `json:"status"`
	Additions        int    `json:"additions"`
	Deletions        int    `json:"deletions"`
	Changes          int    `json:"changes"`
	Patch            string `json:"patch,omitempty"`
}

type apiStats struct {
	Additions int `json:"additions"`
	Deletions int `json:"deletions"`
	Total     int `json:"total"`
}

type apiCommit struct {
	SHA    string `json:"sha"`
	URL    string `json:"url"`
	HTML   string `json:"html_url"`
	Commit struct {
		Author  apiPerson `json:"author"`
		Message string    `json:"message"`
	} `json:"commit"`
	Parents []apiRefCommit  `json:"parents,omitempty"`
	Stats   *apiStats       `json:"stats,omitempty"`
	Files   []apiCommitFile `json:"files,omitempty"`
}

type apiContent struct {
	Type        string `json:"type"`
	Encoding    string `json:"encoding,omitempty"`
	Size        int64  `json:"size"`
	Name        string `json:"name"`
	Path        string `json:"path"`
	SHA         string `json:"sha"`
	Content     string `json:"content,omitempty"`
	URL         string `json:"url"`
	HTMLURL     string `json:"html_url"`
	DownloadURL string `json:"download_url,omitempty"`
}

type apiHook struct {
	ID     int64    `json:"id"`
	Type   string   `json:"type"`
	Name   string   `json:"name"`
	Active bool     `json:"active"`
	Events []string `json:"events"`
	Config struct {
		URL         string `json:"url"`
		ContentType string `json:"content_type"`
		Secret      string `json:"secret,omitempty"`
	} `json:"config"`
	URL string `json:"url"`
}

// Building the shapes.

func (s *apiPages) userJSON(r *http.Request, u *forge.User) apiUser {
	site := s.baseURL(r)
	return apiUser{Login: u.Name, ID: u.ID, Type: "User", SiteAdmin: u.Admin, HTMLURL: site + "/" + u.Name,
		URL: site + "/api/v1/users/" + u.Name, ReposURL: site + "/api/v1/users/" + u.Name + "/repos"}
}

func (s *apiPages) repoJSON(ctx context.Context, r *http.Request, p *forge.Principal, info *forge.RepoInfo) apiRepo {
	site := s.baseURL(r)
	full := info.Owner + "/" + info.Name
	v := apiRepo{ID: info.ID, Name: info.Name, FullName: full, Private: info.Private, Visibility: "public",
		Description: info.Description, DefaultBranch: info.DefaultBranch, HTMLURL: site + "/" + full,
		CloneURL: site + "/" + full + ".git", URL: site + "/api/v1/repos/" + full, Size: info.Size / 1024,
		Owner: apiUser{Login: info.Owner, ID: info.OwnerID, Type: "User", HTMLURL: site + "/" + info.Owner,
			URL: site + "/api/v1/users/" + info.Owner, ReposURL: site + "/api/v1/users/" + info.Owner + "/repos"}}
	if info.Private {
		v.Visibility = "private"
	}
	if !info.PushedAt.IsZero() {
		t := info.PushedAt.UTC()
		v.PushedAt = &t
	}
	if p != nil {
		a := s.forge.Allowed(ctx, p, info)
		v.Permissions = &apiPermissions{Admin: a >= forge.ActionAdmin, Push: a >= forge.ActionWrite, Pull: a >= forge.ActionRead}
	}
	return v
}

func (s *apiPages) commitJSON(r *http.Request, full string, c *forge.CommitInfo, message string) apiCommit {
	site := s.baseURL(r)
	v := apiCommit{SHA: c.Hash, URL: site + "/api/v1/repos/" + full + "/commits/" + c.Hash, HTML: site + "/" + full + "/commit/" + c.Hash}
	v.Commit.Author = apiPerson{Name: c.Author, Email: c.Email, Date: c.When.UTC()}
	v.Commit.Message = message
	return v
}

// Endpoints.

// me is GET /user: the caller.
func (s *apiPages) me(w http.ResponseWriter, r *http.Request, p *forge.Principal) error {
	if p == nil {
		return errAPIAuth
	}
	u := s.userJSON(r, p.User)
	u.Email = p.User.Email
	return writeJSON(w, http.StatusOK, u)
}

// user is GET /users/{name}.
func (s *apiPages) user(w http.ResponseWriter, r *http.Request, p *forge.Principal) error {
	u, err := s.forge.Meta.User(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.userJSON(r, u))
}

// userRepos is GET /users/{name}/repos: those the caller may see.
func (s *apiPages) userRepos(w http.ResponseWriter, r *http.Request, p *forge.Principal) error {
	pg, err := pagingOf(r)
	if err != nil {
		return err
	}
	u, err := s.forge.Meta.User(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	q := forge.RepoQuery{Owner: u.Name, PublicOnly: p == nil, Limit: 1 << 30}
	if p != nil {
		q.ReadableBy = p.User
	}
	repos, err := s.forge.Meta.Repos(r.Context(), q)
	if err != nil {
		return err
	}
	sort.Slice(repos, func(i, j int) bool { return strings.ToLower(repos[i].Name) < strings.ToLower(repos[j].Name) })
	lo, hi := pg.window(len(repos))
	out := []apiRepo{}
	for i := lo; i < hi; i++ {
		out = append(out, s.repoJSON(r.Context(), r, p, &repos[i]))
	}
	pg.link(w, r, s.baseURL(r), hi < len(repos), len(repos))
	return writeJSON(w, http.StatusOK, out)
}

// createRepo is POST /user/repos.
func (s *apiPages) createRepo(w http.ResponseWriter, r *http.Request, p *forge.Principal) error {
	if p == nil {
		return errAPIAuth
	}
	if p.Scope == forge.ScopeRead {
		return apiErrorf(http.StatusForbidden, "A read token cannot create repositories")
	}
	var body struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		Private     bool   `json:"private"`
	}
	if err := readJSON(w, r, &body); err != nil {
		return err
	}
	info, err := s.forge.CreateRepo(r.Context(), p.User.Name, body.Name, body.Private, body.Description)
	switch {
	case errors.Is(err, forge.ErrExists):
		return apiErrorf(http.StatusUnprocessableEntity, "Repository creation failed: name already exists on this account")
	case errors.Is(err, forge.ErrInvalidName):
		return apiErrorf(http.StatusUnprocessableEntity, "Repository creation failed: %s", strings.TrimPrefix(err.Error(), "forge: "))
	case err != nil:
		return err
	}
	return writeJSON(w, http.StatusCreated, s.repoJSON(r.Context(), r, p, info))
}

// repoOf checks that p may do a on the URL's repository.
// apiRepoCall is a request's repository: its metadata, browser and
// directory.
type apiRepoCall struct {
	info *forge.RepoInfo
	br   *forge.Browser
	dir  string
}

func (c *apiRepoCall) full() string { return c.info.Owner + "/" + c.info.Name }

// repoOf checks that p may do a on the URL's repository.
func (s *apiPages) repoOf(r *http.Request, p *forge.Principal, a forge.Action) (*apiRepoCall, error) {
	if a > forge.ActionRead && p == nil {
		if err := s.forge.Can(r.Context(), nil, r.PathValue("owner"), r.PathValue("repo"), forge.ActionRead); err == nil {
			return nil, errAPIAuth
		}
		return nil, errAPINotFound
	}
	info, _, err := s.forge.Access(r.Context(), p, r.PathValue("owner"), r.PathValue("repo"), a)
	if err != nil {
		return nil, err
	}
	repo, err := s.forge.Store.Get(info.Owner, info.Name)
	if err != nil {
		return nil, err
	}
	br, err := s.browsers.Open(repo.Dir)
	return &apiRepoCall{info, br, repo.Dir}, err
}

// repo is GET /repos/{owner}/{repo}.
func (s *apiPages) repo(w http.ResponseWriter, r *http.Request, p *forge.Principal) error {
	c, err := s.repoOf(r, p, forge.ActionRead)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.repoJSON(r.Context(), r, p, c.info))
}

// branches is GET /repos/{owner}/{repo}/branches, by name.
func (s *apiPages) branches(w http.ResponseWriter, r *http.Request, p *forge.Principal) error {
	pg, err := pagingOf(r)
	if err != nil {
		return err
	}
	c, err := s.repoOf(r, p, forge.ActionRead)
	if err != nil {
		return err
	}
	info := c.info
	refs, _, err := s.browsers.Refs(r.Context(), c.dir)
	if err != nil {
		return err
	}
	patterns, err := s.forge.Meta.ProtectedBranches(r.Context(), info.ID)
	if err != nil {
		return err
	}
	var all []forge.Ref
	for _, rf := range refs {
		if !rf.Tag {
			all = append(all, rf)
		}
	}
	base := s.baseURL(r) + "/api/v1/repos/" + info.Owner + "/" + info.Name
	lo, hi := pg.window(len(all))
	out := []apiBranch{}
	for _, rf := range all[lo:hi] {
		out = append(out, apiBranch{Name: rf.Name, Commit: apiRefCommit{rf.Commit, base + "/commits/" + rf.Commit},
			Protected: forge.BranchProtected(rf.Name, patterns)})
	}
	pg.link(w, r, s.baseURL(r), hi < len(all), len(all))
	return writeJSON(w, http.StatusOK, out)
}

// tags is GET /repos/{owner}/{repo}/tags, newest first.
func (s *apiPages) tags(w http.ResponseWriter, r *http.Request, p *forge.Principal) error {
	pg, err := pagingOf(r)
	if err != nil {
		return err
	}
	c, err := s.repoOf(r, p, forge.ActionRead)
	if err != nil {
		return err
	}
	info := c.info
	all, err := s.pages.tagList(r.Context(), c.br, &repoView{key: strings.ToLower(c.full())})
	if err != nil {
		return err
	}
	site := s.baseURL(r)
	full := info.Owner + "/" + info.Name
	lo, hi := pg.window(len(all))
	out := []apiTag{}
	for _, t := range all[lo:hi] {
		out = append(out, apiTag{Name: t.Name, Commit: apiRefCommit{t.Commit, site + "/api/v1/repos/" + full + "/commits/" + t.Commit},
			ZipballURL: site + "/" + full + "/archive/" + escPath(t.Name) + ".zip", TarballURL: site + "/" + full + "/archive/" + escPath(t.Name) + ".tar.gz",
			Message: t.Message})
	}
	pg.link(w, r, site, hi < len(all), len(all))
	return writeJSON(w, http.StatusOK, out)
}

// resolve turns ?sha= or ?ref= (the default branch if empty) into a
// commit.
func (s *apiPages) resolve(ctx context.Context, c *apiRepoCall, rev string) (string, error) {
	if rev == "" {
		refs, head, err := s.browsers.Refs(ctx, c.dir)
		if err != nil {
			return "", err
		}
		if rev = defaultBranch(refs, head); rev == "" {
			return "", apiErrorf(http.StatusConflict, "Git Repository is empty.")
		}
	}
	ref, commit, rest, err := s.browsers.SplitRef(ctx, c.dir, rev)
	if err != nil || rest != "" || ref == "" {
		return "", apiErrorf(http.StatusNotFound, "No commit found for the ref %s", rev)
	}
	return commit, nil
}

// commits is GET /repos/{owner}/{repo}/commits?sha=&path=: the history,
// newest first. (message is the subject line: the full message is in
// /commits/{sha}.)
func (s *apiPages) commits(w http.ResponseWriter, r *http.Request, p *forge.Principal) error {
	pg, err := pagingOf(r)
	if err != nil {
		return err
	}
	c, err := s.repoOf(r, p, forge.ActionRead)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	commit, err := s.resolve(r.Context(), c, q.Get("sha"))
	if err != nil {
		return err
	}
	cs, err := c.br.LogPath(r.Context(), commit, strings.Trim(q.Get("path"), "/"), pg.skip(), pg.perPage+1)
	if err != nil {
		return err
	}
	more := len(cs) > pg.perPage
	cs = cs[:min(len(cs), pg.perPage)]
	out := make([]apiCommit, 0, len(cs))
	for _, ci := range cs {
		out = append(out, s.commitJSON(r, c.full(), ci, ci.Subject))
	}
	pg.link(w, r, s.baseURL(r), more, -1)
	return writeJSON(w, http.StatusOK, out)
}

// apiDiffLimits bound a commit's files and patches in the API.
var apiDiffLimits = forge.DiffLimits{Files: 300, FileLines: 3000, Lines: 20000, Bytes: 1 << 20}

// commit is GET /repos/{owner}/{repo}/commits/{sha}: the commit with its
// parents, stats and files with their patches.
func (s *apiPages) commit(w http.ResponseWriter, r *http.Request, p *forge.Principal) error {
	c, err := s.repoOf(r, p, forge.ActionRead)
	if err != nil {
		return err
	}
	commit, err := s.resolve(r.Context(), c, r.PathValue("sha"))
	if err != nil {
		return err
	}
	d, err := c.br.Commit(r.Context(), commit, apiDiffLimits)
	if err != nil {
		return err
	}
	full := c.full()
	v := s.commitJSON(r, full, d.CommitInfo, d.Message)
	for _, pa := range d.Parents {
		v.Parents = append(v.Parents, apiRefCommit{pa, s.baseURL(r) + "/api/v1/repos/" + full + "/commits/" + pa})
	}
	v.Stats = &apiStats{d.Added, d.Deleted, d.Added + d.Deleted}
	for _, f := range d.Files {
		af := apiCommitFile{Filename: f.Path(), Status: f.Status, Additions: f.Added, Deletions: f.Deleted, Changes: f.Added + f.Deleted}
		if f.Status == forge.StatusRenamed || f.Status == forge.StatusCopied {
			af.PreviousFilename = f.From
		}
		var b strings.Builder
		for _, h := range f.Hunks {
			b.WriteString(h.Header + "\n")
			for _, l := range h.Lines {
				b.WriteByte(l.Kind)
				b.WriteString(l.Text + "\n")
			}
		}
		af.Patch = strings.TrimSuffix(b.String(), "\n")
		v.Files = append(v.Files, af)
	}
	return writeJSON(w, http.StatusOK, v)
}

// contents is GET /repos/{owner}/{repo}/contents/{path}?ref=: a file,
// base64-encoded, or a directory's entries.
func (s *apiPages) contents(w http.ResponseWriter, r *http.Request, p *forge.Principal) error {
	c, err := s.repoOf(r, p, forge.ActionRead)
	if err != nil {
		return err
	}
	commit, err := s.resolve(r.Context(), c, r.URL.Query().Get("ref"))
	if err != nil {
		return err
	}
	ctx := r.Context()
	want := strings.Trim(r.PathValue("path"), "/")
	site, full := s.baseURL(r), c.full()
	entry := func(fp, typ, hash string, size int64) apiContent {
		v := apiContent{Type: typ, Name: path.Base(fp), Path: fp, SHA: hash, Size: size,
			URL:     site + "/api/v1/repos/" + full + "/contents/" + escPath(fp) + "?ref=" + url.QueryEscape(commit),
			HTMLURL: site + "/" + full + "/blob/" + commit + "/" + escPath(fp)}
		switch typ {
		case "file", "symlink":
			v.DownloadURL = site + "/" + full + "/raw/" + commit + "/" + escPath(fp)
		case "dir":
			v.HTMLURL = site + "/" + full + "/tree/" + commit + "/" + escPath(fp)
		}
		return v
	}
	entries, err := c.br.Tree(ctx, commit, want)
	if err == nil {
		out := []apiContent{}
		for _, e := range entries {
			typ := map[string]string{"blob": "file", "tree": "dir", "commit": "submodule", "symlink": "symlink"}[e.Type]
			out = append(out, entry(path.Join(want, e.Name), typ, e.Hash, e.Size))
		}
		return writeJSON(w, http.StatusOK, out)
	}
	if !errors.Is(err, forge.ErrNotFound) || want == "" {
		return err
	}
	blob, err := c.br.Blob(ctx, commit, want, apiMaxContent)
	if err != nil {
		return err
	}
	dir := path.Dir(want)
	if dir == "." {
		dir = ""
	}
	siblings, err := c.br.Tree(ctx, commit, dir)
	if err != nil {
		return err
	}
	v := entry(want, "file", "", blob.Size)
	for _, e := range siblings {
		if e.Name == v.Name {
			v.SHA = e.Hash
		}
	}
	if blob.Truncated {
		v.Encoding = "none" // as GitHub does past 1 MB: download_url has it
	} else {
		v.Encoding, v.Content = "base64", base64.StdEncoding.EncodeToString(blob.Data)
	}
	return writeJSON(w, http.StatusOK, v)
}

// apiLevels are GitHub's permission names and ours.
var apiLevels = map[string]forge.Level{"pull": forge.LevelRead, "read": forge.LevelRead, "triage": forge.LevelRead,
	"push": forge.LevelWrite, "write": forge.LevelWrite, "maintain": forge.LevelWrite, "admin": forge.LevelAdmin}

// collaborator is PUT /repos/{owner}/{repo}/collaborators/{name}
// {"permission": "pull"|"push"|"admin"} (GitHub's default: push).
func (s *apiPages) collaborator(w http.ResponseWriter, r *http.Request, p *forge.Principal) error {
	c, err := s.repoOf(r, p, forge.ActionAdmin)
	if err != nil {
		return err
	}
	body := struct {
		Permission string `json:"permission"`
	}{"push"}
	if r.ContentLength != 0 {
		if err := readJSON(w, r, &body); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
	}
	level, ok := apiLevels[body.Permission]
	if !ok {
		return apiErrorf(http.StatusUnprocessableEntity, "permission must be pull, push or admin")
	}
	if err := s.forge.SetCollaborator(r.Context(), c.info.ID, r.PathValue("name"), level); err != nil {
		if errors.Is(err, forge.ErrNoUser) {
			return apiErrorf(http.StatusNotFound, "No such user: %s", r.PathValue("name"))
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// createHook is POST /repos/{owner}/{repo}/hooks with GitHub's body:
// {"config": {"url": ..., "secret": ...}, "events": ["push"]}. Only push
// events are delivered.
func (s *apiPages) createHook(w http.ResponseWriter, r *http.Request, p *forge.Principal) error {
	c, err := s.repoOf(r, p, forge.ActionAdmin)
	if err != nil {
		return err
	}
	info := c.info
	var body struct {
		Name   string   `json:"name"`
		Events []string `json:"events"`
		Config struct {
			URL    string `json:"url"`
			Secret string `json:"secret"`
		} `json:"config"`
	}
	if err := readJSON(w, r, &body); err != nil {
		return err
	}
	for _, e := range body.Events {
		if e != "push" {
			return apiErrorf(http.StatusUnprocessableEntity, "Validation failed: only push events are delivered, not %q", e)
		}
	}
	h, err := s.forge.AddWebhook(r.Context(), info.ID, body.Config.URL, body.Config.Secret)
	if errors.Is(err, forge.ErrBadWebhook) {
		return apiErrorf(http.StatusUnprocessableEntity, "Validation failed: %s", strings.TrimPrefix(err.Error(), "forge: "))
	}
	if err != nil {
		return err
	}
	v := apiHook{ID: h.ID, Type: "Repository", Name: "web", Active: true, Events: []string{"push"},
		URL: s.baseURL(r) + "/api/v1/repos/" + info.Owner + "/" + info.Name + "/hooks/" + strconv.FormatInt(h.ID, 10)}
	v.Config.URL, v.Config.ContentType = h.URL, "json"
	if body.Config.Secret != "" {
		v.Config.Secret = "********"
	}
	return writeJSON(w, http.StatusCreated, v)
}

// notFound answers every other path under /api/.
func (s *apiPages) notFound(w http.ResponseWriter, r *http.Request, _ *forge.Principal) error {
	return errAPINotFound
}
