package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/internal/testenv"
	"github.com/forgekit/forgekit/slowlog"
)

// newLoggedForge is newForge with the server's log in logs, as JSON.
func newLoggedForge(t *testing.T, logs io.Writer) *testForge {
	t.Helper()
	testenv.Git(t)
	data := t.TempDir()
	cfg, err := parseFlags([]string{"-data", data}, io.Discard)
	require.NoError(t, err)
	s, err := newServer(context.Background(), cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	require.NoError(t, err)
	ts := httptest.NewServer(s.handler)
	t.Cleanup(func() {
		ts.Close()
		s.Close()
	})
	return &testForge{t: t, s: s, ts: ts, data: data}
}

// logLines returns the JSON log lines whose msg is msg.
func logLines(t *testing.T, logs string, msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), sc.Text())
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// TestRequestWork: the access log says how much work each request did:
// a page's queries and fragment lookups, a clone's git processes.
func TestRequestWork(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	f := newLoggedForge(t, &logs)
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	f.pushSample("alice/proj", "alice", tok)
	f.s.forge.Wait()

	anon := f.browser()
	anon.get("/alice/proj")
	testenv.Run(t, "", "clone", "-q", f.gitURL("alice/proj", "alice", tok), filepath.Join(t.TempDir(), "c"))

	var page map[string]any
	var gitRuns float64
	for _, l := range logLines(t, logs.String(), "request") {
		for _, k := range []string{"queries", "query_ms", "cache_lookups", "renders", "git_runs", "git_ms", "objects"} {
			require.Contains(t, l, k, "every access log line has the work fields")
		}
		if l["path"] == "/alice/proj" && l["method"] == "GET" {
			page = l
		}
		if l["route"] == "git fetch" {
			gitRuns += l["git_runs"].(float64)
		}
	}
	assert.Empty(t, logLines(t, logs.String(), "repeated work in one request"), "no N+1 in a page view, a push or a clone")
	require.NotNil(t, page)
	assert.Positive(t, page["queries"], "the repository's row, at least")
	assert.Positive(t, page["cache_lookups"], "the page's fragments")
	assert.Positive(t, gitRuns, "the clone's upload-pack")
}

// TestRepeatedWorkLogged: an N+1 on purpose (the same query with the
// same arguments, 12 times in one request) is logged once per route,
// with its stack, however often it happens.
func TestRepeatedWorkLogged(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	f := newLoggedForge(t, &logs)
	f.user("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	for range 3 { // three requests, each with the same N+1
		work := &slowlog.Work{OnRepeat: func(rep slowlog.Repeat) { f.s.repeated("/{owner}/{repo}", rep) }}
		ctx := slowlog.WithWork(context.Background(), work)
		for range 12 {
			_, err := f.s.forge.Meta.RepoInfo(ctx, "alice", "proj")
			require.NoError(t, err)
		}
		assert.Equal(t, int64(12), work.Tally().Queries)
	}
	lines := logLines(t, logs.String(), "repeated work in one request")
	require.Len(t, lines, 1)
	assert.Equal(t, "/{owner}/{repo}", lines[0]["route"])
	assert.Equal(t, "queries", lines[0]["kind"])
	assert.Contains(t, lines[0]["stack"], "TestRepeatedWorkLogged")
}

// TestQueriesPerRoute: the SQL queries of every page and API route, on
// its first view and on the next, are the same on a forge with one
// repository and on one with 100 repositories and more users: no route
// makes a query per repository, user or ref.
func TestQueriesPerRoute(t *testing.T) {
	t.Parallel()
	measure := func(extraRepos, extraUsers int) map[string][2]int64 {
		var logs syncBuffer
		f := newLoggedForge(t, &logs)
		f.user("alice", "-admin")
		f.user("bob")
		tok := f.token("alice")
		f.mustCLI("", "repo", "create", "alice/proj")
		work := f.pushSample("alice/proj", "alice", tok)
		head := strings.TrimSpace(testenv.Run(t, work, "rev-parse", "HEAD"))
		ctx := context.Background()
		for i := range extraUsers {
			_, err := f.s.forge.CreateUser(ctx, fmt.Sprint("user", i), "", "a long password", false)
			require.NoError(t, err)
		}
		for i := range extraRepos {
			owner := "alice"
			if i%2 == 1 {
				owner = "bob"
			}
			_, err := f.s.forge.CreateRepo(ctx, owner, fmt.Sprint("repo", i), i%3 == 0, "one of many")
			require.NoError(t, err)
		}
		f.s.forge.Wait()
		b := f.browser()
		b.login("alice", "alice-password")
		paths := []string{
			"/", "/explore", "/explore?q=proj", "/search?q=main", "/new", "/settings", "/admin/",
			"/alice", "/alice.atom", "/bob",
			"/alice/proj", "/alice/proj/tree/main/src", "/alice/proj/blob/main/README.md",
			"/alice/proj/blame/main/README.md", "/alice/proj/raw/main/README.md",
			"/alice/proj/commits/main", "/alice/proj/commits/main.atom", "/alice/proj/commit/" + head,
			"/alice/proj/branches", "/alice/proj/tags", "/alice/proj/tags.atom",
			"/alice/proj/compare", "/alice/proj/compare/main...feature/login",
			"/alice/proj/search?q=main", "/alice/proj/settings",
			"/api/v1/user", "/api/v1/users/alice", "/api/v1/users/alice/repos", "/api/v1/repos/alice/proj",
			"/api/v1/repos/alice/proj/branches", "/api/v1/repos/alice/proj/tags",
			"/api/v1/repos/alice/proj/commits", "/api/v1/repos/alice/proj/commits/" + head,
			"/api/v1/repos/alice/proj/contents/README.md",
		}
		ids := map[string][2]string{}
		for _, p := range paths {
			var pair [2]string
			for i := range pair {
				r := b.get(p, "Authorization", "token "+tok)
				require.Less(t, r.code, 400, "%s: %s", p, r.body)
				pair[i] = r.h.Get("X-Request-Id")
			}
			ids[p] = pair
		}
		byID := map[string]int64{}
		for _, l := range logLines(t, logs.String(), "request") {
			byID[l["id"].(string)] = int64(l["queries"].(float64))
		}
		out := map[string][2]int64{}
		for p, pair := range ids {
			// Keyed by the path with {sha} for the head commit, which
			// differs between the two forges.
			out[strings.ReplaceAll(p, head, "{sha}")] = [2]int64{byID[pair[0]], byID[pair[1]]}
		}
		return out
	}
	one := measure(0, 0)
	many := measure(100, 20)
	require.Equal(t, len(one), len(many))
	for p, q := range one {
		require.Contains(t, many, p)
		assert.Equal(t, q, many[p], "%s: queries on its first and second view, 1 repository vs 101", p)
		assert.LessOrEqual(t, many[p][0], int64(maxQueriesPerRequest), "%s", p)
	}
}

// maxQueriesPerRequest bounds the queries of any page or API request.
const maxQueriesPerRequest = 12
