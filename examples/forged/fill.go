package main

import (
	"context"
	"errors"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// errPending is why a page could not wait for its slow part: it is
// being made in the background, and the page says so.
var errPending = errors.New("still being computed")

// fills runs slow work for pages (blame of a long file) in the
// background, once per key, at most a few at a time, each bounded by a
// time limit of its own rather than the page's: a page waits for it up
// to its budget, and a later view of the page takes the result. The
// results that nobody has taken yet are kept in a bounded LRU. It is
// safe for concurrent use.
type fills struct {
	timeout time.Duration // of one fill
	sem     chan struct{} // one slot per fill running
	base    context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu    sync.Mutex // guards byKey
	byKey *lru.Cache[string, *fill]
}

type fill struct {
	done chan struct{}
	v    any
	err  error
}

func newFills(parallel, keep int, timeout time.Duration) *fills {
	c, _ := lru.New[string, *fill](keep)
	base, cancel := context.WithCancel(context.Background())
	return &fills{timeout: timeout, sem: make(chan struct{}, parallel), base: base, cancel: cancel, byKey: c}
}

// get returns run's result for key, waiting at most budget for it: at
// once if a fill ended with it, else after starting a fill (or joining
// the one running). Past the budget it returns errPending; the fill goes
// on. A fill that failed is forgotten once its error is returned, so
// that the next view tries again.
func (f *fills) get(ctx context.Context, key string, budget time.Duration, run func(ctx context.Context) (any, error)) (any, error) {
	f.mu.Lock()
	fl, ok := f.byKey.Get(key)
	if !ok {
		fl = &fill{done: make(chan struct{})}
		f.byKey.Add(key, fl)
		f.wg.Add(1)
		go f.run(key, fl, run)
	}
	f.mu.Unlock()
	t := time.NewTimer(budget)
	defer t.Stop()
	select {
	case <-fl.done:
		f.mu.Lock()
		if cur, ok := f.byKey.Peek(key); ok && cur == fl {
			f.byKey.Remove(key) // taken: the caller caches it
		}
		f.mu.Unlock()
		return fl.v, fl.err
	case <-t.C:
		return nil, errPending
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fills) run(key string, fl *fill, run func(ctx context.Context) (any, error)) {
	defer f.wg.Done()
	defer close(fl.done)
	select {
	case f.sem <- struct{}{}:
		defer func() { <-f.sem }()
	case <-f.base.Done():
		fl.err = f.base.Err()
		return
	}
	ctx, cancel := context.WithTimeout(f.base, f.timeout)
	defer cancel()
	fl.v, fl.err = run(ctx)
}

// close stops the fills under way and waits for them.
func (f *fills) close() {
	f.cancel()
	f.wg.Wait()
}
