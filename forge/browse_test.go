package forge_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/internal/testenv"
)

func browseRepo(t *testing.T) (*forge.Browser, string, string) {
	testenv.Git(t)
	dir := filepath.Join(t.TempDir(), "r.git")
	testenv.BareRepo(t, dir, testenv.RepoOptions{Commits: 40, Files: 4, Branches: 2, Tags: 2})
	b, err := forge.Browse(dir)
	require.NoError(t, err)
	head := strings.TrimSpace(testenv.Run(t, dir, "rev-parse", "main"))
	return b, dir, head
}

func TestBrowseAgainstGit(t *testing.T) {
	t.Parallel()
	b, dir, head := browseRepo(t)
	ctx := context.Background()

	refs, def, err := b.Refs(ctx)
	require.NoError(t, err)
	assert.Equal(t, "main", def)
	var got []string
	for _, r := range refs {
		got = append(got, r.Name+" "+r.Commit)
	}
	want := strings.Split(strings.TrimSpace(testenv.Run(t, dir, "for-each-ref", "--format=%(refname:short) %(if)%(*objectname)%(then)%(*objectname)%(else)%(objectname)%(end)", "refs/heads", "refs/tags")), "\n")
	assert.ElementsMatch(t, want, got)

	for _, rev := range []string{"main", "v1.0", head[:8], head} {
		c, err := b.Resolve(ctx, rev)
		require.NoError(t, err, rev)
		assert.Equal(t, strings.TrimSpace(testenv.Run(t, dir, "rev-parse", rev+"^{commit}")), c, rev)
	}
	for _, bad := range []string{"", "nope", "main~1", "--all", "HEAD^"} {
		_, err := b.Resolve(ctx, bad)
		assert.ErrorIs(t, err, forge.ErrNotFound, bad)
	}

	for _, d := range []string{"", "dir1", "dir1/sub0"} {
		entries, err := b.Tree(ctx, head, d)
		require.NoError(t, err, d)
		arg := head
		if d != "" {
			arg += ":" + d
		}
		lines := strings.Split(strings.TrimSpace(testenv.Run(t, dir, "ls-tree", "-l", arg)), "\n")
		require.Len(t, entries, len(lines), d)
		byName := map[string]forge.Entry{}
		for _, e := range entries {
			byName[e.Name] = e
		}
		for _, l := range lines {
			meta, name, _ := strings.Cut(l, "\t")
			f := strings.Fields(meta)
			e := byName[name]
			assert.Equal(t, f[0], e.Mode, name)
			assert.Equal(t, f[1], e.Type, name)
			assert.Equal(t, f[2], e.Hash, name)
			if f[3] != "-" {
				assert.Equal(t, f[3], strconv.FormatInt(e.Size, 10), name)
			}
		}
	}

	blob, err := b.Blob(ctx, head, "README.md", 1<<20)
	require.NoError(t, err)
	assert.Equal(t, testenv.Run(t, dir, "cat-file", "-p", head+":README.md"), string(blob.Data))
	assert.False(t, blob.Binary)
	small, err := b.Blob(ctx, head, "README.md", 4)
	require.NoError(t, err)
	assert.True(t, small.Truncated)
	_, err = b.Blob(ctx, head, "no/such/file", 10)
	assert.ErrorIs(t, err, forge.ErrNotFound)

	log, err := b.Log(ctx, head, 5, 10)
	require.NoError(t, err)
	wantLog := strings.Fields(testenv.Run(t, dir, "log", "--format=%H", "--skip=5", "-n", "10", head))
	require.Len(t, log, len(wantLog))
	for i := range log {
		assert.Equal(t, wantLog[i], log[i].Hash)
	}
}

func TestLastCommitsAgainstGit(t *testing.T) {
	t.Parallel()
	b, dir, head := browseRepo(t)
	ctx := context.Background()
	for _, d := range []string{"", "dir3"} {
		last, complete, err := b.LastCommits(ctx, head, d, time.Minute)
		require.NoError(t, err)
		assert.True(t, complete)
		entries, _ := b.Tree(ctx, head, d)
		require.Len(t, last, len(entries))
		for _, e := range entries {
			p := e.Name
			if d != "" {
				p = d + "/" + e.Name
			}
			want := strings.TrimSpace(testenv.Run(t, dir, "log", "-1", "--format=%H", head, "--", p))
			assert.Equal(t, want, last[e.Name].Hash, p)
		}
	}
	// A budget that runs out gives a partial answer, marked as such.
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	_, complete, err := b.LastCommits(ctx2, head, "", time.Minute)
	require.NoError(t, err)
	assert.False(t, complete)
}

func TestLogPath(t *testing.T) {
	t.Parallel()
	b, dir, head := browseRepo(t)
	ctx := context.Background()
	for _, p := range []string{"dir2", "README.md", "dir0/sub1"} {
		got, err := b.LogPath(ctx, head, p, 0, 100)
		require.NoError(t, err)
		want := strings.Fields(testenv.Run(t, dir, "log", "--format=%H", head, "--", p))
		var hashes []string
		for _, c := range got {
			hashes = append(hashes, c.Hash)
		}
		assert.Equal(t, want, hashes, p)
	}

}

// TestLastCommitsWithMergesAndCommitGraph checks the last commit of every
// entry against git on a history with merges, walking the commit
// objects, a commit-graph file, and a commit-graph that is out of date.
func TestLastCommitsWithMergesAndCommitGraph(t *testing.T) {
	t.Parallel()
	testenv.Git(t)
	work := t.TempDir()
	testenv.Run(t, "", "init", "-q", "-b", "main", work)
	write := func(name, content string) {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(work, name)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(work, name), []byte(content), 0o644))
		testenv.Run(t, work, "add", name)
	}
	commit := func(msg string) { testenv.Run(t, work, "commit", "-q", "-m", msg) }
	write("a/x", "1")
	write("a/y", "1")
	write("b/z", "1")
	write("top", "1")
	commit("start")
	testenv.Run(t, work, "checkout", "-q", "-b", "side")
	write("a/x", "side")
	commit("side changes a/x")
	write("a/new", "side")
	commit("side adds a/new")
	testenv.Run(t, work, "checkout", "-q", "main")
	write("b/z", "main")
	commit("main changes b/z")
	write("a/y", "main")
	commit("main changes a/y")
	testenv.Run(t, work, "merge", "-q", "--no-ff", "-m", "merge side", "side")
	write("top", "2")
	commit("main changes top")
	bare := filepath.Join(t.TempDir(), "r.git")
	testenv.Run(t, "", "clone", "-q", "--bare", work, bare)

	check := func(stage string) {
		b, err := forge.Browse(bare)
		require.NoError(t, err)
		head := strings.TrimSpace(testenv.Run(t, bare, "rev-parse", "main"))
		for _, d := range []string{"", "a", "b"} {
			last, complete, err := b.LastCommits(context.Background(), head, d, time.Minute)
			require.NoError(t, err, stage)
			assert.True(t, complete, stage)
			entries, _ := b.Tree(context.Background(), head, d)
			require.Len(t, last, len(entries), stage)
			for _, e := range entries {
				p := strings.TrimPrefix(d+"/"+e.Name, "/")
				want := strings.TrimSpace(testenv.Run(t, bare, "log", "-1", "--format=%H", head, "--", p))
				assert.Equal(t, want, last[e.Name].Hash, "%s: %s", stage, p)
			}
		}
		_, _, err = b.LastCommits(context.Background(), head, "top", time.Minute)
		assert.ErrorIs(t, err, forge.ErrNotFound, "a file is not a directory")
		// The history of paths, as git log -- path lists it.
		for _, p := range []string{"a", "a/x", "a/y", "a/new", "b", "b/z", "top", "nothing"} {
			want := append([]string{}, strings.Fields(testenv.Run(t, bare, "log", "--format=%H", head, "--", p))...)
			cs, err := b.LogPath(context.Background(), head, p, 0, 0)
			require.NoError(t, err, stage)
			got := []string{}
			for _, c := range cs {
				got = append(got, c.Hash)
			}
			assert.Equal(t, want, got, "%s: log of %s", stage, p)
			want = append([]string{}, strings.Fields(testenv.Run(t, bare, "log", "--format=%H", "--skip=1", "-2", head, "--", p))...)
			cs, err = b.LogPath(context.Background(), head, p, 1, 2)
			require.NoError(t, err, stage)
			got = got[:0]
			for _, c := range cs {
				got = append(got, c.Hash)
			}
			assert.Equal(t, want, got, "%s: log of %s, skip 1, limit 2", stage, p)
		}
	}
	check("commit objects")
	testenv.Run(t, bare, "commit-graph", "write", "--reachable")
	require.FileExists(t, filepath.Join(bare, "objects", "info", "commit-graph"))
	check("commit-graph")
	write("a/x", "after the graph")
	commit("newer than the graph")
	testenv.Run(t, work, "push", "-q", bare, "main")
	check("stale commit-graph")
}

// TestLastCommitsConcurrentlyAndAfterClose: walks share the Browser's
// pool of open packs safely, and still work once it is closed.
func TestLastCommitsConcurrentlyAndAfterClose(t *testing.T) {
	t.Parallel()
	b, _, head := browseRepo(t)
	ctx := context.Background()
	want, _, err := b.LastCommits(ctx, head, "", time.Minute)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5 {
				got, complete, err := b.LastCommits(ctx, head, "", time.Minute)
				assert.NoError(t, err)
				assert.True(t, complete)
				assert.Equal(t, want, got)
			}
		})
	}
	wg.Wait()
	require.NoError(t, b.Close())
	got, complete, err := b.LastCommits(ctx, head, "dir3", time.Minute)
	require.NoError(t, err)
	assert.True(t, complete)
	assert.NotEmpty(t, got)
}
