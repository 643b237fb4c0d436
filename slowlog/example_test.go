package slowlog_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/forgekit/forgekit/slowlog"
)

// The middleware watches every request; a report is taken at 5 s, 10 s
// and 20 s of a request still running, and a final line when it ends.
func ExampleWatchdog_Handler() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{owner}/{repo}", func(w http.ResponseWriter, r *http.Request) {
		slowlog.Annotate(r.Context(), "repo", r.PathValue("repo"))
		fmt.Fprintln(w, "ok")
	})
	wd := &slowlog.Watchdog{
		Threshold: 5 * time.Second,
		Sink:      &slowlog.DirSink{Dir: "/var/log/forge/slow", MaxFiles: 500},
		Route:     func(r *http.Request) string { _, p := mux.Handler(r); return p },
	}
	defer wd.Close()
	srv := &http.Server{Addr: "127.0.0.1:8080", Handler: wd.Handler(mux)}
	_ = srv // srv.ListenAndServe()
	fmt.Println("watching")
	// Output:
	// watching
}

// Capture takes a report on demand; timebox's expiry hook uses it to
// record the stacks right before cancellation unwinds them.
func ExampleCapture() {
	reports := make(chan *slowlog.Report, 2)
	wd := &slowlog.Watchdog{Sink: slowlog.SinkFunc(func(ctx context.Context, r *slowlog.Report) error {
		reports <- r
		return nil
	})}
	wd.Do(context.Background(), "reindex", func(ctx context.Context) {
		slowlog.Capture(ctx, "time box expired")
	})
	wd.Close()
	r := <-reports
	fmt.Println(r.Kind, r.Route, r.Reason, strings.Contains(r.String(), "ExampleCapture"))
	fmt.Println((<-reports).Final)
	// Output:
	// job reindex time box expired true
	// true
}

// A request queues a job in a database; the job runs later, perhaps in
// another process, and its reports name the request that queued it.
func ExampleWithOrigin() {
	reports := make(chan *slowlog.Report, 2)
	wd := &slowlog.Watchdog{
		Sink: slowlog.SinkFunc(func(ctx context.Context, r *slowlog.Report) error {
			reports <- r
			return nil
		}),
		RequestID: func(r *http.Request) string { return r.Header.Get("X-Request-Id") },
	}
	var queued string // a column of the job's row
	push := wd.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queued = slowlog.Origin(r.Context())
	}))
	req := httptest.NewRequest("POST", "/owner/repo.git/git-receive-pack", nil)
	req.Header.Set("X-Request-Id", "4f2a")
	push.ServeHTTP(httptest.NewRecorder(), req)

	// Later, the queue's worker:
	wd.Do(slowlog.WithOrigin(context.Background(), queued), "job webhook_delivery", func(ctx context.Context) {
		slowlog.Capture(ctx, "shown")
	})
	wd.Close()
	r := <-reports
	fmt.Println(r.Route, "started by", r.Parent)
	// Output:
	// job webhook_delivery started by 4f2a
}

func ExampleRedactURL() {
	u, _ := url.Parse("https://alice:pw@forge.example/search?q=secret&page=2")
	fmt.Println(slowlog.RedactURL(u))
	// Output:
	// https://forge.example/search?page=REDACTED&q=REDACTED
}

// Work accounting: the middleware (or job) puts a Work in the context,
// the code doing the work counts it there, and the access log line or
// the slow report says how much there was.
func ExampleWork() {
	work := &slowlog.Work{
		OnRepeat: func(r slowlog.Repeat) { fmt.Printf("N+1? %s %d times\n", r.Kind, r.Count) },
	}
	ctx := slowlog.WithWork(context.Background(), work)

	// Deep in the handler: a store counts its queries, a cache its
	// lookups, a git runner its processes.
	for range 12 { // the same row each time
		slowlog.CountKey(ctx, slowlog.Query, 0, "SELECT name FROM users WHERE id = ?", 7)
	}
	slowlog.CountKey(ctx, slowlog.CacheLookup, 0, "readme:alice/proj")
	slowlog.Count(ctx, slowlog.GitRun, 0)

	fmt.Println(work.Tally())
	// Output:
	// N+1? queries 11 times
	// 12 queries, 1 cache lookup, 1 git run
}
