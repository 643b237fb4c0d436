package gitproto

import (
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"
)

func noCache(h http.Header) {
	h.Set("Expires", "Fri, 01 Jan 1980 00:00:00 GMT")
	h.Set("Pragma", "no-cache")
	h.Set("Cache-Control", "no-cache, max-age=0, must-revalidate")
}

// responseWriter writes the status line and headers with the first byte
// of body, flushes every write, and follows the pkt-line framing of what
// it sent so that a late error can still be reported in-band.
type responseWriter struct {
	w           http.ResponseWriter
	rc          *http.ResponseController
	contentType string
	started     bool
	status      int
	n           int64
	track       pktTracker

	idle     time.Duration // WriteTimeout; 0: none
	lastMove time.Time     // when the write deadline was last moved
	noDL     bool          // the ResponseWriter does not support deadlines
}

func (rw *responseWriter) start() {
	if rw.started {
		return
	}
	rw.started = true
	hdr := rw.w.Header()
	if rw.contentType != "" {
		hdr.Set("Content-Type", rw.contentType)
	}
	noCache(hdr)
	rw.status = http.StatusOK
	rw.w.WriteHeader(http.StatusOK)
}

func (rw *responseWriter) Write(p []byte) (int, error) {
	rw.start()
	if rw.idle > 0 && !rw.noDL {
		// An idle deadline, moved forward as the client reads (at most
		// every idle/4, to keep syscalls off the per-write path).
		if now := time.Now(); now.Sub(rw.lastMove) > rw.idle/4 {
			if err := rw.rc.SetWriteDeadline(now.Add(rw.idle)); err != nil {
				rw.noDL = true
			}
			rw.lastMove = now
		}
	}
	n, err := rw.w.Write(p)
	rw.n += int64(n)
	rw.track.feed(p[:n])
	if err != nil {
		return n, err
	}
	if err := rw.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return n, err
	}
	return n, nil
}

// sendFile sends the first size bytes of f, a finished pack response,
// as the whole body with a Content-Length, so that net/http hands the
// copy to the kernel (sendfile) when it serves the connection itself
// (a wrapping ResponseWriter without ReadFrom gets an ordinary copy).
// The write deadline allows the client 64 KiB/s on average.
func (rw *responseWriter) sendFile(f *os.File, size int64) error {
	if rw.started {
		return errors.New("gitproto: response already started")
	}
	rw.w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	rw.start()
	if rw.idle > 0 && !rw.noDL {
		now := time.Now()
		if err := rw.rc.SetWriteDeadline(now.Add(rw.idle + time.Duration(size>>16)*time.Second)); err != nil {
			rw.noDL = true
		}
		rw.lastMove = now
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	n, err := io.Copy(rw.w, &io.LimitedReader{R: f, N: size})
	rw.n += n
	if n == size {
		rw.track = pktTracker{} // a whole response ends at a packet boundary
	} else {
		rw.track.unframe = true // cut in the middle: only aborting tells the client
	}
	return err
}

// abort reports msg in-band if the stream is at a packet boundary and
// reports whether it could.
func (rw *responseWriter) abort(msg string) bool {
	if !rw.track.atBoundary() {
		return false
	}
	var pkt []byte
	if rw.track.sideband() {
		pkt = appendPkt(nil, "\x03"+msg+"\n")
	} else {
		pkt = appendPkt(nil, "ERR "+msg+"\n")
	}
	if len(pkt) > maxPktLen {
		pkt = pkt[:maxPktLen]
	}
	if _, err := rw.w.Write(pkt); err != nil {
		return false
	}
	rw.rc.Flush()
	return true
}

// pktTracker follows pkt-line framing over a byte stream fed in arbitrary
// pieces. Once the stream stops being pkt-lines (a raw pack without
// side-band), it gives up.
type pktTracker struct {
	hdr     [4]byte
	hn      int
	remain  int
	first   bool // the next payload byte is the first of its packet
	band    byte // first byte of the last data packet
	unframe bool
}

func (t *pktTracker) feed(p []byte) {
	for len(p) > 0 && !t.unframe {
		if t.remain > 0 {
			if t.first {
				t.band, t.first = p[0], false
			}
			k := min(t.remain, len(p))
			t.remain -= k
			p = p[k:]
			continue
		}
		c := copy(t.hdr[t.hn:], p)
		t.hn += c
		p = p[c:]
		if t.hn < 4 {
			return
		}
		t.hn = 0
		l, ok := parseHex4(t.hdr)
		if !ok || l == 3 || l > maxPktLen {
			t.unframe = true
			return
		}
		if l >= 4 {
			t.remain, t.first = l-4, true
		}
	}
}

func (t *pktTracker) atBoundary() bool { return !t.unframe && t.remain == 0 && t.hn == 0 }

func (t *pktTracker) sideband() bool { return t.band >= 1 && t.band <= 3 }
