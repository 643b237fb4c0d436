package forge_test

// The generated repository of ../shared/bench/mkrepo (or any repository
// in FORGEKIT_BENCH_REPO):
//
//	FORGEKIT_BENCH_REPO=/tmp/forgekit-bench/repo.git go test ./forge -run '^$' -bench 'LastCommits|Browse|LogPath' -benchtime 3x

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/internal/testenv"
)

// BenchmarkLastCommits: the last commit of every entry of the root and
// of the largest directory, ours (one walk) vs one `git log -1 --
// entry` per entry (Gitea/Gogs; two at a time, on two cores) and vs one
// `git log --name-only` pass over the history. Every answer is checked
// against git's. Run it on a real repository with and without its
// commit-graph:
//
//	FORGEKIT_BENCH_REAL=/tmp/real/git.git go test ./forge -run '^$' -bench LastCommits -benchtime 2x
func BenchmarkLastCommits(b *testing.B) {
	dir, br, head := benchRepo(b)
	ctx := context.Background()
	entries, err := br.Tree(ctx, head, "")
	if err != nil {
		b.Fatal(err)
	}
	largest, most := "", 0
	for _, e := range entries {
		if e.Type == "tree" {
			if sub, _ := br.Tree(ctx, head, e.Name); len(sub) > most {
				largest, most = e.Name, len(sub)
			}
		}
	}
	for _, d := range []string{"", largest} {
		name := "root"
		if d != "" {
			name = "dir=" + d
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			ents, _ := br.Tree(ctx, head, d)
			var tOurs, tPerEntry time.Duration
			var peak uint64
			for b.Loop() {
				stop := testenv.SampleHeap(&peak)
				start := time.Now()
				last, complete, err := br.LastCommits(ctx, head, d, 0)
				tOurs += time.Since(start)
				stop()
				if err != nil || !complete || len(last) != len(ents) {
					b.Fatalf("incomplete: %v %v %d/%d", err, complete, len(last), len(ents))
				}
				start = time.Now()
				gitLastCommits(b, dir, head, d, ents, last)
				tPerEntry += time.Since(start)
			}
			start := time.Now()
			cmd := exec.Command("git", "log", "--format=%H", "--name-only", head)
			cmd.Dir = dir
			if err := cmd.Run(); err != nil {
				b.Fatal(err)
			}
			tOnePass := time.Since(start)
			n := float64(b.N)
			b.ReportMetric(float64(len(ents)), "entries")
			b.ReportMetric(tOurs.Seconds()/n*1000, "ours-ms")
			b.ReportMetric(tPerEntry.Seconds()/n*1000, "git-log-per-entry-ms")
			b.ReportMetric(tOnePass.Seconds()*1000, "git-log-name-only-ms")
			b.ReportMetric(float64(tPerEntry)/float64(tOurs), "x-per-entry")
			b.ReportMetric(tOnePass.Seconds()*n/tOurs.Seconds(), "x-one-pass")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}

// gitLastCommits checks last against git log -1 -- PATH for every entry,
// two git processes at a time.
func gitLastCommits(b *testing.B, dir, head, d string, ents []forge.Entry, last map[string]*forge.CommitInfo) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for _, e := range ents {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			p := strings.TrimPrefix(d+"/"+e.Name, "/")
			cmd := exec.Command("git", "log", "-1", "--format=%H", head, "--", p)
			cmd.Dir = dir
			out, err := cmd.Output()
			if got := strings.TrimSpace(string(out)); err != nil || got != last[e.Name].Hash {
				b.Errorf("%s: ours %s, git %s (%v)", p, last[e.Name].Hash, got, err)
			}
		}()
	}
	wg.Wait()
}

// BenchmarkBrowse: tree listing, blob read and commit+diff, ours (go-git,
// in process) vs the equivalent git commands, and an archive of HEAD cold
// vs git archive and warm (cache hit).
func BenchmarkBrowse(b *testing.B) {
	dir, br, head := benchRepo(b)
	ctx := context.Background()
	entries, _ := br.Tree(ctx, head, "")
	var file string
	for _, e := range entries {
		if e.Type == "blob" {
			file = e.Name
		}
	}
	if file == "" {
		sub, _ := br.Tree(ctx, head, entries[0].Name)
		for _, e := range sub {
			if e.Type == "blob" {
				file = entries[0].Name + "/" + e.Name
				break
			}
		}
	}
	run := func(args ...string) {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
	}
	tmp := b.TempDir()
	var t [8]time.Duration
	for b.Loop() {
		start := time.Now()
		br.Tree(ctx, head, "")
		t[0] += time.Since(start)
		start = time.Now()
		run("ls-tree", "-l", head)
		t[1] += time.Since(start)

		start = time.Now()
		br.Blob(ctx, head, file, 1<<20)
		t[2] += time.Since(start)
		start = time.Now()
		run("cat-file", "-p", head+":"+file)
		t[3] += time.Since(start)

		start = time.Now()
		br.Commit(ctx, head, forge.DiffLimits{})
		t[4] += time.Since(start)
		start = time.Now()
		run("show", "-M", "--format=%H%n%an%n%s", head)
		t[5] += time.Since(start)

		a, err := forge.NewArchiver(tmp+"/archives", 0)
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		if _, err := a.Archive(ctx, dir, head, "tar.gz", "repo"); err != nil {
			b.Fatal(err)
		}
		t[6] += time.Since(start)
		start = time.Now()
		run("archive", "--format=tar.gz", "-o", tmp+"/plain.tar.gz", head)
		t[7] += time.Since(start)
	}
	a, _ := forge.NewArchiver(tmp+"/warm", 0)
	a.Archive(ctx, dir, head, "tar.gz", "repo")
	start := time.Now()
	const warm = 100
	for range warm {
		a.Archive(ctx, dir, head, "tar.gz", "repo")
	}
	tWarm := time.Since(start) / warm
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return d.Seconds() / n * 1000 }
	b.ReportMetric(ms(t[0]), "tree-ms")
	b.ReportMetric(ms(t[1]), "git-ls-tree-ms")
	b.ReportMetric(ms(t[2]), "blob-ms")
	b.ReportMetric(ms(t[3]), "git-cat-file-ms")
	b.ReportMetric(ms(t[4]), "commit-diff-ms")
	b.ReportMetric(ms(t[5]), "git-show-ms")
	b.ReportMetric(ms(t[6]), "archive-cold-ms")
	b.ReportMetric(ms(t[7]), "git-archive-ms")
	b.ReportMetric(tWarm.Seconds()*1e6, "archive-warm-µs")
}

// benchRepo opens the repository named by FORGEKIT_BENCH_REAL (a real
// one, see ../shared/README.md) or FORGEKIT_BENCH_REPO (one made by
// ../shared/bench/mkrepo) and resolves its HEAD, or skips.
func benchRepo(b *testing.B) (dir string, br *forge.Browser, head string) {
	dir = os.Getenv("FORGEKIT_BENCH_REAL")
	if dir == "" {
		dir = os.Getenv("FORGEKIT_BENCH_REPO")
	}
	if dir == "" {
		b.Skip("set FORGEKIT_BENCH_REAL or FORGEKIT_BENCH_REPO to a repository (see ../shared/README.md)")
	}
	br, err := forge.Browse(dir)
	if err != nil {
		b.Fatal(err)
	}
	if head, err = br.Resolve(context.Background(), "HEAD"); err != nil {
		b.Fatal(err)
	}
	return dir, br, head
}

// BenchmarkLogPath: the first page (31 commits) of the history of a
// directory and of a file, ours vs `git log -31 -- path`.
//
//	FORGEKIT_BENCH_REPO=/tmp/forgekit-bench/repo.git go test ./forge -run '^$' -bench LogPath -benchtime 5x
func BenchmarkLogPath(b *testing.B) {
	dir, br, head := benchRepo(b)
	ctx := context.Background()
	entries, _ := br.Tree(ctx, head, "")
	var sub, file string
	for _, e := range entries {
		if e.Type == "tree" && sub == "" {
			sub = e.Name
		}
	}
	inner, _ := br.Tree(ctx, head, sub)
	for _, e := range inner {
		if e.Type == "blob" {
			file = sub + "/" + e.Name
			break
		}
	}
	for _, p := range []string{sub, file} {
		name := "dir"
		if p == file {
			name = "file"
		}
		b.Run(name, func(b *testing.B) {
			var ours, git time.Duration
			for b.Loop() {
				start := time.Now()
				if _, err := br.LogPath(ctx, head, p, 0, 31); err != nil {
					b.Fatal(err)
				}
				ours += time.Since(start)
				start = time.Now()
				cmd := exec.Command("git", "log", "-31", "--format=%H", head, "--", p)
				cmd.Dir = dir
				if err := cmd.Run(); err != nil {
					b.Fatal(err)
				}
				git += time.Since(start)
			}
			n := float64(b.N)
			b.ReportMetric(ours.Seconds()/n*1000, "ours-ms")
			b.ReportMetric(git.Seconds()/n*1000, "git-log-ms")
			b.ReportMetric(float64(git)/float64(ours), "x-git")
		})
	}
}

// BenchmarkBlame: Browser.Blame (git blame --porcelain, parsed) vs git
// blame itself, on the files of FORGEKIT_BENCH_FILES (comma-separated;
// git/git's Makefile and builtin/add.c by default):
//
//	FORGEKIT_BENCH_REAL=/tmp/real/git-cg.git go test ./forge -run '^$' -bench Blame -benchtime 3x
func BenchmarkBlame(b *testing.B) {
	dir, br, head := benchRepo(b)
	ctx := context.Background()
	files := strings.Split(os.Getenv("FORGEKIT_BENCH_FILES"), ",")
	if files[0] == "" {
		files = []string{"Makefile", "builtin/add.c"}
	}
	for _, f := range files {
		if _, err := br.Blob(ctx, head, f, 1); err != nil {
			b.Logf("skipping %s: %v", f, err)
			continue
		}
		b.Run(strings.ReplaceAll(f, "/", "_"), func(b *testing.B) {
			b.ReportAllocs()
			var tOurs, tGit time.Duration
			var peak uint64
			lines := 0
			for b.Loop() {
				// git first, then ours, each on its own (the heap
				// sampler runs for ours only, after its timing).
				start := time.Now()
				cmd := exec.Command("git", "blame", "--porcelain", head, "--", f)
				cmd.Dir = dir
				if err := cmd.Run(); err != nil {
					b.Fatal(err)
				}
				tGit += time.Since(start)
				start = time.Now()
				bl, err := br.Blame(ctx, head, f, 0)
				tOurs += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				lines = len(bl.Lines)
			}
			stop := testenv.SampleHeap(&peak)
			if _, err := br.Blame(ctx, head, f, 0); err != nil {
				b.Fatal(err)
			}
			stop()
			n := float64(b.N)
			b.ReportMetric(float64(lines), "lines")
			b.ReportMetric(tOurs.Seconds()/n*1000, "ours-ms")
			b.ReportMetric(tGit.Seconds()/n*1000, "git-blame-ms")
			b.ReportMetric(float64(tOurs)/float64(tGit), "x-git")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}
