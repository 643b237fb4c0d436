package gitproto_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing/object"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/gitproto/gogit"
	"github.com/forgekit/forgekit/internal/testenv"
)

// engineFunc adapts a function to gitproto.Engine, to wrap the real
// engine with test instrumentation.
type engineFunc func(ctx context.Context, inv *gitproto.Invocation) error

func (f engineFunc) Run(ctx context.Context, inv *gitproto.Invocation) error { return f(ctx, inv) }

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// processesIn lists the pids whose working directory is dir.
func processesIn(dir string) []string {
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && cwd == dir {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func TestClientKilledMidClone(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	killed := make(chan struct{})
	var once sync.Once
	f := newFixture(t, testenv.RepoOptions{Commits: 200, Files: 5}, func(h *gitproto.Handler) {
		git := &gitproto.GitEngine{}
		h.Engine = engineFunc(func(ctx context.Context, inv *gitproto.Invocation) error {
			if inv.AdvertiseRefs {
				return git.Run(ctx, inv)
			}
			out := inv.Stdout
			inv.Stdout = writerFunc(func(p []byte) (int, error) {
				once.Do(func() {
					close(started)
					<-killed // hold the response until the client is gone
				})
				return out.Write(p)
			})
			return git.Run(ctx, inv)
		})
	})
	var closeKilled sync.Once
	t.Cleanup(func() { closeKilled.Do(func() { close(killed) }) }) // runs before the server closes
	dir := filepath.Join(f.root, "alice", "proj.git")
	// v0, so that the first POST is the fetch (v2 starts with ls-refs).
	cmd := exec.Command("git", "-c", "protocol.version=0", "clone", "-q", f.url("", "alice/proj.git"), filepath.Join(f.work, "c"))
	cmd.Env = testenv.GitEnv(t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	select {
	case <-started:
	case <-time.After(time.Minute):
		t.Fatal("clone never reached the pack")
	}
	require.NotEmpty(t, processesIn(dir), "upload-pack should be running")
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	closeKilled.Do(func() { close(killed) })
	// The server notices on its next write and kills the process group.
	deadline := time.Now().Add(30 * time.Second)
	for len(processesIn(dir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	assert.Empty(t, processesIn(dir), "git processes left behind in %s", dir)
}

func TestAdvertCache(t *testing.T) {
	t.Parallel()
	cache := &gitproto.AdvertCache{}
	// No ref state is too recent to trust (TestRacyRefStates has those).
	gitproto.PastRacyWindowForTest(cache, nil)
	f := newFixture(t, testenv.RepoOptions{Tags: 1}, func(h *gitproto.Handler) { h.AdvertCache = cache })
	for _, v := range []string{"0", "2", "0", "2"} {
		out := f.mustGit("", "-c", "protocol.version="+v, "ls-remote", f.url("", "alice/proj.git"))
		assert.Contains(t, out, "refs/tags/v1.0")
	}
	// v0: info/refs; v2: info/refs (capabilities) and the ls-refs POST.
	s := cache.Stats()
	assert.Equal(t, int64(3), s.Hits, "%+v", s)
	assert.Equal(t, int64(3), s.Misses, "%+v", s)
	assert.Positive(t, s.Entries)

	// A push through the handler invalidates at once.
	dst := filepath.Join(f.work, "clone")
	f.mustGit("", "clone", "-q", f.url("alice", "alice/proj.git"), dst)
	c := f.commit(dst, "a.txt", "a")
	f.mustGit(dst, "push", "-q", "origin", "main")
	assert.Contains(t, f.mustGit("", "ls-remote", f.url("", "alice/proj.git")), c)

	// So does a change on disk by someone else.
	f.mustGit("", "ls-remote", f.url("", "alice/proj.git"))
	testenv.Run(t, filepath.Join(f.root, "alice", "proj.git"), "update-ref", "refs/heads/elsewhere", c)
	assert.Contains(t, f.mustGit("", "-c", "protocol.version=2", "ls-remote", f.url("", "alice/proj.git")), "refs/heads/elsewhere")
	assert.Contains(t, f.mustGit("", "-c", "protocol.version=0", "ls-remote", f.url("", "alice/proj.git")), "refs/heads/elsewhere")
}

// TestRacyRefStates: a ref state that changed within the racy window is
// not trusted: both caches bypass themselves, and the answers are right.
func TestRacyRefStates(t *testing.T) {
	t.Parallel()
	adverts := &gitproto.AdvertCache{}
	packs, err := gitproto.NewPackCache(t.TempDir(), 0)
	require.NoError(t, err)
	// The caches' clock stands just after the change, however slow this
	// machine is (set before the server starts: git's requests reach it
	// through another process, which the race detector cannot see).
	var at atomic.Int64
	gitproto.SetClockForTest(adverts, packs, func() time.Time { return time.Unix(0, at.Load()) })
	f := newFixture(t, testenv.RepoOptions{Commits: 5}, func(h *gitproto.Handler) { h.AdvertCache, h.PackCache = adverts, packs })
	repo := filepath.Join(f.root, "alice", "proj.git")
	head := f.serverRef("alice/proj.git", "main")
	testenv.Run(t, repo, "update-ref", "refs/heads/fresh", head)
	fi, err := os.Stat(filepath.Join(repo, "refs", "heads"))
	require.NoError(t, err)
	at.Store(fi.ModTime().Add(time.Millisecond).UnixNano())
	for range 2 {
		assert.Contains(t, f.mustGit("", "ls-remote", f.url("", "alice/proj.git")), "refs/heads/fresh")
		f.mustGit("", "clone", "-q", "--bare", f.url("", "alice/proj.git"), filepath.Join(t.TempDir(), "c.git"))
	}
	assert.Zero(t, adverts.Stats().Hits)
	assert.GreaterOrEqual(t, adverts.Stats().Bypassed, int64(2))
	assert.Zero(t, packs.Stats().Hits+packs.Stats().Shared)
	assert.GreaterOrEqual(t, packs.Stats().Bypassed, int64(2))
}

func TestPackCache(t *testing.T) {
	t.Parallel()
	cache, err := gitproto.NewPackCache(t.TempDir(), 0)
	require.NoError(t, err)
	var infos []gitproto.RequestInfo
	var mu sync.Mutex
	gitproto.PastRacyWindowForTest(nil, cache)
	f := newFixture(t, testenv.RepoOptions{Commits: 50}, func(h *gitproto.Handler) {
		h.PackCache = cache
		h.Admission = &gitproto.Admission{}
		h.Observe = func(ri *gitproto.RequestInfo) {
			mu.Lock()
			defer mu.Unlock()
			infos = append(infos, *ri)
		}
	})
	clone := func(name string) {
		dst := filepath.Join(f.work, name)
		f.mustGit("", "-c", "protocol.version=2", "clone", "-q", "--no-checkout", f.url("", "alice/proj.git"), dst)
		f.mustGit(dst, "fsck", "--no-progress")
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); clone(fmt.Sprint("c", i)) }()
	}
	wg.Wait()
	clone("later")
	s := cache.Stats()
	assert.Equal(t, int64(1), s.Misses, "%+v", s)
	assert.Equal(t, int64(4), s.Hits+s.Shared, "%+v", s)
	assert.Equal(t, 1, s.Entries)
	assert.Equal(t, int64(5), s.Whole, "every response finished within SendWait went out whole: %+v", s)

	// A push drops the entry; the next clone sees the new commit.
	dst := filepath.Join(f.work, "pusher")
	f.mustGit("", "clone", "-q", f.url("alice", "alice/proj.git"), dst)
	c := f.commit(dst, "p.txt", "p")
	f.mustGit(dst, "push", "-q", "origin", "main")
	clone("after")
	assert.Equal(t, c, strings.TrimSpace(f.mustGit(filepath.Join(f.work, "after"), "rev-parse", "main")))
	assert.Equal(t, int64(2), cache.Stats().Misses)

	mu.Lock()
	defer mu.Unlock()
	var full, hits int
	for _, ri := range infos {
		if ri.Service == gitproto.UploadPack && ri.Command == "fetch" && ri.FullClone {
			full++
			if ri.CacheHit {
				hits++
			}
			assert.Positive(t, ri.Wants)
			assert.Positive(t, ri.BytesOut)
			assert.Equal(t, http.StatusOK, ri.Status)
			assert.Equal(t, 2, ri.Version)
		}
	}
	assert.GreaterOrEqual(t, full, 6)
	assert.GreaterOrEqual(t, hits, 4)
}

func TestAdmission(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	running := make(chan struct{}, 10)
	var blockOnce sync.Once
	adm := &gitproto.Admission{MaxFullClonesPerRepo: 1, MaxQueue: -1, RetryAfter: 7 * time.Second}
	f := newFixture(t, testenv.RepoOptions{}, func(h *gitproto.Handler) {
		git := &gitproto.GitEngine{}
		h.Admission = adm
		h.Engine = engineFunc(func(ctx context.Context, inv *gitproto.Invocation) error {
			block := false
			if !inv.AdvertiseRefs {
				blockOnce.Do(func() { block = true })
			}
			if block { // only the first pack generation waits
				running <- struct{}{}
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return git.Run(ctx, inv)
		})
	})
	head := f.serverRef("alice/proj.git", "main")
	post := func(body string) (*http.Response, error) {
		req, _ := http.NewRequest("POST", f.srv.URL+"/alice/proj.git/git-upload-pack", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-git-upload-pack-request")
		return http.DefaultClient.Do(req)
	}
	clone := fmt.Sprintf("0032want %s\n00000009done\n", head)
	first := make(chan int, 1)
	go func() {
		resp, err := post(clone)
		if err != nil {
			first <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-running
	// A second full clone finds the class full and no queue.
	resp, err := post(clone)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "%s", body)
	assert.Equal(t, "7", resp.Header.Get("Retry-After"))
	// An incremental fetch has its own slots.
	resp, err = post(fmt.Sprintf("0032want %s\n00000032have %s\n0009done\n", head, head))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	close(release)
	assert.Equal(t, http.StatusOK, <-first)
	s := adm.Stats()
	assert.Equal(t, int64(1), s.Rejected)
	assert.Equal(t, int64(0), s.Running)
	http.DefaultClient.CloseIdleConnections()
}

func TestAdmissionQueue(t *testing.T) {
	t.Parallel()
	a := &gitproto.Admission{MaxPerRepo: 2, MaxQueue: 100}
	var mu sync.Mutex
	cur, peak := 0, 0
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release, _, err := gitproto.AcquireForTest(a, context.Background(), "repo", false)
			if !assert.NoError(t, err) {
				return
			}
			mu.Lock()
			cur++
			peak = max(peak, cur)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			cur--
			mu.Unlock()
			release()
		}()
	}
	wg.Wait()
	assert.LessOrEqual(t, peak, 2)
	s := a.Stats()
	assert.Equal(t, int64(50), s.Admitted)
	assert.Zero(t, s.Running)
	assert.Zero(t, s.Waiting)

	// A cancelled waiter leaves the queue.
	release, _, err := gitproto.AcquireForTest(a, context.Background(), "r", false)
	require.NoError(t, err)
	release2, _, err := gitproto.AcquireForTest(a, context.Background(), "r", false)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, _, err = gitproto.AcquireForTest(a, ctx, "r", false)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	release()
	release2()
	assert.Zero(t, a.Stats().Waiting)
}

func TestDumbHTTP(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{Tags: 1}, func(h *gitproto.Handler) { h.Dumb = true })
	// Loose objects next to the pack.
	pusher := filepath.Join(f.work, "pusher")
	f.mustGit("", "clone", "-q", f.url("alice", "alice/proj.git"), pusher)
	f.commit(pusher, "loose.txt", "loose")
	f.mustGit(pusher, "push", "-q", "origin", "main")
	dst := filepath.Join(f.work, "dumb")
	_, err := testenv.RunErr(t, testenv.Cmd{Env: []string{"GIT_SMART_HTTP=0"}, Args: []string{"clone", "-q", f.url("", "alice/proj.git"), dst}})
	require.NoError(t, err)
	assert.Equal(t, f.serverRef("alice/proj.git", "main"), strings.TrimSpace(f.mustGit(dst, "rev-parse", "HEAD")))

	get := func(path string) *http.Response {
		resp, err := http.Get(f.srv.URL + "/alice/proj.git/" + path)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp := get("info/refs")
	assert.Equal(t, 200, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("Cache-Control"), "no-cache")
	// info/refs is what git update-server-info writes, tags of tags
	// peeled to the end.
	repo := filepath.Join(f.root, "alice", "proj.git")
	f.mustGit(repo, "-c", "user.name=T", "-c", "user.email=t@example.com", "tag", "-a", "-m", "outer", "outer", "v1.0")
	f.mustGit(repo, "update-server-info")
	want, err := os.ReadFile(filepath.Join(repo, "info", "refs"))
	require.NoError(t, err)
	assert.Contains(t, string(want), "refs/tags/outer^{}")
	res, err := http.Get(f.srv.URL + "/alice/proj.git/info/refs")
	require.NoError(t, err)
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, string(want), string(got))
	packs, _ := filepath.Glob(filepath.Join(f.root, "alice", "proj.git", "objects", "pack", "*.pack"))
	require.NotEmpty(t, packs)
	resp = get("objects/pack/" + filepath.Base(packs[0]))
	assert.Equal(t, 200, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("Cache-Control"), "immutable")
	assert.Equal(t, "application/x-git-packed-objects", resp.Header.Get("Content-Type"))
	assert.Equal(t, 404, get("objects/pack/pack-0000000000000000000000000000000000000000.pack").StatusCode)
	assert.Equal(t, 404, get("objects/info/../../config").StatusCode)
	http.DefaultClient.CloseIdleConnections()
}

func TestSendFile(t *testing.T) {
	t.Parallel()
	var root string
	f := newFixture(t, testenv.RepoOptions{}, func(h *gitproto.Handler) {
		h.Dumb = true
		h.SendFile = func(w http.ResponseWriter, r *http.Request, path string) bool {
			return gitproto.AccelRedirect(root, "/_internal/repos")(w, r, path)
		}
	})
	root = f.root
	packs, _ := filepath.Glob(filepath.Join(f.root, "alice", "proj.git", "objects", "pack", "*.pack"))
	require.NotEmpty(t, packs)
	resp, err := http.Get(f.srv.URL + "/alice/proj.git/objects/pack/" + filepath.Base(packs[0]))
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Empty(t, b)
	assert.Equal(t, "/_internal/repos/alice/proj.git/objects/pack/"+filepath.Base(packs[0]), resp.Header.Get("X-Accel-Redirect"))
	http.DefaultClient.CloseIdleConnections()
}

func TestPushToCreate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{}, nil)
	f.h.OnMissingRepo = func(ctx context.Context, name, principal string) (string, error) {
		if !strings.HasPrefix(name, principal+"/") {
			return "", gitproto.ErrNotFound
		}
		dir := filepath.Join(f.root, filepath.FromSlash(name))
		if !strings.HasSuffix(dir, ".git") {
			dir += ".git"
		}
		if _, err := testenv.RunErr(t, testenv.Cmd{Args: []string{"init", "-q", "--bare", dir}}); err != nil {
			return "", err
		}
		return dir, nil
	}
	src := filepath.Join(f.work, "src")
	f.mustGit("", "clone", "-q", f.url("alice", "alice/proj.git"), src)
	f.mustGit(src, "push", "-q", f.url("alice", "alice/fresh.git"), "main")
	assert.Equal(t, f.serverRef("alice/proj.git", "main"), f.serverRef("alice/fresh.git", "main"))
	_, err := f.git(src, "push", "-q", f.url("", "alice/other.git"), "main")
	assert.Error(t, err, "anonymous push-to-create")
	_, err = f.git(src, "push", "-q", f.url("bob", "alice/bobs.git"), "main")
	assert.Error(t, err, "push-to-create in someone else's namespace")
	assert.NoDirExists(t, filepath.Join(f.root, "alice", "bobs.git"))
}

func TestGoGitClient(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{Commits: 10}, nil)
	dst := filepath.Join(f.work, "gogit")
	ctx := context.Background()
	auth := &githttp.BasicAuth{Username: "alice", Password: users["alice"]}
	repo, err := git.PlainCloneContext(ctx, dst, false, &git.CloneOptions{URL: f.srv.URL + "/alice/proj.git", Auth: auth})
	require.NoError(t, err)
	head, err := repo.Head()
	require.NoError(t, err)
	assert.Equal(t, f.serverRef("alice/proj.git", "main"), head.Hash().String())

	wt, err := repo.Worktree()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dst, "from-gogit.txt"), []byte("hi\n"), 0o644))
	_, err = wt.Add("from-gogit.txt")
	require.NoError(t, err)
	sig := &object.Signature{Name: "Go Git", Email: "gogit@example.com", When: time.Unix(1700000000, 0)}
	c, err := wt.Commit("from go-git", &git.CommitOptions{Author: sig, Committer: sig})
	require.NoError(t, err)
	require.NoError(t, repo.PushContext(ctx, &git.PushOptions{Auth: auth, RefSpecs: []config.RefSpec{"refs/heads/main:refs/heads/main"}}))
	assert.Equal(t, c.String(), f.serverRef("alice/proj.git", "main"))
}

func TestGoGitEngineUnsupported(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{Commits: 5}, func(h *gitproto.Handler) { h.Engine = &gogit.Engine{} })
	_, err := f.git("", "clone", "-q", "--depth", "1", f.url("", "alice/proj.git"), filepath.Join(f.work, "shallow"))
	require.Error(t, err)
	// The engine does not advertise shallow, so git refuses on its side;
	// a client that asks anyway gets an ERR packet naming the limit.
	assert.Contains(t, err.Error(), "shallow")
	head := f.serverRef("alice/proj.git", "main")
	req, _ := http.NewRequest("POST", f.srv.URL+"/alice/proj.git/git-upload-pack",
		strings.NewReader(fmt.Sprintf("0032want %s\n000ddeepen 1\n00000009done\n", head)))
	req.Header.Set("Content-Type", "application/x-git-upload-pack-request")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(b), "ERR not supported by this engine: shallow clone with the gogit engine")
	http.DefaultClient.CloseIdleConnections()
}

func TestHeadAndStats(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{}, nil)
	req, _ := http.NewRequest("HEAD", f.srv.URL+"/alice/proj.git/info/refs?service=git-upload-pack", nil)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "application/x-git-upload-pack-advertisement", resp.Header.Get("Content-Type"))
	f.mustGit("", "clone", "-q", f.url("", "alice/proj.git"), filepath.Join(f.work, "c"))
	s := f.h.Stats()
	assert.GreaterOrEqual(t, s.Requests, int64(3))
	assert.GreaterOrEqual(t, s.Adverts, int64(2))
	assert.GreaterOrEqual(t, s.UploadPacks, int64(1))
	assert.Positive(t, s.BytesOut)
	assert.Zero(t, s.Errors)

	// An authenticated push starts with a challenge: not an error.
	c := filepath.Join(f.work, "auth")
	f.mustGit("", "clone", "-q", f.url("alice", "alice/proj.git"), c)
	f.commit(c, "x.txt", "x")
	f.mustGit(c, "push", "-q", "origin", "HEAD:refs/heads/topic")
	s = f.h.Stats()
	assert.Positive(t, s.Challenges)
	assert.Zero(t, s.Errors, "the 401 that asks for credentials is no error")
	// Wrong credentials are.
	_, err = f.git("", "ls-remote", strings.Replace(f.url("alice", "alice/private.git"), "secret", "wrong", 1))
	require.Error(t, err)
	assert.Positive(t, f.h.Stats().Errors)
	http.DefaultClient.CloseIdleConnections()
}

// A response that takes longer than ReadTimeout must not be cut: the
// timeout is for a client that stops sending, not for the pack.
func TestReadTimeoutSparesSlowResponses(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{}, func(h *gitproto.Handler) {
		h.ReadTimeout = 100 * time.Millisecond
		git := &gitproto.GitEngine{}
		h.Engine = engineFunc(func(ctx context.Context, inv *gitproto.Invocation) error {
			if !inv.AdvertiseRefs {
				select {
				case <-time.After(500 * time.Millisecond):
				case <-ctx.Done():
					return context.Cause(ctx)
				}
			}
			return git.Run(ctx, inv)
		})
	})
	f.mustGit("", "-c", "protocol.version=0", "clone", "-q", f.url("", "alice/proj.git"), filepath.Join(f.work, "slow"))
}

// A client that stops sending its body gets 408 after ReadTimeout.
func TestReadTimeoutSlowClient(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{}, func(h *gitproto.Handler) { h.ReadTimeout = 200 * time.Millisecond })
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest("POST", f.srv.URL+"/alice/proj.git/git-upload-pack", pr)
	req.Header.Set("Content-Type", "application/x-git-upload-pack-request")
	go pw.Write([]byte("0032want ")) // and then nothing
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
	http.DefaultClient.CloseIdleConnections()
}

// A client that stops reading a pack is dropped after WriteTimeout, and
// its git processes with it.
func TestWriteTimeoutStalledClient(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{}, func(h *gitproto.Handler) { h.WriteTimeout = 200 * time.Millisecond })
	// Enough incompressible data to fill the socket buffers.
	src := filepath.Join(f.work, "src")
	f.mustGit("", "clone", "-q", f.url("alice", "alice/proj.git"), src)
	big := make([]byte, 32<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	require.NoError(t, os.WriteFile(filepath.Join(src, "big.bin"), big, 0o644))
	f.mustGit(src, "add", "big.bin")
	f.mustGit(src, "commit", "-q", "-m", "big")
	f.mustGit(src, "push", "-q", "origin", "main")
	head := f.serverRef("alice/proj.git", "main")
	dir := filepath.Join(f.root, "alice", "proj.git")

	conn, err := net.Dial("tcp", strings.TrimPrefix(f.srv.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	body := fmt.Sprintf("0032want %s\n00000009done\n", head)
	fmt.Fprintf(conn, "POST /alice/proj.git/git-upload-pack HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-git-upload-pack-request\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	// Read nothing. The server must give up (an error, once its write
	// timeout passes) and clean up.
	require.Eventually(t, func() bool { return f.h.Stats().Errors > 0 }, 30*time.Second, 20*time.Millisecond, "the stalled request fails")
	require.Eventually(t, func() bool { return len(processesIn(dir)) == 0 }, 30*time.Second, 20*time.Millisecond, "git processes of the stalled request are gone")
}

// TestGoGitEngineFunnyRefnames: the gogit engine refuses ref names git
// forbids (after which git itself could not update the repository), as
// git receive-pack does.
func TestGoGitEngineFunnyRefnames(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{Commits: 2}, func(h *gitproto.Handler) {
		h.Engine = &gogit.Engine{}
		h.PreReceive = nil
	})
	head := f.serverRef("alice/proj.git", "main")
	zero := strings.Repeat("0", 40)
	// An empty pack: version 2, no objects, and its SHA-1 trailer.
	pack := "PACK\x00\x00\x00\x02\x00\x00\x00\x00\x02\x9d\x08\x82\x3b\xd8\xa8\xea\xb5\x10\xad\x6a\xc7\x5c\x82\x3c\xfd\x3e\xd3\x1e"
	for _, tc := range []struct{ name, ref, want string }{
		{name: "lock", ref: "refs/heads/main.lock", want: "ng refs/heads/main.lock funny refname"},
		{name: "hidden", ref: "refs/heads/.hidden", want: "ng refs/heads/.hidden funny refname"},
		{name: "trailing dot", ref: "refs/heads/x.", want: "ng refs/heads/x. funny refname"},
		{name: "at brace", ref: "refs/heads/a@{b", want: "ng refs/heads/a@{b funny refname"},
		{name: "valid", ref: "refs/heads/fine", want: "ok refs/heads/fine"},
	} {
		body := pkt(zero+" "+head+" "+tc.ref+"\x00report-status\n") + "0000" + pack
		req, _ := http.NewRequest("POST", f.url("alice", "alice/proj.git")+"/git-receive-pack", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-git-receive-pack-request")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err, tc.name)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Contains(t, string(b), tc.want, tc.name)
		if tc.ref != "refs/heads/fine" {
			assert.Empty(t, f.serverRef("alice/proj.git", tc.ref), tc.name)
		}
	}
	assert.Equal(t, head, f.serverRef("alice/proj.git", "refs/heads/fine"))
	http.DefaultClient.CloseIdleConnections()
}

// TestUnreachableObjectsStayUnfetchable: over v0 and v1, a commit no ref
// reaches (force-pushed away, a secret with it) cannot be fetched by its
// id, while partial clones still fetch what they miss.
func TestUnreachableObjectsStayUnfetchable(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{Commits: 3}, func(h *gitproto.Handler) { h.PreReceive = nil })
	work := filepath.Join(f.work, "w")
	f.mustGit("", "clone", "-q", f.url("alice", "alice/proj.git"), work)
	secret := f.commit(work, "secret.txt", "hunter2\n")
	f.mustGit(work, "push", "-q", "origin", "HEAD:refs/heads/oops")
	f.mustGit(work, "push", "-q", "origin", ":refs/heads/oops")
	require.Empty(t, f.serverRef("alice/proj.git", "oops"))

	for _, v := range []string{"0", "1"} {
		other := filepath.Join(f.work, "other"+v)
		f.mustGit("", "-c", "protocol.version="+v, "clone", "-q", f.url("", "alice/proj.git"), other)
		_, err := f.git(other, "-c", "protocol.version="+v, "fetch", "-q", "origin", secret)
		require.Error(t, err, "v%s", v)
		assert.Contains(t, err.Error(), "not our ref", "v%s", v)
	}
	// Partial clones (v0) still fetch the blobs they skipped.
	partial := filepath.Join(f.work, "partial")
	f.mustGit("", "-c", "protocol.version=0", "clone", "-q", "--filter=blob:none", f.url("", "alice/proj.git"), partial)
	f.mustGit(partial, "-c", "protocol.version=0", "log", "-p", "-1")
}

// loadedKey carries what ctxAuthorizer loaded.
type loadedKey struct{}

// ctxAuthorizer is testAuthorizer that hands the request what it
// "loaded", and counts its calls.
type ctxAuthorizer struct{ calls atomic.Int32 }

func (a *ctxAuthorizer) Authorize(r *http.Request, repo string, op gitproto.Op) (string, error) {
	panic("Handler must call AuthorizeContext")
}

func (a *ctxAuthorizer) AuthorizeContext(r *http.Request, repo string, op gitproto.Op) (context.Context, string, error) {
	a.calls.Add(1)
	p, err := testAuthorizer(r, repo, op)
	return context.WithValue(r.Context(), loadedKey{}, "metadata of "+repo), p, err
}

// TestContextAuthorizer: the hooks of a push see the context its
// authorization returned, so that they need not load again what it did.
func TestContextAuthorizer(t *testing.T) {
	t.Parallel()
	a := &ctxAuthorizer{}
	var seen sync.Map
	f := newFixture(t, testenv.RepoOptions{Commits: 3}, func(h *gitproto.Handler) {
		h.Authorizer = a
		h.PreReceive = func(ctx context.Context, p *gitproto.Push) error {
			seen.Store("pre", ctx.Value(loadedKey{}))
			return nil
		}
		h.PostReceive = func(ctx context.Context, p *gitproto.Push) {
			seen.Store("post", ctx.Value(loadedKey{}))
		}
	})
	dst := filepath.Join(f.work, "clone")
	f.mustGit("", "clone", "-q", f.url("alice", "alice/proj.git"), dst)
	f.commit(dst, "ctx.txt", "ctx")
	f.mustGit(dst, "push", "-q", "origin", "main")
	for _, hook := range []string{"pre", "post"} {
		v, _ := seen.Load(hook)
		assert.Equal(t, "metadata of alice/proj.git", v, hook)
	}
	assert.Positive(t, a.calls.Load())
}
