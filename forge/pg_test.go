package forge_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/internal/testenv"
)

// TestOnPostgres runs every test that opens the metadata (through
// newWorld, openMeta or openMetaAt) again on PostgreSQL, each in a fresh
// database of one throwaway cluster. (Run alone they use SQLite.)
func TestOnPostgres(t *testing.T) {
	testenv.RunOnPostgres(t, "newWorld", "newGitWorld", "openMeta", "openMetaAt")
}

// metaDSN returns where t keeps its metadata: a new database on the
// PostgreSQL cluster in the run of TestOnPostgres, else a SQLite file in
// dir.
func metaDSN(t *testing.T, dir string) string {
	t.Helper()
	if c := testenv.OnPostgres(); c != nil {
		return c.NewDatabase(t)
	}
	return filepath.Join(dir, "forge.db")
}

// openMetaAt opens the metadata database for t (see metaDSN).
func openMetaAt(t *testing.T, dir string) (*forge.Meta, string) {
	t.Helper()
	dsn := metaDSN(t, dir)
	m, err := forge.OpenMetaDSN(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m, dsn
}

// stored returns what the database holds, as text, for the checks that
// no secret reaches it: the SQLite file and its WAL, or PostgreSQL's
// users and tokens rows.
func stored(t *testing.T, dsn string) string {
	t.Helper()
	if !forge.IsPostgresDSN(dsn) {
		b, _ := os.ReadFile(dsn)
		wal, _ := os.ReadFile(dsn + "-wal")
		return string(b) + string(wal)
	}
	db, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	defer db.Close()
	var out sql.NullString
	require.NoError(t, db.QueryRow(`SELECT (SELECT string_agg(row_to_json(u)::text, ' ') FROM users u) || ' ' ||
		COALESCE((SELECT string_agg(row_to_json(k)::text, ' ') FROM tokens k), '')`).Scan(&out))
	require.NotEmpty(t, out.String)
	return out.String
}
