package main

import (
	"context"
	"errors"
	"html/template"
	"net/http"
	"path"
	"time"

	"github.com/forgekit/forgekit/forge"
)

// blameLineView is one line of a blame page; the commit is shown on the
// first line of each run of lines from the same commit.
type blameLineView struct {
	N      int
	First  bool // the first line of a run from one commit
	Commit *forge.BlameCommit
	HTML   template.HTML
}

type blameView struct {
	Base, BlobURL string
	Lines         []blameLineView
}

type blameData struct {
	Crumbs            []crumb
	View              splice
	Pending, TooLarge bool
	BlobURL           string
}

// blame serves /{owner}/{repo}/blame/{ref}/{path}: each line of the file
// with the commit that last changed it, as git blame finds it. The view
// is cached by commit and path, forever; a blame that takes longer than
// the page's budget goes on in the background and the page says so
// (and reloads itself, with no script), never a 503.
func (s *repoPages) blame(w http.ResponseWriter, r *http.Request) {
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
	d := blameData{Crumbs: crumbs(rv, p, false), BlobURL: rv.Base + "/blob/" + rv.RefPath + "/" + escPath(p)}
	key := "blame|" + rv.key + "|" + rv.Commit + "|" + p
	d.View, err = s.cachedSplice(ctx, key, rv.deps(), "blame", func(ctx context.Context) (any, error) {
		v, err := s.blames.get(ctx, key, s.budget(), func(ctx context.Context) (any, error) {
			return br.Blame(ctx, rv.Commit, p, 0)
		})
		if err != nil {
			return nil, err
		}
		return blameViewOf(v.(*forge.Blame), rv, d.BlobURL), nil
	})
	switch {
	case errors.Is(err, errPending):
		d.Pending = true
		w.Header().Set("Cache-Control", "private, no-store")
		w.Header().Del("ETag")
		w.Header().Set("Refresh", "5")
	case errors.Is(err, forge.ErrTooLarge):
		d.TooLarge = true
	case errors.Is(err, forge.ErrNotFound):
		_, terr := br.Tree(ctx, rv.Commit, p)
		s.elsewhere(w, r, rv, p, "tree", terr == nil)
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	s.render(w, r, sess, http.StatusOK, "blame", &page{Title: "Blame " + p + " · " + rv.Info.Owner + "/" + rv.Info.Name, Repo: rv, Data: d})
}

// budget is how long a page waits for slow work before it says that the
// work goes on in the background.
func (s *repoPages) budget() time.Duration {
	if s.pageBudget > 0 {
		return s.pageBudget
	}
	return lastCommitBudget
}

func blameViewOf(bl *forge.Blame, rv *repoView, blobURL string) blameView {
	v := blameView{Base: rv.Base, BlobURL: blobURL}
	texts := make([]string, len(bl.Lines))
	for i, l := range bl.Lines {
		texts[i] = l.Text
	}
	colored := forge.HighlightLines(path.Base(bl.Path), texts)
	for i, l := range bl.Lines {
		lv := blameLineView{N: i + 1, Commit: bl.Commits[l.Commit], HTML: colored[i]}
		lv.First = i == 0 || bl.Lines[i-1].Commit != l.Commit
		v.Lines = append(v.Lines, lv)
	}
	return v
}
