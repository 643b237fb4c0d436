package gitproto_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/internal/testenv"
)

// TestServeSession drives sessions with prepared input; the transports
// (gitproto/gitssh) are tested with real clients.
func TestServeSession(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	testenv.BareRepo(t, filepath.Join(root, "o", "r.git"), testenv.RepoOptions{})
	h := &gitproto.Handler{Resolver: gitproto.DirResolver{Root: root}}
	lsRefs := "0014command=ls-refs\n0000" + "0000"
	t.Cleanup(func() { assert.Equal(t, int64(9), h.Stats().Sessions) })
	for _, tc := range []struct {
		name, repo, protocol, stdin string
		svc                         gitproto.Service
		user                        string
		err                         error
		msg                         string
		out                         []string
	}{
		{name: "v2 ls-refs then the end", repo: "/o/r.git", protocol: "version=2", stdin: lsRefs, svc: gitproto.UploadPack,
			out: []string{"version 2\n", "refs/heads/main\n"}},
		{name: "v2 hang-up after the advertisement", repo: "o/r", protocol: "version=2", svc: gitproto.UploadPack, out: []string{"version 2\n"}},
		{name: "v0 advertisement", repo: "o/r.git", stdin: "0000", svc: gitproto.UploadPack, out: []string{" HEAD\x00", "symref=HEAD:refs/heads/main"}},
		{name: "v2 request cut short", repo: "o/r.git", protocol: "version=2", stdin: "0014command=ls-refs\n", svc: gitproto.UploadPack,
			err: gitproto.ErrMalformed, out: []string{"version 2\n"}},
		{name: "missing", repo: "o/nope.git", svc: gitproto.UploadPack, err: gitproto.ErrNotFound, msg: "repository not found"},
		{name: "traversal", repo: "o/../../etc", svc: gitproto.UploadPack, err: gitproto.ErrNotFound, msg: "repository not found"},
		{name: "push without authorizer", repo: "o/r.git", svc: gitproto.ReceivePack, user: "alice", err: gitproto.ErrForbidden, msg: "permission denied"},
		{name: "bad protocol", repo: "o/r.git", protocol: "version=2;id", svc: gitproto.UploadPack, err: gitproto.ErrBadProtocol},
		{name: "unknown service", repo: "o/r.git", svc: "git-foo", msg: "unknown service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out, stderr bytes.Buffer
			err := h.ServeSession(context.Background(), &gitproto.Session{Service: tc.svc, Repo: tc.repo, Protocol: tc.protocol,
				User: tc.user, Stdin: strings.NewReader(tc.stdin), Stdout: &out, Stderr: &stderr})
			if tc.err == nil && tc.msg == "" {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				if tc.err != nil {
					assert.ErrorIs(t, err, tc.err)
				}
				msg, status := gitproto.SessionMessage(err)
				assert.Equal(t, 128, status)
				assert.Contains(t, msg, tc.msg)
			}
			for _, want := range tc.out {
				assert.Contains(t, out.String(), want)
			}
			if len(tc.out) == 0 {
				assert.Empty(t, out.String(), "nothing sent before a refusal")
			}
		})
	}
}
