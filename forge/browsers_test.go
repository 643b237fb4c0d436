package forge_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/internal/testenv"
)

// TestBrowsersSplitRef pins the precedence of SplitRef on a repository
// whose refs try to shadow each other, as an imported one may: a branch
// named by an older commit's id, a branch and a tag of one name, refs
// with slashes, and abbreviated ids.
func TestBrowsersSplitRef(t *testing.T) {
	t.Parallel()
	testenv.Git(t)
	work := t.TempDir()
	testenv.Run(t, "", "init", "-q", "-b", "main", work)
	commit := func(file, msg string) string {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(work, file)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(work, file), []byte(msg), 0o644))
		testenv.Run(t, work, "add", ".")
		testenv.Run(t, work, "commit", "-q", "-m", msg)
		return strings.TrimSpace(testenv.Run(t, work, "rev-parse", "HEAD"))
	}
	first := commit("a.txt", "first")
	second := commit("dir/b.txt", "second")
	testenv.Run(t, work, "branch", "feature/x", first)
	testenv.Run(t, work, "branch", "v1", second)
	testenv.Run(t, work, "tag", "v1", first)
	testenv.Run(t, work, "tag", "feature", second)
	testenv.Run(t, work, "branch", first, second) // a branch named by first's id
	dir := filepath.Join(t.TempDir(), "repo.git")
	testenv.Run(t, "", "clone", "-q", "--bare", work, dir)

	p := &forge.Browsers{}
	defer p.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		name, rest        string
		ref, commit, path string
		notFound          bool
	}{
		{name: "branch", rest: "main/dir/b.txt", ref: "main", commit: second, path: "dir/b.txt"},
		{name: "longest ref with slashes", rest: "feature/x/a.txt", ref: "feature/x", commit: first, path: "a.txt"},
		{name: "shorter tag under it", rest: "feature/a.txt", ref: "feature", commit: second, path: "a.txt"},
		{name: "branch before tag", rest: "v1", ref: "v1", commit: second},
		{name: "full id before a branch of that name", rest: first + "/a.txt", ref: first, commit: first, path: "a.txt"},
		{name: "abbreviated id", rest: second[:7] + "/dir", ref: second[:7], commit: second, path: "dir"},
		{name: "too short an id", rest: second[:3], notFound: true},
		{name: "nothing", rest: "nope/a.txt", notFound: true},
	} {
		ref, c, path, err := p.SplitRef(ctx, dir, tc.rest)
		if tc.notFound {
			assert.ErrorIs(t, err, forge.ErrNotFound, tc.name)
			continue
		}
		require.NoError(t, err, tc.name)
		assert.Equal(t, []string{tc.ref, tc.commit, tc.path}, []string{ref, c, path}, tc.name)
	}

	// Refs are kept until told; concurrent readers share one Browser.
	refs, head, err := p.Refs(ctx, dir)
	require.NoError(t, err)
	assert.Equal(t, "main", head)
	testenv.Run(t, dir, "branch", "late", first)
	again, _, _ := p.Refs(ctx, dir)
	assert.Len(t, again, len(refs), "within RefsTTL")
	p.RefsChanged(dir)
	again, _, _ = p.Refs(ctx, dir)
	assert.Len(t, again, len(refs)+1, "after RefsChanged")
	var wg sync.WaitGroup
	opened := make([]*forge.Browser, 8)
	for i := range opened {
		wg.Go(func() { opened[i], _ = p.Open(dir) })
	}
	wg.Wait()
	for _, b := range opened {
		assert.Same(t, opened[0], b)
	}
	p.Forget(dir)
	b, err := p.Open(dir)
	require.NoError(t, err)
	assert.NotSame(t, opened[0], b, "a forgotten directory is opened anew")
}
