package forge

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/forgekit/forgekit/slowlog"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	lru "github.com/hashicorp/golang-lru/v2/simplelru"
)

// objectReader reads objects for history walks: from the pack files
// through their indexes (mapped, searched in place), resolving deltas
// with a cache of bases by pack offset, else from loose files.
//
// Why not go-git's storage: it keys its delta-base cache by object id,
// which it gets by hashing every object it resolves with SHA-1 (collision
// detection included). A walk reads tens of thousands of trees, each the
// end of a delta chain; that hashing was 60% of a walk's time.
//
// An objectReader is not safe for concurrent use; each walk opens its
// own (opening maps the indexes and opens the packs, which is cheap).
type objectReader struct {
	dir     string
	hashLen int
	packs   []*packIndex

	cache    *lru.LRU[packOffset, cachedObject] // delta bases
	cacheMem int
	zr       io.ReadCloser
	br       *bufio.Reader

	ctx   context.Context // of the call the reader serves, for its Work; may be nil
	reads int64           // objects read, counted at close
}

type packOffset struct {
	pack int
	off  int64
}

type cachedObject struct {
	typ  plumbing.ObjectType
	data []byte
}

// maxBaseCache bounds the bytes of delta bases a reader keeps.
const maxBaseCache = 16 << 20

// packIndex is a mapped .idx file (version 2) and its open pack.
type packIndex struct {
	idx    []byte
	pack   *os.File
	n      uint32
	fanout []byte
	oids   []byte
	offs   []byte
	large  []byte
}

var errObjectMissing = errors.New("forge: object not found")

func openObjectReader(dir string, hashLen int) (*objectReader, error) {
	r := &objectReader{dir: dir, hashLen: hashLen}
	r.cache, _ = lru.NewLRU[packOffset, cachedObject](1<<30, func(_ packOffset, o cachedObject) { r.cacheMem -= len(o.data) })
	idxs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "pack-*.idx"))
	for _, p := range idxs {
		pi, err := mapPackIndex(p, hashLen)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // removed by a repack meanwhile; its objects are elsewhere now
			}
			r.close()
			return nil, err
		}
		r.packs = append(r.packs, pi)
	}
	return r, nil
}

func mapPackIndex(path string, hashLen int) (*packIndex, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	pack, err := os.Open(path[:len(path)-len(".idx")] + ".pack")
	if err != nil {
		return nil, err
	}
	if fi.Size() < 8+256*4 {
		pack.Close()
		return nil, fmt.Errorf("forge: %s: too short", path)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		pack.Close()
		return nil, fmt.Errorf("forge: mapping %s: %w", path, err)
	}
	p := &packIndex{idx: data, pack: pack}
	if !bytes.Equal(data[:8], []byte{0xff, 't', 'O', 'c', 0, 0, 0, 2}) {
		p.close()
		return nil, fmt.Errorf("forge: %s: not a version 2 pack index", path)
	}
	p.fanout = data[8 : 8+256*4]
	p.n = binary.BigEndian.Uint32(p.fanout[255*4:])
	o := 8 + 256*4
	need := o + int(p.n)*(hashLen+8)
	if need > len(data) {
		p.close()
		return nil, fmt.Errorf("forge: %s: truncated", path)
	}
	p.oids = data[o : o+int(p.n)*hashLen]
	o += int(p.n) * (hashLen + 4) // ids, then CRCs
	p.offs = data[o : o+int(p.n)*4]
	p.large = data[o+int(p.n)*4:]
	return p, nil
}

func (p *packIndex) close() {
	syscall.Munmap(p.idx)
	p.pack.Close()
}

// find returns the pack offset of h.
func (p *packIndex) find(h plumbing.Hash, hashLen int) (int64, bool) {
	lo := uint32(0)
	if h[0] > 0 {
		lo = binary.BigEndian.Uint32(p.fanout[(int(h[0])-1)*4:])
	}
	hi := binary.BigEndian.Uint32(p.fanout[int(h[0])*4:])
	for lo < hi {
		mid := (lo + hi) / 2
		switch c := bytes.Compare(p.oids[int(mid)*hashLen:int(mid+1)*hashLen], h[:hashLen]); {
		case c == 0:
			off := binary.BigEndian.Uint32(p.offs[mid*4:])
			if off&0x80000000 == 0 {
				return int64(off), true
			}
			i := int(off&0x7fffffff) * 8
			if i+8 > len(p.large) {
				return 0, false
			}
			return int64(binary.BigEndian.Uint64(p.large[i:])), true
		case c < 0:
			lo = mid + 1
		default:
			hi = mid
		}
	}
	return 0, false
}

func (r *objectReader) close() {
	if r.ctx != nil && r.reads > 0 {
		slowlog.CountN(r.ctx, slowlog.Object, r.reads, 0)
		r.reads = 0
	}
	for _, p := range r.packs {
		p.close()
	}
	r.packs = nil
}

// read returns the type and content of object h. The content is the
// caller's, but must not be changed (it may be a cached delta base).
func (r *objectReader) read(h plumbing.Hash) (plumbing.ObjectType, []byte, error) {
	r.reads++
	for i, p := range r.packs {
		if off, ok := p.find(h, r.hashLen); ok {
			return r.readAt(i, off, 0)
		}
	}
	return r.readLoose(h)
}

// readAt reads the object at off in pack i; depth counts delta links.
func (r *objectReader) readAt(i int, off int64, depth int) (plumbing.ObjectType, []byte, error) {
	key := packOffset{i, off}
	if o, ok := r.cache.Get(key); ok {
		return o.typ, o.data, nil
	}
	if depth > 10000 {
		return 0, nil, fmt.Errorf("forge: delta chain too long at %d", off)
	}
	e, err := r.header(i, off)
	if err != nil {
		return 0, nil, err
	}
	typ, size := e.typ, e.size
	if size > 1<<31 {
		return 0, nil, fmt.Errorf("forge: object at %d too large for a walk (%d bytes)", off, size)
	}
	data, err := r.inflate(size)
	if err != nil {
		return 0, nil, fmt.Errorf("forge: inflating at %d: %w", off, err)
	}
	if e.baseOff >= 0 || typ == plumbing.REFDeltaObject {
		var btyp plumbing.ObjectType
		var base []byte
		if e.baseOff >= 0 {
			btyp, base, err = r.readAt(i, e.baseOff, depth+1)
		} else {
			btyp, base, err = r.read(e.baseHash)
		}
		if err != nil {
			return 0, nil, err
		}
		if data, err = packfile.PatchDelta(base, data); err != nil {
			return 0, nil, fmt.Errorf("forge: delta at %d: %w", off, err)
		}
		typ = btyp
	}
	// Cache what a delta may be based on: the object itself for the
	// next link of the chain. Commits and trees are what walks read.
	if len(data) < maxBaseCache/16 {
		r.cache.Add(key, cachedObject{typ, data})
		r.cacheMem += len(data)
		for r.cacheMem > maxBaseCache && r.cache.Len() > 1 {
			r.cache.RemoveOldest()
		}
	}
	return typ, data, nil
}

func (r *objectReader) inflate(size int64) ([]byte, error) {
	if err := r.resetInflate(); err != nil {
		return nil, err
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(r.zr, data); err != nil {
		return nil, err
	}
	return data, nil
}

// readLoose reads a loose object file.
func (r *objectReader) readLoose(h plumbing.Hash) (plumbing.ObjectType, []byte, error) {
	hex := h.String()
	f, err := os.Open(filepath.Join(r.dir, "objects", hex[:2], hex[2:]))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil, fmt.Errorf("%w: %s", errObjectMissing, hex)
		}
		return 0, nil, fmt.Errorf("forge: %w", err)
	}
	defer f.Close()
	zr, err := zlib.NewReader(bufio.NewReader(f))
	if err != nil {
		return 0, nil, fmt.Errorf("forge: loose object %s: %w", hex, err)
	}
	defer zr.Close()
	br := bufio.NewReader(zr)
	hdr, err := br.ReadString(0)
	if err != nil {
		return 0, nil, fmt.Errorf("forge: loose object %s: %w", hex, err)
	}
	ts, ss, ok := bytes.Cut([]byte(hdr[:len(hdr)-1]), []byte{' '})
	size, serr := strconv.ParseInt(string(ss), 10, 64)
	typ, terr := plumbing.ParseObjectType(string(ts))
	if !ok || serr != nil || terr != nil || size < 0 || size > 1<<31 {
		return 0, nil, fmt.Errorf("forge: loose object %s: bad header", hex)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(br, data); err != nil {
		return 0, nil, fmt.Errorf("forge: loose object %s: %w", hex, err)
	}
	return typ, data, nil
}

// size returns the size of object h without reading it all: from the
// pack entry's header, or for a delta from the start of the delta (its
// target size), or from a loose object's header.
func (r *objectReader) size(h plumbing.Hash) (int64, error) {
	for i, p := range r.packs {
		off, ok := p.find(h, r.hashLen)
		if !ok {
			continue
		}
		e, err := r.header(i, off)
		if err != nil {
			return 0, err
		}
		if e.typ != plumbing.OFSDeltaObject && e.typ != plumbing.REFDeltaObject {
			return e.size, nil
		}
		var size int64
		// The delta begins with the base's size, then the target's.
		if err := r.resetInflate(); err != nil {
			return 0, err
		}
		br := bufio.NewReaderSize(r.zr, 32)
		for range 2 {
			size = 0
			for shift := 0; ; shift += 7 {
				c, err := br.ReadByte()
				if err != nil || shift > 56 {
					return 0, fmt.Errorf("forge: bad delta header at %d", off)
				}
				size |= int64(c&0x7f) << shift
				if c&0x80 == 0 {
					break
				}
			}
		}
		return size, nil
	}
	_, data, err := r.readLoose(h)
	return int64(len(data)), err
}

// entry is the header of a pack entry.
type entry struct {
	typ      plumbing.ObjectType
	size     int64 // of the object, or of the delta's data
	baseOff  int64 // an OFS_DELTA's base, else -1
	baseHash plumbing.Hash
}

// header reads the header of the pack entry at off, leaving r.br at the
// start of its compressed data.
func (r *objectReader) header(i int, off int64) (entry, error) {
	e := entry{baseOff: -1}
	sr := io.NewSectionReader(r.packs[i].pack, off, 1<<62)
	if r.br == nil {
		r.br = bufio.NewReaderSize(sr, 16<<10)
	} else {
		r.br.Reset(sr)
	}
	bad := func() (entry, error) { return entry{}, fmt.Errorf("forge: bad pack entry at %d", off) }
	c, err := r.br.ReadByte()
	if err != nil {
		return bad()
	}
	e.typ = plumbing.ObjectType((c >> 4) & 7)
	e.size = int64(c & 15)
	for shift := 4; c&0x80 != 0; shift += 7 {
		if c, err = r.br.ReadByte(); err != nil || shift > 60 {
			return bad()
		}
		e.size |= int64(c&0x7f) << shift
	}
	switch e.typ {
	case plumbing.OFSDeltaObject:
		c, err := r.br.ReadByte()
		if err != nil {
			return bad()
		}
		rel := int64(c & 0x7f)
		for c&0x80 != 0 {
			if c, err = r.br.ReadByte(); err != nil || rel > 1<<55 {
				return bad()
			}
			rel = (rel+1)<<7 | int64(c&0x7f)
		}
		if e.baseOff = off - rel; rel == 0 || e.baseOff < 0 {
			return bad()
		}
	case plumbing.REFDeltaObject:
		if _, err := io.ReadFull(r.br, e.baseHash[:r.hashLen]); err != nil {
			return bad()
		}
	case plumbing.CommitObject, plumbing.TreeObject, plumbing.BlobObject, plumbing.TagObject:
	default:
		return entry{}, fmt.Errorf("forge: bad object type %d at %d", e.typ, off)
	}
	return e, nil
}

func (r *objectReader) resetInflate() error {
	if r.zr == nil {
		var err error
		r.zr, err = zlib.NewReader(r.br)
		return err
	}
	return r.zr.(zlib.Resetter).Reset(r.br, nil)
}
