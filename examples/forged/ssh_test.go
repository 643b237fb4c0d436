package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/forgekit/forgekit/internal/testenv"
)

// sshUser is a key pair on disk for the OpenSSH client.
type sshUser struct {
	file, pub, fingerprint string
}

func newSSHUser(t *testing.T, dir, name string) sshUser {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, name)
	require.NoError(t, err)
	file := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(file, pem.EncodeToMemory(block), 0o600))
	sp, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + name + "@test\n"
	return sshUser{file: file, pub: line, fingerprint: ssh.FingerprintSHA256(sp)}
}

// TestSSH runs forged as `forged -ssh-addr -git-addr` runs, and git over
// the OpenSSH client and git:// against it: the host key made on the first start and
// printed; keys added on the command line and in the settings; clone,
// fetch, push, push-to-create; protected branches, private
// repositories, read-only keys; a removed key refused at once; the clone
// box offering SSH.
func TestSSH(t *testing.T) {
	testenv.Git(t)
	sshBin := testenv.Binary(t, "ssh", "openssh-client")
	data, keys := t.TempDir(), t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var out, logs syncBuffer
	urls := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-ssh-addr", "127.0.0.1:0", "-git-addr", "127.0.0.1:0", "-data", data}, &out, &logs, func(u string) { urls <- u })
	}()
	var base string
	select {
	case base = <-urls:
	case err := <-done:
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	defer func() { cancel(); require.NoError(t, <-done) }()
	m := regexp.MustCompile(`git over SSH on (127\.0\.0\.1:(\d+)), host key (SHA256:\S+)`).FindStringSubmatch(out.String())
	require.NotNil(t, m, out.String())
	port := m[2]
	hostKeyPEM, err := os.ReadFile(filepath.Join(data, hostKeyFile))
	require.NoError(t, err)
	fi, err := os.Stat(filepath.Join(data, hostKeyFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the host key is the forge's alone")
	host, err := ssh.ParsePrivateKey(hostKeyPEM)
	require.NoError(t, err)
	assert.Equal(t, m[3], ssh.FingerprintSHA256(host.PublicKey()), "the printed fingerprint is the key's")
	knownHosts := filepath.Join(keys, "known_hosts")
	require.NoError(t, os.WriteFile(knownHosts, fmt.Appendf(nil, "[127.0.0.1]:%s %s", port, ssh.MarshalAuthorizedKey(host.PublicKey())), 0o600))

	f := &testForge{t: t, data: data, ts: &httptest.Server{URL: base}}
	f.user("alice")
	f.user("bob")
	alice, aliceRO, bob := newSSHUser(t, keys, "alice"), newSSHUser(t, keys, "alice-ci"), newSSHUser(t, keys, "bob")
	assert.Contains(t, f.mustCLI(alice.pub, "user", "key", "add", "alice", "-name", "laptop"), alice.fingerprint)
	f.mustCLI(aliceRO.pub, "user", "key", "add", "alice", "-read-only")
	// Bob adds his in the settings page.
	b := f.browser()
	b.login("bob", "bob-password")
	b.get("/settings")
	r := b.post("/settings", url.Values{"action": {"key"}, "key": {bob.pub}, "name": {"desk"}})
	require.Equal(t, http.StatusOK, r.code, r.body)
	assert.Contains(t, r.body, strings.ReplaceAll(bob.fingerprint, "+", "&#43;"))
	r = b.post("/settings", url.Values{"action": {"key"}, "key": {alice.pub}})
	assert.Equal(t, http.StatusUnprocessableEntity, r.code, "a key is one user's")
	r = b.post("/settings", url.Values{"action": {"key"}, "key": {"ssh-rsa AAAAB3NzaC1yc2E= too short"}})
	assert.Equal(t, http.StatusUnprocessableEntity, r.code)
	assert.Contains(t, r.body, "not a usable SSH public key")

	git := func(u sshUser, dir string, args ...string) (string, error) {
		cmd := fmt.Sprintf("%s -F /dev/null -i %s -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=%s -o LogLevel=ERROR",
			sshBin, u.file, knownHosts)
		return testenv.RunErr(t, testenv.Cmd{Dir: dir, Args: args, Env: []string{"GIT_SSH_COMMAND=" + cmd}})
	}
	mustGit := func(u sshUser, dir string, args ...string) string {
		t.Helper()
		out, err := git(u, dir, args...)
		require.NoError(t, err, "git %s", strings.Join(args, " "))
		return out
	}
	sshURL := func(repo string) string { return "ssh://git@127.0.0.1:" + port + "/" + repo + ".git" }

	// Push-to-create makes a private repository: bob cannot see it.
	work := t.TempDir()
	testenv.Run(t, work, "init", "-q", "-b", "main")
	require.NoError(t, os.WriteFile(filepath.Join(work, "README.md"), []byte("# over ssh\n"), 0o644))
	testenv.Run(t, work, "add", ".")
	testenv.Run(t, work, "commit", "-q", "-m", "first")
	mustGit(alice, work, "push", "-q", sshURL("alice/created"), "main")
	_, err = git(bob, "", "clone", "-q", sshURL("alice/created"), filepath.Join(t.TempDir(), "x"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "repository not found")

	// A public repository: bob clones and fetches, alice pushes, her
	// read-only key may not; the protected default branch refuses a
	// force-push.
	f.mustCLI("", "repo", "create", "alice/pub")
	mustGit(alice, work, "push", "-q", sshURL("alice/pub"), "main")
	clone := filepath.Join(t.TempDir(), "clone")
	mustGit(bob, "", "clone", "-q", sshURL("alice/pub"), clone)
	assert.FileExists(t, filepath.Join(clone, "README.md"))
	testenv.Run(t, work, "commit", "-q", "--allow-empty", "-m", "second")
	mustGit(alice, work, "push", "-q", sshURL("alice/pub"), "main")
	mustGit(bob, clone, "pull", "-q", "--ff-only")
	assert.Equal(t, testenv.Run(t, work, "rev-parse", "HEAD"), testenv.Run(t, clone, "rev-parse", "HEAD"))
	_, err = git(aliceRO, work, "push", sshURL("alice/pub"), "main:refs/heads/ci")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "permission denied")
	_, err = git(bob, clone, "push", sshURL("alice/pub"), "main:refs/heads/bobs")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "permission denied")
	testenv.Run(t, work, "commit", "-q", "--amend", "--allow-empty", "-m", "rewritten")
	_, err = git(alice, work, "push", "-f", sshURL("alice/pub"), "main")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "protected branch")

	// git:// serves public repositories to anyone, and nothing else.
	gm := regexp.MustCompile(`git:// on (127\.0\.0\.1:\d+)`).FindStringSubmatch(out.String())
	require.NotNil(t, gm, out.String())
	anon := filepath.Join(t.TempDir(), "anon")
	testenv.Run(t, "", "clone", "-q", "git://"+gm[1]+"/alice/pub.git", anon)
	assert.Equal(t, testenv.Run(t, clone, "rev-parse", "HEAD"), testenv.Run(t, anon, "rev-parse", "HEAD"))
	_, err = testenv.RunErr(t, testenv.Cmd{Args: []string{"ls-remote", "git://" + gm[1] + "/alice/created.git"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "repository not found", "a private repository is not served")
	_, err = testenv.RunErr(t, testenv.Cmd{Dir: work, Args: []string{"push", "git://" + gm[1] + "/alice/pub.git", "main:refs/heads/anon"}})
	require.Error(t, err)

	// The clone box offers both; the settings list the keys' use.
	home := b.get("/alice/pub").body
	assert.Contains(t, home, `value="ssh://git@127.0.0.1:`+port+`/alice/pub.git"`)
	assert.Contains(t, home, `value="`+base+`/alice/pub.git"`)
	listed := f.mustCLI("", "user", "key", "list", "alice")
	assert.Contains(t, listed, alice.fingerprint)
	assert.Regexp(t, regexp.QuoteMeta(aliceRO.fingerprint)+`\s+ssh-ed25519\s+alice-ci@test\s+read`, listed)
	assert.NotRegexp(t, regexp.QuoteMeta(alice.fingerprint)+`.*never`, listed, "its use is recorded")
	assert.Contains(t, b.get("/settings").body, "last used")

	// A removed key is refused at the next connection; so is a shell.
	f.mustCLI("", "user", "key", "remove", "alice", alice.fingerprint)
	_, err = git(alice, "", "ls-remote", sshURL("alice/pub"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Permission denied")
	c, err := ssh.Dial("tcp", net.JoinHostPort("127.0.0.1", port), &ssh.ClientConfig{User: "git",
		Auth: []ssh.AuthMethod{ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
			k, err := os.ReadFile(bob.file)
			if err != nil {
				return nil, err
			}
			s, err := ssh.ParsePrivateKey(k)
			return []ssh.Signer{s}, err
		})},
		HostKeyCallback: ssh.FixedHostKey(host.PublicKey())})
	require.NoError(t, err)
	defer c.Close()
	s, err := c.NewSession()
	require.NoError(t, err)
	var greeting strings.Builder
	s.Stderr = &greeting
	require.NoError(t, s.Shell())
	assert.Error(t, s.Wait(), "no shell")
	assert.Contains(t, greeting.String(), "Hi bob!")
}
