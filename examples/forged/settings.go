package main

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/forgekit/forgekit/forge"
)

type repoSettingsData struct {
	Info          *forge.RepoInfo
	Collaborators []forge.Collaborator
	Protected     []string
	Webhooks      []forge.Webhook
}

func (s *repoSettings) repoSettings(w http.ResponseWriter, r *http.Request) {
	r, sess, rv, ok := s.openRepo(w, r, forge.ActionAdmin, "settings")
	if !ok {
		return
	}
	s.repoSettingsPage(w, r, sess, rv, http.StatusOK, "", "")
}

func (s *repoSettings) repoSettingsPage(w http.ResponseWriter, r *http.Request, sess *session, rv *repoView, status int, flash, errMsg string) {
	ctx := r.Context()
	d := repoSettingsData{Info: rv.Info}
	var err error
	if d.Collaborators, err = s.forge.Meta.Collaborators(ctx, rv.Info.ID); err == nil {
		if d.Protected, err = s.forge.Meta.ProtectedBranches(ctx, rv.Info.ID); err == nil {
			d.Webhooks, err = s.forge.Meta.Webhooks(ctx, rv.Info.ID)
		}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, sess, status, "repo_settings", &page{Title: "Settings · " + rv.Info.Owner + "/" + rv.Info.Name, Repo: rv, Flash: flash, Error: errMsg, Data: d})
}

// repoSettingsPost applies one settings form. Changes that alter what
// pages show (visibility, description, default branch, name, deletion)
// invalidate the repository's fragments and the explore lists.
func (s *repoSettings) repoSettingsPost(w http.ResponseWriter, r *http.Request) {
	r, _, ok := s.post(w, r)
	if !ok {
		return
	}
	r, sess, rv, ok := s.openRepo(w, r, forge.ActionAdmin, "settings")
	if !ok {
		return
	}
	ctx := r.Context()
	f := s.forge
	id := rv.Info.ID
	bad := func(msg string) { s.repoSettingsPage(w, r, sess, rv, http.StatusUnprocessableEntity, "", msg) }
	var err error
	switch r.PostFormValue("action") {
	case "general":
		info := *rv.Info
		info.Description = strings.TrimSpace(r.PostFormValue("description"))
		info.Private = r.PostFormValue("private") != ""
		if branch := strings.TrimSpace(r.PostFormValue("default_branch")); branch != info.DefaultBranch {
			// HEAD moves with it: clones, pages and archives agree.
			err = s.forge.SetDefaultBranch(ctx, &info, branch)
			if errors.Is(err, forge.ErrInvalidName) || errors.Is(err, forge.ErrNoBranch) {
				bad("There is no branch " + strconv.Quote(branch) + ".")
				return
			}
			if err != nil {
				break
			}
			s.browsers.RefsChanged(rv.dir)
			s.code.mark(ctx, id) // the index follows the default branch
		}
		err = f.UpdateRepo(ctx, &info)
		if err == nil && info.Private && !rv.Info.Private {
			s.purger.purge(ctx, info.ID, "made private")
		}
	case "collab":
		err = f.SetCollaborator(ctx, id, strings.TrimSpace(r.PostFormValue("user")), forge.Level(r.PostFormValue("level")))
		if err != nil {
			bad(strings.TrimPrefix(err.Error(), "forge: "))
			return
		}
	case "uncollab":
		err = f.RemoveCollaborator(ctx, id, r.PostFormValue("user"))
	case "protect":
		err = f.ProtectBranch(ctx, id, strings.TrimSpace(r.PostFormValue("pattern")))
		if errors.Is(err, forge.ErrInvalidName) {
			bad("A branch name or pattern is needed, without spaces.")
			return
		}
	case "unprotect":
		err = f.UnprotectBranch(ctx, id, r.PostFormValue("pattern"))
	case "hook":
		_, err = f.AddWebhook(ctx, id, r.PostFormValue("url"), r.PostFormValue("secret"))
		if errors.Is(err, forge.ErrBadWebhook) {
			bad("A webhook needs an http or https URL.")
			return
		}
	case "unhook":
		hid, _ := strconv.ParseInt(r.PostFormValue("id"), 10, 64)
		err = f.DeleteWebhook(ctx, id, hid)
	case "rename":
		name := strings.TrimSpace(r.PostFormValue("name"))
		info, err := s.forge.RenameRepo(ctx, rv.Info.Owner, rv.Info.Name, name)
		switch {
		case errors.Is(err, forge.ErrInvalidName):
			bad(strconv.Quote(name) + " is not a valid name.")
			return
		case errors.Is(err, forge.ErrExists):
			bad(rv.Info.Owner + " already has a repository named " + strconv.Quote(name) + ".")
			return
		case err != nil:
			s.fail(w, r, err)
			return
		}
		// The old name's pages go everywhere: a repository made under it
		// later must not show this one's.
		s.purger.purge(ctx, id, "renamed")
		s.forget(rv)
		s.cache.Invalidate(ctx, "repo:"+rv.key, "refs:"+rv.key, "explore")
		redirect(w, r, "/"+info.Owner+"/"+info.Name+"/settings")
		return
	case "delete":
		if r.PostFormValue("confirm") != rv.Info.Name {
			bad("Type the repository's name to confirm.")
			return
		}
		if err = s.forge.DeleteRepo(ctx, rv.Info.Owner, rv.Info.Name); err == nil {
			s.purger.purge(ctx, rv.Info.ID, "deleted")
			s.code.mark(ctx, id) // gone: forgotten
			s.forget(rv)
			s.cache.Invalidate(ctx, "repo:"+rv.key, "refs:"+rv.key, "explore")
			redirect(w, r, "/"+rv.Info.Owner)
			return
		}
	default:
		http.Error(w, "unknown action", http.StatusBadRequest)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.cache.Invalidate(ctx, "repo:"+rv.key, "refs:"+rv.key, "explore")
	redirect(w, r, rv.Base+"/settings")
}

// forget drops what this instance keeps of a repository under its
// current name, once the name no longer means it.
func (s *repoSettings) forget(rv *repoView) {
	s.browsers.Forget(rv.dir)
}
