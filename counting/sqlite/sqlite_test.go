package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/counting"
	"github.com/forgekit/forgekit/counting/sqlite"
)

// TestOpen: a new file is its owner's alone, two stores on one file (as
// two processes would have) add up, and a path that cannot be a file is
// an error. (The counting tests run on this store throughout.)
func TestOpen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "views.db")
	a, err := sqlite.Open(path)
	require.NoError(t, err)
	defer a.Close()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	b, err := sqlite.Open(path)
	require.NoError(t, err)
	defer b.Close()

	now := time.Now().UTC().Truncate(time.Hour)
	require.NoError(t, a.Add(ctx, []counting.Delta{{ID: "alice/proj", Bucket: now, N: 2}}))
	require.NoError(t, b.Add(ctx, []counting.Delta{{ID: "alice/proj", Bucket: now, N: 3}}))
	sums, err := a.Sums(ctx, counting.Query{From: now, To: now.Add(time.Hour), Limit: 10})
	require.NoError(t, err)
	require.Len(t, sums, 1)
	assert.Equal(t, counting.Sum{ID: "alice/proj", N: 5}, sums[0])

	_, err = sqlite.Open(filepath.Join(t.TempDir(), "missing", "views.db"))
	assert.Error(t, err)
}
