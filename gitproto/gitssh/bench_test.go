package gitssh_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/gitproto/gitssh"
	"github.com/forgekit/forgekit/internal/testenv"
)

// The benchmarks run both servers as subprocesses, so that their CPU time
// and peak RSS include the git processes they start: this test binary
// re-executed with benchServerEnv set, and OpenSSH's sshd.
const benchServerEnv = "GITSSH_BENCH_SERVER"

func init() {
	if root := os.Getenv(benchServerEnv); root != "" {
		if err := benchServer(root, os.Getenv("GITSSH_BENCH_KEYS")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// benchServer serves root over SSH on a loopback port, with the host key
// and the one authorized client key in keys, prints the address and runs
// until SIGTERM. Pushes to main must be fast-forwards (PreReceive asks
// Push.IsAncestor, as forge does for a protected branch).
func benchServer(root, keys string) error {
	hostPEM, err := os.ReadFile(filepath.Join(keys, "host"))
	if err != nil {
		return err
	}
	host, err := ssh.ParsePrivateKey(hostPEM)
	if err != nil {
		return err
	}
	authorized, err := os.ReadFile(filepath.Join(keys, "client.pub"))
	if err != nil {
		return err
	}
	client, _, _, _, err := ssh.ParseAuthorizedKey(authorized)
	if err != nil {
		return err
	}
	h := &gitproto.Handler{
		Resolver: gitproto.DirResolver{Root: root},
		SessionAuthorizer: gitproto.SessionAuthorizerFunc(func(ctx context.Context, user, repo string, op gitproto.Op) (context.Context, string, error) {
			return nil, user, nil
		}),
		PreReceive: func(ctx context.Context, p *gitproto.Push) error {
			for _, u := range p.Updates {
				if u.Ref == "refs/heads/main" && !u.IsCreate() && !u.IsDelete() {
					if ff, err := p.IsAncestor(ctx, u.Old, u.New); err != nil {
						return err
					} else if !ff {
						p.Reject(u.Ref, "protected branch")
					}
				}
			}
			return nil
		},
	}
	srv := &gitssh.Server{
		Handler:  h,
		HostKeys: []ssh.Signer{host},
		Authenticate: func(ctx context.Context, key ssh.PublicKey) (string, error) {
			if string(key.Marshal()) == string(client.Marshal()) {
				return "bench", nil
			}
			return "", gitssh.ErrUnknownKey
		},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go srv.Serve(l)
	fmt.Println(l.Addr().String())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	return srv.Close()
}

// benchKeys writes a host key and a client key pair into a new directory.
func benchKeys(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	for _, name := range []string{"host", "client"} {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		block, err := ssh.MarshalPrivateKey(priv, "")
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			b.Fatal(err)
		}
		sp, err := ssh.NewPublicKey(pub)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".pub"), ssh.MarshalAuthorizedKey(sp), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

// sshServer is a server subprocess and the URL prefix of its
// repositories.
type sshServer struct {
	base string // "ssh://user@host:port" + the root's path as the server names it
	cmd  *exec.Cmd
}

// stop ends the server and returns its CPU time (user+system, children
// included) and peak RSS in MiB.
func (s *sshServer) stop() (cpu time.Duration, rssMiB float64) {
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
	ru := s.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), float64(ru.Maxrss) / 1024
}

func startOurs(b *testing.B, root, keys string) *sshServer {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"="+root, "GITSSH_BENCH_KEYS="+keys)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatalf("bench server: %v", err)
	}
	return &sshServer{base: "ssh://git@" + strings.TrimSpace(line), cmd: cmd}
}

// startSSHD starts OpenSSH's sshd on a loopback port, letting the
// client key in as the current user, whose shell runs git-upload-pack
// and git-receive-pack as any git server over SSH does.
func startSSHD(b *testing.B, root, keys string) *sshServer {
	b.Helper()
	sshd := testenv.Binary(b, "sshd", "openssh-server", "/usr/sbin")
	if os.Geteuid() == 0 {
		// sshd started by root needs its privilege separation
		// directory, which the package's service makes at boot.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			b.Skipf("sshd needs /run/sshd: %v", err)
		}
	}
	me, err := user.Current()
	if err != nil {
		b.Fatal(err)
	}
	port := testenv.FreePort(b)
	config := filepath.Join(b.TempDir(), "sshd_config")
	conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
PidFile none
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
PrintMotd no
PrintLastLog no
LogLevel FATAL
`, port, filepath.Join(keys, "host"), filepath.Join(keys, "client.pub"))
	if err := os.WriteFile(config, []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(sshd, "-D", "-e", "-f", config)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	testenv.WaitListening(b, addr, 10*time.Second)
	return &sshServer{base: "ssh://" + me.Username + "@" + addr + root, cmd: cmd}
}

// sshEnv makes git use OpenSSH's client with the benchmark's key.
func sshEnv(b *testing.B, keys string) []string {
	client := testenv.Binary(b, "ssh", "openssh-client")
	return []string{"GIT_SSH_COMMAND=" + client + " -F /dev/null -i " + filepath.Join(keys, "client") +
		" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"}
}

func timed(b *testing.B, env []string, dir string, args ...string) time.Duration {
	b.Helper()
	start := time.Now()
	if _, err := testenv.RunErr(b, testenv.Cmd{Dir: dir, Args: args, Env: env}); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// report adds the medians, their ratio and the servers' CPU and peak RSS.
func report(b *testing.B, ours, sshd *sshServer, tOurs, tSSHD []time.Duration) {
	cpuOurs, rssOurs := ours.stop()
	cpuSSHD, rssSSHD := sshd.stop()
	mOurs, mSSHD := median(tOurs), median(tSSHD)
	n := float64(b.N)
	b.ReportMetric(float64(mOurs.Microseconds())/1000, "gitssh-median-ms")
	b.ReportMetric(float64(mSSHD.Microseconds())/1000, "sshd-median-ms")
	b.ReportMetric(mOurs.Seconds()/mSSHD.Seconds(), "x-sshd")
	b.ReportMetric(cpuOurs.Seconds()*1000/n, "gitssh-cpu-ms/op")
	b.ReportMetric(cpuSSHD.Seconds()*1000/n, "sshd-cpu-ms/op")
	b.ReportMetric(rssOurs, "gitssh-peak-MiB")
	b.ReportMetric(rssSSHD, "sshd-peak-MiB")
}

// BenchmarkSSHClone: full bare clones of the generated repository with
// git and OpenSSH's client, from gitssh and from sshd running
// git-upload-pack, in turn. Target: ≤ 1.05x sshd.
func BenchmarkSSHClone(b *testing.B) {
	repo := testenv.BenchRepo(b)
	root, name := filepath.Dir(repo), filepath.Base(repo)
	keys := benchKeys(b)
	env := sshEnv(b, keys)
	ours, sshd := startOurs(b, root, keys), startSSHD(b, root, keys)
	tmp := b.TempDir()
	var tOurs, tSSHD []time.Duration
	for b.Loop() {
		for _, s := range []*sshServer{ours, sshd} {
			dst := filepath.Join(tmp, "clone")
			d := timed(b, env, "", "clone", "-q", "--bare", s.base+"/"+name, dst)
			os.RemoveAll(dst)
			if s == ours {
				tOurs = append(tOurs, d)
			} else {
				tSSHD = append(tSSHD, d)
			}
		}
	}
	report(b, ours, sshd, tOurs, tSSHD)
}

// BenchmarkSSHPush: one-commit pushes to main (a protected branch on
// gitssh's side: fast-forwards only) through gitssh and through sshd
// running git-receive-pack, in turn. Target: ≤ 1.05x sshd.
func BenchmarkSSHPush(b *testing.B) {
	testenv.Git(b)
	root := b.TempDir()
	for _, n := range []string{"ours", "sshd"} {
		testenv.BareRepo(b, filepath.Join(root, n+".git"), testenv.RepoOptions{Commits: 200})
	}
	keys := benchKeys(b)
	env := sshEnv(b, keys)
	ours, sshd := startOurs(b, root, keys), startSSHD(b, root, keys)
	work := filepath.Join(b.TempDir(), "work")
	testenv.Run(b, "", "clone", "-q", filepath.Join(root, "ours.git"), work)
	var tOurs, tSSHD []time.Duration
	i := 0
	for b.Loop() {
		i++
		testenv.Run(b, work, "commit", "-q", "--allow-empty", "-m", fmt.Sprint("push ", i))
		tOurs = append(tOurs, timed(b, env, work, "push", "-q", ours.base+"/ours.git", "HEAD:refs/heads/main"))
		tSSHD = append(tSSHD, timed(b, env, work, "push", "-q", sshd.base+"/sshd.git", "HEAD:refs/heads/main"))
	}
	report(b, ours, sshd, tOurs, tSSHD)
}
