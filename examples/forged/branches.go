package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/forgekit/forgekit/forge"
)

// refsPerPage is how many branches or tags a page lists (git/git has a
// thousand tags).
const refsPerPage = 30

// branchRow is one branch on the branches page.
type branchRow struct {
	Name, Path, Commit string
	Subject, Author    string
	When               time.Time
	Ahead, Behind      int
	Default, Protected bool
}

// pageOf returns the ?page= of r, 1 for none, or false when it is not
// a page number.
func pageOf(r *http.Request) (int, bool) {
	q := r.URL.Query().Get("page")
	if q == "" {
		return 1, true
	}
	n, err := strconv.Atoi(q)
	return n, err == nil && n >= 1 && n <= 100000
}

// pager links a list's neighbouring pages.
type pager struct{ Prev, Next string }

func newPager(base string, pg, total int) pager {
	var p pager
	if pg > 1 {
		p.Prev = base + "?page=" + strconv.Itoa(pg-1)
	}
	if pg*refsPerPage < total {
		p.Next = base + "?page=" + strconv.Itoa(pg+1)
	}
	return p
}

// cachedJSON is data cached in the fragment cache as JSON, for pages
// whose HTML holds per-visitor parts (forms with CSRF tokens) that a
// shared fragment must not.
func cachedJSON[T any](ctx context.Context, s *site, key string, deps []string, load func(context.Context) (T, error)) (T, error) {
	var v T
	b, err := s.cache.GetOrRender(ctx, key, deps, func(ctx context.Context) ([]byte, error) {
		v, err := load(ctx)
		if err != nil {
			return nil, err
		}
		return json.Marshal(v)
	})
	if err != nil {
		return v, err
	}
	err = json.Unmarshal(b, &v)
	return v, err
}

type branchesPage struct {
	Base, RefPath string // the repository's URL and the default branch's path
	CanWrite      bool   // delete buttons, for writers
	Rows          []branchRow
	Total         int
	pager
}

// branches lists the branches, the default first and then by their last
// commit's date, newest first, each with its ahead and behind counts
// against the default branch; writers get a delete button for those not
// protected. Each page of the list is a fragment cached until a push,
// one for writers and one for the others: the buttons name a single
// form of the page, which alone holds the visitor's CSRF token.
func (s *repoPages) branches(w http.ResponseWriter, r *http.Request) {
	r, sess, rv, br, ok := s.readRepo(w, r, "branches", true)
	if !ok {
		return
	}
	ctx := r.Context()
	pg, ok := pageOf(r)
	if !ok {
		s.notFound(w, r)
		return
	}
	refs, def, err := s.setDefaultRef(ctx, rv)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	key := fmt.Sprintf("branchespage|%s|%s|%d|%t", rv.key, rv.Commit, pg, rv.CanWrite)
	list, err := s.cachedSplice(ctx, key, append(rv.deps(), "refs:"+rv.key), "branchlist", func(ctx context.Context) (any, error) {
		d, err := s.branchList(ctx, br, rv, refs, def, pg)
		if err != nil {
			return nil, err
		}
		if pg > 1 && len(d.Rows) == 0 {
			return nil, errNoPage
		}
		d.Base, d.RefPath, d.CanWrite = rv.Base, rv.RefPath, rv.CanWrite
		d.pager = newPager(rv.Base+"/branches", pg, d.Total)
		return d, nil
	})
	if errors.Is(err, errNoPage) {
		s.notFound(w, r)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "private, no-cache")
	s.render(w, r, sess, http.StatusOK, "branches", &page{Title: "Branches · " + rv.Info.Owner + "/" + rv.Info.Name, Repo: rv, Data: list})
}

// branchList reads the branches of page pg.
func (s *repoPages) branchList(ctx context.Context, br *forge.Browser, rv *repoView, refs []forge.Ref, def string, pg int) (branchesPage, error) {
	var names, ids []string
	byName := map[string]string{}
	for _, rf := range refs {
		if !rf.Tag {
			names, ids = append(names, rf.Name), append(ids, rf.Commit)
			byName[rf.Name] = rf.Commit
		}
	}
	infos, err := br.CommitInfos(ctx, ids)
	if err != nil {
		return branchesPage{}, err
	}
	when := map[string]*forge.CommitInfo{}
	for i, n := range names {
		when[n] = infos[i]
	}
	sort.SliceStable(names, func(i, j int) bool {
		if (names[i] == def) != (names[j] == def) {
			return names[i] == def
		}
		return when[names[i]].When.After(when[names[j]].When)
	})
	patterns, err := s.forge.Meta.ProtectedBranches(ctx, rv.Info.ID)
	if err != nil {
		return branchesPage{}, err
	}
	d := branchesPage{Total: len(names)}
	lo := min((pg-1)*refsPerPage, len(names))
	for _, n := range names[lo:min(lo+refsPerPage, len(names))] {
		c := when[n]
		row := branchRow{Name: n, Path: escPath(n), Commit: c.Hash, Subject: c.Subject, Author: c.Author, When: c.When,
			Default: n == def, Protected: forge.BranchProtected(n, patterns)}
		if !row.Default && def != "" {
			if row.Ahead, row.Behind, err = br.AheadBehind(ctx, byName[def], c.Hash); err != nil {
				return branchesPage{}, err
			}
		}
		d.Rows = append(d.Rows, row)
	}
	return d, nil
}

// deleteBranch deletes a branch for a writer, through the forge (which
// refuses protected branches and the default one).
func (s *repoPages) deleteBranch(w http.ResponseWriter, r *http.Request) {
	r, sess, ok := s.post(w, r)
	if !ok {
		return
	}
	owner, name := r.PathValue("owner"), r.PathValue("repo")
	branch, old := r.PostFormValue("branch"), r.PostFormValue("old")
	if v := r.PostFormValue("delete"); v != "" {
		// The page's buttons send "COMMIT NAME" (see branchlist).
		old, branch, _ = strings.Cut(v, " ")
	}
	err := s.forge.DeleteBranch(r.Context(), principal(sess), owner, name, branch, old)
	switch {
	case err == nil:
		redirect(w, r, "/"+owner+"/"+name+"/branches")
	case errors.Is(err, forge.ErrNotFound), errors.Is(err, forge.ErrForbidden), errors.Is(err, forge.ErrLoginRequired):
		s.notFound(w, r)
	case errors.Is(err, forge.ErrProtected), errors.Is(err, forge.ErrNoBranch):
		http.Error(w, strings.TrimPrefix(err.Error(), "forge: ")+"; the branch stays", http.StatusUnprocessableEntity)
	default:
		s.fail(w, r, err)
	}
}

type tagRow struct {
	forge.Tag
	Path string
}

type tagsPage struct {
	Base  string
	Rows  []tagRow
	Total int
	pager
}

// errNoPage is a page number past the end of a list.
var errNoPage = errors.New("no such page")

// tags lists the tags, newest first, with their annotations and archive
// links; each page of the list is a fragment cached until a push.
func (s *repoPages) tags(w http.ResponseWriter, r *http.Request) {
	r, sess, rv, br, ok := s.readRepo(w, r, "tags", true)
	if !ok {
		return
	}
	ctx := r.Context()
	pg, ok := pageOf(r)
	if !ok {
		s.notFound(w, r)
		return
	}
	if _, _, err := s.setDefaultRef(ctx, rv); err != nil {
		s.fail(w, r, err)
		return
	}
	list, err := s.cachedSplice(ctx, fmt.Sprintf("tagspage|%s|%d", rv.key, pg), append(rv.deps(), "refs:"+rv.key), "taglist", func(ctx context.Context) (any, error) {
		all, err := s.tagList(ctx, br, rv)
		if err != nil {
			return nil, err
		}
		d := tagsPage{Base: rv.Base, Total: len(all), pager: newPager(rv.Base+"/tags", pg, len(all))}
		lo := min((pg-1)*refsPerPage, len(all))
		for _, t := range all[lo:min(lo+refsPerPage, len(all))] {
			d.Rows = append(d.Rows, tagRow{t, escPath(t.Name)})
		}
		if pg > 1 && len(d.Rows) == 0 {
			return nil, errNoPage
		}
		return d, nil
	})
	if errors.Is(err, errNoPage) {
		s.notFound(w, r)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "private, no-cache")
	s.render(w, r, sess, http.StatusOK, "tags", &page{Title: "Tags · " + rv.Info.Owner + "/" + rv.Info.Name, Repo: rv, Data: list,
		Feed: rv.Base + "/tags.atom"})
}

// setDefaultRef points the page at the default branch (the tabs link
// to its history); it returns the refs and the default branch, "" in an
// empty repository.
func (s *repoPages) setDefaultRef(ctx context.Context, rv *repoView) ([]forge.Ref, string, error) {
	refs, head, err := s.browsers.Refs(ctx, rv.dir)
	if err != nil {
		return nil, "", err
	}
	def := defaultBranch(refs, head)
	if def != "" {
		_, err = s.setRef(ctx, rv, def)
	}
	return refs, def, err
}

// tagList is every tag, newest first (versions in descending order
// among tags of one date), cached until a push.
func (s *repoPages) tagList(ctx context.Context, br *forge.Browser, rv *repoView) ([]forge.Tag, error) {
	return cachedJSON(ctx, s.site, "tags|"+rv.key, append(rv.deps(), "refs:"+rv.key), func(ctx context.Context) ([]forge.Tag, error) {
		tags, err := br.Tags(ctx)
		sort.SliceStable(tags, func(i, j int) bool {
			if !tags[i].When.Equal(tags[j].When) {
				return tags[i].When.After(tags[j].When)
			}
			return versionLess(tags[j].Name, tags[i].Name)
		})
		return tags, err
	})
}
