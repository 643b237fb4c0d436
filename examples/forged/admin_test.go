package main

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/internal/testenv"
)

// TestAdminProfilingAndSlowReports: an administrator gets a signed link
// that profiles one request, downloads the profile, and reads the
// reports of requests that ran past the slow threshold.
func TestAdminProfilingAndSlowReports(t *testing.T) {
	t.Parallel()
	f := newForge(t, "-slow", "1ms")
	f.user("boss", "-admin")
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	f.pushSample("alice/proj", "alice", tok)
	boss := f.browser()
	boss.login("boss", "boss-password")
	boss.get("/admin/")
	r := boss.post("/admin/", url.Values{"action": {"profile"}, "path": {"/alice/proj"}})
	require.Equal(t, http.StatusOK, r.code)
	m := regexp.MustCompile(`href="([^"]+__profile__=[^"]+)"`).FindStringSubmatch(r.body)
	require.NotNil(t, m, r.body)
	link := html.UnescapeString(m[1])
	require.True(t, strings.HasPrefix(link, f.ts.URL+"/alice/proj?__profile__="), link)

	anon := f.browser()
	r = anon.get(strings.TrimPrefix(link, f.ts.URL))
	require.Equal(t, http.StatusOK, r.code, "the page itself is served")
	prof := r.h.Get("X-Profile-URL")
	require.True(t, strings.HasPrefix(prof, "/admin/profiles/"), prof)
	assert.Equal(t, http.StatusNotFound, anon.get(prof).code, "profiles are for administrators")
	// The profile is written once the profiled response is complete.
	var p resp
	waitFor(t, "the profile file", 10*time.Second, func() bool { p = boss.get(prof); return p.code == http.StatusOK })
	assert.Equal(t, "\x1f\x8b", p.body[:2], "a gzipped pprof profile")
	forged := anon.get("/alice/proj?__profile__=not-a-token")
	assert.Equal(t, http.StatusForbidden, forged.code)
	again := anon.get(strings.TrimPrefix(link, f.ts.URL))
	assert.Equal(t, http.StatusForbidden, again.code, "a token works once")
	r = boss.post("/admin/", url.Values{"action": {"profile"}, "path": {"/alice/proj"}})
	m = regexp.MustCompile(`href="[^"]+__profile__=([^"]+)"`).FindStringSubmatch(r.body)
	require.NotNil(t, m)
	other := anon.get("/alice?__profile__=" + html.UnescapeString(m[1]))
	assert.Equal(t, http.StatusForbidden, other.code, "a token works on its path only")

	// Slow reports: clones run past 1 ms (one is enough, unless this
	// machine is fast enough to clone between two watchdog ticks).
	slow := regexp.MustCompile(`(?m)^(\d+)\t\S+\tslow\tPOST git fetch`)
	var m2 []string
	waitFor(t, "a slow report", 30*time.Second, func() bool {
		testenv.Run(t, "", "clone", "-q", f.gitURL("alice/proj", "", ""), filepath.Join(t.TempDir(), "c"))
		m2 = slow.FindStringSubmatch(boss.get("/admin/slow/").body)
		return m2 != nil
	})
	rep := boss.get("/admin/slow/?seq=" + m2[1])
	assert.Equal(t, http.StatusOK, rep.code)
	assert.Contains(t, rep.body, "goroutine")
}

// TestCommitPages: history is paginated, newest first, 30 a page.
func TestCommitPages(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/long")
	src := filepath.Join(t.TempDir(), "src.git")
	testenv.BareRepo(t, src, testenv.RepoOptions{Commits: 35})
	testenv.Run(t, src, "push", "-q", f.gitURL("alice/long", "alice", tok), "main")
	anon := f.browser()
	r := anon.get("/alice/long/commits/main")
	require.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, 30, strings.Count(r.body, `class="sha"`))
	assert.Contains(t, r.body, `href="/alice/long/commits/main?page=2"`)
	assert.NotContains(t, r.body, "Newer")
	r = anon.get("/alice/long/commits/main?page=2")
	assert.Equal(t, 5, strings.Count(r.body, `class="sha"`))
	assert.Contains(t, r.body, "← Newer")
	assert.NotContains(t, r.body, "Older")
	assert.Equal(t, 0, strings.Count(anon.get("/alice/long/commits/main?page=3").body, `class="sha"`))
	assert.Equal(t, http.StatusNotFound, anon.get("/alice/long/commits/nobranch").code)
	assert.Equal(t, http.StatusNotFound, anon.get("/alice/long/blob/main/no/such/file").code)
	r = anon.get("/alice/long/tree/main/../../etc")
	require.Equal(t, http.StatusTemporaryRedirect, r.code, "ServeMux cleans the path")
	assert.Equal(t, "/alice/long/etc", r.h.Get("Location"))
	assert.Equal(t, http.StatusNotFound, anon.get("/alice/long/etc").code)
}

// TestTwoInstancesShareData: two servers on one data directory see each
// other's pushes, repositories and views.
func TestTwoInstancesShareData(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	g := newInstance(t, f.data)
	s2 := g.s

	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	work := f.pushSample("alice/proj", "alice", tok)
	one, two := f.browser(), g.browser()
	assert.Contains(t, two.get("/alice/proj").body, "Sample project", "the other instance serves the push")
	// A push through the second is seen by the first, past its go-git cache.
	assert.NotContains(t, one.get("/alice/proj").body, "Third")
	testenv.Run(t, work, "commit", "-q", "--allow-empty", "-m", "Third")
	testenv.Run(t, work, "push", "-q", g.gitURL("alice/proj", "alice", tok), "main")
	testenv.Run(t, work, "commit", "-q", "--allow-empty", "-m", "Fourth")
	testenv.Run(t, work, "push", "-q", g.gitURL("alice/proj", "alice", tok), "main")
	// (within refsTTL: the first instance reuses its ref list that long)
	waitFor(t, "the other instance's push", 10*time.Second, func() bool {
		return strings.Contains(one.get("/alice/proj/commits/main").body, "Fourth")
	})
	// Sessions signed by one are good at the other (one secret.key).
	alice := f.browser()
	alice.login("alice", "alice-password")
	u, _ := url.Parse(f.ts.URL)
	c := alice.c.Jar.Cookies(u)[0]
	other := g.browser()
	u2, _ := url.Parse(g.ts.URL)
	other.c.Jar.SetCookies(u2, []*http.Cookie{c})
	assert.Equal(t, http.StatusOK, other.get("/settings").code)
	// Views counted by both add up.
	require.NoError(t, f.s.views.Flush(context.Background()))
	require.NoError(t, s2.views.Flush(context.Background()))
	n, err := f.s.views.Total(context.Background(), "alice/proj", time.Unix(0, 0), time.Now().Add(time.Hour))
	require.NoError(t, err)
	assert.Equal(t, f.s.views.Stats().Counted+s2.views.Stats().Counted, n, "the views of both instances add up, none lost")
	assert.Positive(t, s2.views.Stats().Counted, "the second instance counted some")
}

// TestTreeAndBlobRedirect: a tree URL of a file and a blob URL of a
// directory go to the view that fits; a path that is neither is 404.
func TestTreeAndBlobRedirect(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	f.pushSample("alice/proj", "alice", tok)
	anon := f.browser()
	r := anon.get("/alice/proj/tree/main/src/main.go")
	assert.Equal(t, http.StatusFound, r.code)
	assert.Equal(t, "/alice/proj/blob/main/src/main.go", r.h.Get("Location"))
	assert.Empty(t, r.h.Get("ETag"))
	r = anon.get("/alice/proj/blob/main/src")
	assert.Equal(t, http.StatusFound, r.code)
	assert.Equal(t, "/alice/proj/tree/main/src", r.h.Get("Location"))
	assert.Equal(t, http.StatusNotFound, anon.get("/alice/proj/tree/main/nope").code)
	assert.Equal(t, http.StatusNotFound, anon.get("/alice/proj/blob/main/nope").code)
}
