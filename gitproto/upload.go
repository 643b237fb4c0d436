package gitproto

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

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
	rw.contentType = "application/x-git-upload-pack-result"
	return h.uploadPack(ctx, rw, dir, proto, version, body, info)
}

// uploadPack answers one complete upload-pack request, over HTTP or in a
// session: ls-refs through the advertisement cache, packs through
// admission control and the pack cache.
func (h *Handler) uploadPack(ctx context.Context, rw io.Writer, dir, proto string, version int, body []byte, info *RequestInfo) error {
	req, err := parseUploadRequest(body, version)
	if err != nil {
		return err
	}
	info.Command, info.Wants, info.Haves, info.FullClone = req.command, req.wants, req.haves, req.fullClone()
	newInv := func(w io.Writer) *Invocation {
		return &Invocation{Service: UploadPack, Dir: dir, Protocol: proto, Version: version,
			Stdin: bytes.NewReader(body), Stdout: w, Shallow: req.shallow, Filter: req.filter}
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
