package gitproto_test

// Benchmarks against the tools people use today, measured in the same run
// and reported as ratios. The servers' allocations are reported by the
// in-process BenchmarkAdvertCacheHit; the others measure subprocesses. They need the generated repository of
// ../shared/bench/mkrepo (20k commits, ~170k objects); set
// FORGEKIT_BENCH_REPO to an existing copy to skip the generation. Servers
// run as subprocesses (this test binary re-executed), so that their CPU
// time and peak RSS, children included, can be read from wait4:
//
//	go test ./gitproto -run '^$' -bench . -benchtime 1x -timeout 60m
//
// The figures measured on the project's 2-core machine are in README.md.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/gitproto/gogit"
	"github.com/forgekit/forgekit/internal/testenv"
)

const benchServerEnv = "GITPROTO_BENCH_SERVER"

func init() {
	// Server mode: this test binary re-executed by a benchmark.
	if mode := os.Getenv(benchServerEnv); mode != "" {
		if err := benchServer(mode, os.Getenv("GITPROTO_BENCH_ROOT")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// benchServer serves root on a loopback port, prints the URL and runs
// until SIGTERM. Modes: git, gogit, git+cache (pack and advertisement
// caches), backend (git http-backend through net/http/cgi).
func benchServer(mode, root string) error {
	if mode == "daemon" {
		return benchDaemon(root)
	}
	var h http.Handler
	switch mode {
	case "backend":
		h = &cgi.Handler{
			Path: "/usr/lib/git-core/git-http-backend",
			Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
		}
	case "git", "gogit", "git+cache", "git+hooks":
		gh := &gitproto.Handler{Resolver: gitproto.DirResolver{Root: root}}
		if mode == "git+hooks" {
			// forge's rule for a protected default branch: anyone may
			// push (no credentials asked), but not a force-push to main.
			gh.Authorizer = gitproto.AuthorizerFunc(func(*http.Request, string, gitproto.Op) (string, error) { return "bench", nil })
			gh.PreReceive = func(ctx context.Context, p *gitproto.Push) error {
				for _, u := range p.Updates {
					if u.Ref == "refs/heads/main" && !u.IsCreate() && !u.IsDelete() {
						if ff, err := p.IsAncestor(ctx, u.Old, u.New); err != nil {
							return err
						} else if !ff {
							p.Reject(u.Ref, "protected branch")
						}
					}
				}
				return nil
			}
		}
		if mode == "gogit" {
			gh.Engine = &gogit.Engine{}
		}
		if mode == "git+cache" {
			pc, err := gitproto.NewPackCache(filepath.Join(os.TempDir(), fmt.Sprintf("gitproto-bench-packs-%d", os.Getpid())), 0)
			if err != nil {
				return err
			}
			gh.PackCache = pc
			gh.AdvertCache = &gitproto.AdvertCache{}
			defer os.RemoveAll(filepath.Join(os.TempDir(), fmt.Sprintf("gitproto-bench-packs-%d", os.Getpid())))
		}
		h = gh
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	srv := httptest.NewServer(h)
	fmt.Println(srv.URL)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	srv.Close()
	if gh, ok := h.(*gitproto.Handler); ok && gh.PackCache != nil && os.Getenv("GITPROTO_BENCH_DEBUG") != "" {
		fmt.Fprintf(os.Stderr, "pack cache: %+v\n", gh.PackCache.Stats())
	}
	return nil
}

// benchDaemon serves root over git:// with gitproto.Daemon.
func benchDaemon(root string) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	d := &gitproto.Daemon{Handler: &gitproto.Handler{Resolver: gitproto.DirResolver{Root: root}}}
	go d.Serve(l)
	fmt.Println("git://" + l.Addr().String())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	return d.Close()
}

// startGitDaemon starts git daemon serving root on a loopback port.
func startGitDaemon(b *testing.B, root string) *server {
	b.Helper()
	git := testenv.Git(b)
	port := testenv.FreePort(b)
	cmd := exec.Command(git, "daemon", "--reuseaddr", "--export-all", "--informative-errors",
		"--base-path="+root, "--listen=127.0.0.1", "--port="+strconv.Itoa(port), root)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	testenv.WaitListening(b, addr, 10*time.Second)
	return &server{url: "git://" + addr, cmd: cmd}
}

// server is a benchmark server subprocess.
type server struct {
	url string
	cmd *exec.Cmd
}

func startServer(b *testing.B, mode, root string) *server {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"="+mode, "GITPROTO_BENCH_ROOT="+root)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatalf("bench server %s: %v", mode, err)
	}
	return &server{url: strings.TrimSpace(line), cmd: cmd}
}

// stop ends the server and returns its CPU time (user+system, its git
// children included) and peak RSS in MiB.
func (s *server) stop() (cpu time.Duration, rssMiB float64) {
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
	ru := s.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return cpu, float64(ru.Maxrss) / 1024
}

// benchRepo returns the root directory and the repository name of the
// generated repository.
func benchRepo(b *testing.B) (root, name string) {
	b.Helper()
	p := testenv.BenchRepo(b)
	return filepath.Dir(p), filepath.Base(p)
}

// withoutBitmaps returns a root with a copy of the generated repository
// whose bitmap index is removed.
func withoutBitmaps(b *testing.B, root, name string) string {
	b.Helper()
	dst := filepath.Join(os.TempDir(), "forgekit-bench-root-nobitmap")
	repo := filepath.Join(dst, name)
	if _, err := os.Stat(filepath.Join(repo, "HEAD")); err != nil {
		os.RemoveAll(dst)
		os.MkdirAll(filepath.Dir(repo), 0o755)
		if out, err := exec.Command("cp", "-a", filepath.Join(root, name), repo).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v: %s", err, out)
		}
		bitmaps, _ := filepath.Glob(filepath.Join(repo, "objects", "pack", "*.bitmap"))
		for _, f := range bitmaps {
			os.Remove(f)
		}
		// Refs younger than the caches' racy window are not trusted
		// (every clone would generate its own pack): let it pass, as it
		// has for any repository in service.
		time.Sleep(1100 * time.Millisecond)
	}
	return dst
}

func cloneBare(b *testing.B, url, dst string, extra ...string) time.Duration {
	b.Helper()
	start := time.Now()
	args := append([]string{"clone", "-q", "--bare"}, extra...)
	args = append(args, url, dst)
	if _, err := testenv.RunErr(b, testenv.Cmd{Args: args}); err != nil {
		b.Fatal(err)
	}
	d := time.Since(start)
	os.RemoveAll(dst)
	return d
}

// BenchmarkFullClone: one full clone through gitproto (git engine), git
// http-backend and a local git clone --no-local, in turn, each iteration.
// Target: gitproto ≤ 1.05x http-backend.
func BenchmarkFullClone(b *testing.B) {
	root, name := benchRepo(b)
	ours := startServer(b, "git", root)
	backend := startServer(b, "backend", root)
	tmp := b.TempDir()
	var tOurs, tBackend, tLocal time.Duration
	for b.Loop() {
		tOurs += cloneBare(b, ours.url+"/"+name, filepath.Join(tmp, "ours"))
		tBackend += cloneBare(b, backend.url+"/"+name, filepath.Join(tmp, "backend"))
		tLocal += cloneBare(b, filepath.Join(root, name), filepath.Join(tmp, "local"), "--no-local")
	}
	cpuOurs, rssOurs := ours.stop()
	cpuBackend, rssBackend := backend.stop()
	n := float64(b.N)
	b.ReportMetric(tOurs.Seconds()/n, "gitproto-s/op")
	b.ReportMetric(tBackend.Seconds()/n, "backend-s/op")
	b.ReportMetric(tLocal.Seconds()/n, "local-s/op")
	b.ReportMetric(tOurs.Seconds()/tBackend.Seconds(), "x-backend")
	b.ReportMetric(tOurs.Seconds()/tLocal.Seconds(), "x-local")
	b.ReportMetric(rssOurs, "gitproto-maxrss-MiB")
	b.ReportMetric(rssBackend, "backend-maxrss-MiB")
	b.ReportMetric(cpuOurs.Seconds()/n, "gitproto-cpu-s/op")
	b.ReportMetric(cpuBackend.Seconds()/n, "backend-cpu-s/op")
}

// BenchmarkCloneStorm: 8 concurrent identical full clones, gitproto with
// the pack cache vs git http-backend. Target: ≤ 0.3x server CPU time.
func BenchmarkCloneStorm(b *testing.B) {
	root, name := benchRepo(b)
	for _, tc := range []struct {
		name string
		root func() string
	}{
		{name: "bitmaps", root: func() string { return root }},
		{name: "no-bitmaps", root: func() string { return withoutBitmaps(b, root, name) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r := tc.root()
			ours := startServer(b, "git+cache", r)
			backend := startServer(b, "backend", r)
			tmp := b.TempDir()
			storm := func(url, label string) time.Duration {
				start := time.Now()
				var wg sync.WaitGroup
				for i := range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						cloneBare(b, url+"/"+name, filepath.Join(tmp, fmt.Sprint(label, i)))
					}()
				}
				wg.Wait()
				return time.Since(start)
			}
			var tOurs, tBackend time.Duration
			for b.Loop() {
				tOurs += storm(ours.url, "ours")
				tBackend += storm(backend.url, "backend")
			}
			cpuOurs, rssOurs := ours.stop()
			cpuBackend, rssBackend := backend.stop()
			n := float64(b.N)
			b.ReportMetric(cpuOurs.Seconds()/n, "gitproto-cpu-s/op")
			b.ReportMetric(cpuBackend.Seconds()/n, "backend-cpu-s/op")
			b.ReportMetric(cpuOurs.Seconds()/cpuBackend.Seconds(), "x-backend-cpu")
			// Bytes sent per CPU-second: 8 clones of about the
			// repository's pack each.
			packs, _ := filepath.Glob(filepath.Join(r, name, "objects", "pack", "*.pack"))
			var sent float64
			for _, p := range packs {
				if fi, err := os.Stat(p); err == nil {
					sent += 8 * float64(fi.Size()) / (1 << 20)
				}
			}
			b.ReportMetric(sent*n/cpuOurs.Seconds(), "gitproto-MiB/cpu-s")
			b.ReportMetric(sent*n/cpuBackend.Seconds(), "backend-MiB/cpu-s")
			b.ReportMetric(tOurs.Seconds()/n, "gitproto-wall-s/op")
			b.ReportMetric(tBackend.Seconds()/n, "backend-wall-s/op")
			b.ReportMetric(rssOurs, "gitproto-maxrss-MiB")
			b.ReportMetric(rssBackend, "backend-maxrss-MiB")
		})
	}
}

// BenchmarkAdvertPoll: what CI and IDEs do every few seconds: info/refs
// (protocol v0) and, for v2, info/refs plus an ls-refs POST; gitproto with
// the advertisement cache vs git http-backend. Target: ≥ 5x requests per
// second.
func BenchmarkAdvertPoll(b *testing.B) {
	root, name := benchRepo(b)
	for _, v := range []string{"v0", "v2"} {
		b.Run(v, func(b *testing.B) {
			ours := startServer(b, "git+cache", root)
			backend := startServer(b, "backend", root)
			client := &http.Client{}
			defer client.CloseIdleConnections()
			poll := func(base string) time.Duration {
				start := time.Now()
				req, _ := http.NewRequest("GET", base+"/"+name+"/info/refs?service=git-upload-pack", nil)
				if v == "v2" {
					req.Header.Set("Git-Protocol", "version=2")
				}
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if v == "v2" {
					body := pkt("command=ls-refs\n") + pkt("agent=git/2.39.5\n") + "0001" + pkt("peel\n") + pkt("symrefs\n") +
						pkt("unborn\n") + pkt("ref-prefix HEAD\n") + pkt("ref-prefix refs/heads/\n") + pkt("ref-prefix refs/tags/\n") + "0000"
					req, _ := http.NewRequest("POST", base+"/"+name+"/git-upload-pack", strings.NewReader(body))
					req.Header.Set("Git-Protocol", "version=2")
					req.Header.Set("Content-Type", "application/x-git-upload-pack-request")
					resp, err := client.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatalf("ls-refs: %s", resp.Status)
					}
				}
				return time.Since(start)
			}
			// Let the refs settle (the caches distrust a change within
			// the last second) and warm up.
			time.Sleep(1100 * time.Millisecond)
			poll(ours.url)
			var tOurs, tBackend time.Duration
			for b.Loop() {
				tOurs += poll(ours.url)
				tBackend += poll(backend.url)
			}
			ours.stop()
			backend.stop()
			n := float64(b.N)
			b.ReportMetric(n/tOurs.Seconds(), "gitproto-polls/s")
			b.ReportMetric(n/tBackend.Seconds(), "backend-polls/s")
			b.ReportMetric(tBackend.Seconds()/tOurs.Seconds(), "x-backend-rate")
		})
	}
}

// BenchmarkEngines: a full clone through the gogit engine vs the git
// engine on the same repository. No target; the ratio is documented.
func BenchmarkEngines(b *testing.B) {
	root, name := benchRepo(b)
	gitSrv := startServer(b, "git", root)
	gogitSrv := startServer(b, "gogit", root)
	tmp := b.TempDir()
	var tGit, tGogit time.Duration
	for b.Loop() {
		tGit += cloneBare(b, gitSrv.url+"/"+name, filepath.Join(tmp, "git"))
		tGogit += cloneBare(b, gogitSrv.url+"/"+name, filepath.Join(tmp, "gogit"))
	}
	cpuGit, rssGit := gitSrv.stop()
	cpuGogit, rssGogit := gogitSrv.stop()
	n := float64(b.N)
	b.ReportMetric(tGit.Seconds()/n, "git-s/op")
	b.ReportMetric(tGogit.Seconds()/n, "gogit-s/op")
	b.ReportMetric(tGogit.Seconds()/tGit.Seconds(), "x-gogit-vs-git")
	b.ReportMetric(cpuGit.Seconds()/n, "git-cpu-s/op")
	b.ReportMetric(cpuGogit.Seconds()/n, "gogit-cpu-s/op")
	b.ReportMetric(rssGit, "git-maxrss-MiB")
	b.ReportMetric(rssGogit, "gogit-maxrss-MiB")
}

// BenchmarkAdvertCacheHit measures the in-process cost of an info/refs
// answered from the advertisement cache, with allocations, against the
// same request generated by the git engine.
func BenchmarkAdvertCacheHit(b *testing.B) {
	testenv.Git(b)
	root := b.TempDir()
	testenv.BareRepo(b, filepath.Join(root, "a", "r.git"), testenv.RepoOptions{Commits: 20, Branches: 20, Tags: 20})
	time.Sleep(1100 * time.Millisecond)
	cached := &gitproto.Handler{Resolver: gitproto.DirResolver{Root: root}, AdvertCache: &gitproto.AdvertCache{}}
	plain := &gitproto.Handler{Resolver: gitproto.DirResolver{Root: root}}
	do := func(h http.Handler) {
		r := httptest.NewRequest("GET", "/a/r.git/info/refs?service=git-upload-pack", nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
	do(cached)
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			do(cached)
		}
	})
	b.Run("git", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			do(plain)
		}
	})
}

// pkt frames s as one pkt-line.
func pkt(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }

// BenchmarkPush: one-commit pushes to a protected main (PreReceive tells
// a fast-forward from a force-push with Push.IsAncestor, as forge does),
// gitproto vs git http-backend, each push to both in turn; medians.
// Target: ≤ 1.1x.
func BenchmarkPush(b *testing.B) {
	root := b.TempDir()
	for _, n := range []string{"ours", "backend"} {
		repo := filepath.Join(root, n+".git")
		testenv.BareRepo(b, repo, testenv.RepoOptions{Commits: 200})
		testenv.Run(b, repo, "config", "http.receivepack", "true")
	}
	ours := startServer(b, "git+hooks", root)
	backend := startServer(b, "backend", root)
	work := filepath.Join(b.TempDir(), "work")
	testenv.Run(b, "", "clone", "-q", filepath.Join(root, "ours.git"), work)
	push := func(url string) time.Duration {
		start := time.Now()
		testenv.Run(b, work, "push", "-q", url, "HEAD:refs/heads/main")
		return time.Since(start)
	}
	var tOurs, tBackend []time.Duration
	i := 0
	for b.Loop() {
		i++
		testenv.Run(b, work, "commit", "-q", "--allow-empty", "-m", fmt.Sprint("push ", i))
		tOurs = append(tOurs, push(ours.url+"/ours.git"))
		tBackend = append(tBackend, push(backend.url+"/backend.git"))
	}
	cpuOurs, _ := ours.stop()
	cpuBackend, _ := backend.stop()
	mOurs, mBackend := medianOf(tOurs), medianOf(tBackend)
	n := float64(b.N)
	b.ReportMetric(float64(mOurs.Microseconds())/1000, "gitproto-median-ms")
	b.ReportMetric(float64(mBackend.Microseconds())/1000, "backend-median-ms")
	b.ReportMetric(mOurs.Seconds()/mBackend.Seconds(), "x-backend")
	b.ReportMetric(cpuOurs.Seconds()/n*1000, "gitproto-cpu-ms/op")
	b.ReportMetric(cpuBackend.Seconds()/n*1000, "backend-cpu-ms/op")
}

func medianOf(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkDaemonClone: full bare clones of the generated repository over
// git:// from gitproto.Daemon and from git daemon, in turn; medians of
// wall time, and the servers' CPU and peak RSS. Target: ≤ 1.05x git
// daemon.
func BenchmarkDaemonClone(b *testing.B) {
	root, name := benchRepo(b)
	ours := startServer(b, "daemon", root)
	theirs := startGitDaemon(b, root)
	tmp := b.TempDir()
	var tOurs, tTheirs []time.Duration
	for b.Loop() {
		tOurs = append(tOurs, cloneBare(b, ours.url+"/"+name, filepath.Join(tmp, "ours")))
		tTheirs = append(tTheirs, cloneBare(b, theirs.url+"/"+name, filepath.Join(tmp, "theirs")))
	}
	cpuOurs, rssOurs := ours.stop()
	cpuTheirs, rssTheirs := theirs.stop()
	mOurs, mTheirs := medianOf(tOurs), medianOf(tTheirs)
	n := float64(b.N)
	b.ReportMetric(mOurs.Seconds(), "gitproto-median-s")
	b.ReportMetric(mTheirs.Seconds(), "daemon-median-s")
	b.ReportMetric(mOurs.Seconds()/mTheirs.Seconds(), "x-daemon")
	b.ReportMetric(cpuOurs.Seconds()/n, "gitproto-cpu-s/op")
	b.ReportMetric(cpuTheirs.Seconds()/n, "daemon-cpu-s/op")
	b.ReportMetric(rssOurs, "gitproto-peak-MiB")
	b.ReportMetric(rssTheirs, "daemon-peak-MiB")
}
