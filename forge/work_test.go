package forge_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/slowlog"
)

// TestBrowsingWork: browsing counts the objects it reads and the git
// processes it runs into the Work of its context; the metadata counts
// its queries.
func TestBrowsingWork(t *testing.T) {
	t.Parallel()
	b, _, head := browseRepo(t)
	work := &slowlog.Work{}
	ctx := slowlog.WithWork(context.Background(), work)
	// The root of the head commit: the commit (read once, to see that
	// it is not a tag and to parse it), then its tree.
	_, err := b.Tree(ctx, head, "")
	require.NoError(t, err)
	assert.Equal(t, int64(2), work.Tally().Objects)
	_, err = b.Commit(ctx, head, forge.DiffLimits{})
	require.NoError(t, err)
	assert.Equal(t, int64(1), work.Tally().GitRuns, "git diff-tree")

	w := newWorld(t)
	before := work.Tally().Queries
	_, err = w.f.Meta.RepoInfo(ctx, "owner", "public")
	require.NoError(t, err)
	assert.Equal(t, before+1, work.Tally().Queries)
}

// TestDetachedWalkCountsForItsRequest: a last-commit walk outlives its
// request's cancellation but counts into the request's Work.
func TestDetachedWalkCountsForItsRequest(t *testing.T) {
	t.Parallel()
	work := &slowlog.Work{}
	ctx, cancel := context.WithCancel(slowlog.WithWork(context.Background(), work))
	cancel()
	bg := forge.LabelledForTest(ctx)
	assert.NoError(t, bg.Err(), "not cancelled with the request")
	assert.Same(t, work, slowlog.WorkFrom(bg))
}
