package forge

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
)

// This file reads commits, trees and blobs through objectReader, for the
// pages every visitor sees first (home, tree, blob): go-git loads a
// pack's whole index into memory on first use (a tenth of a second on a
// large repository), and decodes more than a page needs.

// rawCommit is what browsing reads of a commit.
type rawCommit struct {
	*CommitInfo
	Tree    plumbing.Hash
	Parents []plumbing.Hash
	Message string
}

// parseCommit reads a commit object's content. (Headers it does not
// know, such as gpgsig and its continuation lines, are skipped.)
func parseCommit(h plumbing.Hash, data []byte) *rawCommit {
	c := &rawCommit{CommitInfo: &CommitInfo{Hash: h.String()}}
	for len(data) > 0 {
		line, rest, _ := bytes.Cut(data, []byte{'\n'})
		data = rest
		if len(line) == 0 {
			break
		}
		switch {
		case bytes.HasPrefix(line, []byte("tree ")):
			c.Tree = plumbing.NewHash(string(line[5:]))
		case bytes.HasPrefix(line, []byte("parent ")):
			c.Parents = append(c.Parents, plumbing.NewHash(string(line[7:])))
		case bytes.HasPrefix(line, []byte("author ")):
			c.Author, c.Email, _ = parseSignature(line[len("author "):])
		case bytes.HasPrefix(line, []byte("committer ")):
			_, _, c.When = parseSignature(line[len("committer "):])
		}
	}
	c.Message = string(data)
	subject, _, _ := strings.Cut(c.Message, "\n")
	c.Subject = subject
	return c
}

// parseCommitInfo reads what a listing shows of a commit.
func parseCommitInfo(h plumbing.Hash, data []byte) *CommitInfo {
	return parseCommit(h, data).CommitInfo
}

// readCommit reads commit id (a tag is peeled to its commit).
func readCommit(objs *objectReader, id plumbing.Hash) (*rawCommit, error) {
	h, typ, data, err := peelRead(objs, id)
	if err != nil || typ != plumbing.CommitObject {
		return nil, fmt.Errorf("%w: commit %s", ErrNotFound, id)
	}
	return parseCommit(h, data), nil
}

// readCommit reads commit, a full commit id.
func (b *Browser) readCommit(ctx context.Context, commit string) (*rawCommit, error) {
	objs, err := b.objects(ctx)
	if err != nil {
		return nil, err
	}
	defer objs.close()
	c, err := readCommit(objs, plumbing.NewHash(commit))
	if err != nil || c.Hash != commit {
		return nil, fmt.Errorf("%w: commit %s", ErrNotFound, commit)
	}
	return c, nil
}

// rawEntry is one entry of a tree object.
type rawEntry struct {
	name string
	mode uint32
	hash plumbing.Hash
}

// parseTree reads a tree object's content.
func parseTree(data []byte) ([]rawEntry, error) {
	var out []rawEntry
	hl := len(plumbing.Hash{})
	for len(data) > 0 {
		sp := bytes.IndexByte(data, ' ')
		nul := bytes.IndexByte(data, 0)
		if sp < 0 || nul < sp || nul+1+hl > len(data) {
			return nil, errors.New("forge: malformed tree")
		}
		e := rawEntry{name: string(data[sp+1 : nul]), mode: parseMode(data[:sp])}
		copy(e.hash[:], data[nul+1:])
		out = append(out, e)
		data = data[nul+1+hl:]
	}
	return out, nil
}

// lookupPath follows p from the tree root: the mode and id of what p
// names (the root itself for ""), or ErrNotFound.
func lookupPath(objs *objectReader, root plumbing.Hash, p string) (uint32, plumbing.Hash, error) {
	mode, h := uint32(0o040000), root
	for name := range strings.SplitSeq(strings.Trim(p, "/"), "/") {
		if name == "" {
			continue
		}
		if mode != 0o040000 {
			return 0, plumbing.ZeroHash, fmt.Errorf("%w: %s", ErrNotFound, p)
		}
		typ, data, err := objs.read(h)
		if err != nil || typ != plumbing.TreeObject {
			return 0, plumbing.ZeroHash, fmt.Errorf("forge: tree %s: %v", h, err)
		}
		if mode, h = findEntry(data, name); mode == 0 {
			return 0, plumbing.ZeroHash, fmt.Errorf("%w: %s", ErrNotFound, p)
		}
	}
	return mode, h, nil
}

// findPrefix resolves an abbreviated object id (4 or more hex digits):
// the one object it names, or ErrNotFound (none, or several).
func (r *objectReader) findPrefix(prefix string) (plumbing.Hash, error) {
	if len(prefix) < 4 || len(prefix) > 2*r.hashLen || strings.Trim(prefix, "0123456789abcdef") != "" {
		return plumbing.ZeroHash, fmt.Errorf("%w: %q", ErrNotFound, prefix)
	}
	even := prefix
	if len(even)%2 == 1 {
		even += "0"
	}
	pb, _ := hex.DecodeString(even)
	var found plumbing.Hash
	n := 0
	add := func(h plumbing.Hash) {
		if n == 0 || h != found {
			found = h
			n++
		}
	}
	for _, p := range r.packs {
		lo := uint32(0)
		if pb[0] > 0 {
			lo = beUint32(p.fanout[(int(pb[0])-1)*4:])
		}
		hi := beUint32(p.fanout[int(pb[0])*4:])
		for lo < hi {
			mid := (lo + hi) / 2
			if bytes.Compare(p.oids[int(mid)*r.hashLen:int(mid+1)*r.hashLen], pb) < 0 {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		for i := lo; i < p.n; i++ {
			id := p.oids[int(i)*r.hashLen : int(i+1)*r.hashLen]
			if !strings.HasPrefix(hex.EncodeToString(id), prefix) {
				break
			}
			var h plumbing.Hash
			copy(h[:], id)
			add(h)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(r.dir, "objects", prefix[:2]))
	for _, e := range ents {
		if full := prefix[:2] + e.Name(); len(full) == 2*r.hashLen && strings.HasPrefix(full, prefix) {
			add(plumbing.NewHash(full))
		}
	}
	if n != 1 {
		return plumbing.ZeroHash, fmt.Errorf("%w: %q names %d objects", ErrNotFound, prefix, n)
	}
	return found, nil
}

func beUint32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// readPrefix returns at most max bytes of object h and its full size.
// An object stored whole in a pack is inflated only as far as needed; a
// delta must be resolved whole.
func (r *objectReader) readPrefix(h plumbing.Hash, max int64) ([]byte, int64, error) {
	for i, p := range r.packs {
		off, ok := p.find(h, r.hashLen)
		if !ok {
			continue
		}
		e, err := r.header(i, off)
		if err != nil {
			return nil, 0, err
		}
		if e.typ == plumbing.OFSDeltaObject || e.typ == plumbing.REFDeltaObject {
			_, data, err := r.readAt(i, off, 0)
			if err != nil {
				return nil, 0, err
			}
			return data[:min(int64(len(data)), max)], int64(len(data)), nil
		}
		if err := r.resetInflate(); err != nil {
			return nil, 0, err
		}
		data := make([]byte, min(e.size, max))
		if _, err := io.ReadFull(r.zr, data); err != nil {
			return nil, 0, fmt.Errorf("forge: inflating %s: %w", h, err)
		}
		return data, e.size, nil
	}
	_, data, err := r.readLoose(h)
	if err != nil {
		return nil, 0, err
	}
	return data[:min(int64(len(data)), max)], int64(len(data)), nil
}
