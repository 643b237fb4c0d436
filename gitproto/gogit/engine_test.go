package gogit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/internal/testenv"
)

// TestEngine drives the real git client against the engine: clones of
// several repositories at once, a push, and the dumb protocol's refs as
// git itself writes them. The engine's per-repository locks go when
// nobody holds them. (gitproto's own tests run its whole suite on this
// engine too.)
func TestEngine(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	root := t.TempDir()
	for _, name := range []string{"a", "b", "c"} {
		testenv.BareRepo(t, filepath.Join(root, name+".git"), testenv.RepoOptions{Commits: 5, Tags: 1})
	}
	e := &Engine{}
	h := &gitproto.Handler{
		Resolver: gitproto.DirResolver{Root: root},
		Engine:   e,
		Dumb:     true,
		Authorizer: gitproto.AuthorizerFunc(func(_ *http.Request, _ string, _ gitproto.Op) (string, error) {
			return "tester", nil
		}),
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	var wg sync.WaitGroup
	for _, name := range []string{"a", "b", "c", "a", "b", "c"} {
		wg.Go(func() {
			_, err := testenv.RunErr(t, testenv.Cmd{Args: []string{"clone", "-q", srv.URL + "/" + name + ".git", filepath.Join(t.TempDir(), "w")}})
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	assert.Zero(t, e.held(), "no lock outlives its request")

	work := filepath.Join(t.TempDir(), "w")
	testenv.Run(t, "", "clone", "-q", srv.URL+"/a.git", work)
	require.NoError(t, os.WriteFile(filepath.Join(work, "new.txt"), []byte("new\n"), 0o644))
	testenv.Run(t, work, "add", "new.txt")
	testenv.Run(t, work, "commit", "-q", "-m", "new")
	testenv.Run(t, work, "push", "-q", "origin", "HEAD:refs/heads/main")
	assert.Equal(t, testenv.Run(t, work, "rev-parse", "HEAD"), testenv.Run(t, filepath.Join(root, "a.git"), "rev-parse", "main"))
	assert.Zero(t, e.held())

	dir := filepath.Join(root, "b.git")
	testenv.Run(t, dir, "-c", "user.name=T", "-c", "user.email=t@example.com", "tag", "-a", "-m", "outer", "outer", "v1.0")
	testenv.Run(t, dir, "update-server-info")
	want, err := os.ReadFile(filepath.Join(dir, "info", "refs"))
	require.NoError(t, err)
	got, err := e.InfoRefs(context.Background(), dir)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got))
	srv.CloseClientConnections()
}

// TestNoSessions: go-git's server side is stateless only, so SSH and
// git:// sessions get a clear refusal rather than a hang.
func TestNoSessions(t *testing.T) {
	root := t.TempDir()
	testenv.BareRepo(t, filepath.Join(root, "a.git"), testenv.RepoOptions{Commits: 2})
	h := &gitproto.Handler{Resolver: gitproto.DirResolver{Root: root}, Engine: &Engine{}}
	var out strings.Builder
	err := h.ServeSession(context.Background(), &gitproto.Session{Service: gitproto.UploadPack, Repo: "a.git",
		Protocol: "version=2", Stdin: strings.NewReader(""), Stdout: &out})
	require.ErrorIs(t, err, gitproto.ErrUnsupported)
	msg, status := gitproto.SessionMessage(err)
	assert.Equal(t, 128, status)
	assert.Contains(t, msg, "stateful session")
	assert.Empty(t, out.String())
}
