package main

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/internal/testenv"
)

// TestMigrateToPostgres moves a forge in use from SQLite to PostgreSQL:
// `forged migrate` copies and verifies, and a server with -db serves the
// same accounts, tokens, repositories, settings and view counts; new
// rows get new ids.
func TestMigrateToPostgres(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	f := newForge(t)
	f.user("alice")
	f.user("bob")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/secret", "-private", "-description", "hush")
	work := f.pushSample("alice/secret", "alice", tok)
	alice := f.browser()
	alice.login("alice", "alice-password")
	alice.get("/alice/secret/settings")
	r := alice.post("/alice/secret/settings", url.Values{"action": {"collab"}, "user": {"bob"}, "level": {"read"}})
	require.Equal(t, http.StatusSeeOther, r.code)
	alice.post("/alice/secret/settings", url.Values{"action": {"hook"}, "url": {"http://127.0.0.1:9/hook"}, "secret": {"s"}})
	// A push whose delivery waits for its retry (loopback is refused)
	// when the server stops: the job moves with the data.
	require.NoError(t, os.WriteFile(filepath.Join(work, "n"), []byte("n"), 0o644))
	testenv.Run(t, work, "add", "n")
	testenv.Run(t, work, "commit", "-qm", "n")
	testenv.Run(t, work, "push", "-q", f.gitURL("alice/secret", "alice", tok), "main")
	waitFor(t, "the delivery waiting for its retry", 20*time.Second, func() bool {
		return strings.Contains(f.mustCLI("", "jobs", "list", "-state", "retryable"), "webhook_delivery")
	})
	for range 5 {
		alice.get("/alice/secret")
	}
	require.NoError(t, f.s.views.Flush(context.Background()))
	// What migrate expects: no server working on the data.
	require.NoError(t, f.s.queue.client.Stop(context.Background()))

	migrate := func() (string, error) {
		var out strings.Builder
		err := dispatch(context.Background(), []string{"migrate", "-from", "sqlite:" + f.data, "-to", dsn}, strings.NewReader(""), &out, &out)
		return out.String(), err
	}
	out, err := migrate()
	require.NoError(t, err, out)
	assert.NotContains(t, out, "MISMATCH")
	assert.Regexp(t, `(?m)^users\s+2\s+2\s+2`, out)
	assert.Regexp(t, `(?m)^views \(sum of n\)\s+\d+\s+5\s+5`, out)
	assert.Contains(t, out, "migrated")
	assert.Regexp(t, `queued jobs copied: [1-9]`, out)
	_, err = migrate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "already has users")

	// A server on PostgreSQL, the same data directory.
	g := newInstance(t, f.data, "-db", dsn)
	bob := g.browser()
	bob.login("bob", "bob-password")
	r = bob.get("/alice/secret")
	require.Equal(t, http.StatusOK, r.code, "the collaborator still reads it")
	assert.Contains(t, r.body, "hush")
	views := regexp.MustCompile(`(\d+) views?</span>`).FindStringSubmatch(r.body)
	require.NotNil(t, views)
	assert.Equal(t, "6", views[1], "the 5 views migrated and this one")
	testenv.Run(t, "", "clone", "-q", g.gitURL("alice/secret", "alice", tok), filepath.Join(t.TempDir(), "c"))
	assert.Equal(t, http.StatusNotFound, g.browser().get("/alice/secret").code)
	assert.Contains(t, g.mustCLI("", "jobs", "list", "-db", dsn), "webhook_delivery", "the waiting delivery, queued on PostgreSQL")
	alice2 := g.browser()
	alice2.login("alice", "alice-password")
	assert.Contains(t, alice2.get("/alice/secret/settings").body, "http://127.0.0.1:9/hook")
	// The code index is in the same database (pg_trgm), made at start.
	require.Eventually(t, func() bool {
		return strings.Contains(bob.get("/search?q=println").body, `href="/alice/secret/blob/main/src/main.go#L3"`)
	}, 20*time.Second, 20*time.Millisecond)
	assert.NotContains(t, g.browser().get("/search?q=println").body, "alice/secret")

	// New rows continue after the copied ids.
	out, err = g.cli("carol-password\n", "user", "add", "carol", "-password-stdin", "-db", dsn)
	require.NoError(t, err, out)
	r = alice2.post("/new", url.Values{"name": {"fresh"}})
	assert.Equal(t, http.StatusSeeOther, r.code, r.body)
}
