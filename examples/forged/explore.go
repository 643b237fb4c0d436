package main

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/forgekit/forgekit/forge"
)

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

// searchResults is how many repositories a search shows.
const searchResults = 50

func (s *explorePages) explore(w http.ResponseWriter, r *http.Request) {
	r, sess := s.withSession(r)
	if q := strings.TrimSpace(r.URL.Query().Get("q")); q != "" {
		s.searchRepos(w, r, sess, q)
		return
	}
	every := s.every
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
	s.render(w, r, sess, http.StatusOK, "explore", &page{Title: "Explore", Data: exploreData{Lists: html}})
}

type exploreData struct {
	Query   string
	Lists   template.HTML
	Results []forge.RepoInfo
	More    bool
}

// searchRepos lists the repositories whose name or description holds q
// and that the visitor may read, most recently pushed first.
func (s *explorePages) searchRepos(w http.ResponseWriter, r *http.Request, sess *session, q string) {
	if len(q) > 200 {
		q = q[:200]
	}
	rq := forge.RepoQuery{Search: q, Limit: searchResults + 1, PublicOnly: sess == nil}
	if sess != nil {
		rq.ReadableBy = sess.user
	}
	found, err := s.forge.Meta.Repos(r.Context(), rq)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d := exploreData{Query: q, Results: found}
	if len(found) > searchResults {
		d.Results, d.More = found[:searchResults], true
	}
	s.render(w, r, sess, http.StatusOK, "explore", &page{Title: q + " · Explore", Data: d})
}

// exploreLists ranks the public repositories by views today, this week
// and in all time (counting), and by the latest push.
func (s *explorePages) exploreLists(ctx context.Context) (any, error) {
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

func (s *explorePages) userPage(w http.ResponseWriter, r *http.Request) {
	r, sess := s.withSession(r)
	owner := r.PathValue("owner")
	u, err := s.forge.Meta.User(r.Context(), owner)
	if name, ok := strings.CutSuffix(owner, ".atom"); ok && errors.Is(err, forge.ErrNoUser) {
		s.userFeed(w, r, sess, name)
		return
	}
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
		if !ri.Private || s.forge.Allowed(r.Context(), principal(sess), &ri) >= forge.ActionRead {
			visible = append(visible, ri)
		}
	}
	s.render(w, r, sess, http.StatusOK, "user", &page{Title: u.Name, Feed: "/" + u.Name + ".atom", Data: struct {
		Name  string
		Repos []forge.RepoInfo
	}{u.Name, visible}})
}

// userFeed serves /{user}.atom: the user's pushes to the repositories
// the reader may see (one query; not cached, since readers differ).
func (s *explorePages) userFeed(w http.ResponseWriter, r *http.Request, sess *session, name string) {
	pushes, err := s.forge.Pushes(r.Context(), principal(sess), name, feedEntries)
	if errors.Is(err, forge.ErrNoUser) {
		s.notFound(w, r)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	site := s.baseURL(r)
	f := newFeed(name+"'s pushes", site+"/"+name, site+"/"+name+".atom", name)
	for _, p := range pushes {
		base := site + "/" + p.Repo
		link, title := base, name+" pushed to "+p.Repo
		var lines []string
		for _, u := range p.Updates {
			ref := strings.TrimPrefix(strings.TrimPrefix(u.Ref, "refs/heads/"), "refs/tags/")
			var verb string
			switch {
			case u.IsDelete():
				verb = "deleted " + ref
				lines = append(lines, verb)
			case u.IsCreate():
				verb = "created " + ref
				lines = append(lines, verb+" at "+short(u.New))
				link = base + "/tree/" + escPath(ref)
			default:
				verb = "pushed to " + ref
				lines = append(lines, ref+": "+short(u.Old)+" → "+short(u.New))
				link = base + "/compare/" + u.Old + "..." + u.New
			}
			if len(p.Updates) == 1 {
				title = name + " " + verb + " in " + p.Repo
			}
		}
		f.add(site+"/"+name+".atom#push-"+strconv.FormatInt(p.ID, 10), title, link, p.At, atomPerson{Name: name}, strings.Join(lines, "\n"))
	}
	b, err := f.bytes()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/atom+xml; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if sess != nil {
		h.Set("Cache-Control", "private, no-cache")
	} else {
		h.Set("Cache-Control", "public, max-age=60")
	}
	w.Write(b)
}

// short is a commit id's first 10 digits.
func short(id string) string { return id[:min(10, len(id))] }
