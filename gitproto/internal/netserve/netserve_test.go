package netserve_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/forgekit/forgekit/gitproto/internal/netserve"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type closer struct{ closed atomic.Bool }

func (c *closer) Close() error { c.closed.Store(true); return nil }

var errClosed = errors.New("closed")

func TestAdmitHoldAndClose(t *testing.T) {
	t.Parallel()
	var s netserve.Set
	a := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	b := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2} // same host, other port
	c1, c2, c3 := &closer{}, &closer{}, &closer{}
	r1 := s.Admit(c1, a, 2)
	require.NotNil(t, r1)
	require.NotNil(t, s.Admit(c2, b, 2))
	assert.Nil(t, s.Admit(c3, a, 2), "a third from the host")
	r1()
	require.NotNil(t, s.Admit(c3, a, 2), "room again once one is released")
	held := &closer{}
	require.NotNil(t, s.Hold(held))

	require.True(t, s.Begin())
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
		t.Fatal("Close returned with work running")
	case <-time.After(20 * time.Millisecond):
	}
	s.End()
	<-done
	assert.True(t, c2.closed.Load() && c3.closed.Load() && held.closed.Load(), "every held connection closed")
	assert.False(t, c1.closed.Load(), "a released one is not the set's")
	assert.True(t, s.Closed())
	assert.False(t, s.Begin())
	assert.Nil(t, s.Admit(&closer{}, a, 2))
	assert.Nil(t, s.Hold(&closer{}))
	assert.Error(t, s.Context().Err())
}

func TestServeAndShutdown(t *testing.T) {
	t.Parallel()
	var s netserve.Set
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	release := make(chan struct{})
	served := make(chan struct{}, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- s.Serve(l, errClosed, func(c net.Conn) {
			defer c.Close()
			if !s.Begin() {
				return
			}
			defer s.End()
			served <- struct{}{}
			<-release
		})
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	<-served
	// Shutdown waits for the running work, or gives up with ctx.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	go func() { <-ctx.Done(); close(release) }()
	assert.ErrorIs(t, s.Shutdown(ctx), context.DeadlineExceeded)
	assert.ErrorIs(t, <-errc, errClosed)
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	assert.ErrorIs(t, s.Serve(l2, errClosed, func(net.Conn) {}), errClosed, "a closed set serves nothing")

	var idle netserve.Set
	assert.NoError(t, idle.Shutdown(context.Background()), "nothing to wait for")
}
