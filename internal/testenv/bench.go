package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/metrics"
	"sync"
	"testing"
	"time"
)

var (
	benchRepoOnce sync.Once
	benchRepoPath string
	benchRepoErr  error
)

// BenchRepo returns the absolute path of the generated benchmark
// repository: $FORGEKIT_BENCH_REPO, or one made once by
// ../shared/bench/mkrepo (beside the module's root) under the temporary
// directory. Without either it skips.
func BenchRepo(b *testing.B) string {
	b.Helper()
	Git(b)
	benchRepoOnce.Do(func() {
		if p := os.Getenv("FORGEKIT_BENCH_REPO"); p != "" {
			benchRepoPath, benchRepoErr = filepath.Abs(p)
			return
		}
		root, err := moduleRoot()
		if err != nil {
			benchRepoErr = err
			return
		}
		script := filepath.Join(filepath.Dir(root), "shared", "bench", "mkrepo")
		if _, err := os.Stat(script); err != nil {
			benchRepoErr = fmt.Errorf("no FORGEKIT_BENCH_REPO and no %s", script)
			return
		}
		dst := filepath.Join(os.TempDir(), "forgekit-bench-root", "repo.git")
		if _, err := os.Stat(filepath.Join(dst, "HEAD")); err != nil {
			os.RemoveAll(dst)
			if out, err := exec.Command(script, dst).CombinedOutput(); err != nil {
				benchRepoErr = fmt.Errorf("mkrepo: %v: %s", err, out)
				return
			}
		}
		benchRepoPath = dst
	})
	if benchRepoErr != nil {
		b.Skip(benchRepoErr)
	}
	return benchRepoPath
}

// moduleRoot is the directory of the go.mod above the working directory
// that is not the examples' own.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil && filepath.Base(dir) != "examples" {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}

// SampleHeap records in *peak the largest live heap it sees, sampled
// every 5 ms, until stop is called: a benchmark's peak memory, for
// b.ReportMetric.
func SampleHeap(peak *uint64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	wg.Go(func() {
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > *peak {
				*peak = v
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
