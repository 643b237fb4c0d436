// Package gitproto provides Git's smart HTTP transport as an http.Handler:
// clone, fetch and push over protocol v0, v1 and v2, for any repositories
// an application chooses to serve.
//
// Handler does the HTTP side (routing, authorization through a Resolver
// and an Authorizer, gzip and size limits, status codes, admission
// control, caches) and hands each validated request to an Engine, which
// speaks the git protocol. GitEngine, the default, runs git upload-pack
// and receive-pack in stateless-RPC mode, as git http-backend does, and is
// as fast; package gitproto/gogit has an engine that serves with go-git
// for hosts without a git binary, with fewer features. Push policy is Go code: PreReceive sees every ref
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
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
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

	// SessionAuthorizer decides the same for ServeSession (SSH and
	// git://), from the identity the transport authenticated. If nil,
	// everyone may read and nobody may push.
	SessionAuthorizer SessionAuthorizer

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

	// The limits below follow one rule: zero means the documented
	// default, a negative value means no limit.

	// MaxRequestBytes bounds an upload-pack request body after gzip
	// decompression. If zero, DefaultMaxRequestBytes is used; if
	// negative, it is unlimited (a client could then make the server
	// hold any amount of memory: a fetch request is read whole).
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
		r, dir, principal, err := h.repo(r, rt.repo, Read, false)
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
		r, dir, principal, err := h.repo(r, rt.repo, op, true)
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
	r, dir, principal, err := h.repo(r, rt.repo, op, true)
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
func (h *Handler) repo(r *http.Request, name string, op Op, mayCreate bool) (_ *http.Request, dir, principal string, err error) {
	ctx, dir, principal, err := h.lookup(r.Context(), name, op, mayCreate, func() (context.Context, string, error) {
		switch authz := h.Authorizer.(type) {
		case nil:
			p, err := anonymousRead(r, name, op)
			return nil, p, err
		case ContextAuthorizer:
			return authz.AuthorizeContext(r, name, op)
		default:
			p, err := authz.Authorize(r, name, op)
			return nil, p, err
		}
	})
	if ctx != r.Context() {
		r = r.WithContext(ctx)
	}
	return r, dir, principal, err
}

// lookup resolves name and authorizes op on it (authorize may return a
// nil context to keep ctx), creating the repository for a push when
// OnMissingRepo allows; it returns the context for the rest of the
// request.
func (h *Handler) lookup(ctx context.Context, name string, op Op, mayCreate bool, authorize func() (context.Context, string, error)) (_ context.Context, dir, principal string, err error) {
	if err := CheckRepoName(name); err != nil {
		return ctx, "", "", err
	}
	dir, rerr := h.Resolver.Resolve(ctx, name)
	if rerr != nil && !errors.Is(rerr, ErrNotFound) {
		return ctx, "", "", rerr
	}
	// Authorize even when the repository is missing, so that a missing
	// and a hidden repository answer alike.
	actx, principal, err := authorize()
	if err != nil {
		return ctx, "", "", err
	}
	if actx != nil {
		ctx = actx
	}
	if rerr == nil {
		return ctx, dir, principal, nil
	}
	if op == Write && mayCreate && h.OnMissingRepo != nil {
		dir, err = h.OnMissingRepo(ctx, name, principal)
		if err != nil {
			return ctx, "", "", err
		}
		return ctx, dir, principal, nil
	}
	return ctx, "", "", rerr
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

func (h *Handler) readTimeout() time.Duration { return knob(h.ReadTimeout, DefaultReadTimeout) }

func (h *Handler) writeTimeout() time.Duration { return knob(h.WriteTimeout, DefaultWriteTimeout) }

func (h *Handler) maxPushBytes() int64 { return knob(h.MaxPushBytes, DefaultMaxPushBytes) }

func (h *Handler) maxRequestBytes() int64 { return knob(h.MaxRequestBytes, DefaultMaxRequestBytes) }
