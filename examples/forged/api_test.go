package main

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/internal/testenv"
)

// apiClient calls the JSON API as a script would: no cookies, an
// Authorization header of its own.
type apiClient struct {
	t    *testing.T
	base string
	auth string // the Authorization header, "" for none
}

type apiResp struct {
	code int
	h    http.Header
	body string
}

func (c apiClient) do(method, path, body string) apiResp {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	require.NoError(c.t, err)
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(c.t, err)
	if len(b) > 0 {
		assert.True(c.t, json.Valid(b), "%s %s: not JSON: %.200s", method, path, b)
		assert.Equal(c.t, "application/json; charset=utf-8", res.Header.Get("Content-Type"))
	}
	return apiResp{res.StatusCode, res.Header, string(b)}
}

func (r apiResp) json(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal([]byte(r.body), v), r.body)
}

func (r apiResp) message(t *testing.T) string {
	var m struct{ Message string }
	r.json(t, &m)
	return m.Message
}

func TestAPI(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	f.user("bob")
	tok := f.token("alice")
	readTok := tokenRE.FindString(f.mustCLI("", "token", "create", "alice", "-scope", "read", "-name", "ro"))
	f.mustCLI("", "repo", "create", "alice/sample", "-description", "the sample")
	f.mustCLI("", "repo", "create", "alice/priv", "-private")
	work := f.pushSample("alice/sample", "alice", tok)
	f.pushSample("alice/priv", "alice", tok)
	anon := apiClient{t, f.ts.URL + "/api/v1", ""}
	alice := apiClient{t, anon.base, "token " + tok}
	bob := apiClient{t, anon.base, "Basic " + base64.StdEncoding.EncodeToString([]byte("bob:bob-password"))}

	t.Run("authentication", func(t *testing.T) {
		r := anon.do("GET", "/user", "")
		assert.Equal(t, http.StatusUnauthorized, r.code)
		assert.Equal(t, "Requires authentication", r.message(t))
		for _, c := range []apiClient{alice, {t, anon.base, "Bearer " + tok},
			{t, anon.base, "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:alice-password"))},
			{t, anon.base, "Basic " + base64.StdEncoding.EncodeToString([]byte("x:"+tok))}} {
			var u struct{ Login, Type string }
			r := c.do("GET", "/user", "")
			require.Equal(t, http.StatusOK, r.code, r.body)
			r.json(t, &u)
			assert.Equal(t, "alice", u.Login)
			assert.Equal(t, "User", u.Type)
		}
		r = apiClient{t, anon.base, "token fkt_nope"}.do("GET", "/user", "")
		assert.Equal(t, http.StatusUnauthorized, r.code)
		assert.Equal(t, "Bad credentials", r.message(t))
		r = anon.do("GET", "/users/alice", "")
		assert.Equal(t, http.StatusOK, r.code)
		assert.Equal(t, http.StatusNotFound, anon.do("GET", "/users/nobody", "").code)
	})

	t.Run("repositories and visibility", func(t *testing.T) {
		var repo struct {
			FullName      string `json:"full_name"`
			DefaultBranch string `json:"default_branch"`
			Private       bool
			Permissions   *struct{ Admin, Push, Pull bool }
		}
		r := anon.do("GET", "/repos/alice/sample", "")
		require.Equal(t, http.StatusOK, r.code)
		r.json(t, &repo)
		assert.Equal(t, "alice/sample", repo.FullName)
		assert.Equal(t, "main", repo.DefaultBranch)
		assert.Nil(t, repo.Permissions, "anonymous: no permissions")
		for _, c := range []apiClient{anon, bob} {
			r := c.do("GET", "/repos/alice/priv", "")
			assert.Equal(t, http.StatusNotFound, r.code, "private is 404 to those who may not see it")
			assert.Equal(t, "Not Found", r.message(t))
			assert.Equal(t, http.StatusNotFound, c.do("GET", "/repos/alice/priv/contents/README.md", "").code)
		}
		alice.do("GET", "/repos/alice/priv", "").json(t, &repo)
		assert.True(t, repo.Private)
		assert.True(t, repo.Permissions.Admin)

		var list []struct{ Name string }
		anon.do("GET", "/users/alice/repos", "").json(t, &list)
		assert.Len(t, list, 1, "anonymous sees the public one")
		alice.do("GET", "/users/alice/repos", "").json(t, &list)
		assert.Len(t, list, 2)
		r = alice.do("GET", "/users/alice/repos?per_page=1", "")
		assert.Contains(t, r.h.Get("Link"), `rel="next"`)
		assert.Contains(t, r.h.Get("Link"), "page=2&per_page=1")
	})

	t.Run("refs, history and contents", func(t *testing.T) {
		var branches []struct {
			Name      string
			Protected bool
			Commit    struct{ SHA string }
		}
		anon.do("GET", "/repos/alice/sample/branches", "").json(t, &branches)
		require.Len(t, branches, 2)
		assert.Equal(t, "feature/login", branches[0].Name)
		assert.Equal(t, "main", branches[1].Name)
		assert.True(t, branches[1].Protected)
		head := strings.TrimSpace(testenv.Run(t, work, "rev-parse", "main"))
		assert.Equal(t, head, branches[1].Commit.SHA)
		var tags []struct {
			Name       string
			TarballURL string `json:"tarball_url"`
		}
		anon.do("GET", "/repos/alice/sample/tags", "").json(t, &tags)
		require.Len(t, tags, 1)
		assert.Equal(t, "v1.0", tags[0].Name)

		var commits []struct {
			SHA    string
			Commit struct {
				Message string
				Author  struct{ Name string }
			}
		}
		r := anon.do("GET", "/repos/alice/sample/commits?per_page=1", "")
		r.json(t, &commits)
		require.Len(t, commits, 1)
		assert.Equal(t, head, commits[0].SHA)
		assert.Equal(t, "Say <b>hi</b>", commits[0].Commit.Message)
		assert.Contains(t, r.h.Get("Link"), `rel="next"`)
		anon.do("GET", "/repos/alice/sample/commits?sha=feature/login&path=login.go", "").json(t, &commits)
		require.Len(t, commits, 1)
		assert.Equal(t, "Login page", commits[0].Commit.Message)
		assert.Equal(t, http.StatusNotFound, anon.do("GET", "/repos/alice/sample/commits?sha=nope", "").code)
		assert.Equal(t, http.StatusBadRequest, anon.do("GET", "/repos/alice/sample/commits?page=0", "").code)

		var one struct {
			SHA     string
			Parents []struct{ SHA string }
			Stats   struct{ Additions, Deletions, Total int }
			Files   []struct{ Filename, Status, Patch string }
		}
		anon.do("GET", "/repos/alice/sample/commits/main", "").json(t, &one)
		assert.Equal(t, head, one.SHA)
		require.Len(t, one.Parents, 1)
		assert.Equal(t, 1, one.Stats.Additions)
		require.Len(t, one.Files, 1)
		assert.Equal(t, "src/main.go", one.Files[0].Filename)
		assert.Equal(t, "modified", one.Files[0].Status)
		assert.Contains(t, one.Files[0].Patch, `+func main() { println("hi") }`)

		var file struct{ Type, Encoding, Content, Name, Path, SHA string }
		anon.do("GET", "/repos/alice/sample/contents/src/main.go?ref=main", "").json(t, &file)
		assert.Equal(t, "file", file.Type)
		data, err := base64.StdEncoding.DecodeString(file.Content)
		require.NoError(t, err)
		assert.Equal(t, "package main\n\nfunc main() { println(\"hi\") }\n", string(data))
		assert.Equal(t, strings.TrimSpace(testenv.Run(t, work, "rev-parse", "main:src/main.go")), file.SHA)
		var dir []struct{ Type, Name, Path string }
		anon.do("GET", "/repos/alice/sample/contents/", "").json(t, &dir)
		assert.Contains(t, dir, struct{ Type, Name, Path string }{"dir", "src", "src"})
		assert.Contains(t, dir, struct{ Type, Name, Path string }{"file", "README.md", "README.md"})
		assert.Equal(t, http.StatusNotFound, anon.do("GET", "/repos/alice/sample/contents/nope", "").code)
	})

	t.Run("writes", func(t *testing.T) {
		r := anon.do("POST", "/user/repos", `{"name": "x"}`)
		assert.Equal(t, http.StatusUnauthorized, r.code)
		r = apiClient{t, anon.base, "token " + readTok}.do("POST", "/user/repos", `{"name": "x"}`)
		assert.Equal(t, http.StatusForbidden, r.code, "a read token writes nothing")
		r = alice.do("POST", "/user/repos", `{"name": "made", "description": "by the API", "private": true}`)
		require.Equal(t, http.StatusCreated, r.code, r.body)
		assert.Equal(t, http.StatusUnprocessableEntity, alice.do("POST", "/user/repos", `{"name": "MADE"}`).code)
		assert.Equal(t, http.StatusUnprocessableEntity, alice.do("POST", "/user/repos", `{"name": "../x"}`).code)
		assert.Equal(t, http.StatusBadRequest, alice.do("POST", "/user/repos", `{"name": `).code)
		info, err := f.s.forge.Meta.RepoInfo(t.Context(), "alice", "made")
		require.NoError(t, err)
		assert.True(t, info.Private)
		patterns, _ := f.s.forge.Meta.ProtectedBranches(t.Context(), info.ID)
		assert.Equal(t, []string{"main"}, patterns, "the same invariants as every other path")

		assert.Equal(t, http.StatusNotFound, bob.do("GET", "/repos/alice/made", "").code)
		assert.Equal(t, http.StatusNotFound, bob.do("PUT", "/repos/alice/made/collaborators/bob", `{"permission": "admin"}`).code)
		assert.Equal(t, http.StatusUnprocessableEntity, alice.do("PUT", "/repos/alice/made/collaborators/bob", `{"permission": "owner"}`).code)
		assert.Equal(t, http.StatusNotFound, alice.do("PUT", "/repos/alice/made/collaborators/nobody", `{"permission": "push"}`).code)
		r = alice.do("PUT", "/repos/alice/made/collaborators/bob", `{"permission": "push"}`)
		require.Equal(t, http.StatusNoContent, r.code, r.body)
		var repo struct{ Permissions struct{ Admin, Push bool } }
		bob.do("GET", "/repos/alice/made", "").json(t, &repo)
		assert.True(t, repo.Permissions.Push)
		assert.False(t, repo.Permissions.Admin)
		assert.Equal(t, http.StatusForbidden, bob.do("POST", "/repos/alice/made/hooks", `{"config": {"url": "https://example.com/"}}`).code)

		r = alice.do("POST", "/repos/alice/made/hooks", `{"name": "web", "config": {"url": "https://ci.example.com/hook", "secret": "s"}, "events": ["push"]}`)
		require.Equal(t, http.StatusCreated, r.code, r.body)
		var hook struct {
			ID     int64
			Events []string
			Config struct{ URL, Secret string }
		}
		r.json(t, &hook)
		assert.Equal(t, "https://ci.example.com/hook", hook.Config.URL)
		assert.Equal(t, "********", hook.Config.Secret, "never echoed")
		assert.Equal(t, http.StatusUnprocessableEntity, alice.do("POST", "/repos/alice/made/hooks", `{"config": {"url": "javascript:alert(1)"}}`).code)
		assert.Equal(t, http.StatusUnprocessableEntity, alice.do("POST", "/repos/alice/made/hooks", `{"config": {"url": "https://x.example/"}, "events": ["issues"]}`).code)
	})

	t.Run("errors", func(t *testing.T) {
		r := anon.do("GET", "/nothing/here", "")
		assert.Equal(t, http.StatusNotFound, r.code)
		assert.Equal(t, "Not Found", r.message(t))
		assert.Equal(t, http.StatusNotFound, anon.do("DELETE", "/repos/alice/sample", "").code)
		codes := map[int]int{}
		wrong := apiClient{t, anon.base, "Basic " + base64.StdEncoding.EncodeToString([]byte("bob:wrong-password"))}
		for range 12 {
			codes[wrong.do("GET", "/user", "").code]++
		}
		assert.Positive(t, codes[http.StatusTooManyRequests], "failed sign-ins are limited: %v", codes)
	})
}

// TestAPIExamples runs the curl commands of the README's API section,
// with the real curl, against a forge where they make sense.
func TestAPIExamples(t *testing.T) {
	t.Parallel()
	testenv.Binary(t, "curl", "curl")
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	m := regexp.MustCompile("(?s)<!-- api examples -->\n```sh\n(.*?)```\n<!-- end api examples -->").FindSubmatch(readme)
	require.NotNil(t, m, "the README's examples")
	f := newForge(t)
	f.user("alice")
	f.user("bob")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/sample")
	f.pushSample("alice/sample", "alice", tok)
	lines := strings.Split(strings.TrimSpace(string(m[1])), "\n")
	require.GreaterOrEqual(t, len(lines), 5)
	for _, line := range lines {
		cmd := exec.Command("sh", "-c", line+` -w '\n%{http_code}'`)
		cmd.Env = append(os.Environ(), "FORGED="+f.ts.URL, "TOKEN="+tok)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s: %s", line, out)
		i := strings.LastIndex(string(out), "\n")
		body, code := strings.TrimSpace(string(out[:i])), string(out[i+1:])
		assert.Regexp(t, `^2\d\d$`, code, "%s: %s", line, body)
		if body != "" {
			assert.True(t, json.Valid([]byte(body)), "%s: %s", line, body)
		}
	}
	info, err := f.s.forge.Meta.RepoInfo(t.Context(), "alice", "hello")
	require.NoError(t, err, "the examples made a repository")
	hooks, err := f.s.forge.Meta.Webhooks(t.Context(), info.ID)
	require.NoError(t, err)
	assert.Len(t, hooks, 1)
}
