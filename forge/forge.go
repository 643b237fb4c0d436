package forge

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
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

	// Enqueue, if set, takes what a push leaves for after its answer
	// (see PushWork) to a durable queue, before the push is answered,
	// whose worker calls FinishPush until it returns nil: the work then
	// outlives this process (forged: a River job). If Enqueue fails, or
	// is nil, the work runs in this process's background (see Wait).
	Enqueue func(ctx context.Context, w PushWork) error

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

	bg sync.WaitGroup // work after pushes (see Wait)
}

// background runs fn after the request that asked for it, counted by
// Wait.
func (f *Forge) background(fn func()) {
	f.bg.Go(fn)
}

// Wait blocks until the work that pushes left for after their response
// (recording the push, queueing webhooks) is done. Call it before
// closing the Meta and the Deliverer.
func (f *Forge) Wait() { f.bg.Wait() }

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

// IsCommitID reports whether s is a full commit id (40 or 64 lower-case
// hex digits).
func IsCommitID(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	return strings.Trim(s, "0123456789abcdef") == ""
}
