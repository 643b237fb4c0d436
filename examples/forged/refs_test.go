package main

import (
	"encoding/xml"
	"fmt"
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

func TestBlamePage(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	work := f.pushSample("alice/proj", "alice", tok)
	b := f.browser()
	blob := b.get("/alice/proj/blob/main/src/main.go")
	assert.Contains(t, blob.body, `href="/alice/proj/blame/main/src/main.go"`, "linked from the file")

	r := b.get("/alice/proj/blame/main/src/main.go")
	require.Equal(t, http.StatusOK, r.code)
	for _, l := range strings.Split(strings.TrimSpace(testenv.Run(t, work, "blame", "-l", "-s", "main", "--", "src/main.go")), "\n") {
		sha := strings.TrimPrefix(strings.Fields(l)[0], "^")
		assert.Contains(t, r.body, `/alice/proj/commit/`+sha, "every line's commit, as git blame says")
	}
	assert.Contains(t, r.body, `id="L3"`)
	assert.Equal(t, http.StatusNotFound, b.get("/alice/proj/blame/main/nope.go").code)
	assert.Equal(t, http.StatusFound, b.get("/alice/proj/blame/main/src").code, "a directory goes to its tree")

	// Past the page's budget: a message and a reload, never a 503; the
	// blame goes on and a later view has it.
	f.s.repo.pageBudget = time.Nanosecond
	r = b.get("/alice/proj/blame/main/README.md")
	require.Equal(t, http.StatusOK, r.code)
	if strings.Contains(r.body, "being computed") {
		assert.Equal(t, "5", r.h.Get("Refresh"))
		assert.Contains(t, r.h.Get("Cache-Control"), "no-store")
		require.Eventually(t, func() bool {
			return strings.Contains(b.get("/alice/proj/blame/main/README.md").body, `id="L1"`)
		}, 10*time.Second, 20*time.Millisecond)
	}
	assert.Contains(t, b.get("/alice/proj/blame/main/README.md").body, "Sample project")
}

func TestBranchesAndTags(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	f.user("bob")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	work := f.pushSample("alice/proj", "alice", tok)
	for i := 1; i <= 35; i++ {
		testenv.Run(t, work, "tag", fmt.Sprintf("v2.%d", i))
	}
	testenv.Run(t, work, "tag", "-a", "-m", "The big release\n\nWith notes & <b>markup</b>.", "v3.0")
	testenv.Run(t, work, "branch", "gone", "main")
	u := f.gitURL("alice/proj", "alice", tok)
	testenv.Run(t, work, "push", "-q", "--tags", u, "gone")

	alice, bob, anon := f.browser(), f.browser(), f.browser()
	alice.login("alice", "alice-password")
	bob.login("bob", "bob-password")
	r := anon.get("/alice/proj/branches")
	require.Equal(t, http.StatusOK, r.code)
	assert.Contains(t, r.body, ">feature/login</a>")
	assert.Regexp(t, `>main</a> <span class="badge">default</span> <span class="badge">protected</span>`, r.body)
	assert.Contains(t, r.body, "0 · 1 <a", "feature/login is 0 behind and 1 ahead of main")
	assert.NotContains(t, r.body, "Delete</button>", "no delete for readers")

	r = alice.get("/alice/proj/branches")
	assert.Contains(t, r.body, `<form id="delete-branch" method="post" action="/alice/proj/branches"><input type="hidden" name="csrf"`)
	del := regexp.MustCompile(`name="delete" value="([0-9a-f]{40} gone)"`).FindStringSubmatch(r.body)
	require.NotNil(t, del, "a delete button names the branch and the commit it is at")
	assert.NotRegexp(t, `name="delete" value="[0-9a-f]{40} main"`, r.body, "no delete for the default branch")
	assert.NotContains(t, anon.get("/alice/proj/branches").body, `id="delete-branch"`, "the readers' fragment is another")
	// Deleting: writers only, with the CSRF token, never a protected one.
	assert.Equal(t, http.StatusForbidden, alice.post("/alice/proj/branches", url.Values{"branch": {"gone"}, "csrf": {"forged"}}).code)
	bob.get("/alice/proj/branches")
	assert.Equal(t, http.StatusNotFound, bob.post("/alice/proj/branches", url.Values{"branch": {"gone"}}).code)
	alice.get("/alice/proj/branches")
	assert.Equal(t, http.StatusUnprocessableEntity, alice.post("/alice/proj/branches", url.Values{"branch": {"main"}}).code)
	stale := strings.Repeat("0", 40) + " gone"
	assert.Equal(t, http.StatusUnprocessableEntity, alice.post("/alice/proj/branches", url.Values{"delete": {stale}}).code,
		"a branch that moved since the page was read stays")
	r = alice.post("/alice/proj/branches", url.Values{"delete": {del[1]}})
	require.Equal(t, http.StatusSeeOther, r.code, r.body)
	assert.NotContains(t, testenv.Run(t, "", "ls-remote", "--heads", u), "refs/heads/gone")
	assert.NotContains(t, anon.get("/alice/proj/branches").body, ">gone</a>", "the list follows at once")

	// Tags: newest first, paginated, with annotations and archives.
	r = anon.get("/alice/proj/tags")
	require.Equal(t, http.StatusOK, r.code)
	assert.Contains(t, r.body, "Tags <span class=\"muted\">37</span>")
	assert.Contains(t, r.body, "With notes &amp; &lt;b&gt;markup&lt;/b&gt;.")
	assert.Contains(t, r.body, `/alice/proj/archive/v3.0.tar.gz`)
	assert.Contains(t, r.body, `href="/alice/proj/tags?page=2"`)
	assert.Contains(t, r.body, `<link rel="alternate" type="application/atom+xml" href="/alice/proj/tags.atom">`)
	assert.Equal(t, strings.Count(r.body, "<li>"), refsPerPage)
	r = anon.get("/alice/proj/tags?page=2")
	assert.Equal(t, 37-refsPerPage, strings.Count(r.body, "<li>"))
	assert.Equal(t, http.StatusNotFound, anon.get("/alice/proj/tags?page=3").code)
	assert.Equal(t, http.StatusNotFound, anon.get("/alice/proj/tags?page=x").code)
}

// atom is what the tests read of an Atom feed; xml.Unmarshal checks the
// namespace of each element.
type atom struct {
	XMLName xml.Name `xml:"http://www.w3.org/2005/Atom feed"`
	ID      string   `xml:"http://www.w3.org/2005/Atom id"`
	Title   string   `xml:"http://www.w3.org/2005/Atom title"`
	Updated string   `xml:"http://www.w3.org/2005/Atom updated"`
	Author  []struct {
		Name string `xml:"http://www.w3.org/2005/Atom name"`
	} `xml:"http://www.w3.org/2005/Atom author"`
	Links []struct {
		Rel  string `xml:"rel,attr"`
		Href string `xml:"href,attr"`
	} `xml:"http://www.w3.org/2005/Atom link"`
	Entries []struct {
		ID      string `xml:"http://www.w3.org/2005/Atom id"`
		Title   string `xml:"http://www.w3.org/2005/Atom title"`
		Updated string `xml:"http://www.w3.org/2005/Atom updated"`
		Author  struct {
			Name string `xml:"http://www.w3.org/2005/Atom name"`
		} `xml:"http://www.w3.org/2005/Atom author"`
		Link struct {
			Href string `xml:"href,attr"`
		} `xml:"http://www.w3.org/2005/Atom link"`
	} `xml:"http://www.w3.org/2005/Atom entry"`
}

// readAtom parses a feed and checks what RFC 4287 requires of it: an id,
// a title and an updated date on the feed and on each entry, an author
// for each entry (its own or the feed's), dates in RFC 3339, and ids
// that are absolute URIs, each used once.
func readAtom(t *testing.T, r resp) atom {
	t.Helper()
	require.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, "application/atom+xml; charset=utf-8", r.h.Get("Content-Type"))
	var a atom
	require.NoError(t, xml.Unmarshal([]byte(r.body), &a), r.body)
	require.NotEmpty(t, a.ID)
	require.NotEmpty(t, a.Title)
	_, err := time.Parse(time.RFC3339, a.Updated)
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, e := range a.Entries {
		u, err := url.Parse(e.ID)
		require.NoError(t, err)
		assert.True(t, u.IsAbs(), e.ID)
		assert.False(t, seen[e.ID], "ids are unique")
		seen[e.ID] = true
		assert.NotEmpty(t, e.Title)
		_, err = time.Parse(time.RFC3339, e.Updated)
		require.NoError(t, err)
		assert.True(t, e.Author.Name != "" || (len(a.Author) > 0 && a.Author[0].Name != ""))
	}
	return a
}

func TestFeeds(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	f.mustCLI("", "repo", "create", "alice/priv", "-private")
	work := f.pushSample("alice/proj", "alice", tok)
	f.pushSample("alice/priv", "alice", tok)
	anon := f.browser()

	page := anon.get("/alice/proj/commits/main")
	assert.Contains(t, page.body, `<link rel="alternate" type="application/atom+xml" href="/alice/proj/commits/main.atom">`)
	a := readAtom(t, anon.get("/alice/proj/commits/main.atom"))
	require.Len(t, a.Entries, 2)
	head := strings.TrimSpace(testenv.Run(t, work, "rev-parse", "main"))
	assert.Equal(t, f.ts.URL+"/alice/proj/commit/"+head, a.Entries[0].ID)
	assert.Equal(t, "Say <b>hi</b>", a.Entries[0].Title, "text, escaped by the encoder")
	assert.Equal(t, "Forge Tester", a.Entries[0].Author.Name)
	a = readAtom(t, anon.get("/alice/proj/commits/feature/login.atom"))
	assert.Len(t, a.Entries, 3, "a ref with a slash")

	a = readAtom(t, anon.get("/alice/proj/tags.atom"))
	require.Len(t, a.Entries, 1)
	assert.Equal(t, "v1.0", a.Entries[0].Title)

	// The user's pushes, to what the reader may see.
	f.s.forge.Wait() // pushes are recorded after the push answers
	assert.Contains(t, anon.get("/alice").body, `<link rel="alternate" type="application/atom+xml" href="/alice.atom">`)
	a = readAtom(t, anon.get("/alice.atom"))
	require.NotEmpty(t, a.Entries)
	for _, e := range a.Entries {
		assert.Contains(t, e.Title, "alice/proj", "no private repository's pushes")
	}
	assert.Equal(t, "alice pushed to alice/proj", a.Entries[0].Title)
	assert.Equal(t, http.StatusNotFound, anon.get("/nobody.atom").code)
	owner := f.browser()
	owner.login("alice", "alice-password")
	a = readAtom(t, owner.get("/alice.atom"))
	assert.Contains(t, a.Entries[0].Title, "alice/priv", "the owner sees her private pushes")

	assert.Equal(t, http.StatusNotFound, anon.get("/alice/priv/commits/main.atom").code, "private feeds are 404")
	assert.Equal(t, http.StatusNotFound, anon.get("/alice/priv/tags.atom").code)
	alice := f.browser()
	alice.login("alice", "alice-password")
	readAtom(t, alice.get("/alice/priv/tags.atom"))
}

func TestComparePage(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	work := f.pushSample("alice/proj", "alice", tok)
	b := f.browser()

	r := b.get("/alice/proj/compare")
	require.Equal(t, http.StatusOK, r.code)
	assert.Contains(t, r.body, `name="base" value="main"`)
	r = b.get("/alice/proj/compare?base=main&head=feature/login")
	require.Equal(t, http.StatusFound, r.code)
	assert.Equal(t, "/alice/proj/compare/main...feature/login", r.h.Get("Location"))

	r = b.get("/alice/proj/compare/main...feature/login")
	require.Equal(t, http.StatusOK, r.code)
	mb := strings.TrimSpace(testenv.Run(t, work, "merge-base", "main", "feature/login"))
	assert.Contains(t, r.body, "/alice/proj/commit/"+mb)
	assert.Contains(t, r.body, "<strong>1</strong> commit ahead, <strong>0</strong> behind")
	assert.Contains(t, r.body, "Login page")
	assert.Contains(t, r.body, "login.go")
	assert.Contains(t, r.h.Get("Cache-Control"), "no-cache", "refs move")

	r = b.get("/alice/proj/compare/feature/login...main")
	assert.Contains(t, r.body, "<strong>0</strong> commits ahead, <strong>1</strong> behind")
	assert.Contains(t, r.body, "Nothing to compare")

	for _, bad := range []string{"main", "main...", "...main", "main...nope", "nope...main", "main/src...main"} {
		assert.Equal(t, http.StatusNotFound, b.get("/alice/proj/compare/"+bad).code, bad)
	}

	// The raw diff: refs go to their commits, whose diff is git's.
	r = b.get("/alice/proj/compare/main...feature/login.diff")
	require.Equal(t, http.StatusFound, r.code)
	loc := r.h.Get("Location")
	r = b.get(loc)
	require.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, testenv.Run(t, work, "diff", "main...feature/login"), r.body)
	assert.Contains(t, r.h.Get("Cache-Control"), "immutable")
	assert.Contains(t, b.get(strings.TrimSuffix(loc, ".diff")).h.Get("Cache-Control"), "immutable", "both ends pinned")
	_ = filepath.Join
}

func TestExploreSearch(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	f.user("bob")
	f.mustCLI("", "repo", "create", "alice/widgets", "-description", "Makes gadgets")
	f.mustCLI("", "repo", "create", "alice/secret-widgets", "-private")
	anon, bob, alice := f.browser(), f.browser(), f.browser()
	bob.login("bob", "bob-password")
	alice.login("alice", "alice-password")

	r := anon.get("/explore?q=WIDGETS")
	require.Equal(t, http.StatusOK, r.code)
	assert.Contains(t, r.body, `href="/alice/widgets"`)
	assert.NotContains(t, r.body, "secret-widgets", "private repositories are never found by those who may not see them")
	assert.NotContains(t, bob.get("/explore?q=widgets").body, "secret-widgets")
	assert.Contains(t, alice.get("/explore?q=widgets").body, `href="/alice/secret-widgets"`)
	assert.Contains(t, anon.get("/explore?q=gadgets").body, `href="/alice/widgets"`, "by description")
	r = anon.get("/explore?q=" + url.QueryEscape("<script>"))
	assert.Contains(t, r.body, "No repository you may see matches")
	assert.NotContains(t, r.body, "<script>")
	assert.Contains(t, anon.get("/explore").body, `name="q"`, "the search box")
}

func TestCodeSearch(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	f.user("bob")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	f.mustCLI("", "repo", "create", "alice/priv", "-private")
	work := f.pushSample("alice/proj", "alice", tok)
	f.pushSample("alice/priv", "alice", tok)
	anon, alice, bob := f.browser(), f.browser(), f.browser()
	alice.login("alice", "alice-password")
	bob.login("bob", "bob-password")
	eventually := func(b *browser, path, want string) resp {
		t.Helper()
		var r resp
		require.Eventually(t, func() bool {
			r = b.get(path)
			return strings.Contains(r.body, want)
		}, 20*time.Second, 20*time.Millisecond, "%s never showed %q", path, want)
		return r
	}
	r := eventually(alice, "/search?q=PRINTLN", "alice/priv")
	assert.Contains(t, r.body, `href="/alice/proj/blob/main/src/main.go#L3"`)
	assert.Contains(t, r.body, `<mark>println</mark>`, "the match, highlighted")
	assert.Contains(t, r.body, `class="ctx"`, "with context")
	for _, b := range []*browser{anon, bob} {
		r = eventually(b, "/search?q=println", "alice/proj")
		assert.NotContains(t, r.body, "alice/priv", "never a private hit for those who may not see it")
	}
	assert.Equal(t, http.StatusNotFound, bob.get("/alice/priv/search?q=println").code)
	r = alice.get("/alice/priv/search?q=println")
	assert.Contains(t, r.body, `href="/alice/priv/blob/main/src/main.go`)
	assert.NotContains(t, r.body, "alice/proj/blob", "a repository's search is that repository's")
	assert.Contains(t, anon.get("/search?q=ab").body, "at least 3 characters")
	assert.Contains(t, anon.get("/search?q=nowhere-to-be-found").body, "No code matches")
	r = anon.get("/search?q=%3Cscript%3E")
	assert.Contains(t, r.body, "<mark>&lt;script&gt;</mark>", "the README's tag, found and escaped")
	assert.NotContains(t, r.body, "<script>alert")

	// A push is searchable soon after: only its changed files are read.
	require.NoError(t, os.WriteFile(filepath.Join(work, "src", "new.go"), []byte("package main // xylophone\n"), 0o644))
	testenv.Run(t, work, "add", ".")
	testenv.Run(t, work, "commit", "-q", "-m", "new")
	testenv.Run(t, work, "push", "-q", f.gitURL("alice/proj", "alice", tok), "main")
	eventually(anon, "/search?q=xylophone", "src/new.go")
	assert.NotContains(t, anon.get("/search?q=xylophone").body, "feature/login")

	// A deleted repository leaves the index.
	alice.get("/alice/proj/settings")
	require.Equal(t, http.StatusSeeOther, alice.post("/alice/proj/settings", url.Values{"action": {"delete"}, "confirm": {"proj"}}).code)
	eventually(alice, "/search?q=xylophone", "No code matches")
}
