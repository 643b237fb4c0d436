package forge

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// DefaultBlameBytes bounds the file Blame annotates when max is zero:
// git blame of a larger file takes long and its page is unreadable.
const DefaultBlameBytes = 1 << 20

// BlameLine is one line of a file with the commit that last changed it.
type BlameLine struct {
	Commit   string // the commit that last changed the line
	Path     string // the file's path in that commit (before renames)
	OrigLine int    // the line's number in that commit
	Text     string // without the newline
}

// BlameCommit is a commit that some lines of a blame come from.
type BlameCommit struct {
	CommitInfo
	// Boundary is set for a root commit (no parent to blame further).
	Boundary bool
	// Previous is the parent the lines would be blamed on next, and the
	// file's path there; empty for lines that were added in the commit
	// with no earlier version of the file.
	Previous, PreviousPath string
}

// Blame is a file with, for every line, the commit that last changed it.
type Blame struct {
	Commit  string // the commit blamed
	Path    string
	Lines   []BlameLine
	Commits map[string]*BlameCommit
}

// Blame returns the commit that last changed each line of file p in
// commit, as git blame finds it: following the file across renames, and
// through merges by git's own rules. It runs git blame --porcelain (no
// reimplementation matches git's attribution line for line, and the
// result never changes once made: callers cache it by commit and path).
// A binary file, or one over max bytes (DefaultBlameBytes if zero), is
// ErrTooLarge; a path that is no file in commit, ErrNotFound.
func (b *Browser) Blame(ctx context.Context, commit, p string, max int64) (*Blame, error) {
	if max <= 0 {
		max = DefaultBlameBytes
	}
	blob, err := b.Blob(ctx, commit, p, max)
	if err != nil {
		return nil, err
	}
	if blob.Truncated || blob.Binary {
		return nil, fmt.Errorf("%w: %s (%d bytes, binary %v)", ErrTooLarge, p, blob.Size, blob.Binary)
	}
	cmd := b.command(ctx, "blame", "--porcelain", commit, "--", p)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("forge: git blame: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	bl, err := ParseBlame(&stdout)
	if err != nil {
		return nil, err
	}
	bl.Commit, bl.Path = commit, p
	return bl, nil
}

// ParseBlame reads the output of git blame --porcelain (or
// --line-porcelain). Malformed input is an error, never a panic.
func ParseBlame(r io.Reader) (*Blame, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	bl := &Blame{Commits: map[string]*BlameCommit{}}
	// paths is each commit's file name as last given: git names it in
	// every group of lines, but a reader of older output may not see it.
	paths := map[*BlameCommit]string{}
	n := 0
	bad := func(why string) error { return fmt.Errorf("forge: git blame output, line %d: %s", n, why) }
	var cur *BlameCommit
	var line BlameLine
	inGroup := false
	for {
		s, err := br.ReadString('\n')
		if err == io.EOF && s == "" {
			break
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		n++
		s = strings.TrimSuffix(s, "\n")
		if !inGroup { // "<sha> <orig> <final> [<count>]"
			f := strings.Fields(s)
			if len(f) < 3 || len(f) > 4 || !IsCommitID(f[0]) {
				return nil, bad("expected a commit header")
			}
			orig, err1 := strconv.Atoi(f[1])
			final, err2 := strconv.Atoi(f[2])
			if err1 != nil || err2 != nil || orig < 1 || final != len(bl.Lines)+1 {
				return nil, bad("bad line numbers")
			}
			if cur = bl.Commits[f[0]]; cur == nil {
				cur = &BlameCommit{CommitInfo: CommitInfo{Hash: f[0]}}
				bl.Commits[f[0]] = cur
			}
			line, inGroup = BlameLine{Commit: f[0], OrigLine: orig, Path: paths[cur]}, true
			continue
		}
		if text, ok := strings.CutPrefix(s, "\t"); ok {
			line.Text = text
			bl.Lines = append(bl.Lines, line)
			inGroup = false
			continue
		}
		key, val, _ := strings.Cut(s, " ")
		switch key {
		case "author":
			cur.Author = val
		case "author-mail":
			cur.Email = strings.TrimSuffix(strings.TrimPrefix(val, "<"), ">")
		case "author-time":
			t, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return nil, bad("bad author-time")
			}
			cur.When = time.Unix(t, 0).UTC()
		case "summary":
			cur.Subject = val
		case "boundary":
			cur.Boundary = true
		case "previous":
			sha, p, ok := strings.Cut(val, " ")
			if !ok || !IsCommitID(sha) {
				return nil, bad("bad previous")
			}
			cur.Previous, cur.PreviousPath = sha, unquotePath(p)
		case "filename":
			line.Path = unquotePath(val)
			paths[cur] = line.Path
		}
	}
	if inGroup {
		return nil, bad("truncated: a header without its line")
	}
	return bl, nil
}

// unquotePath undoes git's quoting of unusual path names ("a\tb", with
// octal escapes for bytes past ASCII), which is C's and so Go's.
func unquotePath(p string) string {
	if len(p) >= 2 && p[0] == '"' {
		if u, err := strconv.Unquote(p); err == nil {
			return u
		}
	}
	return p
}
