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
	"time"

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

func (s *site) sign(parts ...string) string {
	m := hmac.New(sha256.New, s.key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// startSession sets the session cookie of u.
func (s *site) startSession(w http.ResponseWriter, r *http.Request, u *forge.User) {
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

func (s *site) endSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: s.secure(r), SameSite: http.SameSiteLaxMode})
}

func (s *site) secure(r *http.Request) bool {
	return r.TLS != nil || (s.cfg.baseURL != nil && s.cfg.baseURL.Scheme == "https")
}

// claims returns the user name, nonce and credential stamp of r's session
// cookie, if its signature holds and it has not expired. It reads no
// database: session checks that the user still exists with that stamp.
func (s *site) claims(r *http.Request) (name, nonce, stamp string, ok bool) {
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
func (s *site) session(r *http.Request) *session {
	if v, ok := r.Context().Value(sessionKey{}).(*session); ok {
		return v
	}
	name, nonce, stamp, ok := s.claims(r)
	if !ok {
		return nil
	}
	u, err := s.forge.Meta.User(r.Context(), name)
	if err != nil || u.Disabled || !hmac.Equal([]byte(u.Stamp), []byte(stamp)) {
		return nil
	}
	return &session{user: u, nonce: nonce}
}

// withSession reads the session once and keeps it in the context.
func (s *site) withSession(r *http.Request) (*http.Request, *session) {
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
func (s *site) csrfToken(sess *session) string {
	if sess == nil {
		return ""
	}
	return s.sign("csrf", sess.nonce)
}

// checkCSRF verifies a signed-in form post. Cross-origin posts are
// already refused by http.CrossOriginProtection (Sec-Fetch-Site and
// Origin); the token covers browsers that send neither.
func (s *site) checkCSRF(r *http.Request, sess *session) bool {
	got := r.PostFormValue(csrfField)
	return sess != nil && got != "" && hmac.Equal([]byte(got), []byte(s.csrfToken(sess)))
}

// adminOnly answers 404 to anyone but a site administrator.
func (s *site) adminOnly(h http.Handler) http.Handler {
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
