package slowlog_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/forgekit/forgekit/slowlog"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

// chanSink collects reports.
type chanSink chan *slowlog.Report

func (c chanSink) Send(ctx context.Context, r *slowlog.Report) error {
	c <- r
	return nil
}

func next(t *testing.T, c chanSink) *slowlog.Report {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("no report")
		return nil
	}
}

//go:noinline
func blockInHandler(release <-chan struct{}) { <-release }

//go:noinline
func childWorker(release <-chan struct{}) { <-release }

func TestSlowRequestReport(t *testing.T) {
	t.Parallel()
	sink := make(chanSink, 16)
	wd := &slowlog.Watchdog{
		// Far enough apart that a watchdog delayed by a loaded machine
		// still sees them one at a time.
		Thresholds: []time.Duration{40 * time.Millisecond, 400 * time.Millisecond},
		Tick:       5 * time.Millisecond,
		Sink:       sink,
		Principal:  func(r *http.Request) string { return "alice" },
	}
	defer wd.Close()
	release := make(chan struct{})
	mux := http.NewServeMux()
	wd.Route = func(r *http.Request) string { _, p := mux.Handler(r); return p }
	mux.HandleFunc("GET /repos/{name}", func(w http.ResponseWriter, r *http.Request) {
		slowlog.Annotate(r.Context(), "step", "loading tree")
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); childWorker(release) }()
		blockInHandler(release)
		wg.Wait()
		w.WriteHeader(http.StatusTeapot)
	})
	srv := httptest.NewServer(wd.Handler(mux))
	defer srv.Close()
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := http.Get(srv.URL + "/repos/proj?token=s3cret&page=2")
		if err == nil {
			resp.Body.Close()
		}
		done <- resp
	}()

	first := next(t, sink)
	second := next(t, sink)
	// Both arrived while the request was still running.
	select {
	case <-done:
		t.Fatal("the request ended before its reports")
	default:
	}
	assert.Equal(t, 40*time.Millisecond, first.Threshold)
	assert.Equal(t, 400*time.Millisecond, second.Threshold)
	for _, r := range []*slowlog.Report{first, second} {
		assert.Equal(t, "/repos/{name}", r.Route, "the method apart")
		assert.Equal(t, "GET", r.Method)
		assert.Equal(t, "alice", r.Principal)
		assert.NotContains(t, r.URL, "s3cret")
		assert.Contains(t, r.URL, "token=REDACTED")
		text := r.String()
		assert.Contains(t, text, "slowlog_test.blockInHandler")
		assert.Contains(t, text, "slowlog_test.childWorker", "goroutines started by the handler are in the report")
		assert.Contains(t, text, "[chan receive]")
		assert.Contains(t, text, "step = loading tree")
		assert.Positive(t, r.Goroutines)
		assert.Positive(t, r.PID)
	}
	close(release)
	final := next(t, sink)
	assert.True(t, final.Final)
	assert.Equal(t, http.StatusTeapot, final.Status)
	assert.GreaterOrEqual(t, final.Elapsed, 400*time.Millisecond)
	<-done
	s := wd.Stats()
	assert.Equal(t, int64(2), s.Reports)
	assert.Equal(t, int64(1), s.Finals)
	assert.Zero(t, s.InFlight)
	http.DefaultClient.CloseIdleConnections()
}

func TestFastRequestsAreQuiet(t *testing.T) {
	t.Parallel()
	sink := make(chanSink, 16)
	wd := &slowlog.Watchdog{Threshold: time.Minute, Sink: sink}
	defer wd.Close()
	h := wd.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	for range 100 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		assert.Equal(t, "ok", rec.Body.String())
	}
	assert.Empty(t, sink)
	assert.Equal(t, int64(100), wd.Stats().Requests)
	assert.Zero(t, wd.Stats().InFlight)
}

func TestDedupAndDrops(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	delivered := make(chan *slowlog.Report, 100)
	wd := &slowlog.Watchdog{
		Thresholds: []time.Duration{20 * time.Millisecond},
		Tick:       5 * time.Millisecond,
		Sink: slowlog.SinkFunc(func(ctx context.Context, r *slowlog.Report) error {
			delivered <- r
			return nil
		}),
	}
	defer wd.Close()
	h := wd.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/same", nil))
		}()
	}
	require.Eventually(t, func() bool { s := wd.Stats(); return s.Reports+s.Suppressed == 5 }, 20*time.Second, 5*time.Millisecond)
	s := wd.Stats()
	assert.Equal(t, int64(1), s.Reports, "one full report per route per interval")
	assert.Equal(t, int64(4), s.Suppressed)
	close(block)
	wg.Wait()
}

func TestQueueFullDrops(t *testing.T) {
	t.Parallel()
	stuck := make(chan struct{})
	wd := &slowlog.Watchdog{
		Thresholds:    []time.Duration{10 * time.Millisecond},
		Tick:          2 * time.Millisecond,
		QueueSize:     1,
		DedupInterval: -1,
		Sink:          slowlog.SinkFunc(func(ctx context.Context, r *slowlog.Report) error { <-stuck; return nil }),
	}
	block := make(chan struct{})
	h := wd.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() { defer wg.Done(); h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil)) }()
	}
	require.Eventually(t, func() bool { return wd.Stats().Dropped > 0 }, 20*time.Second, 5*time.Millisecond)
	close(block)
	wg.Wait()
	close(stuck)
	wd.Close()
}

func TestGoroutineCeiling(t *testing.T) {
	t.Parallel()
	sink := make(chanSink, 4)
	wd := &slowlog.Watchdog{Thresholds: []time.Duration{10 * time.Millisecond}, Tick: 2 * time.Millisecond, MaxGoroutines: 1, Sink: sink}
	defer wd.Close()
	wd.Do(context.Background(), "nightly gc", func(ctx context.Context) { next(t, sink) })
	// The report came without stacks, saying why.
	assert.Equal(t, int64(1), wd.Stats().Skipped)
	final := next(t, sink)
	assert.True(t, final.Final)
	assert.Equal(t, "job", final.Kind)
}

func TestCaptureAndJobs(t *testing.T) {
	t.Parallel()
	sink := make(chanSink, 4)
	wd := &slowlog.Watchdog{Threshold: time.Hour, Sink: sink}
	defer wd.Close()
	assert.False(t, slowlog.Capture(context.Background(), "nothing"))
	wd.Do(context.Background(), "reindex", func(ctx context.Context) {
		slowlog.Annotate(ctx, "repo", "alice/proj")
		require.True(t, slowlog.Capture(ctx, "time box expired"))
	})
	r := next(t, sink)
	assert.Equal(t, "reindex", r.Route)
	assert.Equal(t, "time box expired", r.Reason)
	assert.Contains(t, r.String(), "TestCaptureAndJobs")
	assert.Contains(t, r.String(), "repo = alice/proj")
	final := next(t, sink)
	assert.True(t, final.Final)
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, in, want string }{
		{name: "plain", in: "https://forge.example/a/b", want: "https://forge.example/a/b"},
		{name: "credentials", in: "https://user:pw@forge.example/a", want: "https://forge.example/a"},
		{name: "query", in: "/search?q=secret&token=t", want: "/search?q=REDACTED&token=REDACTED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, slowlog.RedactURL(u))
		})
	}
}

func sampleReport() *slowlog.Report {
	return &slowlog.Report{ID: "7", Kind: "request", Method: "GET", Route: "/x", Start: time.Now(), Elapsed: time.Second,
		Stacks: []slowlog.Stack{{Count: 1, State: "sleep", Frames: []slowlog.Frame{{Func: "main.f", File: "main.go", Line: 3}}}}}
}

func TestDirSink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := &slowlog.DirSink{Dir: dir, MaxFiles: 3}
	for i := range 5 {
		r := sampleReport()
		r.Seq = i
		require.NoError(t, s.Send(context.Background(), r))
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.txt"))
	assert.Len(t, files, 3)
	b, _ := os.ReadFile(files[len(files)-1])
	assert.Contains(t, string(b), "main.f")
}

func TestWebhookSink(t *testing.T) {
	t.Parallel()
	got := make(chan slowlog.Report, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rep slowlog.Report
		json.NewDecoder(r.Body).Decode(&rep)
		got <- rep
	}))
	defer srv.Close()
	require.NoError(t, slowlog.WebhookSink{URL: srv.URL, Client: srv.Client()}.Send(context.Background(), sampleReport()))
	rep := <-got
	assert.Equal(t, "7", rep.ID)
	assert.Equal(t, "main.f", rep.Stacks[0].Frames[0].Func)
	srv.Client().CloseIdleConnections()
}

// smtpServer is a tiny SMTP listener that accepts one message.
func smtpServer(t *testing.T) (addr string, msgs <-chan string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	out := make(chan string, 1)
	go func() {
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		say := func(s string) { io.WriteString(c, s+"\r\n") }
		say("220 test")
		var data strings.Builder
		inData := false
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if inData {
				if line == ".\r\n" {
					inData = false
					out <- data.String()
					say("250 ok")
					continue
				}
				data.WriteString(line)
				continue
			}
			switch cmd := strings.ToUpper(strings.Fields(line + " x")[0]); cmd {
			case "EHLO", "HELO":
				say("250 test")
			case "DATA":
				inData = true
				say("354 go on")
			case "QUIT":
				say("221 bye")
				return
			default:
				say("250 ok")
			}
		}
	}()
	return ln.Addr().String(), out
}

func TestEmailSink(t *testing.T) {
	t.Parallel()
	addr, msgs := smtpServer(t)
	s := slowlog.EmailSink{Addr: addr, From: "forge@example.com", To: []string{"ops@example.com"}}
	require.NoError(t, s.Send(context.Background(), sampleReport()))
	msg := <-msgs
	assert.Contains(t, msg, "Subject: slow request: GET /x")
	assert.Contains(t, msg, "main.f")
}

func TestReportsHandler(t *testing.T) {
	t.Parallel()
	sink := make(chanSink, 4)
	wd := &slowlog.Watchdog{Threshold: time.Hour, Sink: sink}
	defer wd.Close()
	wd.Do(context.Background(), "job-a", func(ctx context.Context) { slowlog.Capture(ctx, "manual") })
	h := wd.ReportsHandler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	assert.Contains(t, rec.Body.String(), "job-a")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/?seq=1", nil))
	assert.Contains(t, rec.Body.String(), "Reason: manual")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/?seq=99", nil))
	assert.Equal(t, 404, rec.Code)
}

// The flight recorder is one per process: this is the only test that
// starts one.
func TestFlightRecorderSnapshot(t *testing.T) {
	fr := trace.NewFlightRecorder(trace.FlightRecorderConfig{MaxBytes: 4 << 20})
	require.NoError(t, fr.Start())
	defer fr.Stop()
	sink := make(chanSink, 8)
	dir := t.TempDir()
	wd := &slowlog.Watchdog{Thresholds: []time.Duration{20 * time.Millisecond}, Tick: 5 * time.Millisecond, Sink: sink,
		FlightRecorder: fr, TraceDir: dir}
	defer wd.Close()
	release := make(chan struct{})
	h := wd.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { blockInHandler(release) }))
	done := make(chan struct{})
	go func() { defer close(done); h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/t", nil)) }()
	r := next(t, sink)
	close(release)
	<-done
	require.NotEmpty(t, r.Trace)
	b, err := os.ReadFile(r.Trace)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(b), "go 1."), "a Go execution trace")
	assert.Contains(t, r.String(), "go tool trace")
}

// spin burns CPU for d so that the CPU profile has samples.
//
//go:noinline
func spin(d time.Duration) int {
	n := 0
	for start := time.Now(); time.Since(start) < d; n++ {
	}
	return n
}

// Not parallel: the CPU profiler is one per process.
func TestProfiler(t *testing.T) {
	key := []byte(strings.Repeat("k", 32))
	p := slowlog.NewProfiler(key)
	p.Dir = t.TempDir()
	p.URLPrefix = "/admin/profiles/"
	var audit []string
	var amu sync.Mutex
	p.Audit = func(r *http.Request, subject, outcome string) {
		amu.Lock()
		defer amu.Unlock()
		audit = append(audit, subject+": "+outcome)
	}
	var profiled atomic.Bool
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		profiled.Store(slowlog.Profiled(r.Context()))
		slowlog.Count(r.Context(), slowlog.Query, time.Millisecond)
		spin(300 * time.Millisecond)
		io.WriteString(w, "page")
	})
	mw := p.Middleware(inner)
	// The request's Work, as an access log would put it.
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mw.ServeHTTP(w, r.WithContext(slowlog.WithWork(r.Context(), &slowlog.Work{})))
	})

	t.Run("tokens", func(t *testing.T) {
		tok := p.Token("admin", "/page", time.Minute)
		_, err := p.Verify(tok, "/page", time.Now().Add(2*time.Minute))
		assert.ErrorIs(t, err, slowlog.ErrBadToken, "expired")
		_, err = p.Verify(tok[:len(tok)-2]+"xx", "/page", time.Now())
		assert.ErrorIs(t, err, slowlog.ErrBadToken, "forged")
		_, err = slowlog.NewProfiler([]byte(strings.Repeat("x", 32))).Verify(tok, "/page", time.Now())
		assert.ErrorIs(t, err, slowlog.ErrBadToken, "another key")
		_, err = p.Verify(tok, "/other", time.Now())
		assert.ErrorIs(t, err, slowlog.ErrBadToken, "another path")
		sub, err := p.Verify(tok, "/page", time.Now())
		require.NoError(t, err)
		assert.Equal(t, "admin", sub)
		_, err = p.Verify(tok, "/page", time.Now())
		assert.ErrorIs(t, err, slowlog.ErrBadToken, "used once already")
	})
	t.Run("refused without a valid token", func(t *testing.T) {
		rec := httptest.NewRecorder()
		app.ServeHTTP(rec, httptest.NewRequest("GET", "/page?__profile__=nonsense", nil))
		assert.Equal(t, http.StatusForbidden, rec.Code)
		rec = httptest.NewRecorder()
		app.ServeHTTP(rec, httptest.NewRequest("GET", "/page", nil))
		assert.Equal(t, "page", rec.Body.String())
		assert.Empty(t, rec.Header().Get("X-Profile-URL"))
	})
	for _, tc := range []struct {
		name    string
		busyCPU bool
	}{
		{name: "cpu profile"},
		{name: "goroutine sampling when the CPU profiler is taken", busyCPU: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.busyCPU {
				require.NoError(t, pprof.StartCPUProfile(io.Discard))
				defer pprof.StopCPUProfile()
			}
			req := httptest.NewRequest("GET", "/page", nil)
			req.Header.Set("X-Profile-Token", p.Token("admin", "/page", time.Minute))
			rec := httptest.NewRecorder()
			app.ServeHTTP(rec, req)
			assert.Equal(t, "page", rec.Body.String())
			assert.True(t, profiled.Load(), "the handler knows it is profiled")
			u := rec.Header().Get("X-Profile-URL")
			require.True(t, strings.HasPrefix(u, "/admin/profiles/profile-"), u)
			// The page: work, flame graph, top functions, downloads.
			page := httptest.NewRecorder()
			p.Handler().ServeHTTP(page, httptest.NewRequest("GET", u, nil))
			require.Equal(t, 200, page.Code, page.Body.String())
			body := page.Body.String()
			assert.Contains(t, body, "Work: 1 query (1ms)")
			assert.Contains(t, body, `<svg xmlns="http://www.w3.org/2000/svg" class="flame"`)
			assert.Contains(t, body, "slowlog_test.spin")
			assert.Contains(t, body, "<h2>Top functions</h2>")
			assert.NotContains(t, body, "<script")
			downloads := []string{".pb.gz", "-heap.pb.gz"}
			if !tc.busyCPU {
				downloads = append(downloads, "-goroutine.pb.gz")
			}
			for _, ext := range downloads {
				dl := httptest.NewRecorder()
				p.Handler().ServeHTTP(dl, httptest.NewRequest("GET", u+ext, nil))
				require.Equal(t, 200, dl.Code, ext)
				_, err := profile.Parse(dl.Body)
				require.NoError(t, err, ext)
			}
			dl := httptest.NewRecorder()
			p.Handler().ServeHTTP(dl, httptest.NewRequest("GET", u+".pb.gz", nil))
			require.Equal(t, 200, dl.Code)
			prof, err := profile.Parse(dl.Body)
			require.NoError(t, err)
			require.NotEmpty(t, prof.Sample, "samples of the request")
			found := false
			for _, s := range prof.Sample {
				for _, l := range s.Location {
					for _, ln := range l.Line {
						if strings.Contains(ln.Function.Name, "slowlog_test.spin") || strings.Contains(ln.Function.Name, "TestProfiler") {
							found = true
						}
					}
				}
			}
			assert.True(t, found, "the request's own code is in its profile")
		})
	}
	t.Run("one at a time", func(t *testing.T) {
		q := slowlog.NewProfiler(key)
		q.Dir = t.TempDir()
		inside, release := make(chan struct{}), make(chan struct{})
		h := q.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/first" {
				close(inside)
				<-release
			}
		}))
		done := make(chan struct{})
		go func() {
			defer close(done)
			req := httptest.NewRequest("GET", "/first", nil)
			req.Header.Set("X-Profile-Token", q.Token("a", "/first", time.Minute))
			h.ServeHTTP(httptest.NewRecorder(), req)
		}()
		<-inside
		req := httptest.NewRequest("GET", "/second", nil)
		req.Header.Set("X-Profile-Token", q.Token("b", "/second", time.Minute))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		assert.Equal(t, "busy", rec.Header().Get("X-Profile"))
		assert.Empty(t, rec.Header().Get("X-Profile-URL"))
		close(release)
		<-done
	})
	dl := httptest.NewRecorder()
	p.Handler().ServeHTTP(dl, httptest.NewRequest("GET", "/admin/profiles/../../etc/passwd", nil))
	assert.Equal(t, 404, dl.Code)
	amu.Lock()
	defer amu.Unlock()
	assert.Len(t, audit, 3)
	assert.Contains(t, audit[0], "refused")
	assert.Contains(t, audit[1], "profiled (cpu)")
	assert.Contains(t, audit[2], "profiled (goroutine)")
}

func TestPanickingSink(t *testing.T) {
	t.Parallel()
	wd := &slowlog.Watchdog{Threshold: time.Hour, Sink: slowlog.SinkFunc(func(context.Context, *slowlog.Report) error { panic("sink bug") })}
	wd.Do(context.Background(), "job", func(ctx context.Context) { slowlog.Capture(ctx, "x") })
	wd.Close()
	assert.Equal(t, int64(2), wd.Stats().SinkErrors, "the capture and the final line, both survived")
}

// ownLabels returns the labels of the goroutine that calls it, as a
// goroutine profile prints them: the record whose stack holds ownLabels.
//
//go:noinline
func ownLabels() string {
	var b strings.Builder
	pprof.Lookup("goroutine").WriteTo(&b, 1)
	for _, rec := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(rec, "slowlog_test.ownLabels") {
			for _, line := range strings.Split(rec, "\n") {
				if strings.HasPrefix(line, "# labels: ") {
					return line
				}
			}
			return "no labels"
		}
	}
	return "not found"
}

// Requests are labelled with their route as well as their id, so that a
// CPU profile can be broken down by route; goroutines they start inherit
// both labels.
func TestRouteLabel(t *testing.T) {
	t.Parallel()
	wd := &slowlog.Watchdog{Threshold: time.Minute}
	defer wd.Close()
	mux := http.NewServeMux()
	var route, child string
	mux.Handle("GET /repos/{name}", wd.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route, _ = pprof.Label(r.Context(), "slowlog.route")
		done := make(chan struct{})
		go func() {
			defer close(done)
			child = ownLabels()
		}()
		<-done
	})))
	mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/repos/proj", nil))
	assert.Equal(t, "/repos/{name}", route)
	assert.Contains(t, child, `"slowlog.route":"/repos/{name}"`, "inherited by the goroutines the handler starts")

	wd.Do(context.Background(), "nightly-gc", func(ctx context.Context) {
		route, _ = pprof.Label(ctx, "slowlog.route")
	})
	assert.Equal(t, "nightly-gc", route)
}

// lockedOut and readLockedOut block on a lock held elsewhere, for the
// report to show them blocked.
//
//go:noinline
func lockedOut(mu *sync.Mutex) {
	mu.Lock()
	//lint:ignore SA2001 blocking on the lock is the point
	mu.Unlock()
}

//go:noinline
func readLockedOut(mu *sync.RWMutex) {
	mu.RLock()
	//lint:ignore SA2001 blocking on the lock is the point
	mu.RUnlock()
}

//go:noinline
func waitingGroup(wg *sync.WaitGroup) { wg.Wait() }

// TestBlockedStates: goroutines blocked on sync.Mutex, RWMutex and
// WaitGroup are reported as such, not as running: their innermost
// frames are the semaphore's, which moved into internal/sync in Go 1.24.
func TestBlockedStates(t *testing.T) {
	t.Parallel()
	sink := make(chanSink, 16)
	wd := &slowlog.Watchdog{Threshold: 30 * time.Millisecond, Tick: 5 * time.Millisecond, Sink: sink}
	defer wd.Close()
	var mu sync.Mutex
	var rw sync.RWMutex
	var pending sync.WaitGroup
	pending.Add(1)
	mu.Lock()
	rw.Lock()
	release := make(chan struct{})
	h := wd.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var wg sync.WaitGroup
		for _, f := range []func(){func() { lockedOut(&mu) }, func() { readLockedOut(&rw) }, func() { waitingGroup(&pending) }} {
			wg.Add(1)
			go func() { defer wg.Done(); f() }()
		}
		<-release
		wg.Wait()
	}))
	done := make(chan struct{})
	go func() { defer close(done); h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil)) }()
	rep := next(t, sink)
	states := map[string]string{}
	for _, st := range rep.Stacks {
		for _, f := range st.Frames {
			for _, fn := range []string{"lockedOut", "readLockedOut", "waitingGroup"} {
				if strings.HasSuffix(f.Func, "slowlog_test."+fn) {
					states[fn] = st.State
				}
			}
		}
	}
	assert.Equal(t, "sync.Mutex.Lock", states["lockedOut"], rep.String())
	assert.Equal(t, "sync.RWMutex.Lock", states["readLockedOut"], rep.String())
	assert.Equal(t, "sync.WaitGroup.Wait", states["waitingGroup"], rep.String())
	mu.Unlock()
	rw.Unlock()
	pending.Done()
	close(release)
	<-done
}

// TestJobsNameTheirParent: work a request hands to a job (a detached
// render, a walk) is watched on its own, and its reports name the
// request that started it.
func TestJobsNameTheirParent(t *testing.T) {
	t.Parallel()
	sink := make(chanSink, 16)
	wd := &slowlog.Watchdog{Threshold: 30 * time.Millisecond, Tick: 5 * time.Millisecond, Sink: sink,
		RequestID: func(*http.Request) string { return "req-42" }}
	defer wd.Close()
	release := make(chan struct{})
	done := make(chan struct{})
	h := wd.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		go func() {
			defer close(done)
			wd.Do(context.WithoutCancel(r.Context()), "walk", func(ctx context.Context) { blockInHandler(release) })
		}()
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil))
	rep := next(t, sink)
	assert.Equal(t, "job", rep.Kind)
	assert.Equal(t, "walk", rep.Route)
	assert.Equal(t, "req-42", rep.Parent)
	assert.Contains(t, rep.String(), "Started by: req-42")
	assert.Contains(t, rep.String(), "slowlog_test.blockInHandler", "the work itself is in the report")
	close(release)
	<-done
	next(t, sink) // its end
}

// TestOriginAcrossAQueue: a request's Origin, kept with a job queued in
// a database, names the request in the reports of the job when it runs
// later, from a context that has nothing else of the request.
func TestOriginAcrossAQueue(t *testing.T) {
	t.Parallel()
	sink := make(chanSink, 16)
	wd := &slowlog.Watchdog{Threshold: 30 * time.Millisecond, Tick: 5 * time.Millisecond, Sink: sink,
		RequestID: func(*http.Request) string { return "req-7" }}
	defer wd.Close()
	var kept string
	h := wd.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { kept = slowlog.Origin(r.Context()) }))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/push", nil))
	assert.Equal(t, "req-7", kept)
	assert.Empty(t, slowlog.Origin(context.Background()))
	assert.Equal(t, context.Background(), slowlog.WithOrigin(context.Background(), ""), "no origin: ctx unchanged")

	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		wd.Do(slowlog.WithOrigin(context.Background(), kept), "job webhook_delivery", func(ctx context.Context) { blockInHandler(release) })
	}()
	rep := next(t, sink)
	assert.Equal(t, "job", rep.Kind)
	assert.Equal(t, "req-7", rep.Parent)
	close(release)
	<-done
	next(t, sink) // its end
}

// TestDefaultSink: a watchdog given neither sink nor logger reports to
// slog.Default().
func TestDefaultSink(t *testing.T) {
	var buf syncBuffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	defer slog.SetDefault(old)
	wd := &slowlog.Watchdog{Threshold: 20 * time.Millisecond, Tick: 5 * time.Millisecond}
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		wd.Do(context.Background(), "slow job", func(ctx context.Context) { blockInHandler(release) })
	}()
	require.Eventually(t, func() bool { return strings.Contains(buf.String(), "slowlog: slow job") }, 20*time.Second, 5*time.Millisecond)
	close(release)
	<-done
	wd.Close()
}

type syncBuffer struct {
	mu sync.Mutex // guards b
	b  strings.Builder
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
