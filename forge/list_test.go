package forge_test

import (
	"context"
	"net/http"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
)

func TestListingsAndSettings(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	m := w.f.Meta
	f := w.f

	users, err := m.Users(ctx)
	require.NoError(t, err)
	assert.Len(t, users, 6)
	assert.Equal(t, "owner", users[0].Name)

	_, err = f.CreateToken(ctx, "reader", "ci", forge.ScopeRead, time.Hour)
	require.NoError(t, err)
	_, err = f.CreateToken(ctx, "reader", "laptop", forge.ScopeWrite, 0)
	require.NoError(t, err)
	toks, err := m.Tokens(ctx, "READER")
	require.NoError(t, err)
	require.Len(t, toks, 2)
	assert.Equal(t, "laptop", toks[0].Name, "newest first")
	assert.True(t, toks[0].Expires.IsZero())
	assert.Equal(t, forge.ScopeRead, toks[1].Scope)

	all, err := m.Repos(ctx, forge.RepoQuery{})
	require.NoError(t, err)
	assert.Len(t, all, 2)
	pub, err := m.Repos(ctx, forge.RepoQuery{PublicOnly: true})
	require.NoError(t, err)
	require.Len(t, pub, 1)
	assert.Equal(t, "public", pub[0].Name)
	none, err := m.Repos(ctx, forge.RepoQuery{Owner: "stranger"})
	require.NoError(t, err)
	assert.Empty(t, none)

	require.NoError(t, m.PushedForTest(ctx, pub[0].ID, time.Now(), 1))
	all, _ = m.Repos(ctx, forge.RepoQuery{Owner: "OWNER"})
	assert.Equal(t, "public", all[0].Name, "most recently pushed first")

	r, err := m.RepoInfo(ctx, "owner", "private")
	require.NoError(t, err)
	r.Private, r.Description = false, "now open"
	require.NoError(t, f.UpdateRepo(ctx, r))
	r2, _ := m.RepoInfo(ctx, "owner", "private")
	assert.False(t, r2.Private)
	assert.Equal(t, "now open", r2.Description)

	cs, err := m.Collaborators(ctx, r.ID)
	require.NoError(t, err)
	assert.Equal(t, []forge.Collaborator{{"reader", forge.LevelRead}, {"repoadmin", forge.LevelAdmin}, {"writer", forge.LevelWrite}}, cs)
	require.NoError(t, f.RemoveCollaborator(ctx, r.ID, "Writer"))
	cs, _ = m.Collaborators(ctx, r.ID)
	assert.Len(t, cs, 2)

	require.NoError(t, f.ProtectBranch(ctx, r.ID, "release/*"))
	require.NoError(t, f.UnprotectBranch(ctx, r.ID, "release/*"))
	pats, _ := m.ProtectedBranches(ctx, r.ID)
	assert.Empty(t, pats)

	h, err := f.AddWebhook(ctx, r.ID, "http://127.0.0.1:1/hook", "s")
	require.NoError(t, err)
	require.NoError(t, f.DeleteWebhook(ctx, r.ID, h.ID))
	hooks, _ := m.Webhooks(ctx, r.ID)
	assert.Empty(t, hooks)
	assert.NoError(t, m.Ping(ctx))
}

func TestCreateAndDeleteRepo(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	info, err := w.f.CreateRepo(ctx, "stranger", "tools", false, "handy")
	require.NoError(t, err)
	assert.Equal(t, "main", info.DefaultBranch)
	pats, _ := w.f.Meta.ProtectedBranches(ctx, info.ID)
	assert.Equal(t, []string{"main"}, pats, "the default branch starts protected")
	repo, err := w.f.Store.Get("stranger", "tools")
	require.NoError(t, err)

	_, err = w.f.CreateRepo(ctx, "stranger", "TOOLS", false, "")
	assert.ErrorIs(t, err, forge.ErrExists)
	_, err = w.f.CreateRepo(ctx, "nobody", "tools", false, "")
	assert.ErrorIs(t, err, forge.ErrNoUser)
	_, err = w.f.CreateRepo(ctx, "stranger", "../x", false, "")
	assert.ErrorIs(t, err, forge.ErrInvalidName)

	require.NoError(t, w.f.DeleteRepo(ctx, "stranger", "tools"))
	_, err = w.f.Meta.RepoInfo(ctx, "stranger", "tools")
	assert.ErrorIs(t, err, forge.ErrNotFound)
	_, err = os.Stat(repo.Dir)
	assert.True(t, os.IsNotExist(err))
	trash, _ := w.f.Store.Trash()
	assert.Len(t, trash, 1, "recoverable from the trash")
	assert.ErrorIs(t, w.f.DeleteRepo(ctx, "stranger", "tools"), forge.ErrNotFound)
}

func TestRenameRepo(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	info, err := w.f.CreateRepo(ctx, "stranger", "tools", false, "handy")
	require.NoError(t, err)
	_, err = w.f.CreateRepo(ctx, "stranger", "other", false, "")
	require.NoError(t, err)
	// Metadata without files: the files move, the metadata refuses, and
	// the files come back.
	_, err = w.f.Meta.CreateRepoInfoForTest(ctx, forge.RepoInfo{Owner: "stranger", Name: "ghost"})
	require.NoError(t, err)

	got, err := w.f.RenameRepo(ctx, "stranger", "TOOLS", "kit")
	require.NoError(t, err)
	assert.Equal(t, "kit", got.Name)
	assert.Equal(t, info.ID, got.ID)
	_, err = w.f.Meta.RepoInfo(ctx, "stranger", "tools")
	assert.ErrorIs(t, err, forge.ErrNotFound, "the old name is free")
	_, err = w.f.Store.Get("stranger", "tools")
	assert.ErrorIs(t, err, forge.ErrNotFound)
	moved, err := w.f.Meta.RepoInfo(ctx, "stranger", "kit")
	require.NoError(t, err)
	assert.Equal(t, "handy", moved.Description)
	pats, _ := w.f.Meta.ProtectedBranches(ctx, moved.ID)
	assert.Equal(t, []string{"main"}, pats, "settings follow the repository")
	_, err = w.f.Store.Get("stranger", "kit")
	require.NoError(t, err)

	for _, tc := range []struct {
		name, to string
		want     error
	}{
		{"taken", "other", forge.ErrExists},
		{"taken in another case", "OTHER", forge.ErrExists},
		{"taken in the metadata only", "ghost", forge.ErrExists},
		{"invalid", "../x", forge.ErrInvalidName},
	} {
		_, err := w.f.RenameRepo(ctx, "stranger", "kit", tc.to)
		assert.ErrorIs(t, err, tc.want, tc.name)
		_, err = w.f.Store.Get("stranger", "kit")
		assert.NoError(t, err, "%s: the files stay", tc.name)
		_, err = w.f.Meta.RepoInfo(ctx, "stranger", "kit")
		assert.NoError(t, err, "%s: the metadata stays", tc.name)
	}
	_, err = w.f.RenameRepo(ctx, "stranger", "nothing", "x")
	assert.ErrorIs(t, err, forge.ErrNotFound)

	got, err = w.f.RenameRepo(ctx, "stranger", "kit", "Kit")
	require.NoError(t, err, "a change of case")
	r, err := w.f.Store.Get("stranger", "kit")
	require.NoError(t, err)
	assert.Equal(t, "Kit", r.Name)
	assert.Equal(t, "Kit", got.Name)
}

func TestSetPasswordForgetsRememberedLogins(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	req := func(pass string) *http.Request {
		r, _ := http.NewRequest("GET", "/", nil)
		r.SetBasicAuth("reader", pass)
		return r
	}
	_, err := w.f.Authenticate(req("password-reader"))
	require.NoError(t, err)
	require.NoError(t, w.f.SetPassword(context.Background(), "reader", "a-new-password"))
	_, err = w.f.Authenticate(req("password-reader"))
	assert.ErrorIs(t, err, forge.ErrBadCredentials, "the old password stops at once")
	_, err = w.f.Authenticate(req("a-new-password"))
	assert.NoError(t, err)
	assert.ErrorIs(t, w.f.SetPassword(context.Background(), "nobody", "long-enough"), forge.ErrNoUser)
}

func TestStampChangesWithThePassword(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	u, err := w.f.Meta.User(ctx, "reader")
	require.NoError(t, err)
	require.NotEmpty(t, u.Stamp)
	same, err := w.f.Meta.CheckPassword(ctx, "reader", "password-reader")
	require.NoError(t, err)
	assert.Equal(t, u.Stamp, same.Stamp)
	other, _ := w.f.Meta.User(ctx, "writer")
	assert.NotEqual(t, u.Stamp, other.Stamp)
	require.NoError(t, w.f.SetPassword(ctx, "reader", "a-new-password"))
	changed, _ := w.f.Meta.User(ctx, "reader")
	assert.NotEqual(t, u.Stamp, changed.Stamp)
	assert.NotContains(t, changed.Stamp, "argon2")
}

func TestRepoSearch(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	for _, r := range []forge.RepoInfo{
		{Owner: "stranger", Name: "Widgets", Description: "Makes 100% of the widgets"},
		{Owner: "stranger", Name: "gadgets", Description: "a_b", Private: true},
	} {
		_, err := w.f.Meta.CreateRepoInfoForTest(ctx, r)
		require.NoError(t, err)
	}
	names := func(q forge.RepoQuery) []string {
		rs, err := w.f.Meta.Repos(ctx, q)
		require.NoError(t, err)
		out := []string{}
		for _, r := range rs {
			out = append(out, r.Owner+"/"+r.Name)
		}
		sort.Strings(out)
		return out
	}
	for _, tc := range []struct {
		name string
		q    forge.RepoQuery
		want []string
	}{
		{"name, any case", forge.RepoQuery{Search: "WIDG", PublicOnly: true}, []string{"stranger/Widgets"}},
		{"description", forge.RepoQuery{Search: "100%", PublicOnly: true}, []string{"stranger/Widgets"}},
		{"a percent sign is no wildcard", forge.RepoQuery{Search: "0%o", PublicOnly: true}, []string{}},
		{"an underscore is no wildcard", forge.RepoQuery{Search: "a_b", ReadableBy: w.users["stranger"]}, []string{"stranger/gadgets"}},
		{"owner/name", forge.RepoQuery{Search: "owner/pub", PublicOnly: true}, []string{"owner/public"}},
		{"anonymous: public only", forge.RepoQuery{Search: "owner", PublicOnly: true}, []string{"owner/public"}},
		{"stranger: public and their own", forge.RepoQuery{Search: "", ReadableBy: w.users["stranger"]}, []string{"owner/public", "stranger/Widgets", "stranger/gadgets"}},
		{"collaborator", forge.RepoQuery{Search: "owner", ReadableBy: w.users["reader"]}, []string{"owner/private", "owner/public"}},
		{"owner", forge.RepoQuery{ReadableBy: w.users["owner"]}, []string{"owner/private", "owner/public", "stranger/Widgets"}},
		{"site administrator", forge.RepoQuery{Search: "gadg", ReadableBy: w.users["siteadmin"]}, []string{"stranger/gadgets"}},
		{"not a collaborator", forge.RepoQuery{Search: "gadg", ReadableBy: w.users["reader"]}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, names(tc.q))
		})
	}
}
