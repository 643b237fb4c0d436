package main

import (
	"bufio"
	"context"
	"encoding/json"
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
		for _, k := range []string{"queries", "query_ms", "cache_lookups", "renders", "git_runs", "git_ms"} {
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
