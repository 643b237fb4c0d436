package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/forgekit/forgekit/forge"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
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

// adminForm is post for the administrator's forms: anyone else gets
// 404, as for the pages.
func (s *adminPages) adminForm(w http.ResponseWriter, r *http.Request) (*http.Request, *session, bool) {
	r, sess, ok := s.post(w, r)
	if ok && !sess.user.Admin {
		s.notFound(w, r)
		return r, nil, false
	}
	return r, sess, ok
}

func (s *adminPages) adminPost(w http.ResponseWriter, r *http.Request) {
	r, sess, ok := s.adminForm(w, r)
	if !ok {
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

// The jobs page: the queue by kind and state, the jobs of one state
// (and kind), and their retry and cancel buttons. (River's own UI,
// riverqueue.com/riverui, would need JavaScript and a second asset
// pipeline; this page is a table, like the rest of the admin pages.)

// jobsShown are the states the page offers, the ones needing attention
// first.
var jobsShown = []rivertype.JobState{
	rivertype.JobStateDiscarded, rivertype.JobStateRetryable, rivertype.JobStateRunning,
	rivertype.JobStateAvailable, rivertype.JobStateScheduled, rivertype.JobStateCancelled, rivertype.JobStateCompleted,
}

type jobCount struct {
	Kind  string
	State rivertype.JobState
	N     int64
}

type jobKindRow struct {
	Kind   string
	Counts []jobCount
}

type jobRow struct {
	ID                  int64
	Kind                string
	Attempt             int
	MaxAttempts         int
	Args                string
	Origin              string
	At                  time.Time
	LastError           string
	CanRetry, CanCancel bool
}

type jobsData struct {
	States []rivertype.JobState
	Kinds  []jobKindRow
	Oldest time.Duration
	State  rivertype.JobState
	Kind   string
	Jobs   []jobRow
}

func (s *adminPages) jobs(w http.ResponseWriter, r *http.Request) {
	_, sess := s.withSession(r)
	s.jobsPage(w, r, sess, "")
}

func (s *adminPages) jobsPage(w http.ResponseWriter, r *http.Request, sess *session, flash string) {
	ctx := r.Context()
	d := jobsData{States: jobsShown, State: rivertype.JobState(r.FormValue("state")), Kind: strings.TrimSpace(r.FormValue("kind"))}
	if !slices.Contains(jobsShown, d.State) {
		d.State = rivertype.JobStateDiscarded
	}
	counts, err := s.queue.counts(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for kind, byState := range counts {
		row := jobKindRow{Kind: kind}
		for _, st := range jobsShown {
			row.Counts = append(row.Counts, jobCount{Kind: kind, State: st, N: byState[st]})
		}
		d.Kinds = append(d.Kinds, row)
	}
	slices.SortFunc(d.Kinds, func(a, b jobKindRow) int { return strings.Compare(a.Kind, b.Kind) })
	d.Oldest = s.queue.oldestWaiting(ctx).Round(time.Second)
	params := river.NewJobListParams().States(d.State).OrderBy(river.JobListOrderByID, river.SortOrderDesc).First(100)
	if d.Kind != "" {
		params = params.Kinds(d.Kind)
	}
	res, err := s.queue.client.JobList(ctx, params)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, j := range res.Jobs {
		row := jobRow{ID: j.ID, Kind: j.Kind, Attempt: j.Attempt, MaxAttempts: j.MaxAttempts, Args: truncateLine(string(j.EncodedArgs), 200), At: j.ScheduledAt,
			CanRetry:  j.State != rivertype.JobStateRunning && j.State != rivertype.JobStateAvailable,
			CanCancel: j.FinalizedAt == nil}
		if j.FinalizedAt != nil {
			row.At = *j.FinalizedAt
		}
		if n := len(j.Errors); n > 0 {
			row.LastError = truncateLine(j.Errors[n-1].Error, 200)
		}
		var meta jobMeta
		json.Unmarshal(j.Metadata, &meta)
		row.Origin = meta.Origin
		d.Jobs = append(d.Jobs, row)
	}
	s.render(w, r, sess, http.StatusOK, "admin_jobs", &page{Title: "Jobs", Flash: flash, Data: d})
}

func (s *adminPages) jobsPost(w http.ResponseWriter, r *http.Request) {
	r, sess, ok := s.adminForm(w, r)
	if !ok {
		return
	}
	id, err := jobID(r.PostFormValue("id"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var j *rivertype.JobRow
	switch action := r.PostFormValue("action"); action {
	case "retry":
		j, err = s.queue.client.JobRetry(r.Context(), id)
	case "cancel":
		j, err = s.queue.client.JobCancel(r.Context(), id)
	default:
		http.Error(w, "unknown action", http.StatusBadRequest)
		return
	}
	switch {
	case errors.Is(err, rivertype.ErrNotFound):
		s.jobsPage(w, r, sess, fmt.Sprintf("There is no job %d.", id))
	case err != nil:
		s.fail(w, r, err)
	default:
		s.jobsPage(w, r, sess, fmt.Sprintf("Job %d (%s) is now %s.", j.ID, j.Kind, j.State))
	}
}
