package main

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/forgekit/forgekit/forge"
)

type adminData struct {
	Users       []forge.User
	Maintenance []forge.MaintainResult
	Slow        time.Duration
	Stats       string
	NewPassword string
	ProfileURL  string
}

func (s *adminPages) adminHome(w http.ResponseWriter, r *http.Request) {
	s.adminOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, sess := s.withSession(r)
		s.adminPage(w, r, sess, "", "", "")
	})).ServeHTTP(w, r)
}

func (s *adminPages) adminPage(w http.ResponseWriter, r *http.Request, sess *session, flash, pass, profileURL string) {
	users, err := s.forge.Meta.Users(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d := adminData{Users: users, Maintenance: s.maint.Results(), Slow: s.cfg.slowThreshold, NewPassword: pass, ProfileURL: profileURL}
	d.Stats = s.stats()
	s.render(w, r, sess, http.StatusOK, "admin", &page{Title: "Administration", Flash: flash, Data: d})
}

func (s *adminPages) adminPost(w http.ResponseWriter, r *http.Request) {
	r, sess, ok := s.post(w, r)
	if !ok {
		return
	}
	if !sess.user.Admin {
		s.notFound(w, r)
		return
	}
	switch r.PostFormValue("action") {
	case "adduser":
		pass := randomPassword()
		u, err := s.forge.CreateUser(r.Context(), strings.TrimSpace(r.PostFormValue("name")), strings.TrimSpace(r.PostFormValue("email")), pass, r.PostFormValue("admin") != "")
		if err != nil {
			s.adminPage(w, r, sess, strings.TrimPrefix(err.Error(), "forge: "), "", "")
			return
		}
		s.adminPage(w, r, sess, "Created "+u.Name+".", pass, "")
	case "profile":
		p := localPath(r.PostFormValue("path"))
		sep := "?"
		if strings.Contains(p, "?") {
			sep = "&"
		}
		path, _, _ := strings.Cut(p, "?")
		tok := s.profiler.Token(sess.user.Name, path, 10*time.Minute)
		s.adminPage(w, r, sess, "", "", s.baseURL(r)+p+sep+"__profile__="+url.QueryEscape(tok))
	default:
		http.Error(w, "unknown action", http.StatusBadRequest)
	}
}
