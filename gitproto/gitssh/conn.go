package gitssh

import (
	"net"
	"sync/atomic"
	"time"
)

// idleConn closes a connection on which nothing moved for d, in either
// direction: a client waiting for a pack sends nothing for minutes, and
// must not be cut while the pack arrives. The deadline is moved at most
// every d/4, off the per-packet path. It is safe for concurrent use, as
// the ssh package reads and writes from different goroutines.
type idleConn struct {
	net.Conn
	d     time.Duration
	on    atomic.Bool
	moved atomic.Int64 // unix nanoseconds of the last move
}

func newIdleConn(c net.Conn, d time.Duration) *idleConn { return &idleConn{Conn: c, d: d} }

// start turns the idle deadline on (after the handshake, which has its
// own).
func (c *idleConn) start() {
	c.on.Store(true)
	c.touch(true)
}

func (c *idleConn) touch(force bool) {
	if !c.on.Load() {
		return
	}
	now := time.Now()
	last := c.moved.Load()
	if !force && now.UnixNano()-last < int64(c.d/4) {
		return
	}
	if c.moved.CompareAndSwap(last, now.UnixNano()) || force {
		c.Conn.SetDeadline(now.Add(c.d))
	}
}

func (c *idleConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.touch(false)
	}
	return n, err
}

func (c *idleConn) Write(p []byte) (int, error) {
	c.touch(false)
	return c.Conn.Write(p)
}
