package main

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/forgekit/forgekit/forge"
)

func (s *accountPages) loginForm(w http.ResponseWriter, r *http.Request) {
	r, sess := s.withSession(r)
	if sess != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.render(w, r, nil, http.StatusOK, "login", &page{Title: "Sign in", Data: loginData{Next: localPath(r.URL.Query().Get("next"))}})
}

type loginData struct{ Name, Next string }

func (s *accountPages) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	name, pass := r.PostFormValue("name"), r.PostFormValue("password")
	data := loginData{Name: name, Next: localPath(r.PostFormValue("next"))}
	a, ok := s.logins.begin(s.clientIP(r), name)
	if !ok {
		w.Header().Set("Retry-After", fmt.Sprint(int(loginEvery.Seconds())))
		s.render(w, r, nil, http.StatusTooManyRequests, "login", &page{Title: "Sign in", Error: "Too many attempts; wait a few seconds and try again.", Data: data})
		return
	}
	u, err := s.forge.CheckPassword(r.Context(), name, pass)
	if err != nil {
		if !errors.Is(err, forge.ErrBadCredentials) {
			// Not the visitor's failure: nothing counted, try later.
			a.undecided()
			s.log.Error("login", "id", requestID(r), "err", err)
			w.Header().Set("Retry-After", "5")
			s.render(w, r, nil, http.StatusServiceUnavailable, "login", &page{Title: "Sign in", Error: "Signing in is not possible right now; try again in a moment.", Data: data})
			return
		}
		a.failed()
		s.render(w, r, nil, http.StatusUnauthorized, "login", &page{Title: "Sign in", Error: "Wrong user name or password.", Data: data})
		return
	}
	a.succeeded()
	s.startSession(w, r, u)
	redirect(w, r, data.Next)
}

type registerData struct {
	Name, Email string
}

// registerForm serves /register: the sign-up form, when registration
// is open (else there is no such page).
func (s *accountPages) registerForm(w http.ResponseWriter, r *http.Request) {
	r, sess := s.withSession(r)
	if !s.cfg.registration {
		s.notFound(w, r)
		return
	}
	if sess != nil {
		redirect(w, r, "/")
		return
	}
	s.render(w, r, nil, http.StatusOK, "register", &page{Title: "Create an account", Data: registerData{}})
}

// register creates an account and signs it in. Every attempt, made or
// refused, spends one of the address's sign-in attempts: sign-ups come
// no faster than password guesses.
func (s *accountPages) register(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.registration {
		s.notFound(w, r)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	d := registerData{Name: strings.TrimSpace(r.PostFormValue("name")), Email: strings.TrimSpace(r.PostFormValue("email"))}
	pass := r.PostFormValue("password")
	fail := func(status int, msg string) {
		s.render(w, r, nil, status, "register", &page{Title: "Create an account", Error: msg, Data: d})
	}
	a, ok := s.logins.begin(s.clientIP(r), "")
	if !ok {
		w.Header().Set("Retry-After", fmt.Sprint(int(loginEvery.Seconds())))
		fail(http.StatusTooManyRequests, "Too many attempts; wait a few seconds and try again.")
		return
	}
	if pass != r.PostFormValue("confirm") {
		a.failed()
		fail(http.StatusUnprocessableEntity, "The passwords differ.")
		return
	}
	u, err := s.forge.CreateUser(r.Context(), d.Name, d.Email, pass, false)
	a.failed() // spent either way
	switch {
	case errors.Is(err, forge.ErrUserExists):
		fail(http.StatusUnprocessableEntity, "That name is taken.")
		return
	case errors.Is(err, forge.ErrInvalidName):
		fail(http.StatusUnprocessableEntity, strings.TrimPrefix(err.Error(), "forge: "))
		return
	case err != nil && strings.Contains(err.Error(), "password"):
		fail(http.StatusUnprocessableEntity, strings.TrimPrefix(err.Error(), "forge: "))
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	s.log.Info("user registered", "id", requestID(r), "user", u.Name, "addr", s.clientIP(r))
	s.startSession(w, r, u)
	redirect(w, r, "/"+u.Name)
}

func (s *accountPages) logout(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.post(w, r); !ok {
		return
	}
	s.endSession(w, r)
	redirect(w, r, "/")
}

type newData struct {
	Name, Description string
	Private           bool
}

func (s *accountPages) newForm(w http.ResponseWriter, r *http.Request) {
	r, sess, ok := s.requireLogin(w, r)
	if !ok {
		return
	}
	s.render(w, r, sess, http.StatusOK, "new", &page{Title: "New repository", Data: newData{}})
}

func (s *accountPages) newRepo(w http.ResponseWriter, r *http.Request) {
	r, sess, ok := s.post(w, r)
	if !ok {
		return
	}
	d := newData{Name: strings.TrimSpace(r.PostFormValue("name")), Description: strings.TrimSpace(r.PostFormValue("description")), Private: r.PostFormValue("private") != ""}
	info, err := s.forge.CreateRepo(r.Context(), sess.user.Name, d.Name, d.Private, d.Description)
	if err != nil {
		msg := err.Error()
		switch {
		case errors.Is(err, forge.ErrExists):
			msg = "You already have a repository called " + d.Name + "."
		case errors.Is(err, forge.ErrInvalidName):
			msg = strings.TrimPrefix(msg, "forge: ")
		default:
			s.fail(w, r, err)
			return
		}
		s.render(w, r, sess, http.StatusUnprocessableEntity, "new", &page{Title: "New repository", Error: msg, Data: d})
		return
	}
	s.cache.Invalidate(r.Context(), "explore")
	redirect(w, r, "/"+info.Owner+"/"+info.Name)
}

type settingsData struct {
	Tokens   []forge.TokenInfo
	NewToken string
	Keys     []forge.SSHKey
	SSH      bool // git over SSH is served (-ssh-addr)
}

func (s *accountPages) settings(w http.ResponseWriter, r *http.Request) {
	r, sess, ok := s.requireLogin(w, r)
	if !ok {
		return
	}
	flash := ""
	if r.URL.Query().Get("changed") != "" {
		flash = "Password changed. Your other sessions have ended."
	}
	s.settingsPage(w, r, sess, http.StatusOK, flash, "", "")
}

func (s *accountPages) settingsPage(w http.ResponseWriter, r *http.Request, sess *session, status int, flash, errMsg, token string) {
	toks, err := s.forge.Meta.Tokens(r.Context(), sess.user.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	keys, err := s.forge.Meta.SSHKeys(r.Context(), sess.user.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, sess, status, "settings", &page{Title: "Settings", Flash: flash, Error: errMsg,
		Data: settingsData{Tokens: toks, NewToken: token, Keys: keys, SSH: s.cfg.sshAddr != ""}})
}

func (s *accountPages) settingsPost(w http.ResponseWriter, r *http.Request) {
	r, sess, ok := s.post(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	switch r.PostFormValue("action") {
	case "password":
		// A stolen session must not make a password oracle.
		a, ok := s.logins.begin(s.clientIP(r), sess.user.Name)
		if !ok {
			s.settingsPage(w, r, sess, http.StatusTooManyRequests, "", "Too many attempts; wait a few seconds.", "")
			return
		}
		if _, err := s.forge.CheckPassword(ctx, sess.user.Name, r.PostFormValue("current")); err != nil {
			if !errors.Is(err, forge.ErrBadCredentials) {
				a.undecided()
				s.fail(w, r, err)
				return
			}
			a.failed()
			s.settingsPage(w, r, sess, http.StatusForbidden, "", "The current password is wrong.", "")
			return
		}
		a.succeeded()
		if err := s.forge.SetPassword(ctx, sess.user.Name, r.PostFormValue("new")); err != nil {
			s.settingsPage(w, r, sess, http.StatusUnprocessableEntity, "", strings.TrimPrefix(err.Error(), "forge: "), "")
			return
		}
		// Every session of the user ended with the old stamp; this
		// browser gets a new one.
		u, err := s.forge.Meta.User(ctx, sess.user.Name)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.startSession(w, r, u)
		redirect(w, r, "/settings?changed=1")
	case "token":
		ttl, err := time.ParseDuration(r.PostFormValue("expires"))
		if err != nil || ttl < 0 {
			ttl = 30 * 24 * time.Hour
		}
		name := strings.TrimSpace(r.PostFormValue("name"))
		if name == "" || len(name) > 100 {
			s.settingsPage(w, r, sess, http.StatusUnprocessableEntity, "", "A token needs a name of at most 100 characters.", "")
			return
		}
		tok, err := s.forge.CreateToken(ctx, sess.user.Name, name, forge.Scope(r.PostFormValue("scope")), ttl)
		if err != nil {
			s.settingsPage(w, r, sess, http.StatusUnprocessableEntity, "", strings.TrimPrefix(err.Error(), "forge: "), "")
			return
		}
		// The token is in this response only: never cached.
		s.settingsPage(w, r, sess, http.StatusOK, "", "", tok)
	case "revoke":
		if err := s.forge.RevokeToken(ctx, sess.user.Name, r.PostFormValue("name")); err != nil && !errors.Is(err, forge.ErrNotFound) {
			s.fail(w, r, err)
			return
		}
		redirect(w, r, "/settings")
	case "key":
		k, err := s.forge.AddSSHKey(ctx, sess.user.Name, r.PostFormValue("name"), r.PostFormValue("key"), r.PostFormValue("access") == "read")
		if err != nil {
			if !errors.Is(err, forge.ErrBadKey) && !errors.Is(err, forge.ErrKeyExists) {
				s.fail(w, r, err)
				return
			}
			s.settingsPage(w, r, sess, http.StatusUnprocessableEntity, "", strings.TrimPrefix(err.Error(), "forge: "), "")
			return
		}
		s.settingsPage(w, r, sess, http.StatusOK, "Added the key "+k.Name+" ("+k.Fingerprint+").", "", "")
	case "removekey":
		if err := s.forge.RemoveSSHKey(ctx, sess.user.Name, r.PostFormValue("fingerprint")); err != nil && !errors.Is(err, forge.ErrNotFound) {
			s.fail(w, r, err)
			return
		}
		redirect(w, r, "/settings")
	default:
		http.Error(w, "unknown action", http.StatusBadRequest)
	}
}
