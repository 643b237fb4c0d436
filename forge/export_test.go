package forge

import "context"

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
