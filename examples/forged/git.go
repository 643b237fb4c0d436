package main

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/forgekit/forgekit/forge"
)

// serveGit serves git traffic, limiting failed logins the way the web
// login is limited (see loginLimiter): per client address, and for
// passwords per account. Each attempt is taken before the credentials
// are checked (each check costs an argon2id hash) and given back if they
// were right or could not be judged (503); a git client's first,
// credential-less request is not an attempt.
func (s *gitFront) serveGit(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		s.git.ServeHTTP(w, r)
		return
	}
	account := user
	if forge.IsToken(pass) {
		account = "" // tokens are not guessable; the address's limit is enough
	}
	a, ok := s.logins.begin(s.clientIP(r), account)
	if !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(loginEvery.Seconds())))
		http.Error(w, "too many failed logins; try again later", http.StatusTooManyRequests)
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	s.git.ServeHTTP(sw, r)
	switch sw.status {
	case http.StatusUnauthorized:
		a.failed()
	case http.StatusServiceUnavailable:
		a.undecided()
	default:
		a.succeeded()
	}
}

// gitRequest reports whether r is Git smart or dumb HTTP: the three smart
// endpoints under /OWNER/REPO[.git], or any file under /OWNER/REPO.git/.
func gitRequest(r *http.Request) bool {
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 3)
	if len(parts) < 3 {
		return false
	}
	switch parts[2] {
	case "info/refs", "git-upload-pack", "git-receive-pack":
		return true
	}
	return strings.HasSuffix(parts[1], ".git")
}
