// Package forge provides the domain of a forge: repositories on disk,
// users, tokens and access, browsing, archives and maintenance, built on
// forgekit's leaf packages.
//
// This first part is the repository store: bare repositories under
// ROOT/repos/{owner}/{name}.git, created with the configuration that keeps
// large repositories fast (bitmaps and a commit-graph written on every
// repack), deleted into ROOT/trash where they stay recoverable until
// purged, renamed, and listed a page at a time. Names are checked before
// anything touches the disk, and are unique without regard to case, so
// that Alice/Proj and alice/proj can never both exist.
package forge

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/slowlog"
)

// MaxNameLen is the longest owner or repository name.
const MaxNameLen = 100

// CheckName reports whether s may name an owner or a repository: 1 to
// MaxNameLen characters from [A-Za-z0-9._-], starting with a letter or
// digit, without "..", and not ending in ".git" (that suffix is the
// store's). Which names would shadow an application's own URLs is the
// application's to say (Forge.Reserved).
func CheckName(s string) error {
	bad := func(why string) error { return &NameError{Name: s, Reason: why} }
	switch {
	case s == "":
		return bad("empty")
	case len(s) > MaxNameLen:
		return bad(fmt.Sprintf("longer than %d characters", MaxNameLen))
	case !alnum(s[0]):
		return bad("must start with a letter or digit")
	case strings.Contains(s, ".."):
		return bad(`contains ".."`)
	case strings.HasSuffix(strings.ToLower(s), ".git"):
		return bad(`ends in ".git"`)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '.' && c != '_' && c != '-' {
			return bad(fmt.Sprintf("character %q not allowed", c))
		}
	}
	return nil
}

func alnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }

// Repo is a repository on disk.
type Repo struct {
	Owner string
	Name  string
	Dir   string
}

// Store manages the repositories under a root directory. It is safe for
// concurrent use, and several processes may share a root: creations and
// renames take a lock file per owner.
type Store struct {
	root string

	// Git is the git binary. If empty, "git" on PATH.
	Git string
}

// NewStore returns the store under root, creating root/repos and
// root/trash.
func NewStore(root string) (*Store, error) {
	for _, d := range []string{"repos", "trash", "locks"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, fmt.Errorf("forge: %w", err)
		}
	}
	return &Store{root: root}, nil
}

func (s *Store) git() string {
	if s.Git != "" {
		return s.Git
	}
	return "git"
}

func (s *Store) repoDir(owner, name string) string {
	return filepath.Join(s.root, "repos", owner, name+".git")
}

// lockOwner serializes the name changes of one owner across processes.
func (s *Store) lockOwner(owner string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(s.root, "locks", strings.ToLower(owner)+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("forge: lock: %w", err)
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// find returns the name under which a repository exists for owner,
// matching without regard to case, or "".
func (s *Store) find(owner, name string) (string, string) {
	owners, _ := os.ReadDir(filepath.Join(s.root, "repos"))
	for _, o := range owners {
		if !strings.EqualFold(o.Name(), owner) {
			continue
		}
		repos, _ := os.ReadDir(filepath.Join(s.root, "repos", o.Name()))
		for _, r := range repos {
			if n, ok := strings.CutSuffix(r.Name(), ".git"); ok && strings.EqualFold(n, name) {
				return o.Name(), n
			}
		}
	}
	return "", ""
}

// Get returns the repository owner/name, matched without regard to case.
func (s *Store) Get(owner, name string) (*Repo, error) {
	if CheckName(owner) != nil || CheckName(name) != nil {
		return nil, ErrNotFound
	}
	o, n := s.find(owner, name)
	if o == "" {
		return nil, ErrNotFound
	}
	return &Repo{Owner: o, Name: n, Dir: s.repoDir(o, n)}, nil
}

// Create makes an empty bare repository owner/name.
func (s *Store) Create(ctx context.Context, owner, name string) (*Repo, error) {
	if err := CheckName(owner); err != nil {
		return nil, err
	}
	if err := CheckName(name); err != nil {
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
		owner = o // keep the owner's existing spelling
	}
	dir := s.repoDir(owner, name)
	tmp := filepath.Join(s.root, "repos", owner, "."+name+".creating")
	os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Dir(tmp), 0o700); err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	if err := s.run(ctx, "", "init", "--quiet", "--bare", "--initial-branch=main", tmp); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	if err := s.configure(ctx, tmp); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	// Appear complete or not at all.
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("forge: %w", err)
	}
	return &Repo{Owner: owner, Name: name, Dir: dir}, nil
}

// repoConfig is the configuration of every repository the store makes:
// bitmaps and a commit-graph with changed-path filters on every repack,
// objects checked as they arrive, reflogs.
var repoConfig = [][2]string{
	{"repack.writeBitmaps", "true"},
	{"core.commitGraph", "true"},
	{"gc.writeCommitGraph", "true"},
	{"fetch.writeCommitGraph", "true"},
	{"receive.fsckObjects", "true"},
	{"core.logAllRefUpdates", "true"},
}

func (s *Store) configure(ctx context.Context, dir string) error {
	for _, kv := range repoConfig {
		if err := s.run(ctx, dir, "config", kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) findOwner(owner string) (string, bool) {
	owners, _ := os.ReadDir(filepath.Join(s.root, "repos"))
	for _, o := range owners {
		if strings.EqualFold(o.Name(), owner) {
			return o.Name(), true
		}
	}
	return "", false
}

func (s *Store) run(ctx context.Context, dir string, args ...string) error {
	defer func(start time.Time) { slowlog.Count(ctx, slowlog.GitRun, time.Since(start)) }(time.Now())
	cmd := exec.CommandContext(ctx, s.git(), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("forge: git %s: %v: %s", args[0], err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Delete moves owner/name into the trash, where Restore can bring it back
// until Purge removes it.
func (s *Store) Delete(ctx context.Context, owner, name string) error {
	r, err := s.Get(owner, name)
	if err != nil {
		return err
	}
	unlock, err := s.lockOwner(r.Owner)
	if err != nil {
		return err
	}
	defer unlock()
	trash := filepath.Join(s.root, "trash", r.Owner, r.Name+".git."+strconv.FormatInt(time.Now().UnixNano(), 10))
	if err := os.MkdirAll(filepath.Dir(trash), 0o700); err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	if err := os.Rename(r.Dir, trash); err != nil {
		return fmt.Errorf("forge: %w", err)
	}
	return nil
}

// Trashed is a deleted repository waiting in the trash.
type Trashed struct {
	Owner, Name string
	Deleted     time.Time
	dir         string
}

// Trash lists the deleted repositories, newest first.
func (s *Store) Trash() ([]Trashed, error) {
	var out []Trashed
	owners, err := os.ReadDir(filepath.Join(s.root, "trash"))
	if err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	for _, o := range owners {
		ents, _ := os.ReadDir(filepath.Join(s.root, "trash", o.Name()))
		for _, e := range ents {
			i := strings.LastIndex(e.Name(), ".git.")
			if i < 0 {
				continue
			}
			ns, err := strconv.ParseInt(e.Name()[i+5:], 10, 64)
			if err != nil {
				continue
			}
			out = append(out, Trashed{Owner: o.Name(), Name: e.Name()[:i], Deleted: time.Unix(0, ns),
				dir: filepath.Join(s.root, "trash", o.Name(), e.Name())})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Deleted.After(out[j].Deleted) })
	return out, nil
}

// Restore brings back the most recently deleted owner/name, unless a
// repository of that name exists again.
func (s *Store) Restore(ctx context.Context, owner, name string) (*Repo, error) {
	all, err := s.Trash()
	if err != nil {
		return nil, err
	}
	for _, t := range all {
		if !strings.EqualFold(t.Owner, owner) || !strings.EqualFold(t.Name, name) {
			continue
		}
		unlock, err := s.lockOwner(t.Owner)
		if err != nil {
			return nil, err
		}
		defer unlock()
		if o, _ := s.find(t.Owner, t.Name); o != "" {
			return nil, fmt.Errorf("%w: %s/%s", ErrExists, t.Owner, t.Name)
		}
		dir := s.repoDir(t.Owner, t.Name)
		if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
			return nil, fmt.Errorf("forge: %w", err)
		}
		if err := os.Rename(t.dir, dir); err != nil {
			return nil, fmt.Errorf("forge: %w", err)
		}
		return &Repo{Owner: t.Owner, Name: t.Name, Dir: dir}, nil
	}
	return nil, ErrNotFound
}

// Purge removes trash entries deleted more than olderThan ago and returns
// how many it removed.
func (s *Store) Purge(ctx context.Context, olderThan time.Duration) (int, error) {
	all, err := s.Trash()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, t := range all {
		if time.Since(t.Deleted) < olderThan {
			continue
		}
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if err := os.RemoveAll(t.dir); err != nil {
			return n, fmt.Errorf("forge: %w", err)
		}
		n++
	}
	return n, nil
}

// Rename moves owner/name to newOwner/newName.
func (s *Store) Rename(ctx context.Context, owner, name, newOwner, newName string) (*Repo, error) {
	if err := CheckName(newOwner); err != nil {
		return nil, err
	}
	if err := CheckName(newName); err != nil {
		return nil, err
	}
	r, err := s.Get(owner, name)
	if err != nil {
		return nil, err
	}
	// Lock both owners in a fixed order.
	a, b := strings.ToLower(r.Owner), strings.ToLower(newOwner)
	first, second := a, b
	if b < a {
		first, second = b, a
	}
	u1, err := s.lockOwner(first)
	if err != nil {
		return nil, err
	}
	defer u1()
	if second != first {
		u2, err := s.lockOwner(second)
		if err != nil {
			return nil, err
		}
		defer u2()
	}
	if o, n := s.find(newOwner, newName); o != "" && !(strings.EqualFold(o, r.Owner) && n == r.Name) {
		return nil, fmt.Errorf("%w: %s/%s", ErrExists, newOwner, newName)
	}
	if o, ok := s.findOwner(newOwner); ok {
		newOwner = o
	}
	dir := s.repoDir(newOwner, newName)
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	if err := os.Rename(r.Dir, dir); err != nil {
		return nil, fmt.Errorf("forge: %w", err)
	}
	return &Repo{Owner: newOwner, Name: newName, Dir: dir}, nil
}

// List returns up to limit repositories of owner (all owners if empty)
// whose "owner/name" sorts after the cursor after, and the cursor of the
// next page ("" at the end).
func (s *Store) List(ctx context.Context, owner, after string, limit int) ([]Repo, string, error) {
	if limit <= 0 {
		limit = 50
	}
	var all []Repo
	owners, err := os.ReadDir(filepath.Join(s.root, "repos"))
	if err != nil {
		return nil, "", fmt.Errorf("forge: %w", err)
	}
	for _, o := range owners {
		if owner != "" && !strings.EqualFold(o.Name(), owner) {
			continue
		}
		repos, _ := os.ReadDir(filepath.Join(s.root, "repos", o.Name()))
		for _, r := range repos {
			n, ok := strings.CutSuffix(r.Name(), ".git")
			if !ok || strings.HasPrefix(r.Name(), ".") {
				continue
			}
			all = append(all, Repo{Owner: o.Name(), Name: n, Dir: s.repoDir(o.Name(), n)})
		}
	}
	key := func(r Repo) string { return strings.ToLower(r.Owner + "/" + r.Name) }
	sort.Slice(all, func(i, j int) bool { return key(all[i]) < key(all[j]) })
	i := sort.Search(len(all), func(i int) bool { return key(all[i]) > strings.ToLower(after) })
	page := all[i:]
	next := ""
	if len(page) > limit {
		page = page[:limit]
		next = key(page[len(page)-1])
	}
	return page, next, nil
}

// Resolver returns a gitproto.Resolver for the store: "owner/name" and
// "owner/name.git" map to the repository, matched without regard to case.
func (s *Store) Resolver() gitproto.Resolver {
	return gitproto.ResolverFunc(func(ctx context.Context, path string) (string, error) {
		owner, name, ok := strings.Cut(strings.TrimSuffix(path, ".git"), "/")
		if !ok || strings.Contains(name, "/") {
			return "", gitproto.ErrNotFound
		}
		r, err := s.Get(owner, name)
		if err != nil {
			return "", fmt.Errorf("%w: %s", gitproto.ErrNotFound, path)
		}
		return r.Dir, nil
	})
}

// discard removes a repository that was just created and must not
// remain (no trash: it held nothing).
func (s *Store) discard(r *Repo) {
	os.RemoveAll(r.Dir)
}

// SetHead points HEAD of the repository in dir at branch, which need not
// exist yet.
func (s *Store) SetHead(ctx context.Context, dir, branch string) error {
	return s.run(ctx, dir, "symbolic-ref", "HEAD", "refs/heads/"+branch)
}
