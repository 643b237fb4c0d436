package viewcache_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/internal/testenv"
	"github.com/forgekit/forgekit/viewcache"
)

// servers returns a ServerList over two real memcached servers, a client
// and a Getter on them.
func servers(t *testing.T) (*memcache.ServerList, *memcache.Client, *viewcache.Getter) {
	ss := new(memcache.ServerList)
	require.NoError(t, ss.SetServers(testenv.Memcached(t), testenv.Memcached(t)))
	mc := memcache.NewFromSelector(ss)
	g := viewcache.NewGetter(ss)
	t.Cleanup(func() { mc.Close(); g.Close() })
	return ss, mc, g
}

func TestGetterMatchesGomemcache(t *testing.T) {
	t.Parallel()
	ss, mc, g := servers(t)

	var keys []string
	for i := range 40 {
		k := fmt.Sprintf("key:%d", i)
		keys = append(keys, k)
		if i%5 == 4 {
			continue // missing
		}
		v := bytes.Repeat([]byte{byte('a' + i%26)}, i*i*37)
		if i == 7 {
			v = bytes.Repeat([]byte("0123456789abcdef\r\nEND\r\n"), 40000) // 920 KB with protocol-looking bytes
		}
		require.NoError(t, mc.Set(&memcache.Item{Key: k, Value: v, Flags: uint32(i * 1000003)}))
	}
	want, err := mc.GetMulti(keys)
	require.NoError(t, err)
	got, err := g.GetMulti(keys)
	require.NoError(t, err)
	require.Len(t, got, len(want))
	for k, w := range want {
		require.Contains(t, got, k)
		assert.Equal(t, w.Value, got[k].Value, k)
		assert.Equal(t, w.Flags, got[k].Flags, k)
		assert.Equal(t, k, got[k].Key)
	}
	s := g.Stats()
	assert.Equal(t, int64(1), s.Calls)
	assert.Equal(t, int64(2), s.RoundTrips, "one per server")
	assert.Zero(t, s.Errors)

	// One server's keys: one round trip, and the connections are reused.
	addr, err := ss.PickServer("key:1")
	require.NoError(t, err)
	var same []string
	for _, k := range keys {
		if a, _ := ss.PickServer(k); a == addr {
			same = append(same, k)
		}
	}
	for range 5 {
		got, err := g.GetMulti(same)
		require.NoError(t, err)
		for _, k := range same {
			assert.Equal(t, want[k] != nil, got[k] != nil, k)
		}
	}
	s = g.Stats()
	assert.Equal(t, int64(7), s.RoundTrips)
	assert.Equal(t, int64(2), s.Dials)
}

func TestGetterKeys(t *testing.T) {
	t.Parallel()
	ss := new(memcache.ServerList)
	require.NoError(t, ss.SetServers(testenv.Memcached(t)))
	g := viewcache.NewGetter(ss)
	defer g.Close()
	tests := []struct {
		name string
		keys []string
		err  error
	}{
		{name: "none", keys: nil},
		{name: "fine", keys: []string{"a", "b"}},
		{name: "too long", keys: []string{"a", strings.Repeat("k", 251)}, err: memcache.ErrMalformedKey},
		{name: "space", keys: []string{"a b"}, err: memcache.ErrMalformedKey},
		{name: "newline", keys: []string{"a\r\nflush_all"}, err: memcache.ErrMalformedKey},
		{name: "DEL", keys: []string{"a\x7f"}, err: memcache.ErrMalformedKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := g.GetMulti(tt.keys)
			if tt.err != nil {
				assert.ErrorIs(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Empty(t, m)
		})
	}
	assert.Equal(t, int64(1), g.Stats().RoundTrips, "no round trip for no keys or refused keys")
}

// scripted is a server that answers every request line with answer (then
// closes the connection if hangup), counting the connections it accepts.
type scripted struct {
	ln    net.Listener
	conns atomic.Int64
	wg    sync.WaitGroup
}

func newScripted(t *testing.T, answer string, hangup bool) *scripted {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &scripted{ln: ln}
	var mu sync.Mutex // guards open
	var open []net.Conn
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					if answer != "" {
						c.Write([]byte(answer))
					}
					if hangup {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func TestGetterBadAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		answer string
		hangup bool
	}{
		{name: "garbage", answer: "HELLO\r\n"},
		{name: "key not asked for", answer: "VALUE other 0 1\r\nx\r\nEND\r\n"},
		{name: "huge size", answer: "VALUE k 0 2147483648\r\nx\r\nEND\r\n"},
		{name: "size not a number", answer: "VALUE k 0 1x\r\nx\r\nEND\r\n"},
		{name: "flags overflow", answer: "VALUE k 4294967296 1\r\nx\r\nEND\r\n"},
		{name: "no CRLF after value", answer: "VALUE k 0 1\r\nxyEND\r\n"},
		{name: "truncated value", answer: "VALUE k 0 100\r\nxyz", hangup: true},
		{name: "big truncated value", answer: "VALUE k 0 100000000\r\nxyz", hangup: true},
		{name: "no END", answer: "VALUE k 0 1\r\nx\r\n", hangup: true},
		{name: "hangup", hangup: true},
		{name: "line too long", answer: "VALUE " + strings.Repeat("k", 8192) + "\r\n"},
		{name: "server error", answer: "SERVER_ERROR out of memory\r\n"},
		{name: "silent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newScripted(t, tt.answer, tt.hangup)
			ss := new(memcache.ServerList)
			require.NoError(t, ss.SetServers(srv.ln.Addr().String()))
			g := viewcache.NewGetter(ss)
			g.Timeout = 200 * time.Millisecond
			defer g.Close()
			for range 2 {
				_, err := g.GetMulti([]string{"k"})
				require.Error(t, err)
				if tt.name == "server error" {
					assert.ErrorContains(t, err, "out of memory", "the server's own words")
				}
			}
			assert.Equal(t, int64(2), g.Stats().Errors)
			assert.Equal(t, int64(2), srv.conns.Load(), "a connection that failed is never reused")
		})
	}
}

// A memcached restart leaves the pooled connections dead; the next call
// retries on a new one instead of failing.
func TestGetterReconnects(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "memcached", "memcached")
	port := testenv.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "-u", "nobody", "-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0")
		require.NoError(t, cmd.Start())
		testenv.WaitListening(t, addr, 10*time.Second)
		return cmd
	}
	cmd := start()
	ss := new(memcache.ServerList)
	require.NoError(t, ss.SetServers(addr))
	mc := memcache.NewFromSelector(ss)
	defer mc.Close()
	g := viewcache.NewGetter(ss)
	defer g.Close()
	require.NoError(t, mc.Set(&memcache.Item{Key: "k", Value: []byte("v1")}))
	m, err := g.GetMulti([]string{"k"})
	require.NoError(t, err)
	assert.Equal(t, "v1", string(m["k"].Value))

	cmd.Process.Kill()
	cmd.Wait()
	_, err = g.GetMulti([]string{"k"})
	assert.Error(t, err, "down")

	cmd = start()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	m, err = g.GetMulti([]string{"k"})
	require.NoError(t, err, "up again")
	assert.Empty(t, m, "a new memcached is empty")
}

func TestGetterClosed(t *testing.T) {
	t.Parallel()
	ss := new(memcache.ServerList)
	require.NoError(t, ss.SetServers(testenv.Memcached(t)))
	g := viewcache.NewGetter(ss)
	_, err := g.GetMulti([]string{"k"})
	require.NoError(t, err)
	require.NoError(t, g.Close())
	_, err = g.GetMulti([]string{"k"})
	assert.Error(t, err)
}

// Two processes' caches, one reading through a Getter, one through
// gomemcache, see the same entries and each other's invalidations.
func TestCacheWithGetter(t *testing.T) {
	t.Parallel()
	ss, mc, g := servers(t)
	a, b := viewcache.New("forge", "v1"), viewcache.New("forge", "v1")
	a.Memcache, a.Getter, a.MaxBytes = mc, g, -1
	b.Memcache, b.MaxBytes = memcache.NewFromSelector(ss), -1
	defer b.Memcache.Close()
	deps := []string{"repo:alice/proj", "user:42", "user:43"}
	var ra, rb counter
	assert.Equal(t, "render 1", get(t, a, "readme", deps, &ra))
	assert.Equal(t, "render 1", get(t, b, "readme", deps, &rb))
	assert.Zero(t, rb.n.Load(), "b sees a's render")
	require.NoError(t, b.Invalidate(context.Background(), "user:43"))
	assert.Equal(t, "render 2", get(t, a, "readme", deps, &ra), "a sees b's invalidation")
	assert.Equal(t, "render 2", get(t, a, "readme", deps, &ra))
	assert.Equal(t, int64(2), a.Stats().L2Hits+b.Stats().L2Hits)
	assert.Positive(t, g.Stats().Calls)
}

// freshAddrs is a selector that makes a new net.Addr on every call.
type freshAddrs struct{ addr string }

func (f freshAddrs) PickServer(string) (net.Addr, error) { return net.ResolveTCPAddr("tcp", f.addr) }
func (f freshAddrs) Each(fn func(net.Addr) error) error {
	a, _ := net.ResolveTCPAddr("tcp", f.addr)
	return fn(a)
}

// Servers are told apart by name, so a selector that makes new addresses
// on every call still gets one round trip and pooled connections.
func TestGetterSelectorWithFreshAddrs(t *testing.T) {
	t.Parallel()
	g := viewcache.NewGetter(freshAddrs{testenv.Memcached(t)})
	defer g.Close()
	for range 3 {
		_, err := g.GetMulti([]string{"a", "b", "c"})
		require.NoError(t, err)
	}
	s := g.Stats()
	assert.Equal(t, int64(3), s.RoundTrips)
	assert.Equal(t, int64(1), s.Dials)
}
