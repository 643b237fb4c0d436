package forge_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/internal/testenv"
)

// tangledRepo makes a bare repository whose history has what makes
// last commits hard: merges that keep one side whole, merges that take
// some files from each side, octopus merges, criss-cross merges, files
// renamed, deleted and added again, mode changes alone, changes undone
// on a side branch, and committer dates that go backwards. It returns
// the repository and the branches' heads.
func tangledRepo(t *testing.T, seed uint64, commits int) (string, map[string]string) {
	testenv.Git(t)
	rng := rand.New(rand.NewPCG(seed, 7))
	dirs := []string{"", "a", "a/b", "c", "d/e/f"}
	type file struct {
		content string
		exec    bool
	}
	type branch struct {
		name  string
		mark  int
		files map[string]file
	}
	copyFiles := func(m map[string]file) map[string]file {
		out := make(map[string]file, len(m))
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	var s bytes.Buffer
	mark := 0
	when := int64(1700000000)
	branches := []*branch{{name: "main", files: map[string]file{}}}
	emit := func(b *branch, msg string, merges []*branch, changes map[string]*file) {
		mark++
		when += int64(rng.IntN(5000))
		date := when
		if rng.IntN(8) == 0 {
			date -= 20000 // a clock that is behind
		}
		fmt.Fprintf(&s, "commit refs/heads/%s\nmark :%d\ncommitter T <t@example.com> %d +0000\ndata %d\n%s\n", b.name, mark, date, len(msg), msg)
		if b.mark > 0 {
			fmt.Fprintf(&s, "from :%d\n", b.mark)
		}
		for _, m := range merges {
			fmt.Fprintf(&s, "merge :%d\n", m.mark)
		}
		paths := make([]string, 0, len(changes))
		for p := range changes {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		for _, p := range paths {
			f := changes[p]
			if f == nil {
				fmt.Fprintf(&s, "D %s\n", p)
				delete(b.files, p)
				continue
			}
			mode := "100644"
			if f.exec {
				mode = "100755"
			}
			fmt.Fprintf(&s, "M %s inline %s\ndata %d\n%s\n", mode, p, len(f.content), f.content)
			b.files[p] = *f
		}
		b.mark = mark
	}
	pick := func(b *branch) string {
		var ps []string
		for p := range b.files {
			ps = append(ps, p)
		}
		sort.Strings(ps)
		if len(ps) == 0 {
			return ""
		}
		return ps[rng.IntN(len(ps))]
	}
	for i := 0; i < commits; i++ {
		b := branches[rng.IntN(len(branches))]
		if b.mark == 0 && b.name != "main" {
			b = branches[0]
		}
		switch r := rng.IntN(20); {
		case r == 0 && len(branches) < 4 && branches[0].mark > 0:
			// A new side branch from main.
			nb := &branch{name: fmt.Sprintf("side%d", len(branches)), mark: branches[0].mark, files: copyFiles(branches[0].files)}
			branches = append(branches, nb)
			continue
		case r <= 3 && len(branches) > 1:
			// A merge into b of other branches: keep b's tree, or take
			// some files from them.
			var others []*branch
			for _, o := range branches {
				if o != b && o.mark > 0 && o.mark != b.mark && (len(others) == 0 || rng.IntN(3) == 0) {
					others = append(others, o)
				}
			}
			if len(others) == 0 || b.mark == 0 {
				continue
			}
			changes := map[string]*file{}
			if r > 1 {
				for _, o := range others {
					for p, f := range o.files {
						if rng.IntN(2) == 0 {
							changes[p] = &f
						}
					}
				}
			}
			emit(b, fmt.Sprintf("merge %d", i), others, changes)
			continue
		}
		changes := map[string]*file{}
		for n := 1 + rng.IntN(3); n > 0; n-- {
			p := pick(b)
			switch op := rng.IntN(10); {
			case op < 4 || p == "":
				d := dirs[rng.IntN(len(dirs))]
				name := fmt.Sprintf("f%d.txt", rng.IntN(6))
				if d != "" {
					name = d + "/" + name
				}
				changes[name] = &file{content: fmt.Sprintf("%s at %d\n", name, i)}
			case op < 6:
				f := b.files[p]
				changes[p] = &file{content: f.content + fmt.Sprintf("edit %d\n", i), exec: f.exec}
			case op == 6:
				changes[p] = nil // deleted (and maybe added again later)
			case op == 7:
				f := b.files[p]
				changes[p] = &file{content: f.content, exec: !f.exec} // mode only
			case op == 8:
				// Renamed into another directory.
				f := b.files[p]
				changes[p] = nil
				d := dirs[rng.IntN(len(dirs))]
				np := strings.TrimPrefix(d+"/r"+filepath.Base(p), "/")
				changes[np] = &file{content: f.content, exec: f.exec}
			default:
				// Undone: the content main has (or none).
				if f, ok := branches[0].files[p]; ok {
					changes[p] = &file{content: f.content, exec: f.exec}
				}
			}
		}
		emit(b, fmt.Sprintf("commit %d", i), nil, changes)
	}
	dir := filepath.Join(t.TempDir(), "tangled.git")
	testenv.Run(t, "", "init", "--bare", "-q", "-b", "main", dir)
	cmd := exec.Command(testenv.Git(t), "fast-import", "--quiet")
	cmd.Dir = dir
	cmd.Env = testenv.GitEnv(t.TempDir())
	cmd.Stdin = &s
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	heads := map[string]string{}
	for _, b := range branches {
		if b.mark > 0 {
			heads[b.name] = strings.TrimSpace(testenv.Run(t, dir, "rev-parse", b.name))
		}
	}
	return dir, heads
}

// checkLastCommits holds LastCommits of every directory at each head to
// git log -1 -- PATH for every entry.
func checkLastCommits(t *testing.T, dir string, heads map[string]string, stage string) {
	t.Helper()
	b, err := forge.Browse(dir)
	require.NoError(t, err)
	defer b.Close()
	ctx := context.Background()
	for name, head := range heads {
		for _, d := range []string{"", "a", "a/b", "c", "d/e/f", "d"} {
			entries, err := b.Tree(ctx, head, d)
			if err != nil {
				continue // not at this commit
			}
			last, complete, err := b.LastCommits(ctx, head, d, 0)
			require.NoError(t, err)
			require.True(t, complete)
			for _, e := range entries {
				p := strings.TrimPrefix(d+"/"+e.Name, "/")
				want := strings.TrimSpace(testenv.Run(t, dir, "log", "-1", "--format=%H", head, "--", p))
				got := ""
				if last[e.Name] != nil {
					got = last[e.Name].Hash
				}
				assert.Equal(t, want, got, "%s: %s at %s (%s)", stage, p, name, head)
			}
			// The history of the directory and of a few entries, as git
			// log -- PATH lists it, whole and a page of it.
			paths := []string{d}
			for i, e := range entries {
				if i < 4 {
					paths = append(paths, strings.TrimPrefix(d+"/"+e.Name, "/"))
				}
			}
			for _, p := range paths {
				args := []string{"log", "--format=%H", head}
				if p != "" {
					args = append(args, "--", p)
				}
				want := strings.Fields(testenv.Run(t, dir, args...))
				assert.Equal(t, want, hashes(t, b, head, p, 0, 0), "%s: log of %q at %s", stage, p, name)
				if len(want) > 3 {
					assert.Equal(t, want[2:min(5, len(want))], hashes(t, b, head, p, 2, 3), "%s: page of the log of %q at %s", stage, p, name)
				}
			}
		}
	}
}

func hashes(t *testing.T, b *forge.Browser, head, p string, skip, limit int) []string {
	cs, err := b.LogPath(context.Background(), head, p, skip, limit)
	require.NoError(t, err)
	out := []string{}
	for _, c := range cs {
		out = append(out, c.Hash)
	}
	return out
}

func TestLastCommitsOnTangledHistories(t *testing.T) {
	t.Parallel()
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			dir, heads := tangledRepo(t, seed, 250)
			checkLastCommits(t, dir, heads, "commit objects")
			testenv.Run(t, dir, "commit-graph", "write", "--reachable")
			checkLastCommits(t, dir, heads, "commit-graph")
			testenv.Run(t, dir, "commit-graph", "write", "--reachable", "--changed-paths")
			checkLastCommits(t, dir, heads, "commit-graph with Bloom filters")
			// Commits newer than the graph, then a second layer.
			work := t.TempDir()
			testenv.Run(t, "", "clone", "-q", dir, work)
			require.NoError(t, os.WriteFile(filepath.Join(work, "late.txt"), []byte("late\n"), 0o644))
			testenv.Run(t, work, "add", ".")
			testenv.Run(t, work, "commit", "-q", "-m", "late")
			testenv.Run(t, work, "push", "-q", "origin", "HEAD:main")
			heads["main"] = strings.TrimSpace(testenv.Run(t, dir, "rev-parse", "main"))
			checkLastCommits(t, dir, heads, "newer than the graph")
			testenv.Run(t, dir, "commit-graph", "write", "--reachable", "--changed-paths", "--split=no-merge")
			checkLastCommits(t, dir, heads, "split graph")
			testenv.Run(t, dir, "repack", "-a", "-d", "-q")
			checkLastCommits(t, dir, heads, "repacked")
		})
	}
}

func TestLastCommitCache(t *testing.T) {
	t.Parallel()
	dir, heads := tangledRepo(t, 9, 200)
	testenv.Run(t, dir, "commit-graph", "write", "--reachable", "--changed-paths")
	b, err := forge.Browse(dir)
	require.NoError(t, err)
	defer b.Close()
	ctx := context.Background()
	head := heads["main"]
	keep := t.TempDir()
	c := &forge.LastCommitCache{Dir: keep}

	_, ok := c.Lookup(b, head, "")
	assert.False(t, ok)
	want, complete, err := b.LastCommits(ctx, head, "", 0)
	require.NoError(t, err)
	require.True(t, complete)

	// Many ask at once: one walk.
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			got, err := c.Get(ctx, b, head, "")
			if err == nil && len(got) != len(want) {
				err = fmt.Errorf("%d entries, want %d", len(got), len(want))
			}
			errs <- err
		}()
	}
	for range 8 {
		require.NoError(t, <-errs)
	}
	assert.Equal(t, int64(1), c.Stats().Walks)
	got, ok := c.Lookup(b, head, "/")
	require.True(t, ok)
	for name, ci := range want {
		assert.Equal(t, ci.Hash, got[name].Hash, name)
		assert.Equal(t, ci.Subject, got[name].Subject, name)
	}

	// A new process finds it on disk.
	c2 := &forge.LastCommitCache{Dir: keep}
	got, ok = c2.Lookup(b, head, "")
	require.True(t, ok)
	assert.Len(t, got, len(want))
	assert.Equal(t, int64(1), c2.Stats().DiskHits)

	// After a push of one commit, the walk reuses the known answer.
	work := t.TempDir()
	testenv.Run(t, "", "clone", "-q", dir, work)
	require.NoError(t, os.WriteFile(filepath.Join(work, "c", "new.txt"), []byte("new\n"), 0o644))
	testenv.Run(t, work, "add", ".")
	testenv.Run(t, work, "commit", "-q", "-m", "one more")
	testenv.Run(t, work, "push", "-q", "origin", "HEAD:main")
	next := strings.TrimSpace(testenv.Run(t, dir, "rev-parse", "main"))
	b2, err := forge.Browse(dir)
	require.NoError(t, err)
	defer b2.Close()
	got, err = c2.Get(ctx, b2, next, "")
	require.NoError(t, err)
	assert.Equal(t, int64(1), c2.Stats().Reused, "answers taken from the parent's result")
	fresh, _, err := b2.LastCommits(ctx, next, "", 0)
	require.NoError(t, err)
	require.Len(t, got, len(fresh))
	for name, ci := range fresh {
		assert.Equal(t, ci.Hash, got[name].Hash, name)
	}
	assert.Equal(t, "one more", got["c"].Subject)

	// A damaged file is walked again.
	files, _ := filepath.Glob(filepath.Join(keep, "*", "*", head+".json"))
	require.Len(t, files, 1)
	require.NoError(t, os.WriteFile(files[0], []byte("{garbage"), 0o644))
	c3 := &forge.LastCommitCache{Dir: keep}
	_, ok = c3.Lookup(b, head, "")
	assert.False(t, ok)
	got, err = c3.Get(ctx, b, head, "")
	require.NoError(t, err)
	assert.Len(t, got, len(want))

	// Walks run through RunDetached when it is set.
	var named []string
	c6 := &forge.LastCommitCache{RunDetached: func(ctx context.Context, name string, f func(context.Context)) {
		named = append(named, name)
		f(ctx)
	}}
	_, err = c6.Get(ctx, b, head, "c")
	require.NoError(t, err)
	assert.Equal(t, []string{"last commits of c/ at " + head[:12]}, named)

	// A waiter that gives up does not stop the walk.
	c4 := &forge.LastCommitCache{}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = c4.Get(cctx, b, heads["main"], "a")
	assert.ErrorIs(t, err, context.Canceled)
	require.Eventually(t, func() bool { _, ok := c4.Lookup(b, heads["main"], "a"); return ok }, 10*time.Second, 5*time.Millisecond)

	// Unknown commits and directories fail, and are not kept.
	_, err = c4.Get(ctx, b, strings.Repeat("1", 40), "")
	assert.ErrorIs(t, err, forge.ErrNotFound)
	_, err = c4.Get(ctx, b, head, "no/such/dir")
	assert.ErrorIs(t, err, forge.ErrNotFound)
	assert.Equal(t, int64(2), c4.Stats().Failures)

	// A full queue refuses rather than piling up.
	c5 := &forge.LastCommitCache{Workers: 1, Queue: 1}
	release := c5.OccupyWorkersForTest()
	short, stop := context.WithTimeout(ctx, 10*time.Millisecond)
	defer stop()
	for _, d := range []string{"", "a"} {
		_, err := c5.Get(short, b, head, d)
		assert.ErrorIs(t, err, context.DeadlineExceeded, "queued behind the busy worker")
		assert.True(t, c5.Pending(b, head, d), "pending: a page does not wait for it again")
	}
	assert.False(t, c5.Pending(b, head, "c"))
	_, err = c5.Get(ctx, b, head, "c")
	assert.ErrorIs(t, err, forge.ErrLastCommitsBusy)
	release()
	require.Eventually(t, func() bool { return c5.Stats().Running == 0 }, 10*time.Second, 5*time.Millisecond)
	_, ok = c5.Lookup(b, head, "a")
	assert.True(t, ok, "the queued walks ran once the worker was free")
}
