package gitproto

import (
	"context"
	"time"
)

// AcquireForTest exposes Admission.acquire to the external tests.
func AcquireForTest(a *Admission, ctx context.Context, repo string, full bool) (func(), time.Duration, error) {
	return a.acquire(ctx, repo, full)
}

// SetClockForTest sets the clock by which the caches judge how recent a
// ref state is.
func SetClockForTest(a *AdvertCache, p *PackCache, now func() time.Time) {
	if a != nil {
		a.now = now
	}
	if p != nil {
		p.now = now
	}
}

// PastRacyWindowForTest makes the caches judge ref states as if
// racyWindow had passed since every change, instead of a test sleeping
// it out: their clock runs that far ahead.
func PastRacyWindowForTest(a *AdvertCache, p *PackCache) {
	SetClockForTest(a, p, func() time.Time { return time.Now().Add(racyWindow + time.Second) })
}

// QuickAncestorForTest exposes quickAncestor, IsAncestor's fast path.
var QuickAncestorForTest = quickAncestor
