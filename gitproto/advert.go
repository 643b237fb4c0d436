package gitproto

import (
	"context"
	"io"
	"net/http"
)

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
