// Package gogit provides a gitproto.Engine that serves the Git protocol
// with go-git, in pure Go, for hosts without a git binary.
//
// It lives apart from gitproto so that a program serving with the git
// binary (gitproto.GitEngine, the default) links none of go-git.
package gogit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/server"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// Engine serves the protocol with go-git. It is much slower than
// gitproto.GitEngine on large repositories (go-git walks and encodes
// every object in memory) and supports less:
//
//   - protocol v0 only: requests for v1 or v2 are answered in v0, which
//     git clients accept;
//   - no shallow clones (--depth, --shallow-since) and no partial clones
//     (--filter): such fetches fail with an ERR packet naming
//     gitproto.gitproto.ErrUnsupported;
//   - no side-band (no progress output), no multi_ack, no thin packs;
//   - pushes write objects straight into the repository, without the
//     quarantine GitEngine has, so objects of a rejected push stay until
//     the next gc; the pushes to one repository run one at a time, and
//     fetches wait while one does, so ref updates are compare-and-swap
//     among the requests this process serves, but not against other
//     processes writing the same repository.
//
// The zero Engine is ready to use. An Engine is safe for concurrent use.
type Engine struct {
	mu    sync.Mutex // guards locks
	locks map[string]*repoLock
}

// repoLock orders ref reads and updates of one repository: go-git
// rewrites ref files in place, so a reader racing a writer could see an
// empty file. It is dropped from Engine.locks when its last user is done,
// so the map holds only repositories in use.
type repoLock struct {
	sync.RWMutex
	users int // guarded by Engine.mu
}

// MaxVersion reports the highest protocol version the engine speaks;
// gitproto.Handler answers newer requests in this version.
func (e *Engine) MaxVersion() int { return 0 }

// lock takes dir's lock, shared or exclusive, and returns its release.
func (e *Engine) lock(dir string, exclusive bool) (release func()) {
	e.mu.Lock()
	if e.locks == nil {
		e.locks = make(map[string]*repoLock)
	}
	l := e.locks[dir]
	if l == nil {
		l = new(repoLock)
		e.locks[dir] = l
	}
	l.users++
	e.mu.Unlock()
	if exclusive {
		l.Lock()
	} else {
		l.RLock()
	}
	return func() {
		if exclusive {
			l.Unlock()
		} else {
			l.RUnlock()
		}
		e.mu.Lock()
		if l.users--; l.users == 0 {
			delete(e.locks, dir)
		}
		e.mu.Unlock()
	}
}

// held reports how many repositories have a lock now (for tests).
func (e *Engine) held() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.locks)
}

func openStorage(dir string) *filesystem.Storage {
	return filesystem.NewStorage(osfs.New(dir), cache.NewObjectLRUDefault())
}

// Run implements Engine.
func (e *Engine) Run(ctx context.Context, inv *gitproto.Invocation) error {
	if inv.Stateful {
		// go-git's server side speaks the stateless exchange only.
		return fmt.Errorf("%w: a stateful session (SSH, git://)", gitproto.ErrUnsupported)
	}
	st := openStorage(inv.Dir)
	defer st.Close()
	srv := server.NewServer(storageLoader{st})
	ep, _ := transport.NewEndpoint("/")
	if inv.AdvertiseRefs {
		defer e.lock(inv.Dir, false)()
	}
	switch {
	case inv.Service == gitproto.UploadPack && inv.AdvertiseRefs:
		s, err := srv.NewUploadPackSession(ep, nil)
		if err != nil {
			return fmt.Errorf("gogit: %w", err)
		}
		ar, err := s.AdvertisedReferencesContext(ctx)
		if err != nil {
			return fmt.Errorf("gogit: %w", err)
		}
		return encodeAdv(ar, inv.Stdout)
	case inv.Service == gitproto.ReceivePack && inv.AdvertiseRefs:
		s, err := srv.NewReceivePackSession(ep, nil)
		if err != nil {
			return fmt.Errorf("gogit: %w", err)
		}
		ar, err := s.AdvertisedReferencesContext(ctx)
		if err != nil {
			return fmt.Errorf("gogit: %w", err)
		}
		// go-git stores a received pack as it is, so it cannot complete
		// a thin pack from the repository's objects: ask for full ones.
		if err := ar.Capabilities.Add(capability.Capability("no-thin")); err != nil {
			return fmt.Errorf("gogit: %w", err)
		}
		return encodeAdv(ar, inv.Stdout)
	case inv.Service == gitproto.UploadPack:
		defer e.lock(inv.Dir, false)()
		return e.uploadPack(ctx, srv, ep, inv)
	case inv.Service == gitproto.ReceivePack:
		return e.receivePack(ctx, inv)
	}
	return fmt.Errorf("%w: service %q", gitproto.ErrUnsupported, inv.Service)
}

// encodeAdv buffers the advertisement so that nothing is written before
// it is complete.
func encodeAdv(ar *packp.AdvRefs, w io.Writer) error {
	var b bytes.Buffer
	if err := ar.Encode(&b); err != nil {
		return fmt.Errorf("gogit: %w", err)
	}
	_, err := w.Write(b.Bytes())
	return err
}

type storageLoader struct{ st storer.Storer }

func (l storageLoader) Load(*transport.Endpoint) (storer.Storer, error) { return l.st, nil }

func (e *Engine) uploadPack(ctx context.Context, srv transport.Transport, ep *transport.Endpoint, inv *gitproto.Invocation) error {
	body, err := io.ReadAll(inv.Stdin)
	if err != nil {
		return err
	}
	switch {
	case inv.Shallow:
		return fmt.Errorf("%w: shallow clone with the gogit engine", gitproto.ErrUnsupported)
	case inv.Filter:
		return fmt.Errorf("%w: partial clone (--filter) with the gogit engine", gitproto.ErrUnsupported)
	}
	req := packp.NewUploadPackRequest()
	if err := req.Decode(bytes.NewReader(body)); err != nil {
		return fmt.Errorf("%w: %v", gitproto.ErrMalformed, err)
	}
	s, err := srv.NewUploadPackSession(ep, nil)
	if err != nil {
		return fmt.Errorf("gogit: %w", err)
	}
	resp, err := s.UploadPack(ctx, req)
	if err != nil {
		if errors.Is(err, transport.ErrEmptyUploadPackRequest) {
			return nil
		}
		return fmt.Errorf("gogit: %w", err)
	}
	defer resp.Close()
	// Encode writes NAK then the pack; the lazily started response means
	// a failure before the first byte is still an HTTP status.
	if err := resp.Encode(inv.Stdout); err != nil {
		return fmt.Errorf("gogit: %w", err)
	}
	return nil
}

func (e *Engine) receivePack(ctx context.Context, inv *gitproto.Invocation) error {
	req := packp.NewReferenceUpdateRequest()
	br := bufio.NewReaderSize(inv.Stdin, 64<<10)
	if err := req.Decode(br); err != nil {
		return fmt.Errorf("%w: %v", gitproto.ErrMalformed, err)
	}
	for _, c := range req.Capabilities.All() {
		switch c {
		case capability.ReportStatus, capability.DeleteRefs, capability.OFSDelta, capability.Agent:
		default:
			return fmt.Errorf("%w: capability %s with the gogit engine", gitproto.ErrUnsupported, c)
		}
	}
	// One push of a repository at a time, and no fetch while it runs:
	// go-git's readers fail on a pack whose index is still being written,
	// and the hook and the compare-and-swap must see the same refs.
	defer e.lock(inv.Dir, true)()
	st := openStorage(inv.Dir) // knows every pack written before the lock
	defer st.Close()
	status := &packp.ReportStatus{UnpackStatus: "ok"}
	if req.Packfile != nil {
		if err := packfile.UpdateObjectStorage(st, readerCtx{ctx, req.Packfile}); err != nil && !errors.Is(err, packfile.ErrEmptyPackfile) {
			status.UnpackStatus = "error " + err.Error()
		}
		req.Packfile.Close()
	}
	p := &gitproto.Push{}
	if inv.Push != nil {
		p.Repo, p.Dir, p.Principal = inv.Push.Repo, inv.Push.Dir, inv.Push.Principal
	}
	if p.Dir == "" {
		p.Dir = inv.Dir
	}
	for _, c := range req.Commands {
		p.Updates = append(p.Updates, gitproto.RefUpdate{Ref: c.Name.String(), Old: c.Old.String(), New: c.New.String()})
	}
	p.Ancestor = func(ctx context.Context, a, b string) (bool, error) { return goGitIsAncestor(st, a, b) }
	var pushErr error
	if status.UnpackStatus == "ok" && inv.PreReceive != nil {
		pushErr = inv.PreReceive(ctx, p)
	}
	var done []gitproto.RefUpdate
	for i, c := range req.Commands {
		cs := &packp.CommandStatus{ReferenceName: c.Name, Status: "ok"}
		switch reason, rejected := p.Rejected(c.Name.String()); {
		case status.UnpackStatus != "ok":
			cs.Status = "unpacker error"
		case pushErr != nil:
			cs.Status = "pre-receive hook declined"
		case rejected:
			cs.Status = truncate(reason, 200)
		case !strings.HasPrefix(c.Name.String(), "refs/") || gitproto.CheckRefName(c.Name.String()) != nil:
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
		return fmt.Errorf("gogit: %w", err)
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
		return false, fmt.Errorf("gogit: %s: %w", a, err)
	}
	cb, err := object.GetCommit(st, plumbing.NewHash(b))
	if err != nil {
		return false, fmt.Errorf("gogit: %s: %w", b, err)
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

// truncate cuts s to at most n bytes, for messages that travel in
// fixed-size fields.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// InfoRefs lists dir's refs for the dumb protocol, as git
// update-server-info would: "<id>\t<ref>\n" in ref order, each annotated
// tag followed by the object it finally points to, named "<ref>^{}".
func (e *Engine) InfoRefs(ctx context.Context, dir string) ([]byte, error) {
	defer e.lock(dir, false)()
	repo, err := git.PlainOpen(dir)
	if err != nil {
		return nil, fmt.Errorf("gogit: info/refs: %w", err)
	}
	iter, err := repo.References()
	if err != nil {
		return nil, fmt.Errorf("gogit: info/refs: %w", err)
	}
	var refs []*plumbing.Reference
	iter.ForEach(func(ref *plumbing.Reference) error {
		if ref.Type() == plumbing.HashReference && strings.HasPrefix(ref.Name().String(), "refs/") {
			refs = append(refs, ref)
		}
		return nil
	})
	sort.Slice(refs, func(i, j int) bool { return refs[i].Name() < refs[j].Name() })
	var b bytes.Buffer
	for _, ref := range refs {
		fmt.Fprintf(&b, "%s\t%s\n", ref.Hash(), ref.Name())
		tag, err := repo.TagObject(ref.Hash())
		if err != nil {
			continue // not an annotated tag
		}
		for tag.TargetType == plumbing.TagObject {
			next, err := repo.TagObject(tag.Target)
			if err != nil {
				break
			}
			tag = next
		}
		fmt.Fprintf(&b, "%s\t%s^{}\n", tag.Target, ref.Name())
	}
	return b.Bytes(), nil
}
