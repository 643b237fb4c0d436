package gitproto_test

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/forgekit/forgekit/gitproto"
)

func TestCheckRefName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ref  string
		ok   bool
	}{
		{name: "branch", ref: "refs/heads/main", ok: true},
		{name: "nested", ref: "refs/heads/feature/login", ok: true},
		{name: "tag", ref: "refs/tags/v1.0", ok: true},
		{name: "dash start", ref: "refs/heads/-x", ok: true},
		{name: "utf-8", ref: "refs/heads/ünïcødé", ok: true},
		{name: "at sign", ref: "refs/heads/a@b", ok: true},
		{name: "lock", ref: "refs/heads/main.lock"},
		{name: "lock component", ref: "refs/heads/a.lock/b"},
		{name: "hidden", ref: "refs/heads/.hidden"},
		{name: "trailing dot", ref: "refs/heads/x."},
		{name: "at brace", ref: "refs/heads/a@{b"},
		{name: "double dot", ref: "refs/heads/a..b"},
		{name: "one level", ref: "main"},
		{name: "at", ref: "@"},
		{name: "empty", ref: ""},
		{name: "empty component", ref: "refs//heads"},
		{name: "trailing slash", ref: "refs/heads/"},
		{name: "leading slash", ref: "/refs/heads/x"},
		{name: "space", ref: "refs/heads/a b"},
		{name: "tab", ref: "refs/heads/a\tb"},
		{name: "DEL", ref: "refs/heads/a\x7fb"},
		{name: "NUL", ref: "refs/heads/a\x00b"},
		{name: "tilde", ref: "refs/heads/a~1"},
		{name: "caret", ref: "refs/heads/a^"},
		{name: "colon", ref: "refs/heads/a:b"},
		{name: "question", ref: "refs/heads/a?"},
		{name: "star", ref: "refs/heads/*"},
		{name: "bracket", ref: "refs/heads/a[1]"},
		{name: "backslash", ref: `refs/heads/a\b`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := gitproto.CheckRefName(tc.ref)
			if tc.ok {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, gitproto.ErrMalformed)
		})
	}
}

// FuzzCheckRefName holds CheckRefName to git check-ref-format itself.
func FuzzCheckRefName(f *testing.F) {
	for _, s := range []string{"refs/heads/main", "refs/heads/main.lock", "refs/heads/.hidden", "refs/x.", "a@{b", "refs/a..b", "@", "refs//x", "refs/heads/ü", "x/y\x01", "refs/heads/a@b"} {
		f.Add(s)
	}
	git, err := exec.LookPath("git")
	if err != nil {
		f.Skip("git not found on PATH: install the Debian package \"git\"")
	}
	f.Fuzz(func(t *testing.T, ref string) {
		if strings.HasPrefix(ref, "-") || strings.IndexByte(ref, 0) >= 0 || len(ref) > 200 {
			t.Skip() // not expressible as an argument of check-ref-format
		}
		err := exec.Command(git, "check-ref-format", ref).Run()
		var xe *exec.ExitError
		if err != nil && !(errors.As(err, &xe) && xe.ExitCode() == 1) {
			t.Fatalf("git check-ref-format %q: %v", ref, err)
		}
		ours := gitproto.CheckRefName(ref)
		if (err == nil) != (ours == nil) {
			t.Fatalf("%q: git says valid=%v, CheckRefName says %v", ref, err == nil, ours)
		}
	})
}
