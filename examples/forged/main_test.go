package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/forgekit/forgekit/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Idle keep-alive connections of the test clients' transports.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		// regexp2 (chroma's lexers) keeps one clock goroutine per process
		// while timeouts are in use; it stops by itself.
		goleak.IgnoreAnyFunction("github.com/dlclark/regexp2/v2.runClock"),
	)
}

// syncBuffer is a bytes.Buffer safe for the server's and the test's
// goroutines.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testForge is a forged serving a fresh data directory over loopback.
type testForge struct {
	t    *testing.T
	s    *server
	ts   *httptest.Server
	data string
}

func newForge(t *testing.T, flags ...string) *testForge {
	t.Helper()
	testenv.Git(t)
	return newInstance(t, t.TempDir(), flags...)
}

// newInstance starts a forged on the data directory data (which other
// instances may share), serving over loopback until the test ends.
func newInstance(t *testing.T, data string, flags ...string) *testForge {
	t.Helper()
	s, ts := startInstance(t, data, flags...)
	return &testForge{t: t, s: s, ts: ts, data: data}
}

// startInstance is newInstance for benchmarks too.
func startInstance(tb testing.TB, data string, flags ...string) (*server, *httptest.Server) {
	tb.Helper()
	cfg, err := parseFlags(append([]string{"-data", data}, flags...), io.Discard)
	require.NoError(tb, err)
	s, err := newServer(context.Background(), cfg, slog.New(slog.DiscardHandler))
	require.NoError(tb, err)
	ts := httptest.NewServer(s.handler)
	tb.Cleanup(func() {
		ts.Close()
		s.Close()
	})
	return s, ts
}

// cli runs a forged subcommand on the test's data directory.
func (f *testForge) cli(stdin string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	err := dispatch(context.Background(), append(args, "-data", f.data), strings.NewReader(stdin), &out, &errb)
	return out.String() + errb.String(), err
}

func (f *testForge) mustCLI(stdin string, args ...string) string {
	f.t.Helper()
	out, err := f.cli(stdin, args...)
	require.NoError(f.t, err, out)
	return out
}

// user creates a user with password NAME-password.
func (f *testForge) user(name string, extra ...string) {
	f.t.Helper()
	f.mustCLI(name+"-password\n", append([]string{"user", "add", name, "-password-stdin"}, extra...)...)
}

var tokenRE = regexp.MustCompile(`fkt_[A-Za-z0-9_-]+`)

// token creates a write token of user.
func (f *testForge) token(user string) string {
	f.t.Helper()
	return tokenRE.FindString(f.mustCLI("", "token", "create", user))
}

// gitURL is the clone URL of repo with optional credentials.
func (f *testForge) gitURL(repo, user, pass string) string {
	u, _ := url.Parse(f.ts.URL + "/" + repo + ".git")
	if user != "" {
		u.User = url.UserPassword(user, pass)
	}
	return u.String()
}

// pushSample makes a small history and pushes main, a branch with a
// slash and a tag to repo; it returns the work tree.
func (f *testForge) pushSample(repo, user, pass string) string {
	f.t.Helper()
	dir := f.t.TempDir()
	testenv.Run(f.t, "", "init", "-q", "-b", "main", dir)
	write := func(name, content string) {
		require.NoError(f.t, os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755))
		require.NoError(f.t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
	}
	write("README.md", "# Sample project\n\nIt has *emphasis* and <script>alert(1)</script>.\n")
	write("src/main.go", "package main\n\nfunc main() {}\n")
	write("docs/guide.md", "# Guide\n")
	testenv.Run(f.t, dir, "add", ".")
	testenv.Run(f.t, dir, "commit", "-q", "-m", "Initial import")
	write("src/main.go", "package main\n\nfunc main() { println(\"hi\") }\n")
	testenv.Run(f.t, dir, "commit", "-q", "-am", "Say <b>hi</b>")
	testenv.Run(f.t, dir, "checkout", "-q", "-b", "feature/login")
	write("login.go", "package main\n")
	testenv.Run(f.t, dir, "add", ".")
	testenv.Run(f.t, dir, "commit", "-q", "-m", "Login page")
	testenv.Run(f.t, dir, "checkout", "-q", "main")
	testenv.Run(f.t, dir, "tag", "v1.0")
	testenv.Run(f.t, dir, "push", "-q", f.gitURL(repo, user, pass), "main", "feature/login", "v1.0")
	return dir
}

// browser is an HTTP client with cookies that does not follow
// redirects, so that tests see them.
type browser struct {
	t    *testing.T
	f    *testForge
	c    *http.Client
	csrf string
}

func (f *testForge) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: f.t, f: f, c: &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type resp struct {
	code int
	body string
	h    http.Header
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) do(req *http.Request) resp {
	b.t.Helper()
	res, err := b.c.Do(req)
	require.NoError(b.t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(b.t, err)
	if m := csrfRE.FindStringSubmatch(string(body)); m != nil {
		b.csrf = m[1]
	}
	return resp{res.StatusCode, string(body), res.Header}
}

func (b *browser) get(path string, header ...string) resp {
	b.t.Helper()
	req, err := http.NewRequest("GET", b.f.ts.URL+path, nil)
	require.NoError(b.t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return b.do(req)
}

// post sends a form, with the CSRF token of the last page seen unless
// the form has one.
func (b *browser) post(path string, form url.Values, header ...string) resp {
	b.t.Helper()
	if _, ok := form["csrf"]; !ok && b.csrf != "" {
		form.Set("csrf", b.csrf)
	}
	req, err := http.NewRequest("POST", b.f.ts.URL+path, strings.NewReader(form.Encode()))
	require.NoError(b.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return b.do(req)
}

func (b *browser) login(name, pass string) {
	b.t.Helper()
	r := b.post("/login", url.Values{"name": {name}, "password": {pass}, "next": {"/"}})
	require.Equal(b.t, http.StatusSeeOther, r.code, r.body)
	b.get("/settings") // a page with the session's CSRF token
}

func TestFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{name: "unknown flag", args: []string{"-nope"}, want: "flag provided but not defined"},
		{name: "bad engine", args: []string{"-engine", "svn"}, want: "-engine"},
		{name: "bad addr", args: []string{"-addr", "nonsense"}, want: "-addr"},
		{name: "stray argument", args: []string{"serve-me"}, want: "unexpected argument"},
		{name: "bad accel", args: []string{"-accel", "apache"}, want: "-accel"},
		{name: "bad memcached", args: []string{"-memcached", "nohost"}, want: "-memcached"},
		{name: "bad base URL", args: []string{"-base-url", "ftp://x"}, want: "-base-url"},
		{name: "bad proxies", args: []string{"-trusted-proxies", "10.0.0.0/99"}, want: "-trusted-proxies"},
		{name: "bad purge URL", args: []string{"-purge", "varnish:6081"}, want: "-purge"},
		{name: "zero timeout", args: []string{"-page-timeout", "0s"}, want: "-page-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			_, err := parseFlags(tc.args, &stderr)
			require.Error(t, err)
			assert.Contains(t, err.Error()+stderr.String(), tc.want)
		})
	}
	var stderr bytes.Buffer
	_, err := parseFlags([]string{"-h"}, &stderr)
	require.Error(t, err)
	for _, f := range []string{"-addr", "-data", "-db", "-memcached", "-base-url", "-accel", "-trusted-proxies", "-log", "-engine", "-webhook-private", "-purge", "user add", "repo create", "token create", "migrate", "SIGHUP"} {
		assert.Contains(t, stderr.String(), f, "-h documents %s", f)
	}
	cfg, err := parseFlags([]string{"-trusted-proxies", "127.0.0.1, 10.1.0.0/16", "-memcached", "a:1,b:2", "-base-url", "https://forge.example/"}, io.Discard)
	require.NoError(t, err)
	assert.Len(t, cfg.trustedProxies, 2)
	assert.Equal(t, []string{"a:1", "b:2"}, cfg.memcached)
	assert.Equal(t, "https://forge.example", cfg.baseURL.String())
}

func TestCLI(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	out := f.mustCLI("", "user", "add", "alice", "-email", "a@example.com")
	assert.Contains(t, out, "created user alice")
	assert.Regexp(t, `password: \S{16,}`, out, "a generated password is shown once")
	out = f.mustCLI("bob-password\n", "user", "add", "-admin", "bob", "-password-stdin")
	assert.Contains(t, out, "bob (site administrator)")
	assert.NotContains(t, out, "password:")
	assert.Contains(t, f.mustCLI("", "repo", "create", "alice/proj", "-private", "-description", "d"), "created private repository alice/proj")
	assert.Contains(t, f.mustCLI("", "token", "create", "alice", "-scope", "read", "-name", "ci"), "token ci (read) for alice")
	assert.Regexp(t, `fkt_`, f.mustCLI("", "token", "create", "bob", "-expires", "24h"))

	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"duplicate user", "", []string{"user", "add", "ALICE"}, "user exists"},
		{"reserved name", "", []string{"user", "add", "admin"}, "reserved"},
		{"short password", "short\n", []string{"user", "add", "carol", "-password-stdin"}, "shorter than 8"},
		{"duplicate repo", "", []string{"repo", "create", "alice/PROJ"}, "exists"},
		{"repo of nobody", "", []string{"repo", "create", "nobody/x"}, "no such user"},
		{"repo without owner", "", []string{"repo", "create", "proj"}, "OWNER/NAME"},
		{"bad repo name", "", []string{"repo", "create", "alice/..x"}, "invalid name"},
		{"bad scope", "", []string{"token", "create", "alice", "-scope", "admin"}, "-scope"},
		{"token of nobody", "", []string{"token", "create", "nobody"}, "no such user"},
		{"missing argument", "", []string{"user", "add"}, "exactly one NAME"},
		{"two arguments", "", []string{"repo", "create", "a/b", "c/d"}, "exactly one"},
		{"unknown command", "", []string{"user", "frobnicate", "x"}, "unknown command"},
		{"bare noun", "", []string{"token"}, "usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := f.cli(tc.stdin, tc.args...)
			require.Error(t, err, out)
			assert.Contains(t, err.Error()+out, tc.want)
		})
	}
}

// TestFirstStart runs the server as `go run ./examples/forged` does: it
// prints its URL and the administrator's password once, which signs in;
// git clone and push work with both engines.
func TestFirstStart(t *testing.T) {
	for _, engine := range []string{"git", "gogit"} {
		t.Run(engine, func(t *testing.T) {
			testenv.Git(t)
			data := t.TempDir()
			start := func() (string, *syncBuffer, func()) {
				ctx, cancel := context.WithCancel(context.Background())
				var out, logs syncBuffer
				urls := make(chan string, 1)
				done := make(chan error, 1)
				go func() {
					done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-data", data, "-engine", engine}, &out, &logs, func(u string) { urls <- u })
				}()
				select {
				case base := <-urls:
					return base, &out, func() { cancel(); require.NoError(t, <-done) }
				case err := <-done:
					t.Fatalf("run: %v\n%s", err, logs.String())
				}
				return "", nil, nil
			}
			base, out, stop := start()
			m := regexp.MustCompile(`sign in at (\S+)/login as root with password (\S+)`).FindStringSubmatch(out.String())
			require.NotNil(t, m, out.String())
			assert.Equal(t, base, m[1])
			pass := m[2]

			f := &testForge{t: t, data: data, ts: &httptest.Server{URL: base}}
			b := f.browser()
			b.login("root", pass)
			r := b.post("/new", url.Values{"name": {"demo"}, "description": {"first"}})
			require.Equal(t, http.StatusSeeOther, r.code, r.body)
			tok := f.token("root")
			work := f.pushSample("root/demo", "root", tok)
			dst := filepath.Join(t.TempDir(), "clone")
			testenv.Run(t, "", "clone", "-q", base+"/root/demo", dst)
			assert.FileExists(t, filepath.Join(dst, "src", "main.go"))
			// Anonymous pushes are refused with a request for credentials.
			_, err := testenv.RunErr(t, testenv.Cmd{Dir: work, Args: []string{"push", base + "/root/demo.git", "HEAD:refs/heads/x"}})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "could not read Username")
			stop()

			// The second start creates no one and shows no password.
			_, out, stop = start()
			assert.NotContains(t, out.String(), "password")
			assert.Contains(t, out.String(), "sign in at")
			stop()
		})
	}
}

// TestOperatorCommands: the operator's lifecycle on the command line,
// each command through the forge's one write path, effective at once
// for a running server.
func TestOperatorCommands(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	f.user("bob")
	tok := f.token("alice")
	f.mustCLI("", "token", "create", "alice", "-name", "ci", "-scope", "read", "-expires", "1h")
	f.mustCLI("", "repo", "create", "alice/proj", "-description", "the project")
	f.pushSample("alice/proj", "alice", tok)
	b := f.browser()
	b.login("bob", "bob-password")

	out := f.mustCLI("", "user", "list")
	assert.Regexp(t, `alice\s+user\s+active`, out)
	assert.Regexp(t, `bob\s+user\s+active`, out)

	// Disable ends sessions, passwords and tokens at once; enable undoes it.
	assert.Contains(t, f.mustCLI("", "user", "disable", "bob"), "disabled bob")
	assert.Regexp(t, `bob\s+user\s+disabled`, f.mustCLI("", "user", "list"))
	assert.Equal(t, http.StatusSeeOther, b.get("/settings").code, "the session is over")
	assert.Equal(t, http.StatusUnauthorized, b.post("/login", url.Values{"name": {"bob"}, "password": {"bob-password"}}).code)
	f.mustCLI("", "user", "enable", "bob")
	b.login("bob", "bob-password")

	// A new password: the way back in for a lost one.
	out = f.mustCLI("", "user", "passwd", "bob")
	pass := regexp.MustCompile(`password: (\S+)`).FindStringSubmatch(out)
	require.NotNil(t, pass, out)
	assert.Equal(t, http.StatusSeeOther, b.get("/settings").code, "old sessions end with the old password")
	b.login("bob", pass[1])
	f.mustCLI("bob-password\n", "user", "passwd", "bob", "-password-stdin")
	b.login("bob", "bob-password")

	f.mustCLI("", "user", "admin", "bob")
	assert.Equal(t, http.StatusOK, b.get("/admin/").code)
	f.mustCLI("", "user", "admin", "bob", "-revoke")
	assert.Equal(t, http.StatusNotFound, b.get("/admin/").code)

	// Tokens: listed by name, revoked at once.
	out = f.mustCLI("", "token", "list", "alice")
	assert.Regexp(t, `ci\s+read\s+\S+\s+20\d\d-`, out)
	assert.Regexp(t, `cli-\S+\s+write\s+\S+\s+never`, out)
	name := regexp.MustCompile(`(cli-\S+)\s+write`).FindStringSubmatch(out)[1]
	f.mustCLI("", "repo", "create", "alice/priv", "-private")
	testenv.Run(t, "", "ls-remote", f.gitURL("alice/priv", "alice", tok))
	f.mustCLI("", "token", "revoke", "alice", name)
	_, err := testenv.RunErr(t, testenv.Cmd{Args: []string{"ls-remote", f.gitURL("alice/priv", "alice", tok)}})
	assert.Error(t, err, "a revoked token fails at once")

	// Repositories: list, rename, delete to the trash, restore.
	assert.Regexp(t, `alice/proj\s+public\s+\S+`, f.mustCLI("", "repo", "list"))
	f.mustCLI("", "repo", "rename", "alice/proj", "renamed")
	assert.Equal(t, http.StatusOK, b.get("/alice/renamed").code)
	assert.Contains(t, f.mustCLI("", "repo", "delete", "alice/renamed"), "trash")
	assert.Equal(t, http.StatusNotFound, b.get("/alice/renamed").code)
	assert.Contains(t, f.mustCLI("", "repo", "list", "-trash"), "alice/renamed")
	assert.Contains(t, f.mustCLI("", "repo", "restore", "alice/renamed"), "restored alice/renamed (private")
	assert.Regexp(t, `alice/renamed\s+private`, f.mustCLI("", "repo", "list", "-owner", "alice"))
	alice := f.browser()
	alice.login("alice", "alice-password")
	assert.Contains(t, alice.get("/alice/renamed").body, "Sample project")

	f.mustCLI("", "user", "delete", "bob")
	assert.NotContains(t, f.mustCLI("", "user", "list"), "bob")

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"passwd of nobody", []string{"user", "passwd", "nobody"}, "no such user"},
		{"disable nobody", []string{"user", "disable", "nobody"}, "no such user"},
		{"admin of nobody", []string{"user", "admin", "nobody"}, "no such user"},
		{"delete nobody", []string{"user", "delete", "nobody"}, "no such user"},
		{"tokens of nobody", []string{"token", "list", "nobody"}, "no such user"},
		{"revoke without a name", []string{"token", "revoke", "alice"}, "USER TOKEN-NAME"},
		{"delete a missing repository", []string{"repo", "delete", "alice/nope"}, "not found"},
		{"restore what was never deleted", []string{"repo", "restore", "alice/never"}, "not found"},
		{"restore over an existing one", []string{"repo", "restore", "alice/renamed"}, "exists"},
		{"rename to a bad name", []string{"repo", "rename", "alice/renamed", "../x"}, "invalid name"},
		{"rename without OWNER/", []string{"repo", "rename", "renamed", "x"}, "OWNER/NAME"},
		{"list takes no argument", []string{"user", "list", "x"}, "takes no argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := f.cli("", tc.args...)
			require.Error(t, err, out)
			assert.Contains(t, err.Error()+out, tc.want)
		})
	}

	// Every command has -h; help lists them; version names the build.
	for _, c := range commands {
		out, err := f.cli("", append(strings.Fields(c.name), "-h")...)
		assert.ErrorIs(t, err, flag.ErrHelp, c.name)
		assert.Contains(t, out, "Usage: forged "+c.name, c.name)
	}
	out = f.mustCLI("", "help")
	for _, c := range commands {
		assert.Contains(t, out, "forged "+c.name)
	}
	var vout bytes.Buffer
	require.NoError(t, dispatch(context.Background(), []string{"version"}, nil, &vout, io.Discard))
	assert.Contains(t, vout.String(), "forged ")
	assert.Contains(t, vout.String(), "built with go")
}

func TestRegistration(t *testing.T) {
	t.Parallel()
	closed := newForge(t)
	anon := closed.browser()
	assert.Equal(t, http.StatusNotFound, anon.get("/register").code, "closed by default")
	assert.Equal(t, http.StatusNotFound, anon.post("/register", url.Values{"name": {"eve"}, "password": {"eve-password"}, "confirm": {"eve-password"}}).code)
	assert.NotContains(t, anon.get("/login").body, "/register")

	f := newForge(t, "-registration", "open")
	f.user("alice")
	b := f.browser()
	assert.Contains(t, b.get("/login").body, `href="/register"`)
	r := b.get("/register")
	require.Equal(t, http.StatusOK, r.code)
	for _, tc := range []struct {
		name, user, pass, confirm, want string
	}{
		{"taken, in any case", "ALICE", "long-password", "long-password", "taken"},
		{"reserved", "explore", "long-password", "long-password", "reserved"},
		{"invalid", "../x", "long-password", "long-password", "invalid name"},
		{"short password", "eve", "short", "short", "shorter than 8"},
		{"passwords differ", "eve", "long-password", "other-password", "differ"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := b.post("/register", url.Values{"name": {tc.user}, "password": {tc.pass}, "confirm": {tc.confirm}})
			assert.Equal(t, http.StatusUnprocessableEntity, r.code)
			assert.Contains(t, r.body, tc.want)
		})
	}
	r = b.post("/register", url.Values{"name": {"eve"}, "email": {"eve@example.com"}, "password": {"eve-password"}, "confirm": {"eve-password"}})
	require.Equal(t, http.StatusSeeOther, r.code, r.body)
	assert.Equal(t, "/eve", r.h.Get("Location"))
	assert.Contains(t, b.get("/settings").body, `<a href="/eve">eve</a>`, "signed in")
	assert.Regexp(t, `eve\s+eve@example.com\s+user\s+active`, f.mustCLI("", "user", "list"), "no administrator by signing up")

	// Sign-ups spend the address's sign-in attempts: no faster than
	// password guesses.
	c := f.browser()
	codes := map[int]int{}
	for i := 0; i < 12; i++ {
		codes[c.post("/register", url.Values{"name": {fmt.Sprintf("bot%d", i)}, "password": {"bot-password"}, "confirm": {"bot-password"}}).code]++
	}
	assert.Positive(t, codes[http.StatusTooManyRequests], "%v", codes)
	assert.LessOrEqual(t, codes[http.StatusSeeOther], loginBurst)

	_, err := parseFlags([]string{"-registration", "sometimes"}, io.Discard)
	assert.ErrorContains(t, err, "-registration")
}
