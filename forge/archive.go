package forge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/sync/singleflight"

	"github.com/forgekit/forgekit/timebox"
)

// Defaults of Archiver.
const (
	// DefaultArchiveBytes bounds an Archiver's disk cache when maxBytes
	// is 0.
	DefaultArchiveBytes = 2 << 30
	// DefaultArchiveWorkers is how many archives are made at once.
	DefaultArchiveWorkers = 2
	// DefaultArchiveTimeout bounds the making of one archive.
	DefaultArchiveTimeout = 5 * time.Minute
)

// Archiver makes tar.gz and zip archives of commits with git archive,
// once per (repository, commit, format) however many ask at once, a
// bounded number at a time and each within a time limit, and
// keeps them on disk, least recently used evicted beyond a byte budget.
// An archive of a commit never changes, so it is served with the commit
// id as ETag, and can be handed to the front server (SendFile). It owns
// its directory and clears it when created. An Archiver is safe for
// concurrent use.
type Archiver struct {
	// Git is the git binary. If empty, "git" on PATH.
	Git string

	// SendFile, if set, may answer with a header that makes the front
	// server send the file (gitproto.AccelRedirect, gitproto.XSendfile).
	SendFile func(w http.ResponseWriter, r *http.Request, path string) bool

	// Workers is how many archives are made at once; more wait. If
	// zero, DefaultArchiveWorkers.
	Workers int

	// Timeout bounds the making of one archive (git archive's process
	// group is killed past it). If zero, DefaultArchiveTimeout.
	Timeout time.Duration

	slotsOnce sync.Once
	slots     chan struct{}

	dir      string
	maxBytes int64
	flight   singleflight.Group

	mu    sync.Mutex // guards lru and bytes
	lru   *simplelru.LRU[string, int64]
	bytes int64

	generated, hits atomic.Int64
}

// ArchiverStats are the counters of an Archiver.
type ArchiverStats struct {
	Generated int64 // archives made
	Hits      int64 // archives served from disk (or shared in flight)
	Bytes     int64
	Entries   int
}

// NewArchiver returns an archiver caching in dir (maxBytes 0 means
// DefaultArchiveBytes).
func NewArchiver(dir string, maxBytes int64) (*Archiver, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultArchiveBytes
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	a := &Archiver{dir: dir, maxBytes: maxBytes}
	a.lru, _ = simplelru.NewLRU[string, int64](math.MaxInt32, func(path string, size int64) {
		a.bytes -= size
		os.Remove(path) // a reader with the file open keeps it
	})
	return a, nil
}

func (a *Archiver) initSlots() {
	a.slotsOnce.Do(func() {
		n := a.Workers
		if n <= 0 {
			n = DefaultArchiveWorkers
		}
		a.slots = make(chan struct{}, n)
	})
}

// Stats returns the counters.
func (a *Archiver) Stats() ArchiverStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return ArchiverStats{Generated: a.generated.Load(), Hits: a.hits.Load(), Bytes: a.bytes, Entries: a.lru.Len()}
}

func validCommit(c string) bool {
	if len(c) != 40 && len(c) != 64 {
		return false
	}
	for i := 0; i < len(c); i++ {
		if !(c[i] >= '0' && c[i] <= '9' || c[i] >= 'a' && c[i] <= 'f') {
			return false
		}
	}
	return true
}

// Archive returns the path of the archive of commit (a full object id,
// already resolved by the caller) of the repository in repoDir, with
// every file under the directory prefix/.
func (a *Archiver) Archive(ctx context.Context, repoDir, commit, format, prefix string) (string, error) {
	if format != "tar.gz" && format != "zip" {
		return "", fmt.Errorf("%w: %q", ErrFormat, format)
	}
	if !validCommit(commit) {
		return "", fmt.Errorf("%w: commit %q", ErrNotFound, commit)
	}
	sum := sha256.Sum256([]byte(repoDir + "\x00" + prefix))
	path := filepath.Join(a.dir, hex.EncodeToString(sum[:8])+"-"+commit+"."+format)
	a.mu.Lock()
	_, ok := a.lru.Get(path)
	a.mu.Unlock()
	if ok {
		if _, err := os.Stat(path); err == nil {
			a.hits.Add(1)
			return path, nil
		}
	}
	v, err, shared := a.flight.Do(path, func() (any, error) {
		// A flight that ended between our look and this one made it.
		a.mu.Lock()
		_, ok := a.lru.Get(path)
		a.mu.Unlock()
		if ok {
			if _, err := os.Stat(path); err == nil {
				return path, nil
			}
		}
		// At most Workers generations at once, each within Timeout:
		// detached from the first caller (the others wait on the
		// result), but never without a bound.
		a.initSlots()
		select {
		case a.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		defer func() { <-a.slots }()
		timeout := a.Timeout
		if timeout <= 0 {
			timeout = DefaultArchiveTimeout
		}
		gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		tmp := path + ".tmp"
		git := a.Git
		if git == "" {
			git = "git"
		}
		cmd := timebox.Command(gctx, git, "archive", "--format="+format, "--prefix="+strings.TrimSuffix(prefix, "/")+"/", "-o", tmp, commit)
		cmd.Dir = repoDir
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp)
			if gctx.Err() != nil {
				return nil, fmt.Errorf("forge: git archive: %w", gctx.Err())
			}
			return nil, fmt.Errorf("forge: git archive: %v: %s", err, strings.TrimSpace(string(out)))
		}
		fi, err := os.Stat(tmp)
		if err != nil {
			return nil, fmt.Errorf("forge: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, fmt.Errorf("forge: %w", err)
		}
		a.generated.Add(1)
		a.mu.Lock()
		a.lru.Add(path, fi.Size())
		a.bytes += fi.Size()
		for a.bytes > a.maxBytes && a.lru.Len() > 1 {
			a.lru.RemoveOldest()
		}
		a.mu.Unlock()
		return path, nil
	})
	if err != nil {
		return "", err
	}
	if shared {
		a.hits.Add(1)
	}
	return v.(string), nil
}

// archiveBase is the name of the archive of commit of the repository
// name, without its extension, and the directory of its files.
func archiveBase(name, commit string) string { return name + "-" + commit[:min(12, len(commit))] }

// Prepare makes the archive that Serve answers with for the same
// arguments and keeps it (as its cache keeps any), so that the first
// request for it is served from disk: a queue's job runs it for a new
// tag.
func (a *Archiver) Prepare(ctx context.Context, repoDir, name, commit, format string) error {
	_, err := a.Archive(ctx, repoDir, commit, format, archiveBase(name, commit))
	return err
}

// Serve answers r with the archive: ETag (the commit and format),
// If-None-Match, Content-Disposition with name-<short commit>.<format>,
// Cache-Control public and immutable unless the caller set one, and the
// front server's SendFile when set.
func (a *Archiver) Serve(w http.ResponseWriter, r *http.Request, repoDir, name, commit, format string) {
	etag := `"` + commit + "." + format + `"`
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	base := archiveBase(name, commit)
	path, err := a.Archive(r.Context(), repoDir, commit, format, base)
	switch {
	case errors.Is(err, ErrFormat), errors.Is(err, ErrNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, "archive failed", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("ETag", etag)
	if h.Get("Cache-Control") == "" {
		// An archive of a commit never changes. (A caller serving a
		// private repository sets its own, private, value first.)
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	}
	h.Set("Content-Disposition", `attachment; filename="`+base+"."+format+`"`)
	if format == "zip" {
		h.Set("Content-Type", "application/zip")
	} else {
		h.Set("Content-Type", "application/gzip")
	}
	if a.SendFile != nil && a.SendFile(w, r, path) {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		http.Error(w, "archive vanished", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	fi, _ := f.Stat()
	http.ServeContent(w, r, "", fi.ModTime(), f)
}
