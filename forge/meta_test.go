package forge_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
)

// openMeta opens a fresh metadata database: a SQLite file, or under
// TestOnPostgres a PostgreSQL database. It returns the DSN too.
func openMeta(t *testing.T) (*forge.Meta, string) {
	return openMetaAt(t, t.TempDir())
}

func TestMigrations(t *testing.T) {
	t.Parallel()
	m, path := openMeta(t)
	files, _ := filepath.Glob("migrations/sqlite/*.sql")
	pgFiles, _ := filepath.Glob("migrations/postgres/*.sql")
	require.Len(t, pgFiles, len(files), "the same versions for both databases")
	v, err := m.SchemaVersion(context.Background())
	require.NoError(t, err)
	assert.Equal(t, len(files), v, "every embedded migration applied")
	// Opening again applies nothing twice.
	m2, err := forge.OpenMetaDSN(context.Background(), path)
	require.NoError(t, err)
	defer m2.Close()
	v, _ = m2.SchemaVersion(context.Background())
	assert.Equal(t, len(files), v)
}

func TestUsersAndPasswords(t *testing.T) {
	t.Parallel()
	m, path := openMeta(t)
	f := &forge.Forge{Meta: m}
	ctx := context.Background()
	u, err := f.CreateUser(ctx, "Alice", "alice@example.com", "correct horse", true)
	require.NoError(t, err)
	assert.True(t, u.Admin)
	_, err = f.CreateUser(ctx, "alice", "", "another password", false)
	assert.ErrorIs(t, err, forge.ErrUserExists, "names are unique without regard to case")
	_, err = f.CreateUser(ctx, "bob", "", "short", false)
	assert.Error(t, err)
	_, err = f.CreateUser(ctx, "../root", "", "long enough", false)
	assert.ErrorIs(t, err, forge.ErrInvalidName)

	got, err := m.CheckPassword(ctx, "ALICE", "correct horse")
	require.NoError(t, err)
	assert.Equal(t, "Alice", got.Name)
	_, err = m.CheckPassword(ctx, "alice", "wrong horse")
	assert.ErrorIs(t, err, forge.ErrBadCredentials)
	_, err = m.CheckPassword(ctx, "nobody", "correct horse")
	assert.ErrorIs(t, err, forge.ErrBadCredentials)

	// Only an argon2id hash is stored.
	m.Close()
	all := stored(t, path)
	assert.NotContains(t, all, "correct horse")
	assert.Contains(t, all, "$argon2id$")
}

func TestTokens(t *testing.T) {
	t.Parallel()
	m, path := openMeta(t)
	f := &forge.Forge{Meta: m}
	ctx := context.Background()
	_, err := f.CreateUser(ctx, "alice", "", "correct horse", false)
	require.NoError(t, err)
	tok, err := f.CreateToken(ctx, "alice", "ci", forge.ScopeRead, 0)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(tok, "fkt_"))
	u, scope, err := m.CheckToken(ctx, tok)
	require.NoError(t, err)
	assert.Equal(t, "alice", u.Name)
	assert.Equal(t, forge.ScopeRead, scope)

	short, err := f.CreateToken(ctx, "alice", "short", forge.ScopeWrite, time.Hour)
	require.NoError(t, err)
	_, _, err = m.CheckToken(ctx, short)
	require.NoError(t, err)
	m.SetClockForTest(func() time.Time { return time.Now().Add(time.Hour) })
	_, _, err = m.CheckToken(ctx, short)
	assert.ErrorIs(t, err, forge.ErrBadCredentials, "expired")
	_, _, err = m.CheckToken(ctx, tok)
	assert.NoError(t, err, "a token without expiry does not expire")
	m.SetClockForTest(nil)

	_, _, err = m.CheckToken(ctx, tok+"x")
	assert.ErrorIs(t, err, forge.ErrBadCredentials)
	require.NoError(t, f.RevokeToken(ctx, "alice", "ci"))
	_, _, err = m.CheckToken(ctx, tok)
	assert.ErrorIs(t, err, forge.ErrBadCredentials, "revoked")
	_, err = f.CreateToken(ctx, "alice", "bad", "admin", 0)
	assert.Error(t, err)

	m.Close()
	all := stored(t, path)
	assert.NotContains(t, all, tok, "tokens are stored hashed")
	assert.Contains(t, all, "short", "the rows are there, with hashes")
}

func TestRepoInfoAndCollaborators(t *testing.T) {
	t.Parallel()
	m, _ := openMeta(t)
	f := &forge.Forge{Meta: m}
	ctx := context.Background()
	_, err := f.CreateUser(ctx, "alice", "", "correct horse", false)
	require.NoError(t, err)
	bob, err := f.CreateUser(ctx, "bob", "", "correct horse", false)
	require.NoError(t, err)
	r, err := m.CreateRepoInfoForTest(ctx, forge.RepoInfo{Owner: "alice", Name: "proj", Private: true, Description: "d"})
	require.NoError(t, err)
	assert.Equal(t, "main", r.DefaultBranch)
	_, err = m.CreateRepoInfoForTest(ctx, forge.RepoInfo{Owner: "Alice", Name: "PROJ"})
	assert.ErrorIs(t, err, forge.ErrExists)

	got, err := m.RepoInfo(ctx, "ALICE", "proj")
	require.NoError(t, err)
	assert.True(t, got.Private)
	assert.True(t, got.PushedAt.IsZero())
	now := time.Unix(1800000000, 0)
	require.NoError(t, m.PushedForTest(ctx, r.ID, now, 4096))
	got, _ = m.RepoInfo(ctx, "alice", "proj")
	assert.Equal(t, now, got.PushedAt)
	assert.Equal(t, int64(4096), got.Size)
	_, err = m.RepoInfo(ctx, "alice", "none")
	assert.ErrorIs(t, err, forge.ErrNotFound)

	lvl, err := m.Collaborator(ctx, r.ID, bob.ID)
	require.NoError(t, err)
	assert.Empty(t, lvl)
	require.NoError(t, f.SetCollaborator(ctx, r.ID, "bob", forge.LevelRead))
	require.NoError(t, f.SetCollaborator(ctx, r.ID, "bob", forge.LevelWrite))
	lvl, _ = m.Collaborator(ctx, r.ID, bob.ID)
	assert.Equal(t, forge.LevelWrite, lvl)
	assert.Error(t, f.SetCollaborator(ctx, r.ID, "bob", "owner"))

	require.NoError(t, f.ProtectBranch(ctx, r.ID, "main"))
	require.NoError(t, f.ProtectBranch(ctx, r.ID, "release/*"))
	require.NoError(t, f.ProtectBranch(ctx, r.ID, "main"))
	pb, err := m.ProtectedBranches(ctx, r.ID)
	require.NoError(t, err)
	assert.Equal(t, []string{"main", "release/*"}, pb)
}
