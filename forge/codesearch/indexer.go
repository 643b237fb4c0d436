package codesearch

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
)

// DefaultMaxFileBytes is the largest file indexed when
// Indexer.MaxFileBytes is zero.
const DefaultMaxFileBytes = 1 << 20

// Indexer brings a Store's files of a repository to a commit, through
// git: git diff-tree from the commit indexed before (git ls-tree for the
// first time) names the paths that changed, and one git cat-file --batch
// reads their blobs. An Indexer is safe for concurrent use; updates of
// one repository must not run at once (the caller queues them).
type Indexer struct {
	Store Store
	// Git is the git binary. If empty, "git" on PATH.
	Git string
	// MaxFileBytes is the largest file indexed. If zero,
	// DefaultMaxFileBytes; if negative, no limit.
	MaxFileBytes int64
	stats        struct {
		updates, files, bytes, skipped atomic.Int64
	}
}

// IndexerStats are an Indexer's counters since it was made.
type IndexerStats struct {
	Updates      int64 // Update calls that changed the store
	Files        int64 // files written
	Bytes        int64 // bytes of the files written
	SkippedFiles int64 // binary files and files over MaxFileBytes
}

// Stats returns the counters.
func (x *Indexer) Stats() IndexerStats {
	return IndexerStats{Updates: x.stats.updates.Load(), Files: x.stats.files.Load(), Bytes: x.stats.bytes.Load(), SkippedFiles: x.stats.skipped.Load()}
}

// Update brings repo's files in the store to commit of the repository
// in dir. It does nothing when the store has that commit already. A
// commit the store's commit is not an ancestor of is handled like any
// other: the diff between the two trees is what changes.
func (x *Indexer) Update(ctx context.Context, repo int64, dir, commit string) error {
	if !isObjectID(commit) {
		return fmt.Errorf("codesearch: %q is not a commit id", commit)
	}
	old, err := x.Store.Indexed(ctx, repo)
	if err != nil {
		return err
	}
	if old == commit {
		return nil
	}
	var paths []treeEntry
	replace := old == "" || !x.exists(ctx, dir, old)
	if replace {
		paths, err = x.lsTree(ctx, dir, commit)
	} else {
		paths, err = x.diffTree(ctx, dir, old, commit)
	}
	if err != nil {
		return err
	}
	if err := x.Store.Apply(ctx, repo, commit, replace, x.read(ctx, dir, paths)); err != nil {
		return err
	}
	x.stats.updates.Add(1)
	return nil
}

// treeEntry is a path of the new tree: a blob to read, or (blob "")
// a path that is gone.
type treeEntry struct {
	path, blob string
}

// lsTree lists every regular file of commit.
func (x *Indexer) lsTree(ctx context.Context, dir, commit string) ([]treeEntry, error) {
	out, err := x.output(ctx, dir, "ls-tree", "-r", "-z", "--full-tree", commit)
	if err != nil {
		return nil, err
	}
	var entries []treeEntry
	for _, rec := range bytes.Split(out, []byte{0}) {
		// "<mode> <type> <object>\t<path>"
		meta, p, ok := bytes.Cut(rec, []byte{'\t'})
		f := strings.Fields(string(meta))
		if !ok || len(f) != 3 {
			continue
		}
		if f[1] == "blob" && (f[0] == "100644" || f[0] == "100755") {
			entries = append(entries, treeEntry{string(p), f[2]})
		}
	}
	return entries, nil
}

// diffTree lists the paths that differ between two commits: each with
// its new blob, or "" when it is gone (or no longer a regular file).
func (x *Indexer) diffTree(ctx context.Context, dir, old, commit string) ([]treeEntry, error) {
	out, err := x.output(ctx, dir, "diff-tree", "-r", "-z", "--no-renames", "--no-commit-id", old, commit)
	if err != nil {
		return nil, err
	}
	recs := bytes.Split(out, []byte{0})
	var entries []treeEntry
	for i := 0; i+1 < len(recs); i += 2 {
		// ":<old mode> <new mode> <old> <new> <status>" then the path.
		f := strings.Fields(strings.TrimPrefix(string(recs[i]), ":"))
		if len(f) != 5 {
			return nil, fmt.Errorf("codesearch: git diff-tree printed %q", recs[i])
		}
		p := string(recs[i+1])
		if f[4] == "D" || (f[1] != "100644" && f[1] != "100755") {
			entries = append(entries, treeEntry{p, ""})
			continue
		}
		entries = append(entries, treeEntry{p, f[3]})
	}
	return entries, nil
}

// read yields the changes of entries, reading their blobs with one git
// cat-file --batch as the store takes them (one file in memory at a
// time), and leaving out binary files and those over the size limit (as
// removals, so that an older version indexed goes).
func (x *Indexer) read(ctx context.Context, dir string, entries []treeEntry) iter.Seq2[Change, error] {
	return func(yield func(Change, error) bool) {
		max := x.MaxFileBytes
		if max == 0 {
			max = DefaultMaxFileBytes
		}
		var want []treeEntry
		for _, e := range entries {
			if e.blob != "" {
				want = append(want, e)
			} else if !yield(Change{Path: e.path}, nil) {
				return
			}
		}
		if len(want) == 0 {
			return
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		cmd := x.command(ctx, dir, "cat-file", "--batch")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			yield(Change{}, err)
			return
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			yield(Change{}, err)
			return
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			yield(Change{}, fmt.Errorf("codesearch: git cat-file: %w", err))
			return
		}
		fed := make(chan struct{})
		go func() {
			defer close(fed)
			w := bufio.NewWriter(stdin)
			for _, e := range want {
				w.WriteString(e.blob + "\n")
			}
			w.Flush()
			stdin.Close()
		}()
		// However this ends, git and the feeder end with it.
		defer func() {
			cancel()
			io.Copy(io.Discard, stdout)
			cmd.Wait()
			<-fed
		}()
		r := bufio.NewReaderSize(stdout, 256<<10)
		for _, e := range want {
			content, err := readBatchEntry(r, e.blob, max)
			if err != nil {
				if ctx.Err() == nil {
					err = fmt.Errorf("codesearch: reading git cat-file: %w: %s", err, strings.TrimSpace(stderr.String()))
				}
				yield(Change{}, err)
				return
			}
			c := Change{Path: e.path}
			if content == nil { // binary, or too large
				x.stats.skipped.Add(1)
			} else {
				c.Blob, c.Content = e.blob, content
				x.stats.files.Add(1)
				x.stats.bytes.Add(int64(len(content)))
			}
			if !yield(c, nil) {
				return
			}
		}
	}
}

// readBatchEntry reads one object of git cat-file --batch: its content,
// or nil for a binary one or one over max bytes (negative: no limit).
func readBatchEntry(r *bufio.Reader, blob string, max int64) ([]byte, error) {
	header, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	f := strings.Fields(header) // "<oid> <type> <size>", or "<oid> missing"
	if len(f) != 3 || f[0] != blob || f[1] != "blob" {
		return nil, fmt.Errorf("unexpected object header %q for %s", strings.TrimSpace(header), blob)
	}
	size, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || size < 0 {
		return nil, fmt.Errorf("bad size in %q", header)
	}
	if max >= 0 && size > max {
		_, err := r.Discard(int(size) + 1)
		return nil, err
	}
	content := make([]byte, size+1)
	if _, err := io.ReadFull(r, content); err != nil {
		return nil, err
	}
	content = content[:size] // the newline after the object
	if bytes.IndexByte(content[:min(len(content), 8000)], 0) >= 0 {
		return nil, nil // binary, as git decides
	}
	return content, nil
}

// exists reports whether commit is in the repository (a force-push and
// a gc may have dropped the one indexed).
func (x *Indexer) exists(ctx context.Context, dir, commit string) bool {
	_, err := x.output(ctx, dir, "cat-file", "-e", commit+"^{commit}")
	return err == nil
}

func (x *Indexer) command(ctx context.Context, dir string, args ...string) *exec.Cmd {
	git := x.Git
	if git == "" {
		git = "git"
	}
	cmd := exec.CommandContext(ctx, git, args...)
	cmd.Dir = dir
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "LC_ALL=C")
	return cmd
}

func (x *Indexer) output(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := x.command(ctx, dir, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("codesearch: git %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
		}
		return nil, fmt.Errorf("codesearch: git %s: %w", args[0], err)
	}
	return out, nil
}

func isObjectID(s string) bool {
	return (len(s) == 40 || len(s) == 64) && strings.Trim(s, "0123456789abcdef") == ""
}
