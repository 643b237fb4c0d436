package gitproto

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
)

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
