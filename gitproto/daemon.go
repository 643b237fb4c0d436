package gitproto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/forgekit/forgekit/gitproto/internal/netserve"
)

// Defaults for Daemon's zero fields.
const (
	DefaultRequestTimeout  = 10 * time.Second
	DefaultIdleTimeout     = 2 * time.Minute
	DefaultMaxSessionTime  = time.Hour
	DefaultMaxConnsPerAddr = 16
)

// ErrDaemonClosed is returned by Daemon.Serve after Close or Shutdown.
var ErrDaemonClosed = errors.New("gitproto: daemon closed")

// Daemon serves the git:// protocol, git daemon's, for a Handler:
// anonymous and read-only, the way public mirrors and CI fetch cheaply.
// Each connection sends one request line naming a service and a
// repository (with protocol v2 in its extra parameters); fetches
// (git-upload-pack) and git archive --remote (git-upload-archive) are
// then served by Handler.ServeSession with no user, so the Handler's
// SessionAuthorizer decides what anonymous readers may see (all of
// DirResolver's repositories if it is nil). Pushes are refused: git://
// authenticates nobody. Errors reach the client as git daemon's "ERR"
// packet, which git prints as "remote error".
//
// A Daemon is safe for concurrent use once serving.
type Daemon struct {
	// Handler serves the sessions. Required.
	Handler *Handler

	// RequestTimeout bounds the wait for the request line. If zero,
	// DefaultRequestTimeout is used.
	RequestTimeout time.Duration

	// IdleTimeout closes a connection on which nothing moved for so
	// long. If zero, DefaultIdleTimeout is used.
	IdleTimeout time.Duration

	// MaxSessionTime bounds one session. If zero,
	// DefaultMaxSessionTime is used.
	MaxSessionTime time.Duration

	// MaxConnsPerAddr bounds the concurrent connections from one IP
	// address. If zero, DefaultMaxConnsPerAddr is used.
	MaxConnsPerAddr int

	// Logger receives failed sessions. If nil, nothing is logged.
	Logger *slog.Logger

	once sync.Once
	set  netserve.Set // listeners, connections (each one a session), Close and Shutdown

	stats struct{ connections, sessions, refused, rejected, failed atomic.Int64 }
}

// DaemonStats are cumulative counters of a Daemon.
type DaemonStats struct {
	Connections int64 // connections accepted
	Sessions    int64 // sessions handed to the Handler
	Refused     int64 // connections refused by MaxConnsPerAddr
	Rejected    int64 // requests refused: malformed, a push, an unknown service
	Failed      int64 // sessions that ended with an error
}

// Stats returns the daemon's counters.
func (d *Daemon) Stats() DaemonStats {
	return DaemonStats{
		Connections: d.stats.connections.Load(),
		Sessions:    d.stats.sessions.Load(),
		Refused:     d.stats.refused.Load(),
		Rejected:    d.stats.rejected.Load(),
		Failed:      d.stats.failed.Load(),
	}
}

func (d *Daemon) init() {
	d.once.Do(func() {
		if d.Handler == nil {
			panic("gitproto: Daemon needs a Handler")
		}
	})
}

// Serve accepts connections on l until Close or Shutdown, and returns
// ErrDaemonClosed then.
func (d *Daemon) Serve(l net.Listener) error {
	d.init()
	return d.set.Serve(l, ErrDaemonClosed, d.serveConn)
}

// Close stops the listeners and closes every connection at once.
func (d *Daemon) Close() error {
	d.init()
	d.set.Close()
	return nil
}

// Shutdown stops the listeners and waits for the running sessions, or
// for ctx; then it closes what remains as Close does.
func (d *Daemon) Shutdown(ctx context.Context) error {
	d.init()
	return d.set.Shutdown(ctx)
}

func (d *Daemon) serveConn(c net.Conn) {
	defer c.Close()
	d.stats.connections.Add(1)
	limit := d.MaxConnsPerAddr
	if limit <= 0 {
		limit = DefaultMaxConnsPerAddr
	}
	release := d.set.Admit(c, c.RemoteAddr(), limit)
	if release == nil {
		d.stats.refused.Add(1)
		return
	}
	defer release()
	if !d.set.Begin() {
		return
	}
	defer d.set.End()
	ic := &IdleConn{Conn: c, Timeout: orDefault(d.IdleTimeout, DefaultIdleTimeout)}
	c.SetDeadline(time.Now().Add(orDefault(d.RequestTimeout, DefaultRequestTimeout)))
	p := newPktReader(ic)
	kind, line, err := p.next()
	if err != nil || kind != pktData {
		d.stats.rejected.Add(1)
		return // not a git client, or one that said nothing
	}
	req, err := ParseDaemonRequest(line)
	if err == nil && req.Service == ReceivePack {
		err = errors.New("gitproto: pushing over git:// is not enabled; push over HTTP or SSH")
	}
	if err != nil {
		d.stats.rejected.Add(1)
		ic.Write(appendPkt(nil, "ERR "+strings.TrimPrefix(err.Error(), "gitproto: ")))
		return
	}
	c.SetDeadline(time.Time{})
	ic.Start()
	d.stats.sessions.Add(1)
	ctx, cancel := context.WithTimeout(d.set.Context(), orDefault(d.MaxSessionTime, DefaultMaxSessionTime))
	defer cancel()
	out := &countWriter{w: ic}
	err = d.Handler.ServeSession(ctx, &Session{
		Service:  req.Service,
		Repo:     req.Repo,
		Protocol: req.Protocol,
		Stdin:    p.r, // what the reader buffered past the request line is the session's
		Stdout:   out,
	})
	if err == nil {
		return
	}
	d.stats.failed.Add(1)
	msg, status := SessionMessage(err)
	if out.n == 0 && msg != "" {
		// Nothing was sent yet: say why, as git daemon does.
		ic.Write(appendPkt(nil, "ERR "+msg))
	}
	if status == 1 && d.Logger != nil {
		d.Logger.Warn("gitproto: git:// session failed", "addr", c.RemoteAddr().String(), "repo", req.Repo, "err", err)
	}
}

// orDefault is d, or def when d is not positive.
func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// maxDaemonHost bounds the host= parameter: a DNS name (253 bytes) or a
// bracketed IPv6 address, and a port.
const maxDaemonHost = 253 + len("[]:65535")

// badHostRune reports a rune no host name, address or port contains.
func badHostRune(r rune) bool {
	return r <= ' ' || r >= 0x7f || strings.ContainsRune(`/\'"<>;`, r)
}

// DaemonRequest is the request line of a git:// connection.
type DaemonRequest struct {
	Service  Service
	Repo     string // without its leading slash
	Host     string // the host= parameter, "" if absent
	Protocol string // the extra parameters joined as GIT_PROTOCOL joins them ("version=2")
}

// ParseDaemonRequest parses the payload of a git:// request line:
// "git-upload-pack /owner/repo.git\x00host=example.com\x00\x00version=2\x00".
// Errors wrap ErrMalformed (a line that is not a request) or
// ErrBadProtocol (extra parameters that are not valid).
func ParseDaemonRequest(line []byte) (*DaemonRequest, error) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	cmd, rest, _ := bytes.Cut(line, []byte{0})
	svc, path, ok := strings.Cut(string(cmd), " ")
	if !ok || path == "" {
		return nil, fmt.Errorf("%w: git:// request without a repository", ErrMalformed)
	}
	req := &DaemonRequest{Service: Service(svc), Repo: strings.TrimPrefix(path, "/")}
	switch req.Service {
	case UploadPack, ReceivePack, UploadArchive:
	default:
		return nil, fmt.Errorf("%w: %q", errUnknownService, truncate(svc, 40))
	}
	if req.Repo == "" || strings.ContainsAny(req.Repo, "\x00\n") {
		return nil, fmt.Errorf("%w: git:// request without a repository", ErrMalformed)
	}
	fields := bytes.Split(rest, []byte{0})
	var extra []string
	inExtra := false
	for i, f := range fields {
		switch {
		case len(f) == 0:
			if i < len(fields)-1 {
				inExtra = true // the empty field before the extra parameters
			}
		case inExtra:
			extra = append(extra, string(f))
		case i == 0 && bytes.HasPrefix(f, []byte("host=")):
			req.Host = string(f[len("host="):])
			if len(req.Host) > maxDaemonHost || strings.ContainsFunc(req.Host, badHostRune) {
				return nil, fmt.Errorf("%w: invalid host= parameter %q in a git:// request", ErrMalformed, truncate(req.Host, 40))
			}
		default:
			return nil, fmt.Errorf("%w: unexpected parameter %q in a git:// request", ErrMalformed, truncate(string(f), 40))
		}
	}
	req.Protocol = strings.Join(extra, ":")
	if _, err := ParseGitProtocol(req.Protocol); err != nil {
		return nil, err
	}
	return req, nil
}
