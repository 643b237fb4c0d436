package forge

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
