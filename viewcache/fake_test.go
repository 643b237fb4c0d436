package viewcache_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/viewcache"
)

// fakeMemcached speaks enough of memcached's text protocol (get, gets,
// set, add, delete, incr) for the cache, and misbehaves on demand. It is
// for fault injection next to the real server, not instead of it.
type fakeMemcached struct {
	ln    net.Listener
	mu    sync.Mutex // guards items
	items map[string][]byte
	wg    sync.WaitGroup

	fault atomic.Value // string: "", "slow", "garbage", "drop"
}

func newFake(t *testing.T) *fakeMemcached {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := &fakeMemcached{ln: ln, items: make(map[string][]byte)}
	f.fault.Store("")
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(func() { ln.Close(); f.wg.Wait() })
	return f
}

func (f *fakeMemcached) serve() {
	defer f.wg.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		conns.Add(1)
		go func() { defer conns.Done(); f.conn(c) }()
	}
}

func (f *fakeMemcached) conn(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		switch f.fault.Load().(string) {
		case "slow":
			time.Sleep(time.Second)
		case "garbage":
			w.WriteString("VALUE oops\r\n\x00\x01 nonsense\r\n")
			w.Flush()
			continue
		case "drop":
			return
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		f.mu.Lock()
		switch fields[0] {
		case "get", "gets":
			for _, k := range fields[1:] {
				if v, ok := f.items[k]; ok {
					fmt.Fprintf(w, "VALUE %s 0 %d 1\r\n%s\r\n", k, len(v), v)
				}
			}
			w.WriteString("END\r\n")
		case "set", "add":
			n, _ := strconv.Atoi(fields[4])
			buf := make([]byte, n+2)
			f.mu.Unlock()
			_, err := readFull(r, buf)
			f.mu.Lock()
			if err != nil {
				f.mu.Unlock()
				return
			}
			if _, exists := f.items[fields[1]]; fields[0] == "add" && exists {
				w.WriteString("NOT_STORED\r\n")
			} else {
				f.items[fields[1]] = buf[:n]
				w.WriteString("STORED\r\n")
			}
		case "delete":
			if _, ok := f.items[fields[1]]; ok {
				delete(f.items, fields[1])
				w.WriteString("DELETED\r\n")
			} else {
				w.WriteString("NOT_FOUND\r\n")
			}
		case "incr":
			v, ok := f.items[fields[1]]
			if !ok {
				w.WriteString("NOT_FOUND\r\n")
				break
			}
			n, _ := strconv.ParseUint(string(v), 10, 64)
			d, _ := strconv.ParseUint(fields[2], 10, 64)
			f.items[fields[1]] = []byte(strconv.FormatUint(n+d, 10))
			fmt.Fprintf(w, "%d\r\n", n+d)
		default:
			w.WriteString("ERROR\r\n")
		}
		f.mu.Unlock()
		if w.Flush() != nil {
			return
		}
	}
}

func readFull(r *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func TestFaults(t *testing.T) {
	t.Parallel()
	for _, fault := range []string{"slow", "garbage", "drop"} {
		t.Run(fault, func(t *testing.T) {
			t.Parallel()
			f := newFake(t)
			mc := memcache.New(f.ln.Addr().String())
			mc.Timeout = 100 * time.Millisecond
			defer mc.Close()
			c := viewcache.New("fault", "v1")
			c.Memcache, c.MaxBytes = mc, -1
			var r counter
			assert.Equal(t, "render 1", get(t, c, "k", []string{"d"}, &r))
			assert.Equal(t, "render 1", get(t, c, "k", []string{"d"}, &r), "the fake works")
			f.fault.Store(fault)
			for i := range 3 {
				b, err := c.GetOrRender(context.Background(), "k", []string{"d"}, r.render)
				require.NoError(t, err, "a %s memcached is a miss, not an error", fault)
				assert.Equal(t, fmt.Sprint("render ", i+2), string(b))
			}
			assert.Positive(t, c.Stats().L2Errors)
			f.fault.Store("")
		})
	}
}
