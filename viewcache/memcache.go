package viewcache

import (
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// Defaults for the memcached tier.
const (
	DefaultBreakerThreshold = 5
	DefaultBreakerCooldown  = 5 * time.Second
)

// l2 wraps a memcached client with a circuit breaker: after a run of
// failures it stops calling the servers for a cool-down, then lets one
// call through as a probe. Every failure is a miss to the caller.
type l2 struct {
	mc        *memcache.Client
	getter    MultiGetter // mc, or a Getter on the same servers
	threshold int
	cooldown  time.Duration

	mu        sync.Mutex // guards failures, openUntil and probing
	failures  int
	openUntil time.Time
	probing   bool
}

func (l *l2) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failures < l.threshold {
		return true
	}
	if time.Now().Before(l.openUntil) || l.probing {
		return false
	}
	l.probing = true // one probe at a time
	return true
}

// done records the outcome of a call that allow let through; a cache miss
// or a lost add is an answer, not a failure.
func (l *l2) done(err error) bool {
	failed := err != nil && !errors.Is(err, memcache.ErrCacheMiss) && !errors.Is(err, memcache.ErrNotStored)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.probing = false
	if !failed {
		l.failures = 0
		return false
	}
	l.failures++
	if l.failures >= l.threshold {
		l.openUntil = time.Now().Add(l.cooldown)
	}
	return true
}

func (l *l2) getMulti(keys []string) (map[string]*memcache.Item, error) {
	if !l.allow() {
		return nil, errBreakerOpen
	}
	items, err := l.getter.GetMulti(keys)
	l.done(err)
	return items, err
}

func (l *l2) set(it *memcache.Item) error {
	if !l.allow() {
		return errBreakerOpen
	}
	err := l.mc.Set(it)
	l.done(err)
	return err
}

func (l *l2) add(it *memcache.Item) error {
	if !l.allow() {
		return errBreakerOpen
	}
	err := l.mc.Add(it)
	l.done(err)
	return err
}

func (l *l2) delete(key string) {
	if l.allow() {
		l.done(ignoreMiss(l.mc.Delete(key)))
	}
}

// incr bumps a generation counter, creating it if it does not exist.
func (l *l2) incr(key string) (uint64, error) {
	if !l.allow() {
		return 0, errBreakerOpen
	}
	n, err := l.mc.Increment(key, 1)
	if errors.Is(err, memcache.ErrCacheMiss) {
		// Start above any value a reader may have assumed (0 for a
		// missing counter) and above earlier incarnations: a counter
		// that was evicted restarts from the clock.
		start := uint64(time.Now().UnixNano())
		err = l.mc.Add(&memcache.Item{Key: key, Value: []byte(strconv.FormatUint(start, 10))})
		if errors.Is(err, memcache.ErrNotStored) {
			n, err = l.mc.Increment(key, 1) // someone created it meanwhile
		} else {
			n = start
		}
	}
	l.done(err)
	return n, err
}

func ignoreMiss(err error) error {
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil
	}
	return err
}

var errBreakerOpen = errors.New("viewcache: memcached circuit open")
