// Package netserve provides the bookkeeping that gitproto's servers over
// plain TCP (git:// and SSH) share: the listeners a server accepts on,
// with a backoff on temporary accept errors; the connections it holds,
// capped per client address; the work Shutdown waits for; and closing
// all of it at once.
package netserve

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Set is one server's listeners, connections and running work. Its zero
// value is ready to use; it is safe for concurrent use.
type Set struct {
	once   sync.Once
	ctx    context.Context // ended by Close
	cancel context.CancelFunc

	mu        sync.Mutex // guards the fields below
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[io.Closer]struct{}
	byAddr    map[string]int

	work sync.WaitGroup // what Shutdown waits for (Begin/End)
}

func (s *Set) init() {
	s.once.Do(func() {
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[io.Closer]struct{}{}
		s.byAddr = map[string]int{}
	})
}

// Context is ended by Close: the parent of the server's sessions.
func (s *Set) Context() context.Context {
	s.init()
	return s.ctx
}

// Serve accepts connections on l and runs serve for each in a goroutine
// of its own, until Close or Shutdown; it returns closed then, and other
// errors of l as they come. Temporary accept errors (out of file
// descriptors) are retried with a backoff up to a second.
func (s *Set) Serve(l net.Listener, closed error, serve func(net.Conn)) error {
	s.init()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return closed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.Closed() {
				return closed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		go serve(c)
	}
}

// Admit holds c, from addr, unless the set is closed or addr's host
// already has max connections held. It returns the function that lets c
// go (it does not close c), or nil when c is refused.
func (s *Set) Admit(c io.Closer, addr net.Addr, max int) (release func()) {
	s.init()
	host := addr.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.byAddr[host] >= max {
		return nil
	}
	s.byAddr[host]++
	s.conns[c] = struct{}{}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.conns, c)
		if s.byAddr[host]--; s.byAddr[host] <= 0 {
			delete(s.byAddr, host)
		}
	}
}

// Hold holds c, with no address cap (a connection's upper layer, such
// as an SSH connection over an admitted one), so that Close closes it.
// It returns the function that lets c go, or nil if the set is closed.
func (s *Set) Hold(c io.Closer) (release func()) {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.conns[c] = struct{}{}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.conns, c)
	}
}

// Begin counts a unit of work Shutdown waits for, and reports false
// (counting nothing) if the set is closing. Each true needs an End.
func (s *Set) Begin() bool {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.work.Add(1)
	return true
}

// End ends a unit of work that Begin counted.
func (s *Set) End() { s.work.Done() }

// Closed reports whether Close or Shutdown has begun.
func (s *Set) Closed() bool {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops the listeners, ends Context, closes every connection held
// and waits for the work to end (which closing its connections ends).
func (s *Set) Close() {
	s.shut()
	s.cancel()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.work.Wait()
}

// Shutdown stops the listeners and waits for the work to end, or for
// ctx; then it closes what remains as Close does, and returns ctx's
// error if it gave up waiting.
func (s *Set) Shutdown(ctx context.Context) error {
	s.shut()
	done := make(chan struct{})
	go func() { s.work.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	s.Close()
	return ctx.Err()
}

func (s *Set) shut() {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
}
