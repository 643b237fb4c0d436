// Package codesearch provides substring search over the code of git
// repositories: an Indexer that keeps, for each repository, the files of
// one commit (the default branch's, for a forge) in a Store, re-reading
// only the blobs that changed since the commit it indexed last, and
// stores that answer queries with the files, line numbers, context and
// the byte ranges that match.
//
// Queries are literal substrings, matched without regard to ASCII case,
// as GitHub's and zoekt's plain queries are; they need at least
// MinQueryLen bytes, which is what a trigram index can narrow down. The
// stores keep a trigram index and the text: SQLite FTS5 with its trigram
// tokenizer (package codesearch/sqlite, in a file of its own) and
// PostgreSQL with pg_trgm (PostgresStore, in the forge's own database).
// Both find the candidate files through the index, and this package
// finds the lines in their text (Lines), so that both answer alike.
//
// Visibility is the caller's: a Query names the repositories the asker
// may read, and nothing else is searched. Binary files and files over
// Indexer.MaxFileBytes are left out, as git grep and GitHub do.
//
// Non-goals: regular expressions, ranking beyond path order, and
// branches other than the one indexed.
package codesearch

import (
	"bytes"
	"context"
	"errors"
	"iter"
	"strings"
)

// MinQueryLen is the shortest query: a trigram index narrows down
// nothing shorter.
const MinQueryLen = 3

// Defaults of Query.
const (
	// DefaultLimit is how many files a query returns.
	DefaultLimit = 50
	// DefaultLinesPerFile is how many matching lines a file shows.
	DefaultLinesPerFile = 5
)

var (
	// ErrShortQuery is returned for a query of fewer than MinQueryLen
	// bytes (spaces at the ends aside).
	ErrShortQuery = errors.New("codesearch: query too short")
	// ErrNoRepos is returned for a query that names no repository.
	ErrNoRepos = errors.New("codesearch: no repository to search")
)

// Change is one file of an update: its content at a new blob, or its
// removal.
type Change struct {
	Path    string
	Blob    string // the blob's id; "" for a removal
	Content []byte // nil for a removal
}

// Store keeps the indexed files: what an Indexer writes through.
// Implementations are safe for concurrent use.
type Store interface {
	// Indexed returns the commit indexed for repo, "" for none.
	Indexed(ctx context.Context, repo int64) (string, error)
	// Apply records the changes that bring repo's files to commit, all
	// or none, reading them from changes as it writes (an error from
	// changes undoes them). With replace set, the changes are the whole
	// commit: the files indexed before go.
	Apply(ctx context.Context, repo int64, commit string, replace bool, changes iter.Seq2[Change, error]) error
}

// Changes is a fixed list of changes, for Store.Apply.
func Changes(cs ...Change) iter.Seq2[Change, error] {
	return func(yield func(Change, error) bool) {
		for _, c := range cs {
			if !yield(c, nil) {
				return
			}
		}
	}
}

// Query is a search.
type Query struct {
	// Text is the literal substring searched for, without regard to
	// ASCII case.
	Text string
	// Repos are the repositories searched: those the asker may read.
	// None is ErrNoRepos (never "all").
	Repos []int64
	// Limit bounds the files returned. If zero, DefaultLimit.
	Limit int
	// LinesPerFile bounds the matching lines shown per file. If zero,
	// DefaultLinesPerFile.
	LinesPerFile int
}

// check validates q and fills its defaults.
func (q *Query) check() error {
	q.Text = strings.TrimSpace(q.Text)
	if len(q.Text) < MinQueryLen {
		return ErrShortQuery
	}
	if len(q.Repos) == 0 {
		return ErrNoRepos
	}
	if q.Limit <= 0 {
		q.Limit = DefaultLimit
	}
	if q.LinesPerFile <= 0 {
		q.LinesPerFile = DefaultLinesPerFile
	}
	return nil
}

// Check validates a query and fills its defaults, for stores.
func Check(q *Query) error { return q.check() }

// Result is one file that matches.
type Result struct {
	Repo  int64
	Path  string
	Lines []Line // matching lines with a line of context around each
	// More counts the matching lines not shown.
	More int
}

// Line is one line of a result.
type Line struct {
	N       int    // 1-based
	Text    string // without the newline
	Match   [][2]int
	Context bool // shown for context: it does not match
}

// Lines finds the lines of content that contain text (without regard
// to ASCII case): at most max of them, each with its match ranges and a
// line of context on each side, and the count of matching lines left
// out. It returns no lines when text is not there (an index's candidate
// that does not match).
func Lines(content []byte, text string, max int) ([]Line, int) {
	needle := []byte(strings.ToLower(text))
	lower := bytes.ToLower(content)
	if len(lower) != len(content) { // not ASCII-safe: match exactly
		lower, needle = content, []byte(text)
	}
	var out []Line
	shown, more := 0, 0
	lineStart, n := 0, 1
	lastShown := 0 // the number of the last line put in out
	for start := 0; ; {
		i := bytes.Index(lower[start:], needle)
		if i < 0 {
			break
		}
		at := start + i
		// The line that holds the match.
		for {
			end := bytes.IndexByte(content[lineStart:], '\n')
			if end < 0 || lineStart+end >= at {
				break
			}
			lineStart += end + 1
			n++
		}
		end := bytes.IndexByte(content[lineStart:], '\n')
		lineEnd := len(content)
		if end >= 0 {
			lineEnd = lineStart + end
		}
		if shown == max {
			more++
		} else {
			line := Line{N: n, Text: string(content[lineStart:lineEnd])}
			for j := 0; j+len(needle) <= lineEnd-lineStart; {
				k := bytes.Index(lower[lineStart+j:lineEnd], needle)
				if k < 0 {
					break
				}
				line.Match = append(line.Match, [2]int{j + k, j + k + len(needle)})
				j += k + len(needle)
			}
			out = withContext(out, content, lineStart, n, lastShown, line)
			lastShown = n
			shown++
		}
		// On to the next line.
		if end < 0 {
			break
		}
		start = lineEnd + 1
		lineStart, n = start, n+1
	}
	if len(out) > 0 && shown > 0 {
		out = appendAfter(out, content, lastShown)
	}
	return out, more
}

// withContext appends line (number n, starting at lineStart) to out,
// with the line before it unless out has it, and the line after the
// previous match if that is not this one.
func withContext(out []Line, content []byte, lineStart, n, lastShown int, line Line) []Line {
	if lastShown > 0 && lastShown+1 < n {
		out = appendAfter(out, content, lastShown)
	}
	if n > 1 && (len(out) == 0 || out[len(out)-1].N < n-1) {
		prevEnd := lineStart - 1
		prevStart := bytes.LastIndexByte(content[:prevEnd], '\n') + 1
		out = append(out, Line{N: n - 1, Text: string(content[prevStart:prevEnd]), Context: true})
	}
	return append(out, line)
}

// appendAfter appends the line after line n as context, if there is one
// and out does not end with it.
func appendAfter(out []Line, content []byte, n int) []Line {
	if out[len(out)-1].N != n {
		return out
	}
	// Find line n+1 by counting from the start: context is rare enough.
	start, k := 0, 1
	for k <= n {
		i := bytes.IndexByte(content[start:], '\n')
		if i < 0 {
			return out
		}
		start += i + 1
		k++
	}
	if start >= len(content) {
		return out
	}
	end := bytes.IndexByte(content[start:], '\n')
	if end < 0 {
		end = len(content) - start
	}
	return append(out, Line{N: n + 1, Text: string(content[start : start+end]), Context: true})
}
