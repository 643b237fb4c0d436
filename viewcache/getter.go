package viewcache

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// A MultiGetter fetches several memcached keys at once, answering with the
// items found. *memcache.Client is one; *Getter is a faster one for the
// lookups of a Cache.
type MultiGetter interface {
	GetMulti(keys []string) (map[string]*memcache.Item, error)
}

// Getter does memcached multi-gets in one round trip per server, on its
// own connections. It exists because gomemcache's Client.GetMulti starts a
// goroutine per server even when every key lives on one, and on a lightly
// loaded machine waking that goroutine and then the caller costs as much
// as a third of a loopback round trip; a Cache's lookup (an entry and the
// generations of its dependencies) is exactly such a multi-get. With
// several servers Getter still asks them in parallel.
//
// Getter only reads. Build it from the ServerSelector of the
// memcache.Client that writes (memcache.NewFromSelector), so that both
// place every key on the same server.
//
// A Getter is safe for concurrent use. Close it to release its idle
// connections.
type Getter struct {
	// Timeout bounds each round trip: dialling, writing the request and
	// reading the answer. If zero, memcache.DefaultTimeout is used.
	Timeout time.Duration

	// MaxIdleConns is the number of idle connections kept per server. If
	// zero, memcache.DefaultMaxIdleConns is used, as in gomemcache.
	MaxIdleConns int

	sel memcache.ServerSelector

	mu     sync.Mutex            // guards idle and closed
	idle   map[string][]*getConn // by server address
	closed bool

	calls, roundTrips, dials, retries, errs atomic.Int64
}

// GetterStats are the counters of a Getter.
type GetterStats struct {
	Calls      int64 // GetMulti calls
	RoundTrips int64 // requests sent, one per server asked
	Dials      int64 // connections opened
	Retries    int64 // round trips retried on a new connection after a pooled one failed
	Errors     int64 // round trips that failed, after their retry if they had one (the connection is then closed)
}

// NewGetter returns a Getter that places keys on servers with sel.
func NewGetter(sel memcache.ServerSelector) *Getter {
	return &Getter{sel: sel, idle: make(map[string][]*getConn)}
}

// maxItemSize is the largest value memcached can hold (its -I limit is at
// most 1 GiB); a size beyond it can only be a corrupt answer.
const maxItemSize = 1 << 30

// preallocLimit is the largest value read into a buffer of its announced
// size at once; a larger one grows as its bytes arrive, so that a lying
// server cannot make us allocate what it never sends.
const preallocLimit = 1 << 20

var (
	// errGetterClosed is returned by GetMulti after Close.
	errGetterClosed = errors.New("viewcache: getter closed")
	// errProtocol is returned when a server's answer is not memcached's
	// text protocol as asked for.
	errProtocol = errors.New("viewcache: malformed memcached answer")
)

type getConn struct {
	nc  net.Conn
	r   *bufio.Reader
	req []byte // the request being written, reused
}

// Stats returns the getter's counters.
func (g *Getter) Stats() GetterStats {
	return GetterStats{
		Calls: g.calls.Load(), RoundTrips: g.roundTrips.Load(), Dials: g.dials.Load(),
		Retries: g.retries.Load(), Errors: g.errs.Load(),
	}
}

// Close closes the idle connections; connections in use are closed when
// their call ends. GetMulti fails after Close.
func (g *Getter) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for addr, conns := range g.idle {
		for _, cn := range conns {
			cn.nc.Close()
		}
		delete(g.idle, addr)
	}
	return nil
}

// GetMulti returns the items of keys that the servers hold; a key that is
// missing is absent from the map. A key memcached cannot take fails the
// whole call with memcache.ErrMalformedKey, as in gomemcache. When a
// server fails, the error is returned with what the others answered.
func (g *Getter) GetMulti(keys []string) (map[string]*memcache.Item, error) {
	g.calls.Add(1)
	var first net.Addr
	one := true
	for _, k := range keys {
		if !legalKey(k) {
			return nil, memcache.ErrMalformedKey
		}
		addr, err := g.sel.PickServer(k)
		if err != nil {
			return nil, err
		}
		if first == nil {
			first = addr
		} else if !sameServer(addr, first) {
			one = false
		}
	}
	m := make(map[string]*memcache.Item, len(keys))
	if len(keys) == 0 {
		return m, nil
	}
	if one {
		// The common case, and the reason Getter exists: no goroutine.
		return m, g.roundTrip(first, keys, func(it *memcache.Item) { m[it.Key] = it })
	}
	byAddr := make(map[string][]string)
	addrs := make(map[string]net.Addr)
	for _, k := range keys {
		addr, _ := g.sel.PickServer(k)
		s := addr.String()
		byAddr[s] = append(byAddr[s], k)
		addrs[s] = addr
	}
	var (
		mu       sync.Mutex // guards m and firstErr
		firstErr error
		wg       sync.WaitGroup
	)
	for s, ks := range byAddr {
		addr := addrs[s]
		wg.Add(1)
		go func() {
			defer wg.Done()
			var found []*memcache.Item
			err := g.roundTrip(addr, ks, func(it *memcache.Item) { found = append(found, it) })
			mu.Lock()
			defer mu.Unlock()
			for _, it := range found {
				m[it.Key] = it
			}
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	return m, firstErr
}

// roundTrip asks addr for keys. A connection whose round trip failed is in
// an unknown state and is closed, never reused. A pooled connection may
// have died while idle (memcached restarted, or closed it); such a failure
// is retried once on a new connection, which is safe because gets change
// nothing (found may then see an item twice).
func (g *Getter) roundTrip(addr net.Addr, keys []string, found func(*memcache.Item)) error {
	cn, pooled, err := g.conn(addr)
	if err != nil {
		g.errs.Add(1)
		return err
	}
	err = g.ask(cn, keys, found)
	if err != nil && pooled {
		cn.nc.Close()
		g.retries.Add(1)
		if cn, err = g.dial(addr); err == nil {
			err = g.ask(cn, keys, found)
		}
	}
	if err != nil {
		if cn != nil {
			cn.nc.Close()
		}
		g.errs.Add(1)
		return err
	}
	g.put(addr, cn)
	return nil
}

// ask sends one get for keys on cn and reads the answer.
func (g *Getter) ask(cn *getConn, keys []string, found func(*memcache.Item)) error {
	g.roundTrips.Add(1)
	if err := cn.nc.SetDeadline(time.Now().Add(g.timeout())); err != nil {
		return err
	}
	cn.req = append(cn.req[:0], "get"...)
	for _, k := range keys {
		cn.req = append(cn.req, ' ')
		cn.req = append(cn.req, k...)
	}
	cn.req = append(cn.req, "\r\n"...)
	if _, err := cn.nc.Write(cn.req); err != nil {
		return err
	}
	return readItems(cn.r, keys, found)
}

func (g *Getter) conn(addr net.Addr) (cn *getConn, pooled bool, err error) {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil, false, errGetterClosed
	}
	if conns := g.idle[addr.String()]; len(conns) > 0 {
		cn = conns[len(conns)-1]
		conns[len(conns)-1] = nil
		g.idle[addr.String()] = conns[:len(conns)-1]
		g.mu.Unlock()
		return cn, true, nil
	}
	g.mu.Unlock()
	cn, err = g.dial(addr)
	return cn, false, err
}

func (g *Getter) dial(addr net.Addr) (*getConn, error) {
	g.dials.Add(1)
	nc, err := net.DialTimeout(addr.Network(), addr.String(), g.timeout())
	if err != nil {
		return nil, fmt.Errorf("viewcache: memcached %s: %w", addr, err)
	}
	return &getConn{nc: nc, r: bufio.NewReader(nc)}, nil
}

func (g *Getter) timeout() time.Duration {
	if g.Timeout > 0 {
		return g.Timeout
	}
	return memcache.DefaultTimeout
}

func (g *Getter) put(addr net.Addr, cn *getConn) {
	max := g.MaxIdleConns
	if max <= 0 {
		max = memcache.DefaultMaxIdleConns
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	s := addr.String()
	if g.closed || len(g.idle[s]) >= max {
		cn.nc.Close()
		return
	}
	g.idle[s] = append(g.idle[s], cn)
}

// sameServer reports whether a and b name one server. They are compared
// by name: a ServerList hands out the same net.Addr for a server every
// time, but another selector may make a new one per call.
func sameServer(a, b net.Addr) bool {
	return a.Network() == b.Network() && a.String() == b.String()
}

// legalKey reports whether memcached takes key, by gomemcache's rule.
func legalKey(key string) bool {
	return len(key) <= maxKeyLen && safeKey(key)
}

// readItems reads the answer to "get keys...": VALUE blocks, then END.
// Every item must be one of keys (its Key is then that string, so that no
// key is allocated again); anything else is an error, and the connection
// it came from must not be reused.
func readItems(r *bufio.Reader, keys []string, found func(*memcache.Item)) error {
	next := 0 // memcached answers in the order asked; search from there
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return errProtocol
			}
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if string(line) == "END\r\n" {
			return nil
		}
		rest, ok := bytes.CutPrefix(line, []byte("VALUE "))
		if !ok {
			return answerError(line)
		}
		rest, ok = bytes.CutSuffix(rest, []byte("\r\n"))
		if !ok {
			return errProtocol
		}
		keyField, rest, _ := bytes.Cut(rest, []byte(" "))
		flagsField, rest, _ := bytes.Cut(rest, []byte(" "))
		sizeField, _, _ := bytes.Cut(rest, []byte(" ")) // a cas id may follow
		flags, ok1 := parseUint(flagsField, 1<<32-1)
		size, ok2 := parseUint(sizeField, maxItemSize)
		if !ok1 || !ok2 {
			return errProtocol
		}
		key := ""
		for i := range keys {
			j := (next + i) % len(keys)
			if string(keyField) == keys[j] {
				key, next = keys[j], j+1
				break
			}
		}
		if key == "" {
			return errProtocol // a key not asked for
		}
		value, err := readValue(r, int(size))
		if err != nil {
			return err
		}
		found(&memcache.Item{Key: key, Value: value, Flags: uint32(flags)})
	}
}

// readValue reads a value of size bytes and the CRLF after it.
func readValue(r *bufio.Reader, size int) ([]byte, error) {
	var b []byte
	if size <= preallocLimit {
		b = make([]byte, size+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, unexpected(err)
		}
	} else {
		var buf bytes.Buffer
		n, err := io.CopyN(&buf, r, int64(size)+2)
		if err != nil || n != int64(size)+2 {
			return nil, unexpected(err)
		}
		b = buf.Bytes()
	}
	if !bytes.HasSuffix(b, []byte("\r\n")) {
		return nil, errProtocol
	}
	return b[:size:size], nil
}

func unexpected(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// answerError turns a line that is neither VALUE nor END into an error:
// the server's own message when it sent one.
func answerError(line []byte) error {
	line = bytes.TrimRight(line, "\r\n")
	for _, p := range []string{"SERVER_ERROR", "CLIENT_ERROR", "ERROR"} {
		if bytes.HasPrefix(line, []byte(p)) {
			if len(line) > 200 {
				line = line[:200]
			}
			return fmt.Errorf("viewcache: memcached answered %q", line)
		}
	}
	return errProtocol
}

// parseUint parses a decimal number no larger than max.
func parseUint(b []byte, max uint64) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n > (max-uint64(c-'0'))/10 {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}
