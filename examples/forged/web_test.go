package main

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/internal/testenv"
)

// TestJourney is the new user's path: accounts and repositories from the
// CLI, a push, every page, archives, anonymous and private clones, a
// repository made through the form, and the view counts and explore
// ranking moving.
func TestJourney(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.s.explore.every = time.Nanosecond // no reuse of the lists in this test
	f.user("alice")
	f.mustCLI("", "repo", "create", "alice/proj", "-description", "Alice's project")
	f.mustCLI("", "repo", "create", "alice/secret", "-private")
	tok := f.token("alice")
	f.pushSample("alice/proj", "alice", tok)
	f.pushSample("alice/secret", "alice", tok)
	head := strings.Fields(testenv.Run(t, "", "ls-remote", f.gitURL("alice/proj", "", ""), "refs/heads/main"))[0]

	anon := f.browser()
	for _, tc := range []struct {
		name, path string
		want       []string
	}{
		{"home", "/alice/proj", []string{"Alice&#39;s project", "<h1>Sample project</h1>", ">src</a>", ">docs</a>", "Say &lt;b&gt;hi&lt;/b&gt;", f.ts.URL + "/alice/proj.git", "feature/login", "v1.0"}},
		{"tree", "/alice/proj/tree/main/src", []string{">main.go</a>", "Say &lt;b&gt;hi&lt;/b&gt;"}},
		{"branch with a slash", "/alice/proj/tree/feature/login", []string{">login.go</a>"}},
		{"tag", "/alice/proj/tree/v1.0/docs", []string{">guide.md</a>"}},
		{"commit id", "/alice/proj/tree/" + head[:8], []string{">README.md</a>"}},
		{"blob", "/alice/proj/blob/main/src/main.go", []string{`id="L3"`, "println"}},
		{"markdown blob", "/alice/proj/blob/main/docs/guide.md", []string{"<h1>Guide</h1>"}},
		{"commits", "/alice/proj/commits/main", []string{"Initial import", "Say &lt;b&gt;hi&lt;/b&gt;"}},
		{"commits of a path", "/alice/proj/commits/main/docs", []string{"Initial import"}},
		{"commit", "/alice/proj/commit/" + head, []string{`<span class="modified">modified</span> <a href="#diff-0">src/main.go</a>`, "@@ -1,3 &#43;1,3 @@", `<tr class="add"><td class="ln"></td><td class="ln">3</td><td><span class="sign">&#43;</span><span class="kd">func </span>`, "1 file changed, <span class=\"add\">1 addition</span>"}},
		{"user", "/alice", []string{">proj</a>"}},
		{"explore", "/explore", []string{"alice/proj", "Recently pushed"}},
	} {
		r := anon.get(tc.path)
		require.Equal(t, http.StatusOK, r.code, "%s: %s", tc.name, r.body)
		for _, w := range tc.want {
			assert.Contains(t, r.body, w, tc.name)
		}
		assert.NotContains(t, r.body, "<script>alert", "%s: raw HTML is never passed through", tc.name)
		assert.Empty(t, r.h.Values("Set-Cookie"), "%s: anonymous responses set no cookie", tc.name)
	}
	assert.NotContains(t, anon.get("/alice").body, "secret", "private repositories are not listed")
	assert.NotContains(t, anon.get("/explore").body, "alice/secret")

	raw := anon.get("/alice/proj/raw/main/src/main.go")
	assert.Equal(t, http.StatusOK, raw.code)
	assert.Equal(t, "package main\n\nfunc main() { println(\"hi\") }\n", raw.body)
	assert.Equal(t, "text/plain; charset=utf-8", raw.h.Get("Content-Type"))
	assert.Contains(t, raw.h.Get("Content-Security-Policy"), "sandbox")
	rawHTML := anon.get("/alice/proj/raw/main/README.md")
	assert.Equal(t, "text/plain; charset=utf-8", rawHTML.h.Get("Content-Type"), "never served as HTML")

	// Archives: a ref is redirected to its commit, which is immutable.
	r := anon.get("/alice/proj/archive/main.zip")
	require.Equal(t, http.StatusFound, r.code)
	assert.Equal(t, "/alice/proj/archive/"+head+".zip", r.h.Get("Location"))
	r = anon.get(r.h.Get("Location"))
	require.Equal(t, http.StatusOK, r.code)
	assert.Contains(t, r.h.Get("Cache-Control"), "immutable")
	assert.Contains(t, r.h.Get("Content-Disposition"), "proj-"+head[:12]+".zip")
	zr, err := zip.NewReader(bytes.NewReader([]byte(r.body)), int64(len(r.body)))
	require.NoError(t, err)
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	assert.Contains(t, names, "proj-"+head[:12]+"/src/main.go")
	r = anon.get("/alice/proj/archive/v1.0.tar.gz")
	require.Equal(t, http.StatusFound, r.code)
	r = anon.get(r.h.Get("Location"))
	assert.Equal(t, "\x1f\x8b", r.body[:2], "gzip")

	// Private: invisible to the anonymous, and to git without credentials.
	for _, p := range []string{"/alice/secret", "/alice/secret/tree/main", "/alice/secret/raw/main/README.md", "/alice/secret/archive/main.zip", "/alice/secret/commits/main"} {
		assert.Equal(t, http.StatusNotFound, anon.get(p).code, p)
	}
	dst := t.TempDir()
	_, err = testenv.RunErr(t, testenv.Cmd{Args: []string{"clone", "-q", f.gitURL("alice/secret", "", ""), filepath.Join(dst, "anon")}})
	require.Error(t, err, "no anonymous clone of a private repository")
	testenv.Run(t, "", "clone", "-q", f.gitURL("alice/secret", "alice", tok), filepath.Join(dst, "private"))
	testenv.Run(t, "", "clone", "-q", f.gitURL("alice/proj", "", ""), filepath.Join(dst, "public"))
	testenv.Run(t, "", "clone", "-q", f.ts.URL+"/alice/proj", filepath.Join(dst, "without-suffix"))
	assert.FileExists(t, filepath.Join(dst, "private", "src", "main.go"))

	// Signed in, alice sees her private repository, privately cached.
	alice := f.browser()
	alice.login("alice", "alice-password")
	r = alice.get("/alice/secret")
	require.Equal(t, http.StatusOK, r.code)
	assert.Contains(t, r.h.Get("Cache-Control"), "private")
	assert.Contains(t, alice.get("/alice").body, ">secret</a>")
	secretHead := strings.Fields(testenv.Run(t, "", "ls-remote", f.gitURL("alice/secret", "alice", tok), "refs/heads/main"))[0]
	r = alice.get("/alice/secret/archive/" + secretHead + ".zip")
	require.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, "private, max-age=31536000, immutable", r.h.Get("Cache-Control"), "a private archive stays out of shared caches")

	// A repository from the form: the empty page says how to push.
	r = alice.post("/new", url.Values{"name": {"other"}, "description": {"made in the browser"}})
	require.Equal(t, http.StatusSeeOther, r.code, r.body)
	assert.Equal(t, "/alice/other", r.h.Get("Location"))
	r = alice.get("/alice/other")
	assert.Contains(t, r.body, "This repository is empty")
	assert.Contains(t, r.body, "git remote add origin "+f.ts.URL+"/alice/other.git")
	r = alice.post("/new", url.Values{"name": {"Other"}})
	assert.Equal(t, http.StatusUnprocessableEntity, r.code)
	assert.Contains(t, r.body, "already have a repository")
	r = alice.post("/new", url.Values{"name": {"../x"}})
	assert.Equal(t, http.StatusUnprocessableEntity, r.code)
	f.pushSample("alice/other", "alice", tok)

	// Views: counted per page, shown, and ranked on explore.
	for range 3 {
		anon.get("/alice/proj")
	}
	for range 8 {
		anon.get("/alice/other")
	}
	// A crawler is not counted.
	anon.get("/alice/proj", "User-Agent", "Googlebot/2.1")
	require.NoError(t, f.s.views.Flush(context.Background()))
	views := func(repo string) string {
		return regexp.MustCompile(`(\d+) views?</span>`).FindStringSubmatch(anon.get("/alice/" + repo).body)[1]
	}
	assert.Equal(t, "10", views("other"), "8 + the signed-in view + this one")
	assert.Equal(t, "14", views("proj"), "the 10 pages above, 3 more and this one; not the crawler")
	today := func() string {
		body := anon.get("/explore").body
		return body[strings.Index(body, "Most viewed today"):strings.Index(body, "Most viewed this week")]
	}
	assert.Less(t, strings.Index(today(), "alice/proj"), strings.Index(today(), "alice/other"))
	for range 15 {
		anon.get("/alice/other/commits/main")
	}
	assert.Less(t, strings.Index(today(), "alice/other"), strings.Index(today(), "alice/proj"), "the ranking follows the views")

	// Tokens from the settings page: shown once, usable by git, revocable.
	r = alice.post("/settings", url.Values{"action": {"token"}, "name": {"laptop"}, "scope": {"read"}, "expires": {"720h"}})
	require.Equal(t, http.StatusOK, r.code)
	readTok := tokenRE.FindString(r.body)
	require.NotEmpty(t, readTok)
	assert.Contains(t, r.h.Get("Cache-Control"), "no-store")
	testenv.Run(t, "", "clone", "-q", f.gitURL("alice/secret", "alice", readTok), filepath.Join(dst, "with-read-token"))
	assert.NotContains(t, alice.get("/settings").body, readTok, "shown once")
	r = alice.post("/settings", url.Values{"action": {"revoke"}, "name": {"laptop"}})
	assert.Equal(t, http.StatusSeeOther, r.code)
	_, err = testenv.RunErr(t, testenv.Cmd{Args: []string{"clone", "-q", f.gitURL("alice/secret", "alice", readTok), filepath.Join(dst, "revoked")}})
	assert.Error(t, err, "a revoked token no longer works")

	// Password change; signing out ends the session.
	r = alice.post("/settings", url.Values{"action": {"password"}, "current": {"wrong-password"}, "new": {"another-password"}})
	assert.Equal(t, http.StatusForbidden, r.code)
	other := f.browser() // alice on another computer
	other.login("alice", "alice-password")
	r = alice.post("/settings", url.Values{"action": {"password"}, "current": {"alice-password"}, "new": {"another-password"}})
	require.Equal(t, http.StatusSeeOther, r.code, r.body)
	assert.Contains(t, alice.get(r.h.Get("Location")).body, "Password changed", "this browser keeps a session")
	assert.Equal(t, http.StatusSeeOther, other.get("/settings").code, "the other session ended with the old password")
	r = alice.post("/logout", url.Values{})
	assert.Equal(t, http.StatusSeeOther, r.code)
	assert.Equal(t, http.StatusNotFound, alice.get("/alice/secret").code)
	alice.login("alice", "another-password")
}

// TestAccessMatrix checks every repository route for every kind of
// visitor on a public and a private repository: whoever may not see a
// repository gets 404, like a missing one.
func TestAccessMatrix(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	for _, u := range []string{"alice", "bob", "carol"} {
		f.user(u)
	}
	f.user("boss", "-admin")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/pub")
	f.mustCLI("", "repo", "create", "alice/priv", "-private")
	f.pushSample("alice/pub", "alice", tok)
	f.pushSample("alice/priv", "alice", tok)
	info, err := f.s.forge.Meta.RepoInfo(context.Background(), "alice", "priv")
	require.NoError(t, err)
	require.NoError(t, f.s.forge.SetCollaborator(context.Background(), info.ID, "bob", "read"))
	head := strings.Fields(testenv.Run(t, "", "ls-remote", f.gitURL("alice/pub", "alice", tok), "refs/heads/main"))[0]

	clients := map[string]*browser{"anonymous": f.browser()}
	for _, u := range []string{"alice", "bob", "carol", "boss"} {
		clients[u] = f.browser()
		clients[u].login(u, u+"-password")
	}
	routes := []string{"", "/tree/main/src", "/blob/main/src/main.go", "/raw/main/README.md", "/commits/main",
		"/commit/" + head, "/archive/" + head + ".zip", "/lastcommits/?c=" + head + "&ref=main",
		"/blame/main/src/main.go", "/branches", "/tags", "/tags.atom", "/commits/main.atom", "/compare", "/compare/main...feature/login",
		"/settings"}
	const ok, hide, login = http.StatusOK, http.StatusNotFound, http.StatusSeeOther
	// want[visitor][repo] = the status of the read routes, then of settings.
	want := map[string]map[string][2]int{
		"anonymous": {"pub": {ok, login}, "priv": {hide, hide}},
		"carol":     {"pub": {ok, hide}, "priv": {hide, hide}},
		"bob":       {"pub": {ok, hide}, "priv": {ok, hide}},
		"alice":     {"pub": {ok, ok}, "priv": {ok, ok}},
		"boss":      {"pub": {ok, ok}, "priv": {ok, ok}},
	}
	for who, repos := range want {
		for repo, codes := range repos {
			for _, rt := range routes {
				path := "/alice/" + repo + rt
				if repo == "priv" {
					path = strings.ReplaceAll(path, head, privHead(t, f, tok))
				}
				w := codes[0]
				if rt == "/settings" {
					w = codes[1]
				}
				assert.Equal(t, w, clients[who].get(path).code, "%s GET %s", who, path)
			}
		}
	}
	// Settings posts need admin too; the missing look like the hidden.
	r := clients["bob"].post("/alice/priv/settings", url.Values{"action": {"general"}, "description": {"x"}, "default_branch": {"main"}})
	assert.Equal(t, http.StatusNotFound, r.code)
	assert.Equal(t, http.StatusNotFound, clients["carol"].get("/alice/nothing").code)
	assert.Equal(t, http.StatusNotFound, clients["anonymous"].get("/nobody").code)
	assert.Equal(t, http.StatusNotFound, clients["alice"].get("/admin/").code, "admin pages hide from non-admins")
	assert.Equal(t, http.StatusNotFound, clients["alice"].get("/admin/slow/").code)
	assert.Equal(t, http.StatusOK, clients["boss"].get("/admin/").code)
	assert.Equal(t, http.StatusOK, clients["boss"].get("/admin/slow/").code)

	// Settings: visibility, collaborators, protected branches, deletion.
	alice := clients["alice"]
	alice.get("/alice/pub/settings")
	r = alice.post("/alice/pub/settings", url.Values{"action": {"general"}, "description": {"now private"}, "default_branch": {"main"}, "private": {"1"}})
	require.Equal(t, http.StatusSeeOther, r.code, r.body)
	assert.Equal(t, http.StatusNotFound, clients["anonymous"].get("/alice/pub").code, "hidden at once (fragments invalidated)")
	r = alice.post("/alice/pub/settings", url.Values{"action": {"collab"}, "user": {"carol"}, "level": {"write"}})
	require.Equal(t, http.StatusSeeOther, r.code, r.body)
	assert.Equal(t, http.StatusOK, clients["carol"].get("/alice/pub").code)
	r = alice.post("/alice/pub/settings", url.Values{"action": {"collab"}, "user": {"nobody"}, "level": {"write"}})
	assert.Equal(t, http.StatusUnprocessableEntity, r.code)
	r = alice.post("/alice/pub/settings", url.Values{"action": {"protect"}, "pattern": {"release/*"}})
	require.Equal(t, http.StatusSeeOther, r.code)
	assert.Contains(t, alice.get("/alice/pub/settings").body, "release/*")
	r = alice.post("/alice/pub/settings", url.Values{"action": {"hook"}, "url": {"javascript:alert(1)"}, "secret": {"s"}})
	assert.Equal(t, http.StatusUnprocessableEntity, r.code)
	for _, tc := range []struct{ name, to string }{{"invalid", "../x"}, {"taken", "PRIV"}, {"reserved suffix", "x.git"}} {
		r = alice.post("/alice/pub/settings", url.Values{"action": {"rename"}, "name": {tc.to}})
		assert.Equal(t, http.StatusUnprocessableEntity, r.code, tc.name)
	}
	r = alice.post("/alice/pub/settings", url.Values{"action": {"rename"}, "name": {"renamed"}})
	require.Equal(t, http.StatusSeeOther, r.code, r.body)
	assert.Equal(t, "/alice/renamed/settings", r.h.Get("Location"))
	assert.Equal(t, http.StatusNotFound, alice.get("/alice/pub").code, "the old name is free")
	assert.Contains(t, alice.get("/alice/renamed").body, "now private")
	assert.Equal(t, http.StatusOK, clients["carol"].get("/alice/renamed").code, "collaborators follow")
	assert.Contains(t, testenv.Run(t, "", "ls-remote", f.gitURL("alice/renamed", "alice", tok)), "refs/heads/main")
	r = alice.post("/alice/renamed/settings", url.Values{"action": {"delete"}, "confirm": {"wrong"}})
	assert.Equal(t, http.StatusUnprocessableEntity, r.code)
	r = alice.post("/alice/renamed/settings", url.Values{"action": {"delete"}, "confirm": {"renamed"}})
	assert.Equal(t, http.StatusSeeOther, r.code)
	assert.Equal(t, http.StatusNotFound, alice.get("/alice/renamed").code)
}

func privHead(t *testing.T, f *testForge, tok string) string {
	return strings.Fields(testenv.Run(t, "", "ls-remote", f.gitURL("alice/priv", "alice", tok), "refs/heads/main"))[0]
}

// TestSessionsAndCSRF: forged and tampered cookies are anonymous, posts
// need the session's token and the same origin, logins are rate limited.
func TestSessionsAndCSRF(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	f.user("mallory")
	alice := f.browser()
	r := alice.post("/login", url.Values{"name": {"alice"}, "password": {"alice-password"}, "next": {"//evil.example/"}})
	require.Equal(t, http.StatusSeeOther, r.code)
	assert.Equal(t, "/", r.h.Get("Location"), "no open redirect")
	for _, next := range []string{"/\t/evil.example", "/\v/evil.example", "/\\evil.example"} {
		r := f.browser().post("/login", url.Values{"name": {"alice"}, "password": {"alice-password"}, "next": {next}})
		require.Equal(t, http.StatusSeeOther, r.code)
		assert.Equal(t, "/", r.h.Get("Location"), "no open redirect through %q", next)
		form := f.browser().get("/login?next=" + url.QueryEscape(next))
		assert.NotContains(t, form.body, "evil.example", "the form does not carry %q", next)
	}
	c := r.h.Get("Set-Cookie")
	for _, attr := range []string{"HttpOnly", "SameSite=Lax", "Path=/"} {
		assert.Contains(t, c, attr)
	}
	alice.get("/settings")
	mallory := f.browser()
	mallory.login("mallory", "mallory-password")

	for _, tc := range []struct {
		name   string
		form   url.Values
		header []string
	}{
		{"no token", url.Values{"csrf": {""}}, nil},
		{"wrong token", url.Values{"csrf": {"x" + alice.csrf}}, nil},
		{"another session's token", url.Values{"csrf": {mallory.csrf}}, nil},
		{"cross-site", url.Values{}, []string{"Sec-Fetch-Site", "cross-site"}},
		{"foreign origin", url.Values{}, []string{"Origin", "https://evil.example"}},
	} {
		tc.form.Set("name", "csrf-"+strings.ReplaceAll(tc.name, " ", "-"))
		r := alice.post("/new", tc.form, tc.header...)
		assert.Equal(t, http.StatusForbidden, r.code, tc.name)
	}
	repos, err := f.s.forge.Meta.Repos(context.Background(), forge.RepoQuery{Limit: 1000})
	require.NoError(t, err)
	assert.Empty(t, repos, "no forged post created anything")

	// A tampered or foreign cookie is no session.
	u, _ := url.Parse(f.ts.URL)
	cookie := alice.c.Jar.Cookies(u)[0]
	for _, v := range []string{cookie.Value[:len(cookie.Value)-2] + "xx", "bWFs" + cookie.Value[4:], "bWFsbG9yeXw5OTk5OTk5OTk5fDAw.sig"} {
		eve := f.browser()
		eve.c.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: v}})
		r := eve.get("/new")
		assert.Equal(t, http.StatusSeeOther, r.code, "treated as anonymous: sent to sign in")
	}

	// Logins are rate limited per address and per name.
	eve := f.browser()
	var last resp
	for range loginBurst + 1 {
		last = eve.post("/login", url.Values{"name": {"alice"}, "password": {"guess"}})
	}
	assert.Equal(t, http.StatusTooManyRequests, last.code)
	assert.NotEmpty(t, last.h.Get("Retry-After"))
	// Even the right password waits now.
	assert.Equal(t, http.StatusTooManyRequests, eve.post("/login", url.Values{"name": {"alice"}, "password": {"alice-password"}}).code)
}

// TestGitLoginsRateLimited: failed Basic-auth logins of git clients are
// limited per address too; credential-less requests and successes are
// not counted.
func TestGitLoginsRateLimited(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	f.mustCLI("", "repo", "create", "alice/secret", "-private")
	refs := f.ts.URL + "/alice/secret.git/info/refs?service=git-upload-pack"
	try := func(user, pass string) int {
		req, _ := http.NewRequest("GET", refs, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	for range loginBurst + 5 {
		require.Equal(t, http.StatusUnauthorized, try("", ""), "asking for credentials is no attempt")
	}
	for range 3 {
		require.Equal(t, http.StatusOK, try("alice", "alice-password"), "successes are not counted")
	}
	for range loginBurst {
		require.Equal(t, http.StatusUnauthorized, try("alice", "guess"))
	}
	// The limiter refills one attempt every loginEvery; a slow machine
	// (password hashing under -race) may have earned one or two back by
	// now, but never the burst.
	limited := false
	for range 3 {
		code := try("alice", "guess")
		if code == http.StatusTooManyRequests {
			limited = true
			break
		}
		require.Equal(t, http.StatusUnauthorized, code)
	}
	require.True(t, limited, "guessing is stopped once the burst is spent")
	assert.Equal(t, http.StatusTooManyRequests, try("alice", "alice-password"), "not even checked now")
}

// TestHTTPCaching: ETags and 304 for ref-named pages, immutable pinned
// pages for anonymous visitors of public repositories, private
// otherwise, fingerprinted static files, gzip.
func TestHTTPCaching(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	work := f.pushSample("alice/proj", "alice", tok)
	head := strings.TrimSpace(testenv.Run(t, work, "rev-parse", "HEAD"))
	anon := f.browser()

	r := anon.get("/alice/proj")
	etag := r.h.Get("ETag")
	require.NotEmpty(t, etag)
	assert.Equal(t, "public, no-cache", r.h.Get("Cache-Control"))
	r = anon.get("/alice/proj", "If-None-Match", etag)
	assert.Equal(t, http.StatusNotModified, r.code)
	assert.Empty(t, r.body)

	r = anon.get("/alice/proj/tree/" + head + "/src")
	assert.Equal(t, "public, max-age=31536000, immutable", r.h.Get("Cache-Control"))
	assert.Equal(t, "public, max-age=31536000, immutable", anon.get("/alice/proj/commit/"+head).h.Get("Cache-Control"))
	assert.Equal(t, "public, no-cache", anon.get("/alice/proj/blob/main/README.md").h.Get("Cache-Control"))

	// A push moves main: the ETag of the ref-named page changes.
	testenv.Run(t, work, "commit", "-q", "--allow-empty", "-m", "Another")
	testenv.Run(t, work, "push", "-q", f.gitURL("alice/proj", "alice", tok), "main")
	r = anon.get("/alice/proj", "If-None-Match", etag)
	assert.Equal(t, http.StatusOK, r.code)
	assert.NotEqual(t, etag, r.h.Get("ETag"))

	alice := f.browser()
	alice.login("alice", "alice-password")
	r = alice.get("/alice/proj/tree/" + head)
	assert.Equal(t, "private, no-cache", r.h.Get("Cache-Control"), "signed-in pages are private")
	assert.NotEqual(t, anon.get("/alice/proj/tree/"+head).h.Get("ETag"), r.h.Get("ETag"))

	// Static files: fingerprinted and immutable.
	css := regexp.MustCompile(`href="(/static/style\.[0-9a-f]+\.css)"`).FindStringSubmatch(r.body)
	require.NotNil(t, css)
	s := anon.get(css[1])
	assert.Equal(t, http.StatusOK, s.code)
	assert.Equal(t, "public, max-age=31536000, immutable", s.h.Get("Cache-Control"))
	assert.Contains(t, s.body, ".chroma", "highlighting styles included")

	// gzip when asked for.
	req, _ := http.NewRequest("GET", f.ts.URL+"/alice/proj", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	res, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, "gzip", res.Header.Get("Content-Encoding"))
}

// TestLastCommitsFilledAfter: when the last commits are not found within
// the page's budget, the page comes without them, with a URL its script
// fetches; the background fill completes them for later pages.
func TestLastCommitsFilledAfter(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.s.repo.pageBudget = time.Nanosecond
	// No job fills them after the push (see TestPushWarmsPages): the
	// first view starts the walk.
	require.NoError(t, f.s.queue.client.QueuePause(context.Background(), slowQueue, nil))
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	f.pushSample("alice/proj", "alice", tok)
	anon := f.browser()
	r := anon.get("/alice/proj")
	require.Equal(t, http.StatusOK, r.code)
	fill := regexp.MustCompile(`data-fill="([^"]+)"`).FindStringSubmatch(r.body)
	require.NotNil(t, fill, "the page says where to get the rest")
	assert.NotContains(t, r.body, "Say &lt;b&gt;hi")
	r = anon.get(strings.ReplaceAll(fill[1], "&amp;", "&"))
	require.Equal(t, http.StatusOK, r.code)
	assert.Contains(t, r.body, "Say &lt;b&gt;hi")
	assert.NotContains(t, r.body, "data-fill")
	assert.Contains(t, r.h.Get("Cache-Control"), "immutable")
	// Later pages have them at once: the render went on and was cached.
	assert.Contains(t, anon.get("/alice/proj").body, "Say &lt;b&gt;hi")

	// The fill URL names a ref and the commit it resolved to: anything
	// else is 404 before any work, so that ?ref= cannot start walks.
	walks := f.s.lastCommits.Stats().Walks
	u, err := url.Parse(strings.ReplaceAll(fill[1], "&amp;", "&"))
	require.NoError(t, err)
	for _, q := range []string{"ref=nope&c=" + u.Query().Get("c"), "ref=main&c=" + strings.Repeat("a", 40), "ref=feature/login&c=" + u.Query().Get("c"), "ref=main/src&c=" + u.Query().Get("c")} {
		assert.Equal(t, http.StatusNotFound, anon.get(u.Path+"?"+q).code, q)
	}
	assert.Equal(t, walks, f.s.lastCommits.Stats().Walks)

	// A new process finds the last commits on disk: its first page has
	// them without a walk.
	s2, ts2 := startInstance(t, f.data)
	f2 := &testForge{t: t, s: s2, ts: ts2, data: f.data}
	assert.Contains(t, f2.browser().get("/alice/proj").body, "Say &lt;b&gt;hi")
	assert.Equal(t, int64(0), s2.lastCommits.Stats().Walks)
}

func TestOperations(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	anon := f.browser()
	assert.Equal(t, "ok\n", anon.get("/healthz").body)
	assert.Equal(t, "ready\n", anon.get("/readyz").body)
	anon.get("/explore")
	m := anon.get("/metrics")
	require.Equal(t, http.StatusOK, m.code, "loopback may read the metrics")
	assert.Contains(t, m.body, `forged_request_duration_seconds_count{code="2xx",method="GET",route="/explore"} 1`)
	assert.Contains(t, m.body, "forged_fragment_renders_total")
	r := anon.get("/explore", "X-Request-Id", "from-the-proxy")
	assert.Equal(t, "from-the-proxy", r.h.Get("X-Request-Id"), "a proxy on this machine is believed by default")
	// Behind such a proxy, the metrics are not public: the client is the
	// one the proxy names.
	assert.Equal(t, http.StatusNotFound, anon.get("/metrics", "X-Forwarded-For", "203.0.113.9").code)
	untrusting := newForge(t, "-trusted-proxies", "none")
	r = untrusting.browser().get("/explore", "X-Request-Id", "from-the-client")
	assert.Len(t, r.h.Get("X-Request-Id"), 16, "ids from untrusted clients are replaced")
	res, err := http.Get(f.ts.URL + "/robots.txt")
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Contains(t, string(b), "Disallow: /*/*/archive/")
}

// TestReadyzWithMemcached: the shared fragment tier in use, and readiness
// failing when memcached goes away.
func TestReadyzWithMemcached(t *testing.T) {
	t.Parallel()
	mc := testenv.Memcached(t)
	f := newForge(t, "-memcached", mc)
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	f.pushSample("alice/proj", "alice", tok)
	anon := f.browser()
	assert.Equal(t, "ready\n", anon.get("/readyz").body)
	anon.get("/alice/proj")
	anon.get("/alice/proj")
	st := f.s.cache.Stats()
	assert.Positive(t, st.L1Hits+st.L2Hits)
	assert.Zero(t, st.L2Errors)
}

// TestWebhooksNeverReachInside: a repository admin's webhook to a
// loopback address is refused at connection time, unless
// -webhook-private allows it.
func TestWebhooksNeverReachInside(t *testing.T) {
	t.Parallel()
	got := make(chan string, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get(forge.SignatureHeader)
	}))
	defer hook.Close()
	for _, allow := range []bool{false, true} {
		var flags []string
		if allow {
			flags = []string{"-webhook-private"}
		}
		f := newForge(t, flags...)
		f.s.hooks.Attempts = 1
		f.user("alice")
		tok := f.token("alice")
		f.mustCLI("", "repo", "create", "alice/proj")
		info, err := f.s.forge.Meta.RepoInfo(context.Background(), "alice", "proj")
		require.NoError(t, err)
		h, err := f.s.forge.AddWebhook(context.Background(), info.ID, hook.URL, "s")
		require.NoError(t, err)
		f.pushSample("alice/proj", "alice", tok)
		var d []forge.Delivery
		waitFor(t, "the delivery", 10*time.Second, func() bool {
			d, _ = f.s.forge.Meta.Deliveries(context.Background(), h.ID, 10)
			return len(d) > 0 && d[0].Attempts > 0
		})
		if allow {
			assert.Equal(t, http.StatusOK, d[0].Status)
			assert.NotEmpty(t, <-got)
		} else {
			assert.Zero(t, d[0].Status)
			assert.Contains(t, d[0].Error, "loopback, private, shared or reserved")
			assert.Empty(t, got, "nothing reached the internal address")
		}
	}
}

func TestLocalPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "/alice/proj", "/alice/proj"},
		{"query", "/explore?tab=week", "/explore?tab=week"},
		{"trailing slash", "/admin/", "/admin/"},
		{"dots cleaned", "/a/../b/./c", "/b/c"},
		{"dots above the root", "/..//evil.example", "/evil.example"},
		{"protocol-relative", "//evil.example/", "/"},
		{"backslash", "/\\evil.example", "/"},
		{"backslash later", "/a\\b", "/"},
		{"tab", "/\t/evil.example", "/"},
		{"vertical tab", "/\v/evil.example", "/"},
		{"newline", "/\n/evil.example", "/"},
		{"NUL", "/\x00/evil.example", "/"},
		{"DEL", "/\x7f/evil.example", "/"},
		{"space", "/ /evil.example", "/"},
		{"non-ASCII", "/\u3000/evil.example", "/"},
		{"scheme", "https://evil.example/", "/"},
		{"javascript", "javascript:alert(1)", "/"},
		{"relative", "evil.example", "/"},
		{"empty", "", "/"},
		{"fragment dropped", "/a#frag", "/a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, localPath(tc.in))
		})
	}
}

// TestDataIsPrivate: the data directory and what holds secrets are their
// owner's alone, and a damaged secret.key is an error naming it.
func TestDataIsPrivate(t *testing.T) {
	t.Parallel()
	data := filepath.Join(t.TempDir(), "data")
	f := newInstance(t, data)
	f.user("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	for _, tc := range []struct {
		path string
		mode os.FileMode
	}{
		{"", 0o700},
		{"repos", 0o700},
		{"repos/alice", 0o700},
		{"trash", 0o700},
		{"cache/lastcommits", 0o700},
		{"forge.db", 0o600},
		{"views.db", 0o600},
		{"queue.db", 0o600},
		{"secret.key", 0o600},
	} {
		fi, err := os.Stat(filepath.Join(data, tc.path))
		if tc.path == "cache/lastcommits" && errors.Is(err, os.ErrNotExist) {
			continue
		}
		require.NoError(t, err, tc.path)
		assert.Equal(t, tc.mode, fi.Mode().Perm(), "mode of %q", tc.path)
	}

	for _, tc := range []struct {
		name    string
		content []byte
	}{
		{"empty", nil},
		{"short", []byte("0123456789")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			key := filepath.Join(dir, "secret.key")
			require.NoError(t, os.WriteFile(key, tc.content, 0o600))
			cfg, err := parseFlags([]string{"-data", dir}, io.Discard)
			require.NoError(t, err)
			_, err = newServer(context.Background(), cfg, slog.New(slog.DiscardHandler))
			require.Error(t, err)
			assert.Contains(t, err.Error(), key)
			assert.Contains(t, err.Error(), "not 32")
		})
	}
}

// TestReservedNames: the first path segments of the site's own pages
// (from its route table) and of pages to come cannot be user names.
func TestReservedNames(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	for _, name := range []string{"healthz", "readyz", "metrics", "static", "admin", "explore", "login", "robots.txt", "Settings", "api", "search"} {
		out, err := f.cli("", "user", "add", name)
		require.Error(t, err, name)
		assert.Contains(t, err.Error()+out, "reserved", name)
	}
	for _, p := range pages {
		if first := firstSegment(p.pattern); !strings.HasPrefix(first, "{") {
			assert.True(t, reservedName(first), "%s is reserved", first)
		}
	}
}

// TestMetricsLabelsFromPatterns: random paths add no metric series: every
// route label is a route pattern, or "unmatched".
func TestMetricsLabelsFromPatterns(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	anon := f.browser()
	long := strings.Repeat("x", 2000)
	for i := range 50 {
		for _, p := range []string{"/admin/" + long + strconv.Itoa(i), "/alice/proj/" + long + strconv.Itoa(i), "/" + long + strconv.Itoa(i) + "/a/b/c", "/static/../../" + strconv.Itoa(i)} {
			anon.get(p)
		}
	}
	for i := range 20 {
		req, _ := http.NewRequest("X"+strconv.Itoa(i), f.ts.URL+"/explore", nil)
		anon.do(req)
	}
	anon.get("/alice/proj")
	m := anon.get("/metrics")
	require.Equal(t, http.StatusOK, m.code)
	labels := map[string]bool{}
	for _, match := range regexp.MustCompile(`route="([^"]*)"`).FindAllStringSubmatch(m.body, -1) {
		labels[match[1]] = true
	}
	patterns := map[string]bool{unmatched: true}
	for _, p := range pages {
		_, path, _ := strings.Cut(p.pattern, " ")
		patterns[path] = true
	}
	for l := range labels {
		assert.True(t, patterns[l] || strings.HasPrefix(l, "git "), "label %q comes from a pattern", l)
		assert.Less(t, len(l), 64)
	}
	assert.True(t, labels[unmatched])
	assert.True(t, labels["/{owner}/{repo}"])
	assert.Contains(t, m.body, `method="other"`)
	assert.NotContains(t, m.body, `method="X1"`)
	assert.Less(t, len(m.body), 200<<10, "a bounded number of series")
}

// TestLoginLimitsHold: attempts take their token before the password is
// checked (concurrent guesses cannot all pass), the account's limit
// holds across addresses without locking its owner out of the address
// they use, and a database that does not answer is a 503 that counts
// nothing.
func TestLoginLimitsHold(t *testing.T) {
	t.Parallel()
	f := newForge(t, "-trusted-proxies", "127.0.0.1")
	f.user("alice")
	f.mustCLI("", "repo", "create", "alice/secret", "-private")
	refs := f.ts.URL + "/alice/secret.git/info/refs?service=git-upload-pack"
	try := func(from, user, pass string) int {
		req, _ := http.NewRequest("GET", refs, nil)
		req.SetBasicAuth(user, pass)
		req.Header.Set("X-Forwarded-For", from)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	// Alice signs in from her usual address.
	require.Equal(t, http.StatusOK, try("198.51.100.7", "alice", "alice-password"))

	// Twenty guesses at once from one address: only the burst is checked.
	var wg sync.WaitGroup
	codes := make(chan int, 20)
	for range 20 {
		wg.Add(1)
		go func() { defer wg.Done(); codes <- try("203.0.113.1", "alice", "guess") }()
	}
	wg.Wait()
	close(codes)
	checked := 0
	for c := range codes {
		if c == http.StatusUnauthorized {
			checked++
		} else {
			require.Equal(t, http.StatusTooManyRequests, c)
		}
	}
	assert.LessOrEqual(t, checked, loginBurst+2, "at most the burst (and what refilled meanwhile) was checked")
	assert.Equal(t, http.StatusTooManyRequests, try("203.0.113.1", "alice", "alice-password"), "not even checked now")

	// Guesses from many addresses spend the account's limit...
	limited := false
	for i := range 3 * loginBurst {
		if try(fmt.Sprintf("203.0.113.%d", 10+i), "alice", "guess") == http.StatusTooManyRequests {
			limited = true
			break
		}
	}
	assert.True(t, limited, "the account's limit holds across addresses")
	assert.Equal(t, http.StatusTooManyRequests, try("203.0.113.200", "alice", "alice-password"), "a new address waits")
	// ...but not of the address alice uses.
	assert.Equal(t, http.StatusOK, try("198.51.100.7", "alice", "alice-password"), "no lockout of the owner")
	// Tokens guess no account.
	assert.Equal(t, http.StatusUnauthorized, try("192.0.2.9", "alice", "fkt_not-a-real-token"))

	// The database goes away: 503, and nothing is counted.
	require.NoError(t, f.s.forge.Meta.Close())
	for range loginBurst + 3 {
		assert.Equal(t, http.StatusServiceUnavailable, try("192.0.2.50", "bob", "whatever"))
	}
	r := f.browser().post("/login", url.Values{"name": {"bob"}, "password": {"whatever"}}, "X-Forwarded-For", "192.0.2.51")
	assert.Equal(t, http.StatusServiceUnavailable, r.code)
	_, ok := f.s.logins.begin("192.0.2.50", "bob")
	assert.True(t, ok, "outages are not failed logins")
}

// TestWebhookSurvivesRestart: a delivery whose receiver is down when
// forged stops is sent by the next forged on the same data directory,
// once the receiver is back: deliveries are jobs of the durable queue,
// not goroutines of a process.
func TestWebhookSurvivesRestart(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	// The receiver's address, refusing connections until it starts.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()

	a := newInstance(t, data, "-webhook-private")
	a.user("alice")
	tok := a.token("alice")
	a.mustCLI("", "repo", "create", "alice/proj")
	ctx := context.Background()
	info, err := a.s.forge.Meta.RepoInfo(ctx, "alice", "proj")
	require.NoError(t, err)
	h, err := a.s.forge.AddWebhook(ctx, info.ID, "http://"+addr+"/hook", "s")
	require.NoError(t, err)
	a.pushSample("alice/proj", "alice", tok)
	waitFor(t, "the first, failed attempt", 20*time.Second, func() bool {
		d, _ := a.s.forge.Meta.Deliveries(ctx, h.ID, 10)
		return len(d) == 1 && d[0].Attempts >= 1
	})
	a.ts.Close()
	a.s.Close() // stopped with the delivery waiting for its retry

	got := make(chan string, 4)
	rl, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	recv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("X-Forgekit-Delivery")
	})}
	go recv.Serve(rl)
	defer recv.Close()

	b := newInstance(t, data, "-webhook-private")
	select {
	case id := <-got:
		assert.NotEmpty(t, id)
	case <-time.After(30 * time.Second):
		t.Fatal("the delivery was lost with the process that recorded it")
	}
	waitFor(t, "the delivery log", 10*time.Second, func() bool {
		d, _ := b.s.forge.Meta.Deliveries(ctx, h.ID, 10)
		return len(d) == 1 && !d[0].DeliveredAt.IsZero() && d[0].Status == http.StatusOK
	})
}

// TestJobsCommands: a delivery that keeps failing ends up visible as
// discarded in forged jobs list, never silently dropped; forged jobs
// retry runs it again; unknown ids and states are clear errors.
func TestJobsCommands(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	fail.Store(true)
	got := make(chan string, 4)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		got <- r.Header.Get("X-Forgekit-Delivery")
	}))
	defer recv.Close()
	f := newForge(t, "-webhook-private")
	f.s.hooks.Attempts = 1 // given up after one failure
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	ctx := context.Background()
	info, err := f.s.forge.Meta.RepoInfo(ctx, "alice", "proj")
	require.NoError(t, err)
	_, err = f.s.forge.AddWebhook(ctx, info.ID, recv.URL, "s")
	require.NoError(t, err)
	f.pushSample("alice/proj", "alice", tok)

	var line string
	waitFor(t, "the discarded job", 20*time.Second, func() bool {
		out := f.mustCLI("", "jobs", "list", "-state", "discarded")
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "webhook_delivery") {
				line = l
				return true
			}
		}
		return false
	})
	assert.Contains(t, line, "1/1")
	assert.Contains(t, line, "500")
	id := strings.Fields(line)[0]
	pushes := f.mustCLI("", "jobs", "list", "-kind", "push")
	assert.Contains(t, pushes, " push ")
	assert.NotContains(t, pushes, "webhook_delivery", "-kind: that kind only")
	metrics := f.browser().get("/metrics").body
	assert.Contains(t, metrics, `forged_jobs{kind="webhook_delivery",state="discarded"} 1`)
	assert.Contains(t, metrics, "forged_jobs_oldest_waiting_seconds 0")

	fail.Store(false)
	assert.Contains(t, f.mustCLI("", "jobs", "retry", id), "retried: now available")
	select {
	case <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("the retried job did not run")
	}
	_, err = f.cli("", "jobs", "cancel", "999999")
	assert.ErrorContains(t, err, "no job 999999")
	_, err = f.cli("", "jobs", "list", "-state", "sleeping")
	assert.ErrorContains(t, err, "not a job state")
	_, err = f.cli("", "jobs", "retry", "x")
	assert.ErrorContains(t, err, "not a job id")
}
