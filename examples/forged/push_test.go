package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/internal/testenv"
)

// largePushBytes is the size of the pack TestLargeChunkedPush sends:
// several hundred MB, far above git's http.postBuffer (1 MiB), so that
// git sends it with a chunked body, as it does for any real project.
const largePushBytes = 320 << 20

// TestLargeChunkedPush pushes a pack of several hundred MB through
// forged's whole handler chain with a chunked body while receive-pack
// answers early (an fsck warning about an old tree, as git/git's history
// has, goes out on the side-band while the pack still arrives), then
// clones it back and checks it with git fsck. net/http used to take the
// early answer for the end of the request and read up to 256 KiB of the
// body away itself, corrupting the pack at a random offset.
func TestLargeChunkedPush(t *testing.T) {
	f := newForge(t)
	f.user("alice")
	tok := f.token("alice")
	size := largePushBytes
	if testing.Short() {
		size = 24 << 20
	}
	git := func(dir string, args ...string) string {
		t.Helper()
		return strings.TrimSpace(testenv.Run(t, dir, args...))
	}

	dir := t.TempDir()
	git("", "init", "-q", "-b", "main", dir)
	// Objects uncompressed: the test is about moving bytes, and deflating
	// random data would only spend the machine.
	git(dir, "config", "core.compression", "0")
	// First a commit whose tree has a mode fsck warns about (100664, as
	// early git wrote): its warning goes out before the data arrives.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "old.txt"), []byte("old\n"), 0o644))
	blob := git(dir, "hash-object", "-w", "old.txt")
	tree, err := testenv.RunErr(t, testenv.Cmd{Dir: dir, Args: []string{"mktree"}, Stdin: "100664 blob " + blob + "\told.txt\n"})
	require.NoError(t, err)
	git(dir, "reset", "-q", "--soft", git(dir, "commit-tree", "-m", "An old tree", strings.TrimSpace(tree)))

	// More objects than receive.unpackLimit, so that receive-pack keeps
	// a pack (index-pack, which checks objects as they arrive) rather
	// than unpacking it after the fact.
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "small"), 0o755))
	for i := range 200 {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "small", strconv.Itoa(i)+".txt"), []byte(strconv.Itoa(i)+"\n"), 0o644))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "data"), 0o755))
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	buf := make([]byte, 8<<20)
	for i := 0; i*len(buf) < size; i++ {
		for j := 0; j < len(buf); j += 8 {
			v := rng.Uint64()
			for k := range 8 {
				buf[j+k] = byte(v >> (8 * k))
			}
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, "data", "f"+strconv.Itoa(i)+".bin"), buf, 0o644))
	}
	git(dir, "add", ".")
	git(dir, "commit", "-q", "-m", "Large files")
	// A tag makes pack-objects write every tree before any blob, as in
	// any real history with releases: the warning goes out early.
	git(dir, "tag", "v1.0")

	out, err := testenv.RunErr(t, testenv.Cmd{Dir: dir, Args: []string{"-c", "pack.compression=0", "push", f.gitURL("alice/big", "alice", tok), "main", "v1.0"}})
	require.NoError(t, err, out)

	dst := filepath.Join(t.TempDir(), "clone.git")
	git("", "clone", "-q", "--bare", f.gitURL("alice/big", "alice", tok), dst)
	git(dst, "fsck", "--no-dangling")
	assert.Equal(t, git(dir, "rev-parse", "HEAD"), git(dst, "rev-parse", "main"))
}
