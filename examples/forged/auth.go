package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/forgekit/forgekit/forge"
)

// Sessions are signed cookies, not server-side rows, so that every
// instance sharing the data directory (and its secret.key) accepts them
// with no shared store. The cookie holds the user name, the expiry, a
// random nonce and the user's credential stamp (forge.User.Stamp), with
// an HMAC-SHA256 of the four; the CSRF token of a session is an HMAC of
// its nonce. Changing the password changes the stamp, which ends every
// session of the user (the browser that changed it gets a new one).
// Non-goal: ending one session alone before it expires (signing out
// clears the cookie in that browser only).
const (
	sessionCookie = "forged_session"
	sessionTTL    = 14 * 24 * time.Hour
	csrfField     = "csrf"
)

type session struct {
	user  *forge.User
	nonce string
}

type sessionKey struct{}

func (s *server) sign(parts ...string) string {
	m := hmac.New(sha256.New, s.key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// startSession sets the session cookie of u.
func (s *server) startSession(w http.ResponseWriter, r *http.Request, u *forge.User) {
	b := make([]byte, 16)
	rand.Read(b)
	nonce := hex.EncodeToString(b)
	exp := strconv.FormatInt(time.Now().Add(sessionTTL).Unix(), 10)
	payload := base64.RawURLEncoding.EncodeToString([]byte(u.Name + "|" + exp + "|" + nonce + "|" + u.Stamp))
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: payload + "." + s.sign("session", payload),
		Path: "/", MaxAge: int(sessionTTL.Seconds()), HttpOnly: true,
		Secure: s.secure(r), SameSite: http.SameSiteLaxMode,
	})
}

func (s *server) endSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: s.secure(r), SameSite: http.SameSiteLaxMode})
}

func (s *server) secure(r *http.Request) bool {
	return r.TLS != nil || (s.cfg.baseURL != nil && s.cfg.baseURL.Scheme == "https")
}

// claims returns the user name, nonce and credential stamp of r's session
// cookie, if its signature holds and it has not expired. It reads no
// database: session checks that the user still exists with that stamp.
func (s *server) claims(r *http.Request) (name, nonce, stamp string, ok bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return "", "", "", false
	}
	payload, mac, found := strings.Cut(c.Value, ".")
	if !found || !hmac.Equal([]byte(mac), []byte(s.sign("session", payload))) {
		return "", "", "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return "", "", "", false
	}
	f := strings.Split(string(raw), "|")
	if len(f) != 4 {
		return "", "", "", false
	}
	exp, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || time.Now().Unix() >= exp {
		return "", "", "", false
	}
	return f[0], f[2], f[3], true
}

// session returns r's session, or nil: no cookie, a forged or expired
// one, a user that no longer exists, or one whose password changed since.
// The result is kept in the request context by withSession.
func (s *server) session(r *http.Request) *session {
	if v, ok := r.Context().Value(sessionKey{}).(*session); ok {
		return v
	}
	name, nonce, stamp, ok := s.claims(r)
	if !ok {
		return nil
	}
	u, err := s.forge.Meta.User(r.Context(), name)
	if err != nil || !hmac.Equal([]byte(u.Stamp), []byte(stamp)) {
		return nil
	}
	return &session{user: u, nonce: nonce}
}

// withSession reads the session once and keeps it in the context.
func (s *server) withSession(r *http.Request) (*http.Request, *session) {
	if v, ok := r.Context().Value(sessionKey{}).(*session); ok {
		return r, v
	}
	sess := s.session(r)
	return r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)), sess
}

// principal is the forge principal of a web request.
func principal(sess *session) *forge.Principal {
	if sess == nil {
		return nil
	}
	return &forge.Principal{User: sess.user}
}

// csrfToken is the token forms of sess carry.
func (s *server) csrfToken(sess *session) string {
	if sess == nil {
		return ""
	}
	return s.sign("csrf", sess.nonce)
}

// checkCSRF verifies a signed-in form post. Cross-origin posts are
// already refused by http.CrossOriginProtection (Sec-Fetch-Site and
// Origin); the token covers browsers that send neither.
func (s *server) checkCSRF(r *http.Request, sess *session) bool {
	got := r.PostFormValue(csrfField)
	return sess != nil && got != "" && hmac.Equal([]byte(got), []byte(s.csrfToken(sess)))
}

// adminOnly answers 404 to anyone but a site administrator.
func (s *server) adminOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r, sess := s.withSession(r)
		if sess == nil || !sess.user.Admin {
			s.notFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "private, no-store")
		h.ServeHTTP(w, r)
	})
}

// loginLimiter slows password guessing on every path that checks a
// password (web sign-in, git over HTTP, the password change form): per
// client address and per account, a burst of attempts, then one every
// loginEvery. An attempt takes its tokens before the password is checked
// (so that concurrent guesses cannot all pass the check), and gives them
// back if it succeeds or if the password could not be judged (a
// database outage is nobody's failed login).
//
// So that guesses from everywhere cannot lock the real user out of their
// account, the account's limit does not apply from an address the user
// has signed in from recently: a flood of guesses spends the account's
// tokens, not the ones of the places its owner signs in from.
//
// The limiters and trusted addresses of the most recent keys are kept
// (bounded memory); several instances each keep their own. A
// loginLimiter is safe for concurrent use.
type loginLimiter struct {
	buckets *lru.Cache[string, *loginBucket]
	trusted *lru.Cache[string, time.Time] // "account|address" → last success
}

// loginBucket is one key's limit: its failures spend the limiter's
// tokens; attempts under way hold one each until they end.
type loginBucket struct {
	mu       sync.Mutex // guards lim's use and inflight
	lim      *rate.Limiter
	inflight int
}

const (
	loginBurst = 10
	loginEvery = 6 * time.Second
	// loginTrust is how long an address a user signed in from stays
	// exempt from their account's limit.
	loginTrust = 30 * 24 * time.Hour
)

func newLoginLimiter() *loginLimiter {
	c, _ := lru.New[string, *loginBucket](10000)
	t, _ := lru.New[string, time.Time](10000)
	return &loginLimiter{buckets: c, trusted: t}
}

func (l *loginLimiter) bucket(key string) *loginBucket {
	b, found := l.buckets.Get(key)
	if !found {
		b = &loginBucket{lim: rate.NewLimiter(rate.Every(loginEvery), loginBurst)}
		if prev, ok, _ := l.buckets.PeekOrAdd(key, b); ok {
			b = prev
		}
	}
	return b
}

// loginAttempt is one attempt's hold on its buckets.
type loginAttempt struct {
	l             *loginLimiter
	account, addr string
	held          []*loginBucket
}

// begin starts an attempt for account ("" for a token login, which
// guesses no account's password) from addr. It returns false, holding
// nothing, when either limit has no attempt left once the attempts under
// way are counted.
func (l *loginLimiter) begin(addr, account string) (*loginAttempt, bool) {
	account = strings.ToLower(account)
	keys := []string{"ip:" + addr}
	if account != "" && !l.isTrusted(account, addr) {
		keys = append(keys, "user:"+account)
	}
	a := &loginAttempt{l: l, account: account, addr: addr}
	now := time.Now()
	for _, k := range keys {
		b := l.bucket(k)
		b.mu.Lock()
		ok := b.lim.TokensAt(now)-float64(b.inflight) >= 1
		if ok {
			b.inflight++
		}
		b.mu.Unlock()
		if !ok {
			a.end(false)
			return nil, false
		}
		a.held = append(a.held, b)
	}
	return a, true
}

func (l *loginLimiter) isTrusted(account, addr string) bool {
	at, ok := l.trusted.Get(account + "|" + addr)
	return ok && time.Since(at) < loginTrust
}

// failed spends a token of each bucket.
func (a *loginAttempt) failed() { a.end(true) }

// succeeded spends nothing and trusts the address for the account.
func (a *loginAttempt) succeeded() {
	a.end(false)
	if a.account != "" {
		a.l.trusted.Add(a.account+"|"+a.addr, time.Now())
	}
}

// undecided spends nothing: the password was not judged.
func (a *loginAttempt) undecided() { a.end(false) }

func (a *loginAttempt) end(spend bool) {
	now := time.Now()
	for _, b := range a.held {
		b.mu.Lock()
		b.inflight--
		if spend {
			b.lim.ReserveN(now, 1) // into debt if need be: later attempts wait longer
		}
		b.mu.Unlock()
	}
	a.held = nil
}

// localPath accepts a redirect target only within this site: printable
// ASCII without backslashes (browsers read "\" as "/", and drop tabs and
// newlines, so "/\tevil.example" was "//evil.example" to them), no
// scheme, host or user, and a path that, cleaned, starts with one "/".
// It returns the cleaned path and query, or "/".
func localPath(p string) string {
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x21 || c > 0x7e || c == '\\' {
			return "/"
		}
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" ||
		!strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") {
		return "/"
	}
	clean := path.Clean(u.Path)
	if strings.HasSuffix(u.Path, "/") && clean != "/" {
		clean += "/"
	}
	if !strings.HasPrefix(clean, "/") || strings.HasPrefix(clean, "//") {
		return "/"
	}
	u.Path, u.RawPath, u.Fragment = clean, "", ""
	return u.RequestURI()
}
