package gitproto

import (
	"net"
	"sync/atomic"
	"time"
)

// IdleConn is a connection that fails once nothing moved on it for
// Timeout, in either direction, for the transports that carry sessions
// (Daemon, gitproto/gitssh). Either direction counts because a client
// waiting for a pack sends nothing for minutes and must not be cut while
// the pack arrives. The deadline is moved at most every Timeout/4, off
// the per-packet path. Until Start it sets no deadline, so that a
// handshake can have its own. It is safe for concurrent use, as its
// Conn is.
type IdleConn struct {
	net.Conn
	Timeout time.Duration

	on    atomic.Bool
	moved atomic.Int64 // unix nanoseconds of the last move
}

// Start turns the idle deadline on.
func (c *IdleConn) Start() {
	c.on.Store(true)
	c.touch(true)
}

func (c *IdleConn) touch(force bool) {
	if !c.on.Load() || c.Timeout <= 0 {
		return
	}
	now := time.Now()
	last := c.moved.Load()
	if !force && now.UnixNano()-last < int64(c.Timeout/4) {
		return
	}
	if c.moved.CompareAndSwap(last, now.UnixNano()) || force {
		c.Conn.SetDeadline(now.Add(c.Timeout))
	}
}

// Read implements net.Conn.
func (c *IdleConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.touch(false)
	}
	return n, err
}

// Write implements net.Conn.
func (c *IdleConn) Write(p []byte) (int, error) {
	c.touch(false)
	return c.Conn.Write(p)
}
