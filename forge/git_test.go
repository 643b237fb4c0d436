package forge_test

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/internal/testenv"
)

// gitWorld is a world served over loopback with a source repository
// whose only branch is master, as git 2.39 and many projects name it.
type gitWorld struct {
	*world
	url func(user, repo string) string
	src string
}

func newGitWorld(t *testing.T) *gitWorld {
	w := newWorld(t)
	srv := httptest.NewServer(w.f.GitHandler())
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	src := filepath.Join(t.TempDir(), "src")
	testenv.BareRepo(t, src, testenv.RepoOptions{Commits: 4, Branches: 1})
	testenv.Run(t, src, "branch", "-m", "main", "master")
	testenv.Run(t, src, "symbolic-ref", "HEAD", "refs/heads/master")
	return &gitWorld{world: w, src: src, url: func(user, repo string) string {
		return "http://" + user + ":password-" + user + "@" + host + "/" + repo + ".git"
	}}
}

// symref is what git ls-remote --symref says HEAD is.
func symref(t *testing.T, url string) string {
	out := testenv.Run(t, "", "ls-remote", "--symref", url, "HEAD")
	ref, _, _ := strings.Cut(strings.TrimPrefix(out, "ref: refs/heads/"), "\t")
	return ref
}

func TestDefaultBranchFollowsFirstPush(t *testing.T) {
	t.Parallel()
	w := newGitWorld(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		create func(t *testing.T) // nil: push-to-create
		push   []string
		want   string
	}{
		{name: "push-to-create master", push: []string{"master"}, want: "master"},
		{name: "push-to-create several", push: []string{"branch1", "master"}, want: "master"},
		{name: "push-to-create other", push: []string{"master:topic"}, want: "topic"},
		{name: "created then master", push: []string{"master"}, want: "master", create: func(t *testing.T) {
			_, err := w.f.CreateRepo(ctx, "writer", "created-then-master", true, "")
			require.NoError(t, err)
		}},
		{name: "created then main", push: []string{"master:main", "branch1"}, want: "main", create: func(t *testing.T) {
			_, err := w.f.CreateRepo(ctx, "writer", "created-then-main", true, "")
			require.NoError(t, err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.ReplaceAll(tc.name, " ", "-")
			if tc.create != nil {
				tc.create(t)
			}
			url := w.url("writer", "writer/"+name)
			testenv.Run(t, w.src, append([]string{"push", "-q", url}, tc.push...)...)
			assert.Equal(t, tc.want, symref(t, url), "HEAD")
			info, err := w.f.Meta.RepoInfo(ctx, "writer", name)
			require.NoError(t, err)
			assert.Equal(t, tc.want, info.DefaultBranch, "metadata")
			patterns, err := w.f.Meta.ProtectedBranches(ctx, info.ID)
			require.NoError(t, err)
			assert.Contains(t, patterns, tc.want, "the default branch is protected")

			// A clone checks the default branch out.
			dst := filepath.Join(t.TempDir(), "clone")
			testenv.Run(t, "", "clone", "-q", url, dst)
			assert.Equal(t, tc.want+"\n", testenv.Run(t, dst, "branch", "--show-current"))
			// It is protected against force-pushes.
			testenv.Run(t, dst, "commit", "-q", "--amend", "-m", "rewritten")
			_, err = testenv.RunErr(t, testenv.Cmd{Dir: dst, Args: []string{"push", "-q", "-f", "origin", tc.want}})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "protected branch")
		})
	}
}

func TestSetDefaultBranch(t *testing.T) {
	t.Parallel()
	w := newGitWorld(t)
	ctx := context.Background()
	url := w.url("writer", "writer/proj")
	testenv.Run(t, w.src, "push", "-q", url, "master", "branch1")
	info, err := w.f.Meta.RepoInfo(ctx, "writer", "proj")
	require.NoError(t, err)

	require.NoError(t, w.f.SetDefaultBranch(ctx, info, "branch1"))
	assert.Equal(t, "branch1", info.DefaultBranch)
	assert.Equal(t, "branch1", symref(t, url))
	again, _ := w.f.Meta.RepoInfo(ctx, "writer", "proj")
	assert.Equal(t, "branch1", again.DefaultBranch)
	patterns, _ := w.f.Meta.ProtectedBranches(ctx, info.ID)
	assert.Contains(t, patterns, "branch1")

	assert.ErrorIs(t, w.f.SetDefaultBranch(ctx, info, "nope"), forge.ErrNoBranch)
	for _, bad := range []string{"", "a..b", "x.lock", "HEAD", "-x", "a b"} {
		assert.ErrorIs(t, w.f.SetDefaultBranch(ctx, info, bad), forge.ErrInvalidName, bad)
	}
	assert.Equal(t, "branch1", symref(t, url), "unchanged by refusals")

	// An empty repository may name a branch that does not exist yet.
	empty, err := w.f.CreateRepo(ctx, "writer", "empty", false, "")
	require.NoError(t, err)
	require.NoError(t, w.f.SetDefaultBranch(ctx, empty, "trunk"))
	testenv.Run(t, w.src, "push", "-q", w.url("writer", "writer/empty"), "master", "master:trunk")
	assert.Equal(t, "trunk", symref(t, w.url("writer", "writer/empty")))
}

func TestRefNamesThatWouldShadowURLs(t *testing.T) {
	t.Parallel()
	w := newGitWorld(t)
	url := w.url("writer", "writer/proj")
	testenv.Run(t, w.src, "push", "-q", url, "master")
	old := strings.TrimSpace(testenv.Run(t, w.src, "rev-parse", "master~2"))
	for _, tc := range []struct{ name, refspec, want string }{
		{name: "branch named like a commit", refspec: "master:refs/heads/" + old, want: "commit id"},
		{name: "tag named like a commit", refspec: "master:refs/tags/" + old, want: "commit id"},
		{name: "tag under protected", refspec: "master:refs/tags/master/docs", want: "protected branch master"},
		{name: "branch under protected", refspec: "master:refs/heads/master/x", want: "protected branch master"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testenv.RunErr(t, testenv.Cmd{Dir: w.src, Args: []string{"push", "-q", url, tc.refspec}})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	// Names that merely look alike go through.
	testenv.Run(t, w.src, "push", "-q", url, "master:refs/tags/v1", "master:refs/heads/master-2", "master:refs/heads/"+old[:12])
}

// TestGitPolicyLoadsOnce: the hooks of a push use the metadata its
// authorization loaded (here, under a name that has since changed, so
// that reading it again would fail).
func TestGitPolicyLoadsOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	g := w.f.GitPolicy()
	r := httptest.NewRequest("POST", "/owner/public.git/git-receive-pack", nil)
	r.SetBasicAuth("owner", "password-owner")
	actx, who, err := g.AuthorizeContext(r, "owner/public.git", gitproto.Write)
	require.NoError(t, err)
	assert.Equal(t, "owner", who)
	_, err = w.f.RenameRepo(ctx, "owner", "public", "moved")
	require.NoError(t, err)
	push := &gitproto.Push{Repo: "owner/public.git", Updates: []gitproto.RefUpdate{{Ref: "refs/heads/topic", Old: strings.Repeat("0", 40), New: strings.Repeat("1", 40)}}}
	assert.NoError(t, g.PreReceive(actx, push), "with what Authorize loaded")
	assert.ErrorIs(t, g.PreReceive(ctx, push), forge.ErrNotFound, "reading it again")
}
