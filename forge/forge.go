package forge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/forgekit/forgekit/gitproto"
)

var (
	// ErrNoBranch is returned when a branch that must exist does not.
	ErrNoBranch = errors.New("forge: no such branch")
	// ErrTooManyPasswordChecks is returned by CheckPassword and
	// Authenticate when the password checks under way leave no room
	// before the caller gives up: the server is busy, the credentials
	// were not judged.
	ErrTooManyPasswordChecks = errors.New("forge: too many password checks at once")
)

// DefaultMaxPasswordChecks is how many password hashes Forge computes at
// once unless MaxPasswordChecks says otherwise.
const DefaultMaxPasswordChecks = 4

// Forge ties the repository store and the metadata together and makes the
// one access decision every entry point uses. Set its fields before use;
// it is then safe for concurrent use and must not be copied.
type Forge struct {
	Store *Store
	Meta  *Meta

	// Deliverer, if set, sends push events to the repositories' webhooks.
	Deliverer *Deliverer

	// OnPush listeners are called after every push that moved refs (the
	// server uses them to invalidate fragment caches and count activity).
	OnPush []func(ctx context.Context, ev PushEvent)

	// Logger receives what goes wrong in the background. If nil, nothing
	// is logged.
	Logger *slog.Logger

	// MaxPasswordChecks bounds the password hashes computed at once. If
	// zero, DefaultMaxPasswordChecks.
	MaxPasswordChecks int

	// Reserved, if set, reports names no user may take besides those
	// CheckName refuses: the first path segments of the application's
	// own pages, which such a user's page would hide.
	Reserved func(name string) bool

	// Remembered password logins (see Authenticate); the password itself
	// is not kept.
	authMu    sync.Mutex // guards authCache
	authCache map[[32]byte]cachedLogin

	checksOnce sync.Once
	checks     chan struct{} // password checks under way
}

const (
	loginCacheTTL = time.Minute
	loginCacheMax = 4096
)

type cachedLogin struct {
	id      int64
	stamp   string // the user's credential stamp when the password was right
	expires time.Time
}

func (f *Forge) logger() *slog.Logger {
	if f.Logger != nil {
		return f.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// CreateUser creates a user, refusing the names CheckName and Reserved
// refuse.
func (f *Forge) CreateUser(ctx context.Context, name, email, password string, admin bool) (*User, error) {
	if f.Reserved != nil && f.Reserved(strings.ToLower(name)) {
		return nil, &NameError{Name: name, Reason: "reserved"}
	}
	return f.Meta.CreateUser(ctx, name, email, password, admin)
}

// CreateRepo creates owner/name on disk and in the metadata, with its
// default branch (main, which HEAD names) protected; if any step fails,
// nothing remains.
func (f *Forge) CreateRepo(ctx context.Context, owner, name string, private bool, description string) (*RepoInfo, error) {
	if _, err := f.Meta.User(ctx, owner); err != nil {
		return nil, err
	}
	r, err := f.Store.Create(ctx, owner, name)
	if err != nil {
		return nil, err
	}
	info, err := f.Meta.CreateRepoInfo(ctx, RepoInfo{Owner: r.Owner, Name: r.Name, Private: private, Description: description})
	if err != nil {
		f.Store.discard(r)
		return nil, err
	}
	if err := f.Meta.ProtectBranch(ctx, info.ID, info.DefaultBranch); err != nil {
		// Without context: the request that failed may be why.
		f.Meta.DeleteRepoInfo(context.WithoutCancel(ctx), info.ID)
		f.Store.discard(r)
		return nil, fmt.Errorf("forge: protecting %s: %w", info.DefaultBranch, err)
	}
	return info, nil
}

// DeleteRepo moves owner/name to the store's trash and forgets its
// metadata (collaborators, webhooks and protections go with it).
func (f *Forge) DeleteRepo(ctx context.Context, owner, name string) error {
	info, err := f.Meta.RepoInfo(ctx, owner, name)
	if err != nil {
		return err
	}
	if err := f.Store.Delete(ctx, info.Owner, info.Name); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return f.Meta.DeleteRepoInfo(ctx, info.ID)
}

// RenameRepo gives owner/name a new name under the same owner, on disk
// and in the metadata; if either step fails, the old name remains. The
// old name is free at once: nothing redirects from it, so that a
// repository made under it later is not shadowed. A push running during
// the rename finishes in the renamed directory.
func (f *Forge) RenameRepo(ctx context.Context, owner, name, newName string) (*RepoInfo, error) {
	info, err := f.Meta.RepoInfo(ctx, owner, name)
	if err != nil {
		return nil, err
	}
	if newName == info.Name {
		return info, nil
	}
	if _, err := f.Store.Rename(ctx, info.Owner, info.Name, info.Owner, newName); err != nil {
		return nil, err
	}
	if err := f.Meta.RenameRepoInfo(ctx, info.ID, newName); err != nil {
		// Without context: the request that failed may be why.
		if _, berr := f.Store.Rename(context.WithoutCancel(ctx), info.Owner, newName, info.Owner, info.Name); berr != nil {
			f.logger().Error("forge: renaming back after a failed rename", "repo", info.Owner+"/"+info.Name, "err", berr)
		}
		return nil, err
	}
	info.Name = newName
	return info, nil
}

// SetPassword changes user's password and forgets the logins remembered
// for git clients, so that the old password stops working at once.
func (f *Forge) SetPassword(ctx context.Context, user, password string) error {
	if err := f.Meta.SetPassword(ctx, user, password); err != nil {
		return err
	}
	f.forgetLogins()
	return nil
}

// CheckBranchName reports whether b may name a branch: a ref name git
// accepts under refs/heads/ (see gitproto.CheckRefName), and not HEAD.
func CheckBranchName(b string) error {
	if b == "HEAD" || strings.HasPrefix(b, "-") {
		return &NameError{Name: b, Reason: "not a branch name"}
	}
	if err := gitproto.CheckRefName("refs/heads/" + b); err != nil {
		return &NameError{Name: b, Reason: strings.TrimPrefix(err.Error(), gitproto.ErrMalformed.Error()+": ")}
	}
	return nil
}

// SetDefaultBranch makes branch the repository's default: HEAD names it
// (what git clone checks out, what pages show first), the metadata
// records it, and it is protected. In a repository with branches, it
// must be one of them (ErrNoBranch).
func (f *Forge) SetDefaultBranch(ctx context.Context, r *RepoInfo, branch string) error {
	if err := CheckBranchName(branch); err != nil {
		return err
	}
	repo, err := f.Store.Get(r.Owner, r.Name)
	if err != nil {
		return err
	}
	if !branchExists(repo.Dir, branch) && hasBranches(repo.Dir) {
		return fmt.Errorf("%w: %s", ErrNoBranch, branch)
	}
	return f.setDefaultBranch(ctx, r, repo.Dir, branch)
}

func (f *Forge) setDefaultBranch(ctx context.Context, r *RepoInfo, dir, branch string) error {
	if err := f.Store.SetHead(ctx, dir, branch); err != nil {
		return err
	}
	if err := f.Meta.SetDefaultBranch(ctx, r.ID, branch); err != nil {
		return err
	}
	if err := f.Meta.ProtectBranch(ctx, r.ID, branch); err != nil {
		return err
	}
	r.DefaultBranch = branch
	return nil
}

// ReadHead returns the branch that HEAD of the repository in dir names,
// whether it exists or not.
func ReadHead(dir string) (string, error) {
	b, err := os.ReadFile(dir + "/HEAD")
	if err != nil {
		return "", fmt.Errorf("forge: %w", err)
	}
	ref, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "ref: refs/heads/")
	if !ok {
		return "", fmt.Errorf("forge: HEAD of %s names no branch", dir)
	}
	return ref, nil
}

// refStorage opens the refs of the repository in dir (no object cache).
func refStorage(dir string) *filesystem.Storage {
	return filesystem.NewStorageWithOptions(osfs.New(dir), cache.NewObjectLRU(0), filesystem.Options{})
}

func branchExists(dir, branch string) bool {
	_, err := refStorage(dir).Reference(plumbing.NewBranchReferenceName(branch))
	return err == nil
}

func hasBranches(dir string) bool {
	iter, err := refStorage(dir).IterReferences()
	if err != nil {
		return false
	}
	defer iter.Close()
	found := false
	iter.ForEach(func(r *plumbing.Reference) error {
		if r.Name().IsBranch() {
			found = true
		}
		return nil
	})
	return found
}

// IsCommitID reports whether s is a full commit id (40 or 64 lower-case
// hex digits).
func IsCommitID(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	return strings.Trim(s, "0123456789abcdef") == ""
}
