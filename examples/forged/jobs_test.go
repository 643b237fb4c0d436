package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/internal/testenv"
	"github.com/forgekit/forgekit/slowlog"
)

// TestDeliverySurvivesStops: a push's webhook delivery outlives the
// process that queued it, however the process stops. The receiver is
// down; forged is stopped (kill -9, SIGTERM) or hands over to a new
// binary (SIGHUP); the delivery arrives, once, when the receiver is
// back, sent by the next process. "right after the push" kills forged
// as soon as git's push returns, before anything was attempted: the
// push's own work is a job too.
func TestDeliverySurvivesStops(t *testing.T) {
	t.Parallel()
	testenv.Git(t)
	bin := buildForged(t)
	for _, tc := range []struct {
		name    string
		sig     syscall.Signal
		atOnce  bool // stop right after the push, before the first attempt
		handoff bool // the signal starts the next process itself
	}{
		{name: "kill -9 while waiting for a retry", sig: syscall.SIGKILL},
		{name: "kill -9 right after the push", sig: syscall.SIGKILL, atOnce: true},
		{name: "SIGTERM while waiting for a retry", sig: syscall.SIGTERM},
		{name: "SIGHUP handoff while waiting for a retry", sig: syscall.SIGHUP, handoff: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data := t.TempDir()
			cli := func(stdin string, args ...string) string {
				cmd := exec.Command(bin, append(args, "-data", data)...)
				cmd.Stdin = strings.NewReader(stdin)
				out, err := cmd.CombinedOutput()
				require.NoError(t, err, "forged %s: %s", strings.Join(args, " "), out)
				return string(out)
			}
			cli("alice-password\n", "user", "add", "alice", "-password-stdin")
			tok := tokenRE.FindString(cli("", "token", "create", "alice", "-name", "t"))
			require.NotEmpty(t, tok)
			cli("", "repo", "create", "alice/proj")
			// The receiver's address, refusing connections for now.
			recvAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
			addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
			logPath := filepath.Join(data, "forged.log")
			var pids []int
			var mu sync.Mutex
			t.Cleanup(func() {
				mu.Lock()
				defer mu.Unlock()
				for _, p := range pids {
					syscall.Kill(p, syscall.SIGKILL)
				}
			})
			start := func() *exec.Cmd {
				cmd := exec.Command(bin, "-addr", addr, "-data", data, "-webhook-private", "-log", logPath)
				// A file, not a pipe: a process started by SIGHUP inherits it.
				out, err := os.Create(filepath.Join(t.TempDir(), "out"))
				require.NoError(t, err)
				t.Cleanup(func() { out.Close() })
				cmd.Stdout, cmd.Stderr = out, out
				require.NoError(t, cmd.Start())
				mu.Lock()
				pids = append(pids, cmd.Process.Pid)
				mu.Unlock()
				t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
				testenv.WaitListening(t, addr, 20*time.Second)
				return cmd
			}
			first := start()
			base := "http://" + addr
			req, err := http.NewRequest("POST", base+"/api/v1/repos/alice/proj/hooks",
				strings.NewReader(`{"config": {"url": "http://`+recvAddr+`/hook", "secret": "s"}, "events": ["push"]}`))
			require.NoError(t, err)
			req.Header.Set("Authorization", "token "+tok)
			res, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			res.Body.Close()
			require.Equal(t, http.StatusCreated, res.StatusCode)

			work := t.TempDir()
			testenv.Run(t, "", "init", "-q", "-b", "main", work)
			require.NoError(t, os.WriteFile(filepath.Join(work, "a"), []byte("a\n"), 0o644))
			testenv.Run(t, work, "add", ".")
			testenv.Run(t, work, "commit", "-q", "-m", "a")
			u, _ := url.Parse(base + "/alice/proj.git")
			u.User = url.UserPassword("alice", tok)
			testenv.Run(t, work, "push", "-q", u.String(), "main")

			meta, err := forge.OpenMeta(context.Background(), filepath.Join(data, "forge.db"))
			require.NoError(t, err)
			defer meta.Close()
			info, err := meta.RepoInfo(context.Background(), "alice", "proj")
			require.NoError(t, err)
			hooks, err := meta.Webhooks(context.Background(), info.ID)
			require.NoError(t, err)
			require.Len(t, hooks, 1)
			if !tc.atOnce {
				waitFor(t, "the first, failed attempt", 20*time.Second, func() bool {
					d, _ := meta.Deliveries(context.Background(), hooks[0].ID, 10)
					return len(d) == 1 && d[0].Attempts >= 1
				})
			}
			require.NoError(t, first.Process.Signal(tc.sig))
			if tc.handoff {
				// The new process serves; the old one drains and exits.
				var m [][]byte
				waitFor(t, "the new process", 30*time.Second, func() bool {
					logs, _ := os.ReadFile(logPath)
					m = regexp.MustCompile(`"msg":"restart: the new process serves; draining","pid":(\d+)`).FindSubmatch(logs)
					return m != nil
				})
				pid, _ := strconv.Atoi(string(m[1]))
				mu.Lock()
				pids = append(pids, pid)
				mu.Unlock()
			}
			first.Wait()

			got := make(chan string, 8)
			rl, err := net.Listen("tcp", recvAddr)
			require.NoError(t, err)
			recv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got <- r.Header.Get("X-Forgekit-Delivery")
			})}
			go recv.Serve(rl)
			defer recv.Close()
			if !tc.handoff {
				start()
			}
			select {
			case id := <-got:
				assert.NotEmpty(t, id)
			case <-time.After(3 * time.Minute): // a killed job waits for the rescuer (30 s) to find it stuck (40 s)
				t.Fatal("the delivery was lost with the stopped process")
			}
			waitFor(t, "the delivery recorded", 20*time.Second, func() bool {
				d, _ := meta.Deliveries(context.Background(), hooks[0].ID, 10)
				return len(d) == 1 && !d[0].DeliveredAt.IsZero()
			})
			select {
			case id := <-got:
				t.Fatalf("delivered twice (%s)", id)
			default:
			}
		})
	}
}

// TestWebhooksExactlyOnceAcrossInstances: three instances on one
// PostgreSQL database, pushes through each in turn: every push reaches
// each of the two webhooks once, whichever instance ran its jobs.
func TestWebhooksExactlyOnceAcrossInstances(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	data := t.TempDir()
	var instances []*testForge
	for range 3 {
		instances = append(instances, newInstance(t, data, "-db", dsn, "-webhook-private"))
	}
	a := instances[0]
	a.mustCLI("alice-password\n", "user", "add", "alice", "-password-stdin", "-db", dsn)
	tok := tokenRE.FindString(a.mustCLI("", "token", "create", "alice", "-db", dsn))
	a.mustCLI("", "repo", "create", "alice/proj", "-db", dsn)

	type hit struct{ hook, delivery, push string }
	var mu sync.Mutex
	var hits []hit
	ctx := context.Background()
	info, err := a.s.forge.Meta.RepoInfo(ctx, "alice", "proj")
	require.NoError(t, err)
	for _, hook := range []string{"ci", "chat"} {
		recv := newReceiver(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
			var ev struct {
				ID int64 `json:"id"`
			}
			require.NoError(t, json.Unmarshal(body, &ev))
			mu.Lock()
			hits = append(hits, hit{hook, r.Header.Get("X-Forgekit-Delivery"), fmt.Sprint(ev.ID)})
			mu.Unlock()
		})
		_, err = a.s.forge.AddWebhook(ctx, info.ID, recv, "s")
		require.NoError(t, err)
	}

	work := a.pushSample("alice/proj", "alice", tok)
	const pushes = 9
	for i := range pushes {
		in := instances[i%3]
		require.NoError(t, os.WriteFile(filepath.Join(work, "n"), []byte(strconv.Itoa(i)), 0o644))
		testenv.Run(t, work, "add", "n")
		testenv.Run(t, work, "commit", "-qm", strconv.Itoa(i))
		testenv.Run(t, work, "push", "-q", in.gitURL("alice/proj", "alice", tok), "main")
	}
	want := 2 * (pushes + 1) // and pushSample's, to each webhook
	waitFor(t, "every delivery", 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(hits) >= want
	})
	// Every instance's queue is idle once no job is left to run.
	waitFor(t, "the queue to empty", 60*time.Second, func() bool {
		counts, err := a.s.queue.counts(ctx)
		if err != nil {
			return false
		}
		for _, byState := range counts {
			for state, n := range byState {
				if n > 0 && state != "completed" {
					return false
				}
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	assert.Len(t, hits, want, "each push once to each webhook")
	deliveries, pushes2 := map[string]bool{}, map[[2]string]bool{}
	for _, h := range hits {
		assert.False(t, deliveries[h.delivery], "delivery %s twice", h.delivery)
		assert.False(t, pushes2[[2]string{h.hook, h.push}], "push %s twice to %s", h.push, h.hook)
		deliveries[h.delivery], pushes2[[2]string{h.hook, h.push}] = true, true
	}
}

// oneTryForge is a forge whose webhook deliveries are given up after
// one failed attempt, reaching loopback receivers, with alice, her
// token and her repository alice/proj.
func oneTryForge(t *testing.T) (*testForge, string, *forge.RepoInfo) {
	t.Helper()
	f := newForge(t, "-webhook-private")
	f.s.hooks.Attempts = 1
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	info, err := f.s.forge.Meta.RepoInfo(context.Background(), "alice", "proj")
	require.NoError(t, err)
	return f, tok, info
}

// newReceiver serves a webhook receiver on loopback until the test
// ends and returns its URL.
func newReceiver(t *testing.T, h func(w http.ResponseWriter, r *http.Request, body []byte)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h(w, r, body)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String() + "/hook"
}

// TestBadReceivers: receivers that hang, answer 500, redirect, or answer
// 10 MB. Each delivery is a job in a time box, recorded with what
// happened; a receiver that hangs holds one worker, and the other jobs
// keep flowing meanwhile. The failures end up discarded, counted by
// kind in the metrics.
func TestBadReceivers(t *testing.T) {
	t.Parallel()
	f, tok, info := oneTryForge(t)
	ctx := context.Background()

	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	good := make(chan string, 8)
	goodURL := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) { good <- r.Header.Get("X-Forgekit-Delivery") })
	receivers := []struct {
		name  string
		h     func(w http.ResponseWriter, r *http.Request, body []byte)
		check func(t *testing.T, d forge.Delivery)
	}{
		{"hangs", func(w http.ResponseWriter, r *http.Request, _ []byte) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}, func(t *testing.T, d forge.Delivery) {
			assert.Zero(t, d.Status)
			assert.Contains(t, d.Error, "Timeout")
		}},
		{"answers 500", func(w http.ResponseWriter, r *http.Request, _ []byte) { w.WriteHeader(500) },
			func(t *testing.T, d forge.Delivery) { assert.Equal(t, 500, d.Status) }},
		{"redirects", func(w http.ResponseWriter, r *http.Request, _ []byte) { http.Redirect(w, r, goodURL, http.StatusFound) },
			func(t *testing.T, d forge.Delivery) { assert.Equal(t, http.StatusFound, d.Status, "not followed") }},
		{"answers 10 MB", func(w http.ResponseWriter, r *http.Request, _ []byte) {
			chunk := make([]byte, 1<<20)
			for range 10 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}, func(t *testing.T, d forge.Delivery) {
			assert.Equal(t, 200, d.Status)
			assert.False(t, d.DeliveredAt.IsZero(), "delivered; the body is not read past 64 KiB")
		}},
	}
	hookIDs := make([]int64, len(receivers))
	for i, rc := range receivers {
		h, err := f.s.forge.AddWebhook(ctx, info.ID, newReceiver(t, rc.h), "s")
		require.NoError(t, err)
		hookIDs[i] = h.ID
	}
	_, err := f.s.forge.AddWebhook(ctx, info.ID, goodURL, "s")
	require.NoError(t, err)
	f.pushSample("alice/proj", "alice", tok)

	select {
	case <-good: // while the hanging receiver still hangs
	case <-time.After(30 * time.Second):
		t.Fatal("a hanging receiver held up the other deliveries")
	}
	for i, rc := range receivers {
		var d forge.Delivery
		waitFor(t, rc.name+" recorded", 30*time.Second, func() bool {
			log, _ := f.s.forge.Meta.Deliveries(ctx, hookIDs[i], 10)
			if len(log) == 1 && log[0].Attempts == 1 {
				d = log[0]
				return true
			}
			return false
		})
		t.Run(rc.name, func(t *testing.T) { rc.check(t, d) })
	}
	select {
	case id := <-good:
		t.Fatalf("the redirect was followed (delivery %s)", id)
	default:
	}
	waitFor(t, "the failures discarded", 30*time.Second, func() bool {
		counts, _ := f.s.queue.counts(ctx)
		return counts["webhook_delivery"]["discarded"] == 3
	})
	m := f.browser().get("/metrics").body
	assert.Contains(t, m, `forged_jobs_worked_total{kind="webhook_delivery",outcome="discarded"} 3`)
	assert.Contains(t, m, `forged_jobs_worked_total{kind="webhook_delivery",outcome="ok"} 2`)
	assert.Contains(t, m, `forged_job_duration_seconds_count{kind="push"}`)
}

// TestJobsCarryTheirOrigin: a job names the request that queued it
// (its X-Request-Id) in its metadata, its log line and the reports of
// the watchdog, which watches it like a request.
func TestJobsCarryTheirOrigin(t *testing.T) {
	t.Parallel()
	// The front cache's purge endpoint answers once the test has seen
	// the job at work.
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	cache := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	var logs syncBuffer
	cfg, err := parseFlags([]string{"-data", t.TempDir(), "-purge", cache, "-slow", "50ms"}, io.Discard)
	require.NoError(t, err)
	s, err := newServer(context.Background(), cfg, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	require.NoError(t, err)
	ts := httptest.NewServer(s.handler)
	t.Cleanup(func() { ts.Close(); s.Close() })
	f := &testForge{t: t, s: s, ts: ts, data: cfg.data}
	f.user("alice", "-admin")
	f.mustCLI("", "repo", "create", "alice/proj")
	alice := f.browser()
	alice.login("alice", "alice-password")
	alice.get("/alice/proj/settings")
	// Made private: its pages are purged from the front cache, by a job.
	r := alice.post("/alice/proj/settings", url.Values{"action": {"general"}, "private": {"on"}, "default_branch": {"main"}})
	require.Equal(t, http.StatusSeeOther, r.code, r.body)
	reqID := r.h.Get("X-Request-Id")
	require.NotEmpty(t, reqID)
	waitFor(t, "the purge job at work", 20*time.Second, func() bool {
		return strings.Contains(alice.get("/admin/jobs?kind=purge&state=running").body, "<td class=\"muted\">"+reqID+"</td>")
	})
	// The watchdog reports it as a job started by the request.
	var rep *slowlog.Report
	waitFor(t, "its slow report", 20*time.Second, func() bool {
		for _, r := range s.watchdog.Reports() {
			if r.Kind == "job" && r.Route == "job purge" {
				rep = r
				return true
			}
		}
		return false
	})
	assert.Equal(t, reqID, rep.Parent)
	require.NotNil(t, rep.Work, "its own work, counted")
	once.Do(func() { close(release) })
	waitFor(t, "its log line", 20*time.Second, func() bool {
		return strings.Contains(logs.String(), `"msg":"job","kind":"purge"`)
	})
	var line map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"msg":"job","kind":"purge"`) {
			require.NoError(t, json.Unmarshal([]byte(l), &line))
		}
	}
	assert.Equal(t, reqID, line["origin"])
	assert.Equal(t, "ok", line["outcome"])
	assert.Contains(t, line, "queries")
}

// TestAdminJobsPage: the administrator sees the queue by kind and
// state, and retries and cancels jobs; nobody else sees the page.
func TestAdminJobsPage(t *testing.T) {
	t.Parallel()
	f, tok, info := oneTryForge(t)
	f.user("root", "-admin")
	ctx := context.Background()
	var fail sync.Map
	fail.Store("on", true)
	got := make(chan string, 4)
	recv := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if _, ok := fail.Load("on"); ok {
			w.WriteHeader(503)
			return
		}
		got <- r.Header.Get("X-Forgekit-Delivery")
	})
	_, err := f.s.forge.AddWebhook(ctx, info.ID, recv, "s")
	require.NoError(t, err)
	f.pushSample("alice/proj", "alice", tok)

	anon, alice, root := f.browser(), f.browser(), f.browser()
	alice.login("alice", "alice-password")
	root.login("root", "root-password")
	assert.Equal(t, http.StatusNotFound, anon.get("/admin/jobs").code)
	assert.Equal(t, http.StatusNotFound, alice.get("/admin/jobs").code)
	var page string
	waitFor(t, "the discarded delivery", 20*time.Second, func() bool {
		page = root.get("/admin/jobs").body
		return strings.Contains(page, "webhook answered 503")
	})
	assert.Contains(t, page, `<td>webhook_delivery</td>`)
	assert.Contains(t, page, `href="?kind=webhook_delivery&amp;state=discarded">1</a>`, "the count by kind and state")
	m := regexp.MustCompile(`name="action" value="retry"><input type="hidden" name="id" value="(\d+)"`).FindStringSubmatch(page)
	require.NotNil(t, m, page)

	// Only with the form's CSRF token.
	bad := root.post("/admin/jobs", url.Values{"action": {"retry"}, "id": {m[1]}, "csrf": {"forged"}})
	assert.Equal(t, http.StatusForbidden, bad.code)
	fail.Delete("on")
	r := root.post("/admin/jobs", url.Values{"action": {"retry"}, "id": {m[1]}})
	assert.Contains(t, r.body, "is now available")
	select {
	case <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("the retried job did not run")
	}
	assert.Contains(t, root.post("/admin/jobs", url.Values{"action": {"cancel"}, "id": {"999999"}}).body, "There is no job 999999")
	assert.Equal(t, http.StatusBadRequest, root.post("/admin/jobs", url.Values{"action": {"explode"}, "id": {m[1]}}).code)
	assert.Equal(t, http.StatusNotFound, alice.post("/admin/jobs", url.Values{"action": {"retry"}, "id": {m[1]}}).code)
}

// TestPushWarmsPages: the jobs a push queues make what its first
// viewers ask for: the last commits of the root at the new head, and
// the archives of a new tag.
func TestPushWarmsPages(t *testing.T) {
	t.Parallel()
	f := newForge(t)
	f.s.repo.pageBudget = time.Nanosecond // a view never waits for a walk
	f.user("alice")
	tok := f.token("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	f.pushSample("alice/proj", "alice", tok) // main, feature/login, v1.0
	ctx := context.Background()
	waitFor(t, "the push's jobs", 30*time.Second, func() bool {
		counts, err := f.s.queue.counts(ctx)
		return err == nil && counts["last_commits"]["completed"] == 1 && counts["archive"]["completed"] == 1
	})
	assert.Equal(t, int64(2), f.s.archiver.Stats().Generated, "tar.gz and zip of v1.0")
	walks := f.s.lastCommits.Stats().Walks
	r := f.browser().get("/alice/proj")
	assert.Contains(t, r.body, "Say &lt;b&gt;hi", "the last commits, on the first view")
	assert.NotContains(t, r.body, "data-fill")
	assert.Equal(t, walks, f.s.lastCommits.Stats().Walks)
	res := f.browser().get("/alice/proj/archive/v1.0.tar.gz")
	if res.code == http.StatusFound {
		res = f.browser().get(res.h.Get("Location"))
	}
	assert.Equal(t, http.StatusOK, res.code)
	assert.Equal(t, int64(2), f.s.archiver.Stats().Generated, "served what the job made")
}

// TestMaintenanceJobs: a repository's maintenance is a job, unique per
// repository among those waiting and running: queued twice, by one
// instance or two on one database, it runs once, without a lock file.
// The periodic tick that finds repositories in need runs at start.
func TestMaintenanceJobs(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	data := t.TempDir()
	a := newInstance(t, data, "-db", dsn)
	b := newInstance(t, data, "-db", dsn)
	a.mustCLI("alice-password\n", "user", "add", "alice", "-password-stdin", "-db", dsn)
	tok := tokenRE.FindString(a.mustCLI("", "token", "create", "alice", "-db", dsn))
	a.mustCLI("", "repo", "create", "alice/proj", "-db", dsn)
	work := a.pushSample("alice/proj", "alice", tok)
	for i := range 3 { // loose objects, a pack per push
		require.NoError(t, os.WriteFile(filepath.Join(work, "n"), []byte(strconv.Itoa(i)), 0o644))
		testenv.Run(t, work, "add", "n")
		testenv.Run(t, work, "commit", "-qm", strconv.Itoa(i))
		testenv.Run(t, work, "push", "-q", b.gitURL("alice/proj", "alice", tok), "main")
	}
	ctx := context.Background()
	info, err := a.s.forge.Meta.RepoInfo(ctx, "alice", "proj")
	require.NoError(t, err)
	repo, err := a.s.forge.Store.Get("alice", "proj")
	require.NoError(t, err)

	// Queued by both instances at once: one job.
	require.NoError(t, a.s.queue.client.QueuePause(ctx, slowQueue, nil))
	var skipped int
	for _, in := range []*testForge{a, b, a} {
		res, err := in.s.queue.client.Insert(ctx, maintainArgs{RepoID: info.ID}, &river.InsertOpts{Queue: slowQueue, UniqueOpts: untilRun})
		require.NoError(t, err)
		if res.UniqueSkippedAsDuplicate {
			skipped++
		}
	}
	assert.Equal(t, 2, skipped)
	require.NoError(t, a.s.queue.client.QueueResume(ctx, slowQueue, nil))
	waitFor(t, "the maintenance", 60*time.Second, func() bool {
		counts, err := a.s.queue.counts(ctx)
		return err == nil && counts["maintain"]["completed"] == 1
	})
	loose, packs := forge.Counts(repo.Dir)
	assert.Zero(t, loose)
	assert.Equal(t, 1, packs)
	assert.NoFileExists(t, filepath.Join(repo.Dir, "forgekit-maintenance.lock"))
	assert.Len(t, append(a.s.maint.Results(), b.s.maint.Results()...), 1, "run by one instance")
	waitFor(t, "the periodic tick, queued at start by the leader", 60*time.Second, func() bool {
		counts, err := a.s.queue.counts(ctx)
		return err == nil && counts["maintain_tick"]["completed"] == 1
	})
}

// TestCommandsQueuePurges: forged repo rename and delete, run as
// commands beside the server, purge front caches as the settings page
// does: through a job the server fans out to the caches it knows.
func TestCommandsQueuePurges(t *testing.T) {
	t.Parallel()
	purges := make(chan string, 4)
	cache := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if r.Method == "PURGE" {
			purges <- r.Header.Get("Surrogate-Key")
		}
	})
	f := newForge(t, "-purge", cache)
	f.user("alice")
	f.mustCLI("", "repo", "create", "alice/proj")
	info, err := f.s.forge.Meta.RepoInfo(context.Background(), "alice", "proj")
	require.NoError(t, err)
	for _, args := range [][]string{{"repo", "rename", "alice/proj", "tool"}, {"repo", "delete", "alice/tool"}} {
		out := f.mustCLI("", args...)
		assert.NotContains(t, out, "warning")
		select {
		case key := <-purges:
			assert.Equal(t, surrogateKey(info.ID), key, args[1])
		case <-time.After(20 * time.Second):
			t.Fatalf("forged %s purged no cache", strings.Join(args, " "))
		}
	}
}
