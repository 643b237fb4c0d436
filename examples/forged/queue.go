package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"
)

// openQueueAdmin opens the queue for forged jobs: a client that runs
// nothing, to list, retry and cancel jobs.
func openQueueAdmin(ctx context.Context, data, dsn string) (*river.Client[*sql.Tx], *sql.DB, error) {
	driver, db, err := openQueueDB(ctx, data, dsn)
	if err != nil {
		return nil, nil, err
	}
	client, err := river.NewClient(driver, &river.Config{})
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("queue: %w", err)
	}
	return client, db, nil
}

// openQueueDB opens the queue's database, DATA/queue.db or the
// PostgreSQL database of dsn, and migrates River's tables.
func openQueueDB(ctx context.Context, data, dsn string) (riverdriver.Driver[*sql.Tx], *sql.DB, error) {
	if dsn == "" {
		path := filepath.Join(data, "queue.db")
		// Private from the start: SQLite gives its -wal and -shm files
		// the mode of the database's.
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("queue: %w", err)
		}
		f.Close()
		db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_busy_timeout=5000&_txlock=immediate")
		if err != nil {
			return nil, nil, fmt.Errorf("queue: %w", err)
		}
		db.SetMaxOpenConns(1)
		driver := riversqlite.New(db)
		if err := migrateQueue(ctx, driver); err != nil {
			db.Close()
			return nil, nil, err
		}
		return driver, db, nil
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("queue: %w", err)
	}
	driver := riverdatabasesql.New(db)
	// Instances starting together on one database migrate in turn.
	conn, err := db.Conn(ctx)
	if err == nil {
		_, err = conn.ExecContext(ctx, `SELECT pg_advisory_lock(7270006)`)
	}
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("queue: %w", err)
	}
	err = migrateQueue(ctx, driver)
	conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(7270006)`)
	conn.Close()
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return driver, db, nil
}

func migrateQueue(ctx context.Context, driver riverdriver.Driver[*sql.Tx]) error {
	m, err := rivermigrate.New(driver, nil)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("queue: migrating River's tables: %w", err)
	}
	return nil
}

// jobStates are River's job states, for forged jobs list -state.
var jobStates = []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStateCancelled, rivertype.JobStateCompleted, rivertype.JobStateDiscarded,
	rivertype.JobStatePending, rivertype.JobStateRetryable, rivertype.JobStateRunning, rivertype.JobStateScheduled,
}

func jobsList(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	state := fs.String("state", "", "only jobs in this `state`: available, scheduled, running, retryable, discarded (failed for good), cancelled, completed")
	kind := fs.String("kind", "", "only jobs of this `kind` (push, webhook_delivery, code_index, last_commits, archive, purge, purge_repo, maintain, maintain_tick)")
	limit := fs.Int("n", 100, "at most this many jobs")
	return func(ctx context.Context, c *cli, _ []string) error {
		client, db, err := openQueueAdmin(ctx, c.data, c.db)
		if err != nil {
			return err
		}
		defer db.Close()
		params := river.NewJobListParams().OrderBy(river.JobListOrderByID, river.SortOrderDesc).First(max(*limit, 1))
		if *state != "" {
			if !slices.Contains(jobStates, rivertype.JobState(*state)) {
				return fmt.Errorf("-state: %q is not a job state", *state)
			}
			params = params.States(rivertype.JobState(*state))
		}
		if *kind != "" {
			params = params.Kinds(*kind)
		}
		res, err := client.JobList(ctx, params)
		if err != nil {
			return fmt.Errorf("queue: %w", err)
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tKIND\tSTATE\tATTEMPTS\tARGS\tAT\tLAST ERROR")
		for _, j := range res.Jobs {
			at := j.ScheduledAt
			if j.FinalizedAt != nil {
				at = *j.FinalizedAt
			}
			lastErr := ""
			if n := len(j.Errors); n > 0 {
				lastErr = truncateLine(j.Errors[n-1].Error, 80)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", j.ID, j.Kind, j.State, j.Attempt, j.MaxAttempts,
				j.EncodedArgs, at.UTC().Format(time.RFC3339), lastErr)
		}
		return tw.Flush()
	}
}

func jobID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%q is not a job id (see forged jobs list)", s)
	}
	return id, nil
}

func jobsRetry(ctx context.Context, c *cli, pos []string) error {
	return jobAction(ctx, c, pos[0], "retried", func(client *river.Client[*sql.Tx], id int64) (*rivertype.JobRow, error) {
		return client.JobRetry(ctx, id)
	})
}

func jobsCancel(ctx context.Context, c *cli, pos []string) error {
	return jobAction(ctx, c, pos[0], "cancelled", func(client *river.Client[*sql.Tx], id int64) (*rivertype.JobRow, error) {
		return client.JobCancel(ctx, id)
	})
}

func jobAction(ctx context.Context, c *cli, arg, done string, act func(*river.Client[*sql.Tx], int64) (*rivertype.JobRow, error)) error {
	id, err := jobID(arg)
	if err != nil {
		return err
	}
	client, db, err := openQueueAdmin(ctx, c.data, c.db)
	if err != nil {
		return err
	}
	defer db.Close()
	j, err := act(client, id)
	if errors.Is(err, rivertype.ErrNotFound) {
		return fmt.Errorf("no job %d", id)
	}
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	fmt.Fprintf(c.stdout, "job %d (%s) %s: now %s\n", j.ID, j.Kind, done, j.State)
	return nil
}

// truncateLine is the first line of s, at most n bytes.
func truncateLine(s string, n int) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > n {
		s = s[:n-3] + "..."
	}
	return s
}

// jobsCollector reports the queue to Prometheus at each scrape: jobs by
// kind and state (depth: available, scheduled, retryable, running;
// failures for good: discarded), and the age of the oldest job waiting
// for a worker.
type jobsCollector struct {
	q             *queue
	jobs, waiting *prometheus.Desc
}

func newJobsCollector(q *queue) *jobsCollector {
	return &jobsCollector{
		q: q,
		jobs: prometheus.NewDesc("forged_jobs", "Background jobs by kind and state (discarded: failed for good).",
			[]string{"kind", "state"}, nil),
		waiting: prometheus.NewDesc("forged_jobs_oldest_waiting_seconds", "Age of the oldest job waiting for a worker.", nil, nil),
	}
}

func (c *jobsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.jobs
	ch <- c.waiting
}

func (c *jobsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := c.q.counts(ctx)
	if err == nil {
		for kind, byState := range counts {
			for state, n := range byState {
				switch state {
				case rivertype.JobStateAvailable, rivertype.JobStateScheduled, rivertype.JobStateRetryable,
					rivertype.JobStateRunning, rivertype.JobStateDiscarded:
					ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(n), kind, string(state))
				}
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, c.q.oldestWaiting(ctx).Seconds())
}

// counts returns how many jobs there are of each kind, by state.
func (q *queue) counts(ctx context.Context) (map[string]map[rivertype.JobState]int64, error) {
	rows, err := q.db.QueryContext(ctx, `SELECT kind, state, COUNT(*) FROM river_job GROUP BY kind, state`)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	defer rows.Close()
	out := map[string]map[rivertype.JobState]int64{}
	for rows.Next() {
		var kind, state string
		var n int64
		if err := rows.Scan(&kind, &state, &n); err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
		if out[kind] == nil {
			out[kind] = map[rivertype.JobState]int64{}
		}
		out[kind][rivertype.JobState(state)] = n
	}
	return out, rows.Err()
}

// oldestWaiting returns the age of the oldest job waiting for a worker,
// 0 if none is.
func (q *queue) oldestWaiting(ctx context.Context) time.Duration {
	res, err := q.client.JobList(ctx, river.NewJobListParams().States(rivertype.JobStateAvailable).
		OrderBy(river.JobListOrderByScheduledAt, river.SortOrderAsc).First(1))
	if err != nil || len(res.Jobs) != 1 {
		return 0
	}
	return max(time.Since(res.Jobs[0].ScheduledAt), 0)
}
