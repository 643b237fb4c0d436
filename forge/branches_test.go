package forge_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/internal/testenv"
)

func TestDeleteBranch(t *testing.T) {
	t.Parallel()
	w := newGitWorld(t)
	ctx := context.Background()
	var mu sync.Mutex
	var events []forge.PushEvent
	w.f.OnPush = append(w.f.OnPush, func(_ context.Context, ev forge.PushEvent) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, ev)
	})
	url := w.url("writer", "writer/proj")
	testenv.Run(t, w.src, "push", "-q", url, "master", "branch1", "master:topic", "master:topic2")
	info, err := w.f.Meta.RepoInfo(ctx, "writer", "proj")
	require.NoError(t, err)
	require.NoError(t, w.f.ProtectBranch(ctx, info.ID, "topic2"))
	require.NoError(t, w.f.SetCollaborator(ctx, info.ID, "reader", forge.LevelRead))
	master := strings.TrimSpace(testenv.Run(t, w.src, "rev-parse", "master"))
	as := func(name string) *forge.Principal { return &forge.Principal{User: w.users[name]} }

	for _, tc := range []struct {
		name, user, branch, old string
		want                    error
	}{
		{"anonymous", "", "topic", "", forge.ErrLoginRequired},
		{"reader", "reader", "topic", "", forge.ErrForbidden},
		{"stranger on a private repository", "stranger", "topic", "", forge.ErrNotFound},
		{"default branch", "writer", "master", "", forge.ErrProtected},
		{"protected", "writer", "topic2", "", forge.ErrProtected},
		{"missing", "writer", "nope", "", forge.ErrNoBranch},
		{"stale view", "writer", "topic", strings.Repeat("1", 40), forge.ErrNoBranch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p *forge.Principal
			if tc.user != "" {
				p = as(tc.user)
			}
			assert.ErrorIs(t, w.f.DeleteBranch(ctx, p, "writer", "proj", tc.branch, tc.old), tc.want)
		})
	}
	heads := testenv.Run(t, "", "ls-remote", "--heads", url)
	assert.Contains(t, heads, "refs/heads/topic\n", "refusals delete nothing")

	require.NoError(t, w.f.DeleteBranch(ctx, as("writer"), "writer", "proj", "topic", master))
	heads = testenv.Run(t, "", "ls-remote", "--heads", url)
	assert.NotContains(t, heads, "refs/heads/topic\n")
	assert.Contains(t, heads, "refs/heads/branch1")
	mu.Lock()
	last := events[len(events)-1]
	mu.Unlock()
	assert.Equal(t, "writer/proj", last.Repo)
	assert.Equal(t, "writer", last.Pusher)
	assert.True(t, last.Dropped)
	require.Len(t, last.Updates, 1)
	assert.True(t, last.Updates[0].IsDelete())
	assert.Equal(t, "refs/heads/topic", last.Updates[0].Ref)
}

func TestPushes(t *testing.T) {
	t.Parallel()
	w := newGitWorld(t)
	ctx := context.Background()
	testenv.Run(t, w.src, "push", "-q", w.url("writer", "owner/public"), "master")
	testenv.Run(t, w.src, "push", "-q", w.url("writer", "writer/mine"), "master", "branch1")
	require.NoError(t, w.f.DeleteBranch(ctx, &forge.Principal{User: w.users["writer"]}, "writer", "mine", "branch1", ""))
	w.f.Wait()
	as := func(name string) *forge.Principal {
		if name == "" {
			return nil
		}
		return &forge.Principal{User: w.users[name]}
	}
	for _, tc := range []struct {
		viewer string
		want   []string
	}{
		{"", []string{"owner/public"}},
		{"stranger", []string{"owner/public"}},
		{"writer", []string{"writer/mine", "writer/mine", "owner/public"}},
		{"siteadmin", []string{"writer/mine", "writer/mine", "owner/public"}},
	} {
		t.Run("viewer="+tc.viewer, func(t *testing.T) {
			ps, err := w.f.Pushes(ctx, as(tc.viewer), "writer", 0)
			require.NoError(t, err)
			var got []string
			for _, p := range ps {
				got = append(got, p.Repo)
				assert.Equal(t, "writer", p.Pusher)
				assert.NotEmpty(t, p.Updates)
			}
			assert.Equal(t, tc.want, got)
		})
	}
	ps, err := w.f.Pushes(ctx, as("writer"), "writer", 0)
	require.NoError(t, err)
	assert.True(t, ps[0].Updates[0].IsDelete(), "the newest is the branch deleted on the web")
	_, err = w.f.Pushes(ctx, nil, "nobody", 0)
	assert.ErrorIs(t, err, forge.ErrNoUser)
}
