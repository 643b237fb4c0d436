package gitproto_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/internal/testenv"
)

// serveForCrash is a server whose PreReceive never answers: it prints
// its address, then "pre-receive" when a push reaches the hook.
func serveForCrash(root string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.Exit(1)
	}
	fmt.Println(ln.Addr())
	h := &gitproto.Handler{
		Resolver:   gitproto.DirResolver{Root: root},
		Authorizer: gitproto.AuthorizerFunc(func(*http.Request, string, gitproto.Op) (string, error) { return "x", nil }),
		PreReceive: func(ctx context.Context, p *gitproto.Push) error {
			fmt.Println("pre-receive")
			select {}
		},
	}
	http.Serve(ln, h)
}

// processesWith lists the processes whose command line or environment
// mentions s.
func processesWith(s string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		for _, f := range []string{"cmdline", "environ"} {
			b, _ := os.ReadFile(filepath.Join(p, f))
			if strings.Contains(string(b), s) {
				cmd, _ := os.ReadFile(filepath.Join(p, "cmdline"))
				out = append(out, filepath.Base(p)+": "+strings.ReplaceAll(string(cmd), "\x00", " "))
				break
			}
		}
	}
	return out
}

// TestServerKilledDuringPush: a server killed with -9 while a push waits
// in its pre-receive hook leaves no process behind (receive-pack, the
// hook), and its hook bridge is removed by the next server's first run.
func TestServerKilledDuringPush(t *testing.T) {
	t.Parallel()
	testenv.Git(t)
	root := t.TempDir()
	repo := filepath.Join(root, "crash.git")
	testenv.BareRepo(t, repo, testenv.RepoOptions{Commits: 2})
	srv := exec.Command(os.Args[0], "-test.run=^$")
	srv.Env = append(os.Environ(), "GITPROTO_TEST_SERVE="+root)
	out, err := srv.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, srv.Start())
	defer srv.Process.Kill()
	lines := bufio.NewScanner(out)
	require.True(t, lines.Scan())
	addr := lines.Text()

	work := filepath.Join(t.TempDir(), "w")
	testenv.Run(t, "", "clone", "-q", repo, work)
	require.NoError(t, os.WriteFile(filepath.Join(work, "new.txt"), []byte("new\n"), 0o644))
	testenv.Run(t, work, "add", ".")
	testenv.Run(t, work, "commit", "-q", "-m", "new")
	push := exec.Command(testenv.Git(t), "push", "-q", "http://"+addr+"/crash.git", "HEAD:main")
	push.Dir, push.Env = work, testenv.GitEnv(t.TempDir())
	require.NoError(t, push.Start())
	require.True(t, lines.Scan())
	require.Equal(t, "pre-receive", lines.Text())

	pid := srv.Process.Pid
	bridges, _ := filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("gitproto-push-%d-*", pid)))
	require.Len(t, bridges, 1, "the push's hook bridge")
	require.NotEmpty(t, processesWith(bridges[0]), "receive-pack and its hook wait on the server")
	script, err := os.ReadFile(filepath.Join(bridges[0], "hooks", "pre-receive"))
	require.NoError(t, err)
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	srv.Wait()
	push.Wait()

	require.Eventually(t, func() bool { return len(processesWith(bridges[0])) == 0 }, 30*time.Second, 50*time.Millisecond,
		"left behind: %v", processesWith(bridges[0]))

	// A hook started after the server died (say it was killed as the
	// pack finished arriving) would block opening the pipes nobody
	// answers: it ends instead, failing the push. (On a bridge of its
	// own: the dead server's may be swept by now.)
	dead := t.TempDir()
	for _, n := range []string{"req", "resp"} {
		require.NoError(t, syscall.Mkfifo(filepath.Join(dead, n), 0o600))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dead, "pre-receive"), script, 0o700))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hook := exec.CommandContext(ctx, filepath.Join(dead, "pre-receive"))
	hook.Env = []string{"PATH=" + os.Getenv("PATH"), "GITPROTO_HOOK_DIR=" + dead,
		fmt.Sprintf("GITPROTO_SERVER_PID=%d", pid), "GITPROTO_HOOK_TIMEOUT=3600"}
	hook.Stdin = strings.NewReader("0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/x\n")
	err = hook.Run()
	require.Error(t, err, "the push is refused")
	assert.NoError(t, ctx.Err(), "the hook ended by itself, without waiting for the test's deadline")

	f := newFixture(t, testenv.RepoOptions{Commits: 1}, nil)
	f.mustGit("", "ls-remote", f.url("", "alice/proj.git"))
	assert.NoDirExists(t, bridges[0], "the next server's first run sweeps it")
}
