package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/internal/testenv"
)

// deployConfig reads a file of examples/deploy with the values its
// comments mark CHANGE replaced.
func deployConfig(t *testing.T, name string, replace ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "deploy", name))
	require.NoError(t, err)
	s := string(b)
	for i := 0; i+1 < len(replace); i += 2 {
		require.Contains(t, s, replace[i], "%s no longer has %q", name, replace[i])
		s = strings.ReplaceAll(s, replace[i], replace[i+1])
	}
	return s
}

// startDaemon runs a front server until the test ends.
func startDaemon(t testing.TB, addr string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s exited: %s", filepath.Base(name), out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s: %s", filepath.Base(name), addr, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNginxFront puts nginx with examples/deploy/nginx.conf in front of
// forged -accel nginx: pages and git go through it, archives are sent by
// nginx from the data directory (forged answers them with
// X-Accel-Redirect and no body), static files come from
// nginx's cache, and forged believes nginx's request ids.
func TestNginxFront(t *testing.T) {
	t.Parallel()
	nginx := testenv.Binary(t, "nginx", "nginx", "/usr/sbin")
	f := newForge(t, "-accel", "nginx", "-trusted-proxies", "127.0.0.1")
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	work := f.pushSample("alice/proj", "alice", tok)
	head := strings.TrimSpace(testenv.Run(t, work, "rev-parse", "HEAD"))
	testenv.Run(t, work, "push", "-q", f.gitURL("alice/proj", "alice", tok), "main") // a second pack

	dir := t.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	site := deployConfig(t, "nginx.conf",
		"server 127.0.0.1:8080;", "server "+f.ts.Listener.Addr().String()+";",
		"/var/cache/nginx/forged", filepath.Join(dir, "cache"),
		"listen 80;", "listen "+addr+";",
		"alias /var/lib/forged/;", "alias "+f.data+"/;")
	startNginx(t, nginx, dir, addr, site)
	front := "http://" + addr

	get := func(url string, header ...string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", url, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		res, err := http.DefaultTransport.RoundTrip(req)
		require.NoError(t, err)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}

	res, body := get(front + "/alice/proj")
	require.Equal(t, http.StatusOK, res.StatusCode, body)
	assert.Contains(t, body, "Sample project")
	assert.Len(t, res.Header.Get("X-Request-Id"), 32, "nginx's request id, believed from a trusted proxy")

	// Archives: forged hands over, nginx sends.
	archive := "/alice/proj/archive/" + head + ".tar.gz"
	direct, directBody := get(f.ts.URL + archive)
	require.Equal(t, http.StatusOK, direct.StatusCode)
	accel := direct.Header.Get("X-Accel-Redirect")
	assert.True(t, strings.HasPrefix(accel, "/_accel/cache/archives/"), accel)
	assert.Empty(t, directBody, "forged sends no body")
	res, body = get(front + archive)
	require.Equal(t, http.StatusOK, res.StatusCode, body)
	assert.Empty(t, res.Header.Get("X-Accel-Redirect"), "never shown to clients")
	assert.Equal(t, "\x1f\x8b", body[:2])
	file, err := os.ReadFile(filepath.Join(f.data, strings.TrimPrefix(accel, "/_accel/")))
	require.NoError(t, err)
	assert.Equal(t, string(file), body, "the bytes of the cached archive")
	assert.Contains(t, res.Header.Get("Content-Disposition"), "proj-"+head[:12]+".tar.gz")
	assert.Len(t, res.Header.Values("Content-Disposition"), 1, "nginx passes forged's own, once")
	assert.Len(t, res.Header.Values("Cache-Control"), 1)
	res, _ = get(front + "/_accel/forge.db")
	assert.Equal(t, http.StatusNotFound, res.StatusCode, "the internal location is not reachable from outside")

	// Page requests carry small bodies: a large one is refused by nginx
	// without reaching forged or a disk.
	big, err := http.Post(front+"/login", "application/x-www-form-urlencoded", strings.NewReader("name="+strings.Repeat("x", 3<<20)))
	require.NoError(t, err)
	big.Body.Close()
	assert.Equal(t, http.StatusRequestEntityTooLarge, big.StatusCode)
	// A client elsewhere (its address as nginx would append it; this one
	// is on loopback itself): the metrics are not public through nginx.
	res, _ = get(front+"/metrics", "X-Forwarded-For", "203.0.113.9")
	assert.Equal(t, http.StatusNotFound, res.StatusCode, "metrics are not public through the proxy")

	// Git through nginx, both ways. (forged leaves dumb HTTP off, so
	// X-Accel-Redirect serves no pack files here.)
	clones := t.TempDir()
	testenv.Run(t, "", "clone", "-q", front+"/alice/proj.git", filepath.Join(clones, "smart"))
	testenv.Run(t, clones, "-c", "user.name=x", "-c", "user.email=x@example.com", "-C", "smart", "commit", "-q", "--allow-empty", "-m", "through nginx")
	u := strings.Replace(front, "http://", "http://alice:"+tok+"@", 1)
	testenv.Run(t, filepath.Join(clones, "smart"), "push", "-q", u+"/alice/proj.git", "HEAD:refs/heads/via-nginx")

	// Static files: from nginx's cache the second time.
	_, explore := get(front + "/explore")
	css := regexp.MustCompile(`href="(/static/[^"]+)"`).FindStringSubmatch(explore)
	require.NotNil(t, css)
	waitFor(t, "the static file from nginx's cache", 10*time.Second, func() bool {
		res, _ = get(front + css[1])
		return res.Header.Get("X-Cache-Status") == "HIT"
	})
}

// TestVarnishFront puts Varnish with examples/deploy/forged.vcl in front
// of forged: pinned public pages are cached, ref-named ones revalidated
// with 304s, signed-in and private ones never shared.
func TestVarnishFront(t *testing.T) {
	t.Parallel()
	varnishd := testenv.Binary(t, "varnishd", "varnish", "/usr/sbin")
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	f := newForge(t, "-purge", "http://"+addr+"/")
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	f.mustCLI("", "repo", "create", "alice/secret", "-private")
	work := f.pushSample("alice/proj", "alice", tok)
	f.pushSample("alice/secret", "alice", tok)
	head := strings.TrimSpace(testenv.Run(t, work, "rev-parse", "HEAD"))
	_, port, _ := net.SplitHostPort(f.ts.Listener.Addr().String())
	dir := t.TempDir()
	vcl := deployConfig(t, "forged.vcl", `.port = "8080";`, `.port = "`+port+`";`)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "forged.vcl"), []byte(vcl), 0o644))
	args := []string{"-F", "-f", filepath.Join(dir, "forged.vcl"), "-a", addr, "-n", filepath.Join(dir, "work"), "-s", "malloc,32m", "-T", "none"}
	if os.Geteuid() == 0 {
		args = append(args, "-j", "none") // no privilege drop in a test sandbox
	}
	startDaemon(t, addr, varnishd, args...)
	front := "http://" + addr
	get := func(path string, cookie string) *http.Response {
		req, _ := http.NewRequest("GET", front+path, nil)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		res, err := http.DefaultTransport.RoundTrip(req)
		require.NoError(t, err)
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res
	}
	count := func(code, route string) string {
		b := f.browser().get("/metrics").body
		m := regexp.MustCompile(`forged_request_duration_seconds_count\{code="` + code + `",method="GET",route="` + regexp.QuoteMeta(route) + `"\} (\d+)`).FindStringSubmatch(b)
		if m == nil {
			return "0"
		}
		return m[1]
	}

	pinned := "/alice/proj/tree/" + head + "/src"
	assert.Equal(t, "MISS", get(pinned, "").Header.Get("X-Cache"))
	assert.Equal(t, "HIT", get(pinned, "").Header.Get("X-Cache"), "immutable pages are kept")
	assert.Equal(t, "1", count("2xx", "/{owner}/{repo}/tree/{rest...}"), "forged rendered it once")

	// Ref-named: every hit is revalidated, forged answering 304.
	for range 3 {
		assert.Equal(t, http.StatusOK, get("/alice/proj", "analytics=1").StatusCode)
		time.Sleep(5 * time.Millisecond) // past the millisecond of freshness
	}
	assert.Equal(t, "1", count("2xx", "/{owner}/{repo}"))
	assert.Equal(t, "2", count("3xx", "/{owner}/{repo}"))

	// A session is never shared.
	alice := f.browser()
	alice.login("alice", "alice-password")
	u, _ := http.NewRequest("GET", f.ts.URL, nil)
	cookie := alice.c.Jar.Cookies(u.URL)[0]
	session := cookie.Name + "=" + cookie.Value
	assert.Equal(t, "MISS", get(pinned, session).Header.Get("X-Cache"))
	res := get("/alice/secret", session)
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Equal(t, "MISS", get("/alice/secret", session).Header.Get("X-Cache"))
	assert.Equal(t, http.StatusNotFound, get("/alice/secret", "").StatusCode, "nothing private leaks to the anonymous")
	assert.Equal(t, "MISS", get("/explore", "").Header.Get("X-Cache"))
	assert.Equal(t, http.StatusNotFound, get("/metrics", "").StatusCode, "metrics are not served through Varnish")
	assert.Empty(t, get(pinned, "").Header.Get("Surrogate-Key"), "the key stays between forged and Varnish")

	// Copies kept for a year go when the repository stops being public.
	pages := []string{pinned, "/alice/proj/raw/" + head + "/src/main.go", "/alice/proj/commit/" + head, "/alice/proj/archive/" + head + ".tar.gz"}
	for _, p := range pages {
		get(p, "")
		require.Equal(t, "HIT", get(p, "").Header.Get("X-Cache"), p)
	}
	alice.get("/alice/proj/settings")
	r := alice.post("/alice/proj/settings", url.Values{"action": {"general"}, "private": {"on"}, "default_branch": {"main"}})
	require.Equal(t, http.StatusSeeOther, r.code, r.body)
	for _, p := range pages {
		waitFor(t, "the purge of "+p, 10*time.Second, func() bool { return get(p, "").StatusCode == http.StatusNotFound })
	}

	// And when a push drops commits.
	f.mustCLI("", "repo", "create", "alice/forced")
	forced := f.pushSample("alice/forced", "alice", tok)
	oldHead := strings.TrimSpace(testenv.Run(t, forced, "rev-parse", "HEAD"))
	old := "/alice/forced/tree/" + oldHead + "/src"
	get(old, "")
	require.Equal(t, "HIT", get(old, "").Header.Get("X-Cache"))
	testenv.Run(t, forced, "reset", "-q", "--hard", "HEAD~1")
	testenv.Run(t, forced, "push", "-q", "-f", f.gitURL("alice/forced", "alice", tok), "HEAD:refs/heads/feature/login")
	waitFor(t, "the purge after a force-push", 10*time.Second, func() bool { return get(old, "").Header.Get("X-Cache") == "MISS" })

	// And when it is deleted.
	f.mustCLI("", "repo", "create", "alice/gone")
	gone := f.pushSample("alice/gone", "alice", tok)
	goneHead := strings.TrimSpace(testenv.Run(t, gone, "rev-parse", "HEAD"))
	raw := "/alice/gone/raw/" + goneHead + "/src/main.go"
	get(raw, "")
	require.Equal(t, "HIT", get(raw, "").Header.Get("X-Cache"))
	alice.get("/alice/gone/settings")
	r = alice.post("/alice/gone/settings", url.Values{"action": {"delete"}, "confirm": {"gone"}})
	require.Equal(t, http.StatusSeeOther, r.code, r.body)
	waitFor(t, "the purge of "+raw, 10*time.Second, func() bool { return get(raw, "").StatusCode == http.StatusNotFound })

	// And when it is renamed: a repository made under the old name later
	// must not show its pages.
	f.mustCLI("", "repo", "create", "alice/moving")
	moving := f.pushSample("alice/moving", "alice", tok)
	movingHead := strings.TrimSpace(testenv.Run(t, moving, "rev-parse", "HEAD"))
	raw = "/alice/moving/raw/" + movingHead + "/src/main.go"
	get(raw, "")
	require.Equal(t, "HIT", get(raw, "").Header.Get("X-Cache"))
	alice.get("/alice/moving/settings")
	r = alice.post("/alice/moving/settings", url.Values{"action": {"rename"}, "name": {"moved"}})
	require.Equal(t, http.StatusSeeOther, r.code, r.body)
	waitFor(t, "the purge of "+raw, 10*time.Second, func() bool { return get(raw, "").StatusCode == http.StatusNotFound })
	assert.Equal(t, http.StatusOK, get("/alice/moved/raw/"+movingHead+"/src/main.go", "").StatusCode)

	// Only forged's addresses may purge, and only a repository's key.
	purge := func(from, key string) int {
		tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest("PURGE", front+"/", nil)
		req.Header.Set("Surrogate-Key", key)
		res, err := tr.RoundTrip(req)
		require.NoError(t, err)
		res.Body.Close()
		return res.StatusCode
	}
	assert.Equal(t, http.StatusMethodNotAllowed, purge("127.0.0.2", "repo-1"), "not from elsewhere")
	assert.Equal(t, http.StatusBadRequest, purge("127.0.0.1", ".*"), "no ban expressions")
	assert.Equal(t, http.StatusOK, purge("127.0.0.1", "repo-1"))
}

// startNginx runs nginx with the server configuration site in dir (its
// pid, logs and temporary files too) until the test ends.
func startNginx(t testing.TB, nginx, dir, addr, site string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "site.conf"), []byte(site), 0o644))
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // the workers read the test's data directory
	}
	main := fmt.Sprintf(`%s
daemon off;
master_process on;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log;
events { worker_connections 256; }
http {
	access_log off;
	client_body_temp_path %[2]s/body;
	proxy_temp_path %[2]s/proxy;
	fastcgi_temp_path %[2]s/fastcgi;
	uwsgi_temp_path %[2]s/uwsgi;
	scgi_temp_path %[2]s/scgi;
	include %[2]s/site.conf;
}
`, user, dir)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(main), 0o644))
	startDaemon(t, addr, nginx, "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
}
