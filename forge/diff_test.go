package forge_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/internal/testenv"
)

// diffRepo makes a bare repository whose history has every kind of
// change git diff shows: additions, deletions, edits in several hunks,
// renames with edits, copies, mode changes, binary files, files without
// a final newline, names that git quotes, a merge and a root commit. It
// returns the repository and its commits, oldest first.
func diffRepo(t *testing.T) (string, []string) {
	testenv.Git(t)
	work := t.TempDir()
	testenv.Run(t, "", "init", "-q", "-b", "main", work)
	write := func(name, content string) {
		p := filepath.Join(work, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	lines := func(n int, tag string) string {
		var b strings.Builder
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&b, "line %d of %s\n", i, tag)
		}
		return b.String()
	}
	commit := func(msg string) {
		testenv.Run(t, work, "add", "-A")
		testenv.Run(t, work, "commit", "-q", "--allow-empty", "-m", msg)
	}
	write("a.txt", lines(60, "a"))
	write("r.txt", lines(30, "r"))
	write("c.txt", lines(30, "c"))
	write("script.sh", "#!/bin/sh\necho hi\n")
	write("bin.dat", "\x00\x01\x02binary")
	write("gone.txt", "bye\n")
	write("ünïcødé.txt", "u\n")
	write("with \"quotes\" and\\backslash.txt", "q\n")
	write("dir/nested/deep.go", "package deep\n\nfunc F() int { return 1 }\n")
	commit("root")

	a := strings.Replace(lines(60, "a"), "line 3 of a\n", "line three of a\n", 1)
	a = strings.Replace(a, "line 50 of a\n", "line fifty of a\nan extra line\n", 1)
	write("a.txt", a)
	require.NoError(t, os.MkdirAll(filepath.Join(work, "moved"), 0o755))
	testenv.Run(t, work, "mv", "r.txt", "moved/r.txt")
	write("moved/r.txt", strings.Replace(lines(30, "r"), "line 30 of r\n", "the end of r\n", 1))
	write("c.txt", lines(30, "c")+"one more\n")
	write("c-copy.txt", lines(30, "c"))
	require.NoError(t, os.Chmod(filepath.Join(work, "script.sh"), 0o755))
	write("bin.dat", "\x00\x01\x03binary, changed")
	require.NoError(t, os.Remove(filepath.Join(work, "gone.txt")))
	write("nonl.txt", "no newline at the end")
	write("ünïcødé.txt", "u\nv\n")
	write("dir/nested/deep.go", "package deep\n\n// F is one.\nfunc F() int { return 1 }\n")
	commit("everything at once")

	testenv.Run(t, work, "checkout", "-q", "-b", "side", "HEAD~1")
	write("side.txt", "from the side\n")
	write("a.txt", "side's a\n"+lines(60, "a"))
	commit("side work")
	testenv.Run(t, work, "checkout", "-q", "main")
	write("nonl.txt", "no newline at the end, edited")
	commit("main work")
	testenv.Run(t, work, "merge", "-q", "--no-edit", "side")
	write("big.txt", lines(5000, "big"))
	commit("a large file")
	commit("empty")

	dir := filepath.Join(t.TempDir(), "r.git")
	testenv.Run(t, "", "clone", "-q", "--bare", work, dir)
	return dir, strings.Fields(testenv.Run(t, dir, "rev-list", "--reverse", "--topo-order", "main"))
}

// oracleFiles is what git says of commit's files against its first
// parent: "STATUS\tpath[\tpath]" and "added\tdeleted" by file.
func oracleDiff(t *testing.T, dir string, commit, parent string) (names, counts []string, patch string) {
	base := []string{"diff-tree", "-r", "-M", "-C", "--no-commit-id"}
	if parent == "" {
		base = append(base, "--root", commit)
	} else {
		base = append(base, parent, commit)
	}
	run := func(extra ...string) string {
		return testenv.Run(t, dir, append(append([]string{"-c", "core.quotePath=false"}, base[:len(base)-2]...), append(extra, base[len(base)-2:]...)...)...)
	}
	recs := strings.Split(strings.TrimSuffix(run("--name-status", "-z"), "\x00"), "\x00")
	for i := 0; i < len(recs); i++ {
		if recs[i] == "" {
			continue
		}
		// "STATUS" then one path, or two for renames and copies.
		st := recs[i][:1]
		if score, err := strconv.Atoi(recs[i][1:]); err == nil {
			st += strconv.Itoa(score) // R096 → R96
		}
		n := 1
		if st[0] == 'R' || st[0] == 'C' {
			n = 2
		}
		names = append(names, st+"\t"+strings.Join(recs[i+1:i+1+n], "\t"))
		i += n
	}
	for _, l := range strings.Split(strings.TrimSpace(run("--numstat")), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			counts = append(counts, f[0]+"\t"+f[1])
		}
	}
	return names, counts, run("-p")
}

// render writes a file's hunks as git prints them.
func render(f forge.FileDiff) string {
	var b strings.Builder
	for _, h := range f.Hunks {
		b.WriteString(h.Header + "\n")
		for _, l := range h.Lines {
			b.WriteString(string(l.Kind) + l.Text + "\n")
		}
	}
	return b.String()
}

// hunksOf splits git's patch into each file's hunk text.
func hunksOf(patch string) []string {
	var out []string
	for _, sec := range strings.Split(patch, "\ndiff --git ")[0:] {
		i := strings.Index(sec, "\n@@ ")
		if strings.HasPrefix(sec, "@@ ") {
			i = -1
		}
		switch {
		case i >= 0:
			out = append(out, strings.TrimSuffix(sec[i+1:], "\n")+"\n")
		case sec == "":
			continue
		default:
			out = append(out, "")
		}
	}
	return out
}

func TestCommitDiffAgainstGit(t *testing.T) {
	t.Parallel()
	dir, commits := diffRepo(t)
	b, err := forge.Browse(dir)
	require.NoError(t, err)
	kinds := map[string]bool{}
	shown := map[string][]string{}
	for _, c := range commits {
		checkDiff(t, b, dir, c, kinds, shown)
	}
	for _, k := range []string{forge.StatusAdded, forge.StatusDeleted, forge.StatusModified, forge.StatusRenamed, forge.StatusCopied, "binary", "mode"} {
		assert.True(t, kinds[k], "the history has a change of kind %s", k)
	}
}

// TestCommitDiffOnRealHistory holds Commit, Patch and RawDiff to git on
// a real repository's commits (every 2000th, and merges), when
// FORGEKIT_BENCH_REAL names one (see ../shared/README.md); CI has none.
func TestCommitDiffOnRealHistory(t *testing.T) {
	dir := os.Getenv("FORGEKIT_BENCH_REAL")
	if dir == "" {
		t.Skip("FORGEKIT_BENCH_REAL is not set")
	}
	b, err := forge.Browse(dir)
	require.NoError(t, err)
	all := strings.Fields(testenv.Run(t, dir, "rev-list", "HEAD"))
	merges := strings.Fields(testenv.Run(t, dir, "rev-list", "--merges", "-n", "20", "HEAD"))
	kinds := map[string]bool{}
	for i := 0; i < len(all); i += 2000 {
		checkDiff(t, b, dir, all[i], kinds, nil)
	}
	for _, c := range merges {
		checkDiff(t, b, dir, c, kinds, nil)
	}
	t.Logf("checked %d commits; kinds of change seen: %v", len(all)/2000+len(merges), kinds)
}

// checkDiff compares Commit, Patch and RawDiff of c with git: the files,
// their statuses and counts, every hunk, the line numbers (when shown is
// not nil, which caches file contents) and the raw forms byte for byte.
func checkDiff(t *testing.T, b *forge.Browser, dir, c string, kinds map[string]bool, shown map[string][]string) {
	t.Helper()
	ctx := context.Background()
	d, err := b.Commit(ctx, c, forge.DiffLimits{Files: 1 << 20, FileLines: 1 << 20, Lines: 1 << 30, Bytes: 1 << 30})
	require.NoError(t, err, c)
	parent := ""
	if len(d.Parents) > 0 {
		parent = d.Parents[0]
	}
	names, counts, patch := oracleDiff(t, dir, c, parent)
	var got, gotCounts []string
	added, deleted := 0, 0
	for _, f := range d.Files {
		s := map[string]string{forge.StatusAdded: "A", forge.StatusDeleted: "D", forge.StatusModified: "M", forge.StatusRenamed: "R", forge.StatusCopied: "C"}[f.Status]
		kinds[f.Status] = true
		switch f.Status {
		case forge.StatusRenamed, forge.StatusCopied:
			s += strconv.Itoa(f.Similarity) + "\t" + f.From + "\t" + f.To
		default:
			s += "\t" + f.Path()
		}
		got = append(got, s)
		if f.Binary {
			gotCounts = append(gotCounts, "-\t-")
			kinds["binary"] = true
		} else {
			gotCounts = append(gotCounts, fmt.Sprintf("%d\t%d", f.Added, f.Deleted))
		}
		if f.ModeChanged() {
			kinds["mode"] = true
		}
		added += f.Added
		deleted += f.Deleted
		assert.False(t, f.Truncated)
	}
	assert.Equal(t, names, got, "files of %s", c)
	assert.Equal(t, counts, gotCounts, "counts of %s", c)
	assert.Equal(t, added, d.Added)
	assert.Equal(t, deleted, d.Deleted)
	assert.Equal(t, len(d.Parents) > 1, d.Merge())

	want := hunksOf(patch)
	require.Len(t, want, len(d.Files), "patches of %s", c)
	for i, f := range d.Files {
		assert.Equal(t, want[i], render(f), "patch of %s in %s", f.Path(), c)
		if shown == nil {
			continue
		}
		// Line numbers point at the lines in each version.
		for _, h := range f.Hunks {
			for _, l := range h.Lines {
				if l.New > 0 {
					assert.Equal(t, l.Text, lineAt(t, shown, dir, c, f.To, l.New), "%s:%s:%d", c, f.To, l.New)
				}
				if l.Old > 0 {
					assert.Equal(t, l.Text, lineAt(t, shown, dir, parent, f.From, l.Old), "%s:%s:%d", parent, f.From, l.Old)
				}
			}
		}
	}

	// The raw forms, byte for byte.
	var pb, db bytes.Buffer
	require.NoError(t, b.Patch(ctx, c, &pb))
	require.NoError(t, b.RawDiff(ctx, c, &db))
	switch {
	case len(d.Parents) == 1:
		assert.Equal(t, testenv.Run(t, dir, "format-patch", "-1", "--stdout", c), pb.String(), "patch of %s", c)
		assert.Equal(t, testenv.Run(t, dir, "diff", c+"^!"), db.String(), "diff of %s", c)
	case len(d.Parents) == 0:
		assert.Equal(t, testenv.Run(t, dir, "format-patch", "-1", "--stdout", c), pb.String(), "patch of root %s", c)
		assert.Equal(t, testenv.Run(t, dir, "diff", "4b825dc642cb6eb9a060e54bf8d69288fbee4904", c), db.String(), "diff of root %s", c)
	default:
		assert.Equal(t, testenv.Run(t, dir, "diff", c+"^1", c), db.String(), "diff of merge %s", c)
		assert.Contains(t, pb.String(), "Subject: [PATCH] Merge")
	}
}

// lineAt is line n (from 1) of path at commit, files cached in shown.
func lineAt(t *testing.T, shown map[string][]string, dir, commit, path string, n int) string {
	key := dir + "\x00" + commit + ":" + path
	ls, ok := shown[key]
	if !ok {
		ls = strings.Split(testenv.Run(t, dir, "show", commit+":"+path), "\n")
		shown[key] = ls
	}
	if n > len(ls) {
		return fmt.Sprintf("<no line %d>", n)
	}
	return ls[n-1]
}

func TestCommitDiffLimits(t *testing.T) {
	t.Parallel()
	dir, commits := diffRepo(t)
	b, err := forge.Browse(dir)
	require.NoError(t, err)
	ctx := context.Background()
	everything := commits[1] // the commit with every kind of change
	large := commits[len(commits)-2]
	empty := commits[len(commits)-1]

	d, err := b.Commit(ctx, large, forge.DiffLimits{})
	require.NoError(t, err)
	require.Len(t, d.Files, 1)
	assert.True(t, d.Truncated)
	assert.True(t, d.Files[0].Truncated)
	assert.Equal(t, 5000, d.Files[0].Added, "counts cover what is not shown")
	shown := 0
	for _, h := range d.Files[0].Hunks {
		shown += len(h.Lines)
	}
	assert.Equal(t, forge.DefaultDiffFileLines, shown)

	d, err = b.Commit(ctx, everything, forge.DiffLimits{Files: 2})
	require.NoError(t, err)
	assert.True(t, d.Truncated)
	assert.Greater(t, len(d.Files), 2, "every file is listed")
	for i, f := range d.Files {
		assert.Equal(t, i >= 2, f.Truncated, f.Path())
		assert.NotEmpty(t, f.Status, "status of %s even when not shown", f.Path())
	}

	d, err = b.Commit(ctx, everything, forge.DiffLimits{Lines: 5})
	require.NoError(t, err)
	assert.True(t, d.Truncated)
	total := 0
	for _, f := range d.Files {
		for _, h := range f.Hunks {
			total += len(h.Lines)
		}
	}
	assert.LessOrEqual(t, total, 5)

	d, err = b.Commit(ctx, empty, forge.DiffLimits{})
	require.NoError(t, err)
	assert.Empty(t, d.Files)
	assert.False(t, d.Truncated)

	_, err = b.Commit(ctx, strings.Repeat("0", 40), forge.DiffLimits{})
	assert.ErrorIs(t, err, forge.ErrNotFound)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = b.Commit(cctx, everything, forge.DiffLimits{})
	assert.Error(t, err, "a cancelled context stops git")
}
