package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/slowlog"
	"github.com/forgekit/forgekit/timebox"
)

// The durable queue of the work that outlives a request, on River
// (riverqueue.com). Everything a push or a settings change leaves for
// later is a job: what is queued when the process stops (a crash, a
// restart, an upgrade) is done by the next process that runs the queue,
// on this machine or another sharing the database. The queue lives in
// DATA/queue.db (SQLite, one connection, as River's SQLite driver
// asks), or in the PostgreSQL database of -db, where any number of
// instances share it.
//
// Every job is idempotent (run twice, it does the work once) and is
// retried with backoff until it succeeds or has used its attempts (a
// delivery: the Deliverer's Attempts; the others: River's 25); then
// it stays, visible as discarded, in /admin/jobs and forged jobs list.
// Each runs in a time box, under the slow-request watchdog, counting its
// own work (queries, git runs), and names the request that queued it
// (slowlog.Origin) in its reports and its log line.
//
// Non-goals: jobs are not ordered (two pushes' webhook deliveries may
// arrive in either order, as GitHub's may); no job kind is rate-limited
// per receiver.

// The kinds of job.

// pushArgs is what a push leaves for after its answer: the repository's
// size and its webhook deliveries (forge.Forge.FinishPush), then the
// jobs the push calls for (queuePushWork).
type pushArgs struct {
	forge.PushWork
}

func (pushArgs) Kind() string { return "push" }

// deliveryArgs is one recorded webhook delivery (forge.Deliverer.Attempt).
type deliveryArgs struct {
	DeliveryID int64 `json:"delivery_id"`
}

func (deliveryArgs) Kind() string { return "webhook_delivery" }

// purgeArgs asks one front cache to drop a repository's objects.
type purgeArgs struct {
	RepoID int64  `json:"repo_id"`
	Cache  string `json:"cache"`
	Why    string `json:"why"`
}

func (purgeArgs) Kind() string { return "purge" }

// purgeRepoArgs asks every front cache of the server (-purge) to drop a
// repository's objects: what forged's commands queue, as they do not
// know the caches. Its job queues a purge per cache.
type purgeRepoArgs struct {
	RepoID int64  `json:"repo_id"`
	Why    string `json:"why"`
}

func (purgeRepoArgs) Kind() string { return "purge_repo" }

// indexArgs brings a repository's code index to its default branch.
// After, if set, is the id of an index job of the same repository that
// was running when this one was queued: this one waits for it to end.
type indexArgs struct {
	RepoID int64 `json:"repo_id"`
	After  int64 `json:"after,omitempty"`
}

func (indexArgs) Kind() string { return "code_index" }

// archiveArgs makes the archives of a new tag before anyone asks.
type archiveArgs struct {
	RepoID int64  `json:"repo_id"`
	Tag    string `json:"tag"`
}

func (archiveArgs) Kind() string { return "archive" }

// lastCommitsArgs finds the last commits of the root directory's
// entries at a repository's default branch, so that the first view
// after a push shows them at once. The walk starts from what an earlier
// one found (forge.LastCommitCache), and its results are files that
// every instance sharing the data directory reads.
type lastCommitsArgs struct {
	RepoID int64 `json:"repo_id"`
}

func (lastCommitsArgs) Kind() string { return "last_commits" }

// maintainArgs repacks one repository (forge.Maintainer.Run).
type maintainArgs struct {
	RepoID int64 `json:"repo_id"`
}

func (maintainArgs) Kind() string { return "maintain" }

// maintainTickArgs looks at the next slice of repositories and queues
// the maintenance of those that need it (forge.Maintainer.Due).
type maintainTickArgs struct{}

func (maintainTickArgs) Kind() string { return "maintain_tick" }

// Time limits of the kinds, each a time box (its git processes killed
// at the end) within River's own timeout, jobGrace longer.
const (
	pushLimit     = time.Minute
	deliveryLimit = forge.DefaultHookWait + 5*time.Second // the client's own limit first
	purgeLimit    = 10 * time.Second
	indexLimit    = 10 * time.Minute
	archiveLimit  = forge.DefaultArchiveTimeout
	maintainLimit = forge.DefaultMaintainLimit
	tickLimit     = time.Minute
	jobGrace      = 5 * time.Second
)

// slowQueue is the queue of the long jobs (indexing, archives,
// maintenance): two at a time per process, so that they never hold up
// a push's deliveries and purges.
const slowQueue = "slow"

// untilRun makes a job unique (by kind and arguments) among those not
// yet run: queued again while one waits or runs, it is not added; once
// it has run, it may be again. (River requires running among them.)
var untilRun = river.UniqueOpts{ByArgs: true, ByState: []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
	rivertype.JobStateScheduled, rivertype.JobStateRetryable,
}}

// worker is a kind's River worker: its function, run in a time box of
// limit.
type worker[T river.JobArgs] struct {
	river.WorkerDefaults[T]
	limit time.Duration
	work  func(context.Context, *river.Job[T]) error
}

func (w *worker[T]) Timeout(*river.Job[T]) time.Duration { return w.limit + jobGrace }

func (w *worker[T]) Work(ctx context.Context, job *river.Job[T]) error {
	return timebox.Box{Name: job.Kind + " job " + strconv.FormatInt(job.ID, 10), Limit: w.limit}.Do(ctx, func(ctx context.Context) error {
		return w.work(ctx, job)
	})
}

func addWorker[T river.JobArgs](ws *river.Workers, limit time.Duration, work func(context.Context, *river.Job[T]) error) {
	river.AddWorker(ws, &worker[T]{limit: limit, work: work})
}

// backoff is River's RetryPolicy for forged's jobs: the first retry
// after base, doubling per failed attempt (at most 1024 x base).
type backoff struct{ base time.Duration }

func (b backoff) NextRetry(job *rivertype.JobRow) time.Time {
	n := max(len(job.Errors), 1)
	return time.Now().Add(b.base << min(n-1, 10))
}

// queue is forged's River client, its database and its counters. It is
// safe for concurrent use.
type queue struct {
	client   *river.Client[*sql.Tx]
	db       *sql.DB
	hooks    *forge.Deliverer
	log      *slog.Logger
	watchdog *slowlog.Watchdog

	done *prometheus.CounterVec   // jobs worked, by kind and outcome
	took *prometheus.HistogramVec // their time, by kind
}

// openQueue opens the queue's database, migrates River's tables and
// makes the client that runs s's jobs; start starts its workers.
func openQueue(ctx context.Context, s *server, retry time.Duration) (*queue, error) {
	driver, db, err := openQueueDB(ctx, s.cfg.data, s.cfg.db)
	if err != nil {
		return nil, err
	}
	q := &queue{db: db, log: s.log, watchdog: s.watchdog, hooks: s.hooks,
		done: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "forged_jobs_worked_total",
			Help: "Job attempts, by kind and outcome (ok, error: to be retried, discarded: failed for good, snoozed: waiting for another).",
		}, []string{"kind", "outcome"}),
		took: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "forged_job_duration_seconds",
			Help:    "Time of a job attempt, by kind.",
			Buckets: []float64{.001, .005, .025, .1, .5, 2.5, 10, 60, 600},
		}, []string{"kind"}),
	}
	ws := river.NewWorkers()
	addWorker(ws, pushLimit, func(ctx context.Context, j *river.Job[pushArgs]) error {
		if err := s.forge.FinishPush(ctx, j.Args.PushWork); err != nil {
			return err
		}
		ev := j.Args.Event
		ev.RepoID = j.Args.RepoID
		return s.queuePushWork(ctx, ev)
	})
	addWorker(ws, deliveryLimit, func(ctx context.Context, j *river.Job[deliveryArgs]) error {
		return s.hooks.Attempt(ctx, j.Args.DeliveryID)
	})
	addWorker(ws, purgeLimit, func(ctx context.Context, j *river.Job[purgeArgs]) error {
		return s.purger.send(ctx, j.Args.Cache, j.Args.RepoID)
	})
	addWorker(ws, purgeLimit, func(ctx context.Context, j *river.Job[purgeRepoArgs]) error {
		return s.purger.purge(ctx, j.Args.RepoID, j.Args.Why)
	})
	addWorker(ws, indexLimit, func(ctx context.Context, j *river.Job[indexArgs]) error {
		if j.Args.After != 0 {
			prev, err := q.client.JobGet(ctx, j.Args.After)
			if err == nil && prev.FinalizedAt == nil {
				return river.JobSnooze(250 * time.Millisecond)
			}
		}
		return s.code.run(ctx, j.Args.RepoID)
	})
	addWorker(ws, archiveLimit, func(ctx context.Context, j *river.Job[archiveArgs]) error {
		return s.prepareArchives(ctx, j.Args.RepoID, j.Args.Tag)
	})
	addWorker(ws, archiveLimit, func(ctx context.Context, j *river.Job[lastCommitsArgs]) error {
		return s.fillLastCommits(ctx, j.Args.RepoID)
	})
	addWorker(ws, maintainLimit+time.Minute, func(ctx context.Context, j *river.Job[maintainArgs]) error {
		return s.maintain(ctx, j.Args.RepoID)
	})
	addWorker(ws, tickLimit, func(ctx context.Context, _ *river.Job[maintainTickArgs]) error {
		return s.maintainDue(ctx)
	})
	q.client, err = river.NewClient(driver, &river.Config{
		// A producer fetches at most its free workers' worth of jobs per
		// fetch, and fetches at most every FetchCooldown: 10 workers
		// capped deliveries at 500 a second. Deliveries mostly wait on
		// receivers, so 32 cost little.
		Queues: map[string]river.QueueConfig{
			river.QueueDefault: {MaxWorkers: 32},
			slowQueue:          {MaxWorkers: 2},
		},
		Workers:     ws,
		RetryPolicy: backoff{base: retry},
		// A job of a process killed while it ran stays "running" until
		// the rescuer (every 30 s) finds it older than its kind's
		// timeout (at least this), and retries it: at least once,
		// across kill -9.
		JobTimeout:           deliveryLimit + jobGrace,
		RescueStuckJobsAfter: 2 * (deliveryLimit + jobGrace),
		Logger:               s.log,
		FetchCooldown:        20 * time.Millisecond,
		FetchPollInterval:    200 * time.Millisecond,
		// Every minute, the elected leader among the processes queues
		// the maintenance that is due (one tick however many run).
		PeriodicJobs: []*river.PeriodicJob{river.NewPeriodicJob(river.PeriodicInterval(time.Minute),
			func() (river.JobArgs, *river.InsertOpts) {
				return maintainTickArgs{}, &river.InsertOpts{Queue: slowQueue, UniqueOpts: untilRun}
			}, &river.PeriodicJobOpts{ID: "maintain_tick", RunOnStart: true})},
		Middleware: []rivertype.Middleware{
			river.JobInsertMiddlewareFunc(q.inserting),
			river.WorkerMiddlewareFunc(q.working),
		},
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("queue: %w", err)
	}
	return q, nil
}

// start starts the workers.
func (q *queue) start(ctx context.Context) error {
	if err := q.client.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return nil
}

// close stops the workers (a job running is given 10 s, then
// cancelled: its attempt fails and it is retried, here or by another
// process) and closes the database.
func (q *queue) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.client.Stop(ctx); err != nil {
		q.client.StopAndCancel(context.Background())
	}
	q.db.Close()
}

// jobMeta is what forged adds to a job's River metadata.
type jobMeta struct {
	Origin string `json:"origin,omitempty"` // the request (or job) that queued it
}

// inserting records, in each job queued, the request or job that
// queued it.
func (q *queue) inserting(ctx context.Context, many []*rivertype.JobInsertParams, inner func(context.Context) ([]*rivertype.JobInsertResult, error)) ([]*rivertype.JobInsertResult, error) {
	if origin := slowlog.Origin(ctx); origin != "" {
		for _, p := range many {
			m := map[string]any{}
			if len(p.Metadata) > 0 {
				json.Unmarshal(p.Metadata, &m)
			}
			m["origin"] = origin
			p.Metadata, _ = json.Marshal(m)
		}
	}
	return inner(ctx)
}

// working runs a job under the watchdog, as the work of its origin, and
// counts and logs its outcome.
func (q *queue) working(ctx context.Context, job *rivertype.JobRow, inner func(context.Context) error) error {
	var meta jobMeta
	json.Unmarshal(job.Metadata, &meta)
	ctx = slowlog.WithOrigin(ctx, meta.Origin)
	start := time.Now()
	var err error
	var work slowlog.Tally
	ran := false
	run := func(ctx context.Context) {
		ran = true
		err = inner(ctx)
		if w := slowlog.WorkFrom(ctx); w != nil {
			work = w.Tally()
		}
	}
	if q.watchdog != nil {
		q.watchdog.Do(ctx, "job "+job.Kind, run)
	}
	if !ran {
		run(slowlog.WithWork(ctx, &slowlog.Work{}))
	}
	d := time.Since(start)
	outcome, level := "ok", slog.LevelDebug
	var snooze *rivertype.JobSnoozeError
	switch {
	case errors.As(err, &snooze):
		outcome = "snoozed"
	case err != nil:
		outcome, level = "error", slog.LevelWarn
		if job.Attempt >= job.MaxAttempts {
			outcome, level = "discarded", slog.LevelError
		}
	}
	q.done.WithLabelValues(job.Kind, outcome).Inc()
	q.took.WithLabelValues(job.Kind).Observe(d.Seconds())
	attrs := []slog.Attr{slog.String("kind", job.Kind), slog.Int64("id", job.ID), slog.Int("attempt", job.Attempt),
		slog.String("outcome", outcome), slog.Duration("duration", d), slog.String("origin", meta.Origin)}
	attrs = append(attrs, workAttrs(work)...)
	if err != nil && snooze == nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	q.log.LogAttrs(ctx, level, "job", attrs...)
	return err
}

// The insertions, as the components ask for them.

// enqueuePush is forge.Forge.Enqueue.
func (q *queue) enqueuePush(ctx context.Context, w forge.PushWork) error {
	_, err := q.client.Insert(ctx, pushArgs{w}, nil)
	return err
}

// enqueueDelivery is forge.Deliverer.Enqueue: a delivery's tries are the
// Deliverer's Attempts, and a delivery queued again (a push job run
// twice) is not added while the first waits or runs.
func (q *queue) enqueueDelivery(ctx context.Context, id int64) error {
	attempts := q.hooks.Attempts
	if attempts <= 0 {
		attempts = forge.DefaultAttempts
	}
	_, err := q.client.Insert(ctx, deliveryArgs{DeliveryID: id}, &river.InsertOpts{MaxAttempts: attempts, UniqueOpts: untilRun})
	return err
}

// enqueuePurge is purger.enqueue.
func (q *queue) enqueuePurge(ctx context.Context, a purgeArgs) error {
	_, err := q.client.Insert(ctx, a, nil)
	return err
}

// indexParams are the insertion of repos' code index jobs.
func indexParams(repos ...int64) []river.InsertManyParams {
	params := make([]river.InsertManyParams, len(repos))
	for i, id := range repos {
		params[i] = river.InsertManyParams{Args: indexArgs{RepoID: id}, InsertOpts: &river.InsertOpts{Queue: slowQueue, UniqueOpts: untilRun}}
	}
	return params
}

// enqueueIndex is codeIndex.enqueue.
//
// One index job per repository waits or runs at a time (unique until
// it has run), so that one repository's index is written by one worker.
// A repository marked while its job runs (or has run but is not yet
// recorded as done: River records completions in batches) gets a
// follow-up job, itself unique, that waits for the first to end: the
// first may have read the branch before the push that marked it.
func (q *queue) enqueueIndex(ctx context.Context, repos ...int64) error {
	params := indexParams(repos...)
	for len(params) > 0 {
		n := min(len(params), 1000)
		res, err := q.client.InsertMany(ctx, params[:n])
		if err != nil {
			return err
		}
		for _, r := range res {
			if r.UniqueSkippedAsDuplicate && r.Job.State == rivertype.JobStateRunning {
				var a indexArgs
				json.Unmarshal(r.Job.EncodedArgs, &a)
				a.After = r.Job.ID
				if _, err := q.client.Insert(ctx, a, &river.InsertOpts{Queue: slowQueue, UniqueOpts: untilRun}); err != nil {
					return err
				}
			}
		}
		params = params[n:]
	}
	return nil
}

// The work of the kinds that are the server's own.

// queuePushWork queues what a push calls for besides its size and its
// webhooks: its code index, the last commits at its new head, and the
// archives of its new tags, in one insertion. The push's own job does it
// (run twice, it queues nothing twice: each is unique until it has
// run), so that the push itself pays for one insertion only.
func (s *server) queuePushWork(ctx context.Context, ev forge.PushEvent) error {
	slow := &river.InsertOpts{Queue: slowQueue, UniqueOpts: untilRun}
	var params []river.InsertManyParams
	for _, u := range ev.Updates {
		if strings.HasPrefix(u.Ref, "refs/heads/") && !u.IsDelete() {
			params = append(params, river.InsertManyParams{Args: lastCommitsArgs{RepoID: ev.RepoID}, InsertOpts: slow})
			break
		}
	}
	for _, u := range ev.Updates {
		if tag, ok := strings.CutPrefix(u.Ref, "refs/tags/"); ok && u.IsCreate() {
			params = append(params, river.InsertManyParams{Args: archiveArgs{RepoID: ev.RepoID, Tag: tag}, InsertOpts: slow})
		}
	}
	if len(params) > 0 {
		if _, err := s.queue.client.InsertMany(ctx, params); err != nil {
			return err
		}
	}
	return s.queue.enqueueIndex(ctx, ev.RepoID)
}

// prepareArchives makes both archives of a tag of a repository; a tag
// or a repository gone since has nothing to make.
func (s *server) prepareArchives(ctx context.Context, repoID int64, tag string) error {
	info, repo, err := jobRepo(ctx, s.forge, repoID)
	if err != nil || repo == nil {
		return err
	}
	s.browsers.RefsChanged(repo.Dir) // the push may have been served by another process
	_, commit, _, err := s.browsers.SplitRef(ctx, repo.Dir, tag)
	if errors.Is(err, forge.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, format := range []string{"tar.gz", "zip"} {
		if err := s.archiver.Prepare(ctx, repo.Dir, info.Name, commit, format); err != nil {
			return err
		}
	}
	return nil
}

// fillLastCommits walks the last commits of the root directory at the
// repository's default branch, unless they are known.
func (s *server) fillLastCommits(ctx context.Context, repoID int64) error {
	_, repo, err := jobRepo(ctx, s.forge, repoID)
	if err != nil || repo == nil {
		return err
	}
	commit, err := defaultHead(ctx, s.browsers, repo.Dir)
	if err != nil || commit == "" {
		return err
	}
	br, err := s.browsers.Open(repo.Dir)
	if err != nil {
		return err
	}
	_, err = s.lastCommits.Get(ctx, br, commit, "")
	return err
}

// maintainDue queues the maintenance of the repositories of the next
// slice that need it, each unique until it has run: however many
// processes share the database, one repository is maintained by one at
// a time (which the lock file inside the repository did before, for
// processes sharing a disk only). Each process keeps its own place in
// the list (the tick runs on whichever worker takes it), so a slice may
// be looked at twice in a row by two of them: harmless, as each goes
// round the whole list.
func (s *server) maintainDue(ctx context.Context) error {
	due, err := s.maint.Due(ctx)
	if err != nil {
		return err
	}
	var params []river.InsertManyParams
	for _, r := range due {
		info, err := s.forge.Meta.RepoInfo(ctx, r.Owner, r.Name)
		if err != nil {
			continue // not (or no longer) a repository of the forge
		}
		params = append(params, river.InsertManyParams{Args: maintainArgs{RepoID: info.ID},
			InsertOpts: &river.InsertOpts{Queue: slowQueue, UniqueOpts: untilRun}})
	}
	if len(params) == 0 {
		return nil
	}
	_, err = s.queue.client.InsertMany(ctx, params)
	return err
}

// maintain runs the maintenance of one repository.
func (s *server) maintain(ctx context.Context, repoID int64) error {
	_, repo, err := jobRepo(ctx, s.forge, repoID)
	if err != nil || repo == nil {
		return err
	}
	_, err = s.maint.Run(ctx, *repo)
	return err
}

// jobRepo is forge.Forge.RepoByID for a job: a repository gone since
// the job was queued (deleted, or renamed away on disk) comes back nil,
// with nothing left to do.
func jobRepo(ctx context.Context, f *forge.Forge, id int64) (*forge.RepoInfo, *forge.Repo, error) {
	info, repo, err := f.RepoByID(ctx, id)
	if errors.Is(err, forge.ErrNotFound) {
		return nil, nil, nil
	}
	return info, repo, err
}

// defaultHead returns the commit of the default branch of the
// repository in dir ("" if it has none), its refs read afresh: another
// process may have moved them.
func defaultHead(ctx context.Context, b *forge.Browsers, dir string) (string, error) {
	b.RefsChanged(dir)
	refs, head, err := b.Refs(ctx, dir)
	if err != nil {
		return "", err
	}
	branch := defaultBranch(refs, head)
	for _, r := range refs {
		if !r.Tag && r.Name == branch {
			return r.Commit, nil
		}
	}
	return "", nil
}
