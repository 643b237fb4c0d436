package timebox

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Handler.
const (
	DefaultTimeout    = 30 * time.Second
	DefaultRetryAfter = 5 * time.Second
	DefaultHTTPGrace  = time.Second
)

// ErrHandlerTimeout is returned by writes of a handler whose time ran out.
var ErrHandlerTimeout = errors.New("timebox: handler time limit expired")

// Handler is HTTP middleware that bounds the time of each request, and an
// answer to http.TimeoutHandler's shortcomings: it runs the wrapped
// handler inline (no goroutine, no response buffer), so responses stream
// and flush as they are written and http.ResponseController keeps
// working; it records why the request's context ended (*Expired); and it
// escalates in stages for handlers that ignore their context:
//
//  1. At the limit, OnExpire is called (before the context is cancelled,
//     so that a stack snapshot still shows where the handler was); the
//     client gets 503 with Retry-After and the request id if nothing was
//     written yet, or, if the response had started, its write deadline
//     is set to the past, which ends the stream; then the context is
//     cancelled with an *Expired cause.
//  2. After Grace, the connection's read and write deadlines are set to
//     the past, forcing the handler out of blocked I/O on the request or
//     response, and everything registered with Unblock is forced too.
//  3. If Detach is set, the handler runs in its own goroutine and, Detach
//     after the limit, ServeHTTP returns without it; Stats.Detached
//     counts such goroutines until they end, so leaks are visible.
//
// A Handler is safe for concurrent use; set its fields before serving.
type Handler struct {
	// Handler is the handler to bound. Required.
	Handler http.Handler

	// Timeout is the limit of a request. If zero, DefaultTimeout is used.
	Timeout time.Duration

	// TimeoutFor, if set, gives a per-route limit; a zero result means
	// Timeout and a negative one means no limit.
	TimeoutFor func(r *http.Request) time.Duration

	// Grace is the time between the limit and forcing blocked I/O. If
	// zero, DefaultHTTPGrace is used.
	Grace time.Duration

	// Detach, if positive, enables stage 3. Off by default because it
	// costs a goroutine per request.
	Detach time.Duration

	// RetryAfter is sent with the 503. If zero, DefaultRetryAfter.
	RetryAfter time.Duration

	// RequestID returns the id to put in the 503 answer. If nil, the
	// X-Request-Id request header is used.
	RequestID func(r *http.Request) string

	// OnExpire, if set, is called when a request's limit is reached,
	// before its context is cancelled. It runs on a timer goroutine,
	// concurrently with the handler.
	OnExpire func(r *http.Request, e *Expired)

	// Route, if set, names a request's route for Expired.Name and the
	// log line, for example with the application's ServeMux (as
	// slowlog's Watchdog.Route). If nil, r.Pattern when the handler sits
	// inside a ServeMux route, else the method and path.
	Route func(r *http.Request) string

	// Refuse, if set, writes the answer to a request whose limit was
	// reached before it wrote anything, in place of the plain-text 503
	// (http.TimeoutHandler takes a message; this takes a page in the
	// site's look, or JSON for an API). Retry-After, Connection: close
	// and X-Request-Id are set before it is called and the handler's
	// own headers are not; it should write a 503, quickly. It runs on
	// the timer goroutine, concurrently with the handler (whose writes
	// fail from then on).
	Refuse func(w http.ResponseWriter, r *http.Request, e *Expired)

	// Logger receives a line per expiry. If nil, nothing is logged.
	Logger *slog.Logger

	requests, expired, refused, aborted, forced, detached, detachedTotal atomic.Int64
}

// HandlerStats are the counters of a Handler.
type HandlerStats struct {
	Requests      int64 // requests served
	Expired       int64 // requests whose limit was reached
	Refused       int64 // of those, answered with 503 (nothing had been written)
	Aborted       int64 // of those, whose started response was cut by a write deadline
	Forced        int64 // requests whose I/O had to be forced after Grace
	Detached      int64 // handler goroutines abandoned and still running
	DetachedTotal int64 // handler goroutines ever abandoned
}

// Stats returns the handler's counters.
func (h *Handler) Stats() HandlerStats {
	return HandlerStats{
		Requests:      h.requests.Load(),
		Expired:       h.expired.Load(),
		Refused:       h.refused.Load(),
		Aborted:       h.aborted.Load(),
		Forced:        h.forced.Load(),
		Detached:      h.detached.Load(),
		DetachedTotal: h.detachedTotal.Load(),
	}
}

func (h *Handler) limit(r *http.Request) time.Duration {
	if h.TimeoutFor != nil {
		if d := h.TimeoutFor(r); d != 0 {
			return d
		}
	}
	if h.Timeout > 0 {
		return h.Timeout
	}
	return DefaultTimeout
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.requests.Add(1)
	d := h.limit(r)
	if d < 0 {
		h.Handler.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	o := &open{Context: &deadlineCtx{Context: ctx, deadline: start.Add(d)}, grace: h.grace()}
	o.exp = Expired{Name: r.Pattern, Limit: d, Opened: start}
	if h.Route != nil {
		o.exp.Name = h.Route(r)
	}
	if o.exp.Name == "" {
		o.exp.Name = r.Method + " " + r.URL.Path
	}
	tw := &timeoutWriter{w: w, rc: http.NewResponseController(w)}
	r2 := r.WithContext(o)
	timer := time.AfterFunc(d, func() { h.expire(r2, tw, &o.exp, cancel) })
	defer timer.Stop()

	if h.Detach <= 0 {
		h.Handler.ServeHTTP(tw, r2)
		tw.finish()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Handler.ServeHTTP(tw, r2)
	}()
	select {
	case <-done:
		tw.finish()
		return
	case <-ctx.Done():
	}
	hard := time.NewTimer(h.Detach)
	defer hard.Stop()
	select {
	case <-done:
		tw.finish()
	case <-hard.C:
		h.detached.Add(1)
		h.detachedTotal.Add(1)
		tw.detach()
		go func() { <-done; h.detached.Add(-1) }()
	}
}

func (h *Handler) grace() time.Duration {
	if h.Grace > 0 {
		return h.Grace
	}
	return DefaultHTTPGrace
}

// expire runs stage 1 and schedules stage 2.
func (h *Handler) expire(r *http.Request, tw *timeoutWriter, exp *Expired, cancel context.CancelCauseFunc) {
	if h.OnExpire != nil {
		h.onExpire(r, exp)
	}
	id := r.Header.Get("X-Request-Id")
	if h.RequestID != nil {
		id = h.RequestID(r)
	}
	retry := h.RetryAfter
	if retry <= 0 {
		retry = DefaultRetryAfter
	}
	// The cancellation happens under the writer's lock, so that a handler
	// returning as soon as its context ends cannot beat the 503 with an
	// empty 200, and before the 503 is written, so that the client's
	// reaction (closing the connection) cannot replace the cause. The
	// counters move before the client sees the outcome.
	h.expired.Add(1)
	var refuse func(http.ResponseWriter)
	if h.Refuse != nil {
		refuse = func(w http.ResponseWriter) { h.refuse(w, r, exp) }
	}
	refused := tw.expire(retry, id, refuse, func(refused bool) {
		if refused {
			h.refused.Add(1)
		} else {
			h.aborted.Add(1)
		}
		cancel(exp)
	})
	if h.Logger != nil {
		h.Logger.Warn("timebox: request expired", "route", exp.Name, "limit", exp.Limit, "request_id", id, "refused", refused)
	}
	time.AfterFunc(h.grace(), func() {
		if tw.force() {
			h.forced.Add(1)
		}
	})
}

// refuse calls Refuse on the timer goroutine, where a panic would take
// the process down: it is logged, and the client gets what was written.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, exp *Expired) {
	defer func() {
		if p := recover(); p != nil && h.Logger != nil {
			h.Logger.Error("timebox: Refuse panicked", "panic", p)
		}
	}()
	h.Refuse(w, r, exp)
}

// onExpire calls the hook on the timer goroutine, where a panic would
// take the process down: it is logged instead, and expiry goes on.
func (h *Handler) onExpire(r *http.Request, exp *Expired) {
	defer func() {
		if p := recover(); p != nil && h.Logger != nil {
			h.Logger.Error("timebox: OnExpire panicked", "panic", p)
		}
	}()
	h.OnExpire(r, exp)
}

// deadlineCtx reports a deadline for a context cancelled by our own timer
// (so that OnExpire can run before the cancellation).
type deadlineCtx struct {
	context.Context
	deadline time.Time
}

func (c *deadlineCtx) Deadline() (time.Time, bool) {
	if d, ok := c.Context.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

// timeoutWriter guards the ResponseWriter between the handler and the
// timer: the timer may answer 503 only while the handler has written
// nothing, and after expiry the handler's writes fail.
type timeoutWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController

	// inflight is held for reading by every write to w, and for writing
	// by detach, so that no write of an abandoned handler reaches w after
	// ServeHTTP returned.
	inflight sync.RWMutex

	mu       sync.Mutex  // guards the fields below
	hdr      http.Header // the handler's headers until it writes
	wrote    bool        // the handler has written (headers are out)
	expired  bool
	finished bool // the handler returned (or was detached)
}

func (tw *timeoutWriter) Header() http.Header {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.wrote {
		return tw.w.Header()
	}
	if tw.hdr == nil {
		tw.hdr = make(http.Header)
	}
	return tw.hdr
}

// begin marks the response as started by the handler; it fails if the
// time is up.
func (tw *timeoutWriter) begin() error {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.expired || tw.finished {
		return ErrHandlerTimeout
	}
	if !tw.wrote {
		tw.wrote = true
		dst := tw.w.Header()
		for k, v := range tw.hdr {
			dst[k] = v
		}
	}
	return nil
}

func (tw *timeoutWriter) WriteHeader(code int) {
	tw.inflight.RLock()
	defer tw.inflight.RUnlock()
	tw.mu.Lock()
	started := tw.wrote
	tw.mu.Unlock()
	if started {
		tw.w.WriteHeader(code) // a late or 1xx header; net/http handles it
		return
	}
	if tw.begin() == nil {
		tw.w.WriteHeader(code)
	}
}

func (tw *timeoutWriter) Write(p []byte) (int, error) {
	tw.inflight.RLock()
	defer tw.inflight.RUnlock()
	if err := tw.begin(); err != nil {
		return 0, err
	}
	return tw.w.Write(p)
}

// ReadFrom keeps io.Copy's sendfile path; io.Copy would otherwise use it
// through the underlying writer only.
func (tw *timeoutWriter) ReadFrom(src io.Reader) (int64, error) {
	tw.inflight.RLock()
	defer tw.inflight.RUnlock()
	if err := tw.begin(); err != nil {
		return 0, err
	}
	if rf, ok := tw.w.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(tw.w, src)
}

// FlushError lets http.ResponseController flush through the guard.
func (tw *timeoutWriter) FlushError() error {
	tw.inflight.RLock()
	defer tw.inflight.RUnlock()
	if err := tw.begin(); err != nil {
		return err
	}
	return tw.rc.Flush()
}

// Flush implements http.Flusher.
func (tw *timeoutWriter) Flush() { tw.FlushError() }

// SetReadDeadline and SetWriteDeadline let http.ResponseController reach
// the connection.
func (tw *timeoutWriter) SetReadDeadline(t time.Time) error  { return tw.rc.SetReadDeadline(t) }
func (tw *timeoutWriter) SetWriteDeadline(t time.Time) error { return tw.rc.SetWriteDeadline(t) }

// EnableFullDuplex passes through to the connection.
func (tw *timeoutWriter) EnableFullDuplex() error { return tw.rc.EnableFullDuplex() }

// Hijack passes through; a hijacked connection is the handler's own.
func (tw *timeoutWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if err := tw.begin(); err != nil {
		return nil, nil, err
	}
	return tw.rc.Hijack()
}

// Unwrap returns the underlying ResponseWriter.
func (tw *timeoutWriter) Unwrap() http.ResponseWriter { return tw.w }

// expire answers 503 (through refuse if set) if the handler has written
// nothing, else cuts the stream; it reports whether it answered.
func (tw *timeoutWriter) expire(retry time.Duration, id string, refuse func(http.ResponseWriter), cancel func(refused bool)) (refused bool) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.finished {
		return false
	}
	tw.expired = true
	cancel(!tw.wrote)
	if tw.wrote {
		tw.rc.SetWriteDeadline(time.Unix(1, 0))
		return false
	}
	h := tw.w.Header()
	h.Set("Retry-After", strconv.Itoa(int((retry+time.Second-1)/time.Second)))
	h.Set("Connection", "close")
	if id != "" {
		h.Set("X-Request-Id", id)
	}
	if refuse != nil {
		refuse(tw.w)
		tw.rc.Flush()
		return true
	}
	msg := "Service Unavailable: the request took too long"
	if id != "" {
		msg += " (request id " + id + ")"
	}
	msg += "\n"
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(msg)))
	tw.w.WriteHeader(http.StatusServiceUnavailable)
	io.WriteString(tw.w, msg)
	tw.rc.Flush()
	return true
}

// force sets the connection's deadlines to the past if the handler is
// still running; it reports whether it had to.
func (tw *timeoutWriter) force() bool {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.finished {
		return false
	}
	past := time.Unix(1, 0)
	tw.rc.SetReadDeadline(past)
	tw.rc.SetWriteDeadline(past)
	return true
}

// finish marks the handler as returned: the timer must not touch the
// ResponseWriter any more.
func (tw *timeoutWriter) finish() {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	tw.finished = true
}

// detach is finish for an abandoned handler: its later writes fail.
func (tw *timeoutWriter) detach() {
	tw.mu.Lock()
	tw.finished = true
	tw.expired = true
	tw.mu.Unlock()
	// Wait out a write already past begin; the forced deadlines of stage
	// 2 make it return.
	tw.inflight.Lock()
	//lint:ignore SA2001 waiting for the write that holds it is the point
	tw.inflight.Unlock()
}
