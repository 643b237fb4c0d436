package forge_test

// The generated repository of ../shared/bench/mkrepo (or any repository
// in FORGEKIT_BENCH_REPO):
//
//	FORGEKIT_BENCH_REPO=/tmp/forgekit-bench/repo.git go test ./forge -run '^$' -bench LastCommits -benchtime 3x

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/forgekit/forgekit/forge"
)

// BenchmarkLastCommits: the last commit of every root entry, ours (one
// walk) vs one `git log -1 -- entry` per entry (Gitea/Gogs) and vs one
// `git log --name-only` pass over the history.
func BenchmarkLastCommits(b *testing.B) {
	dir := os.Getenv("FORGEKIT_BENCH_REPO")
	if dir == "" {
		b.Skip("set FORGEKIT_BENCH_REPO to a repository, e.g. one made by ../shared/bench/mkrepo")
	}
	br, err := forge.Browse(dir)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	head, err := br.Resolve(ctx, "HEAD")
	if err != nil {
		head, err = br.Resolve(ctx, "main")
		if err != nil {
			b.Fatal(err)
		}
	}
	entries, err := br.Tree(ctx, head, "")
	if err != nil {
		b.Fatal(err)
	}
	git := func(args ...string) []byte {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			b.Fatal(err)
		}
		return out
	}
	var tOurs, tPerEntry, tOnePass time.Duration
	for b.Loop() {
		start := time.Now()
		last, complete, err := br.LastCommits(ctx, head, "", 0)
		if err != nil || !complete || len(last) != len(entries) {
			b.Fatalf("incomplete: %v %v %d/%d", err, complete, len(last), len(entries))
		}
		tOurs += time.Since(start)

		start = time.Now()
		for _, e := range entries {
			got := strings.TrimSpace(string(git("log", "-1", "--format=%H", head, "--", e.Name)))
			if got != last[e.Name].Hash {
				b.Fatalf("%s: ours %s, git %s", e.Name, last[e.Name].Hash, got)
			}
		}
		tPerEntry += time.Since(start)

		start = time.Now()
		out := git("log", "--format=%H", "--name-only", head)
		_ = bytes.Count(out, []byte("\n"))
		tOnePass += time.Since(start)
	}
	n := float64(b.N)
	b.ReportMetric(float64(len(entries)), "entries")
	b.ReportMetric(tOurs.Seconds()/n*1000, "ours-ms")
	b.ReportMetric(tPerEntry.Seconds()/n*1000, "git-log-per-entry-ms")
	b.ReportMetric(tOnePass.Seconds()/n*1000, "git-log-name-only-ms")
	b.ReportMetric(float64(tPerEntry)/float64(tOurs), "x-per-entry")
	b.ReportMetric(float64(tOnePass)/float64(tOurs), "x-one-pass")
}
