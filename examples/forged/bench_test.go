package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/forgekit/forgekit/internal/testenv"
)

// BenchmarkPages serves warm pages of the repository in
// $FORGEKIT_BENCH_REPO (the one ../shared/bench/mkrepo generates) over
// loopback from 16 goroutines, in process, for profiling:
//
//	FORGEKIT_BENCH_REPO=/tmp/forgekit-bench/repo.git go test ./examples/forged \
//	    -run '^$' -bench Pages -benchtime 2000x -cpuprofile /tmp/pages.prof
//
// The comparison with cgit is examples/forgebench.
func BenchmarkPages(b *testing.B) {
	repo := os.Getenv("FORGEKIT_BENCH_REPO")
	if repo == "" {
		b.Skip("set FORGEKIT_BENCH_REPO to a generated repository")
	}
	data := b.TempDir()
	run := func(args ...string) {
		var out bytes.Buffer
		if err := dispatch(context.Background(), append(args, "-data", data), strings.NewReader(""), &out, &out); err != nil {
			b.Fatalf("%v: %v\n%s", args, err, out.String())
		}
	}
	run("user", "add", "bench")
	run("repo", "create", "bench/big")
	dst := filepath.Join(data, "repos", "bench", "big.git")
	os.RemoveAll(dst)
	if out, err := exec.Command("cp", "-a", repo, dst).CombinedOutput(); err != nil {
		b.Fatalf("cp: %v %s", err, out)
	}
	head, _ := exec.Command("git", "-C", dst, "rev-parse", "main").Output()
	_, ts := startInstance(b, data)
	for _, p := range []struct{ name, path string }{
		{"home", "/bench/big"},
		{"tree", "/bench/big/tree/main/assets"},
		{"commit", "/bench/big/commit/" + strings.TrimSpace(string(head))},
		{"blob", "/bench/big/blob/main/assets/file00036.py"},
	} {
		b.Run(p.name, func(b *testing.B) {
			get := func(c *http.Client, path string) {
				res, err := c.Get(ts.URL + path)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					b.Fatalf("%s: %s", path, res.Status)
				}
			}
			// Warm: the first request fills the caches; a file list sent
			// without its last commits is completed through its fill URL.
			res, err := http.Get(ts.URL + p.path)
			if err != nil {
				b.Fatal(err)
			}
			page, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if m := regexp.MustCompile(`data-fill="([^"]+)"`).FindSubmatch(page); m != nil {
				get(http.DefaultClient, strings.ReplaceAll(string(m[1]), "&amp;", "&"))
			}
			// No gzip: the client would spend the shared cores on
			// inflating, and cgit (forgebench's anchor) sends none.
			tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
			b.SetParallelism(8)
			b.ReportAllocs()
			start := time.Now()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					get(c, p.path)
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
}

// BenchmarkScaleOut runs a mixed workload (repository pages, clones,
// pushes; every page view counted) through nginx with
// examples/deploy/nginx-lb.conf, first in front of one forged instance,
// then of three (one data directory, PostgreSQL, memcached), for
// FORGEKIT_BENCH_SECONDS each (default 5), and reports both throughputs
// and their ratio:
//
//	go test ./examples/forged -run '^$' -bench ScaleOut -benchtime 1x
func BenchmarkScaleOut(b *testing.B) {
	nginx := testenv.Binary(b, "nginx", "nginx", "/usr/sbin")
	secs, _ := strconv.Atoi(os.Getenv("FORGEKIT_BENCH_SECONDS"))
	if secs <= 0 {
		secs = 5
	}
	var rates []float64
	for _, n := range []int{1, 3} {
		dsn := testenv.Postgres(b)
		mc := testenv.Memcached(b)
		data := b.TempDir()
		var addrs []string
		for range n {
			_, ts := startInstance(b, data, "-db", dsn, "-memcached", mc, "-trusted-proxies", "127.0.0.1")
			addrs = append(addrs, ts.Listener.Addr().String())
		}
		for len(addrs) < 3 {
			addrs = append(addrs, addrs[0])
		}
		addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(b))
		raw, err := os.ReadFile(filepath.Join("..", "deploy", "nginx-lb.conf"))
		if err != nil {
			b.Fatal(err)
		}
		site := strings.NewReplacer("server 127.0.0.1:8081;", "server "+addrs[0]+";", "server 127.0.0.1:8082;", "server "+addrs[1]+";",
			"server 127.0.0.1:8083;", "server "+addrs[2]+";", "listen 80;", "listen "+addr+";").Replace(string(raw))
		startNginx(b, nginx, b.TempDir(), addr, site)
		base := "http://" + addr
		run := func(stdin string, args ...string) string {
			var out bytes.Buffer
			if err := dispatch(context.Background(), append(args, "-data", data, "-db", dsn), strings.NewReader(stdin), &out, &out); err != nil {
				b.Fatalf("%v: %v %s", args, err, out.String())
			}
			return out.String()
		}
		run("bench-password\n", "user", "add", "bench", "-password-stdin")
		tok := regexp.MustCompile(`fkt_[A-Za-z0-9_-]+`).FindString(run("", "token", "create", "bench"))
		run("", "repo", "create", "bench/proj")
		push := strings.Replace(base, "http://", "http://bench:"+tok+"@", 1) + "/bench/proj.git"
		src := filepath.Join(b.TempDir(), "src.git")
		testenv.BareRepo(b, src, testenv.RepoOptions{Commits: 200, Files: 4})
		testenv.Run(b, src, "push", "-q", push, "main")

		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second)
		var ops, failed atomic.Int64
		var wg sync.WaitGroup
		for w := range 16 {
			work := filepath.Join(b.TempDir(), "w")
			testenv.Run(b, "", "clone", "-q", base+"/bench/proj.git", work)
			wg.Go(func() {
				tr := &http.Transport{DisableCompression: true}
				defer tr.CloseIdleConnections()
				c := &http.Client{Transport: tr}
				for i := 0; ctx.Err() == nil; i++ {
					var err error
					switch i % 20 {
					case 0: // a clone
						_, err = testenv.RunErr(b, testenv.Cmd{Args: []string{"clone", "-q", "--bare", base + "/bench/proj.git", filepath.Join(work, fmt.Sprint("c", i))}})
						os.RemoveAll(filepath.Join(work, fmt.Sprint("c", i)))
					case 10: // a push to the worker's own branch
						testenv.Run(b, work, "commit", "-q", "--allow-empty", "-m", fmt.Sprint("w", w, " ", i))
						_, err = testenv.RunErr(b, testenv.Cmd{Dir: work, Args: []string{"push", "-q", "-f", push, fmt.Sprintf("HEAD:refs/heads/w%d", w)}})
					default: // pages, each view counted
						page := []string{"/bench/proj", "/bench/proj/commits/main", "/bench/proj/tree/main/dir1", "/explore"}[i%4]
						var res *http.Response
						if res, err = c.Get(base + page); err == nil {
							io.Copy(io.Discard, res.Body)
							res.Body.Close()
							if res.StatusCode != http.StatusOK {
								err = fmt.Errorf("%s: %s", page, res.Status)
							}
						}
					}
					if ctx.Err() != nil {
						return
					}
					if err != nil {
						failed.Add(1)
						continue
					}
					ops.Add(1)
				}
			})
		}
		wg.Wait()
		cancel()
		if failed.Load() > 0 {
			b.Errorf("%d instance(s): %d operations failed", n, failed.Load())
		}
		rate := float64(ops.Load()) / float64(secs)
		rates = append(rates, rate)
		b.ReportMetric(rate, fmt.Sprintf("ops/s-%d-instance", n))
	}
	b.ReportMetric(rates[1]/rates[0], "x-3-vs-1")
}

// BenchmarkPushSearchable pushes one commit at a time into a copy of
// the repository in $FORGEKIT_BENCH_REAL (git/git, for instance) and
// times from the push's end until /search finds the word it added:
// what a user waits for after pushing (the target is a second).
//
//	FORGEKIT_BENCH_REAL=/tmp/real/git.git go test ./examples/forged -run '^$' -bench PushSearchable -benchtime 10x
func BenchmarkPushSearchable(b *testing.B) {
	repo := os.Getenv("FORGEKIT_BENCH_REAL")
	if repo == "" {
		b.Skip("set FORGEKIT_BENCH_REAL to a bare repository (see ../shared/README.md)")
	}
	data := b.TempDir()
	run := func(stdin string, args ...string) string {
		var out bytes.Buffer
		if err := dispatch(context.Background(), append(args, "-data", data), strings.NewReader(stdin), &out, &out); err != nil {
			b.Fatalf("%v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	run("bench-password\n", "user", "add", "bench", "-password-stdin")
	start := time.Now()
	run("", "repo", "import", "bench/big", "-from", repo)
	b.Logf("imported in %v", time.Since(start))
	s, ts := startInstance(b, data)
	found := func(q, want string) bool {
		res, err := http.Get(ts.URL + "/search?q=" + q)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return bytes.Contains(body, []byte(want))
	}
	// The first index of the whole repository, at start.
	start = time.Now()
	for !found("include", "<mark>") {
		if time.Since(start) > 5*time.Minute {
			b.Fatal("never indexed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.ReportMetric(time.Since(start).Seconds(), "first-index-s")
	work := b.TempDir()
	u := strings.Replace(ts.URL, "http://", "http://bench:bench-password@", 1) + "/bench/big.git"
	if out, err := exec.Command("git", "clone", "-q", "--depth", "1", u, work).CombinedOutput(); err != nil {
		b.Fatalf("clone: %v %s", err, out)
	}
	git := func(args ...string) {
		cmd := exec.Command("git", args...)
		cmd.Dir = work
		cmd.Env = testenv.GitEnv(b.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		word := fmt.Sprintf("searchable-%d-%d", i, time.Now().UnixNano())
		os.WriteFile(filepath.Join(work, "bench-note.txt"), []byte(word+"\n"), 0o644)
		git("add", "bench-note.txt")
		git("commit", "-q", "-m", word)
		git("push", "-q", "origin", "HEAD")
		t0 := time.Now()
		for !found(word, "<mark>"+word+"</mark>") {
			if time.Since(t0) > time.Minute {
				b.Fatal("the push never became searchable")
			}
			time.Sleep(2 * time.Millisecond)
		}
		total += time.Since(t0)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "push-to-searchable-ms")
	_ = s
}

// BenchmarkCLIStartup: wall time of forged commands that do one lookup
// (and of version, which does none), each run as its own process from a
// built binary against a data directory with a user, a token and a
// repository; medians. Target: ≤ 50 ms each (the Bitbucket lesson: a
// helper that loads everything for one lookup becomes the server's
// load).
func BenchmarkCLIStartup(b *testing.B) {
	testenv.Git(b)
	bin := filepath.Join(b.TempDir(), "forged")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v: %s", err, out)
	}
	data := b.TempDir()
	run := func(stdin string, args ...string) (time.Duration, string) {
		cmd := exec.Command(bin, append(args, "-data", data)...)
		cmd.Stdin = strings.NewReader(stdin)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(start)
		if err != nil {
			b.Fatalf("forged %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return d, string(out)
	}
	run("alice-password\n", "user", "add", "alice", "-password-stdin")
	run("", "repo", "create", "alice/proj")
	commands := []struct {
		metric string
		args   func(i int) []string
	}{
		{"version-ms", func(int) []string { return []string{"version"} }},
		{"user-list-ms", func(int) []string { return []string{"user", "list"} }},
		{"token-create-ms", func(i int) []string { return []string{"token", "create", "alice", "-name", fmt.Sprint("t", i)} }},
		{"token-list-ms", func(int) []string { return []string{"token", "list", "alice"} }},
		{"repo-list-ms", func(int) []string { return []string{"repo", "list"} }},
		{"key-list-ms", func(int) []string { return []string{"user", "key", "list", "alice"} }},
	}
	times := make([][]time.Duration, len(commands))
	i := 0
	for b.Loop() {
		i++
		for c, cmd := range commands {
			args := cmd.args(i)
			if args[0] == "version" {
				start := time.Now()
				if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil {
					b.Fatalf("forged version: %v: %s", err, out)
				}
				times[c] = append(times[c], time.Since(start))
				continue
			}
			d, _ := run("", args...)
			times[c] = append(times[c], d)
		}
	}
	for c, cmd := range commands {
		b.ReportMetric(float64(median(times[c]).Microseconds())/1000, cmd.metric)
	}
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	slices.Sort(s)
	return s[len(s)/2]
}
