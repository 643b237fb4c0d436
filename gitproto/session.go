package gitproto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"
)

// Session is one git exchange carried the way SSH and git:// carry it: a
// command naming a service and a repository, then the service's standard
// input and output for as long as the exchange lasts. A transport (see
// gitproto/gitssh) authenticates the peer, builds a Session and hands it
// to Handler.ServeSession, which serves it through the same Resolver,
// hooks, admission control and caches as smart HTTP.
type Session struct {
	Service  Service
	Repo     string // as the client named it; a leading slash is dropped
	Protocol string // GIT_PROTOCOL (SSH) or git://'s extra parameters
	User     string // the authenticated identity, "" for anonymous

	Stdin  io.Reader
	Stdout io.Writer
	// Stderr, if set, receives messages for the user (git prints them
	// as they come) and the service's own standard error.
	Stderr io.Writer
}

// SessionAuthorizer decides for sessions what Authorizer decides for
// HTTP requests, from the identity the transport authenticated: whether
// user ("" for anonymous) may perform op on repo, with the principal to
// record and, optionally, a context for the rest of the session (nil
// keeps the session's). Its errors mean what Authorizer's do; a transport
// shows them to the user.
type SessionAuthorizer interface {
	AuthorizeSession(ctx context.Context, user, repo string, op Op) (context.Context, string, error)
}

// SessionAuthorizerFunc adapts a function to the SessionAuthorizer
// interface.
type SessionAuthorizerFunc func(ctx context.Context, user, repo string, op Op) (context.Context, string, error)

// AuthorizeSession calls f(ctx, user, repo, op).
func (f SessionAuthorizerFunc) AuthorizeSession(ctx context.Context, user, repo string, op Op) (context.Context, string, error) {
	return f(ctx, user, repo, op)
}

// ServeSession serves one session until the service ends, the client
// hangs up or ctx is done. Errors before the service started (an unknown
// or hidden repository, a refused push, an overload) are returned
// without anything written to Stdout; the transport reports them on
// Stderr and in its exit status (see SessionMessage).
//
// Protocol v2 fetches are served one request at a time, as over HTTP, so
// that ls-refs goes through the AdvertCache and packs through the
// PackCache; v0 and v1 fetches, whose negotiation keeps state in the
// server process, run as one upload-pack under admission control; pushes
// run as one receive-pack with PreReceive and PostReceive, and
// OnMissingRepo for push-to-create.
func (h *Handler) ServeSession(ctx context.Context, s *Session) (err error) {
	h.init()
	h.stats.sessions.Add(1)
	info := &RequestInfo{Service: s.Service, Repo: strings.TrimPrefix(s.Repo, "/")}
	start := time.Now()
	out := &countWriter{w: s.Stdout}
	var bytesIn int64 // counted by the goroutine feeding git, which may outlive the session
	defer func() {
		info.Duration, info.BytesOut, info.Err = time.Since(start), out.n, err
		info.BytesIn = atomic.LoadInt64(&bytesIn)
		h.stats.bytesOut.Add(out.n)
		h.stats.bytesIn.Add(info.BytesIn)
		if err != nil {
			h.stats.errors.Add(1)
			if errors.Is(err, ErrOverloaded) {
				h.stats.overloaded.Add(1)
			}
		}
		if h.Observe != nil {
			h.Observe(info)
		}
	}()
	version, err := ParseGitProtocol(s.Protocol)
	if err != nil {
		return err
	}
	proto := s.Protocol
	if mv, ok := h.engine.(interface{ MaxVersion() int }); ok && version > mv.MaxVersion() {
		version, proto = mv.MaxVersion(), ""
	}
	op := Read
	switch s.Service {
	case UploadPack, UploadArchive:
	case ReceivePack:
		op, version = Write, 0 // push has no v2
	default:
		return fmt.Errorf("%w: %q", errUnknownService, truncate(string(s.Service), 40))
	}
	info.Version = version
	authorize := func() (context.Context, string, error) {
		if h.SessionAuthorizer == nil {
			return nil, "", anonymousSession(op)
		}
		return h.SessionAuthorizer.AuthorizeSession(ctx, s.User, info.Repo, op)
	}
	ctx, dir, principal, err := h.lookup(ctx, info.Repo, op, s.Service == ReceivePack, authorize)
	if err != nil {
		return err
	}
	info.Principal = principal
	stderr := s.Stderr
	if stderr != nil {
		stderr = bestEffort{stderr}
	}
	in := &limitReader{r: s.Stdin, n: &bytesIn}
	switch {
	case s.Service == ReceivePack:
		h.stats.receivePacks.Add(1)
		in.limit = h.maxPushBytes()
		err := h.engine.Run(ctx, &Invocation{
			Service: ReceivePack, Dir: dir, Protocol: proto, Stateful: true,
			Stdin: in, Stdout: out, Stderr: stderr,
			MaxInputSize: h.maxPushBytes(),
			Push:         &Push{Repo: info.Repo, Dir: dir, Principal: principal},
			PreReceive:   h.PreReceive,
			PostReceive:  h.PostReceive,
		})
		h.invalidate(dir)
		return err
	case s.Service == UploadPack && version == 2:
		return h.sessionV2(ctx, out, in, dir, proto, info)
	default:
		// v0 and v1 upload-pack and upload-archive: one process for the
		// whole exchange, which the caches cannot split.
		h.stats.uploadPacks.Add(1)
		release, wait, err := h.Admission.acquire(ctx, dir, false)
		info.QueueWait = wait
		if err != nil {
			return err
		}
		defer release()
		return h.engine.Run(ctx, &Invocation{Service: s.Service, Dir: dir, Protocol: proto, Version: version,
			Stateful: true, Stdin: in, Stdout: out, Stderr: stderr})
	}
}

// sessionV2 serves a protocol v2 upload-pack session: the capability
// advertisement, then each request as a stateless one, until the client
// sends a lone flush or hangs up.
func (h *Handler) sessionV2(ctx context.Context, out io.Writer, in *limitReader, dir, proto string, info *RequestInfo) error {
	h.stats.adverts.Add(1)
	adv := &Invocation{Service: UploadPack, Dir: dir, Protocol: proto, Version: 2, AdvertiseRefs: true, Stdout: out}
	if h.AdvertCache != nil {
		key := advertKey{dir: dir, service: UploadPack, protocol: proto}
		if _, err := h.AdvertCache.serve(ctx, key, out, nil, func(ctx context.Context, w io.Writer) error {
			adv.Stdout = w
			return h.engine.Run(ctx, adv)
		}); err != nil {
			return err
		}
	} else if err := h.engine.Run(ctx, adv); err != nil {
		return err
	}
	p := newPktReader(in)
	for {
		// Each request is read whole (bounded like an HTTP body) before
		// it is served, so that nothing of the next one is consumed.
		body, err := readV2Request(p, h.maxRequestBytes())
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		h.stats.uploadPacks.Add(1)
		if err := h.uploadPack(ctx, out, dir, proto, 2, body, info); err != nil {
			return err
		}
	}
}

// readV2Request reads one v2 request, up to and including its flush and
// at most limit bytes (0: any); a lone flush or a clean end of input ends
// the session (io.EOF).
func readV2Request(p *pktReader, limit int64) ([]byte, error) {
	var body []byte
	for {
		kind, line, err := p.next()
		if err == io.EOF && body == nil {
			return nil, io.EOF
		}
		if err == io.EOF {
			return nil, &PktError{Offset: p.n, Reason: "v2 request not terminated by flush", Err: io.ErrUnexpectedEOF}
		}
		if err != nil {
			return nil, err
		}
		if kind == pktFlush && body == nil {
			return nil, io.EOF
		}
		body = append(body, p.hdr[:]...)
		body = append(body, line...)
		if limit > 0 && int64(len(body)) > limit {
			return nil, fmt.Errorf("%w: limit %d bytes", ErrTooLarge, limit)
		}
		if kind == pktFlush {
			return body, nil
		}
	}
}

// anonymousSession is the SessionAuthorizer's decision when there is
// none: everyone may read, nobody may push.
func anonymousSession(op Op) error {
	if op == Read {
		return nil
	}
	return ErrForbidden
}

// SessionMessage is what a transport tells the user when ServeSession
// fails before the service started, in words git's own servers use
// where there are some, and the exit status to end the session with.
func SessionMessage(err error) (msg string, status int) {
	switch {
	case errors.Is(err, ErrNotFound):
		return "repository not found", 128
	case errors.Is(err, ErrUnauthorized), errors.Is(err, ErrForbidden):
		return "permission denied", 128
	case errors.Is(err, ErrOverloaded), errors.Is(err, ErrUnavailable):
		return "the server is busy; try again later", 128
	case errors.Is(err, ErrMalformed), errors.Is(err, ErrBadProtocol), errors.Is(err, ErrTooLarge), errors.Is(err, errUnknownService),
		errors.Is(err, ErrUnsupported):
		return strings.TrimPrefix(err.Error(), "gitproto: "), 128
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "the session took too long", 128
	}
	var ee *EngineError
	if errors.As(err, &ee) && ee.ExitCode > 0 {
		return "", ee.ExitCode // git said why on stderr itself
	}
	return "internal error", 1
}

// countWriter counts what a session sends.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// bestEffort passes writes on and ignores their failure: a client that
// stopped reading its standard error must not stop git's.
type bestEffort struct{ w io.Writer }

func (b bestEffort) Write(p []byte) (int, error) {
	b.w.Write(p)
	return len(p), nil
}
