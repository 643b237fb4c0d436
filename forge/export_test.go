package forge

// LoginCacheLenForTest reports how many password logins are remembered.
func (f *Forge) LoginCacheLenForTest() int {
	f.authMu.Lock()
	defer f.authMu.Unlock()
	return len(f.authCache)
}
