package forge

import (
	"context"
	"time"
)

// LoginCacheLenForTest reports how many password logins are remembered.
func (f *Forge) LoginCacheLenForTest() int {
	f.authMu.Lock()
	defer f.authMu.Unlock()
	return len(f.authCache)
}

// OccupyWorkersForTest takes every worker of c until release is called.
func (c *LastCommitCache) OccupyWorkersForTest() (release func()) {
	c.init()
	for range cap(c.slots) {
		c.slots <- struct{}{}
	}
	return func() {
		for range cap(c.slots) {
			<-c.slots
		}
	}
}

// HoldPasswordChecksForTest takes every password check slot until
// release is called.
func (f *Forge) HoldPasswordChecksForTest() (release func()) {
	f.CheckPassword(context.Background(), "", "") // makes the slots
	for range cap(f.checks) {
		f.checks <- struct{}{}
	}
	return func() {
		for range cap(f.checks) {
			<-f.checks
		}
	}
}

// CreateRepoInfoForTest records metadata without files, as a repository
// changed on disk or a partial failure would leave it.
func (m *Meta) CreateRepoInfoForTest(ctx context.Context, r RepoInfo) (*RepoInfo, error) {
	return m.createRepoInfo(ctx, r)
}

// PushedForTest records a push's time and the repository's new size, as
// PostReceive does (the time before answering, the size after).
func (m *Meta) PushedForTest(ctx context.Context, repoID int64, at time.Time, size int64) error {
	if _, err := m.exec(ctx, `UPDATE repos SET pushed_at = ? WHERE id = ?`, at.Unix(), repoID); err != nil {
		return err
	}
	return m.resized(ctx, repoID, size)
}

// SetClockForTest sets the clock of the metadata (token expiry, the
// times it records).
func (m *Meta) SetClockForTest(now func() time.Time) { m.now = now }

// LabelledForTest is labelled, the context of a detached walk.
var LabelledForTest = labelled
