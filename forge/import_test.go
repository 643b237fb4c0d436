package forge_test

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/internal/testenv"
)

// masterRepo makes a bare repository whose default branch is master,
// with a second branch and tags.
func masterRepo(t *testing.T, dir string) {
	testenv.BareRepo(t, dir, testenv.RepoOptions{Commits: 6, Branches: 1, Tags: 2})
	testenv.Run(t, dir, "branch", "-m", "main", "master")
	testenv.Run(t, dir, "symbolic-ref", "HEAD", "refs/heads/master")
}

// reposLeft lists what is in the store's repository directory of owner,
// temporary entries included.
func reposLeft(t *testing.T, w *world, owner string) []string {
	root := filepath.Dir(filepath.Dir(mustGet(t, w, "owner", "public").Dir))
	ents, _ := os.ReadDir(filepath.Join(root, owner))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func mustGet(t *testing.T, w *world, owner, name string) *forge.Repo {
	r, err := w.f.Store.Get(owner, name)
	require.NoError(t, err)
	return r
}

func TestImportRepo(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "src.git")
	masterRepo(t, src)

	// From a path.
	info, err := w.f.ImportRepo(ctx, "writer", "fromdisk", src, false, "moved in")
	require.NoError(t, err)
	assert.Equal(t, "master", info.DefaultBranch)
	assert.False(t, info.Private)
	assert.Equal(t, "moved in", info.Description)
	r := mustGet(t, w, "writer", "fromdisk")
	head, err := forge.ReadHead(r.Dir)
	require.NoError(t, err)
	assert.Equal(t, "master", head)
	assert.Equal(t, testenv.Run(t, src, "for-each-ref", "--format=%(refname) %(objectname)"),
		testenv.Run(t, r.Dir, "for-each-ref", "--format=%(refname) %(objectname)"), "every branch and tag")
	assert.Empty(t, strings.TrimSpace(testenv.Run(t, r.Dir, "remote")), "the source is not remembered")
	assert.FileExists(t, filepath.Join(r.Dir, "objects", "info", "commit-graph"))
	bitmaps, _ := filepath.Glob(filepath.Join(r.Dir, "objects", "pack", "*.bitmap"))
	assert.Len(t, bitmaps, 1, "maintained: one pack with a bitmap")
	assert.Equal(t, "true\n", testenv.Run(t, r.Dir, "config", "receive.fsckObjects"))
	patterns, _ := w.f.Meta.ProtectedBranches(ctx, info.ID)
	assert.Equal(t, []string{"master"}, patterns)
	testenv.Run(t, r.Dir, "fsck", "--no-dangling")

	// From a URL, served over loopback.
	srv := httptest.NewServer(&gitproto.Handler{Resolver: gitproto.DirResolver{Root: filepath.Dir(src)}})
	defer srv.Close()
	info, err = w.f.ImportRepo(ctx, "writer", "fromurl", srv.URL+"/src.git", true, "")
	require.NoError(t, err)
	assert.True(t, info.Private)
	assert.Equal(t, "master", info.DefaultBranch)

	for _, tc := range []struct {
		name, owner, repo, from string
		want                    error
		text                    string
	}{
		{name: "missing path", owner: "writer", repo: "a", from: filepath.Join(t.TempDir(), "none"), want: forge.ErrNotRepository},
		{name: "not a repository", owner: "writer", repo: "b", from: t.TempDir(), want: forge.ErrNotRepository},
		{name: "URL that fails", owner: "writer", repo: "c", from: srv.URL + "/missing.git", want: forge.ErrNotRepository, text: "cloning"},
		{name: "ext transport", owner: "writer", repo: "d", from: "ext::sh -c touch% /tmp/pwned", want: forge.ErrNotRepository},
		{name: "option as source", owner: "writer", repo: "e", from: "--upload-pack=touch /tmp/pwned", want: forge.ErrNotRepository},
		{name: "name taken", owner: "writer", repo: "fromdisk", from: src, want: forge.ErrExists},
		{name: "name taken in another case", owner: "writer", repo: "FromDisk", from: src, want: forge.ErrExists},
		{name: "no such owner", owner: "nobody", repo: "x", from: src, want: forge.ErrNoUser},
		{name: "invalid name", owner: "writer", repo: "..x", from: src, want: forge.ErrInvalidName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := w.f.ImportRepo(ctx, tc.owner, tc.repo, tc.from, false, "")
			require.ErrorIs(t, err, tc.want)
			assert.Contains(t, err.Error(), tc.text)
		})
	}
	assert.ElementsMatch(t, []string{"fromdisk.git", "fromurl.git"}, reposLeft(t, w, "writer"), "nothing half-created")
	repos, err := w.f.Meta.Repos(ctx, forge.RepoQuery{Owner: "writer"})
	require.NoError(t, err)
	assert.Len(t, repos, 2)
}

func TestAdopt(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	root := filepath.Dir(filepath.Dir(mustGet(t, w, "owner", "public").Dir))
	masterRepo(t, filepath.Join(root, "owner", "legacy.git"))
	testenv.BareRepo(t, filepath.Join(root, "newcomer", "tool.git"), testenv.RepoOptions{Commits: 2})
	require.NoError(t, os.MkdirAll(filepath.Join(root, "owner", "junk.git"), 0o755))
	testenv.BareRepo(t, filepath.Join(root, "owner", "bad..name.git"), testenv.RepoOptions{Commits: 1})
	outside := filepath.Join(t.TempDir(), "outside.git")
	testenv.BareRepo(t, outside, testenv.RepoOptions{Commits: 1})
	require.NoError(t, os.Symlink(outside, filepath.Join(root, "owner", "link.git")))

	// An owner is missing: nothing is adopted, and the error names them.
	_, err := w.f.Adopt(ctx, forge.AdoptOptions{})
	require.ErrorIs(t, err, forge.ErrMissingOwners)
	assert.Contains(t, err.Error(), "newcomer")
	_, err = w.f.Meta.RepoInfo(ctx, "owner", "legacy")
	assert.ErrorIs(t, err, forge.ErrNotFound)

	res, err := w.f.Adopt(ctx, forge.AdoptOptions{CreateOwners: true})
	require.NoError(t, err)
	byName := map[string]forge.Adoption{}
	for _, a := range res {
		byName[a.Repo.Owner+"/"+a.Repo.Name] = a
	}
	require.Len(t, byName, 5, "public and private are registered already: %v", byName)
	assert.ErrorIs(t, byName["owner/bad..name"].Err, forge.ErrInvalidName, "an invalid name")
	require.NoError(t, byName["owner/legacy"].Err)
	assert.Equal(t, "master", byName["owner/legacy"].Info.DefaultBranch)
	assert.True(t, byName["owner/legacy"].Info.Private, "private by default")
	require.NoError(t, byName["newcomer/tool"].Err)
	assert.Equal(t, "main", byName["newcomer/tool"].Info.DefaultBranch)
	_, err = w.f.Meta.User(ctx, "newcomer")
	assert.NoError(t, err, "the owner was created")
	assert.ErrorIs(t, byName["owner/junk"].Err, forge.ErrNotRepository)
	require.Error(t, byName["owner/link"].Err)
	assert.Contains(t, byName["owner/link"].Err.Error(), "outside")
	for _, n := range []string{"junk", "link", "bad..name"} {
		_, err = w.f.Meta.RepoInfo(ctx, "owner", n)
		assert.ErrorIs(t, err, forge.ErrNotFound, n)
	}

	// Adopting again finds only what failed.
	res, err = w.f.Adopt(ctx, forge.AdoptOptions{})
	require.NoError(t, err)
	assert.Len(t, res, 3)
}
