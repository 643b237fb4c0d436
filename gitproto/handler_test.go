package gitproto_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/gitproto/gogit"
	"github.com/forgekit/forgekit/internal/testenv"
)

func TestMain(m *testing.M) {
	if root := os.Getenv("GITPROTO_TEST_SERVE"); root != "" {
		serveForCrash(root) // TestServerKilledDuringPush's server
		return
	}
	// Idle keep-alive connections of HTTP clients (ours and go-git's)
	// are not leaks of the code under test; server goroutines are.
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

// users of the test forge: alice owns alice/*, bob may only read.
var users = map[string]string{"alice": "secret", "bob": "hunter2"}

func testAuthorizer(r *http.Request, repo string, op gitproto.Op) (string, error) {
	user, pass, ok := r.BasicAuth()
	if ok && users[user] != pass {
		return "", gitproto.ErrUnauthorized
	}
	private := strings.Contains(repo, "private")
	switch {
	case !ok && (op == gitproto.Write || private):
		return "", gitproto.ErrUnauthorized
	case !ok:
		return "", nil
	case private && !strings.HasPrefix(repo, user+"/"):
		return "", gitproto.ErrNotFound
	case op == gitproto.Write && !strings.HasPrefix(repo, user+"/"):
		return "", gitproto.ErrForbidden
	}
	return user, nil
}

// protectMain refuses force-pushes to and deletion of refs/heads/main and
// refs/heads/stable.
func protectMain(ctx context.Context, p *gitproto.Push) error {
	for _, u := range p.Updates {
		if u.Ref != "refs/heads/main" && u.Ref != "refs/heads/stable" {
			continue
		}
		if u.IsDelete() {
			p.Reject(u.Ref, "branch is protected: it cannot be deleted")
			continue
		}
		if u.IsCreate() {
			continue
		}
		ff, err := p.IsAncestor(ctx, u.Old, u.New)
		if err != nil {
			return err
		}
		if !ff {
			p.Reject(u.Ref, "main is protected: force-push refused")
		}
	}
	return nil
}

type fixture struct {
	t    *testing.T
	root string
	h    *gitproto.Handler
	srv  *httptest.Server
	work string

	mu   sync.Mutex // guards post
	post []gitproto.RefUpdate
}

func newFixture(t *testing.T, opts testenv.RepoOptions, configure func(*gitproto.Handler)) *fixture {
	t.Helper()
	testenv.Git(t)
	f := &fixture{t: t, root: t.TempDir(), work: t.TempDir()}
	testenv.BareRepo(t, filepath.Join(f.root, "alice", "proj.git"), opts)
	testenv.BareRepo(t, filepath.Join(f.root, "alice", "private.git"), testenv.RepoOptions{Commits: 2})
	f.h = &gitproto.Handler{
		Resolver:   gitproto.DirResolver{Root: f.root},
		Authorizer: gitproto.AuthorizerFunc(testAuthorizer),
		PreReceive: protectMain,
		PostReceive: func(ctx context.Context, p *gitproto.Push) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.post = append(f.post, p.Updates...)
		},
	}
	if configure != nil {
		configure(f.h)
	}
	f.srv = httptest.NewServer(f.h)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) url(user, repo string) string {
	u := strings.TrimPrefix(f.srv.URL, "http://")
	if user != "" {
		u = user + ":" + users[user] + "@" + u
	}
	return "http://" + u + "/" + repo
}

func (f *fixture) git(dir string, args ...string) (string, error) {
	f.t.Helper()
	return testenv.RunErr(f.t, testenv.Cmd{Dir: dir, Args: args})
}

func (f *fixture) mustGit(dir string, args ...string) string {
	f.t.Helper()
	out, err := f.git(dir, args...)
	require.NoError(f.t, err, "git %s", strings.Join(args, " "))
	return out
}

func (f *fixture) serverRef(repo, ref string) string {
	out, err := f.git(filepath.Join(f.root, repo), "rev-parse", "--verify", "-q", ref)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

func (f *fixture) commit(dir, file, content string) string {
	f.t.Helper()
	require.NoError(f.t, os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644))
	f.mustGit(dir, "add", file)
	f.mustGit(dir, "commit", "-q", "-m", "edit "+file)
	return strings.TrimSpace(f.mustGit(dir, "rev-parse", "HEAD"))
}

func TestCloneFetchPush(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		version string
		engine  gitproto.Engine
	}{
		{name: "git/v0", version: "0"},
		{name: "git/v1", version: "1"},
		{name: "git/v2", version: "2"},
		{name: "gogit/v0", version: "0", engine: &gogit.Engine{}},
		{name: "gogit/v2", version: "2", engine: &gogit.Engine{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, testenv.RepoOptions{Commits: 20, Branches: 2, Tags: 2}, func(h *gitproto.Handler) { h.Engine = tc.engine })
			pv := "protocol.version=" + tc.version
			dst := filepath.Join(f.work, "clone")
			f.mustGit("", "-c", pv, "clone", "-q", f.url("alice", "alice/proj.git"), dst)
			assert.Equal(t, f.serverRef("alice/proj.git", "main"), strings.TrimSpace(f.mustGit(dst, "rev-parse", "HEAD")))
			assert.Contains(t, f.mustGit(dst, "tag"), "v2.0")

			// Push a fast-forward.
			c := f.commit(dst, "new.txt", "hello\n")
			f.mustGit(dst, "-c", pv, "push", "-q", "origin", "main")
			assert.Equal(t, c, f.serverRef("alice/proj.git", "main"))

			// A second clone fetches it, anonymously.
			other := filepath.Join(f.work, "other")
			f.mustGit("", "-c", pv, "clone", "-q", f.url("", "alice/proj.git"), other)
			c2 := f.commit(dst, "new.txt", "hello again\n")
			f.mustGit(dst, "-c", pv, "push", "-q", "origin", "main")
			f.mustGit(other, "-c", pv, "fetch", "-q", "origin")
			assert.Equal(t, c2, strings.TrimSpace(f.mustGit(other, "rev-parse", "origin/main")))

			// New branch and tag, then delete the branch.
			f.mustGit(dst, "tag", "-a", "-m", "t", "v9.0")
			f.mustGit(dst, "-c", pv, "push", "-q", "origin", "main:refs/heads/topic", "v9.0")
			assert.Equal(t, c2, f.serverRef("alice/proj.git", "refs/heads/topic"))
			assert.NotEmpty(t, f.serverRef("alice/proj.git", "refs/tags/v9.0"))
			f.mustGit(dst, "-c", pv, "push", "-q", "origin", ":topic")
			assert.Empty(t, f.serverRef("alice/proj.git", "refs/heads/topic"))

			f.mu.Lock()
			defer f.mu.Unlock()
			assert.Contains(t, f.post, gitproto.RefUpdate{Ref: "refs/heads/main", Old: c, New: c2})
		})
	}
}

func TestPushPolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		engine gitproto.Engine
	}{
		{name: "git"},
		{name: "gogit", engine: &gogit.Engine{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, testenv.RepoOptions{Commits: 5, Branches: 1}, func(h *gitproto.Handler) { h.Engine = tc.engine })
			dst := filepath.Join(f.work, "clone")
			f.mustGit("", "clone", "-q", f.url("alice", "alice/proj.git"), dst)
			before := f.serverRef("alice/proj.git", "main")

			// Rewrite history and force-push: refused with our message,
			// while another ref of the same push goes through.
			f.mustGit(dst, "commit", "-q", "--amend", "-m", "rewritten")
			out, err := f.git(dst, "push", "--force", "origin", "main", "main:refs/heads/rewrite")
			require.Error(t, err)
			assert.Equal(t, before, f.serverRef("alice/proj.git", "main"))
			assert.NotEmpty(t, f.serverRef("alice/proj.git", "refs/heads/rewrite"), "the unprotected ref of the same push must land")
			// git shows hook output as "remote: ..." lines; with gogit
			// the reason is the ref's status.
			assert.Contains(t, err.Error(), "force-push refused", out)

			// Deleting a protected branch is refused; deleting another
			// is not. (git itself refuses to delete the current branch,
			// main, before any hook runs.)
			f.mustGit(dst, "push", "-q", "origin", "HEAD:refs/heads/stable")
			_, err = f.git(dst, "push", "origin", ":stable")
			require.Error(t, err)
			assert.Contains(t, err.Error(), "cannot be deleted")
			assert.NotEmpty(t, f.serverRef("alice/proj.git", "refs/heads/stable"))
			f.mustGit(dst, "push", "-q", "origin", ":branch1")
			assert.Empty(t, f.serverRef("alice/proj.git", "refs/heads/branch1"))
		})
	}
}

func TestPushRejectAll(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{}, func(h *gitproto.Handler) {
		h.PreReceive = func(ctx context.Context, p *gitproto.Push) error {
			if len(p.Env) == 0 {
				return fmt.Errorf("no quarantine environment")
			}
			return fmt.Errorf("pushes are frozen for maintenance")
		}
	})
	dst := filepath.Join(f.work, "clone")
	f.mustGit("", "clone", "-q", f.url("alice", "alice/proj.git"), dst)
	before := f.serverRef("alice/proj.git", "main")
	f.commit(dst, "x.txt", "x")
	_, err := f.git(dst, "push", "origin", "main")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "pushes are frozen for maintenance")
	assert.Equal(t, before, f.serverRef("alice/proj.git", "main"))
}

func TestShallowAndPartial(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{Commits: 30, Files: 4}, nil)
	for _, v := range []string{"0", "2"} {
		pv := "protocol.version=" + v
		t.Run("v"+v, func(t *testing.T) {
			dst := filepath.Join(f.work, "shallow"+v)
			f.mustGit("", "-c", pv, "clone", "-q", "--depth", "1", f.url("", "alice/proj.git"), dst)
			assert.Equal(t, "1", strings.TrimSpace(f.mustGit(dst, "rev-list", "--count", "HEAD")))
			f.mustGit(dst, "-c", pv, "fetch", "-q", "--deepen", "3")
			assert.Equal(t, "4", strings.TrimSpace(f.mustGit(dst, "rev-list", "--count", "HEAD")))
			f.mustGit(dst, "-c", pv, "fetch", "-q", "--unshallow")
			assert.Equal(t, "30", strings.TrimSpace(f.mustGit(dst, "rev-list", "--count", "HEAD")))

			since := filepath.Join(f.work, "since"+v)
			// Commits are an hour apart from 2023-11-14T22:13:20Z.
			f.mustGit("", "-c", pv, "clone", "-q", "--shallow-since", "2023-11-15T19:00:00Z", f.url("", "alice/proj.git"), since)
			n := strings.TrimSpace(f.mustGit(since, "rev-list", "--count", "HEAD"))
			assert.NotEqual(t, "30", n)

			partial := filepath.Join(f.work, "partial"+v)
			f.mustGit("", "-c", pv, "clone", "-q", "--filter=blob:none", "--no-checkout", f.url("", "alice/proj.git"), partial)
			missing := f.mustGit(partial, "rev-list", "--objects", "--missing=print", "HEAD")
			assert.Contains(t, missing, "\n?", "blobs must be missing after --filter=blob:none")
			f.mustGit(partial, "-c", pv, "checkout", "-q", "main") // fetches blobs lazily
			_, err := os.Stat(filepath.Join(partial, "README.md"))
			assert.NoError(t, err)

			tree0 := filepath.Join(f.work, "tree0"+v)
			f.mustGit("", "-c", pv, "clone", "-q", "--filter=tree:0", "--bare", f.url("", "alice/proj.git"), tree0)
		})
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{}, nil)
	for _, tc := range []struct {
		name, method, path, user, pass string
		want                           int
	}{
		{name: "anonymous read", method: "GET", path: "/alice/proj.git/info/refs?service=git-upload-pack", want: 200},
		{name: "anonymous write asks for credentials", method: "GET", path: "/alice/proj.git/info/refs?service=git-receive-pack", want: 401},
		{name: "wrong password", method: "GET", path: "/alice/proj.git/info/refs?service=git-upload-pack", user: "alice", pass: "nope", want: 401},
		{name: "owner writes", method: "GET", path: "/alice/proj.git/info/refs?service=git-receive-pack", user: "alice", pass: "secret", want: 200},
		{name: "reader cannot write", method: "GET", path: "/alice/proj.git/info/refs?service=git-receive-pack", user: "bob", pass: "hunter2", want: 403},
		{name: "private anonymous", method: "GET", path: "/alice/private.git/info/refs?service=git-upload-pack", want: 401},
		{name: "private hidden from others", method: "GET", path: "/alice/private.git/info/refs?service=git-upload-pack", user: "bob", pass: "hunter2", want: 404},
		{name: "private owner", method: "GET", path: "/alice/private.git/info/refs?service=git-upload-pack", user: "alice", pass: "secret", want: 200},
		{name: "missing looks like hidden", method: "GET", path: "/alice/nothing.git/info/refs?service=git-upload-pack", user: "bob", pass: "hunter2", want: 404},
		{name: "receive-pack POST without write", method: "POST", path: "/alice/proj.git/git-receive-pack", want: 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, f.srv.URL+tc.path, strings.NewReader("0000"))
			if tc.method == "POST" {
				req.Header.Set("Content-Type", "application/x-git-receive-pack-request")
			}
			if tc.user != "" {
				req.SetBasicAuth(tc.user, tc.pass)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, tc.want, resp.StatusCode)
			if tc.want == 401 {
				assert.Contains(t, resp.Header.Get("WWW-Authenticate"), `Basic realm="git"`)
			}
		})
	}

	// And through the git client.
	_, err := f.git("", "clone", "-q", f.url("", "alice/private.git"), filepath.Join(f.work, "p1"))
	require.Error(t, err)
	_, err = f.git("", "clone", "-q", f.url("bob", "alice/private.git"), filepath.Join(f.work, "p2"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not found")
	f.mustGit("", "clone", "-q", f.url("alice", "alice/private.git"), filepath.Join(f.work, "p3"))
	http.DefaultClient.CloseIdleConnections()
}

func TestConcurrentPushesCompareAndSwap(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		engine gitproto.Engine
	}{
		{name: "git"},
		{name: "gogit", engine: &gogit.Engine{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, testenv.RepoOptions{}, func(h *gitproto.Handler) { h.Engine = tc.engine })
			const n = 6
			dirs := make([]string, n)
			commits := make([]string, n)
			for i := range dirs {
				dirs[i] = filepath.Join(f.work, fmt.Sprint("c", i))
				f.mustGit("", "clone", "-q", f.url("alice", "alice/proj.git"), dirs[i])
				commits[i] = f.commit(dirs[i], "race.txt", fmt.Sprint("pusher ", i))
			}
			var ok atomic.Int32
			var wg sync.WaitGroup
			won := make([]bool, n)
			for i := range dirs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Same branch: at most one wins. Own branch: all win.
					if _, err := f.git(dirs[i], "push", "-q", "origin", "main", fmt.Sprintf("main:refs/heads/own%d", i)); err == nil {
						ok.Add(1)
						won[i] = true
					} else {
						t.Logf("pusher %d: %v", i, err)
					}
				}()
			}
			wg.Wait()
			final := f.serverRef("alice/proj.git", "main")
			winners := 0
			for i := range dirs {
				if final == commits[i] {
					winners++
					assert.True(t, won[i], "pusher %d landed on main but was told it failed", i)
				}
				assert.Equal(t, commits[i], f.serverRef("alice/proj.git", fmt.Sprintf("refs/heads/own%d", i)), "own branch of pusher %d lost", i)
			}
			assert.Equal(t, 1, winners, "main must hold exactly one of the pushed commits")
			assert.LessOrEqual(t, ok.Load(), int32(1), "at most one push of main can succeed completely")
		})
	}
}

func TestPanickingPolicyRejects(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{}, func(h *gitproto.Handler) {
		h.PreReceive = func(ctx context.Context, p *gitproto.Push) error { panic("policy bug") }
	})
	dst := filepath.Join(f.work, "clone")
	f.mustGit("", "clone", "-q", f.url("alice", "alice/proj.git"), dst)
	before := f.serverRef("alice/proj.git", "main")
	f.commit(dst, "p.txt", "p")
	_, err := f.git(dst, "push", "origin", "main")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "push policy failed: policy bug")
	assert.Equal(t, before, f.serverRef("alice/proj.git", "main"))
	f.mustGit("", "ls-remote", f.url("", "alice/proj.git")) // still serving
}

// TestChunkedPushAnsweredEarly pushes a pack larger than git's
// http.postBuffer (so the body is chunked) to a repository that checks
// objects as they arrive: receive-pack's fsck warning about an old tree
// goes out on the side-band while most of the pack is still to come.
// Without full duplex, net/http took that early answer for the end of
// the request and read up to 256 KiB of the body away itself.
func TestChunkedPushAnsweredEarly(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{Commits: 3}, nil)
	f.mustGit(filepath.Join(f.root, "alice", "proj.git"), "config", "receive.fsckObjects", "true")
	dst := filepath.Join(f.work, "clone")
	f.mustGit("", "clone", "-q", f.url("alice", "alice/proj.git"), dst)

	// A tree with mode 100664 (as early git wrote them), which fsck
	// --strict warns about.
	require.NoError(t, os.WriteFile(filepath.Join(dst, "old.txt"), []byte("old\n"), 0o644))
	blob := strings.TrimSpace(f.mustGit(dst, "hash-object", "-w", "old.txt"))
	tree, err := testenv.RunErr(t, testenv.Cmd{Dir: dst, Args: []string{"mktree"}, Stdin: "100664 blob " + blob + "\told.txt\n"})
	require.NoError(t, err)
	old := strings.TrimSpace(f.mustGit(dst, "commit-tree", "-p", "HEAD", "-m", "old tree", strings.TrimSpace(tree)))
	f.mustGit(dst, "reset", "-q", "--soft", old)
	// Past receive.unpackLimit, so that index-pack checks objects as
	// they arrive; incompressible data, past http.postBuffer.
	for i := range 150 {
		require.NoError(t, os.WriteFile(filepath.Join(dst, fmt.Sprintf("s%d.txt", i)), []byte(fmt.Sprint(i)), 0o644))
	}
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(uint32(i) * 2654435761 >> 24)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dst, "data.bin"), data, 0o644))
	f.mustGit(dst, "add", ".")
	f.mustGit(dst, "commit", "-q", "-m", "data")
	// With a tag, pack-objects writes every tree before any blob.
	f.mustGit(dst, "tag", "v9")
	f.mustGit(dst, "-c", "pack.compression=0", "push", "-q", "origin", "main", "v9")
	assert.Equal(t, strings.TrimSpace(f.mustGit(dst, "rev-parse", "HEAD")), f.serverRef("alice/proj.git", "main"))
	f.mustGit(filepath.Join(f.root, "alice", "proj.git"), "fsck", "--no-dangling")
}

// TestOnRun: GitEngine.OnRun hears of every git process with the
// context of the request it served.
func TestOnRun(t *testing.T) {
	t.Parallel()
	type key struct{}
	var mu sync.Mutex
	var runs []string
	engine := &gitproto.GitEngine{OnRun: func(ctx context.Context, svc gitproto.Service, d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		runs = append(runs, fmt.Sprintf("%v %s", ctx.Value(key{}), svc))
		assert.Positive(t, d)
	}}
	f := newFixture(t, testenv.RepoOptions{Commits: 3}, func(h *gitproto.Handler) { h.Engine = engine })
	var seq atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), key{}, fmt.Sprint("req", seq.Add(1)))))
	}))
	defer srv.Close()
	url := "http://alice:" + users["alice"] + "@" + strings.TrimPrefix(srv.URL, "http://") + "/alice/proj.git"
	f.mustGit("", "-c", "protocol.version=0", "clone", "-q", url, filepath.Join(f.work, "c"))
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"req1 git-upload-pack", "req2 git-upload-pack"}, runs, "the advertisement, then the pack")
}
