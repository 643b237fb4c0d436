// Package timebox provides time limits that fail in a controlled way,
// after interruptingcow's `with timeout(20.0, RuntimeError):`.
//
// Go cannot kill a goroutine, so a time box is cooperative: Do runs a
// function with a context whose deadline carries a typed cause (*Expired:
// which box, its limit, where it was opened), and returns that cause as
// an error when the box expired. Boxes nest as in interruptingcow: an
// inner box longer than what is left of the outer one is bounded by the
// outer, and when the outer fires its cause is the one reported. The
// package makes the cooperation complete where it usually breaks:
// Budget shares one pool of time across calls; AfterExpire and Detached
// let cleanup run after expiry; Unblock forces blocked I/O to return;
// Command kills a subprocess's whole process group, politely first; and
// Handler is HTTP middleware that streams, unlike http.TimeoutHandler.
package timebox

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var (
	// ErrExpired is matched (errors.Is) by every error that reports a
	// time box running out, including a spent Budget.
	ErrExpired = errors.New("timebox: time limit expired")
	// ErrBudgetSpent is matched by the error of a box that could not
	// open because its Budget had no time left (beyond its Reserve).
	ErrBudgetSpent = errors.New("timebox: budget spent")
	// ErrTerminated is returned by Cmd.Wait when the process group was
	// stopped with SIGTERM because its context ended.
	ErrTerminated = errors.New("timebox: process group terminated")
	// ErrKilled is returned by Cmd.Wait when the process group ignored
	// SIGTERM for the grace period and was killed with SIGKILL.
	ErrKilled = errors.New("timebox: process group killed")
)

// Expired is the cause of a box's context when its limit runs out, and
// the error Do returns then. It matches ErrExpired and
// context.DeadlineExceeded with errors.Is.
type Expired struct {
	Name   string        // Box.Name; when empty, Error names the function that opened the box
	Limit  time.Duration // the time the box had when it opened (after its Budget and parent bounded it)
	Opened time.Time     // when the box opened
	Budget string        // the name of the Budget it drew on, if any
	spent  bool          // the budget was spent before the box could open

	// pc is where the box was opened. Do records it when the box has
	// expired, on the opener's own stack (the call site of Do is still
	// there), rather than on every call: runtime.Callers would otherwise
	// be a third of a box's cost. Until then Where is empty.
	pc atomic.Uintptr
}

// Where returns "file:line" of the code that opened the box.
func (e *Expired) Where() string {
	pc := e.pc.Load()
	if pc == 0 {
		return ""
	}
	f, _ := runtime.CallersFrames([]uintptr{pc}).Next()
	return fmt.Sprintf("%s:%d", f.File, f.Line)
}

func (e *Expired) Error() string {
	var b strings.Builder
	b.WriteString("timebox: ")
	b.WriteString(e.name())
	if e.spent {
		fmt.Fprintf(&b, ": budget %q spent", e.Budget)
	} else {
		fmt.Fprintf(&b, " expired after %s", e.Limit)
	}
	if w := e.Where(); w != "" {
		b.WriteString(" (opened at ")
		b.WriteString(w)
		b.WriteString(")")
	}
	return b.String()
}

func (e *Expired) name() string {
	if e.Name != "" {
		return e.Name
	}
	if pc := e.pc.Load(); pc != 0 {
		f, _ := runtime.CallersFrames([]uintptr{pc}).Next()
		if f.Function != "" {
			return f.Function
		}
	}
	return "box"
}

// Is reports whether target is ErrExpired, context.DeadlineExceeded or,
// for a box refused by its budget, ErrBudgetSpent.
func (e *Expired) Is(target error) bool {
	return target == ErrExpired || target == context.DeadlineExceeded || (e.spent && target == ErrBudgetSpent)
}

// Box describes a time limit. The zero Box has no limit of its own (it
// is bounded only by its parent context and its Budget). A Box is a
// value; Do may be called on it any number of times, concurrently.
type Box struct {
	// Name identifies the box in errors and reports. If empty, the name
	// of the function that called Do is used.
	Name string

	// Limit is the time the box allows. If zero, only the parent's
	// deadline and the Budget bound it.
	Limit time.Duration

	// Budget, if set, is drawn on while the box is open: the box gets at
	// most what is left of it (less its Reserve), and fails at once with
	// ErrBudgetSpent when nothing is.
	Budget *Budget

	// Grace is how long after expiry the I/O registered with Unblock is
	// forced to return. If zero, it is forced at once.
	Grace time.Duration
}

// Do runs f within a time box of d. See Box.Do.
func Do(ctx context.Context, d time.Duration, f func(ctx context.Context) error) error {
	b := Box{Limit: d}
	return b.do(ctx, f)
}

// Do opens the box, runs f with the box's context and closes it. If the
// box (or an enclosing one) expired before f returned, Do returns the
// *Expired cause, joined with f's own error unless that merely reports
// the cancellation; otherwise it returns f's error. f is expected to
// return soon after its context is done; Do cannot stop it otherwise.
func (b Box) Do(ctx context.Context, f func(ctx context.Context) error) error {
	return b.do(ctx, f)
}

// open is a box that is running: it is both the context f sees and the
// cause that context carries.
type open struct {
	context.Context
	exp   Expired
	grace time.Duration
}

type boxKey struct{}

// Value returns the open box for boxKey and defers to the embedded
// context otherwise, so that children created from it attach to its
// cancellation without an extra goroutine.
func (o *open) Value(key any) any {
	if key == (boxKey{}) {
		return o
	}
	return o.Context.Value(key)
}

// do is Do's body; it is called directly by Do and Box.Do so that the
// caller's pc is found at a fixed depth (callerSkip).
func (b *Box) do(ctx context.Context, f func(ctx context.Context) error) error {
	o := &open{grace: b.Grace}
	o.exp.Name = b.Name
	limit := b.Limit
	if b.Budget != nil {
		now := time.Now()
		o.exp.Opened = now
		o.exp.Budget = b.Budget.Name
		left, err := b.Budget.open(now)
		if err != nil {
			o.exp.spent = true
			o.exp.setCaller(skipFromDo)
			return &o.exp
		}
		defer b.Budget.close()
		if limit <= 0 || left < limit {
			limit = left
		}
	}
	if limit < 0 {
		o.exp.setCaller(skipFromDo)
		return &o.exp
	}
	var cancel context.CancelFunc
	if limit == 0 {
		// No limit of its own: still a box, for nesting and hooks.
		o.Context, cancel = context.WithCancel(ctx)
	} else {
		o.exp.Limit = limit
		o.Context, cancel = context.WithTimeoutCause(ctx, limit, &o.exp)
		if o.exp.Opened.IsZero() {
			// WithTimeoutCause read the clock; reuse its reading unless
			// the parent's earlier deadline replaced ours.
			if dl, ok := o.Context.Deadline(); ok {
				if pdl, pok := ctx.Deadline(); !pok || !pdl.Equal(dl) {
					o.exp.Opened = dl.Add(-limit)
				}
			}
			if o.exp.Opened.IsZero() {
				o.exp.Opened = time.Now()
			}
		}
	}
	defer cancel()
	return o.result(f(o))
}

// Frames between runtime.Callers in setCaller and the caller of Do or
// Box.Do: Callers, setCaller, [result,] do, Do.
const (
	skipFromDo     = 4
	skipFromResult = 5
)

// setCaller records the pc of the code that called Do or Box.Do.
func (e *Expired) setCaller(skip int) {
	var pc [1]uintptr
	if runtime.Callers(skip, pc[:]) == 1 {
		e.pc.Store(pc[0])
	}
}

func (o *open) result(err error) error {
	if o.Context.Err() == nil {
		return err
	}
	var exp *Expired
	if !errors.As(context.Cause(o.Context), &exp) {
		return err // cancelled for another reason, such as the client leaving
	}
	// Record where this box was opened, and the enclosing one if it was
	// the one that fired; both are called from the opener's goroutine,
	// whose stack still holds the call.
	o.exp.setCaller(skipFromResult)
	if errors.Is(err, ErrExpired) {
		return err // already says so, perhaps with more (Cmd.Wait)
	}
	if err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return exp
	}
	return errors.Join(exp, err)
}

// FromContext returns the Expired description of the innermost box of
// ctx (its fields are final once the box is open), or nil outside any
// box.
func FromContext(ctx context.Context) *Expired {
	if o, ok := ctx.Value(boxKey{}).(*open); ok {
		return &o.exp
	}
	return nil
}

// Expiry reports whether ctx ended because a time box expired and, if
// so, which one.
func Expiry(ctx context.Context) (*Expired, bool) {
	var exp *Expired
	if ctx.Err() != nil && errors.As(context.Cause(ctx), &exp) {
		return exp, true
	}
	return nil, false
}

// AfterExpire arranges for f to run in its own goroutine when ctx ends
// because a time box expired; it does not run when ctx is cancelled for
// another reason or when stop is called first. Use it to release what a
// function that may be abandoned holds (locks, leases, temporary files).
func AfterExpire(ctx context.Context, f func(*Expired)) (stop func() bool) {
	return context.AfterFunc(ctx, func() {
		if exp, ok := Expiry(ctx); ok {
			f(exp)
		}
	})
}

// DefaultCleanupTime is a reasonable limit for cleanup work done with a
// context from Detached.
const DefaultCleanupTime = 5 * time.Second

// Detached returns a context for cleanup after expiry: it keeps the
// values of ctx (request id, logger, trace) but not its cancellation, and
// has its own limit d (DefaultCleanupTime if d is zero), so that a
// rollback or an error page can still be written after ctx is done.
func Detached(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		d = DefaultCleanupTime
	}
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}

// Deadliner is I/O that can be forced to return: net.Conn, *os.File for
// pipes, or anything with SetDeadline.
type Deadliner interface {
	SetDeadline(t time.Time) error
}

// Unblock registers d with the time box of ctx: when the box expires,
// after its Grace, d's deadline is set to the past, which makes reads and
// writes blocked on it return at once. Code that ignores its context but
// blocks on I/O is thus unblocked. Call release when the I/O is done.
func Unblock(ctx context.Context, d Deadliner) (release func()) {
	var grace time.Duration
	if o, ok := ctx.Value(boxKey{}).(*open); ok {
		grace = o.grace
	}
	var mu sync.Mutex // guards timer and released
	var timer *time.Timer
	released := false
	stop := AfterExpire(ctx, func(*Expired) {
		mu.Lock()
		defer mu.Unlock()
		if released {
			return
		}
		timer = time.AfterFunc(grace, func() { d.SetDeadline(time.Unix(1, 0)) })
	})
	return func() {
		stop()
		mu.Lock()
		defer mu.Unlock()
		released = true
		if timer != nil {
			timer.Stop()
		}
	}
}
