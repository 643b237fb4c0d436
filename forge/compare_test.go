package forge_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/internal/testenv"
)

func TestCompareAgainstGit(t *testing.T) {
	t.Parallel()
	dir, commits := diffRepo(t)
	b, err := forge.Browse(dir)
	require.NoError(t, err)
	ctx := context.Background()
	side := strings.TrimSpace(testenv.Run(t, dir, "rev-parse", "side"))
	main := commits[len(commits)-1]
	for _, tc := range []struct{ name, base, head string }{
		{"main against side", side, main},
		{"side against main", main, side},
		{"against itself", main, main},
		{"against an ancestor", commits[0], main},
		{"root against later", main, commits[0]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := b.Compare(ctx, tc.base, tc.head, 2, forge.DiffLimits{})
			require.NoError(t, err)
			assert.Equal(t, strings.TrimSpace(testenv.Run(t, dir, "merge-base", tc.base, tc.head)), c.MergeBase)
			counts := strings.Fields(testenv.Run(t, dir, "rev-list", "--left-right", "--count", tc.base+"..."+tc.head))
			assert.Equal(t, counts[1], strconv.Itoa(c.Ahead), "ahead")
			assert.Equal(t, counts[0], strconv.Itoa(c.Behind), "behind")
			want := strings.Fields(testenv.Run(t, dir, "rev-list", "--max-count=2", tc.head, "^"+tc.base))
			got := []string{}
			for _, ci := range c.Commits {
				got = append(got, ci.Hash)
			}
			assert.Equal(t, want, got)
			names, _, _ := oracleDiff(t, dir, tc.head, c.MergeBase)
			var files []string
			for _, f := range c.Diff.Files {
				files = append(files, f.Path())
			}
			assert.Len(t, files, len(names))
			assert.Equal(t, tc.head, c.Diff.Hash)
		})
	}
	var buf bytes.Buffer
	require.NoError(t, b.CompareDiff(ctx, side, main, &buf))
	assert.Equal(t, testenv.Run(t, dir, "diff", side+"..."+main), buf.String())
	_, err = b.Compare(ctx, strings.Repeat("0", 40), main, 0, forge.DiffLimits{})
	assert.ErrorIs(t, err, forge.ErrNotFound)
}

func TestCompareUnrelated(t *testing.T) {
	t.Parallel()
	testenv.Git(t)
	work := t.TempDir()
	testenv.Run(t, "", "init", "-q", "-b", "main", work)
	require.NoError(t, os.WriteFile(filepath.Join(work, "a"), []byte("a\n"), 0o644))
	testenv.Run(t, work, "add", "-A")
	testenv.Run(t, work, "commit", "-q", "-m", "a")
	testenv.Run(t, work, "checkout", "-q", "--orphan", "other")
	require.NoError(t, os.WriteFile(filepath.Join(work, "b"), []byte("b\n"), 0o644))
	testenv.Run(t, work, "add", "-A")
	testenv.Run(t, work, "commit", "-q", "-m", "b")
	b, err := forge.Browse(work)
	require.NoError(t, err)
	base := strings.TrimSpace(testenv.Run(t, work, "rev-parse", "main"))
	head := strings.TrimSpace(testenv.Run(t, work, "rev-parse", "other"))
	c, err := b.Compare(context.Background(), base, head, 0, forge.DiffLimits{})
	require.NoError(t, err)
	assert.Empty(t, c.MergeBase)
	assert.Equal(t, 1, c.Ahead)
	assert.Equal(t, 1, c.Behind)
	require.Len(t, c.Diff.Files, 2, "from the empty tree: both files as added (git stages a and b)")
}

func TestTags(t *testing.T) {
	t.Parallel()
	dir, commits := diffRepo(t)
	testenv.Run(t, dir, "tag", "light", commits[0])
	testenv.Run(t, dir, "tag", "-a", "-m", "Release one\n\nNotes.", "v1.0", commits[1])
	testenv.Run(t, dir, "tag", "tree-tag", commits[1]+"^{tree}")
	b, err := forge.Browse(dir)
	require.NoError(t, err)
	tags, err := b.Tags(context.Background())
	require.NoError(t, err)
	byName := map[string]forge.Tag{}
	for _, tg := range tags {
		byName[tg.Name] = tg
	}
	require.Len(t, byName, 2, "the tag of a tree is left out")
	assert.Equal(t, commits[0], byName["light"].Commit)
	assert.False(t, byName["light"].Annotated)
	v := byName["v1.0"]
	assert.True(t, v.Annotated)
	assert.Equal(t, commits[1], v.Commit, "peeled to its commit")
	assert.NotEmpty(t, v.Tagger)
	assert.Equal(t, "Release one\n\nNotes.", v.Message)
	assert.False(t, v.When.IsZero())
}
