package gitproto_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/internal/testenv"
)

// TestQuickAncestor: IsAncestor's fast path, which reads loose commits
// instead of running git merge-base, never claims an ancestry git
// denies, and proves the fast-forwards among loose commits, merges
// included.
func TestQuickAncestor(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	testenv.Run(t, dir, "init", "-q", "-b", "main")
	commit := func(msg string) string {
		testenv.Run(t, dir, "commit", "-q", "--allow-empty", "-m", msg)
		return strings.TrimSpace(testenv.Run(t, dir, "rev-parse", "HEAD"))
	}
	var ids []string
	for i := range 5 {
		ids = append(ids, commit(fmt.Sprint("main ", i)))
	}
	testenv.Run(t, dir, "checkout", "-q", "-b", "side", ids[1])
	side := commit("side")
	testenv.Run(t, dir, "checkout", "-q", "main")
	testenv.Run(t, dir, "merge", "-q", "--no-ff", "-m", "merge", "side")
	merge := strings.TrimSpace(testenv.Run(t, dir, "rev-parse", "HEAD"))
	ids = append(ids, side, merge)
	env := []string{"GIT_OBJECT_DIRECTORY=" + filepath.Join(dir, ".git", "objects")}
	for _, a := range ids {
		for _, b := range ids {
			_, err := testenv.RunErr(t, testenv.Cmd{Dir: dir, Args: []string{"merge-base", "--is-ancestor", a, b}})
			git := err == nil
			quick := gitproto.QuickAncestorForTest(env, a, b)
			assert.False(t, quick && !git, "%s is not an ancestor of %s", a[:7], b[:7])
			assert.Equal(t, git, quick, "every commit is loose: the fast path knows (%s, %s)", a[:7], b[:7])
		}
	}
	assert.False(t, gitproto.QuickAncestorForTest(nil, ids[0], ids[1]), "no quarantine: ask git")
	assert.False(t, gitproto.QuickAncestorForTest(env, "not an id", ids[1]))
	testenv.Run(t, dir, "gc", "-q")
	assert.False(t, gitproto.QuickAncestorForTest(env, ids[0], ids[4]), "packed: ask git")
}
