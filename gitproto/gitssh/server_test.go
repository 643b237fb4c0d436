package gitssh_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/gitproto/gitssh"
	"github.com/forgekit/forgekit/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// world is a Server on loopback serving repositories under root, with
// two known keys (alice may push to her own repositories, bob only
// reads) and an unknown one.
type world struct {
	t          *testing.T
	root, addr string
	srv        *gitssh.Server
	handler    *gitproto.Handler
	keys       map[string]string // user → private key file; "eve" is unknown
	signers    map[string]ssh.Signer
	knownHosts string
	hostKey    ssh.PublicKey

	mu      sync.Mutex // guards revoked
	revoked map[string]bool
}

func newWorld(t *testing.T) *world {
	t.Helper()
	testenv.Git(t)
	w := &world{t: t, root: t.TempDir(), keys: map[string]string{}, signers: map[string]ssh.Signer{}, revoked: map[string]bool{}}
	keyDir := t.TempDir()
	users := map[string]string{} // authorized key → user
	for _, name := range []string{"alice", "bob", "eve"} {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
		block, err := ssh.MarshalPrivateKey(priv, name)
		require.NoError(t, err)
		file := filepath.Join(keyDir, name)
		require.NoError(t, os.WriteFile(file, pem.EncodeToMemory(block), 0o600))
		w.keys[name] = file
		w.signers[name], err = ssh.NewSignerFromKey(priv)
		require.NoError(t, err)
		sp, err := ssh.NewPublicKey(pub)
		require.NoError(t, err)
		if name != "eve" {
			users[string(sp.Marshal())] = name
		}
	}
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	host, err := ssh.NewSignerFromKey(hostPriv)
	require.NoError(t, err)
	w.hostKey = host.PublicKey()

	testenv.BareRepo(t, filepath.Join(w.root, "alice", "proj.git"), testenv.RepoOptions{Commits: 20, Tags: 2})
	testenv.BareRepo(t, filepath.Join(w.root, "alice", "secret.git"), testenv.RepoOptions{})
	pc, err := gitproto.NewPackCache(t.TempDir(), 0)
	require.NoError(t, err)
	w.handler = &gitproto.Handler{
		Resolver:    gitproto.DirResolver{Root: w.root},
		PackCache:   pc,
		AdvertCache: &gitproto.AdvertCache{},
		SessionAuthorizer: gitproto.SessionAuthorizerFunc(func(ctx context.Context, user, repo string, op gitproto.Op) (context.Context, string, error) {
			owner, _, _ := strings.Cut(repo, "/")
			if !strings.HasPrefix(gitssh.Fingerprint(ctx), "SHA256:") {
				return nil, "", errors.New("no key fingerprint in the session's context")
			}
			switch {
			case strings.HasPrefix(repo, "alice/secret") && user != "alice":
				return nil, "", gitproto.ErrNotFound
			case op == gitproto.Write && user != owner:
				return nil, "", gitproto.ErrForbidden
			}
			return nil, user, nil
		}),
		OnMissingRepo: func(ctx context.Context, name, principal string) (string, error) {
			dir := filepath.Join(w.root, strings.TrimSuffix(name, ".git")+".git")
			testenv.Run(t, "", "init", "--bare", "-q", "-b", "main", dir)
			return dir, nil
		},
		PreReceive: func(ctx context.Context, p *gitproto.Push) error {
			for _, u := range p.Updates {
				if u.Ref == "refs/heads/locked" {
					p.Reject(u.Ref, "protected branch")
				}
			}
			return nil
		},
	}
	w.srv = &gitssh.Server{
		Handler:  w.handler,
		HostKeys: []ssh.Signer{host},
		Authenticate: func(ctx context.Context, key ssh.PublicKey) (string, error) {
			u, ok := users[string(key.Marshal())]
			w.mu.Lock()
			defer w.mu.Unlock()
			if !ok || w.revoked[u] {
				return "", gitssh.ErrUnknownKey
			}
			return u, nil
		},
		MaxConnsPerAddr:  4,
		MaxSessionsByKey: 2,
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	w.addr = l.Addr().String()
	done := make(chan error, 1)
	go func() { done <- w.srv.Serve(l) }()
	t.Cleanup(func() {
		require.NoError(t, w.srv.Close())
		assert.ErrorIs(t, <-done, gitssh.ErrServerClosed)
	})
	_, port, _ := net.SplitHostPort(w.addr)
	w.knownHosts = filepath.Join(keyDir, "known_hosts")
	line := fmt.Sprintf("[127.0.0.1]:%s %s", port, ssh.MarshalAuthorizedKey(w.hostKey))
	require.NoError(t, os.WriteFile(w.knownHosts, []byte(line), 0o600))
	return w
}

// sshCommand is the OpenSSH client command line git runs, for user's
// key, checking the host key strictly.
func (w *world) sshCommand(user string) string {
	ssh := testenv.Binary(w.t, "ssh", "openssh-client")
	return fmt.Sprintf("%s -F /dev/null -i %s -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=%s -o LogLevel=ERROR",
		ssh, w.keys[user], w.knownHosts)
}

func (w *world) url(repo string) string {
	_, port, _ := net.SplitHostPort(w.addr)
	return "ssh://git@127.0.0.1:" + port + "/" + repo
}

// git runs git as user over SSH.
func (w *world) git(user, dir string, args ...string) (string, error) {
	return testenv.RunErr(w.t, testenv.Cmd{Dir: dir, Args: args, Env: []string{"GIT_SSH_COMMAND=" + w.sshCommand(user)}})
}

func (w *world) mustGit(user, dir string, args ...string) string {
	w.t.Helper()
	out, err := w.git(user, dir, args...)
	require.NoError(w.t, err, "git %s", strings.Join(args, " "))
	return out
}

func TestCloneFetchPush(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	want := testenv.Run(t, filepath.Join(w.root, "alice", "proj.git"), "rev-parse", "main")

	for _, tc := range []struct {
		name, url string
		config    []string
	}{
		{"v2 ssh url", w.url("alice/proj.git"), nil},
		{"v0", w.url("alice/proj.git"), []string{"-c", "protocol.version=0"}},
		{"v1 without .git", w.url("alice/proj"), []string{"-c", "protocol.version=1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "clone")
			w.mustGit("bob", "", append(tc.config, "clone", "-q", tc.url, dst)...)
			assert.Equal(t, want, testenv.Run(t, dst, "rev-parse", "HEAD"))
			testenv.Run(t, dst, "fsck", "--no-progress")
		})
	}
	// scp-like address, through an ssh config's Host alias (git needs a
	// host name without a port for that syntax).
	_, port, _ := net.SplitHostPort(w.addr)
	cfg := filepath.Join(t.TempDir(), "config")
	require.NoError(t, os.WriteFile(cfg, []byte("Host forge\n  HostName 127.0.0.1\n  Port "+port+"\n  HostKeyAlias [127.0.0.1]:"+port+"\n"), 0o600))
	scp := filepath.Join(t.TempDir(), "scp")
	_, err := testenv.RunErr(t, testenv.Cmd{Args: []string{"clone", "-q", "git@forge:alice/proj.git", scp},
		Env: []string{"GIT_SSH_COMMAND=" + strings.Replace(w.sshCommand("bob"), "-F /dev/null", "-F "+cfg, 1)}})
	require.NoError(t, err)
	assert.Equal(t, want, testenv.Run(t, scp, "rev-parse", "HEAD"))

	// Clones over v2 share the pack cache with HTTP (once the refs are
	// older than the cache's racy window, a second or two: it polls).
	require.Eventually(t, func() bool {
		before := w.handler.PackCache.Stats().Hits
		w.mustGit("bob", "", "clone", "-q", "--bare", w.url("alice/proj.git"), filepath.Join(t.TempDir(), "again"))
		return w.handler.PackCache.Stats().Hits > before
	}, 30*time.Second, 200*time.Millisecond, "served from the pack cache")

	// Alice pushes a commit and a branch; bob fetches them.
	work := filepath.Join(t.TempDir(), "work")
	w.mustGit("alice", "", "clone", "-q", w.url("alice/proj.git"), work)
	require.NoError(t, os.WriteFile(filepath.Join(work, "new.txt"), []byte("over ssh\n"), 0o644))
	testenv.Run(t, work, "add", "new.txt")
	testenv.Run(t, work, "commit", "-q", "-m", "pushed over ssh")
	w.mustGit("alice", work, "push", "-q", "origin", "main", "main:refs/heads/topic")
	head := testenv.Run(t, work, "rev-parse", "HEAD")
	assert.Equal(t, head, testenv.Run(t, filepath.Join(w.root, "alice", "proj.git"), "rev-parse", "topic"))
	fetched := filepath.Join(t.TempDir(), "fetched")
	w.mustGit("bob", "", "clone", "-q", w.url("alice/proj.git"), fetched)
	assert.Equal(t, head, testenv.Run(t, fetched, "rev-parse", "origin/topic"), "the caches forgot the old refs")

	// The protected branch stays; bob may not push; push-to-create.
	_, err = w.git("alice", work, "push", "origin", "main:refs/heads/locked")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "protected branch")
	_, err = w.git("bob", work, "push", "origin", "main:refs/heads/bobs")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "permission denied")
	w.mustGit("alice", work, "push", "-q", w.url("alice/created.git"), "main")
	assert.Equal(t, head, testenv.Run(t, filepath.Join(w.root, "alice", "created.git"), "rev-parse", "main"))

	// git archive --remote.
	out := w.mustGit("bob", "", "archive", "--remote="+w.url("alice/proj.git"), "--format=tar", "main", "README.md")
	assert.Contains(t, out, "# test repository")
}

func TestRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	dst := filepath.Join(t.TempDir(), "x")
	for _, tc := range []struct {
		name, user, repo, want string
	}{
		{"missing repository", "bob", "alice/nope.git", "repository not found"},
		{"private repository looks missing", "bob", "alice/secret.git", "repository not found"},
		{"traversal", "bob", "../alice/proj.git", "repository not found"},
		{"unknown key", "eve", "alice/proj.git", "Permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := w.git(tc.user, "", "clone", "-q", w.url(tc.repo), dst)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	// Alice sees her private repository; revoked, her key is refused at
	// the next connection.
	w.mustGit("alice", "", "ls-remote", w.url("alice/secret.git"))
	w.mu.Lock()
	w.revoked["alice"] = true
	w.mu.Unlock()
	_, err := w.git("alice", "", "ls-remote", w.url("alice/secret.git"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Permission denied")
	assert.Positive(t, w.srv.Stats().AuthFailed)
}

// dial opens a connection with x/crypto/ssh as user.
func (w *world) dial(user string) (*ssh.Client, error) {
	return ssh.Dial("tcp", w.addr, &ssh.ClientConfig{
		User:            "git",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(w.signers[user])},
		HostKeyCallback: ssh.FixedHostKey(w.hostKey),
		Timeout:         10 * time.Second,
	})
}

func TestNotAShell(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	c, err := w.dial("bob")
	require.NoError(t, err)
	defer c.Close()

	for _, tc := range []struct {
		name, cmd, stderr string
		status            int
	}{
		{"shell", "", "Hi bob! You have authenticated", 1},
		{"other command", "ls -la /", "is not a git service", 128},
		{"injection", "git-upload-pack 'alice/proj.git'; rm -rf /", "bad quoting", 128},
		{"unknown service", "git-http-backend 'alice/proj.git'", "is not a git service", 128},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := c.NewSession()
			require.NoError(t, err)
			defer s.Close()
			var stderr strings.Builder
			s.Stderr = &stderr
			if tc.cmd == "" {
				require.NoError(t, s.Shell())
				err = s.Wait()
			} else {
				err = s.Run(tc.cmd)
			}
			var ee *ssh.ExitError
			require.ErrorAs(t, err, &ee)
			assert.Equal(t, tc.status, ee.ExitStatus())
			assert.Contains(t, stderr.String(), tc.stderr)
		})
	}
	// No pty, no subsystem, no forwarding either way.
	s, err := c.NewSession()
	require.NoError(t, err)
	assert.Error(t, s.RequestPty("xterm", 24, 80, ssh.TerminalModes{}))
	assert.Error(t, s.RequestSubsystem("sftp"))
	s.Close()
	_, err = c.Dial("tcp", "127.0.0.1:22")
	assert.Error(t, err, "no -L")
	_, err = c.Listen("tcp", "127.0.0.1:0")
	assert.Error(t, err, "no -R")
	assert.Positive(t, w.srv.Stats().Rejected)
}

func TestLimits(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	// Sessions per key: two run (held open: an upload-pack waiting for
	// its client), the third is refused.
	c, err := w.dial("bob")
	require.NoError(t, err)
	defer c.Close()
	var held []*ssh.Session
	for range 2 {
		s, err := c.NewSession()
		require.NoError(t, err)
		out, err := s.StdoutPipe()
		require.NoError(t, err)
		_, err = s.StdinPipe()
		require.NoError(t, err)
		require.NoError(t, s.Start("git-upload-pack 'alice/proj.git'"))
		buf := make([]byte, 4)
		_, err = out.Read(buf) // the advertisement has begun
		require.NoError(t, err)
		held = append(held, s)
	}
	s, err := c.NewSession()
	require.NoError(t, err)
	var stderr strings.Builder
	s.Stderr = &stderr
	err = s.Run("git-upload-pack 'alice/proj.git'")
	var ee *ssh.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Contains(t, stderr.String(), "too many concurrent sessions")
	for _, s := range held {
		s.Close()
	}

	// Connections per address: four are let in, the fifth is dropped.
	var conns []*ssh.Client
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	c.Close()
	require.Eventually(t, func() bool { return w.srv.Stats().Open == 0 }, 10*time.Second, 10*time.Millisecond)
	for range 4 {
		c, err := w.dial("bob")
		require.NoError(t, err)
		conns = append(conns, c)
	}
	_, err = w.dial("bob")
	assert.Error(t, err)
	assert.Positive(t, w.srv.Stats().Refused)
}

func TestIdleAndSessionTimeouts(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.srv.Close()
	for _, tc := range []struct {
		name string
		set  func(*gitssh.Server)
	}{
		{"idle connection", func(s *gitssh.Server) { s.IdleTimeout = 200 * time.Millisecond }},
		{"session time", func(s *gitssh.Server) { s.MaxSessionTime = 200 * time.Millisecond }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &gitssh.Server{Handler: w.handler, HostKeys: w.srv.HostKeys, Authenticate: w.srv.Authenticate}
			tc.set(srv)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			go srv.Serve(l)
			defer srv.Close()
			c, err := ssh.Dial("tcp", l.Addr().String(), &ssh.ClientConfig{User: "git",
				Auth: []ssh.AuthMethod{ssh.PublicKeys(w.signers["bob"])}, HostKeyCallback: ssh.FixedHostKey(w.hostKey)})
			require.NoError(t, err)
			defer c.Close()
			s, err := c.NewSession()
			require.NoError(t, err)
			_, err = s.StdinPipe() // never written: a client that stalls
			require.NoError(t, err)
			out, err := s.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, s.Start("git-upload-pack 'alice/proj.git'"))
			go func() { // read the advertisement, then wait
				buf := make([]byte, 64<<10)
				for {
					if _, err := out.Read(buf); err != nil {
						return
					}
				}
			}()
			done := make(chan error, 1)
			go func() { done <- s.Wait() }()
			select {
			case err := <-done:
				assert.Error(t, err, "the stalled session was ended")
			case <-time.After(30 * time.Second):
				t.Fatal("the stalled session was never ended")
			}
		})
	}
}

func TestShutdownWaits(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	c, err := w.dial("bob")
	require.NoError(t, err)
	defer c.Close()
	s, err := c.NewSession()
	require.NoError(t, err)
	in, err := s.StdinPipe()
	require.NoError(t, err)
	out, err := s.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, s.Start("git-upload-pack 'alice/proj.git'"))
	buf := make([]byte, 4)
	_, err = out.Read(buf)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, w.srv.Shutdown(ctx), context.DeadlineExceeded, "a session was running")
	in.Close()
	assert.Error(t, s.Wait())
	_, err = w.dial("bob")
	assert.Error(t, err, "no longer listening")
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for _, tc := range []struct{ name, send string }{
		{"http before the version line", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"an overlong line", strings.Repeat("x", 4096) + "\r\n"},
		{"garbage after the version line", "SSH-2.0-OpenSSH_9.6\r\n" + strings.Repeat("\xff", 4096)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", w.addr)
			require.NoError(t, err)
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			go io.WriteString(c, tc.send)
			// The server says who it is and hangs up (a reset when it
			// leaves input unread).
			got, _ := io.ReadAll(c)
			assert.True(t, strings.HasPrefix(string(got), "SSH-2.0-forgekit\r\n"), "%q", got)
		})
	}

	// Only public keys, and only the keys themselves: no password, no
	// keyboard-interactive, no certificate standing in for a known key.
	_, rsaKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	caSigner, err := ssh.NewSignerFromKey(rsaKey)
	require.NoError(t, err)
	cert := &ssh.Certificate{
		Key:             w.signers["alice"].PublicKey(),
		CertType:        ssh.UserCert,
		ValidPrincipals: []string{"git"},
		ValidBefore:     ssh.CertTimeInfinity,
	}
	require.NoError(t, cert.SignCert(rand.Reader, caSigner))
	certSigner, err := ssh.NewCertSigner(cert, w.signers["alice"])
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		auth ssh.AuthMethod
	}{
		{"password", ssh.Password("password-alice")},
		{"keyboard-interactive", ssh.KeyboardInteractive(func(string, string, []string, []bool) ([]string, error) { return []string{"x"}, nil })},
		{"certificate of a known key", ssh.PublicKeys(certSigner)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ssh.Dial("tcp", w.addr, &ssh.ClientConfig{
				User: "git", Auth: []ssh.AuthMethod{tc.auth},
				HostKeyCallback: ssh.FixedHostKey(w.hostKey), Timeout: 10 * time.Second,
			})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "unable to authenticate")
		})
	}
	// The server still serves.
	w.mustGit("bob", "", "ls-remote", w.url("alice/proj.git"))
}

// TestClientKilledMidPush: a client that vanishes in the middle of its
// pack leaves no git process and no quarantine behind, and moves no ref.
func TestClientKilledMidPush(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	repo := filepath.Join(w.root, "alice", "proj.git")
	before := testenv.Run(t, repo, "rev-parse", "refs/heads/main")
	c, err := w.dial("alice")
	require.NoError(t, err)
	s, err := c.NewSession()
	require.NoError(t, err)
	in, err := s.StdinPipe()
	require.NoError(t, err)
	out, err := s.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, s.Start("git-receive-pack 'alice/proj.git'"))
	// Read the advertisement to its flush packet.
	br := bufio.NewReader(out)
	for {
		var n [4]byte
		_, err := io.ReadFull(br, n[:])
		require.NoError(t, err)
		if string(n[:]) == "0000" {
			break
		}
		size, err := strconv.ParseUint(string(n[:]), 16, 16)
		require.NoError(t, err)
		_, err = io.CopyN(io.Discard, br, int64(size)-4)
		require.NoError(t, err)
	}
	cmd := fmt.Sprintf("%s %s refs/heads/main\x00report-status\n", strings.TrimSpace(before), strings.Repeat("1", 40))
	fmt.Fprintf(in, "%04x%s0000", len(cmd)+4, cmd)
	// A pack header promising 1000 objects, then the first of them.
	in.Write([]byte("PACK\x00\x00\x00\x02\x00\x00\x03\xe8"))
	in.Write([]byte{0x35, 0x78, 0x9c})
	quarantines := func() []string {
		q, _ := filepath.Glob(filepath.Join(repo, "objects", "tmp_objdir-incoming-*"))
		return q
	}
	require.Eventually(t, func() bool { return len(quarantines()) > 0 }, 30*time.Second, 10*time.Millisecond,
		"receive-pack is reading the pack into its quarantine")
	c.Close() // the client dies

	require.Eventually(t, func() bool {
		return w.srv.Stats().Open == 0 && len(quarantines()) == 0 && len(gitProcesses(t, repo)) == 0
	}, 30*time.Second, 20*time.Millisecond, "quarantines %v, processes %v", quarantines(), gitProcesses(t, repo))
	assert.Equal(t, before, testenv.Run(t, repo, "rev-parse", "refs/heads/main"))
	w.mustGit("alice", "", "ls-remote", w.url("alice/proj.git"))
}

// gitProcesses lists the processes whose command line or working
// directory names dir.
func gitProcesses(t *testing.T, dir string) []string {
	procs, err := filepath.Glob("/proc/[0-9]*")
	require.NoError(t, err)
	var found []string
	for _, p := range procs {
		cmdline, _ := os.ReadFile(filepath.Join(p, "cmdline"))
		cwd, _ := os.Readlink(filepath.Join(p, "cwd"))
		if strings.Contains(string(cmdline), dir) || strings.HasPrefix(cwd, dir) {
			found = append(found, strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return found
}
