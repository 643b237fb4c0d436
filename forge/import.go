package forge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
)

// importProtocols are the transports an import may clone over: no ext::
// (which runs commands), no fd::.
const importProtocols = "http:https:git:ssh:file"

// Import makes owner/name a bare copy of the repository at from (a path,
// or an http, https, git or ssh URL): its branches and tags, HEAD as the
// source has it, the store's configuration. The copy is made beside the
// repositories and appears whole or not at all.
func (s *Store) Import(ctx context.Context, owner, name, from string) (*Repo, error) {
	if err := CheckName(owner); err != nil {
		return nil, err
	}
	if err := CheckName(name); err != nil {
		return nil, err
	}
	src, err := importSource(from)
	if err != nil {
		return nil, err
	}
	unlock, err := s.lockOwner(owner)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if o, _ := s.find(owner, name); o != "" {
		return nil, fmt.Errorf("%w: %s/%s", ErrExists, owner, name)
	}
	if o, _ := s.findOwner(owner); o != "" {
		owner = o
	}
	tmp := filepath.Join(s.root, "repos", owner, "."+name+".importing")
	os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Dir(tmp), 0o700); err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	cmd := exec.CommandContext(ctx, s.git(), "clone", "--bare", "--quiet", "--no-local", "--", src, tmp)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0", "GIT_ALLOW_PROTOCOL="+importProtocols)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: cloning %s: %s", ErrNotRepository, from, strings.TrimSpace(lastLine(string(out))))
	}
	// The source's address (which may hold credentials) is not kept.
	if err := s.run(ctx, tmp, "remote", "remove", "origin"); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	if err := s.configure(ctx, tmp); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	dir := s.repoDir(owner, name)
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("forge: %w", err)
	}
	return &Repo{Owner: owner, Name: name, Dir: dir}, nil
}

// importSource checks from: a URL of an allowed scheme, an scp-like ssh
// address, or a local path that exists.
func importSource(from string) (string, error) {
	if from == "" || strings.HasPrefix(from, "-") {
		return "", fmt.Errorf("%w: %q", ErrNotRepository, from)
	}
	if u, err := url.Parse(from); err == nil && u.Scheme != "" && len(u.Scheme) > 1 {
		switch u.Scheme {
		case "http", "https", "git", "ssh", "file":
			return from, nil
		}
		return "", fmt.Errorf("%w: %s: scheme %q is not http, https, git, ssh or file", ErrNotRepository, from, u.Scheme)
	}
	if host, _, ok := strings.Cut(from, ":"); ok && !strings.Contains(host, "/") && len(host) > 1 {
		return from, nil // user@host:path, as git understands it
	}
	abs, err := filepath.Abs(from)
	if err != nil {
		return "", fmt.Errorf("forge: %w", err)
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrNotRepository, from, errors.Unwrap(err))
	}
	return abs, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// ImportRepo brings in an existing repository as owner/name: a bare
// copy of from (see Store.Import), registered with the branch its HEAD
// names as default (protected), then maintained (one pack with a bitmap,
// a commit-graph with changed-path filters), so that it is fast from its
// first page. On any failure nothing remains.
func (f *Forge) ImportRepo(ctx context.Context, owner, name, from string, private bool, description string) (*RepoInfo, error) {
	u, err := f.Meta.User(ctx, owner)
	if err != nil {
		return nil, err
	}
	if _, err := f.Meta.RepoInfo(ctx, owner, name); err == nil {
		return nil, fmt.Errorf("%w: %s/%s", ErrExists, owner, name)
	}
	r, err := f.Store.Import(ctx, u.Name, name, from)
	if err != nil {
		return nil, err
	}
	info, err := f.register(ctx, r, private, description)
	if err != nil {
		f.Store.discard(r)
		return nil, err
	}
	m := &Maintainer{Store: f.Store, Logger: f.Logger}
	if _, err := m.Run(ctx, *r); err != nil {
		f.Meta.deleteRepoInfo(context.WithoutCancel(ctx), info.ID)
		f.Store.discard(r)
		return nil, fmt.Errorf("forge: maintaining the import: %w", err)
	}
	return info, nil
}

// register records the metadata of a repository that is on disk, with
// the default branch its HEAD names (or, if that branch is missing,
// main, master or its first branch), protected.
func (f *Forge) register(ctx context.Context, r *Repo, private bool, description string) (*RepoInfo, error) {
	branch := headBranch(r.Dir)
	info, err := f.Meta.createRepoInfo(ctx, RepoInfo{Owner: r.Owner, Name: r.Name, Private: private, Description: description, DefaultBranch: branch})
	if err != nil {
		return nil, err
	}
	if err := f.Meta.protectBranch(ctx, info.ID, branch); err != nil {
		f.Meta.deleteRepoInfo(context.WithoutCancel(ctx), info.ID)
		return nil, fmt.Errorf("forge: protecting %s: %w", branch, err)
	}
	if cur, _ := ReadHead(r.Dir); cur != branch {
		if err := f.Store.SetHead(ctx, r.Dir, branch); err != nil {
			f.Meta.deleteRepoInfo(context.WithoutCancel(ctx), info.ID)
			return nil, err
		}
	}
	return info, nil
}

// headBranch is the branch a repository's home should show: HEAD's if it
// exists, else main, master, the first branch, or HEAD's (or main) in an
// empty repository.
func headBranch(dir string) string {
	head, err := ReadHead(dir)
	if err == nil && branchExists(dir, head) {
		return head
	}
	var branches []string
	if iter, err := refStorage(dir).IterReferences(); err == nil {
		iter.ForEach(func(r *plumbing.Reference) error {
			if r.Name().IsBranch() {
				branches = append(branches, r.Name().Short())
			}
			return nil
		})
		iter.Close()
	}
	sort.Strings(branches)
	for _, b := range []string{"main", "master"} {
		if indexOf(branches, b) >= 0 {
			return b
		}
	}
	if len(branches) > 0 {
		return branches[0]
	}
	if head != "" {
		return head
	}
	return "main"
}

// Adoption is the outcome of adopting one repository.
type Adoption struct {
	Repo Repo
	Info *RepoInfo // nil if it failed
	Err  error
}

// AdoptOptions shape Adopt.
type AdoptOptions struct {
	// CreateOwners creates, with a random password nobody knows (an
	// administrator sets one later), the users that own repositories
	// but do not exist. Without it, Adopt refuses to adopt anything
	// while an owner is missing, and says who.
	CreateOwners bool
	// Public makes the adopted repositories public; they are private by
	// default.
	Public bool
}

// Adopt registers every repository of the store that has no metadata:
// bare repositories an operator moved under repos/OWNER/NAME.git (from
// cgit, gitolite, Gitorious or another forge). Each is registered whole
// or not at all, with the default branch its HEAD names; directories
// that are not repositories, or that lead outside the store through a
// symbolic link, are reported and left alone.
func (f *Forge) Adopt(ctx context.Context, o AdoptOptions) ([]Adoption, error) {
	var orphans []Repo
	after := ""
	for {
		page, next, err := f.Store.List(ctx, "", after, 500)
		if err != nil {
			return nil, err
		}
		for _, r := range page {
			if _, err := f.Meta.RepoInfo(ctx, r.Owner, r.Name); errors.Is(err, ErrNotFound) {
				orphans = append(orphans, r)
			} else if err != nil {
				return nil, err
			}
		}
		if next == "" {
			break
		}
		after = next
	}
	missing := map[string]bool{}
	for _, r := range orphans {
		if _, err := f.Meta.User(ctx, r.Owner); errors.Is(err, ErrNoUser) {
			missing[r.Owner] = true
		} else if err != nil {
			return nil, err
		}
	}
	if len(missing) > 0 && !o.CreateOwners {
		var names []string
		for n := range missing {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("%w: %s (create them, or let Adopt create them)", ErrMissingOwners, strings.Join(names, ", "))
	}
	var out []Adoption
	for _, r := range orphans {
		a := Adoption{Repo: r}
		a.Info, a.Err = f.adopt(ctx, r, missing[r.Owner], !o.Public)
		if a.Err == nil {
			missing[r.Owner] = false
		}
		out = append(out, a)
	}
	return out, nil
}

func (f *Forge) adopt(ctx context.Context, r Repo, createOwner, private bool) (*RepoInfo, error) {
	for _, n := range []string{r.Owner, r.Name} {
		if err := CheckName(n); err != nil {
			return nil, err
		}
	}
	if err := f.Store.checkInside(r.Dir); err != nil {
		return nil, err
	}
	if !isBareRepo(r.Dir) {
		return nil, fmt.Errorf("%w: %s", ErrNotRepository, r.Dir)
	}
	if createOwner {
		if _, err := f.CreateUser(ctx, r.Owner, "", randomSecret(), false); err != nil && !errors.Is(err, ErrUserExists) {
			return nil, err
		}
	}
	if err := f.Store.configure(ctx, r.Dir); err != nil {
		return nil, err
	}
	return f.register(ctx, &r, private, "")
}

// checkInside refuses a repository directory that leads outside the
// store's repositories (a symbolic link to elsewhere on the host).
func (s *Store) checkInside(dir string) error {
	root, err := filepath.EvalSymlinks(filepath.Join(s.root, "repos"))
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	if rel, err := filepath.Rel(root, real); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("forge: %s leads outside %s", dir, root)
	}
	return nil
}

// isBareRepo reports whether dir looks like a bare git repository.
func isBareRepo(dir string) bool {
	for _, p := range []string{"HEAD", "objects", "refs"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			return false
		}
	}
	_, err := ReadHead(dir)
	return err == nil
}

// randomSecret is a password of 256 random bits, for accounts nobody
// signs in to until an administrator sets a password.
func randomSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}
