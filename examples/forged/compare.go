package main

import (
	"context"
	"net/http"
	"strings"

	"github.com/forgekit/forgekit/forge"
)

// commitsCompared is how many of the commits between two refs a compare
// page lists.
const commitsCompared = 250

type compareData struct {
	Base, Head string // as the URL names them
	Picking    bool   // the form alone, no comparison yet
	View       splice
}

// compareView is the comparison of two commits, as the compare fragment
// shows it.
type compareView struct {
	*forge.Comparison
	Base, RawURL string
	Log          []logRow
	Diff         commitView
}

// compareForm serves /{owner}/{repo}/compare: a form to pick two refs,
// which it sends to their compare page.
func (s *repoPages) compareForm(w http.ResponseWriter, r *http.Request) {
	r, sess, rv, _, ok := s.readRepo(w, r, "compare", false)
	if !ok {
		return
	}
	q := r.URL.Query()
	base, head := strings.TrimSpace(q.Get("base")), strings.TrimSpace(q.Get("head"))
	if base != "" && head != "" {
		http.Redirect(w, r, rv.Base+"/compare/"+escPath(base)+"..."+escPath(head), http.StatusFound)
		return
	}
	_, def, err := s.setDefaultRef(r.Context(), rv)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, sess, http.StatusOK, "compare", &page{Title: "Compare · " + rv.Info.Owner + "/" + rv.Info.Name, Repo: rv,
		Data: compareData{Base: def, Head: def, Picking: true}})
}

// compare serves /{owner}/{repo}/compare/{base}...{head}: what head has
// that base has not, as GitHub shows it: the merge base, ahead and
// behind counts, the commits between and the diff from the merge base.
// The comparison of two commits never changes: it is cached by their
// ids, and a URL that names both by id is immutable.
func (s *repoPages) compare(w http.ResponseWriter, r *http.Request) {
	r, sess, rv, br, ok := s.readRepo(w, r, "compare", true)
	if !ok {
		return
	}
	ctx := r.Context()
	spec := r.PathValue("spec")
	raw := false
	if rest, ok := strings.CutSuffix(spec, ".diff"); ok {
		spec, raw = rest, true
	}
	base, head, ok := strings.Cut(spec, "...")
	if !ok || base == "" || head == "" {
		s.notFound(w, r)
		return
	}
	_, baseID, rest1, err1 := s.browsers.SplitRef(ctx, rv.dir, base)
	rest2, err2 := s.setRef(ctx, rv, head)
	if err1 != nil || err2 != nil || rest1 != "" || rest2 != "" {
		s.notFound(w, r)
		return
	}
	headID := rv.Commit
	pin := pinned(base, baseID) && pinned(head, headID)
	if raw {
		s.rawCompare(w, r, sess, rv, br, baseID, headID, pin)
		return
	}
	if s.cacheHeaders(w, r, sess, rv, pin) {
		return
	}
	d := compareData{Base: base, Head: head}
	rawURL := rv.Base + "/compare/" + baseID + "..." + headID + ".diff"
	key := "compare|" + rv.key + "|" + baseID + "|" + headID
	var err error
	d.View, err = s.cachedSplice(ctx, key, rv.deps(), "compare", func(ctx context.Context) (any, error) {
		c, err := br.Compare(ctx, baseID, headID, commitsCompared, pageDiffLimits)
		if err != nil {
			return nil, err
		}
		v := compareView{Comparison: c, Base: rv.Base, RawURL: rawURL, Diff: diffView(c.Diff, rv.Base)}
		v.Diff.RawURL, v.Diff.PatchURL = rawURL, ""
		for _, ci := range c.Commits {
			v.Log = append(v.Log, logRow{ci, rv.Base + "/commit/" + ci.Hash})
		}
		return v, nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, sess, http.StatusOK, "compare", &page{Title: "Compare " + base + "..." + head + " · " + rv.Info.Owner + "/" + rv.Info.Name,
		Repo: rv, Data: d})
}

// rawCompare streams the comparison's whole diff as text; a URL that
// names refs is sent to the one naming their commits.
func (s *repoPages) rawCompare(w http.ResponseWriter, r *http.Request, sess *session, rv *repoView, br *forge.Browser, base, head string, pin bool) {
	if !pin {
		w.Header().Set("Cache-Control", "private, no-cache")
		http.Redirect(w, r, rv.Base+"/compare/"+base+"..."+head+".diff", http.StatusFound)
		return
	}
	if s.cacheHeaders(w, r, sess, rv, true) {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'")
	sw := &statusWriter{ResponseWriter: w}
	if err := br.CompareDiff(r.Context(), base, head, sw); err != nil {
		if sw.status == 0 {
			s.fail(w, r, err)
			return
		}
		s.log.Warn("raw compare failed", "id", requestID(r), "path", r.URL.Path, "err", err)
		panic(http.ErrAbortHandler)
	}
}
