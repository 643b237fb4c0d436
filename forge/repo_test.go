package forge_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// chroma's regexp engine keeps a coarse clock goroutine of its own
		// for match timeouts; it is the library's, not a leak of ours.
		goleak.IgnoreAnyFunction("github.com/dlclark/regexp2/v2.runClock"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

func newStore(t *testing.T) *forge.Store {
	testenv.Git(t)
	s, err := forge.NewStore(t.TempDir())
	require.NoError(t, err)
	return s
}

func TestCheckName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"proj", true}, {"my-proj_2.0", true}, {"A", true}, {strings.Repeat("a", forge.MaxNameLen), true},
		{"", false}, {strings.Repeat("a", forge.MaxNameLen+1), false}, {".hidden", false}, {"-dash", false},
		{"a..b", false}, {"proj.git", false}, {"PROJ.GIT", false}, {"admin", true}, {"objects", true}, // the application reserves its own URLs (Forge.Reserved)
		{"a/b", false}, {"a b", false}, {"a\x00b", false}, {"ünï", false}, {"../etc", false},
	} {
		t.Run(fmt.Sprintf("%q", tc.name), func(t *testing.T) {
			err := forge.CheckName(tc.name)
			if tc.ok {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, forge.ErrInvalidName)
				var ne *forge.NameError
				assert.ErrorAs(t, err, &ne)
			}
		})
	}
}

func TestCreateAndPush(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	r, err := s.Create(ctx, "alice", "proj")
	require.NoError(t, err)
	assert.Equal(t, "true", strings.TrimSpace(testenv.Run(t, r.Dir, "config", "repack.writeBitmaps")))
	assert.Equal(t, "true", strings.TrimSpace(testenv.Run(t, r.Dir, "config", "gc.writeCommitGraph")))

	// Case-insensitive uniqueness.
	_, err = s.Create(ctx, "Alice", "PROJ")
	assert.ErrorIs(t, err, forge.ErrExists)
	_, err = s.Create(ctx, "alice", "x.git")
	assert.ErrorIs(t, err, forge.ErrInvalidName)

	// Served through gitproto with the store's resolver, and pushed to.
	srv := httptest.NewServer(&gitproto.Handler{Resolver: s.Resolver(), Authorizer: gitproto.AuthorizerFunc(
		func(*http.Request, string, gitproto.Op) (string, error) { return "alice", nil })})
	defer srv.Close()
	src := filepath.Join(t.TempDir(), "src")
	testenv.BareRepo(t, src, testenv.RepoOptions{Commits: 3})
	testenv.Run(t, src, "push", "-q", srv.URL+"/Alice/Proj.git", "main")
	assert.Equal(t, strings.TrimSpace(testenv.Run(t, src, "rev-parse", "main")), strings.TrimSpace(testenv.Run(t, r.Dir, "rev-parse", "main")))
}

func TestConcurrentCreatesOfOneName(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	var ok, exists atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := "proj"
			if i%2 == 1 {
				name = "PROJ"
			}
			_, err := s.Create(context.Background(), "bob", name)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, forge.ErrExists):
				exists.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, int32(1), ok.Load())
	assert.Equal(t, int32(7), exists.Load())
}

func TestDeleteRestorePurge(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	r, err := s.Create(ctx, "carol", "notes")
	require.NoError(t, err)
	testenv.Run(t, r.Dir, "config", "forge.marker", "kept")
	require.NoError(t, s.Delete(ctx, "carol", "NOTES"))
	_, err = s.Get("carol", "notes")
	assert.ErrorIs(t, err, forge.ErrNotFound)
	trash, err := s.Trash()
	require.NoError(t, err)
	require.Len(t, trash, 1)
	assert.Equal(t, "notes", trash[0].Name)

	r, err = s.Restore(ctx, "carol", "notes")
	require.NoError(t, err)
	assert.Equal(t, "kept", strings.TrimSpace(testenv.Run(t, r.Dir, "config", "forge.marker")), "the same repository came back")

	require.NoError(t, s.Delete(ctx, "carol", "notes"))
	n, err := s.Purge(ctx, time.Hour)
	require.NoError(t, err)
	assert.Zero(t, n, "recent deletions are kept")
	n, err = s.Purge(ctx, 0)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	_, err = s.Restore(ctx, "carol", "notes")
	assert.ErrorIs(t, err, forge.ErrNotFound)
}

func TestRenameAndList(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	for _, n := range []string{"a1", "a2", "a3", "a4", "a5"} {
		_, err := s.Create(ctx, "dave", n)
		require.NoError(t, err)
	}
	_, err := s.Create(ctx, "erin", "x")
	require.NoError(t, err)

	r, err := s.Rename(ctx, "dave", "a5", "erin", "moved")
	require.NoError(t, err)
	assert.Equal(t, "erin", r.Owner)
	_, err = s.Rename(ctx, "dave", "a4", "erin", "X")
	assert.ErrorIs(t, err, forge.ErrExists)
	_, err = s.Rename(ctx, "dave", "a4", "erin", "../../etc")
	assert.ErrorIs(t, err, forge.ErrInvalidName)

	var names []string
	after := ""
	for {
		page, next, err := s.List(ctx, "", after, 2)
		require.NoError(t, err)
		for _, p := range page {
			names = append(names, p.Owner+"/"+p.Name)
		}
		if next == "" {
			break
		}
		after = next
	}
	assert.Equal(t, []string{"dave/a1", "dave/a2", "dave/a3", "dave/a4", "erin/moved", "erin/x"}, names)
	page, _, err := s.List(ctx, "Erin", "", 10)
	require.NoError(t, err)
	assert.Len(t, page, 2)
}

func TestResolverRefusesTraversal(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	_, err := s.Create(context.Background(), "alice", "proj")
	require.NoError(t, err)
	for _, p := range []string{"alice/../alice/proj", "alice/proj/extra", "../repos/alice/proj", "alice", "alice/.proj"} {
		_, err := s.Resolver().Resolve(context.Background(), p)
		assert.ErrorIs(t, err, gitproto.ErrNotFound, p)
	}
	dir, err := s.Resolver().Resolve(context.Background(), "alice/proj.git")
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(dir, filepath.Join("repos", "alice", "proj.git")))
}
