package main

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/forge/codesearch"
	"github.com/forgekit/forgekit/forge/codesearch/sqlite"
	"github.com/forgekit/forgekit/slowlog"
)

// codeStore is where the code index lives: SQLite (DATA/search.db) or
// the forge's PostgreSQL database.
type codeStore interface {
	codesearch.Store
	Search(context.Context, codesearch.Query) ([]codesearch.Result, error)
	Forget(context.Context, int64) error
}

// openCodeStore opens the index: in the PostgreSQL database db, or in
// DATA/search.db when db is empty. The closer closes what it opened.
func openCodeStore(ctx context.Context, data, db string) (codeStore, io.Closer, error) {
	if db == "" {
		st, err := sqlite.Open(ctx, filepath.Join(data, "search.db"))
		return st, st, err
	}
	pg, err := sql.Open("pgx", db)
	if err != nil {
		return nil, nil, err
	}
	st, err := codesearch.NewPostgres(ctx, pg)
	if err != nil {
		pg.Close()
		return nil, nil, err
	}
	return st, pg, nil
}

// codeIndex keeps the index of every repository's default branch
// current: at start every repository is marked, and after a push or a
// settings change the one concerned. A mark is a job of the queue
// (indexJob), unique per repository until it has run, so that one
// repository is indexed by one worker at a time across the processes
// sharing the database; each update reads only the blobs that changed.
// It is safe for concurrent use.
type codeIndex struct {
	store    codeStore
	indexer  *codesearch.Indexer
	forge    *forge.Forge
	browsers *forge.Browsers
	log      *slog.Logger

	// enqueue queues an update of the repositories (the queue's
	// insertion, set before use).
	enqueue func(ctx context.Context, repos ...int64) error

	running sync.Map // repository id → *sync.Mutex: one update of a repository at a time here
}

func newCodeIndex(st codeStore, f *forge.Forge, b *forge.Browsers, log *slog.Logger) *codeIndex {
	return &codeIndex{store: st, indexer: &codesearch.Indexer{Store: st}, forge: f, browsers: b, log: log}
}

// markAll marks every repository (at start: pushes made while no
// process ran are found; an index that is current costs one query per
// repository).
func (x *codeIndex) markAll(ctx context.Context) error {
	repos, err := x.forge.Meta.Repos(ctx, forge.RepoQuery{Limit: 1 << 30})
	if err != nil {
		return err
	}
	ids := make([]int64, len(repos))
	for i, r := range repos {
		ids[i] = r.ID
	}
	return x.enqueue(ctx, ids...)
}

// mark queues repo for an update.
func (x *codeIndex) mark(ctx context.Context, repo int64) {
	if err := x.enqueue(ctx, repo); err != nil {
		x.log.Warn("code index: queueing an update", "repo", repo, "err", err)
	}
}

// run is the job: it brings repo's index to its default branch, and
// again while the branch moved meanwhile (a push whose mark found this
// job running was not queued: see queue.enqueueIndex).
func (x *codeIndex) run(ctx context.Context, id int64) error {
	// A follow-up job and a job queued after the first ended may run at
	// once; here they take turns.
	mu, _ := x.running.LoadOrStore(id, new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	_, repo, err := jobRepo(ctx, x.forge, id)
	if err != nil {
		return err
	}
	if repo == nil {
		return x.store.Forget(ctx, id) // gone
	}
	dir := repo.Dir
	commit, err := defaultHead(ctx, x.browsers, dir)
	for range 10 {
		if err != nil {
			return err
		}
		if commit == "" {
			return x.store.Forget(ctx, id) // empty
		}
		if err := x.indexer.Update(ctx, id, dir, commit); err != nil {
			return err
		}
		var now string
		if now, err = defaultHead(ctx, x.browsers, dir); err == nil && now == commit {
			return nil
		}
		commit = now
	}
	return nil
}

// Pages.

type searchPart struct {
	Text string
	Mark bool
}

type searchLine struct {
	N       int
	URL     string
	Context bool
	Parts   []searchPart
}

type searchFile struct {
	Repo, Path, URL string
	Lines           []searchLine
	More            int
}

type searchData struct {
	Query, Action, Message string
	Repo                   string // owner/name for a repository's search
	Files                  []searchFile
}

// searchResults runs q over repos (which the visitor may read) and
// shapes the results for the page.
func (s *site) searchResults(ctx context.Context, idx *codeIndex, q string, repos map[int64]*forge.RepoInfo) ([]searchFile, string, error) {
	ids := make([]int64, 0, len(repos))
	for id := range repos {
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil, "There is no repository you may search.", nil
	}
	start := time.Now()
	res, err := idx.store.Search(ctx, codesearch.Query{Text: q, Repos: ids})
	slowlog.Count(ctx, slowlog.Query, time.Since(start)) // the code index's one query
	if errors.Is(err, codesearch.ErrShortQuery) {
		return nil, "Search for at least " + strconv.Itoa(codesearch.MinQueryLen) + " characters.", nil
	}
	if err != nil {
		return nil, "", err
	}
	var files []searchFile
	for _, r := range res {
		info := repos[r.Repo]
		base := "/" + info.Owner + "/" + info.Name + "/blob/" + escPath(info.DefaultBranch) + "/" + escPath(r.Path)
		f := searchFile{Repo: info.Owner + "/" + info.Name, Path: r.Path, URL: base, More: r.More}
		for _, l := range r.Lines {
			sl := searchLine{N: l.N, URL: base + "#L" + strconv.Itoa(l.N), Context: l.Context}
			at := 0
			for _, m := range l.Match {
				sl.Parts = append(sl.Parts, searchPart{Text: l.Text[at:m[0]]}, searchPart{Text: l.Text[m[0]:m[1]], Mark: true})
				at = m[1]
			}
			sl.Parts = append(sl.Parts, searchPart{Text: l.Text[at:]})
			f.Lines = append(f.Lines, sl)
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		return nil, "No code matches.", nil
	}
	return files, "", nil
}

// searchQuery is the page's query, cut to a sane length.
func searchQuery(r *http.Request) string {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if len(q) > 200 {
		q = q[:200]
	}
	return q
}

// search serves /search?q=: code in the default branch of every
// repository the visitor may read.
func (s *explorePages) search(w http.ResponseWriter, r *http.Request) {
	r, sess := s.withSession(r)
	d := searchData{Query: searchQuery(r), Action: "/search"}
	if d.Query != "" {
		rq := forge.RepoQuery{PublicOnly: sess == nil, Limit: 1 << 30}
		if sess != nil {
			rq.ReadableBy = sess.user
		}
		list, err := s.forge.Meta.Repos(r.Context(), rq)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		repos := make(map[int64]*forge.RepoInfo, len(list))
		for i := range list {
			repos[list[i].ID] = &list[i]
		}
		if d.Files, d.Message, err = s.searchResults(r.Context(), s.code, d.Query, repos); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	title := "Search"
	if d.Query != "" {
		title = d.Query + " · Search"
	}
	s.render(w, r, sess, http.StatusOK, "search", &page{Title: title, Data: d})
}

// repoSearch serves /{owner}/{repo}/search?q=: code in the repository's
// default branch.
func (s *repoPages) repoSearch(w http.ResponseWriter, r *http.Request) {
	r, sess, rv, _, ok := s.readRepo(w, r, "search", false)
	if !ok {
		return
	}
	if _, _, err := s.setDefaultRef(r.Context(), rv); err != nil {
		s.fail(w, r, err)
		return
	}
	d := searchData{Query: searchQuery(r), Action: rv.Base + "/search", Repo: rv.Info.Owner + "/" + rv.Info.Name}
	if d.Query != "" {
		var err error
		if d.Files, d.Message, err = s.searchResults(r.Context(), s.code, d.Query, map[int64]*forge.RepoInfo{rv.Info.ID: rv.Info}); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	s.render(w, r, sess, http.StatusOK, "search", &page{Title: "Search " + d.Query + " · " + d.Repo, Repo: rv, Data: d})
}
