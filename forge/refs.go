package forge

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
)

// readRefs returns the branches and tags of the repository in dir, each
// with the commit it names (annotated tags peeled), read from the
// packed-refs file (whose peeled lines save reading tag objects) and the
// loose ref files, which override it. Tags that git did not peel are
// peeled through objs.
//
// Why not go-git: it reads every tag object to peel it, which on a
// repository with a thousand tags made the first page after a start
// spend 170 ms on its ref list.
func readRefs(dir string, objs *objectReader) ([]Ref, error) {
	type target struct {
		hash, peeled plumbing.Hash
		peeledKnown  bool
	}
	refs := map[string]*target{}
	if f, err := os.Open(filepath.Join(dir, "packed-refs")); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		fully, peeledTags := false, false
		var last *target
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "# pack-refs with:"):
				traits := strings.Fields(strings.TrimPrefix(line, "# pack-refs with:"))
				for _, t := range traits {
					fully = fully || t == "fully-peeled"
					peeledTags = peeledTags || t == "peeled"
				}
			case strings.HasPrefix(line, "^"):
				if last != nil {
					last.peeled, last.peeledKnown = plumbing.NewHash(line[1:]), true
				}
			default:
				h, name, ok := strings.Cut(line, " ")
				if !ok || len(h) != 40 {
					last = nil
					continue
				}
				t := &target{hash: plumbing.NewHash(h)}
				// Without a ^ line, a ref the file says it peeled names
				// no tag object: it is its own peel.
				if fully || (peeledTags && strings.HasPrefix(name, "refs/tags/")) {
					t.peeled, t.peeledKnown = t.hash, true
				}
				refs[name], last = t, t
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("forge: packed-refs: %w", err)
		}
	}
	for _, sub := range []string{"refs/heads", "refs/tags"} {
		root := filepath.Join(dir, filepath.FromSlash(sub))
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() || strings.HasSuffix(p, ".lock") {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil // removed meanwhile
			}
			s := strings.TrimSpace(string(b))
			if len(s) != 40 || strings.Trim(s, "0123456789abcdef") != "" {
				return nil // a symbolic ref, or a ref being written
			}
			rel, _ := filepath.Rel(dir, p)
			refs[filepath.ToSlash(rel)] = &target{hash: plumbing.NewHash(s)}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("forge: reading refs: %w", err)
		}
	}
	out := make([]Ref, 0, len(refs))
	for name, t := range refs {
		var r Ref
		switch {
		case strings.HasPrefix(name, "refs/heads/"):
			r = Ref{Name: name[len("refs/heads/"):], Commit: t.hash.String()}
		case strings.HasPrefix(name, "refs/tags/"):
			r = Ref{Name: name[len("refs/tags/"):], Tag: true}
			h := t.peeled
			if !t.peeledKnown {
				h = peel(objs, t.hash)
			}
			r.Commit = h.String()
		default:
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// peel follows tag objects from h to what they tag at last.
func peel(objs *objectReader, h plumbing.Hash) plumbing.Hash {
	h, _, _, _ = peelRead(objs, h)
	return h
}

// peelRead is peel that also returns the object it ends at, read once.
func peelRead(objs *objectReader, h plumbing.Hash) (plumbing.Hash, plumbing.ObjectType, []byte, error) {
	for range 16 {
		typ, data, err := objs.read(h)
		if err != nil || typ != plumbing.TagObject {
			return h, typ, data, err
		}
		line, _, _ := bytes.Cut(data, []byte{'\n'})
		rest, ok := bytes.CutPrefix(line, []byte("object "))
		if !ok || len(rest) != 40 {
			return h, typ, data, nil
		}
		h = plumbing.NewHash(string(rest))
	}
	typ, data, err := objs.read(h)
	return h, typ, data, err
}

// parseSignature splits "NAME <EMAIL> TIME ZONE".
func parseSignature(b []byte) (name, email string, when time.Time) {
	lt := bytes.IndexByte(b, '<')
	gt := bytes.LastIndexByte(b, '>')
	if lt < 0 || gt < lt {
		return string(bytes.TrimSpace(b)), "", time.Time{}
	}
	name = string(bytes.TrimSpace(b[:lt]))
	email = string(b[lt+1 : gt])
	f := bytes.Fields(b[gt+1:])
	if len(f) >= 1 {
		sec, _ := strconv.ParseInt(string(f[0]), 10, 64)
		when = time.Unix(sec, 0)
		if len(f) >= 2 && len(f[1]) == 5 {
			hh, _ := strconv.Atoi(string(f[1][1:3]))
			mm, _ := strconv.Atoi(string(f[1][3:5]))
			off := (hh*60 + mm) * 60
			if f[1][0] == '-' {
				off = -off
			}
			when = when.In(time.FixedZone("", off))
		}
	}
	return name, email, when
}
