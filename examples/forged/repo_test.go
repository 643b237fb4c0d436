package main

import (
	"context"
	"net/http"
	"net/url"
	"path/filepath"
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
	// pages follow HEAD, not the alphabetically first branch.
	require.NoError(t, f.s.forge.Meta.SetDefaultBranch(context.Background(), info.ID, "gone"))
	f.s.refs.Purge()
	home := b.get("/alice/web")
	assert.Contains(t, home.body, ">login.go</a>")
}
