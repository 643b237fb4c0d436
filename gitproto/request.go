package gitproto

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ParseGitProtocol validates the value of a Git-Protocol request header (or
// the GIT_PROTOCOL environment variable) and returns the protocol version it
// asks for: the highest "version=N" among its colon-separated parameters, 0
// when it names none. Keys and values are limited to a conservative
// character set because the value is handed to the engine's environment;
// anything else is an error wrapping ErrBadProtocol.
func ParseGitProtocol(v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	if len(v) > 256 {
		return 0, fmt.Errorf("%w: header too long", ErrBadProtocol)
	}
	version := 0
	for _, item := range strings.Split(v, ":") {
		key, val, hasVal := strings.Cut(item, "=")
		if key == "" || !protoToken(key) || (hasVal && !protoToken(val)) {
			return 0, fmt.Errorf("%w: invalid parameter %q", ErrBadProtocol, item)
		}
		if key != "version" {
			continue // unknown keys are allowed and ignored, as git does
		}
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 || n > 2 {
			return 0, fmt.Errorf("%w: unsupported version %q", ErrBadProtocol, val)
		}
		version = max(version, n)
	}
	return version, nil
}

func protoToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// uploadRequest is what Handler learns from an upload-pack request body
// before handing it to the engine: enough to validate it, classify it for
// admission control and decide whether its response may be cached.
type uploadRequest struct {
	command string // "fetch" for v0/v1; the v2 command otherwise
	wants   int
	haves   int
	done    bool // the client asked for the pack now
	shallow bool // shallow, deepen, deepen-since or deepen-not present
	filter  bool
}

// fullClone reports whether the request asks for whole history with
// nothing in common: the expensive kind that clone storms are made of.
func (u *uploadRequest) fullClone() bool {
	return u.command == "fetch" && u.wants > 0 && u.haves == 0
}

// packResponse reports whether the response to the request is a pack (as
// opposed to a round of negotiation), which is what the pack cache keeps.
func (u *uploadRequest) packResponse() bool {
	return u.command == "fetch" && u.wants > 0 && (u.done || u.haves == 0)
}

// parseUploadRequest validates a complete upload-pack request body.
func parseUploadRequest(body []byte, version int) (*uploadRequest, error) {
	p := newPktReader(bytes.NewReader(body))
	// A client that asked for v2 but got a v0 advertisement (from an
	// engine or server that speaks only v0) sends a v0 request; the body
	// says which it is.
	if version == 2 && bytes.HasPrefix(body[min(4, len(body)):], []byte("command=")) {
		return parseUploadV2(p)
	}
	u := &uploadRequest{command: "fetch"}
	for {
		kind, line, err := p.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if kind != pktData {
			if kind != pktFlush {
				return nil, &PktError{Offset: p.n - 4, Reason: "unexpected delimiter in v0 request"}
			}
			continue
		}
		if err := u.parseV0Line(trimLF(line), p.n); err != nil {
			return nil, err
		}
	}
	if u.wants == 0 && u.haves > 0 {
		return nil, fmt.Errorf("%w: have without want", ErrMalformed)
	}
	return u, nil
}

func (u *uploadRequest) parseV0Line(line []byte, off int64) error {
	cmd, arg, _ := bytes.Cut(line, []byte{' '})
	switch string(cmd) {
	case "want":
		if !validOID(firstField(arg)) {
			return &PktError{Offset: off, Reason: "want without a valid object id"}
		}
		u.wants++
	case "have":
		if !validOID(arg) {
			return &PktError{Offset: off, Reason: "have without a valid object id"}
		}
		u.haves++
	case "shallow":
		if !validOID(arg) {
			return &PktError{Offset: off, Reason: "shallow without a valid object id"}
		}
		u.shallow = true
	case "deepen", "deepen-since", "deepen-not":
		u.shallow = true
	case "filter":
		u.filter = true
	case "done":
		u.done = true
	default:
		return &PktError{Offset: off, Reason: fmt.Sprintf("unknown command %q", truncate(string(cmd), 32))}
	}
	return nil
}

func parseUploadV2(p *pktReader) (*uploadRequest, error) {
	u := &uploadRequest{}
	kind, line, err := p.next()
	if err == io.EOF || (err == nil && kind == pktFlush) {
		// An empty request or a lone flush ends the session; git answers
		// it with nothing. Let the engine see it.
		return u, nil
	}
	if err != nil {
		return nil, err
	}
	cmd, ok := bytes.CutPrefix(trimLF(line), []byte("command="))
	if kind != pktData || !ok || len(cmd) == 0 {
		return nil, &PktError{Offset: 0, Reason: "v2 request does not start with command="}
	}
	u.command = string(cmd)
	switch u.command {
	case "ls-refs", "fetch", "object-info":
	default:
		return nil, &PktError{Offset: 0, Reason: fmt.Sprintf("unknown v2 command %q", truncate(u.command, 32))}
	}
	// Capability lines up to the delimiter (or a flush when there are no
	// arguments), then arguments up to the flush.
	inArgs := false
	for {
		kind, line, err := p.next()
		if err == io.EOF {
			return nil, &PktError{Offset: p.n, Reason: "v2 request not terminated by flush", Err: io.ErrUnexpectedEOF}
		}
		if err != nil {
			return nil, err
		}
		switch kind {
		case pktDelim:
			if inArgs {
				return nil, &PktError{Offset: p.n - 4, Reason: "second delimiter in v2 request"}
			}
			inArgs = true
			continue
		case pktFlush:
			if _, _, err := p.next(); err != io.EOF {
				return nil, &PktError{Offset: p.n, Reason: "data after the end of a v2 request"}
			}
			return u, nil
		case pktResponseEnd:
			return nil, &PktError{Offset: p.n - 4, Reason: "response-end packet in a request"}
		}
		if !inArgs || u.command != "fetch" {
			continue
		}
		line = trimLF(line)
		name, arg, _ := bytes.Cut(line, []byte{' '})
		switch string(name) {
		case "want":
			if !validOID(arg) {
				return nil, &PktError{Offset: p.n, Reason: "want without a valid object id"}
			}
			u.wants++
		case "want-ref":
			u.wants++
		case "have":
			if !validOID(arg) {
				return nil, &PktError{Offset: p.n, Reason: "have without a valid object id"}
			}
			u.haves++
		case "shallow", "deepen", "deepen-since", "deepen-not", "deepen-relative":
			u.shallow = true
		case "filter":
			u.filter = true
		case "done":
			u.done = true
		}
	}
}

// receiveRequest is the command section of a receive-pack request.
type receiveRequest struct {
	updates []RefUpdate
	caps    string
	head    []byte    // the raw pkt-lines read, to be replayed to the engine
	rest    io.Reader // the rest of the body: push options and pack
}

// maxReceiveCommands bounds the command section read into memory before
// the pack begins; it is far beyond what a real push sends.
const maxReceiveCommands = 8 << 20

// readReceiveCommands reads and validates the commands of a receive-pack
// request up to and including the flush that ends them. The pack (and any
// push options) that follow are left unread in r.
func readReceiveCommands(r io.Reader) (*receiveRequest, error) {
	p := newPktReader(r)
	rr := &receiveRequest{}
	var head []byte
	for {
		start := p.n
		kind, line, err := p.next()
		if err == io.EOF {
			if len(rr.updates) == 0 && start == 0 {
				return nil, fmt.Errorf("%w: empty receive-pack request", ErrMalformed)
			}
			return nil, &PktError{Offset: start, Reason: "commands not terminated by flush", Err: io.ErrUnexpectedEOF}
		}
		if err != nil {
			return nil, err
		}
		if kind == pktFlush {
			rr.head = append(head, p.hdr[:]...)
			rr.rest = p.r
			return rr, nil
		}
		if kind != pktData {
			return nil, &PktError{Offset: start, Reason: "unexpected special packet in commands"}
		}
		head = append(append(head, p.hdr[:]...), line...)
		if len(head) > maxReceiveCommands {
			return nil, fmt.Errorf("%w: too many ref updates", ErrTooLarge)
		}
		line = trimLF(line)
		if len(rr.updates) == 0 {
			if cmd, caps, ok := bytes.Cut(line, []byte{0}); ok {
				line, rr.caps = cmd, string(caps)
			}
		}
		if oid, ok := bytes.CutPrefix(line, []byte("shallow ")); ok && validOID(oid) {
			continue
		}
		f := bytes.Fields(line)
		if len(f) != 3 || !validOID(f[0]) || !validOID(f[1]) || len(f[0]) != len(f[1]) || !validRefName(f[2]) {
			return nil, &PktError{Offset: start, Reason: fmt.Sprintf("bad ref update %q", truncate(string(line), 80))}
		}
		rr.updates = append(rr.updates, RefUpdate{Ref: string(f[2]), Old: string(f[0]), New: string(f[1])})
	}
}

// validRefName is a cheap syntactic check; git applies the full
// check-ref-format rules itself.
func validRefName(b []byte) bool {
	if !bytes.HasPrefix(b, []byte("refs/")) || len(b) > 1024 {
		return false
	}
	for _, c := range b {
		if c < 0x20 || c == 0x7f || c == ' ' || c == '~' || c == '^' || c == ':' || c == '\\' {
			return false
		}
	}
	return !bytes.Contains(b, []byte("..")) && !bytes.HasSuffix(b, []byte("/"))
}

func validOID(b []byte) bool {
	if len(b) != 40 && len(b) != 64 {
		return false
	}
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func firstField(b []byte) []byte {
	f, _, _ := bytes.Cut(b, []byte{' '})
	return f
}

func trimLF(b []byte) []byte {
	return bytes.TrimSuffix(b, []byte{'\n'})
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
