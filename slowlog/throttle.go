package slowlog

import (
	"context"
	"hash/fnv"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Throttle.
const (
	DefaultThrottleInterval = 10 * time.Minute
	DefaultThrottleMax      = 10
)

// Throttle passes reports on to a Sink that reaches people (mail, a chat
// webhook) so that a storm of slow requests does not become a storm of
// messages: one report per stack signature (Signature) per Interval, at
// most Max reports per Interval in all, and a request's final line only
// if one of its reports was passed. The next report passed says how many
// were held back (Report.Suppressed). The Watchdog's own deduplication,
// per route, comes first; Throttle is for the sinks that cost attention.
//
// A Throttle is safe for concurrent use.
type Throttle struct {
	Sink Sink

	// Interval is the window of deduplication and of Max. If zero,
	// DefaultThrottleInterval.
	Interval time.Duration

	// Max bounds the reports passed per Interval. If zero,
	// DefaultThrottleMax.
	Max int

	mu       sync.Mutex           // guards the fields below
	seen     map[string]time.Time // signature → when its last report passed
	passedID map[string]time.Time // ids of requests with a report passed
	window   time.Time            // start of the current Max window
	n        int                  // reports passed in the window
	held     int                  // reports held back since the last pass

	passed, suppressed atomic.Int64
}

// ThrottleStats are the counters of a Throttle.
type ThrottleStats struct {
	Passed     int64 // reports passed on
	Suppressed int64 // reports held back
}

// Stats returns the counters.
func (t *Throttle) Stats() ThrottleStats {
	return ThrottleStats{Passed: t.passed.Load(), Suppressed: t.suppressed.Load()}
}

// Send implements Sink.
func (t *Throttle) Send(ctx context.Context, r *Report) error {
	if !t.admit(r, time.Now()) {
		t.suppressed.Add(1)
		return nil
	}
	t.passed.Add(1)
	return t.Sink.Send(ctx, r)
}

func (t *Throttle) admit(r *Report, now time.Time) bool {
	interval := t.Interval
	if interval <= 0 {
		interval = DefaultThrottleInterval
	}
	max := t.Max
	if max <= 0 {
		max = DefaultThrottleMax
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seen == nil {
		t.seen, t.passedID = map[string]time.Time{}, map[string]time.Time{}
	}
	if now.Sub(t.window) >= interval {
		t.window, t.n = now, 0
		for k, at := range t.seen {
			if now.Sub(at) >= interval {
				delete(t.seen, k)
			}
		}
		for k, at := range t.passedID {
			if now.Sub(at) >= 2*interval {
				delete(t.passedID, k)
			}
		}
	}
	if r.Final {
		_, ok := t.passedID[r.ID]
		delete(t.passedID, r.ID)
		return ok
	}
	sig := Signature(r)
	if at, ok := t.seen[sig]; (ok && now.Sub(at) < interval) || t.n >= max {
		t.held++
		return false
	}
	t.seen[sig] = now
	t.passedID[r.ID] = now
	t.n++
	r.Suppressed += t.held
	t.held = 0
	return true
}

// Signature identifies what a slow report is stuck on: its route and the
// functions of its most numerous stack (not their lines, which differ by
// a call or two in the same loop), hashed. Reports of one cause share a
// signature; a report without stacks has its route's.
func Signature(r *Report) string {
	h := fnv.New64a()
	h.Write([]byte(r.Kind + "\x00" + r.Method + "\x00" + r.Route))
	if len(r.Stacks) > 0 {
		for _, f := range r.Stacks[0].Frames {
			h.Write([]byte{0})
			h.Write([]byte(f.Func))
		}
	}
	return strconv.FormatUint(h.Sum64(), 16)
}
