// Package gitproto provides Git's smart HTTP transport as an http.Handler:
// clone, fetch and push over protocol v0, v1 and v2, for any repositories
// an application chooses to serve.
//
// Handler does the HTTP side (routing, authorization through a Resolver
// and an Authorizer, gzip and size limits, status codes, admission
// control, caches) and hands each validated request to an Engine, which
// speaks the git protocol. GitEngine, the default, runs git upload-pack
// and receive-pack in stateless-RPC mode, as git http-backend does, and is
// as fast; GoGitEngine serves with go-git for hosts without a git binary,
// with fewer features. Push policy is Go code: PreReceive sees every ref
// update after the objects arrived and before refs move, and can reject
// single refs with a message the pusher sees; PostReceive reports what
// succeeded.
//
// No status line is written before the engine produced its first byte,
// so failures before that are real HTTP statuses (400, 401, 404, 413,
// 415, 503). After it, errors travel inside the protocol, as an ERR
// packet or a side-band error message where the stream allows, or as an
// aborted response otherwise, never as a silently short one.
//
// The package needs a Unix system; GitEngine needs git 2.18 or later.
package gitproto

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var (
	// ErrNotFound is returned by Resolvers for names that are not served
	// repositories and by Authorizers to hide a repository; 404.
	ErrNotFound = errors.New("gitproto: repository not found")
	// ErrUnauthorized is returned by Authorizers to ask for credentials;
	// 401 with WWW-Authenticate.
	ErrUnauthorized = errors.New("gitproto: authentication required")
	// ErrForbidden is returned by Authorizers to refuse an authenticated
	// principal; 403.
	ErrForbidden = errors.New("gitproto: forbidden")
	// ErrMalformed is wrapped by errors for request bodies that are not
	// valid pkt-line streams or git requests; 400.
	ErrMalformed = errors.New("gitproto: malformed request")
	// ErrBadProtocol is returned for an invalid Git-Protocol header; 400.
	ErrBadProtocol = errors.New("gitproto: invalid Git-Protocol header")
	// ErrTooLarge is returned when a request body exceeds its limit; 413.
	ErrTooLarge = errors.New("gitproto: request body too large")
	// ErrOverloaded is returned by admission control when a repository
	// has too many pack generations running and queued; 503 with
	// Retry-After.
	ErrOverloaded = errors.New("gitproto: too many concurrent requests")
	// ErrUnsupported is returned by an engine for a request it cannot
	// serve, such as a shallow clone through GoGitEngine.
	ErrUnsupported = errors.New("gitproto: not supported by this engine")
	// ErrUnavailable is returned by Resolvers and Authorizers that cannot
	// decide now (their database does not answer); 503 with Retry-After.
	// Their details belong in their own log: the client sees this text.
	ErrUnavailable = errors.New("gitproto: temporarily unavailable")
)

// Defaults for Handler's limits.
const (
	DefaultMaxRequestBytes = 32 << 20 // decompressed upload-pack request
	DefaultMaxPushBytes    = 2 << 30  // receive-pack input
	DefaultReadTimeout     = time.Minute
	DefaultWriteTimeout    = 2 * time.Minute
	DefaultRealm           = "git"
)

// Handler serves Git's smart HTTP protocol. Routes, relative to Prefix:
//
//	GET  {repo}/info/refs?service=git-upload-pack|git-receive-pack
//	POST {repo}/git-upload-pack
//	POST {repo}/git-receive-pack
//
// and, when Dumb is set, the read-only files of the dumb protocol. The
// exported fields must not change after the first request; a Handler is
// then safe for concurrent use and must not be copied.
type Handler struct {
	// Resolver maps repository names to directories. Required.
	Resolver Resolver

	// Authorizer decides who may read and write. If nil, everyone may
	// read and nobody may push.
	Authorizer Authorizer

	// Engine serves the protocol. If nil, a GitEngine with default
	// settings is used.
	Engine Engine

	// Prefix is removed from the request path before routing, for a
	// handler mounted under a path such as "/git/".
	Prefix string

	// Realm is the Basic authentication realm sent with 401. If empty,
	// DefaultRealm is used.
	Realm string

	// PreReceive, if set, is called for every push after the pack was
	// received and before any ref moves; see Push. Returning an error
	// rejects the whole push with its text.
	PreReceive func(ctx context.Context, p *Push) error

	// PostReceive, if set, is called after a push with the updates that
	// succeeded, before the response is finished.
	PostReceive func(ctx context.Context, p *Push)

	// OnMissingRepo, if set, is called when a push (as authorized for
	// Write) names a repository the Resolver does not find. It may
	// create it and return its directory (push-to-create), or return an
	// error (ErrNotFound gives 404).
	OnMissingRepo func(ctx context.Context, name, principal string) (dir string, err error)

	// Dumb enables read-only dumb HTTP (HEAD, info/refs without a
	// service, objects/info/packs, loose objects and packs).
	Dumb bool

	// SendFile, if set, is offered every pack, index and loose object
	// served over dumb HTTP; if it returns true, it has answered the
	// request, typically with a header that makes the front proxy send
	// the file (see AccelRedirect and XSendfile).
	SendFile func(w http.ResponseWriter, r *http.Request, path string) bool

	// MaxRequestBytes bounds an upload-pack request body after gzip
	// decompression. If zero, DefaultMaxRequestBytes is used.
	MaxRequestBytes int64

	// MaxPushBytes bounds the input of a push. If zero,
	// DefaultMaxPushBytes is used; if negative, it is unlimited.
	MaxPushBytes int64

	// ReadTimeout is how long a request body may make no progress before
	// the request fails. If zero, DefaultReadTimeout is used; if
	// negative, there is no limit.
	ReadTimeout time.Duration

	// WriteTimeout is how long the response may make no progress (a
	// client that stopped reading) before the request fails and its git
	// processes are killed. If zero, DefaultWriteTimeout is used; if
	// negative, there is no limit.
	WriteTimeout time.Duration

	// Admission limits concurrent pack generations. If nil, there is no
	// limit.
	Admission *Admission

	// PackCache shares and keeps pack responses. If nil, every fetch
	// generates its own pack.
	PackCache *PackCache

	// AdvertCache keeps ref advertisements. If nil, every advertisement
	// is generated.
	AdvertCache *AdvertCache

	// Observe, if set, is called at the end of every request.
	Observe func(*RequestInfo)

	// Logger receives errors. If nil, nothing is logged.
	Logger *slog.Logger

	once   sync.Once
	engine Engine
	stats  handlerStats
}

// Stats returns the handler's cumulative counters.
func (h *Handler) Stats() Stats { return h.stats.snapshot() }

func (h *Handler) init() {
	h.once.Do(func() {
		h.engine = h.Engine
		if h.engine == nil {
			h.engine = &GitEngine{Logger: h.Logger}
		}
	})
}

// route is what a request path asks for.
type route struct {
	repo    string
	service Service
	advert  bool
	file    string // dumb HTTP: path inside the repository
}

var dumbFiles = []string{"/HEAD", "/info/refs", "/objects/info/packs", "/objects/info/alternates", "/objects/info/http-alternates"}

func parseRoute(p string) (route, bool) {
	switch {
	case strings.HasSuffix(p, "/info/refs"):
		return route{repo: strings.TrimSuffix(p, "/info/refs"), advert: true}, true
	case strings.HasSuffix(p, "/git-upload-pack"):
		return route{repo: strings.TrimSuffix(p, "/git-upload-pack"), service: UploadPack}, true
	case strings.HasSuffix(p, "/git-receive-pack"):
		return route{repo: strings.TrimSuffix(p, "/git-receive-pack"), service: ReceivePack}, true
	}
	for _, f := range dumbFiles {
		if strings.HasSuffix(p, f) {
			return route{repo: strings.TrimSuffix(p, f), file: f[1:]}, true
		}
	}
	if i := strings.LastIndex(p, "/objects/"); i >= 0 {
		rest := p[i+len("/objects/"):]
		if looseObjectPath(rest) || packFilePath(rest) {
			return route{repo: p[:i], file: "objects/" + rest}, true
		}
	}
	return route{}, false
}

func looseObjectPath(s string) bool {
	dir, file, ok := strings.Cut(s, "/")
	return ok && len(dir) == 2 && isHex(dir) && (len(file) == 38 || len(file) == 62) && isHex(file)
}

func packFilePath(s string) bool {
	name, ok := strings.CutPrefix(s, "pack/pack-")
	if !ok {
		return false
	}
	for _, ext := range []string{".pack", ".idx"} {
		if h, ok := strings.CutSuffix(name, ext); ok {
			return (len(h) == 40 || len(h) == 64) && isHex(h)
		}
	}
	return false
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return s != ""
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.init()
	h.stats.requests.Add(1)
	info := &RequestInfo{}
	start := time.Now()
	rw := &responseWriter{w: w, rc: http.NewResponseController(w), idle: h.writeTimeout()}
	defer func() {
		if !rw.lastMove.IsZero() && !rw.noDL {
			// Leave the connection as we found it: the next request on
			// it may be served by a handler that sets no deadline.
			rw.rc.SetWriteDeadline(time.Time{})
		}
		info.Duration = time.Since(start)
		info.BytesOut = rw.n
		if info.Status == 0 {
			info.Status = rw.status
		}
		h.stats.bytesOut.Add(rw.n)
		h.stats.bytesIn.Add(info.BytesIn)
		switch {
		case info.Status == http.StatusUnauthorized && r.Header.Get("Authorization") == "":
			h.stats.challenges.Add(1) // how Basic authentication starts
		case info.Status >= 400 || info.Err != nil:
			h.stats.errors.Add(1)
		}
		if h.Observe != nil {
			h.Observe(info)
		}
	}()
	err := h.serve(rw, r, info)
	if err == nil {
		return
	}
	info.Err = err
	if !rw.started && errors.Is(err, ErrUnsupported) && info.Service == UploadPack && !info.AdvertiseRefs {
		// Say it in the protocol: git shows an ERR packet to the user
		// as "remote error: ...", which is clearer than an HTTP status.
		rw.start()
		rw.abort(strings.TrimPrefix(err.Error(), "gitproto: "))
		return
	}
	if !rw.started {
		info.Status = h.writeError(w, r, err)
		return
	}
	// The response is under way: report inside the protocol if the
	// stream is at a packet boundary, else abort the connection so that
	// the client sees a failure rather than a short, well-formed reply.
	if h.Logger != nil && !errors.Is(err, context.Canceled) {
		h.Logger.WarnContext(r.Context(), "gitproto: request failed after response started", "repo", info.Repo, "service", info.Service, "err", err)
	}
	if !rw.abort(strings.TrimPrefix(err.Error(), "gitproto: ")) {
		panic(http.ErrAbortHandler)
	}
}

func (h *Handler) serve(rw *responseWriter, r *http.Request, info *RequestInfo) error {
	if r.URL.RawPath != "" {
		// Encoded slashes or backslashes must not smuggle path segments
		// past the router; nothing legitimate needs them.
		lower := strings.ToLower(r.URL.RawPath)
		if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(lower, "%00") {
			return fmt.Errorf("%w: encoded separator in path", ErrNotFound)
		}
	}
	p, ok := strings.CutPrefix(r.URL.Path, h.Prefix)
	if !ok {
		return fmt.Errorf("%w: outside prefix", ErrNotFound)
	}
	rt, ok := parseRoute(p)
	if !ok {
		return fmt.Errorf("%w: no such route", ErrNotFound)
	}
	rt.repo = strings.TrimPrefix(rt.repo, "/")
	info.Repo = rt.repo

	version, err := ParseGitProtocol(r.Header.Get("Git-Protocol"))
	if err != nil {
		return err
	}
	info.Version = version
	proto := r.Header.Get("Git-Protocol")
	if mv, ok := h.engine.(interface{ MaxVersion() int }); ok && version > mv.MaxVersion() {
		// The engine answers in an older version, and the client follows.
		version, proto = mv.MaxVersion(), ""
	}

	if rt.advert {
		svc := Service(r.URL.Query().Get("service"))
		switch svc {
		case UploadPack, ReceivePack:
		case "":
			if !h.Dumb {
				return fmt.Errorf("%w: dumb HTTP is disabled", ErrNotFound)
			}
			rt.advert, rt.file = false, "info/refs"
		default:
			return fmt.Errorf("%w: unknown service %q", errUnknownService, truncate(string(svc), 40))
		}
		rt.service = svc
	}
	if rt.file != "" {
		if !h.Dumb {
			return fmt.Errorf("%w: dumb HTTP is disabled", ErrNotFound)
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return errMethod("GET, HEAD")
		}
		dir, principal, err := h.repo(r, rt.repo, Read, false)
		if err != nil {
			return err
		}
		info.Principal = principal
		h.stats.dumb.Add(1)
		return h.serveDumb(rw, r, dir, rt.file)
	}
	info.Service = rt.service
	if rt.service == ReceivePack && version == 2 {
		// Push has no v2; git receive-pack falls back to v0 as well.
		version = 0
	}
	op := Read
	if rt.service == ReceivePack {
		op = Write
	}
	if rt.advert {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return errMethod("GET, HEAD")
		}
		info.AdvertiseRefs = true
		dir, principal, err := h.repo(r, rt.repo, op, true)
		if err != nil {
			return err
		}
		info.Principal = principal
		h.stats.adverts.Add(1)
		return h.serveAdvert(rw, r, rt, dir, proto, version, info)
	}
	if r.Method != http.MethodPost {
		return errMethod("POST")
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-"+string(rt.service)+"-request" {
		return fmt.Errorf("%w: %q", errContentType, truncate(ct, 80))
	}
	dir, principal, err := h.repo(r, rt.repo, op, true)
	if err != nil {
		return err
	}
	info.Principal = principal
	if rt.service == UploadPack {
		h.stats.uploadPacks.Add(1)
		return h.serveUploadPack(rw, r, dir, proto, version, info)
	}
	h.stats.receivePacks.Add(1)
	return h.serveReceivePack(rw, r, rt.repo, dir, proto, principal, info)
}

// repo authorizes op on name and resolves it, creating it for a push
// when OnMissingRepo allows.
func (h *Handler) repo(r *http.Request, name string, op Op, mayCreate bool) (dir, principal string, err error) {
	ctx := r.Context()
	if err := CheckRepoName(name); err != nil {
		return "", "", err
	}
	dir, rerr := h.Resolver.Resolve(ctx, name)
	if rerr != nil && !errors.Is(rerr, ErrNotFound) {
		return "", "", rerr
	}
	authz := h.Authorizer
	if authz == nil {
		authz = AuthorizerFunc(anonymousRead)
	}
	// Authorize even when the repository is missing, so that a missing
	// and a hidden repository answer alike.
	principal, err = authz.Authorize(r, name, op)
	if err != nil {
		return "", "", err
	}
	if rerr == nil {
		return dir, principal, nil
	}
	if op == Write && mayCreate && h.OnMissingRepo != nil {
		dir, err = h.OnMissingRepo(ctx, name, principal)
		if err != nil {
			return "", "", err
		}
		return dir, principal, nil
	}
	return "", "", rerr
}

var (
	errContentType     = errors.New("gitproto: wrong content type")
	errContentEncoding = errors.New("gitproto: unsupported content encoding")
	errUnknownService  = errors.New("gitproto: unknown service") // 403, as git http-backend answers
)

type methodError struct{ allow string }

func (e *methodError) Error() string { return "gitproto: method not allowed" }

func errMethod(allow string) error { return &methodError{allow: allow} }

// statusOf maps an error to the HTTP status Handler answers it with.
func statusOf(err error) int {
	var me *methodError
	switch {
	case errors.As(err, &me):
		return http.StatusMethodNotAllowed
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, ErrForbidden), errors.Is(err, errUnknownService):
		return http.StatusForbidden
	case errors.Is(err, ErrMalformed), errors.Is(err, ErrBadProtocol):
		return http.StatusBadRequest
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errContentType), errors.Is(err, errContentEncoding):
		return http.StatusUnsupportedMediaType
	case errors.Is(err, ErrOverloaded), errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, os.ErrDeadlineExceeded):
		return http.StatusRequestTimeout
	case errors.Is(err, ErrUnsupported):
		return http.StatusNotImplemented
	case errors.Is(err, context.Canceled):
		return 499 // client closed the request; nobody reads it
	}
	return http.StatusInternalServerError
}

func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) int {
	status := statusOf(err)
	hdr := w.Header()
	var me *methodError
	var oe *OverloadError
	switch {
	case errors.As(err, &me):
		hdr.Set("Allow", me.allow)
	case status == http.StatusUnauthorized:
		realm := h.Realm
		if realm == "" {
			realm = DefaultRealm
		}
		hdr.Set("WWW-Authenticate", `Basic realm=`+strconv.Quote(realm)+`, charset="UTF-8"`)
	case errors.As(err, &oe):
		hdr.Set("Retry-After", strconv.Itoa(int((oe.RetryAfter+time.Second-1)/time.Second)))
	case errors.Is(err, ErrUnavailable):
		hdr.Set("Retry-After", "5")
	}
	if status == http.StatusInternalServerError && h.Logger != nil {
		h.Logger.ErrorContext(r.Context(), "gitproto: request failed", "path", r.URL.Path, "err", err)
	}
	if status == 499 {
		return status
	}
	if errors.Is(err, ErrOverloaded) {
		h.stats.overloaded.Add(1)
	}
	msg := http.StatusText(status)
	if status < 500 || status == http.StatusServiceUnavailable || status == http.StatusNotImplemented {
		// Client errors say what was wrong; internal ones keep their
		// details in the log.
		msg = strings.TrimPrefix(err.Error(), "gitproto: ")
	}
	noCache(hdr)
	hdr.Set("Content-Type", "text/plain; charset=utf-8")
	hdr.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
	return status
}

func noCache(h http.Header) {
	h.Set("Expires", "Fri, 01 Jan 1980 00:00:00 GMT")
	h.Set("Pragma", "no-cache")
	h.Set("Cache-Control", "no-cache, max-age=0, must-revalidate")
}

// knob applies the convention of Handler's limits: zero means the
// default, negative means none (0 to the callers).
func knob[T ~int64](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

func (h *Handler) readTimeout() time.Duration  { return knob(h.ReadTimeout, DefaultReadTimeout) }
func (h *Handler) writeTimeout() time.Duration { return knob(h.WriteTimeout, DefaultWriteTimeout) }
func (h *Handler) maxPushBytes() int64         { return knob(h.MaxPushBytes, DefaultMaxPushBytes) }

func (h *Handler) maxRequestBytes() int64 {
	if h.MaxRequestBytes <= 0 {
		return DefaultMaxRequestBytes
	}
	return h.MaxRequestBytes
}

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
// input exceeds limit.
type limitReader struct {
	r     io.Reader
	limit int64 // 0: unlimited
	n     *int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.limit > 0 {
		left := l.limit - *l.n
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
	*l.n += int64(n)
	return n, err
}

// serveAdvert answers info/refs?service=... .
func (h *Handler) serveAdvert(rw *responseWriter, r *http.Request, rt route, dir, proto string, version int, info *RequestInfo) error {
	rw.contentType = "application/x-" + string(rt.service) + "-advertisement"
	var prefix []byte
	if version < 2 || rt.service == ReceivePack {
		prefix = appendPkt(nil, "# service="+string(rt.service)+"\n")
		prefix = append(prefix, "0000"...)
	}
	inv := &Invocation{
		Service:       rt.service,
		Dir:           dir,
		Protocol:      proto,
		Version:       version,
		AdvertiseRefs: true,
	}
	if r.Method == http.MethodHead {
		rw.start()
		return nil
	}
	if h.AdvertCache != nil {
		key := advertKey{dir: dir, service: rt.service, protocol: inv.Protocol}
		hit, err := h.AdvertCache.serve(r.Context(), key, rw, prefix, func(ctx context.Context, w io.Writer) error {
			inv.Stdout = w
			return h.engine.Run(ctx, inv)
		})
		info.CacheHit = hit
		return err
	}
	inv.Stdout = &prefixWriter{w: rw, prefix: prefix}
	return h.engine.Run(r.Context(), inv)
}

// prefixWriter writes prefix before the first byte of the stream, so that
// nothing reaches the client before the engine has produced output.
type prefixWriter struct {
	w      io.Writer
	prefix []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	if p.prefix != nil {
		buf := make([]byte, 0, len(p.prefix)+len(b))
		buf = append(append(buf, p.prefix...), b...)
		p.prefix = nil
		if _, err := p.w.Write(buf); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return p.w.Write(b)
}

func (h *Handler) serveUploadPack(rw *responseWriter, r *http.Request, dir, proto string, version int, info *RequestInfo) error {
	ctx := r.Context()
	src, closeBody, err := h.body(r, rw.rc, h.maxRequestBytes(), &info.BytesIn)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(src)
	closeBody()
	if err != nil {
		if errors.Is(err, ErrTooLarge) || errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		if errors.Is(err, gzip.ErrHeader) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: reading body: %v", ErrMalformed, err)
		}
		return fmt.Errorf("gitproto: reading body: %w", err)
	}
	req, err := parseUploadRequest(body, version)
	if err != nil {
		return err
	}
	info.Command, info.Wants, info.Haves, info.FullClone = req.command, req.wants, req.haves, req.fullClone()
	rw.contentType = "application/x-git-upload-pack-result"
	newInv := func(w io.Writer) *Invocation {
		return &Invocation{Service: UploadPack, Dir: dir, Protocol: proto, Version: version,
			Stdin: bytes.NewReader(body), Stdout: w}
	}
	if req.command == "ls-refs" && h.AdvertCache != nil {
		key := advertKey{dir: dir, service: UploadPack, protocol: proto, body: string(body)}
		hit, err := h.AdvertCache.serve(ctx, key, rw, nil, func(ctx context.Context, w io.Writer) error {
			return h.engine.Run(ctx, newInv(w))
		})
		info.CacheHit = hit
		return err
	}
	if !req.packResponse() {
		return h.engine.Run(ctx, newInv(rw))
	}
	// With the pack cache, generate may run on after this request has
	// left; the queue wait reaches info through an atomic.
	var queueWait atomic.Int64
	defer func() { info.QueueWait = time.Duration(queueWait.Load()) }()
	generate := func(ctx context.Context, w io.Writer) error {
		release, wait, err := h.Admission.acquire(ctx, dir, req.fullClone())
		queueWait.Store(int64(wait))
		if err != nil {
			return err
		}
		defer release()
		return h.engine.Run(ctx, newInv(w))
	}
	if h.PackCache != nil {
		hit, err := h.PackCache.serve(ctx, packKey(dir, proto, body), dir, rw, generate)
		info.CacheHit = hit
		return err
	}
	return generate(ctx, rw)
}

func (h *Handler) serveReceivePack(rw *responseWriter, r *http.Request, name, dir, proto, principal string, info *RequestInfo) error {
	ctx := r.Context()
	// receive-pack answers while the pack still arrives (fsck warnings
	// and progress on the side-band). Without full duplex, net/http
	// treats a response started before the body was read as the end of
	// the request: for a chunked body (git's own above http.postBuffer)
	// it reads and discards up to 256 KiB of it concurrently, stealing
	// bytes from the middle of the pack.
	if err := rw.rc.EnableFullDuplex(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	src, closeBody, err := h.body(r, rw.rc, h.maxPushBytes(), &info.BytesIn)
	if err != nil {
		return err
	}
	defer closeBody()
	cmds, err := readReceiveCommands(src)
	if err != nil {
		if errors.Is(err, ErrTooLarge) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ErrMalformed) {
			return err
		}
		return fmt.Errorf("%w: reading commands: %v", ErrMalformed, err)
	}
	// readReceiveCommands buffered ahead; the rest of the pack is in its
	// reader. Replay the commands, then stream the remainder.
	rest := cmds.rest
	rw.contentType = "application/x-git-receive-pack-result"
	inv := &Invocation{
		Service:      ReceivePack,
		Dir:          dir,
		Protocol:     proto,
		Stdin:        io.MultiReader(bytes.NewReader(cmds.head), rest),
		Stdout:       rw,
		MaxInputSize: h.maxPushBytes(),
		Push:         &Push{Repo: name, Dir: dir, Principal: principal},
		PreReceive:   h.PreReceive,
		PostReceive:  h.PostReceive,
	}
	err = h.engine.Run(ctx, inv)
	// Whatever happened, refs may have moved: drop what the caches know.
	h.invalidate(dir)
	return err
}

// invalidate forgets cached advertisements and packs of dir.
func (h *Handler) invalidate(dir string) {
	if h.AdvertCache != nil {
		h.AdvertCache.Invalidate(dir)
	}
	if h.PackCache != nil {
		h.PackCache.Invalidate(dir)
	}
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
