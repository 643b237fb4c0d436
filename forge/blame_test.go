package forge_test

import (
	"bufio"
	"context"
	"errors"
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

// oracleBlame is git blame --line-porcelain's answer, read by a parser
// of its own: for every line, "commit orig-line path\ttext".
func oracleBlame(t *testing.T, dir, commit, p string) []string {
	out := testenv.Run(t, dir, "blame", "--line-porcelain", commit, "--", p)
	var lines []string
	var head, file string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		s := sc.Text()
		switch {
		case strings.HasPrefix(s, "\t"):
			f := strings.Fields(head)
			lines = append(lines, f[0]+" "+f[1]+" "+file+"\t"+s[1:])
			head = ""
		case head == "":
			head = s
		case strings.HasPrefix(s, "filename "):
			file = strings.TrimPrefix(s, "filename ")
			if u, err := strconv.Unquote(file); err == nil {
				file = u
			}
		}
	}
	return lines
}

func TestBlameAgainstGit(t *testing.T) {
	t.Parallel()
	dir, commits := diffRepo(t)
	b, err := forge.Browse(dir)
	require.NoError(t, err)
	ctx := context.Background()
	renamed := false
	for _, c := range commits {
		for _, p := range strings.Split(strings.TrimSpace(testenv.Run(t, dir, "ls-tree", "-r", "-z", "--name-only", c)), "\x00") {
			if p == "" {
				continue
			}
			bl, err := b.Blame(ctx, c, p, 0)
			if errors.Is(err, forge.ErrTooLarge) {
				assert.Contains(t, p, "bin.dat", "only the binary file is refused")
				continue
			}
			require.NoError(t, err, "%s %s", c, p)
			want := oracleBlame(t, dir, c, p)
			var got []string
			for _, l := range bl.Lines {
				got = append(got, l.Commit+" "+strconv.Itoa(l.OrigLine)+" "+l.Path+"\t"+l.Text)
				require.Contains(t, bl.Commits, l.Commit)
				if l.Path != p {
					renamed = true
				}
			}
			require.Equal(t, want, got, "blame of %s at %s", p, c)
			for _, bc := range bl.Commits {
				assert.NotEmpty(t, bc.Author)
				assert.False(t, bc.When.IsZero())
			}
		}
	}
	assert.True(t, renamed, "some lines come from a file under its old name")
}

func TestBlameErrors(t *testing.T) {
	t.Parallel()
	dir, commits := diffRepo(t)
	b, err := forge.Browse(dir)
	require.NoError(t, err)
	head := commits[len(commits)-1]
	ctx := context.Background()
	_, err = b.Blame(ctx, head, "no/such/file", 0)
	assert.ErrorIs(t, err, forge.ErrNotFound)
	_, err = b.Blame(ctx, head, "dir", 0)
	assert.ErrorIs(t, err, forge.ErrNotFound, "a directory is no file")
	_, err = b.Blame(ctx, head, "big.txt", 1000)
	assert.ErrorIs(t, err, forge.ErrTooLarge)
	_, err = b.Blame(ctx, head, "bin.dat", 0)
	assert.ErrorIs(t, err, forge.ErrTooLarge)
}

func TestParseBlameRejects(t *testing.T) {
	t.Parallel()
	sha := strings.Repeat("a", 40)
	for _, tc := range []struct{ name, in string }{
		{"no header", "\tline\n"},
		{"short header", sha + " 1\n\tx\n"},
		{"not a sha", strings.Repeat("g", 40) + " 1 1 1\n\tx\n"},
		{"line numbers out of order", sha + " 1 2 1\n\tx\n"},
		{"zero orig", sha + " 0 1 1\n\tx\n"},
		{"truncated", sha + " 1 1 1\nauthor A\n"},
		{"bad time", sha + " 1 1 1\nauthor-time soon\n\tx\n"},
		{"bad previous", sha + " 1 1 1\nprevious nope\n\tx\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := forge.ParseBlame(strings.NewReader(tc.in))
			assert.Error(t, err)
		})
	}
}

func FuzzParseBlame(f *testing.F) {
	sha := strings.Repeat("b", 40)
	f.Add(sha + " 1 1 2\nauthor A\nauthor-mail <a@x>\nauthor-time 1700000000\nsummary s\nboundary\nfilename a.txt\n\tone\n" + sha + " 2 2\nfilename a.txt\n\ttwo\n")
	f.Add(sha + " 3 1 1\nprevious " + sha + " \"q\\303\\251.txt\"\nfilename \"\\tx\"\n\tline\n")
	if seeds, err := filepath.Glob("testdata/blame/*porcelain"); err == nil {
		for _, s := range seeds {
			b, err := os.ReadFile(s)
			require.NoError(f, err)
			f.Add(string(b))
		}
	}
	f.Fuzz(func(t *testing.T, in string) {
		bl, err := forge.ParseBlame(strings.NewReader(in))
		if err != nil {
			return
		}
		for i, l := range bl.Lines {
			if bl.Commits[l.Commit] == nil || l.OrigLine < 1 {
				t.Fatalf("line %d: %+v", i+1, l)
			}
		}
	})
}
