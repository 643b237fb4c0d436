package codesearch_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge/codesearch"
	"github.com/forgekit/forgekit/forge/codesearch/sqlite"
	"github.com/forgekit/forgekit/internal/testenv"
)

// searcher is a store that answers queries.
type searcher interface {
	codesearch.Store
	Search(context.Context, codesearch.Query) ([]codesearch.Result, error)
	Forget(context.Context, int64) error
}

// openStore returns an empty store: PostgreSQL in the run of
// TestOnPostgres, else SQLite.
func openStore(t *testing.T) searcher {
	ctx := context.Background()
	if c := testenv.OnPostgres(); c != nil {
		db, err := sql.Open("pgx", c.NewDatabase(t))
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		st, err := codesearch.NewPostgres(ctx, db)
		require.NoError(t, err)
		return st
	}
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "search.db"))
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return st
}

func TestOnPostgres(t *testing.T) {
	testenv.RunOnPostgres(t, "openStore")
}

func TestLines(t *testing.T) {
	t.Parallel()
	type l = codesearch.Line
	for _, tc := range []struct {
		name, content, text string
		max                 int
		want                []l
		more                int
	}{
		{"none", "abc\ndef\n", "xyz", 5, nil, 0},
		{"first line, any case", "Hello world\nsecond\nthird\n", "hello", 5,
			[]l{{N: 1, Text: "Hello world", Match: [][2]int{{0, 5}}}, {N: 2, Text: "second", Context: true}}, 0},
		{"context on both sides", "a\nb\nfoo bar foo\nc\nd", "foo", 5,
			[]l{{N: 2, Text: "b", Context: true}, {N: 3, Text: "foo bar foo", Match: [][2]int{{0, 3}, {8, 11}}}, {N: 4, Text: "c", Context: true}}, 0},
		{"adjacent matches share context", "x\nfoo1\nfoo2\ny\n", "foo", 5,
			[]l{{N: 1, Text: "x", Context: true}, {N: 2, Text: "foo1", Match: [][2]int{{0, 3}}}, {N: 3, Text: "foo2", Match: [][2]int{{0, 3}}}, {N: 4, Text: "y", Context: true}}, 0},
		{"one line between", "foo1\nmid\nfoo2", "foo", 5,
			[]l{{N: 1, Text: "foo1", Match: [][2]int{{0, 3}}}, {N: 2, Text: "mid", Context: true}, {N: 3, Text: "foo2", Match: [][2]int{{0, 3}}}}, 0},
		{"capped", "foo\nfoo\nfoo\nfoo\n", "foo", 2,
			[]l{{N: 1, Text: "foo", Match: [][2]int{{0, 3}}}, {N: 2, Text: "foo", Match: [][2]int{{0, 3}}}, {N: 3, Text: "foo", Context: true}}, 2},
		{"last line without newline", "a\nzzfoo", "FOO", 5,
			[]l{{N: 1, Text: "a", Context: true}, {N: 2, Text: "zzfoo", Match: [][2]int{{2, 5}}}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, more := codesearch.Lines([]byte(tc.content), tc.text, tc.max)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.more, more)
		})
	}
}

func FuzzLines(f *testing.F) {
	f.Add("a\nfoo\nb", "foo", 3)
	f.Add("Ünïcode\nfoo FOO\n\n", "Foo", 1)
	f.Fuzz(func(t *testing.T, content, text string, max int) {
		if len(text) == 0 || max < 1 || max > 50 {
			return
		}
		lines, more := codesearch.Lines([]byte(content), text, max)
		prev, matched := 0, 0
		for _, l := range lines {
			if l.N <= prev {
				t.Fatalf("lines out of order: %+v", lines)
			}
			prev = l.N
			for _, m := range l.Match {
				if m[0] < 0 || m[1] > len(l.Text) || m[0] >= m[1] {
					t.Fatalf("range %v outside %q", m, l.Text)
				}
			}
			if !l.Context {
				matched++
			}
		}
		if matched > max || more < 0 {
			t.Fatalf("%d lines shown, %d more, max %d", matched, more, max)
		}
	})
}

// repo is a work tree to commit into, pushed to a bare repository that
// the indexer reads.
type repo struct {
	t         *testing.T
	work, dir string
}

func newRepo(t *testing.T) *repo {
	testenv.Git(t)
	r := &repo{t: t, work: t.TempDir(), dir: filepath.Join(t.TempDir(), "r.git")}
	testenv.Run(t, "", "init", "-q", "-b", "main", r.work)
	testenv.Run(t, "", "init", "-q", "--bare", r.dir)
	return r
}

func (r *repo) write(name, content string) {
	p := filepath.Join(r.work, name)
	require.NoError(r.t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(r.t, os.WriteFile(p, []byte(content), 0o644))
}

func (r *repo) commit(msg string) string {
	testenv.Run(r.t, r.work, "add", "-A")
	testenv.Run(r.t, r.work, "commit", "-q", "--allow-empty", "-m", msg)
	testenv.Run(r.t, r.work, "push", "-q", "-f", r.dir, "main")
	return strings.TrimSpace(testenv.Run(r.t, r.work, "rev-parse", "HEAD"))
}

func paths(rs []codesearch.Result) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%d:%s", r.Repo, r.Path))
	}
	return out
}

func TestIndexer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := openStore(t)
	x := &codesearch.Indexer{Store: st, MaxFileBytes: 1000}
	a, b := newRepo(t), newRepo(t)
	a.write("main.go", "package main\n\nfunc main() { println(\"Needle in a haystack\") }\n")
	a.write("docs/guide.md", "# Guide\n\nNo needle here? A needle!\n")
	a.write("bin.dat", "\x00\x01needle")
	a.write("big.txt", strings.Repeat("needle ", 200))
	a.write("100%_sure.txt", "100% sure_thing\n")
	c1 := a.commit("one")
	b.write("secret.go", "package secret // needle\n")
	b.commit("b")
	require.NoError(t, x.Update(ctx, 1, a.dir, c1))
	require.NoError(t, x.Update(ctx, 2, b.dir, strings.TrimSpace(testenv.Run(t, b.dir, "rev-parse", "main"))))
	got, err := st.Indexed(ctx, 1)
	require.NoError(t, err)
	assert.Equal(t, c1, got)
	assert.Equal(t, int64(2), x.Stats().SkippedFiles, "the binary file and the large one")

	search := func(text string, repos ...int64) []codesearch.Result {
		rs, err := st.Search(ctx, codesearch.Query{Text: text, Repos: repos})
		require.NoError(t, err)
		return rs
	}
	rs := search("NEEDLE", 1)
	assert.Equal(t, []string{"1:docs/guide.md", "1:main.go"}, paths(rs))
	assert.Equal(t, 3, rs[0].Lines[1].N)
	assert.Equal(t, [][2]int{{3, 9}, {18, 24}}, rs[0].Lines[1].Match)
	assert.Equal(t, []string{"1:docs/guide.md", "1:main.go", "2:secret.go"}, paths(search("needle", 1, 2)))
	assert.Equal(t, []string{"2:secret.go"}, paths(search("needle", 2)), "only the repositories asked for")
	assert.Equal(t, []string{"1:100%_sure.txt"}, paths(search("0% s", 1)), "wildcards are literal")
	assert.Empty(t, search("0%_s", 1))
	assert.Empty(t, search(`"quoted"`, 1))
	_, err = st.Search(ctx, codesearch.Query{Text: "ab", Repos: []int64{1}})
	assert.ErrorIs(t, err, codesearch.ErrShortQuery)
	_, err = st.Search(ctx, codesearch.Query{Text: "needle"})
	assert.ErrorIs(t, err, codesearch.ErrNoRepos)

	// A push: only what changed is read again.
	before := x.Stats().Files
	a.write("main.go", "package main\n\nfunc main() {}\n")
	require.NoError(t, os.Remove(filepath.Join(a.work, "docs/guide.md")))
	a.write("new.go", "package main // a new needle\n")
	c2 := a.commit("two")
	require.NoError(t, x.Update(ctx, 1, a.dir, c2))
	assert.Equal(t, before+2, x.Stats().Files, "main.go and new.go, nothing else")
	assert.Equal(t, []string{"1:new.go"}, paths(search("needle", 1)))
	require.NoError(t, x.Update(ctx, 1, a.dir, c2), "the same commit again: nothing to do")

	// History rewritten and the old commit gone: everything again.
	testenv.Run(t, a.work, "checkout", "-q", "--orphan", "other")
	testenv.Run(t, a.work, "rm", "-rq", "--cached", ".")
	for _, f := range []string{"main.go", "new.go", "bin.dat", "big.txt", "100%_sure.txt"} {
		os.Remove(filepath.Join(a.work, f))
	}
	a.write("only.txt", "a lonely needle\n")
	testenv.Run(t, a.work, "add", "-A")
	testenv.Run(t, a.work, "commit", "-q", "-m", "orphan")
	testenv.Run(t, a.work, "push", "-q", "-f", a.dir, "other:main")
	testenv.Run(t, a.dir, "reflog", "expire", "--expire=now", "--all")
	testenv.Run(t, a.dir, "gc", "-q", "--prune=now")
	c3 := strings.TrimSpace(testenv.Run(t, a.dir, "rev-parse", "main"))
	require.NoError(t, x.Update(ctx, 1, a.dir, c3))
	assert.Equal(t, []string{"1:only.txt"}, paths(search("needle", 1)))

	require.NoError(t, st.Forget(ctx, 1))
	assert.Empty(t, search("needle", 1))
	got, _ = st.Indexed(ctx, 1)
	assert.Empty(t, got)
	assert.Error(t, x.Update(ctx, 3, a.dir, "not-a-commit"))
}

// failingStore fails after taking n changes, as a full disk would.
type failingStore struct {
	codesearch.Store
	n int
}

func (s *failingStore) Apply(ctx context.Context, repo int64, commit string, replace bool, changes iter.Seq2[codesearch.Change, error]) error {
	for _, err := range changes {
		if err != nil {
			return err
		}
		if s.n--; s.n == 0 {
			return errors.New("disk full")
		}
	}
	return nil
}

func TestIndexerStopsCleanly(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	a := newRepo(t)
	for i := range 50 {
		a.write(fmt.Sprintf("f%02d.txt", i), strings.Repeat("some text\n", 1000))
	}
	c := a.commit("many")
	x := &codesearch.Indexer{Store: &failingStore{Store: st, n: 3}}
	assert.ErrorContains(t, x.Update(context.Background(), 1, a.dir, c), "disk full")
	got, err := st.Indexed(context.Background(), 1)
	require.NoError(t, err)
	assert.Empty(t, got, "nothing recorded")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, (&codesearch.Indexer{Store: st}).Update(ctx, 1, a.dir, c), context.Canceled)
}
