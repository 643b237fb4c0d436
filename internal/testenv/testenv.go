// Package testenv provides the helpers forgekit's tests share: finding
// real binaries (git, memcached, ...) or skipping without them, making
// small git repositories, and starting servers on loopback ports.
//
// A test that needs a binary skips with a message naming the Debian
// package that provides it, unless FORGEKIT_REQUIRE_SERVICES=1 is set (as
// CI does), in which case the missing binary fails the test.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RequireServices reports whether missing services must fail tests
// instead of skipping them.
func RequireServices() bool { return os.Getenv("FORGEKIT_REQUIRE_SERVICES") == "1" }

// Binary returns the path of name on PATH (or in extraDirs), skipping the
// test when it is missing and FORGEKIT_REQUIRE_SERVICES is not set.
func Binary(tb testing.TB, name, debianPackage string, extraDirs ...string) string {
	tb.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range extraDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found on PATH: install the Debian package %q", name, debianPackage)
	if RequireServices() {
		tb.Fatalf("%s (FORGEKIT_REQUIRE_SERVICES=1)", msg)
	}
	tb.Skip(msg)
	return ""
}

// Git returns the path of the git binary or skips.
func Git(tb testing.TB) string {
	tb.Helper()
	return Binary(tb, "git", "git")
}

// GitEnv is a clean environment for running git in tests: no user or
// system configuration, no prompts, a fixed identity and dates.
func GitEnv(home string) []string {
	env := []string{
		"HOME=" + home,
		"PATH=" + os.Getenv("PATH"),
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_ASKPASS=/bin/false",
		"GIT_AUTHOR_NAME=Forge Tester",
		"GIT_AUTHOR_EMAIL=tester@example.com",
		"GIT_COMMITTER_NAME=Forge Tester",
		"GIT_COMMITTER_EMAIL=tester@example.com",
		"LC_ALL=C",
	}
	if tmp := os.Getenv("TMPDIR"); tmp != "" {
		env = append(env, "TMPDIR="+tmp)
	}
	return env
}

// Cmd is a git command line run by Run.
type Cmd struct {
	Dir   string   // working directory
	Env   []string // added to GitEnv
	Args  []string
	Stdin string
}

// Run runs git with GitEnv (HOME in a per-test directory) and returns
// its standard output; it fails the test on error.
func Run(tb testing.TB, dir string, args ...string) string {
	tb.Helper()
	out, err := RunErr(tb, Cmd{Dir: dir, Args: args})
	if err != nil {
		tb.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// RunErr runs git like Run and returns the error (with standard error in
// its text) instead of failing.
func RunErr(tb testing.TB, c Cmd) (string, error) {
	tb.Helper()
	git := Git(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, git, c.Args...)
	cmd.Dir = c.Dir
	cmd.Env = append(GitEnv(home(tb)), c.Env...)
	cmd.Stdin = strings.NewReader(c.Stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func home(tb testing.TB) string {
	dir := filepath.Join(os.TempDir(), "forgekit-testenv-home")
	os.MkdirAll(dir, 0o700)
	return dir
}

// RepoOptions shape the repository made by BareRepo.
type RepoOptions struct {
	Commits  int // on the default branch; if zero, 5
	Files    int // files touched per commit; if zero, 3
	Branches int // extra branches forked from the history
	Tags     int // annotated tags on the default branch
	FileSize int // bytes of content per file change; if zero, 64
}

// BareRepo creates a bare repository at dir (which must not exist) with
// deterministic history on main: commits that add and edit files in
// nested directories, plus branches and annotated tags. It uses git
// fast-import, so thousands of commits take well under a second.
func BareRepo(tb testing.TB, dir string, o RepoOptions) {
	tb.Helper()
	if o.Commits == 0 {
		o.Commits = 5
	}
	if o.Files == 0 {
		o.Files = 3
	}
	if o.FileSize == 0 {
		o.FileSize = 64
	}
	Run(tb, "", "init", "--bare", "-q", "-b", "main", dir)
	var s bytes.Buffer
	mark := 0
	when := int64(1700000000)
	for i := 1; i <= o.Commits; i++ {
		mark++
		when += 3600
		msg := fmt.Sprintf("commit %d\n", i)
		fmt.Fprintf(&s, "commit refs/heads/main\nmark :%d\ncommitter Forge Tester <tester@example.com> %d +0000\ndata %d\n%s", mark, when, len(msg), msg)
		if i > 1 {
			fmt.Fprintf(&s, "from :%d\n", mark-1)
		}
		for f := 0; f < o.Files; f++ {
			path := fmt.Sprintf("dir%d/sub%d/file%d.txt", (i+f)%7, f%3, (i*31+f)%(o.Files*4+1))
			content := fileContent(i, f, o.FileSize)
			fmt.Fprintf(&s, "M 100644 inline %s\ndata %d\n%s\n", path, len(content), content)
		}
		if i == 1 {
			readme := "# test repository\n"
			fmt.Fprintf(&s, "M 100644 inline README.md\ndata %d\n%s\n", len(readme), readme)
		}
	}
	for b := 1; b <= o.Branches; b++ {
		base := 1 + (b*7)%o.Commits
		msg := fmt.Sprintf("branch %d\n", b)
		content := fileContent(1000+b, 0, o.FileSize)
		fmt.Fprintf(&s, "commit refs/heads/branch%d\ncommitter Forge Tester <tester@example.com> %d +0000\ndata %d\n%sfrom :%d\nM 100644 inline branch%d.txt\ndata %d\n%s\n",
			b, when+int64(b), len(msg), msg, base, b, len(content), content)
	}
	for t := 1; t <= o.Tags; t++ {
		target := 1 + (t*5)%o.Commits
		msg := fmt.Sprintf("release %d\n", t)
		fmt.Fprintf(&s, "tag v%d.0\nfrom :%d\ntagger Forge Tester <tester@example.com> %d +0000\ndata %d\n%s", t, target, when+int64(t), len(msg), msg)
	}
	git := Git(tb)
	cmd := exec.Command(git, "fast-import", "--quiet")
	cmd.Dir = dir
	cmd.Env = GitEnv(home(tb))
	cmd.Stdin = &s
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("git fast-import: %v: %s", err, out)
	}
	// Small imports end up as loose objects; repack as a served
	// repository would be.
	Run(tb, dir, "repack", "-a", "-d", "-q")
}

func fileContent(i, f, size int) string {
	var b strings.Builder
	for b.Len() < size {
		fmt.Fprintf(&b, "line %d of change %d.%d\n", b.Len(), i, f)
	}
	return b.String()
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitListening waits until addr accepts TCP connections or fails the
// test after timeout.
func WaitListening(tb testing.TB, addr string, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s not listening after %s: %v", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartServer starts a service binary (found with Binary) on a free
// loopback port; args receives the port and returns the arguments. The
// process is stopped when the test ends. It returns "127.0.0.1:PORT".
func StartServer(tb testing.TB, name, debianPackage string, args func(port int) []string) string {
	tb.Helper()
	bin := Binary(tb, name, debianPackage)
	for attempt := 0; ; attempt++ {
		port := FreePort(tb)
		cmd := exec.Command(bin, args(port)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			tb.Fatalf("starting %s: %v", name, err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if waitUp(addr, exited, 10*time.Second) {
			tb.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})
			return addr
		}
		cmd.Process.Kill()
		<-exited
		if attempt == 2 {
			tb.Fatalf("%s did not start on %s: %s", name, addr, out.String())
		}
	}
}

func waitUp(addr string, exited <-chan struct{}, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// Memcached starts a memcached on a loopback port for the test and
// returns its address. It needs the Debian package memcached.
func Memcached(tb testing.TB) string {
	tb.Helper()
	return StartServer(tb, "memcached", "memcached", func(port int) []string {
		return []string{"-u", "nobody", "-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "64"}
	})
}
