package forge

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/forgekit/forgekit/slowlog"
	"github.com/forgekit/forgekit/timebox"
)

// Defaults of DiffLimits. GitHub's are of the same order: a page of a
// few thousand lines stays readable and its HTML bounded; the rest is
// one click away in the raw patch.
const (
	DefaultDiffFiles     = 300
	DefaultDiffFileLines = 3000
	DefaultDiffLines     = 20000
	DefaultDiffBytes     = 2 << 20
)

// DiffLimits bound what Commit keeps of a diff. Files past the limits
// are listed with their counts, without their patch.
type DiffLimits struct {
	// Files is how many files keep their patch. If zero,
	// DefaultDiffFiles.
	Files int
	// FileLines bounds the patch lines of one file. If zero,
	// DefaultDiffFileLines.
	FileLines int
	// Lines bounds the patch lines of all files. If zero,
	// DefaultDiffLines.
	Lines int
	// Bytes bounds the patch text of all files. If zero,
	// DefaultDiffBytes.
	Bytes int
}

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// The statuses of a FileDiff.
const (
	StatusAdded    = "added"
	StatusDeleted  = "deleted"
	StatusModified = "modified"
	StatusRenamed  = "renamed"
	StatusCopied   = "copied"
)

// FileDiff is one file of a commit's diff, as git diff shows it.
type FileDiff struct {
	From, To         string // paths; From empty for an addition, To empty for a deletion
	Status           string // StatusAdded, StatusDeleted, ...
	OldMode, NewMode string // octal modes, as git prints them; differ on a mode change
	Similarity       int    // percent, for renames and copies
	Binary           bool
	Added, Deleted   int // lines (0 for binary files)
	Hunks            []Hunk
	// Truncated is set when the file's patch was cut or left out for
	// the limits.
	Truncated bool
}

// Path is the file's path after the change (before it, for a deletion).
func (f *FileDiff) Path() string {
	if f.To != "" {
		return f.To
	}
	return f.From
}

// ModeChanged reports whether the change includes a mode change of an
// existing file.
func (f *FileDiff) ModeChanged() bool {
	return f.OldMode != "" && f.NewMode != "" && f.OldMode != f.NewMode
}

// Hunk is one @@ section of a patch.
type Hunk struct {
	Header             string // the whole @@ line
	OldStart, NewStart int
	Lines              []DiffLine
}

// DiffLine is one line of a hunk.
type DiffLine struct {
	Kind     byte   // ' ', '+', '-', or '\\' for "\ No newline at end of file"
	Old, New int    // line numbers; 0 on the side that does not have the line
	Text     string // without the kind and the newline
}

// CommitDiff is a commit with its changes against its first parent (the
// empty tree for a root commit), as git diff -M -C shows them: renames
// and copies detected, mode changes, binary files named.
type CommitDiff struct {
	*CommitInfo
	Message        string
	Parents        []string
	Files          []FileDiff
	Added, Deleted int // lines, over every file (shown or not)
	// Truncated is set when some file's patch was cut or left out.
	Truncated bool
}

// Merge reports whether the commit is a merge, whose diff is against its
// first parent only.
func (d *CommitDiff) Merge() bool { return len(d.Parents) > 1 }

// git is the git binary of browsing's git runs.
func (b *Browser) git() string {
	if b.Git != "" {
		return b.Git
	}
	return "git"
}

// command is a git run in the repository, killed with its process group
// when ctx ends, with neither the user's nor the system's configuration,
// so that its output is git's own (byte-identical to git run with a
// clean configuration, as a test oracle is).
func (b *Browser) command(ctx context.Context, args ...string) *timebox.Cmd {
	cmd := timebox.Command(ctx, b.git(), args...)
	cmd.OnExit = func(d time.Duration) { slowlog.Count(ctx, slowlog.GitRun, d) }
	cmd.Dir = b.dir
	cmd.Env = append(cleanGitEnv(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "LC_ALL=C")
	cmd.Grace = time.Second
	return cmd
}

// cleanGitEnv is the environment without the GIT_* variables of the
// serving process (a server started from a hook must not pass its
// GIT_DIR on).
func cleanGitEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			env = append(env, kv)
		}
	}
	return env
}

// Commit returns commit and its diff against its first parent, within
// lim. It runs git diff-tree: the diff is git's own (its algorithm, its
// rename and copy detection), which no reimplementation matches line for
// line, and a commit page is cached forever once made.
func (b *Browser) Commit(ctx context.Context, commit string, lim DiffLimits) (*CommitDiff, error) {
	c, err := b.readCommit(ctx, commit)
	if err != nil {
		return nil, err
	}
	d := &CommitDiff{CommitInfo: c.CommitInfo, Message: c.Message}
	for _, h := range c.Parents {
		d.Parents = append(d.Parents, h.String())
	}
	from := ""
	if len(d.Parents) > 0 {
		from = d.Parents[0]
	}
	if err := b.diffTree(ctx, d, lim, from, c.Hash); err != nil {
		return nil, err
	}
	return d, nil
}

// diffTree fills d's files with the diff from commit from (the empty
// tree if "") to commit to, within lim, as git diff-tree -M -C finds it.
func (b *Browser) diffTree(ctx context.Context, d *CommitDiff, lim DiffLimits, from, to string) error {
	args := []string{"diff-tree", "-r", "-p", "-M", "-C", "--raw", "--numstat", "-z", "--no-commit-id", "--no-color", "--no-ext-diff", "--no-textconv"}
	if from != "" {
		args = append(args, from, to)
	} else {
		args = append(args, "--root", to)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := b.command(ctx, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("forge: git diff-tree: %w", err)
	}
	p := &diffParser{r: bufio.NewReaderSize(out, 64<<10), d: d,
		files: orDefault(lim.Files, DefaultDiffFiles), fileLines: orDefault(lim.FileLines, DefaultDiffFileLines),
		lines: orDefault(lim.Lines, DefaultDiffLines), bytes: orDefault(lim.Bytes, DefaultDiffBytes)}
	perr := p.parse()
	if perr == errDiffFull {
		cancel() // the rest is not shown; stop git
		io.Copy(io.Discard, out)
	}
	werr := cmd.Wait()
	switch {
	case perr != nil && perr != errDiffFull:
		return fmt.Errorf("forge: reading git diff-tree: %w", perr)
	case ctx.Err() != nil && perr != errDiffFull:
		return ctx.Err()
	case werr != nil && perr != errDiffFull:
		return fmt.Errorf("forge: git diff-tree: %w: %s", werr, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// errDiffFull stops the parse once the limits are reached.
var errDiffFull = errors.New("diff limits reached")

// diffParser reads git diff-tree --raw --numstat -z -p: the raw records
// (status and modes; names unquoted, NUL-separated), the numstat records
// (line counts) of the same files in the same order, an empty record,
// then the patches, again in that order.
type diffParser struct {
	r                              *bufio.Reader
	d                              *CommitDiff
	files, fileLines, lines, bytes int // limits
	usedLines, usedBytes           int
}

func (p *diffParser) field() (string, error) {
	s, err := p.r.ReadString(0)
	if err != nil {
		if err == io.EOF && s == "" {
			return "", io.EOF
		}
		return "", io.ErrUnexpectedEOF
	}
	return s[:len(s)-1], nil
}

var rawStatus = map[byte]string{'A': StatusAdded, 'D': StatusDeleted, 'M': StatusModified, 'T': StatusModified, 'R': StatusRenamed, 'C': StatusCopied}

func (p *diffParser) parse() error {
	if err := p.parseRecords(); err != nil {
		if err == io.EOF {
			return nil // no change at all
		}
		return err
	}
	return p.parsePatches()
}

func (p *diffParser) parseRecords() error {
	n := 0 // numstat records read
	for {
		rec, err := p.field()
		if err != nil {
			return err
		}
		if rec == "" {
			if n != len(p.d.Files) {
				return fmt.Errorf("%d numstat records for %d files", n, len(p.d.Files))
			}
			return nil
		}
		if rec[0] == ':' {
			// ":OLDMODE NEWMODE OLDID NEWID STATUS" then one path, or
			// two for renames and copies.
			fs := strings.Fields(rec[1:])
			if len(fs) != 5 || fs[4] == "" {
				return fmt.Errorf("bad raw record %q", truncateString(rec, 80))
			}
			st, ok := rawStatus[fs[4][0]]
			if !ok {
				return fmt.Errorf("unknown status in %q", truncateString(rec, 80))
			}
			f := FileDiff{Status: st, OldMode: fs[0], NewMode: fs[1]}
			f.Similarity, _ = strconv.Atoi(fs[4][1:])
			if f.From, err = p.field(); err != nil {
				return err
			}
			f.To = f.From
			switch st {
			case StatusRenamed, StatusCopied:
				if f.To, err = p.field(); err != nil {
					return err
				}
			case StatusAdded:
				f.From, f.OldMode = "", ""
			case StatusDeleted:
				f.To, f.NewMode = "", ""
			}
			p.d.Files = append(p.d.Files, f)
			continue
		}
		// "ADDED\tDELETED\tPATH", or "ADDED\tDELETED\t" and two paths;
		// "-\t-" for binary files.
		parts := strings.SplitN(rec, "\t", 3)
		if len(parts) != 3 || n >= len(p.d.Files) {
			return fmt.Errorf("bad numstat record %q", truncateString(rec, 80))
		}
		if parts[2] == "" {
			for range 2 {
				if _, err := p.field(); err != nil {
					return err
				}
			}
		}
		f := &p.d.Files[n]
		n++
		if parts[0] == "-" {
			f.Binary = true
		} else {
			f.Added, _ = strconv.Atoi(parts[0])
			f.Deleted, _ = strconv.Atoi(parts[1])
		}
		p.d.Added += f.Added
		p.d.Deleted += f.Deleted
	}
}

// cut marks the files from i on as truncated.
func (p *diffParser) cut(i int) error {
	for j := max(i, 0); j < len(p.d.Files); j++ {
		p.d.Files[j].Truncated = true
	}
	p.d.Truncated = true
	return errDiffFull
}

func (p *diffParser) parsePatches() error {
	i := -1
	var f *FileDiff
	var h *Hunk
	shown := 0 // lines of f kept
	oldLine, newLine := 0, 0
	for {
		line, err := p.r.ReadString('\n')
		if err == io.EOF && line == "" {
			if i != len(p.d.Files)-1 {
				return fmt.Errorf("%d patches for %d files", i+1, len(p.d.Files))
			}
			return nil
		}
		if err != nil && err != io.EOF {
			return err
		}
		line = strings.TrimSuffix(line, "\n")
		if strings.HasPrefix(line, "diff --git ") {
			if i++; i >= len(p.d.Files) {
				return errors.New("more patches than files")
			}
			if i >= p.files {
				return p.cut(i)
			}
			f, h, shown = &p.d.Files[i], nil, 0
			continue
		}
		if f == nil {
			return fmt.Errorf("patch text before the first file: %q", truncateString(line, 80))
		}
		if strings.HasPrefix(line, "@@ ") {
			h = nil
			if f.Truncated {
				continue
			}
			os, ns, ok := parseHunkHeader(line)
			if !ok {
				return fmt.Errorf("bad hunk header %q", truncateString(line, 80))
			}
			f.Hunks = append(f.Hunks, Hunk{Header: line, OldStart: os, NewStart: ns})
			h = &f.Hunks[len(f.Hunks)-1]
			oldLine, newLine = os, ns
			continue
		}
		if h == nil {
			continue // extended headers, ---, +++, "Binary files ... differ"
		}
		if shown >= p.fileLines {
			f.Truncated, p.d.Truncated, h = true, true, nil
			continue
		}
		shown++
		p.usedLines++
		p.usedBytes += len(line) + 1
		if p.usedLines > p.lines || p.usedBytes > p.bytes {
			return p.cut(i)
		}
		dl := DiffLine{Kind: ' '}
		if line != "" {
			dl.Kind, dl.Text = line[0], line[1:]
		}
		switch dl.Kind {
		case ' ':
			dl.Old, dl.New = oldLine, newLine
			oldLine++
			newLine++
		case '-':
			dl.Old = oldLine
			oldLine++
		case '+':
			dl.New = newLine
			newLine++
		case '\\':
		default:
			return fmt.Errorf("bad patch line %q", truncateString(line, 80))
		}
		h.Lines = append(h.Lines, dl)
	}
}

// parseHunkHeader reads the starts of "@@ -OLD[,N] +NEW[,M] @@ ...".
func parseHunkHeader(s string) (oldStart, newStart int, ok bool) {
	rest, ok := strings.CutPrefix(s, "@@ -")
	if !ok {
		return 0, 0, false
	}
	o, rest, ok := strings.Cut(rest, " +")
	if !ok {
		return 0, 0, false
	}
	n, _, ok := strings.Cut(rest, " @@")
	if !ok {
		return 0, 0, false
	}
	o, _, _ = strings.Cut(o, ",")
	n, _, _ = strings.Cut(n, ",")
	oi, err1 := strconv.Atoi(o)
	ni, err2 := strconv.Atoi(n)
	return oi, ni, err1 == nil && err2 == nil
}

func truncateString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Patch writes the commit as git format-patch -1 --stdout writes it, an
// email with the patch (byte for byte what the same git prints). A merge,
// which format-patch does not show, is written in the same form with its
// diff against the first parent.
func (b *Browser) Patch(ctx context.Context, commit string, w io.Writer) error {
	c, err := b.readCommit(ctx, commit)
	if err != nil {
		return err
	}
	args := []string{"format-patch", "-1", "--stdout", c.Hash}
	if len(c.Parents) > 1 {
		args = []string{"show", "--format=email", "--patch-with-stat", "--diff-merges=first-parent", c.Hash}
	}
	return b.stream(ctx, w, args...)
}

// RawDiff writes the commit's diff as git diff COMMIT^! writes it (for a
// merge, against its first parent; for a root commit, against the empty
// tree).
func (b *Browser) RawDiff(ctx context.Context, commit string, w io.Writer) error {
	c, err := b.readCommit(ctx, commit)
	if err != nil {
		return err
	}
	// Against the first parent, or the empty tree in the repository's
	// hash.
	from := emptyTree(len(c.Hash))
	if len(c.Parents) > 0 {
		from = c.Parents[0].String()
	}
	return b.stream(ctx, w, "diff", from, c.Hash)
}

func emptyTree(hexLen int) string {
	if hexLen == 64 {
		return "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321"
	}
	return "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
}

// stream runs git and copies its output to w.
func (b *Browser) stream(ctx context.Context, w io.Writer, args ...string) error {
	cmd := b.command(ctx, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("forge: git %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
