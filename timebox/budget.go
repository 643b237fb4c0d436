package timebox

import (
	"sync"
	"time"
)

// Budget is a pool of time shared by the boxes that draw on it, after
// interruptingcow's Quota: across the iterations of a loop, the steps of
// a request, or concurrent calls. It counts down only while at least one
// box drawing on it is open, at the rate of the wall clock however many
// are open, and a box that opens when nothing is left fails at once.
//
// Reserve keeps a slice back: boxes may use the budget only down to it,
// so the caller still has time to write an error page or roll back after
// they expire (GitLab keeps 5% of the worker limit for this).
//
// A Budget is safe for concurrent use; set Name and Reserve before use.
type Budget struct {
	// Name identifies the budget in errors.
	Name string

	// Reserve is kept back from the boxes. Remaining still includes it.
	Reserve time.Duration

	mu     sync.Mutex // guards left, active and since
	left   time.Duration
	active int
	since  time.Time // when active went from 0 to 1
}

// NewBudget returns a budget of total.
func NewBudget(total time.Duration) *Budget {
	return &Budget{left: total}
}

// Remaining returns the time left, counting the boxes open now and
// including the reserve.
func (b *Budget) Remaining() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.remainingLocked(time.Now())
}

func (b *Budget) remainingLocked(now time.Time) time.Duration {
	if b.active > 0 {
		return b.left - now.Sub(b.since)
	}
	return b.left
}

// open starts drawing on the budget and returns the time a box opening
// now may use.
func (b *Budget) open(now time.Time) (time.Duration, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	usable := b.remainingLocked(now) - b.Reserve
	if usable <= 0 {
		return 0, ErrBudgetSpent
	}
	if b.active == 0 {
		b.since = now
	}
	b.active++
	return usable, nil
}

func (b *Budget) close() {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.active--
	if b.active == 0 {
		b.left -= now.Sub(b.since)
	}
}
