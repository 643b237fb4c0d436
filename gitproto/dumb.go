package gitproto

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// serveDumb serves one file of the dumb HTTP protocol, with the cache
// headers git http-backend uses: files that change (refs, pack lists)
// are never cached, objects and packs are immutable.
func (h *Handler) serveDumb(rw *responseWriter, r *http.Request, dir, file string) error {
	w := rw.w
	switch file {
	case "info/refs":
		ir, ok := h.engine.(interface {
			InfoRefs(ctx context.Context, dir string) ([]byte, error)
		})
		if !ok {
			return fmt.Errorf("%w: dumb info/refs", ErrUnsupported)
		}
		b, err := ir.InfoRefs(r.Context(), dir)
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
