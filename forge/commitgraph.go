package forge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/go-git/go-git/v5/plumbing"
)

// This file reads git's commit-graph (gitformat-commit-graph(5)): one
// file or a chain of them, mapped into memory, with the changed-path
// Bloom filters that maintenance writes (commit-graph write
// --changed-paths). go-git reads the commit data through a ReadAt per
// field and not the filters at all; a history walk over a large
// repository needs both, at memory speed.

var errBadGraph = errors.New("forge: malformed commit-graph")

const graphNoParent = 0x70000000

// commitGraph is a repository's commit-graph. Positions are global across
// a chain's layers, as git numbers them. A commitGraph is safe for
// concurrent use; it stays mapped until its last user releases it after
// close.
type commitGraph struct {
	layers  []*graphLayer // oldest first
	n       uint32        // commits in all layers
	hashLen int

	mu     sync.Mutex // guards refs and closed
	refs   int
	closed bool
}

type graphLayer struct {
	data                 []byte // the mapped file
	base, n              uint32 // commits in earlier layers; in this one
	fanout, oidl, cdat   []byte
	edge, bidx, bdat     []byte
	bloomVersion, hashes uint32 // of the filters; 0 if the layer has none
}

// openCommitGraph maps the commit-graph of the repository in dir: the
// chain if there is one, else the single file. It returns nil, nil when
// there is neither.
func openCommitGraph(dir string) (*commitGraph, error) {
	info := filepath.Join(dir, "objects", "info")
	var files []string
	if b, err := os.ReadFile(filepath.Join(info, "commit-graphs", "commit-graph-chain")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			files = append(files, filepath.Join(info, "commit-graphs", "graph-"+l+".graph"))
		}
	} else if _, err := os.Stat(filepath.Join(info, "commit-graph")); err == nil {
		files = []string{filepath.Join(info, "commit-graph")}
	} else {
		return nil, nil
	}
	g := &commitGraph{refs: 1}
	for _, f := range files {
		l, err := mapGraphLayer(f, g.n)
		if err != nil {
			g.unmap()
			return nil, err
		}
		hl := 20
		if l.data[5] == 2 {
			hl = 32
		}
		if g.hashLen != 0 && hl != g.hashLen {
			l.unmap()
			g.unmap()
			return nil, errBadGraph
		}
		g.hashLen = hl
		g.layers = append(g.layers, l)
		g.n += l.n
	}
	if err := g.check(); err != nil {
		g.unmap()
		return nil, err
	}
	return g, nil
}

func mapGraphLayer(path string, base uint32) (*graphLayer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	if fi.Size() < 8+12 || fi.Size() > 1<<34 {
		return nil, errBadGraph
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("forge: mapping %s: %w", path, err)
	}
	l := &graphLayer{data: data, base: base}
	if err := l.parse(); err != nil {
		l.unmap()
		return nil, fmt.Errorf("%w: %s: %v", errBadGraph, path, err)
	}
	return l, nil
}

func (l *graphLayer) unmap() {
	if l.data != nil {
		syscall.Munmap(l.data)
		l.data = nil
	}
}

// parse finds the chunks and checks that they fit.
func (l *graphLayer) parse() error {
	d := l.data
	if !bytes.Equal(d[:4], []byte("CGPH")) || d[4] != 1 {
		return errors.New("not a version 1 commit-graph")
	}
	hl := 20
	switch d[5] {
	case 1:
	case 2:
		hl = 32
	default:
		return fmt.Errorf("hash version %d", d[5])
	}
	chunks := int(d[6])
	if 8+(chunks+1)*12 > len(d) {
		return errors.New("chunk table past the end")
	}
	type span struct{ start, end uint64 }
	found := map[string]span{}
	for i := 0; i < chunks; i++ {
		e := d[8+i*12:]
		id := string(e[:4])
		start := binary.BigEndian.Uint64(e[4:])
		end := binary.BigEndian.Uint64(e[16:])
		if start > end || end > uint64(len(d)) {
			return fmt.Errorf("chunk %q out of range", id)
		}
		found[id] = span{start, end}
	}
	get := func(id string) []byte {
		s, ok := found[id]
		if !ok {
			return nil
		}
		return d[s.start:s.end]
	}
	l.fanout, l.oidl, l.cdat = get("OIDF"), get("OIDL"), get("CDAT")
	if len(l.fanout) != 256*4 {
		return errors.New("bad fanout")
	}
	l.n = binary.BigEndian.Uint32(l.fanout[255*4:])
	if uint64(len(l.oidl)) != uint64(l.n)*uint64(hl) || uint64(len(l.cdat)) != uint64(l.n)*uint64(hl+16) {
		return errors.New("commit chunks do not match the commit count")
	}
	l.edge = get("EDGE")
	if bidx, bdat := get("BIDX"), get("BDAT"); len(bidx) == int(l.n)*4 && len(bdat) >= 12 {
		v, h := binary.BigEndian.Uint32(bdat), binary.BigEndian.Uint32(bdat[4:])
		if (v == 1 || v == 2) && h > 0 && h < 64 {
			l.bidx, l.bdat, l.bloomVersion, l.hashes = bidx, bdat[12:], v, h
		}
	}
	return nil
}

// check makes sure every parent position is in range, so that walks
// need no bounds checks of their own.
func (g *commitGraph) check() error {
	for _, l := range g.layers {
		w := g.hashLen + 16
		for i := uint32(0); i < l.n; i++ {
			rec := l.cdat[int(i)*w+g.hashLen:]
			p1, p2 := binary.BigEndian.Uint32(rec), binary.BigEndian.Uint32(rec[4:])
			if p1 != graphNoParent && p1 >= l.base+l.n {
				return errBadGraph
			}
			if p2 != graphNoParent && p2&0x80000000 == 0 && p2 >= l.base+l.n {
				return errBadGraph
			}
			if p2 != graphNoParent && p2&0x80000000 != 0 {
				j := int(p2 & 0x7fffffff)
				for {
					if (j+1)*4 > len(l.edge) {
						return errBadGraph
					}
					e := binary.BigEndian.Uint32(l.edge[j*4:])
					if e&0x7fffffff >= l.base+l.n {
						return errBadGraph
					}
					if e&0x80000000 != 0 {
						break
					}
					j++
				}
			}
		}
	}
	return nil
}

// acquire takes a reference for a walk; release gives it back.
func (g *commitGraph) acquire() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.refs++
	return true
}

func (g *commitGraph) release() {
	g.mu.Lock()
	g.refs--
	done := g.refs == 0
	g.mu.Unlock()
	if done {
		g.unmap()
	}
}

// close drops the owner's reference: the mapping goes once no walk uses
// it.
func (g *commitGraph) close() {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.closed = true
	g.mu.Unlock()
	g.release()
}

func (g *commitGraph) unmap() {
	for _, l := range g.layers {
		l.unmap()
	}
}

// layer returns the layer holding position pos and its index there.
func (g *commitGraph) layer(pos uint32) (*graphLayer, uint32) {
	for i := len(g.layers) - 1; i >= 0; i-- {
		if l := g.layers[i]; pos >= l.base {
			return l, pos - l.base
		}
	}
	panic("forge: commit-graph position out of range")
}

// lookup finds the position of a commit.
func (g *commitGraph) lookup(h plumbing.Hash) (uint32, bool) {
	for _, l := range g.layers {
		lo := uint32(0)
		if h[0] > 0 {
			lo = binary.BigEndian.Uint32(l.fanout[(int(h[0])-1)*4:])
		}
		hi := binary.BigEndian.Uint32(l.fanout[int(h[0])*4:])
		for lo < hi {
			mid := (lo + hi) / 2
			switch c := bytes.Compare(l.oidl[int(mid)*g.hashLen:int(mid+1)*g.hashLen], h[:g.hashLen]); {
			case c == 0:
				return l.base + mid, true
			case c < 0:
				lo = mid + 1
			default:
				hi = mid
			}
		}
	}
	return 0, false
}

func (g *commitGraph) hash(pos uint32) plumbing.Hash {
	l, i := g.layer(pos)
	var h plumbing.Hash
	copy(h[:], l.oidl[int(i)*g.hashLen:])
	return h
}

func (g *commitGraph) record(pos uint32) []byte {
	l, i := g.layer(pos)
	w := g.hashLen + 16
	return l.cdat[int(i)*w : int(i+1)*w]
}

// tree is the commit's root tree.
func (g *commitGraph) tree(pos uint32) plumbing.Hash {
	var h plumbing.Hash
	copy(h[:], g.record(pos)[:g.hashLen])
	return h
}

// dateAndLevel are the commit's committer time and topological level.
func (g *commitGraph) dateAndLevel(pos uint32) (int64, uint32) {
	rec := g.record(pos)[g.hashLen+8:]
	hi, lo := binary.BigEndian.Uint32(rec), binary.BigEndian.Uint32(rec[4:])
	return int64(hi&3)<<32 | int64(lo), hi >> 2
}

// parents appends the positions of the commit's parents to buf.
func (g *commitGraph) parents(pos uint32, buf []uint32) []uint32 {
	l, _ := g.layer(pos)
	rec := g.record(pos)[g.hashLen:]
	p1, p2 := binary.BigEndian.Uint32(rec), binary.BigEndian.Uint32(rec[4:])
	if p1 == graphNoParent {
		return buf
	}
	buf = append(buf, p1)
	switch {
	case p2 == graphNoParent:
	case p2&0x80000000 == 0:
		buf = append(buf, p2)
	default:
		for j := int(p2 & 0x7fffffff); ; j++ {
			e := binary.BigEndian.Uint32(l.edge[j*4:])
			buf = append(buf, e&0x7fffffff)
			if e&0x80000000 != 0 {
				break
			}
		}
	}
	return buf
}

// bloomFilter is one commit's changed-path filter: the paths that differ
// from its first parent, with every leading directory.
type bloomFilter struct {
	data           []byte
	version, nhash uint32
}

// bloom returns the commit's filter; ok is false when it has none (not
// computed, or a layer without filters), which means "maybe changed"
// for every path.
func (g *commitGraph) bloom(pos uint32) (f bloomFilter, ok bool) {
	l, i := g.layer(pos)
	if l.bidx == nil {
		return f, false
	}
	end := binary.BigEndian.Uint32(l.bidx[i*4:])
	start := uint32(0)
	if i > 0 {
		start = binary.BigEndian.Uint32(l.bidx[(i-1)*4:])
	}
	if start > end || uint64(end) > uint64(len(l.bdat)) || start == end {
		return f, false
	}
	return bloomFilter{data: l.bdat[start:end], version: l.bloomVersion, nhash: l.hashes}, true
}

// bloomKey is a path's two murmur3 hashes for one filter version.
type bloomKey struct{ h0, h1 uint32 }

func newBloomKey(path string, version uint32) bloomKey {
	return bloomKey{murmur3(0x293ae76f, path, version), murmur3(0x7e646e2c, path, version)}
}

// mayContain reports whether the filter may hold the key: false means
// the path certainly did not change.
func (f bloomFilter) mayContain(k bloomKey) bool {
	mod := uint64(len(f.data)) * 8
	for i := uint32(0); i < f.nhash; i++ {
		h := uint64(k.h0+i*k.h1) % mod
		if f.data[h/8]&(1<<(h%8)) == 0 {
			return false
		}
	}
	return true
}

// murmur3 is MurmurHash3's 32-bit hash as git's changed-path filters use
// it. Version 1 filters were written by a git that read bytes as signed
// chars, so bytes past 0x7f are sign-extended there.
func murmur3(seed uint32, s string, version uint32) uint32 {
	const c1, c2 = 0xcc9e2d51, 0x1b873593
	b := func(i int) uint32 {
		if version == 1 {
			return uint32(int32(int8(s[i])))
		}
		return uint32(s[i])
	}
	n := len(s) / 4
	for i := 0; i < n; i++ {
		k := b(4*i) | b(4*i+1)<<8 | b(4*i+2)<<16 | b(4*i+3)<<24
		k *= c1
		k = bits.RotateLeft32(k, 15)
		k *= c2
		seed ^= k
		seed = bits.RotateLeft32(seed, 13)*5 + 0xe6546b64
	}
	var k1 uint32
	tail := 4 * n
	switch len(s) & 3 {
	case 3:
		k1 ^= b(tail+2) << 16
		fallthrough
	case 2:
		k1 ^= b(tail+1) << 8
		fallthrough
	case 1:
		k1 ^= b(tail)
		k1 *= c1
		k1 = bits.RotateLeft32(k1, 15)
		k1 *= c2
		seed ^= k1
	}
	seed ^= uint32(len(s))
	seed ^= seed >> 16
	seed *= 0x85ebca6b
	seed ^= seed >> 13
	seed *= 0xc2b2ae35
	seed ^= seed >> 16
	return seed
}
