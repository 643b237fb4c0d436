package gitproto

import (
	"context"
	"time"
)

// AcquireForTest exposes Admission.acquire to the external tests.
func AcquireForTest(a *Admission, ctx context.Context, repo string, full bool) (func(), time.Duration, error) {
	return a.acquire(ctx, repo, full)
}
