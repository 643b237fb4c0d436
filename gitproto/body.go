package gitproto

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// body returns the request body, decompressed, limited to limit bytes
// (0: unlimited) and with the idle read timeout applied. counter receives
// the decompressed byte count.
func (h *Handler) body(r *http.Request, rc *http.ResponseController, limit int64, counter *int64) (io.Reader, func(), error) {
	if limit > 0 && r.ContentLength > limit && r.Header.Get("Content-Encoding") == "" {
		return nil, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, r.ContentLength, limit)
	}
	var src io.Reader = r.Body
	closer := func() {}
	if d := h.readTimeout(); d > 0 {
		ir := &idleReader{r: r.Body, rc: rc, d: d}
		src = ir
		closer = ir.done
	}
	switch enc := strings.ToLower(r.Header.Get("Content-Encoding")); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: bad gzip body: %v", ErrMalformed, err)
		}
		src = zr
		idleDone := closer
		closer = func() { zr.Close(); idleDone() }
	default:
		return nil, nil, fmt.Errorf("%w: %q", errContentEncoding, truncate(enc, 40))
	}
	return &limitReader{r: src, limit: limit, n: counter}, closer, nil
}

// idleReader fails a read that makes no progress for d, by moving the
// connection's read deadline forward as data arrives. Moving it at most
// every d/4 keeps the syscalls off the per-read path.
type idleReader struct {
	r    io.Reader
	rc   *http.ResponseController
	d    time.Duration
	last time.Time
	off  bool // the ResponseWriter does not support deadlines
}

func (ir *idleReader) Read(p []byte) (int, error) {
	if !ir.off {
		if now := time.Now(); now.Sub(ir.last) > ir.d/4 {
			if err := ir.rc.SetReadDeadline(now.Add(ir.d)); err != nil {
				ir.off = true
			}
			ir.last = now
		}
	}
	n, err := ir.r.Read(p)
	if err != nil {
		ir.done()
	}
	return n, err
}

// done clears the deadline once the body is consumed, or net/http's
// background read (which watches for the client going away while the
// response streams) would hit it and cancel a long clone.
func (ir *idleReader) done() {
	if !ir.off {
		ir.rc.SetReadDeadline(time.Time{})
		ir.off = true
	}
}

// limitReader fails with ErrTooLarge, rather than a quiet EOF, when the
// input exceeds limit. It counts into *n atomically: a session's input
// is read by a goroutine that may still run when the session's record
// is made.
type limitReader struct {
	r     io.Reader
	limit int64 // 0: unlimited
	n     *int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.limit > 0 {
		left := l.limit - atomic.LoadInt64(l.n)
		if left <= 0 {
			// Probe for one more byte: exactly limit bytes is fine.
			var one [1]byte
			if n, err := l.r.Read(one[:]); n > 0 {
				return 0, fmt.Errorf("%w: limit %d bytes", ErrTooLarge, l.limit)
			} else if err != nil {
				return 0, err
			}
			return 0, nil
		}
		if int64(len(p)) > left {
			p = p[:left]
		}
	}
	n, err := l.r.Read(p)
	atomic.AddInt64(l.n, int64(n))
	return n, err
}
