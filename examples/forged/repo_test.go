package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/internal/testenv"
)

// headOf is the branch git ls-remote --symref says HEAD names.
func headOf(t *testing.T, url string) string {
	t.Helper()
	out := testenv.Run(t, "", "ls-remote", "--symref", url, "HEAD")
	ref, _, _ := strings.Cut(strings.TrimPrefix(out, "ref: refs/heads/"), "\t")
	return ref
}

// TestDefaultBranchIsHead: whichever way a repository is made (the web
// form, the CLI, push-to-create), the first branch pushed becomes its
// default when the configured one is absent; pages, archives and clones
// agree with HEAD; settings move HEAD.
func TestDefaultBranchIsHead(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	tok := f.token("alice")
	work := f.pushSample("alice/sample", "alice", tok)
	b := f.browser()
	b.login("alice", "alice-password")
	require.Equal(t, http.StatusSeeOther, b.post("/new", url.Values{"name": {"web"}}).code)
	f.mustCLI("", "repo", "create", "alice/cli")

	for _, repo := range []string{"web", "cli", "pushed"} {
		t.Run(repo, func(t *testing.T) {
			u := f.gitURL("alice/"+repo, "alice", tok)
			testenv.Run(t, work, "push", "-q", u, "main:master", "feature/login")
			assert.Equal(t, "master", headOf(t, u))
			home := b.get("/alice/" + repo)
			require.Equal(t, http.StatusOK, home.code)
			assert.Contains(t, home.body, ">src</a>", "the home shows master's files")
			assert.NotContains(t, home.body, ">login.go</a>")
			dst := filepath.Join(t.TempDir(), "clone")
			testenv.Run(t, "", "clone", "-q", u, dst)
			assert.Equal(t, "master\n", testenv.Run(t, dst, "branch", "--show-current"))
			settings := b.get("/alice/" + repo + "/settings")
			assert.Contains(t, settings.body, `name="default_branch" value="master"`)
		})
	}

	// Settings move HEAD; a branch that does not exist is refused.
	b.get("/alice/web/settings")
	r := b.post("/alice/web/settings", url.Values{"action": {"general"}, "default_branch": {"feature/login"}, "description": {"d"}})
	require.Equal(t, http.StatusSeeOther, r.code, r.body)
	assert.Equal(t, "feature/login", headOf(t, f.gitURL("alice/web", "alice", tok)))
	assert.Contains(t, b.get("/alice/web").body, ">login.go</a>")
	info, err := f.s.forge.Meta.RepoInfo(context.Background(), "alice", "web")
	require.NoError(t, err)
	assert.Equal(t, "feature/login", info.DefaultBranch)
	b.get("/alice/web/settings")
	r = b.post("/alice/web/settings", url.Values{"action": {"general"}, "default_branch": {"nope"}})
	assert.Equal(t, http.StatusUnprocessableEntity, r.code)
	assert.Contains(t, r.body, "There is no branch")
	assert.Equal(t, "feature/login", headOf(t, f.gitURL("alice/web", "alice", tok)))

	// Metadata that disagrees with HEAD (a repository changed on disk):
	// pages follow HEAD.
	repo, err := f.s.forge.Store.Get("alice", "web")
	require.NoError(t, err)
	testenv.Run(t, repo.Dir, "symbolic-ref", "HEAD", "refs/heads/master")
	f.s.browsers.RefsChanged(repo.Dir)
	home := b.get("/alice/web")
	assert.Contains(t, home.body, ">src</a>")
	assert.NotContains(t, home.body, ">login.go</a>")
}

// TestCommitDiffPages: a commit page shows hunks with line numbers,
// counts and colours; .patch and .diff are git's own, byte for byte; a
// merge says what it is diffed against; a large diff is cut with a link
// to the raw one.
func TestCommitDiffPages(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	work := f.pushSample("alice/proj", "alice", tok)
	write := func(name, content string) {
		require.NoError(t, os.WriteFile(filepath.Join(work, name), []byte(content), 0o644))
	}
	var big strings.Builder
	for i := range 12000 {
		fmt.Fprintf(&big, "line %d\n", i)
	}
	write("big.txt", big.String())
	testenv.Run(t, work, "add", ".")
	testenv.Run(t, work, "commit", "-q", "-m", "a big file")
	testenv.Run(t, work, "merge", "-q", "--no-edit", "feature/login")
	testenv.Run(t, work, "push", "-q", f.gitURL("alice/proj", "alice", tok), "main")
	merge := strings.TrimSpace(testenv.Run(t, work, "rev-parse", "HEAD"))
	bigCommit := strings.TrimSpace(testenv.Run(t, work, "rev-parse", "HEAD^1"))
	edit := strings.TrimSpace(testenv.Run(t, work, "rev-parse", "HEAD^1^1"))
	anon := f.browser()

	r := anon.get("/alice/proj/commit/" + edit)
	require.Equal(t, http.StatusOK, r.code)
	for _, want := range []string{"@@ -1,3 &#43;1,3 @@", `<td class="ln">3</td><td class="ln"></td><td><span class="sign">-</span>`, `href="/alice/proj/commit/` + edit + `.patch"`, "<span class=\"del\">−1</span>"} {
		assert.Contains(t, r.body, want)
	}
	for _, tc := range []struct{ ext, want string }{
		{".patch", testenv.Run(t, work, "format-patch", "-1", "--stdout", edit)},
		{".diff", testenv.Run(t, work, "diff", edit+"^!")},
	} {
		r := anon.get("/alice/proj/commit/" + edit + tc.ext)
		require.Equal(t, http.StatusOK, r.code, tc.ext)
		assert.Equal(t, tc.want, r.body, tc.ext)
		assert.Equal(t, "text/plain; charset=utf-8", r.h.Get("Content-Type"))
		assert.Contains(t, r.h.Get("Cache-Control"), "immutable")
	}
	r = anon.get("/alice/proj/commit/main.diff")
	require.Equal(t, http.StatusFound, r.code, "a ref goes to its commit")
	assert.Equal(t, "/alice/proj/commit/"+merge+".diff", r.h.Get("Location"))
	assert.Equal(t, http.StatusNotFound, anon.get("/alice/proj/commit/nope.patch").code)

	r = anon.get("/alice/proj/commit/" + merge)
	assert.Contains(t, r.body, "This is a merge commit: its changes are shown against its first parent")
	assert.Contains(t, r.body, "login.go")

	r = anon.get("/alice/proj/commit/" + bigCommit)
	assert.Contains(t, r.body, "The rest of this file's changes are not shown.")
	assert.Contains(t, r.body, "12000 additions")
	assert.Less(t, len(r.body), 2<<20, "the page stays bounded")
}

// TestImportAndAdopt: an operator brings repositories in from disk or a
// URL (repo import) or moves bare repositories under repos/ and
// registers them (repo adopt); the pages and clones then work with the
// default branch of their HEAD.
func TestImportAndAdopt(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	src := filepath.Join(t.TempDir(), "src.git")
	testenv.BareRepo(t, src, testenv.RepoOptions{Commits: 5, Tags: 1})
	testenv.Run(t, src, "branch", "-m", "main", "master")
	testenv.Run(t, src, "symbolic-ref", "HEAD", "refs/heads/master")

	out := f.mustCLI("", "repo", "import", "alice/imported", "-from", src, "-description", "from elsewhere")
	assert.Contains(t, out, "imported "+src+" into alice/imported (default branch master")
	anon := f.browser()
	home := anon.get("/alice/imported")
	require.Equal(t, http.StatusOK, home.code)
	assert.Contains(t, home.body, "from elsewhere")
	assert.Contains(t, home.body, ">README.md</a>")
	assert.Equal(t, "master", headOf(t, f.gitURL("alice/imported", "", "")))

	// Over HTTP, from the forge itself.
	out = f.mustCLI("", "repo", "import", "alice/again", "-private", "-from", f.gitURL("alice/imported", "", ""))
	assert.Contains(t, out, "into alice/again (default branch master")
	assert.Equal(t, http.StatusNotFound, anon.get("/alice/again").code, "private")

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no source", []string{"repo", "import", "alice/x"}, "-from"},
		{"missing source", []string{"repo", "import", "alice/x", "-from", "/nonexistent/repo.git"}, "not a git repository"},
		{"name taken", []string{"repo", "import", "alice/imported", "-from", src}, "exists"},
		{"no owner", []string{"repo", "import", "bob/x", "-from", src}, "no such user"},
		{"adopt with an argument", []string{"repo", "adopt", "x"}, "takes no argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := f.cli("", tc.args...)
			require.Error(t, err, out)
			assert.Contains(t, err.Error()+out, tc.want)
		})
	}

	// Adopt: bare repositories placed under repos/.
	testenv.Run(t, "", "clone", "-q", "--bare", src, filepath.Join(f.data, "repos", "alice", "moved.git"))
	testenv.Run(t, "", "clone", "-q", "--bare", src, filepath.Join(f.data, "repos", "carol", "hers.git"))
	out, err := f.cli("", "repo", "adopt")
	require.Error(t, err)
	assert.Contains(t, out+err.Error(), "carol")
	out = f.mustCLI("", "repo", "adopt", "-create-owners", "-public")
	assert.Contains(t, out, "adopted alice/moved (public, default branch master)")
	assert.Contains(t, out, "adopted carol/hers (public, default branch master)")
	assert.Contains(t, anon.get("/carol/hers").body, ">README.md</a>")
	assert.Contains(t, f.mustCLI("", "repo", "adopt"), "nothing to adopt")
}

// TestRefPrecedence pins down how /tree, /blob, /raw, /commit and
// /archive split REF/PATH: a full commit id means that commit whatever
// refs are called; else the longest branch or tag name, the branch
// before a tag of the same name; else an abbreviated commit id.
func TestRefPrecedence(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	work := t.TempDir()
	testenv.Run(t, "", "init", "-q", "-b", "main", work)
	commit := func(file, content, msg string) string {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(work, file)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(work, file), []byte(content), 0o644))
		testenv.Run(t, work, "add", ".")
		testenv.Run(t, work, "commit", "-q", "-m", msg)
		return strings.TrimSpace(testenv.Run(t, work, "rev-parse", "HEAD"))
	}
	old := commit("dir/file.txt", "old\n", "old commit")
	testenv.Run(t, work, "tag", "same") // a tag and a branch called "same"
	mid := commit("dir/file.txt", "mid\n", "mid commit")
	testenv.Run(t, work, "branch", "same")
	testenv.Run(t, work, "tag", "main/dir") // longer than main: /raw/main/dir/... is the tag's
	commit("dir/file.txt", "head\n", "head commit")
	// Refs an import can bring that a push would be refused: a branch
	// named like the old commit, pointing at the head.
	testenv.Run(t, work, "branch", old)
	dst := filepath.Join(f.data, "repos", "alice", "prec.git")
	testenv.Run(t, "", "clone", "-q", "--bare", work, dst)
	f.mustCLI("", "repo", "adopt", "-public")
	anon := f.browser()

	for _, tc := range []struct{ path, want string }{
		{"/alice/prec/raw/" + old + "/dir/file.txt", "old\n"},
		{"/alice/prec/raw/same/dir/file.txt", "mid\n"},
		{"/alice/prec/raw/main/dir/dir/file.txt", "mid\n"}, // the longest ref: tag main/dir
		{"/alice/prec/raw/main/file.txt", ""},
		{"/alice/prec/raw/" + mid[:7] + "/dir/file.txt", "mid\n"},
	} {
		r := anon.get(tc.path)
		if tc.want == "" {
			assert.Equal(t, http.StatusNotFound, r.code, tc.path)
			continue
		}
		require.Equal(t, http.StatusOK, r.code, tc.path)
		assert.Equal(t, tc.want, r.body, tc.path)
	}
	r := anon.get("/alice/prec/commit/" + old)
	require.Equal(t, http.StatusOK, r.code)
	assert.Contains(t, r.body, "old commit")
	assert.NotContains(t, r.body, "head commit")
	r = anon.get("/alice/prec/commits/" + old)
	assert.Contains(t, r.body, "old commit")
	assert.NotContains(t, r.body, "head commit", "history of the commit, not of the branch named like it")
	r = anon.get("/alice/prec/archive/" + old + ".tar.gz")
	require.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, `"`+old+`.tar.gz"`, strings.TrimPrefix(r.h.Get("ETag"), "W/"))

	// Such refs cannot be pushed.
	tok := f.token("alice")
	_, err := testenv.RunErr(t, testenv.Cmd{Dir: work, Args: []string{"push", f.gitURL("alice/prec", "alice", tok), "main:refs/heads/" + mid}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "commit id")
	_, err = testenv.RunErr(t, testenv.Cmd{Dir: work, Args: []string{"push", f.gitURL("alice/prec", "alice", tok), "main:refs/tags/main/docs"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "protected branch main")
}

// TestRefSelectorAndLargeFiles: pages stay bounded on repositories with
// many refs and large files: the selector lists a few refs (the others
// are reached by its field), and a large file shows its start with a
// link to the rest.
func TestRefSelectorAndLargeFiles(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/many")
	work := f.pushSample("alice/many", "alice", tok)
	var big strings.Builder
	for i := range 7000 {
		fmt.Fprintf(&big, "line %d\n", i+1)
	}
	require.NoError(t, os.WriteFile(filepath.Join(work, "big.txt"), []byte(big.String()), 0o644))
	testenv.Run(t, work, "add", ".")
	testenv.Run(t, work, "commit", "-q", "-m", "big")
	args := []string{"push", "-q", f.gitURL("alice/many", "alice", tok), "main"}
	for i := 1; i <= 30; i++ {
		testenv.Run(t, work, "tag", fmt.Sprintf("v1.%d", i))
		args = append(args, fmt.Sprintf("main:refs/heads/b%02d", i), fmt.Sprintf("v1.%d", i))
	}
	testenv.Run(t, work, args...)
	anon := f.browser()

	home := anon.get("/alice/many")
	require.Equal(t, http.StatusOK, home.code)
	assert.Equal(t, refsShown*2, strings.Count(home.body, `<li><a href="/alice/many/tree/`), "20 branches and 20 tags")
	assert.Contains(t, home.body, "and 12 more") // 32 branches: main, feature/login and b01..b30
	assert.Contains(t, home.body, "and 11 more") // 31 tags
	assert.Less(t, strings.Index(home.body, ">v1.30<"), strings.Index(home.body, ">v1.11<"), "newest versions first")
	assert.NotContains(t, home.body, ">v1.9<")
	assert.Less(t, strings.Index(home.body, ">main<"), strings.Index(home.body, ">b01<"), "the default branch first")
	r := anon.get("/alice/many/tree?ref=b29")
	require.Equal(t, http.StatusFound, r.code)
	assert.Equal(t, "/alice/many/tree/b29", r.h.Get("Location"))
	assert.Equal(t, http.StatusNotFound, anon.get("/alice/many/tree?ref=nope").code)

	blob := anon.get("/alice/many/blob/main/big.txt")
	require.Equal(t, http.StatusOK, blob.code)
	assert.Contains(t, blob.body, "its first 5000 lines are shown")
	assert.Contains(t, blob.body, `id="L5000"`)
	assert.NotContains(t, blob.body, `id="L5001"`)
	assert.Less(t, len(blob.body), 1<<20)
	assert.Equal(t, big.String(), anon.get("/alice/many/raw/main/big.txt").body)
}

func TestVersionLess(t *testing.T) {
	t.Parallel()
	names := []string{"v2.10.0", "v2.9.1", "v2.9.0", "v1.0", "v2.10.0-rc1", "a", "v10.0"}
	sort.Slice(names, func(i, j int) bool { return versionLess(names[i], names[j]) })
	assert.Equal(t, []string{"a", "v1.0", "v2.9.0", "v2.9.1", "v2.10.0", "v2.10.0-rc1", "v10.0"}, names)
}
