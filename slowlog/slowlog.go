// Package slowlog provides dogslow-style reports of requests that are
// still running past a threshold: while the request is slow, not after it
// died, a report with the stacks of every goroutine working for it.
//
// The middleware tags each request's goroutine with a pprof label (a
// request id); goroutines the handler starts inherit it. One watchdog
// goroutine serves all requests: on each tick it looks for requests that
// crossed their next threshold (by default 1x, 2x and 4x of Threshold, so
// that successive reports show progress) and, if there are any, takes one
// labelled goroutine profile for all of them and files each request's own
// stacks into a Report. Reports go to a Sink through a bounded queue that
// drops (and counts) rather than slow anything down, deduplicated per
// route and method. A final line reports how the request ended.
//
// The goroutine profile used is the aggregated one (runtime/pprof's
// debug=1 form, which carries labels), never the full per-goroutine dump
// that stops the world for longer; wait states are therefore inferred
// from the innermost frames (Stack.State).
package slowlog

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Watchdog.
const (
	DefaultThreshold     = 5 * time.Second
	DefaultMaxGoroutines = 50000
	DefaultQueueSize     = 256
	DefaultDedupInterval = time.Minute
	DefaultKeepReports   = 100
	DefaultSendTimeout   = 10 * time.Second
)

// The pprof labels of a watched request's goroutines: its id, which picks
// them out of a goroutine profile, and its route, which lets CPU profiles
// be broken down by route (go tool pprof -tagfocus slowlog.route=...).
const (
	labelKey       = "slowlog.id"
	parentLabelKey = "slowlog.parent" // the work that started a job
	routeLabelKey  = "slowlog.route"  // sorts after labelKey, as pprof.Labels wants
)

// Watchdog watches requests and reports the slow ones. Set its fields
// before the first request; it starts its goroutines then, and Close
// stops them. A Watchdog is safe for concurrent use.
type Watchdog struct {
	// Threshold is the base threshold. If zero, DefaultThreshold.
	Threshold time.Duration

	// Thresholds are the elapsed times at which a request is reported.
	// If nil, Threshold times 1, 2 and 4.
	Thresholds []time.Duration

	// Tick is how often the watchdog looks. If zero, a tenth of the
	// smallest threshold, between 5 ms and 1 s.
	Tick time.Duration

	// MaxGoroutines is the goroutine count above which no profile is
	// taken (the report says so instead). If zero, DefaultMaxGoroutines.
	MaxGoroutines int

	// Sink receives the reports. If nil, SlogSink with Logger, or with
	// slog.Default() if Logger is nil too: a watchdog nobody configured
	// still says what is slow.
	Sink Sink

	// Logger receives the watchdog's own errors (and reports, with the
	// default sink). If nil, nothing is logged.
	Logger *slog.Logger

	// QueueSize bounds the reports waiting for the sink. If zero,
	// DefaultQueueSize.
	QueueSize int

	// DedupInterval: per route and method, the first report of each
	// interval is sent in full, the others only counted. If zero,
	// DefaultDedupInterval; if negative, no deduplication.
	DedupInterval time.Duration

	// KeepReports is how many recent reports Reports and ReportsHandler
	// keep. If zero, DefaultKeepReports.
	KeepReports int

	// Version identifies the build in reports. If empty, the main
	// module's version from the build info.
	Version string

	// Principal, if set, names who made a request.
	Principal func(r *http.Request) string

	// RequestID, if set, returns the id to use for a request (for
	// example from X-Request-Id); it must be unique among requests in
	// flight. If nil, ids are generated.
	RequestID func(r *http.Request) string

	// FlightRecorder, if set and running, gives execution-trace
	// snapshots: the first slow report of each route per DedupInterval
	// comes with a snapshot of the recorder's window, written to
	// TraceDir, and every request runs in a trace task named after its
	// route, so that it can be found in `go tool trace`. The application
	// owns the recorder (there is one per process) and starts it.
	FlightRecorder *trace.FlightRecorder

	// TraceDir is where trace snapshots go. If empty, os.TempDir().
	TraceDir string

	// Route, if set, names a request's route for reports and for
	// deduplication, for example with the application's ServeMux:
	//
	//	Route: func(r *http.Request) string { _, p := mux.Handler(r); return p }
	//
	// If nil, r.Pattern is used when the watchdog sits inside a ServeMux
	// route, else the path. A method the route starts with is left out
	// (reports give the method apart).
	Route func(r *http.Request) string

	startOnce sync.Once
	closeOnce sync.Once
	thresh    []time.Duration
	stop      chan struct{}
	wg        sync.WaitGroup
	queue     chan *Report
	host      string
	seq       atomic.Uint64

	shards [16]shard

	traceMu sync.Mutex // serializes FlightRecorder.WriteTo

	dmu   sync.Mutex // guards dedup
	dedup map[string]*dedupGroup

	rmu    sync.Mutex // guards recent and rseq
	recent []*Report
	rseq   int

	requests, reports, finals, profiles, skipped, dropped, suppressed, sinkErrors atomic.Int64
}

// Stats are the counters of a Watchdog.
type Stats struct {
	Requests   int64 // requests and jobs watched
	InFlight   int   // watched now
	Reports    int64 // reports queued (slow requests, captures)
	Finals     int64 // completion lines queued
	Profiles   int64 // goroutine profiles taken
	Skipped    int64 // reports without stacks because of MaxGoroutines
	Dropped    int64 // reports dropped because the queue was full
	Suppressed int64 // reports counted but not sent by deduplication
	SinkErrors int64 // reports the sink failed to deliver
}

type dedupGroup struct {
	since      time.Time
	owner      string // the request whose reports this interval sends
	suppressed int
}

type shard struct {
	mu   sync.Mutex // guards the list
	head *watched
}

// watched is a request in flight. It is the context the handler sees (so
// that Annotate and Capture find it without another allocation) and its
// ResponseWriter (to learn the status).
type watched struct {
	context.Context
	http.ResponseWriter

	wd         *Watchdog
	id         string
	parent     string // the request or job that started this job
	kind       string // "request" or "job"
	method     string
	route      string
	url        *url.URL // redacted when a report is made, not per request
	principal  string
	start      time.Time
	shard      *shard
	prev, next *watched

	level  atomic.Int32 // thresholds reported so far; written by the watchdog goroutine
	status int          // written by the handler goroutine

	mu    sync.Mutex // guards notes
	notes []Annotation
}

type ctxKey struct{}

func (w *watched) Value(key any) any {
	if key == (ctxKey{}) {
		return w
	}
	return w.Context.Value(key)
}

func (w *watched) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *watched) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *watched) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush implements http.Flusher.
func (w *watched) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

func (wd *Watchdog) init() {
	wd.startOnce.Do(func() {
		wd.thresh = wd.Thresholds
		if len(wd.thresh) == 0 {
			base := wd.Threshold
			if base <= 0 {
				base = DefaultThreshold
			}
			wd.thresh = []time.Duration{base, 2 * base, 4 * base}
		}
		tick := wd.Tick
		if tick <= 0 {
			tick = min(max(wd.thresh[0]/10, 5*time.Millisecond), time.Second)
		}
		if wd.Version == "" {
			if bi, ok := debug.ReadBuildInfo(); ok {
				wd.Version = bi.Main.Version
			}
		}
		wd.host, _ = os.Hostname()
		size := wd.QueueSize
		if size <= 0 {
			size = DefaultQueueSize
		}
		wd.queue = make(chan *Report, size)
		wd.stop = make(chan struct{})
		wd.dedup = make(map[string]*dedupGroup)
		wd.wg.Add(2)
		go wd.watch(tick)
		go wd.deliver()
	})
}

// Close stops the watchdog after delivering the reports queued. Requests
// still running are no longer watched.
func (wd *Watchdog) Close() error {
	wd.init()
	wd.closeOnce.Do(func() {
		close(wd.stop)
		wd.wg.Wait()
	})
	return nil
}

// Stats returns the watchdog's counters.
func (wd *Watchdog) Stats() Stats {
	n := 0
	for i := range wd.shards {
		s := &wd.shards[i]
		s.mu.Lock()
		for w := s.head; w != nil; w = w.next {
			n++
		}
		s.mu.Unlock()
	}
	return Stats{
		Requests:   wd.requests.Load(),
		InFlight:   n,
		Reports:    wd.reports.Load(),
		Finals:     wd.finals.Load(),
		Profiles:   wd.profiles.Load(),
		Skipped:    wd.skipped.Load(),
		Dropped:    wd.dropped.Load(),
		Suppressed: wd.suppressed.Load(),
		SinkErrors: wd.sinkErrors.Load(),
	}
}

// begin prepares the record of a request or job; the caller fills in its
// fields, then registers it.
func (wd *Watchdog) begin(ctx context.Context, id, route string) *watched {
	wd.init()
	wd.requests.Add(1)
	n := wd.seq.Add(1)
	if id == "" {
		id = strconv.FormatUint(n, 10)
	}
	w := &watched{wd: wd, id: id, route: route, start: time.Now(), shard: &wd.shards[n%uint64(len(wd.shards))]}
	// The work that started this one (a job queued by a request) stays
	// in its labels, and in its reports.
	if parent, ok := pprof.Label(ctx, labelKey); ok && parent != id {
		w.parent = parent
		w.Context = pprof.WithLabels(ctx, pprof.Labels(labelKey, id, parentLabelKey, parent, routeLabelKey, route))
		return w
	}
	w.Context = pprof.WithLabels(ctx, pprof.Labels(labelKey, id, routeLabelKey, route))
	return w
}

// register labels the calling goroutine with w's id and puts w where the
// watchdog looks; w's fields must not change afterwards.
func (wd *Watchdog) register(w *watched) {
	pprof.SetGoroutineLabels(w)
	s := w.shard
	s.mu.Lock()
	w.next = s.head
	if s.head != nil {
		s.head.prev = w
	}
	s.head = w
	s.mu.Unlock()
}

// end unregisters w and, if it was reported, queues its final line.
func (wd *Watchdog) end(w *watched, parent context.Context, err any) {
	s := w.shard
	s.mu.Lock()
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		s.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	}
	w.prev, w.next = nil, nil
	s.mu.Unlock()
	pprof.SetGoroutineLabels(parent)
	if w.level.Load() > 0 {
		r := w.report(time.Now())
		r.Final = true
		r.Status = w.status
		if err != nil {
			r.Panic = fmt.Sprint(err)
		}
		wd.finals.Add(1)
		wd.enqueue(r, false)
	}
}

// Handler returns middleware that watches every request to next.
func (wd *Watchdog) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		id := ""
		if wd.RequestID != nil {
			id = wd.RequestID(r)
		}
		parent := r.Context()
		route := r.Pattern
		if wd.Route != nil {
			route = wd.Route(r)
		}
		if route == "" {
			route = r.URL.Path
		}
		// A ServeMux pattern names its method, which reports give apart.
		route = strings.TrimPrefix(route, r.Method+" ")
		w := wd.begin(parent, id, route)
		w.kind, w.method = "request", r.Method
		w.url = r.URL
		if wd.Principal != nil {
			w.principal = wd.Principal(r)
		}
		w.ResponseWriter = rw
		if wd.FlightRecorder != nil {
			var task *trace.Task
			w.Context, task = trace.NewTask(w.Context, "slowlog "+w.method+" "+w.route)
			defer task.End()
		}
		wd.register(w)
		defer func() {
			p := recover()
			wd.end(w, parent, p)
			if p != nil {
				panic(p)
			}
		}()
		next.ServeHTTP(w, r.WithContext(w))
	})
}

// Do watches a unit of work that is not an HTTP request, such as a
// background job or a render detached from the request that started it,
// under name. If ctx carries the labels of a watched request or job (the
// one that started the work), the job's reports name it as their Parent.
// Its work is counted into the Work of ctx (the request that started it)
// or, if there is none, into a Work of its own that its reports show.
func (wd *Watchdog) Do(ctx context.Context, name string, f func(ctx context.Context)) {
	if WorkFrom(ctx) == nil {
		// A job of its own counts its own work, for its reports; one
		// started by a request counts into the request's.
		ctx = WithWork(ctx, &Work{})
	}
	w := wd.begin(ctx, "", name)
	w.kind = "job"
	wd.register(w)
	defer func() {
		p := recover()
		wd.end(w, ctx, p)
		if p != nil {
			panic(p)
		}
	}()
	f(w)
}

// Origin returns the id of the watched request or job that ctx belongs
// to, or "": what a durable queue records with a job it is given, so
// that the job's reports name their origin even when the job runs in
// another process, or after a restart (see WithOrigin).
func Origin(ctx context.Context) string {
	id, _ := pprof.Label(ctx, labelKey)
	return id
}

// WithOrigin returns ctx naming id (an Origin recorded earlier) as the
// request or job that started the work about to run under it: Do then
// reports it as the job's Parent. An empty id returns ctx unchanged.
func WithOrigin(ctx context.Context, id string) context.Context {
	if id == "" {
		return ctx
	}
	return pprof.WithLabels(ctx, pprof.Labels(labelKey, id))
}

// Annotation is a breadcrumb a handler left in its request's report.
type Annotation struct {
	Time  time.Time
	Key   string
	Value string
}

// Annotate adds a breadcrumb to the report of the request or job of ctx;
// outside one it does nothing.
func Annotate(ctx context.Context, key, value string) {
	w, ok := ctx.Value(ctxKey{}).(*watched)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.notes) < 100 {
		w.notes = append(w.notes, Annotation{Time: time.Now(), Key: key, Value: value})
	}
}

// Capture takes a report of the request or job of ctx now, whatever its
// elapsed time (timebox's expiry hook calls it right before cancellation
// unwinds the stacks), and reports whether ctx belongs to one.
func Capture(ctx context.Context, reason string) bool {
	w, ok := ctx.Value(ctxKey{}).(*watched)
	if !ok {
		return false
	}
	wd := w.wd
	r := w.report(time.Now())
	r.Reason = reason
	wd.fill([]*Report{r}, []*watched{w})
	w.level.Store(max(w.level.Load(), 1)) // so that its end is reported too
	wd.enqueue(r, true)
	return true
}

func (w *watched) report(now time.Time) *Report {
	r := &Report{
		ID:        w.id,
		Parent:    w.parent,
		Kind:      w.kind,
		Method:    w.method,
		Route:     w.route,
		URL:       redact(w.url),
		Principal: w.principal,
		Start:     w.start,
		Elapsed:   now.Sub(w.start),
		Host:      w.wd.host,
		PID:       os.Getpid(),
		Version:   w.wd.Version,
	}
	if wk := WorkFrom(w.Context); wk != nil {
		t := wk.Tally()
		r.Work = &t
	}
	w.mu.Lock()
	r.Annotations = append([]Annotation(nil), w.notes...)
	w.mu.Unlock()
	return r
}

// watch is the watchdog goroutine.
func (wd *Watchdog) watch(tick time.Duration) {
	defer wd.wg.Done()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-wd.stop:
			return
		case now := <-t.C:
			wd.scan(now)
		}
	}
}

// scan reports the requests that crossed their next threshold.
func (wd *Watchdog) scan(now time.Time) {
	var due []*watched
	var reports []*Report
	for i := range wd.shards {
		s := &wd.shards[i]
		s.mu.Lock()
		for w := s.head; w != nil; w = w.next {
			lvl := int(w.level.Load())
			if lvl < len(wd.thresh) && now.Sub(w.start) >= wd.thresh[lvl] {
				// Skip thresholds already passed, so one report covers them.
				for lvl+1 < len(wd.thresh) && now.Sub(w.start) >= wd.thresh[lvl+1] {
					lvl++
				}
				w.level.Store(int32(lvl + 1))
				r := w.report(now)
				r.Threshold = wd.thresh[lvl]
				due = append(due, w)
				reports = append(reports, r)
			}
		}
		s.mu.Unlock()
	}
	if len(due) == 0 {
		return
	}
	wd.fill(reports, due)
	for _, r := range reports {
		wd.enqueue(r, true)
	}
}

// fill takes one goroutine profile and gives each report its request's
// stacks.
func (wd *Watchdog) fill(reports []*Report, due []*watched) {
	n := runtime.NumGoroutine()
	maxG := wd.MaxGoroutines
	if maxG <= 0 {
		maxG = DefaultMaxGoroutines
	}
	for _, r := range reports {
		r.Goroutines = n
	}
	if n > maxG {
		wd.skipped.Add(int64(len(reports)))
		for _, r := range reports {
			r.Reason = strings.TrimSpace(r.Reason + fmt.Sprintf(" (no stacks: %d goroutines exceed the ceiling of %d)", n, maxG))
		}
		return
	}
	var b strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
		if wd.Logger != nil {
			wd.Logger.Error("slowlog: goroutine profile", "err", err)
		}
		return
	}
	wd.profiles.Add(1)
	byID := parseProfile(b.String())
	for i, r := range reports {
		r.Stacks = byID[due[i].id]
	}
}

// enqueue hands r to the delivery goroutine. With dedup, per route and
// method, only one request's reports are sent per DedupInterval (all its
// thresholds, so that it shows progress); the others are counted, and the
// count travels with the group's next sent report.
func (wd *Watchdog) enqueue(r *Report, dedup bool) {
	first := !dedup || wd.DedupInterval < 0
	if dedup && wd.DedupInterval >= 0 {
		interval := wd.DedupInterval
		if interval == 0 {
			interval = DefaultDedupInterval
		}
		key := r.Method + " " + r.Route
		now := time.Now()
		wd.dmu.Lock()
		g := wd.dedup[key]
		if g != nil && now.Sub(g.since) < interval && r.ID != g.owner {
			g.suppressed++
			wd.dmu.Unlock()
			wd.suppressed.Add(1)
			return
		}
		if g == nil || now.Sub(g.since) >= interval {
			first = true
			if g != nil {
				r.Suppressed = g.suppressed
			}
			if len(wd.dedup) >= maxDedupGroups {
				for k, old := range wd.dedup {
					if now.Sub(old.since) >= interval {
						delete(wd.dedup, k)
					}
				}
			}
			wd.dedup[key] = &dedupGroup{since: now, owner: r.ID}
		}
		wd.dmu.Unlock()
	}
	if !r.Final {
		wd.reports.Add(1)
		if first && dedup {
			wd.snapshot(r)
		}
	}
	wd.keep(r)
	select {
	case wd.queue <- r:
	default:
		wd.dropped.Add(1)
	}
}

// snapshot writes the flight recorder's window for r, if there is a
// recorder. It runs on the watchdog goroutine (or a Capture's), one at a
// time, as FlightRecorder.WriteTo requires.
func (wd *Watchdog) snapshot(r *Report) {
	fr := wd.FlightRecorder
	if fr == nil || !fr.Enabled() {
		return
	}
	wd.traceMu.Lock()
	defer wd.traceMu.Unlock()
	dir := wd.TraceDir
	if dir == "" {
		dir = os.TempDir()
	}
	name := filepath.Join(dir, fmt.Sprintf("slowlog-%s-%s.trace", time.Now().UTC().Format("20060102T150405.000"), safeName(r.ID)))
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err == nil {
		_, err = fr.WriteTo(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		os.Remove(name)
		if wd.Logger != nil {
			wd.Logger.Error("slowlog: trace snapshot", "err", err)
		}
		return
	}
	r.Trace = name
}

// maxDedupGroups bounds the dedup table; beyond it, expired groups are
// dropped.
const maxDedupGroups = 1024

func (wd *Watchdog) keep(r *Report) {
	keep := wd.KeepReports
	if keep <= 0 {
		keep = DefaultKeepReports
	}
	wd.rmu.Lock()
	defer wd.rmu.Unlock()
	wd.rseq++
	r.Seq = wd.rseq
	wd.recent = append(wd.recent, r)
	if len(wd.recent) > keep {
		wd.recent = append(wd.recent[:0], wd.recent[len(wd.recent)-keep:]...)
	}
}

// Reports returns the recent reports, newest first.
func (wd *Watchdog) Reports() []*Report {
	wd.rmu.Lock()
	defer wd.rmu.Unlock()
	out := make([]*Report, len(wd.recent))
	for i, r := range wd.recent {
		out[len(out)-1-i] = r
	}
	return out
}

// deliver is the delivery goroutine.
func (wd *Watchdog) deliver() {
	defer wd.wg.Done()
	sink := wd.Sink
	if sink == nil {
		l := wd.Logger
		if l == nil {
			l = slog.Default()
		}
		sink = SlogSink{Logger: l}
	}
	send := func(r *Report) {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultSendTimeout)
		defer cancel()
		if err := safeSend(ctx, sink, r); err != nil {
			wd.sinkErrors.Add(1)
			if wd.Logger != nil {
				wd.Logger.Error("slowlog: sink", "err", err)
			}
		}
	}
	for {
		select {
		case r := <-wd.queue:
			send(r)
		case <-wd.stop:
			for {
				select {
				case r := <-wd.queue:
					send(r)
				default:
					return
				}
			}
		}
	}
}

func redact(u *url.URL) string {
	if u == nil {
		return ""
	}
	return RedactURL(u)
}

// safeSend calls the sink, turning a panic into an error: the delivery
// goroutine must survive a broken sink.
func safeSend(ctx context.Context, sink Sink, r *Report) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("slowlog: sink panicked: %v", p)
		}
	}()
	return sink.Send(ctx, r)
}

// RedactURL returns u without credentials and with the values of its
// query parameters removed (their names stay).
func RedactURL(u *url.URL) string {
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		q := c.Query()
		keys := make([]string, 0, len(q))
		for k := range q {
			keys = append(keys, url.QueryEscape(k)+"=REDACTED")
		}
		sort.Strings(keys)
		c.RawQuery = strings.Join(keys, "&")
	}
	return c.String()
}
