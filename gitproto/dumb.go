package gitproto

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
)

// serveDumb serves one file of the dumb HTTP protocol, with the cache
// headers git http-backend uses: files that change (refs, pack lists)
// are never cached, objects and packs are immutable.
func (h *Handler) serveDumb(rw *responseWriter, r *http.Request, dir, file string) error {
	w := rw.w
	switch file {
	case "info/refs":
		b, err := dumbInfoRefs(dir)
		if err != nil {
			return err
		}
		return serveBytes(rw, r, "text/plain", b)
	case "objects/info/packs":
		return serveBytes(rw, r, "text/plain; charset=utf-8", dumbPacks(dir))
	case "HEAD", "objects/info/alternates", "objects/info/http-alternates":
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(file)))
		if err != nil {
			return fmt.Errorf("%w: %s", ErrNotFound, file)
		}
		return serveBytes(rw, r, "text/plain", b)
	}
	path := filepath.Join(dir, filepath.FromSlash(file))
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrNotFound, file)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s", ErrNotFound, file)
	}
	hdr := w.Header()
	switch {
	case strings.HasSuffix(file, ".pack"):
		hdr.Set("Content-Type", "application/x-git-packed-objects")
	case strings.HasSuffix(file, ".idx"):
		hdr.Set("Content-Type", "application/x-git-packed-objects-toc")
	default:
		hdr.Set("Content-Type", "application/x-git-loose-object")
	}
	hdr.Set("Cache-Control", "public, max-age=31536000, immutable")
	rw.started, rw.status = true, http.StatusOK
	if h.SendFile != nil && h.SendFile(w, r, path) {
		return nil
	}
	http.ServeContent(w, r, "", fi.ModTime(), f)
	return nil
}

func serveBytes(rw *responseWriter, r *http.Request, ctype string, b []byte) error {
	noCache(rw.w.Header())
	rw.w.Header().Set("Content-Type", ctype)
	rw.started, rw.status = true, http.StatusOK
	rw.n += int64(len(b))
	http.ServeContent(rw.w, r, "", time.Time{}, bytes.NewReader(b))
	return nil
}

// dumbInfoRefs lists the refs as git update-server-info would, with
// annotated tags followed by their peeled value.
func dumbInfoRefs(dir string) ([]byte, error) {
	repo, err := git.PlainOpen(dir)
	if err != nil {
		return nil, fmt.Errorf("gitproto: dumb info/refs: %w", err)
	}
	iter, err := repo.References()
	if err != nil {
		return nil, fmt.Errorf("gitproto: dumb info/refs: %w", err)
	}
	var refs []*plumbing.Reference
	iter.ForEach(func(ref *plumbing.Reference) error {
		if ref.Type() == plumbing.HashReference && strings.HasPrefix(ref.Name().String(), "refs/") {
			refs = append(refs, ref)
		}
		return nil
	})
	sort.Slice(refs, func(i, j int) bool { return refs[i].Name() < refs[j].Name() })
	var b bytes.Buffer
	for _, ref := range refs {
		fmt.Fprintf(&b, "%s\t%s\n", ref.Hash(), ref.Name())
		if tag, err := repo.TagObject(ref.Hash()); err == nil {
			for tag.TargetType == plumbing.TagObject {
				if tag, err = repo.TagObject(tag.Target); err != nil {
					break
				}
			}
			if tag != nil {
				fmt.Fprintf(&b, "%s\t%s^{}\n", tag.Target, ref.Name())
			}
		}
	}
	return b.Bytes(), nil
}

func dumbPacks(dir string) []byte {
	var b bytes.Buffer
	names, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "pack-*.pack"))
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "P %s\n", filepath.Base(n))
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// AccelRedirect returns a Handler.SendFile hook for nginx: files under
// root are handed over with "X-Accel-Redirect: location/<path under
// root>", where location is an internal nginx location aliased to root.
func AccelRedirect(root, location string) func(http.ResponseWriter, *http.Request, string) bool {
	return func(w http.ResponseWriter, r *http.Request, path string) bool {
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			return false
		}
		w.Header().Set("X-Accel-Redirect", strings.TrimSuffix(location, "/")+"/"+filepath.ToSlash(rel))
		w.WriteHeader(http.StatusOK)
		return true
	}
}

// XSendfile returns a Handler.SendFile hook for lighttpd and Apache
// mod_xsendfile: it answers with "X-Sendfile: <absolute path>".
func XSendfile() func(http.ResponseWriter, *http.Request, string) bool {
	return func(w http.ResponseWriter, r *http.Request, path string) bool {
		w.Header().Set("X-Sendfile", path)
		w.WriteHeader(http.StatusOK)
		return true
	}
}
