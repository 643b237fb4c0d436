package gitproto

import (
	"bufio"
	"fmt"
	"io"
)

// Packet-line framing, as described in gitprotocol-common(5): four hex
// digits of length (including themselves) followed by the payload. The
// lengths 0000, 0001 and 0002 are the flush, delimiter and response-end
// packets of protocol v2; 0003 is never valid.

const (
	maxPktLen     = 65520 // the largest packet git sends or accepts
	maxPktPayload = maxPktLen - 4
)

type pktKind uint8

const (
	pktData pktKind = iota
	pktFlush
	pktDelim
	pktResponseEnd
)

// pktReader reads pkt-lines from a buffered stream. The returned payload is
// only valid until the next call to next. It is not safe for concurrent use.
type pktReader struct {
	r   *bufio.Reader
	buf [maxPktPayload]byte
	hdr [4]byte // the length header of the last packet, as sent
	n   int64   // bytes consumed so far, for error messages
}

func newPktReader(r io.Reader) *pktReader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	return &pktReader{r: br}
}

// next returns the next packet. At a clean end of input, before any byte of
// a new packet, it returns io.EOF; a stream that ends inside a packet gives
// io.ErrUnexpectedEOF wrapped in a *PktError.
func (p *pktReader) next() (pktKind, []byte, error) {
	var hdr [4]byte
	n, err := io.ReadFull(p.r, hdr[:])
	if err == io.EOF {
		return 0, nil, io.EOF
	}
	if err != nil {
		return 0, nil, &PktError{Offset: p.n, Reason: "truncated length", Err: io.ErrUnexpectedEOF}
	}
	p.hdr = hdr
	l, ok := parseHex4(hdr)
	if !ok {
		return 0, nil, &PktError{Offset: p.n, Reason: fmt.Sprintf("bad length %q", hdr[:n])}
	}
	off := p.n
	p.n += 4
	switch l {
	case 0:
		return pktFlush, nil, nil
	case 1:
		return pktDelim, nil, nil
	case 2:
		return pktResponseEnd, nil, nil
	case 3:
		return 0, nil, &PktError{Offset: off, Reason: "length 0003 is reserved"}
	}
	if l > maxPktLen {
		return 0, nil, &PktError{Offset: off, Reason: fmt.Sprintf("length %d exceeds %d", l, maxPktLen)}
	}
	payload := p.buf[:l-4]
	if _, err := io.ReadFull(p.r, payload); err != nil {
		return 0, nil, &PktError{Offset: off, Reason: "truncated payload", Err: io.ErrUnexpectedEOF}
	}
	p.n += int64(l - 4)
	return pktData, payload, nil
}

func parseHex4(b [4]byte) (int, bool) {
	v := 0
	for _, c := range b {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		v = v<<4 | int(d)
	}
	return v, true
}

// PktError reports a malformed pkt-line stream. Handler answers it with
// 400 Bad Request before the engine starts.
type PktError struct {
	Offset int64  // byte offset of the offending packet in the (decompressed) body
	Reason string // what was wrong
	Err    error  // underlying cause, such as io.ErrUnexpectedEOF; may be nil
}

func (e *PktError) Error() string {
	return fmt.Sprintf("gitproto: malformed pkt-line at byte %d: %s", e.Offset, e.Reason)
}

// Unwrap returns ErrMalformed and the underlying cause, so that both
// errors.Is(err, ErrMalformed) and errors.Is(err, io.ErrUnexpectedEOF) hold.
func (e *PktError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrMalformed}
	}
	return []error{ErrMalformed, e.Err}
}

const hexDigits = "0123456789abcdef"

// appendPkt appends payload framed as one data packet.
func appendPkt(dst []byte, payload string) []byte {
	n := len(payload) + 4
	dst = append(dst, hexDigits[n>>12&0xf], hexDigits[n>>8&0xf], hexDigits[n>>4&0xf], hexDigits[n&0xf])
	return append(dst, payload...)
}
