package forge

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalidName is wrapped by the *NameError of a name that breaks
	// the rules (users, repositories, branches).
	ErrInvalidName = errors.New("forge: invalid name")
	// ErrExists is returned when a repository of that name (in any case)
	// exists.
	ErrExists = errors.New("forge: repository exists")
	// ErrNotFound is returned for a repository (or a trash entry) that
	// does not exist, and for one that the principal may not see.
	ErrNotFound = errors.New("forge: repository not found")
	// ErrNoBranch is returned when a branch that must exist does not.
	ErrNoBranch = errors.New("forge: no such branch")

	// ErrUserExists is returned when a user of that name (in any case)
	// exists.
	ErrUserExists = errors.New("forge: user exists")
	// ErrNoUser is returned for a user that does not exist.
	ErrNoUser = errors.New("forge: no such user")
	// ErrBadCredentials is returned for a wrong password or an unknown,
	// expired or revoked token. It says no more, on purpose.
	ErrBadCredentials = errors.New("forge: bad credentials")
	// ErrTooManyPasswordChecks is returned by CheckPassword and
	// Authenticate when the password checks under way leave no room
	// before the caller gives up: the server is busy, the credentials
	// were not judged.
	ErrTooManyPasswordChecks = errors.New("forge: too many password checks at once")

	// ErrForbidden is returned by Can when the principal sees the
	// repository but may not do the action.
	ErrForbidden = errors.New("forge: forbidden")
	// ErrLoginRequired is returned by Can to an anonymous principal that
	// needs to log in (for a private repository, indistinguishable from a
	// missing one).
	ErrLoginRequired = errors.New("forge: login required")

	// ErrProtected is returned by DeleteBranch for a protected branch
	// and for the default branch.
	ErrProtected = errors.New("forge: protected branch")

	// ErrBadWebhook is wrapped by AddWebhook's error for a URL that is
	// not an absolute http or https URL.
	ErrBadWebhook = errors.New("forge: a webhook needs an http or https URL")

	// ErrBadKey is wrapped by AddSSHKey's error for text that is not
	// one SSH public key of a kind worth accepting.
	ErrBadKey = errors.New("forge: not a usable SSH public key")

	// ErrKeyExists is returned by AddSSHKey for a key that is already
	// registered (to anyone: a key identifies one user).
	ErrKeyExists = errors.New("forge: that SSH key is already registered")

	// ErrNotRepository is returned when a path or URL to import from, or
	// a directory to adopt, is not a git repository.
	ErrNotRepository = errors.New("forge: not a git repository")
	// ErrMissingOwners is wrapped by Adopt's error when repositories
	// belong to users that do not exist.
	ErrMissingOwners = errors.New("forge: repositories belong to users that do not exist")

	// ErrTooLarge is reported (with Truncated) for blobs over the cap.
	ErrTooLarge = errors.New("forge: file too large")
	// ErrFormat is returned for an archive format other than "tar.gz"
	// and "zip".
	ErrFormat = errors.New("forge: unknown archive format")
	// ErrLastCommitsBusy is returned by LastCommitCache.Get when its
	// queue of walks is full: the page shows its files without their
	// last commits.
	ErrLastCommitsBusy = errors.New("forge: too many last-commit walks queued")
	// ErrBusy is returned by Maintainer.Run when another process (or
	// goroutine) is maintaining the repository.
	ErrBusy = errors.New("forge: repository is being maintained")
)

// NameError says why a name was refused.
type NameError struct {
	Name   string
	Reason string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("forge: invalid name %q: %s", e.Name, e.Reason)
}

func (e *NameError) Unwrap() error { return ErrInvalidName }
