package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
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
	cfg, err := parseFlags([]string{"-data", data}, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	s, err := newServer(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(s.handler)
	defer func() {
		ts.Close()
		s.Close()
	}()
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
