package gitproto

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/server"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing/cache"
)

// GoGitEngine serves the protocol with go-git, in pure Go, for hosts
// without a git binary. It is much slower than GitEngine on large
// repositories (go-git walks and encodes every object in memory) and
// supports less:
//
//   - protocol v0 only: requests for v1 or v2 are answered in v0, which
//     git clients accept;
//   - no shallow clones (--depth, --shallow-since) and no partial clones
//     (--filter): such fetches fail with an ERR packet naming
//     ErrUnsupported;
//   - no side-band (no progress output), no multi_ack, no thin packs;
//   - pushes write objects straight into the repository, without the
//     quarantine GitEngine has, so objects of a rejected push stay until
//     the next gc; the pushes to one repository run one at a time, and
//     fetches wait while one does, so ref updates are compare-and-swap
//     among the requests this process serves, but not against other
//     processes writing the same repository.
//
// A GoGitEngine is safe for concurrent use.
type GoGitEngine struct {
	mu    sync.Mutex // guards locks
	locks map[string]*sync.RWMutex
}

// MaxVersion reports the highest protocol version the engine speaks;
// Handler answers newer requests in this version.
func (e *GoGitEngine) MaxVersion() int { return 0 }

// repoLock returns the lock that orders ref reads and updates of one
// repository: go-git rewrites ref files in place, so a reader racing a
// writer could see an empty file.
func (e *GoGitEngine) repoLock(dir string) *sync.RWMutex {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.locks == nil {
		e.locks = make(map[string]*sync.RWMutex)
	}
	l := e.locks[dir]
	if l == nil {
		l = new(sync.RWMutex)
		e.locks[dir] = l
	}
	return l
}

func openStorage(dir string) *filesystem.Storage {
	return filesystem.NewStorage(osfs.New(dir), cache.NewObjectLRUDefault())
}

// Run implements Engine.
func (e *GoGitEngine) Run(ctx context.Context, inv *Invocation) error {
	st := openStorage(inv.Dir)
	defer st.Close()
	srv := server.NewServer(storageLoader{st})
	ep, _ := transport.NewEndpoint("/")
	if inv.AdvertiseRefs {
		l := e.repoLock(inv.Dir)
		l.RLock()
		defer l.RUnlock()
	}
	switch {
	case inv.Service == UploadPack && inv.AdvertiseRefs:
		s, err := srv.NewUploadPackSession(ep, nil)
		if err != nil {
			return fmt.Errorf("gitproto: gogit: %w", err)
		}
		ar, err := s.AdvertisedReferencesContext(ctx)
		if err != nil {
			return fmt.Errorf("gitproto: gogit: %w", err)
		}
		return encodeAdv(ar, inv.Stdout)
	case inv.Service == ReceivePack && inv.AdvertiseRefs:
		s, err := srv.NewReceivePackSession(ep, nil)
		if err != nil {
			return fmt.Errorf("gitproto: gogit: %w", err)
		}
		ar, err := s.AdvertisedReferencesContext(ctx)
		if err != nil {
			return fmt.Errorf("gitproto: gogit: %w", err)
		}
		// go-git stores a received pack as it is, so it cannot complete
		// a thin pack from the repository's objects: ask for full ones.
		if err := ar.Capabilities.Add(capability.Capability("no-thin")); err != nil {
			return fmt.Errorf("gitproto: gogit: %w", err)
		}
		return encodeAdv(ar, inv.Stdout)
	case inv.Service == UploadPack:
		l := e.repoLock(inv.Dir)
		l.RLock()
		defer l.RUnlock()
		return e.uploadPack(ctx, srv, ep, inv)
	case inv.Service == ReceivePack:
		return e.receivePack(ctx, st, inv)
	}
	return fmt.Errorf("%w: service %q", ErrUnsupported, inv.Service)
}

// encodeAdv buffers the advertisement so that nothing is written before
// it is complete.
func encodeAdv(ar *packp.AdvRefs, w io.Writer) error {
	var b bytes.Buffer
	if err := ar.Encode(&b); err != nil {
		return fmt.Errorf("gitproto: gogit: %w", err)
	}
	_, err := w.Write(b.Bytes())
	return err
}

type storageLoader struct{ st storer.Storer }

func (l storageLoader) Load(*transport.Endpoint) (storer.Storer, error) { return l.st, nil }

func (e *GoGitEngine) uploadPack(ctx context.Context, srv transport.Transport, ep *transport.Endpoint, inv *Invocation) error {
	body, err := io.ReadAll(inv.Stdin)
	if err != nil {
		return err
	}
	u, err := parseUploadRequest(body, 0)
	if err != nil {
		return err
	}
	switch {
	case u.shallow:
		return fmt.Errorf("%w: shallow clone with the gogit engine", ErrUnsupported)
	case u.filter:
		return fmt.Errorf("%w: partial clone (--filter) with the gogit engine", ErrUnsupported)
	}
	req := packp.NewUploadPackRequest()
	if err := req.Decode(bytes.NewReader(body)); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	s, err := srv.NewUploadPackSession(ep, nil)
	if err != nil {
		return fmt.Errorf("gitproto: gogit: %w", err)
	}
	resp, err := s.UploadPack(ctx, req)
	if err != nil {
		if errors.Is(err, transport.ErrEmptyUploadPackRequest) {
			return nil
		}
		return fmt.Errorf("gitproto: gogit: %w", err)
	}
	defer resp.Close()
	// Encode writes NAK then the pack; the lazily started response means
	// a failure before the first byte is still an HTTP status.
	if err := resp.Encode(inv.Stdout); err != nil {
		return fmt.Errorf("gitproto: gogit: %w", err)
	}
	return nil
}

func (e *GoGitEngine) receivePack(ctx context.Context, st *filesystem.Storage, inv *Invocation) error {
	req := packp.NewReferenceUpdateRequest()
	br := bufio.NewReaderSize(inv.Stdin, 64<<10)
	if err := req.Decode(br); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	for _, c := range req.Capabilities.All() {
		switch c {
		case capability.ReportStatus, capability.DeleteRefs, capability.OFSDelta, capability.Agent:
		default:
			return fmt.Errorf("%w: capability %s with the gogit engine", ErrUnsupported, c)
		}
	}
	// One push of a repository at a time, and no fetch while it runs:
	// go-git's readers fail on a pack whose index is still being written,
	// and the hook and the compare-and-swap must see the same refs.
	lock := e.repoLock(inv.Dir)
	lock.Lock()
	defer lock.Unlock()
	st = openStorage(inv.Dir) // knows every pack written before the lock
	defer st.Close()
	status := &packp.ReportStatus{UnpackStatus: "ok"}
	if req.Packfile != nil {
		if err := packfile.UpdateObjectStorage(st, readerCtx{ctx, req.Packfile}); err != nil && !errors.Is(err, packfile.ErrEmptyPackfile) {
			status.UnpackStatus = "error " + err.Error()
		}
		req.Packfile.Close()
	}
	p := &Push{}
	if inv.Push != nil {
		p.Repo, p.Dir, p.Principal = inv.Push.Repo, inv.Push.Dir, inv.Push.Principal
	}
	if p.Dir == "" {
		p.Dir = inv.Dir
	}
	for _, c := range req.Commands {
		p.Updates = append(p.Updates, RefUpdate{Ref: c.Name.String(), Old: c.Old.String(), New: c.New.String()})
	}
	p.ancestor = func(ctx context.Context, a, b string) (bool, error) { return goGitIsAncestor(st, a, b) }
	var pushErr error
	if status.UnpackStatus == "ok" && inv.PreReceive != nil {
		pushErr = inv.PreReceive(ctx, p)
	}
	var done []RefUpdate
	for i, c := range req.Commands {
		cs := &packp.CommandStatus{ReferenceName: c.Name, Status: "ok"}
		switch reason, rejected := p.Rejected(c.Name.String()); {
		case status.UnpackStatus != "ok":
			cs.Status = "unpacker error"
		case pushErr != nil:
			cs.Status = "pre-receive hook declined"
		case rejected:
			cs.Status = truncate(reason, 200)
		case !strings.HasPrefix(c.Name.String(), "refs/") || CheckRefName(c.Name.String()) != nil:
			// As git receive-pack answers: a ref git could not update
			// or delete afterwards is never written.
			cs.Status = "funny refname"
		default:
			if err := casRef(st, c); err != nil {
				cs.Status = err.Error()
			} else {
				done = append(done, p.Updates[i])
			}
		}
		status.CommandStatuses = append(status.CommandStatuses, cs)
	}
	var b bytes.Buffer
	if pushErr != nil {
		// Without side-band there is no channel for messages; the
		// rejection reason travels in the ref statuses.
		for _, cs := range status.CommandStatuses {
			cs.Status = truncate("pre-receive: "+pushErr.Error(), 200)
		}
	}
	if err := status.Encode(&b); err != nil {
		return fmt.Errorf("gitproto: gogit: %w", err)
	}
	if _, err := inv.Stdout.Write(b.Bytes()); err != nil {
		return err
	}
	if inv.PostReceive != nil && len(done) > 0 {
		p.Updates = done
		inv.PostReceive(ctx, p)
	}
	return nil
}

// casRef applies one command if the ref still has its old value; the
// caller holds the repository's lock.
func casRef(st *filesystem.Storage, c *packp.Command) error {
	cur, err := st.Reference(c.Name)
	switch {
	case errors.Is(err, plumbing.ErrReferenceNotFound):
		cur = nil
	case err != nil:
		return err
	}
	var curHash plumbing.Hash
	if cur != nil {
		curHash = cur.Hash()
	}
	if curHash != c.Old {
		return errors.New("stale info: ref changed since it was read")
	}
	if c.New.IsZero() {
		return st.RemoveReference(c.Name)
	}
	if _, err := st.EncodedObject(plumbing.AnyObject, c.New); err != nil {
		return errors.New("missing necessary objects")
	}
	return st.SetReference(plumbing.NewHashReference(c.Name, c.New))
}

func goGitIsAncestor(st *filesystem.Storage, a, b string) (bool, error) {
	ca, err := object.GetCommit(st, plumbing.NewHash(a))
	if err != nil {
		return false, fmt.Errorf("gitproto: gogit: %s: %w", a, err)
	}
	cb, err := object.GetCommit(st, plumbing.NewHash(b))
	if err != nil {
		return false, fmt.Errorf("gitproto: gogit: %s: %w", b, err)
	}
	if ca.Hash == cb.Hash {
		return true, nil
	}
	return ca.IsAncestor(cb)
}

// readerCtx stops reading once ctx is done.
type readerCtx struct {
	ctx context.Context
	r   io.Reader
}

func (r readerCtx) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
