package forge_test

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/internal/testenv"
)

func tarNames(t *testing.T, r io.Reader) []string {
	zr, err := gzip.NewReader(r)
	require.NoError(t, err)
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if h.Typeflag == tar.TypeReg {
			names = append(names, h.Name)
		}
	}
	sort.Strings(names)
	return names
}

func TestArchives(t *testing.T) {
	t.Parallel()
	repo, commit, a := newArchiverRepo(t, 6)

	// The same files as git archive itself.
	cmd := exec.Command("git", "archive", "--format=tar.gz", "--prefix=proj/", commit)
	cmd.Dir = repo
	want, err := cmd.Output()
	require.NoError(t, err)
	var wg sync.WaitGroup
	paths := make([]string, 8)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := a.Archive(context.Background(), repo, commit, "tar.gz", "proj")
			assert.NoError(t, err)
			paths[i] = p
		}()
	}
	wg.Wait()
	assert.Equal(t, int64(1), a.Stats().Generated, "one generation for eight requests")
	f, err := os.Open(paths[0])
	require.NoError(t, err)
	defer f.Close()
	assert.Equal(t, tarNames(t, bytes.NewReader(want)), tarNames(t, f))

	zp, err := a.Archive(context.Background(), repo, commit, "zip", "proj")
	require.NoError(t, err)
	zr, err := zip.OpenReader(zp)
	require.NoError(t, err)
	defer zr.Close()
	var zipNames []string
	for _, zf := range zr.File {
		if !strings.HasSuffix(zf.Name, "/") {
			zipNames = append(zipNames, zf.Name)
		}
	}
	sort.Strings(zipNames)
	assert.Equal(t, tarNames(t, bytes.NewReader(want)), zipNames)

	_, err = a.Archive(context.Background(), repo, commit, "rar", "proj")
	assert.ErrorIs(t, err, forge.ErrFormat)
	_, err = a.Archive(context.Background(), repo, "HEAD; rm -rf /", "zip", "proj")
	assert.ErrorIs(t, err, forge.ErrNotFound)

	// HTTP: ETag, 304, Content-Disposition, and the front server's hand-off.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("private") {
			w.Header().Set("Cache-Control", "private, max-age=60")
		}
		a.Serve(w, r, repo, "proj", commit, "tar.gz")
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, `"`+commit+`.tar.gz"`, resp.Header.Get("ETag"))
	assert.Equal(t, "public, max-age=31536000, immutable", resp.Header.Get("Cache-Control"))
	assert.Contains(t, resp.Header.Get("Content-Disposition"), "proj-"+commit[:12]+".tar.gz")
	assert.NotEmpty(t, tarNames(t, bytes.NewReader(body)))
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNotModified, resp.StatusCode)
	resp, err = http.Get(srv.URL + "?private=1")
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, "private, max-age=60", resp.Header.Get("Cache-Control"), "the caller's Cache-Control is kept")

	cacheDir := filepath.Dir(paths[0])
	a.SendFile = gitproto.AccelRedirect(cacheDir, "/_archives")
	resp, err = http.Get(srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.True(t, strings.HasPrefix(resp.Header.Get("X-Accel-Redirect"), "/_archives/"), resp.Header.Get("X-Accel-Redirect"))
	http.DefaultClient.CloseIdleConnections()
}

func TestArchiveCacheBound(t *testing.T) {
	t.Parallel()
	testenv.Git(t)
	repo := filepath.Join(t.TempDir(), "r.git")
	testenv.BareRepo(t, repo, testenv.RepoOptions{Commits: 5, FileSize: 4096})
	commits := strings.Fields(testenv.Run(t, repo, "rev-list", "main"))
	dir := filepath.Join(t.TempDir(), "archives")
	a, err := forge.NewArchiver(dir, 1) // one byte: keeps only the newest
	require.NoError(t, err)
	for _, c := range commits {
		_, err := a.Archive(context.Background(), repo, c, "zip", "p")
		require.NoError(t, err)
	}
	s := a.Stats()
	assert.Equal(t, 1, s.Entries)
	assert.Equal(t, int64(len(commits)), s.Generated)
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	assert.Len(t, files, 1, "evicted archives are removed from disk")
}

// TestArchiveBounds: an archive that takes longer than Timeout fails
// cleanly (its git is killed, nothing half-written stays), and waiting
// for a worker ends with the caller's context.
func TestArchiveBounds(t *testing.T) {
	t.Parallel()
	testenv.Git(t)
	repo := filepath.Join(t.TempDir(), "r.git")
	testenv.BareRepo(t, repo, testenv.RepoOptions{Commits: 3})
	commit := strings.TrimSpace(testenv.Run(t, repo, "rev-parse", "main"))
	dir := filepath.Join(t.TempDir(), "archives")
	a, err := forge.NewArchiver(dir, 0)
	require.NoError(t, err)
	a.Timeout = time.Nanosecond
	_, err = a.Archive(context.Background(), repo, commit, "zip", "p")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	left, _ := os.ReadDir(dir)
	assert.Empty(t, left, "no partial archive")

	b, err := forge.NewArchiver(filepath.Join(t.TempDir(), "b"), 0)
	require.NoError(t, err)
	b.Workers = 1
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = b.Archive(ctx, repo, commit, "zip", "p")
	if err != nil {
		assert.ErrorIs(t, err, context.Canceled)
	}
}

// TestArchivePrepare: an archive prepared ahead (a new tag's, by a job)
// is the one the first request is served, from disk.
func TestArchivePrepare(t *testing.T) {
	t.Parallel()
	repo, commit, a := newArchiverRepo(t, 2)
	ctx := context.Background()
	require.NoError(t, a.Prepare(ctx, repo, "proj", commit, "tar.gz"))
	require.NoError(t, a.Prepare(ctx, repo, "proj", commit, "tar.gz"))
	assert.Equal(t, int64(1), a.Stats().Generated)
	rec := httptest.NewRecorder()
	a.Serve(rec, httptest.NewRequest("GET", "/", nil), repo, "proj", commit, "tar.gz")
	assert.Equal(t, 200, rec.Code)
	assert.Equal(t, int64(1), a.Stats().Generated, "served what was prepared")
	assert.ErrorIs(t, a.Prepare(ctx, repo, "proj", commit, "rar"), forge.ErrFormat)
}

// newArchiverRepo makes a repository of commits commits and an archiver
// with an empty cache; it returns the repository, its main commit and
// the archiver.
func newArchiverRepo(t *testing.T, commits int) (string, string, *forge.Archiver) {
	t.Helper()
	testenv.Git(t)
	repo := filepath.Join(t.TempDir(), "r.git")
	testenv.BareRepo(t, repo, testenv.RepoOptions{Commits: commits})
	commit := strings.TrimSpace(testenv.Run(t, repo, "rev-parse", "main"))
	a, err := forge.NewArchiver(filepath.Join(t.TempDir(), "archives"), 0)
	require.NoError(t, err)
	return repo, commit, a
}
