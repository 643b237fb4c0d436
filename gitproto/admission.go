package gitproto

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Admission.
const (
	DefaultMaxPerRepo           = 8
	DefaultMaxFullClonesPerRepo = 2
	DefaultMaxQueue             = 32
	DefaultMaxWait              = 30 * time.Second
	DefaultRetryAfter           = 10 * time.Second
)

// Admission limits how many packs are generated at once for one
// repository, in two classes: full clones (fetches with no haves), which
// are what CI clone storms are made of, and everything else. Each class has
// its own slots and its own bounded queue, so a storm of clones waits in
// its own line while people's fetches go ahead. A request that finds the
// queue full, or waits longer than MaxWait, gets 503 with Retry-After.
//
// Requests served from the pack cache, advertisements and pushes do not
// take a slot. An Admission is safe for concurrent use; the zero value
// uses the defaults.
type Admission struct {
	// MaxPerRepo is the number of concurrent pack generations for
	// incremental fetches per repository. If zero, DefaultMaxPerRepo.
	MaxPerRepo int

	// MaxFullClonesPerRepo is the number of concurrent full-clone pack
	// generations per repository. If zero, DefaultMaxFullClonesPerRepo.
	MaxFullClonesPerRepo int

	// MaxQueue is the number of requests per repository and class that
	// may wait for a slot. If zero, DefaultMaxQueue; if negative, none
	// wait.
	MaxQueue int

	// MaxWait is the longest a request waits for a slot. If zero,
	// DefaultMaxWait.
	MaxWait time.Duration

	// RetryAfter is sent with 503 answers. If zero, DefaultRetryAfter.
	RetryAfter time.Duration

	mu    sync.Mutex // guards repos
	repos map[string]*repoSlots

	admitted, queued, rejected, timedOut atomic.Int64
}

// AdmissionStats are cumulative counters of an Admission.
type AdmissionStats struct {
	Admitted int64 // requests that got a slot, at once or after waiting
	Queued   int64 // requests that had to wait
	Rejected int64 // requests refused because the queue was full
	TimedOut int64 // requests that waited MaxWait in vain
	Running  int64 // slots in use now, all repositories and classes
	Waiting  int64 // requests waiting now
}

// OverloadError is returned when admission control refuses a request. It
// wraps ErrOverloaded.
type OverloadError struct {
	Repo       string
	FullClone  bool
	RetryAfter time.Duration
}

func (e *OverloadError) Error() string {
	kind := "fetches"
	if e.FullClone {
		kind = "clones"
	}
	return fmt.Sprintf("gitproto: too many concurrent %s of this repository, retry in %s", kind, e.RetryAfter)
}

func (e *OverloadError) Unwrap() error { return ErrOverloaded }

type repoSlots struct {
	classes [2]slotClass // 0: incremental, 1: full clones
}

type slotClass struct {
	running int
	queue   []chan struct{} // closed to hand a slot to the waiter
}

func (a *Admission) limits(full bool) (slots, queue int) {
	if full {
		slots = a.MaxFullClonesPerRepo
		if slots <= 0 {
			slots = DefaultMaxFullClonesPerRepo
		}
	} else {
		slots = a.MaxPerRepo
		if slots <= 0 {
			slots = DefaultMaxPerRepo
		}
	}
	switch {
	case a.MaxQueue == 0:
		queue = DefaultMaxQueue
	case a.MaxQueue > 0:
		queue = a.MaxQueue
	}
	return slots, queue
}

func (a *Admission) retryAfter() time.Duration {
	if a.RetryAfter > 0 {
		return a.RetryAfter
	}
	return DefaultRetryAfter
}

// Stats returns the admission counters.
func (a *Admission) Stats() AdmissionStats {
	s := AdmissionStats{
		Admitted: a.admitted.Load(),
		Queued:   a.queued.Load(),
		Rejected: a.rejected.Load(),
		TimedOut: a.timedOut.Load(),
	}
	a.mu.Lock()
	for _, r := range a.repos {
		for _, c := range r.classes {
			s.Running += int64(c.running)
			s.Waiting += int64(len(c.queue))
		}
	}
	a.mu.Unlock()
	return s
}

// acquire takes a slot for a pack generation of repo, waiting in line if
// allowed. A nil Admission admits everything.
func (a *Admission) acquire(ctx context.Context, repo string, full bool) (release func(), waited time.Duration, err error) {
	if a == nil {
		return func() {}, 0, nil
	}
	slots, maxQueue := a.limits(full)
	ci := 0
	if full {
		ci = 1
	}
	a.mu.Lock()
	if a.repos == nil {
		a.repos = make(map[string]*repoSlots)
	}
	rs := a.repos[repo]
	if rs == nil {
		rs = &repoSlots{}
		a.repos[repo] = rs
	}
	c := &rs.classes[ci]
	release = func() { a.release(repo, ci) }
	if c.running < slots {
		c.running++
		a.mu.Unlock()
		a.admitted.Add(1)
		return release, 0, nil
	}
	if len(c.queue) >= maxQueue {
		a.mu.Unlock()
		a.rejected.Add(1)
		return nil, 0, &OverloadError{Repo: repo, FullClone: full, RetryAfter: a.retryAfter()}
	}
	ch := make(chan struct{})
	c.queue = append(c.queue, ch)
	a.mu.Unlock()
	a.queued.Add(1)

	start := time.Now()
	maxWait := a.MaxWait
	if maxWait <= 0 {
		maxWait = DefaultMaxWait
	}
	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	select {
	case <-ch:
		a.admitted.Add(1)
		return release, time.Since(start), nil
	case <-ctx.Done():
		err = context.Cause(ctx)
	case <-timer.C:
		a.timedOut.Add(1)
		err = &OverloadError{Repo: repo, FullClone: full, RetryAfter: a.retryAfter()}
	}
	a.mu.Lock()
	for i, q := range c.queue {
		if q == ch {
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			a.gc(repo, rs)
			a.mu.Unlock()
			return nil, time.Since(start), err
		}
	}
	a.mu.Unlock()
	// The slot was handed over while we gave up: pass it on.
	<-ch
	a.release(repo, ci)
	return nil, time.Since(start), err
}

func (a *Admission) release(repo string, ci int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	rs := a.repos[repo]
	c := &rs.classes[ci]
	if len(c.queue) > 0 {
		ch := c.queue[0]
		c.queue = c.queue[1:]
		close(ch) // the slot passes to the waiter; running is unchanged
		return
	}
	c.running--
	a.gc(repo, rs)
}

// gc drops an idle repository's entry; a.mu must be held.
func (a *Admission) gc(repo string, rs *repoSlots) {
	for _, c := range rs.classes {
		if c.running > 0 || len(c.queue) > 0 {
			return
		}
	}
	delete(a.repos, repo)
}
