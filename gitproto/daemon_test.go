package gitproto_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/internal/testenv"
)

// startDaemon serves root's repositories over git:// on loopback, hiding
// the ones whose name starts with "private".
func startDaemon(t *testing.T, root string) (*gitproto.Daemon, string) {
	t.Helper()
	h := &gitproto.Handler{
		Resolver:    gitproto.DirResolver{Root: root},
		AdvertCache: &gitproto.AdvertCache{},
		Admission:   &gitproto.Admission{},
		SessionAuthorizer: gitproto.SessionAuthorizerFunc(func(ctx context.Context, user, repo string, op gitproto.Op) (context.Context, string, error) {
			if user != "" {
				t.Errorf("git:// authenticated %q", user)
			}
			if strings.HasPrefix(repo, "private") || op != gitproto.Read {
				return nil, "", gitproto.ErrNotFound
			}
			return nil, "", nil
		}),
	}
	d := &gitproto.Daemon{Handler: h, MaxConnsPerAddr: 8}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- d.Serve(l) }()
	t.Cleanup(func() {
		require.NoError(t, d.Close())
		assert.ErrorIs(t, <-done, gitproto.ErrDaemonClosed)
	})
	return d, "git://" + l.Addr().String()
}

func TestDaemon(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	testenv.BareRepo(t, filepath.Join(root, "pub.git"), testenv.RepoOptions{Commits: 10, Tags: 1})
	testenv.BareRepo(t, filepath.Join(root, "private.git"), testenv.RepoOptions{})
	d, base := startDaemon(t, root)
	want := testenv.Run(t, filepath.Join(root, "pub.git"), "rev-parse", "main")

	for _, v := range []string{"0", "1", "2"} {
		t.Run("clone v"+v, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "c")
			testenv.Run(t, "", "-c", "protocol.version="+v, "clone", "-q", base+"/pub.git", dst)
			assert.Equal(t, want, testenv.Run(t, dst, "rev-parse", "HEAD"))
			testenv.Run(t, dst, "fsck", "--no-progress")
			testenv.Run(t, dst, "-c", "protocol.version="+v, "fetch", "-q", "--tags")
		})
	}
	out := testenv.Run(t, "", "archive", "--remote="+base+"/pub.git", "--format=tar", "main", "README.md")
	assert.Contains(t, out, "# test repository")

	work := t.TempDir()
	testenv.Run(t, work, "init", "-q", "-b", "main")
	testenv.Run(t, work, "commit", "-q", "--allow-empty", "-m", "x")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing", []string{"clone", "-q", base + "/nope.git", filepath.Join(work, "a")}, "repository not found"},
		{"hidden", []string{"clone", "-q", base + "/private.git", filepath.Join(work, "b")}, "repository not found"},
		{"push", []string{"push", base + "/pub.git", "main"}, "not enabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testenv.RunErr(t, testenv.Cmd{Dir: work, Args: tc.args})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "remote error")
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	st := d.Stats()
	assert.Positive(t, st.Sessions)
	assert.Positive(t, st.Rejected, "the push")
}

// TestDaemonBadInput: what a client that is not git sends is answered
// with an ERR packet or a closed connection, never served.
func TestDaemonBadInput(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	testenv.BareRepo(t, filepath.Join(root, "pub.git"), testenv.RepoOptions{})
	d, base := startDaemon(t, root)
	addr := strings.TrimPrefix(base, "git://")
	for _, tc := range []struct{ name, send, want string }{
		{"http", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", ""},
		{"flush", "0000", ""},
		{"unknown service", pkt("git-frob /pub.git\x00host=x\x00"), "ERR unknown service"},
		{"no repository", pkt("git-upload-pack\x00"), "ERR malformed"},
		{"traversal", pkt("git-upload-pack /../etc\x00"), "ERR repository not found"},
		{"bad version", pkt("git-upload-pack /pub.git\x00host=x\x00\x00version=2;id\x00"), "ERR invalid Git-Protocol"},
		{"truncated", "00ffgit-upload-pack /pub.git", ""},
		{"host too long", pkt("git-upload-pack /pub.git\x00host=" + strings.Repeat("h", 300) + "\x00"), "ERR malformed request: invalid host="},
		{"host with a slash", pkt("git-upload-pack /pub.git\x00host=a/b\x00"), "ERR malformed request: invalid host="},
		{"bad length", "zzzzgit-upload-pack /pub.git\x00", ""},
		{"length past the limit", "fff1git-upload-pack /pub.git\x00", ""},
		{"length below the header", "0002", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			io.WriteString(c, tc.send)
			if tc.name == "truncated" {
				c.(*net.TCPConn).CloseWrite()
			}
			got, _ := io.ReadAll(bufio.NewReader(c))
			if tc.want == "" {
				assert.Empty(t, got)
			} else {
				assert.Contains(t, string(got), tc.want)
			}
		})
	}
	assert.Zero(t, d.Stats().Sessions-1, "only the traversal reached the handler, which refused it")
}

func FuzzParseDaemonRequest(f *testing.F) {
	for _, s := range []string{
		"git-upload-pack /a/b.git\x00host=example.com\x00",
		"git-upload-pack /a.git\x00host=h:9418\x00\x00version=2\x00",
		"git-upload-archive /x\x00",
		"git-receive-pack /x\x00\x00version=1\x00object-format=sha1\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := gitproto.ParseDaemonRequest(line)
		if err != nil {
			return
		}
		if req.Repo == "" || strings.HasPrefix(req.Repo, "/") && !strings.HasPrefix(string(line), string(req.Service)+" //") {
			t.Fatalf("repository %q from %q", req.Repo, line)
		}
		if _, err := gitproto.ParseGitProtocol(req.Protocol); err != nil {
			t.Fatalf("accepted protocol %q: %v", req.Protocol, err)
		}
	})
}
