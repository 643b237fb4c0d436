package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"net/http"
	"strconv"
	"time"
)

// Atom feeds (RFC 4287) of a repository's commits and tags and of a
// user's pushes: what feed readers and chat bots follow.

// feedEntries is how many entries a feed has.
const feedEntries = 20

type atomFeed struct {
	XMLName xml.Name    `xml:"http://www.w3.org/2005/Atom feed"`
	ID      string      `xml:"id"`
	Title   string      `xml:"title"`
	Updated string      `xml:"updated"`
	Links   []atomLink  `xml:"link"`
	Author  atomPerson  `xml:"author"`
	Entries []atomEntry `xml:"entry"`
}

type atomLink struct {
	Rel  string `xml:"rel,attr,omitempty"`
	Type string `xml:"type,attr,omitempty"`
	Href string `xml:"href,attr"`
}

type atomPerson struct {
	Name  string `xml:"name"`
	Email string `xml:"email,omitempty"`
}

type atomEntry struct {
	ID      string     `xml:"id"`
	Title   string     `xml:"title"`
	Updated string     `xml:"updated"`
	Author  atomPerson `xml:"author"`
	Link    atomLink   `xml:"link"`
	Content *atomText  `xml:"content,omitempty"`
}

type atomText struct {
	Type string `xml:"type,attr"`
	Body string `xml:",chardata"`
}

func atomTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// newFeed starts a feed whose page is page and whose own URL is self
// (both absolute), written by author when its entries do not say.
func newFeed(title, page, self, author string) *atomFeed {
	return &atomFeed{ID: self, Title: title, Author: atomPerson{Name: author}, Links: []atomLink{
		{Rel: "self", Type: "application/atom+xml", Href: self},
		{Rel: "alternate", Type: "text/html", Href: page},
	}}
}

// add appends an entry; the feed's updated time is its newest entry's.
func (f *atomFeed) add(id, title, link string, when time.Time, author atomPerson, content string) {
	e := atomEntry{ID: id, Title: title, Updated: atomTime(when), Author: author, Link: atomLink{Rel: "alternate", Type: "text/html", Href: link}}
	if author.Name == "" {
		e.Author = f.Author
	}
	if content != "" {
		e.Content = &atomText{Type: "text", Body: content}
	}
	f.Entries = append(f.Entries, e)
	if u := atomTime(when); u > f.Updated {
		f.Updated = u
	}
}

func (f *atomFeed) bytes() ([]byte, error) {
	if f.Updated == "" {
		f.Updated = atomTime(time.Unix(0, 0))
	}
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	if err := xml.NewEncoder(&buf).Encode(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeFeed answers with the feed build makes, cached under key (with
// deps) in the fragment cache.
func (s *site) writeFeed(w http.ResponseWriter, r *http.Request, key string, deps []string, cacheControl string, build func(ctx context.Context) (*atomFeed, error)) {
	b, err := s.cache.GetOrRender(r.Context(), "atom|"+s.baseURL(r)+"|"+key, deps, func(ctx context.Context) ([]byte, error) {
		f, err := build(ctx)
		if err != nil {
			return nil, err
		}
		return f.bytes()
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/atom+xml; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", cacheControl)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// feedCaching is the Cache-Control of a repository's feed: shared
// caches may keep a public repository's for a minute.
func feedCaching(rv *repoView, sess *session) string {
	if rv.Info.Private || sess != nil {
		return "private, no-cache"
	}
	return "public, max-age=60"
}

// commitsFeed serves /{owner}/{repo}/commits/{ref}.atom: the newest
// commits of ref.
func (s *repoPages) commitsFeed(w http.ResponseWriter, r *http.Request, sess *session, rv *repoView) {
	br, err := s.browsers.Open(rv.dir)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	site := s.baseURL(r)
	s.writeFeed(w, r, "commits|"+rv.key+"|"+rv.Ref+"|"+rv.Commit, rv.deps(), feedCaching(rv, sess), func(ctx context.Context) (*atomFeed, error) {
		cs, err := br.Log(ctx, rv.Commit, 0, feedEntries)
		if err != nil {
			return nil, err
		}
		f := newFeed("Commits to "+rv.Ref+" of "+rv.Info.Owner+"/"+rv.Info.Name, site+rv.Base+"/commits/"+rv.RefPath,
			site+rv.Base+"/commits/"+rv.RefPath+".atom", rv.Info.Owner)
		for _, c := range cs {
			u := site + rv.Base + "/commit/" + c.Hash
			f.add(u, c.Subject, u, c.When, atomPerson{Name: c.Author, Email: c.Email}, c.Subject)
		}
		return f, nil
	})
}

// tagsFeed serves /{owner}/{repo}/tags.atom: the newest tags.
func (s *repoPages) tagsFeed(w http.ResponseWriter, r *http.Request) {
	r, sess, rv, br, ok := s.readRepo(w, r, "tags", false)
	if !ok {
		return
	}
	site := s.baseURL(r)
	s.writeFeed(w, r, "tags|"+rv.key, append(rv.deps(), "refs:"+rv.key), feedCaching(rv, sess), func(ctx context.Context) (*atomFeed, error) {
		tags, err := s.tagList(ctx, br, rv)
		if err != nil {
			return nil, err
		}
		f := newFeed("Tags of "+rv.Info.Owner+"/"+rv.Info.Name, site+rv.Base+"/tags", site+rv.Base+"/tags.atom", rv.Info.Owner)
		for _, t := range tags[:min(len(tags), feedEntries)] {
			u := site + rv.Base + "/tree/" + escPath(t.Name)
			msg := t.Message
			if msg == "" {
				msg = t.Name + " at " + t.Commit
			}
			f.add(u, t.Name, u, t.When, atomPerson{Name: t.Tagger}, msg)
		}
		return f, nil
	})
}
