package main

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/internal/testenv"
	"github.com/forgekit/forgekit/slowlog"
)

// TestAdminProfilingAndSlowReports: an administrator gets a signed link
// that profiles one request, downloads the profile, and reads the
// reports of requests that ran past the slow threshold.
func TestAdminProfilingAndSlowReports(t *testing.T) {
	t.Parallel()
	f := newForge(t, "-slow", "1ms")
	f.user("boss", "-admin")
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	f.pushSample("alice/proj", "alice", tok)
	boss := f.browser()
	boss.login("boss", "boss-password")
	boss.get("/admin/")
	r := boss.post("/admin/", url.Values{"action": {"profile"}, "path": {"/alice/proj"}})
	require.Equal(t, http.StatusOK, r.code)
	m := regexp.MustCompile(`href="([^"]+__profile__=[^"]+)"`).FindStringSubmatch(r.body)
	require.NotNil(t, m, r.body)
	link := html.UnescapeString(m[1])
	require.True(t, strings.HasPrefix(link, f.ts.URL+"/alice/proj?__profile__="), link)

	anon := f.browser()
	r = anon.get(strings.TrimPrefix(link, f.ts.URL))
	require.Equal(t, http.StatusOK, r.code, "the page itself is served")
	prof := r.h.Get("X-Profile-URL")
	require.True(t, strings.HasPrefix(prof, "/admin/profiles/"), prof)
	assert.Equal(t, http.StatusNotFound, anon.get(prof).code, "profiles are for administrators")
	// The profile is written once the profiled response is complete:
	// a page to read, with the request's work, a flame graph and the
	// top functions, and the files to download.
	var p resp
	waitFor(t, "the profile page", 10*time.Second, func() bool { p = boss.get(prof); return p.code == http.StatusOK })
	assert.Contains(t, p.body, "Work: ")
	assert.Contains(t, p.body, `class="flame"`)
	assert.Contains(t, p.body, "Top functions")
	dl := boss.get(prof + ".pb.gz")
	assert.Equal(t, "\x1f\x8b", dl.body[:2], "a gzipped pprof profile")
	assert.Equal(t, http.StatusNotFound, anon.get(prof+".pb.gz").code)
	forged := anon.get("/alice/proj?__profile__=not-a-token")
	assert.Equal(t, http.StatusForbidden, forged.code)
	again := anon.get(strings.TrimPrefix(link, f.ts.URL))
	assert.Equal(t, http.StatusForbidden, again.code, "a token works once")
	r = boss.post("/admin/", url.Values{"action": {"profile"}, "path": {"/alice/proj"}})
	m = regexp.MustCompile(`href="[^"]+__profile__=([^"]+)"`).FindStringSubmatch(r.body)
	require.NotNil(t, m)
	other := anon.get("/alice?__profile__=" + html.UnescapeString(m[1]))
	assert.Equal(t, http.StatusForbidden, other.code, "a token works on its path only")

	// Slow reports: clones run past 1 ms (one is enough, unless this
	// machine is fast enough to clone between two watchdog ticks).
	slow := regexp.MustCompile(`(?m)^(\d+)\t\S+\tslow\tPOST git fetch`)
	var m2 []string
	waitFor(t, "a slow report", 30*time.Second, func() bool {
		testenv.Run(t, "", "clone", "-q", f.gitURL("alice/proj", "", ""), filepath.Join(t.TempDir(), "c"))
		m2 = slow.FindStringSubmatch(boss.get("/admin/slow/").body)
		return m2 != nil
	})
	rep := boss.get("/admin/slow/?seq=" + m2[1])
	assert.Equal(t, http.StatusOK, rep.code)
	assert.Contains(t, rep.body, "goroutine")
}

// TestCommitPages: history is paginated, newest first, 30 a page.
func TestCommitPages(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/long")
	src := filepath.Join(t.TempDir(), "src.git")
	testenv.BareRepo(t, src, testenv.RepoOptions{Commits: 35})
	testenv.Run(t, src, "push", "-q", f.gitURL("alice/long", "alice", tok), "main")
	anon := f.browser()
	r := anon.get("/alice/long/commits/main")
	require.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, 30, strings.Count(r.body, `class="sha"`))
	assert.Contains(t, r.body, `href="/alice/long/commits/main?page=2"`)
	assert.NotContains(t, r.body, "Newer")
	r = anon.get("/alice/long/commits/main?page=2")
	assert.Equal(t, 5, strings.Count(r.body, `class="sha"`))
	assert.Contains(t, r.body, "← Newer")
	assert.NotContains(t, r.body, "Older")
	assert.Equal(t, 0, strings.Count(anon.get("/alice/long/commits/main?page=3").body, `class="sha"`))
	assert.Equal(t, http.StatusNotFound, anon.get("/alice/long/commits/nobranch").code)
	assert.Equal(t, http.StatusNotFound, anon.get("/alice/long/blob/main/no/such/file").code)
	r = anon.get("/alice/long/tree/main/../../etc")
	require.Equal(t, http.StatusTemporaryRedirect, r.code, "ServeMux cleans the path")
	assert.Equal(t, "/alice/long/etc", r.h.Get("Location"))
	assert.Equal(t, http.StatusNotFound, anon.get("/alice/long/etc").code)
}

// TestTwoInstancesShareData: two servers on one data directory see each
// other's pushes, repositories and views.
func TestTwoInstancesShareData(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	g := newInstance(t, f.data)
	s2 := g.s

	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	work := f.pushSample("alice/proj", "alice", tok)
	one, two := f.browser(), g.browser()
	assert.Contains(t, two.get("/alice/proj").body, "Sample project", "the other instance serves the push")
	// A push through the second is seen by the first, past its go-git cache.
	assert.NotContains(t, one.get("/alice/proj").body, "Third")
	testenv.Run(t, work, "commit", "-q", "--allow-empty", "-m", "Third")
	testenv.Run(t, work, "push", "-q", g.gitURL("alice/proj", "alice", tok), "main")
	testenv.Run(t, work, "commit", "-q", "--allow-empty", "-m", "Fourth")
	testenv.Run(t, work, "push", "-q", g.gitURL("alice/proj", "alice", tok), "main")
	// (within refsTTL: the first instance reuses its ref list that long)
	waitFor(t, "the other instance's push", 10*time.Second, func() bool {
		return strings.Contains(one.get("/alice/proj/commits/main").body, "Fourth")
	})
	// Sessions signed by one are good at the other (one secret.key).
	alice := f.browser()
	alice.login("alice", "alice-password")
	u, _ := url.Parse(f.ts.URL)
	c := alice.c.Jar.Cookies(u)[0]
	other := g.browser()
	u2, _ := url.Parse(g.ts.URL)
	other.c.Jar.SetCookies(u2, []*http.Cookie{c})
	assert.Equal(t, http.StatusOK, other.get("/settings").code)
	// Views counted by both add up.
	require.NoError(t, f.s.views.Flush(context.Background()))
	require.NoError(t, s2.views.Flush(context.Background()))
	n, err := f.s.views.Total(context.Background(), "alice/proj", time.Unix(0, 0), time.Now().Add(time.Hour))
	require.NoError(t, err)
	assert.Equal(t, f.s.views.Stats().Counted+s2.views.Stats().Counted, n, "the views of both instances add up, none lost")
	assert.Positive(t, s2.views.Stats().Counted, "the second instance counted some")
}

// TestTreeAndBlobRedirect: a tree URL of a file and a blob URL of a
// directory go to the view that fits; a path that is neither is 404.
func TestTreeAndBlobRedirect(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	f.pushSample("alice/proj", "alice", tok)
	anon := f.browser()
	r := anon.get("/alice/proj/tree/main/src/main.go")
	assert.Equal(t, http.StatusFound, r.code)
	assert.Equal(t, "/alice/proj/blob/main/src/main.go", r.h.Get("Location"))
	assert.Empty(t, r.h.Get("ETag"))
	r = anon.get("/alice/proj/blob/main/src")
	assert.Equal(t, http.StatusFound, r.code)
	assert.Equal(t, "/alice/proj/tree/main/src", r.h.Get("Location"))
	assert.Equal(t, http.StatusNotFound, anon.get("/alice/proj/tree/main/nope").code)
	assert.Equal(t, http.StatusNotFound, anon.get("/alice/proj/blob/main/nope").code)
}

// smtpServer is an SMTP server on loopback that keeps the messages it
// receives: enough of RFC 5321 for net/smtp (EHLO, MAIL, RCPT, DATA,
// QUIT), no TLS, no authentication.
type smtpServer struct {
	addr string
	mu   sync.Mutex // guards msgs
	msgs []string
}

func startSMTP(t *testing.T) *smtpServer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &smtpServer{addr: l.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { s.serve(c) })
		}
	})
	return s
}

func (s *smtpServer) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	tp := textproto.NewConn(c)
	tp.PrintfLine("220 test ESMTP")
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		switch verb := strings.ToUpper(strings.SplitN(line, " ", 2)[0]); verb {
		case "EHLO", "HELO":
			tp.PrintfLine("250-test")
			tp.PrintfLine("250 8BITMIME")
		case "MAIL", "RCPT", "RSET", "NOOP":
			tp.PrintfLine("250 OK")
		case "DATA":
			tp.PrintfLine("354 go ahead")
			body, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, string(body))
			s.mu.Unlock()
			tp.PrintfLine("250 queued")
		case "QUIT":
			tp.PrintfLine("221 bye")
			return
		default:
			tp.PrintfLine("502 not implemented")
		}
	}
}

func (s *smtpServer) messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

// TestSlowReportsReachPeople: with -slow-mail and -slow-webhook, slow
// reports arrive by mail at an SMTP server and as JSON at a webhook
// receiver, both on loopback, throttled by stack signature.
func TestSlowReportsReachPeople(t *testing.T) {
	t.Parallel()
	mail := startSMTP(t)
	var hmu sync.Mutex
	var hooks []slowlog.Report
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rep slowlog.Report
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		hmu.Lock()
		hooks = append(hooks, rep)
		hmu.Unlock()
	}))
	defer receiver.Close()
	f := newForge(t, "-slow", "1ms",
		"-slow-mail", "smtp://"+mail.addr+"?from=forged@localhost&to=ops@localhost,dev@localhost",
		"-slow-webhook", receiver.URL+"/hook")
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	f.pushSample("alice/proj", "alice", tok)
	hooked := func() int {
		hmu.Lock()
		defer hmu.Unlock()
		return len(hooks)
	}
	waitFor(t, "a slow report by mail and by webhook", 60*time.Second, func() bool {
		testenv.Run(t, "", "clone", "-q", f.gitURL("alice/proj", "", ""), filepath.Join(t.TempDir(), "c"))
		return len(mail.messages()) > 0 && hooked() > 0
	})
	msg := mail.messages()[0]
	assert.Contains(t, msg, "To: ops@localhost, dev@localhost")
	assert.Contains(t, msg, "Subject: slow request:")
	assert.Contains(t, msg, "goroutine")
	assert.Contains(t, msg, "\nWork: ", "what the request had done so far")
	hmu.Lock()
	assert.NotEmpty(t, hooks[0].Route)
	hmu.Unlock()
	// A storm of the same slow request: a few messages, not one each.
	for range 15 {
		testenv.Run(t, "", "clone", "-q", f.gitURL("alice/proj", "", ""), filepath.Join(t.TempDir(), "c"))
	}
	assert.LessOrEqual(t, len(mail.messages()), slowlog.DefaultThrottleMax)

	_, err := parseFlags([]string{"-slow-mail", "smtp://localhost:25?from=x"}, io.Discard)
	assert.ErrorContains(t, err, "-slow-mail")
	_, err = parseFlags([]string{"-slow-webhook", "ftp://x"}, io.Discard)
	assert.ErrorContains(t, err, "-slow-webhook")
}

// TestProfiledRequestBudget: a profiled request runs under
// -profile-timeout instead of the page's limit; others keep theirs.
func TestProfiledRequestBudget(t *testing.T) {
	t.Parallel()
	f := newForge(t, "-profile-timeout", "45s", "-page-timeout", "2s")
	var got time.Duration
	probe := f.s.profiler.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = f.s.tbox.TimeoutFor(r)
	}))
	r := httptest.NewRequest("GET", "/alice/proj", nil)
	r.Header.Set("X-Profile-Token", f.s.profiler.Token("root", "/alice/proj", time.Minute))
	probe.ServeHTTP(httptest.NewRecorder(), r)
	assert.Equal(t, 45*time.Second, got)
	probe.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/alice/proj", nil))
	assert.Zero(t, got, "the page's own limit")
}

// TestFlightRecorderTrace: with -trace-window, a profile comes with an
// execution-trace snapshot of the request's last moments.
func TestFlightRecorderTrace(t *testing.T) {
	t.Parallel()
	f := newForge(t, "-trace-window", "2s")
	require.NotNil(t, f.s.flight, "the process's one flight recorder")
	anon := f.browser()
	r := anon.get("/explore?__profile__=" + url.QueryEscape(f.s.profiler.Token("root", "/explore", time.Minute)))
	require.Equal(t, http.StatusOK, r.code)
	page := r.h.Get("X-Profile-URL")
	var body string
	waitFor(t, "the profile page", 10*time.Second, func() bool {
		rec := httptest.NewRecorder()
		f.s.profiler.Handler().ServeHTTP(rec, httptest.NewRequest("GET", page, nil))
		body = rec.Body.String()
		return rec.Code == http.StatusOK
	})
	assert.Contains(t, body, ".trace\">execution trace</a>")
	rec := httptest.NewRecorder()
	f.s.profiler.Handler().ServeHTTP(rec, httptest.NewRequest("GET", page+".trace", nil))
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Positive(t, rec.Body.Len())
}
