package gitssh_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/gitproto/gitssh"
)

func TestParseCommand(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, cmd string
		svc       gitproto.Service
		repo      string
		bad       bool
	}{
		{name: "ssh url", cmd: "git-upload-pack '/owner/repo.git'", svc: gitproto.UploadPack, repo: "owner/repo.git"},
		{name: "scp-like", cmd: "git-receive-pack 'owner/repo.git'", svc: gitproto.ReceivePack, repo: "owner/repo.git"},
		{name: "spaced service", cmd: "git upload-archive '/owner/repo'", svc: gitproto.UploadArchive, repo: "owner/repo"},
		{name: "bare word", cmd: "git-upload-pack owner/repo.git", svc: gitproto.UploadPack, repo: "owner/repo.git"},
		{name: "quote inside", cmd: `git-upload-pack '/o/it'\''s.git'`, svc: gitproto.UploadPack, repo: "o/it's.git"},
		{name: "bang inside", cmd: `git-upload-pack '/o/wow'\!'.git'`, svc: gitproto.UploadPack, repo: "o/wow!.git"},
		{name: "no argument", cmd: "git-upload-pack", bad: true},
		{name: "empty path", cmd: "git-upload-pack '/'", bad: true},
		{name: "absolute path", cmd: "git-upload-pack '//etc/passwd'", bad: true},
		{name: "not git", cmd: "rm -rf /", bad: true},
		{name: "other git command", cmd: "git-shell -c x", bad: true},
		{name: "trailing command", cmd: "git-upload-pack 'a.git'; id", bad: true},
		{name: "unterminated", cmd: "git-upload-pack 'a.git", bad: true},
		{name: "bare with metacharacters", cmd: "git-upload-pack a.git;id", bad: true},
		{name: "two arguments", cmd: "git-upload-pack 'a.git' 'b.git'", bad: true},
		{name: "overlong", cmd: "git-upload-pack '" + strings.Repeat("a", 5000) + "'", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc, repo, err := gitssh.ParseCommand(tc.cmd)
			if tc.bad {
				require.ErrorIs(t, err, gitssh.ErrCommand)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.svc, svc)
			assert.Equal(t, tc.repo, repo)
		})
	}
}

// FuzzParseCommand checks that whatever a client sends, an accepted
// command names a known service and a path that is not empty and does
// not start with a slash, and quoting it back as git does parses the same.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"git-upload-pack '/a/b.git'", `git receive-pack 'it'\''s'`, "git-upload-archive x", "git-upload-pack ''"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmd string) {
		svc, repo, err := gitssh.ParseCommand(cmd)
		if err != nil {
			return
		}
		switch svc {
		case gitproto.UploadPack, gitproto.ReceivePack, gitproto.UploadArchive:
		default:
			t.Fatalf("service %q", svc)
		}
		if repo == "" || strings.HasPrefix(repo, "/") {
			t.Fatalf("repository %q from %q", repo, cmd)
		}
		quoted := string(svc) + " '/" + strings.NewReplacer("'", `'\''`, "!", `'\!'`).Replace(repo) + "'"
		svc2, repo2, err := gitssh.ParseCommand(quoted)
		if err != nil || svc2 != svc || repo2 != repo {
			t.Fatalf("%q: quoted back as %q gives %q %q %v", cmd, quoted, svc2, repo2, err)
		}
	})
}
