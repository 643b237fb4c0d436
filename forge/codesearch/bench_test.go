package codesearch_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/forgekit/forgekit/forge/codesearch"
	"github.com/forgekit/forgekit/forge/codesearch/sqlite"
)

// BenchmarkSearch indexes the repositories of FORGEKIT_BENCH_REAL
// (comma-separated bare repositories, e.g. git/git and go-git/go-git)
// into a SQLite index, times an incremental update from HEAD~1 to HEAD
// (what a one-commit push costs), then queries them, against git grep
// -F -i over the same trees (the anchor: what a forge without an index
// runs):
//
//	FORGEKIT_BENCH_REAL=/tmp/real/git.git,/tmp/real/go-git.git go test ./forge/codesearch -run '^$' -bench Search -benchtime 20x
func BenchmarkSearch(b *testing.B) {
	env := os.Getenv("FORGEKIT_BENCH_REAL")
	if env == "" {
		b.Skip("set FORGEKIT_BENCH_REAL to bare repositories, comma-separated (see ../shared/README.md)")
	}
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "search.db")
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	x := &codesearch.Indexer{Store: st}
	dirs := strings.Split(env, ",")
	var repos []int64
	var heads []string
	start := time.Now()
	for i, dir := range dirs {
		out, err := exec.Command("git", "-C", dir, "rev-parse", "HEAD~1", "HEAD").Output()
		if err != nil {
			b.Fatal(err)
		}
		ids := strings.Fields(string(out))
		if err := x.Update(ctx, int64(i+1), dir, ids[0]); err != nil {
			b.Fatal(err)
		}
		repos, heads = append(repos, int64(i+1)), append(heads, ids[1])
	}
	indexTime := time.Since(start)
	start = time.Now()
	for i, dir := range dirs {
		if err := x.Update(ctx, repos[i], dir, heads[i]); err != nil {
			b.Fatal(err)
		}
	}
	pushTime := time.Since(start) / time.Duration(len(dirs))
	fi, _ := os.Stat(path)
	var size int64
	if fi != nil {
		size = fi.Size()
	}
	if wal, err := os.Stat(path + "-wal"); err == nil {
		size += wal.Size()
	}

	queries := []string{"strbuf_addf", "PackfileWriter", "return err", "fprintf(stderr", "xmalloc", "TODO", "ReadMIMEHeader", "the index"}
	var ours, grep []time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		q := queries[i%len(queries)]
		t0 := time.Now()
		if _, err := st.Search(ctx, codesearch.Query{Text: q, Repos: repos}); err != nil {
			b.Fatal(err)
		}
		ours = append(ours, time.Since(t0))
		t0 = time.Now()
		for j, dir := range dirs {
			cmd := exec.Command("git", "-C", dir, "grep", "-F", "-i", "-I", "-l", "-e", q, heads[j])
			if err := cmd.Run(); err != nil && cmd.ProcessState.ExitCode() != 1 {
				b.Fatal(err)
			}
		}
		grep = append(grep, time.Since(t0))
	}
	b.StopTimer()
	p := func(ds []time.Duration, q float64) float64 {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return float64(ds[int(q*float64(len(ds)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(indexTime.Seconds(), "index-s")
	b.ReportMetric(float64(pushTime.Milliseconds()), "push-update-ms")
	b.ReportMetric(float64(size)/(1<<20), "index-MiB")
	b.ReportMetric(p(ours, 0.5), "p50-ms")
	b.ReportMetric(p(ours, 0.95), "p95-ms")
	b.ReportMetric(p(grep, 0.5), "git-grep-p50-ms")
	b.ReportMetric(p(grep, 0.5)/p(ours, 0.5), "x-git-grep")
	b.ReportMetric(float64(x.Stats().Bytes)/(1<<20), "text-MiB")
}
