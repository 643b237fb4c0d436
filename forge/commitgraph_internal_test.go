package forge

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/internal/testenv"
)

// graphRepo makes a repository with a merge, an octopus merge, paths
// with bytes past 0x7f, and a commit-graph with changed-path filters;
// split adds a second layer.
func graphRepo(t *testing.T, split bool) string {
	testenv.Git(t)
	work := t.TempDir()
	testenv.Run(t, "", "init", "-q", "-b", "main", work)
	write := func(name, content string) {
		p := filepath.Join(work, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		testenv.Run(t, work, "add", name)
	}
	commit := func(msg string) { testenv.Run(t, work, "commit", "-q", "-m", msg) }
	for i := range 12 {
		write("dir/sub/f"+strconv.Itoa(i%4)+".txt", strconv.Itoa(i))
		write("ünï/çødé-"+strconv.Itoa(i%3)+".txt", strconv.Itoa(i))
		commit("c" + strconv.Itoa(i))
	}
	for _, b := range []string{"b1", "b2"} {
		testenv.Run(t, work, "checkout", "-q", "-b", b, "main~3")
		write(b+".txt", b)
		commit(b)
	}
	testenv.Run(t, work, "checkout", "-q", "main")
	testenv.Run(t, work, "merge", "-q", "--no-edit", "b1", "b2")
	testenv.Run(t, work, "commit-graph", "write", "--reachable", "--changed-paths")
	if split {
		write("late.txt", "late")
		testenv.Run(t, work, "commit", "-q", "-m", "late")
		testenv.Run(t, work, "commit-graph", "write", "--reachable", "--changed-paths", "--split=no-merge")
	}
	return filepath.Join(work, ".git")
}

func TestCommitGraphAgainstGit(t *testing.T) {
	t.Parallel()
	for _, split := range []bool{false, true} {
		t.Run("split="+strconv.FormatBool(split), func(t *testing.T) {
			t.Parallel()
			dir := graphRepo(t, split)
			g, err := openCommitGraph(dir)
			require.NoError(t, err)
			require.NotNil(t, g)
			defer g.close()
			if split {
				assert.Len(t, g.layers, 2)
			}
			all := strings.Fields(testenv.Run(t, dir, "rev-list", "--all"))
			assert.Equal(t, len(all), int(g.n))
			_, ok := g.lookup(plumbing.NewHash(strings.Repeat("ab", 20)))
			assert.False(t, ok)
			octopus := false
			for _, c := range all {
				pos, ok := g.lookup(plumbing.NewHash(c))
				require.True(t, ok, c)
				assert.Equal(t, c, g.hash(pos).String())
				// git log prints "tree parents... time".
				f := strings.Fields(testenv.Run(t, dir, "log", "-1", "--format=%T %ct %P", c))
				assert.Equal(t, f[0], g.tree(pos).String())
				date, level := g.dateAndLevel(pos)
				assert.Equal(t, f[1], strconv.FormatInt(date, 10))
				assert.Positive(t, level)
				var parents []string
				for _, p := range g.parents(pos, nil) {
					parents = append(parents, g.hash(p).String())
				}
				assert.Equal(t, f[2:], append([]string{}, parents...), "parents of %s", c)
				octopus = octopus || len(parents) > 2

				// Every path that changed against the first parent, and
				// its directories, may be in the filter; git wrote it.
				filter, ok := g.bloom(pos)
				require.True(t, ok, c)
				args := []string{"diff-tree", "-r", "--no-commit-id", "--name-only", "-z", "--root", c}
				if len(f) > 2 {
					args = []string{"diff-tree", "-r", "--no-commit-id", "--name-only", "-z", f[2], c}
				}
				changed := map[string]bool{}
				for _, p := range strings.Split(strings.TrimSuffix(testenv.Run(t, dir, args...), "\x00"), "\x00") {
					for p != "" && p != "." {
						changed[p] = true
						p = filepath.Dir(p)
					}
				}
				for p := range changed {
					assert.True(t, filter.mayContain(newBloomKey(p, filter.version)), "%s changed in %s", p, c)
				}
				// Paths that did not change are mostly ruled out (a filter of a
				// path or two has only 16 bits, so "mostly" is loose).
				misses := 0
				for i := range 200 {
					if filter.mayContain(newBloomKey("never/there-"+strconv.Itoa(i), filter.version)) {
						misses++
					}
				}
				assert.Less(t, misses, 60, "false positives of %s (filter of %d bytes, %d paths)", c, len(filter.data), len(changed))
			}
			assert.True(t, octopus, "the history has an octopus merge")
		})
	}
}

func TestMurmur3(t *testing.T) {
	t.Parallel()
	// Values from git's t0095-bloom.sh (test-tool bloom get_murmur3,
	// get_murmur3_seven_highbit and generate_filter).
	assert.Equal(t, uint32(0), murmur3(0, "", 2))
	assert.Equal(t, uint32(0x627b0c2c), murmur3(0, "Hello world!", 2))
	assert.Equal(t, uint32(0x2e4ff723), murmur3(0, "The quick brown fox jumps over the lazy dog", 2))
	assert.Equal(t, uint32(0xa183ccfd), murmur3(0, "\x99\xaa\xbb\xcc\xdd\xee\xff", 2))
	k := newBloomKey("", 1)
	assert.Equal(t, uint32(0x5615800c), k.h0)
	assert.Equal(t, uint32(0x5b966560), k.h0+k.h1)
	assert.Equal(t, uint32(0x771ae004), k.h0+6*k.h1)
}
