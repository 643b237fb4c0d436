package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/internal/testenv"
)

// syncBuffer is a bytes.Buffer safe for the server's and the test's
// goroutines.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServeAndClone(t *testing.T) {
	for _, engine := range []string{"git", "gogit"} {
		t.Run(engine, func(t *testing.T) {
			data := t.TempDir()
			testenv.BareRepo(t, filepath.Join(data, "repos", "demo", "hello.git"), testenv.RepoOptions{Commits: 3})
			ctx, cancel := context.WithCancel(context.Background())
			var out, logs syncBuffer
			urls := make(chan string, 1)
			done := make(chan error, 1)
			go func() {
				done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-data", data, "-engine", engine}, &out, &logs, func(u string) { urls <- u })
			}()
			base := <-urls
			assert.Contains(t, out.String(), "git clone "+base+"/demo/hello.git")

			dst := filepath.Join(t.TempDir(), "clone")
			for range 2 { // the second clone may come from the caches
				testenv.Run(t, "", "clone", "-q", base+"/demo/hello.git", dst)
				assert.FileExists(t, filepath.Join(dst, "README.md"))
				require.NoError(t, removeAll(dst))
			}
			// Anonymous pushes are refused.
			testenv.Run(t, "", "clone", "-q", base+"/demo/hello", dst)
			_, err := testenv.RunErr(t, testenv.Cmd{Dir: dst, Args: []string{"push", "origin", "HEAD:refs/heads/x"}})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "403")

			cancel()
			require.NoError(t, <-done)
		})
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{name: "unknown flag", args: []string{"-nope"}, want: "flag provided but not defined"},
		{name: "bad engine", args: []string{"-engine", "svn"}, want: "-engine"},
		{name: "bad addr", args: []string{"-addr", "nonsense"}, want: "-addr"},
		{name: "stray argument", args: []string{"serve-me"}, want: "unexpected argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			_, err := parseFlags(tc.args, &stderr)
			require.Error(t, err)
			assert.Contains(t, err.Error()+stderr.String(), tc.want)
		})
	}
	var stderr bytes.Buffer
	_, err := parseFlags([]string{"-h"}, &stderr)
	require.Error(t, err)
	for _, f := range []string{"-addr", "-data", "-pack-cache", "-advert-cache", "-engine"} {
		assert.True(t, strings.Contains(stderr.String(), f), "-h documents %s", f)
	}
}

func removeAll(dir string) error { return os.RemoveAll(dir) }
