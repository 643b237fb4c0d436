package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"

	"github.com/forgekit/forgekit/forge"
)

// The durable queue of work that outlives a request, on River: a
// webhook delivery is a job, so one waiting for its retry when the
// process stops (a crash, a restart) is sent by the next process that
// runs the queue, on this machine or another sharing the database. The
// queue lives in DATA/queue.db (SQLite, one connection, as River's
// SQLite driver asks), or in the PostgreSQL database of -db.
//
// Only webhook deliveries are jobs so far; the rest of the background
// work (search indexing, last-commit fills, purges, maintenance) still
// runs as goroutines of the process.

// deliveryArgs is the job of one recorded webhook delivery.
type deliveryArgs struct {
	DeliveryID int64 `json:"delivery_id"`
}

func (deliveryArgs) Kind() string { return "webhook_delivery" }

type deliveryWorker struct {
	river.WorkerDefaults[deliveryArgs]
	hooks *forge.Deliverer
}

func (w *deliveryWorker) Work(ctx context.Context, job *river.Job[deliveryArgs]) error {
	return w.hooks.Attempt(ctx, job.Args.DeliveryID)
}

// jobTimeout bounds one attempt: a receiver that hangs does not hold a
// worker past the webhook client's own limit.
const jobTimeout = forge.DefaultHookWait + 5*time.Second

// backoff retries after backoffBase, doubling per failed attempt.
type backoff struct{ base time.Duration }

func (b backoff) NextRetry(job *rivertype.JobRow) time.Time {
	n := max(len(job.Errors), 1)
	return time.Now().Add(b.base * time.Duration(math.Pow(2, float64(min(n-1, 10)))))
}

// queue is forged's River client and its database.
type queue struct {
	client *river.Client[*sql.Tx]
	db     *sql.DB
	hooks  *forge.Deliverer
}

// openQueue opens the queue's database, migrates River's tables and
// starts its workers.
func openQueue(ctx context.Context, data, dsn string, hooks *forge.Deliverer, retry time.Duration, logger *slog.Logger) (*queue, error) {
	q := &queue{hooks: hooks}
	var err error
	workers := river.NewWorkers()
	river.AddWorker(workers, &deliveryWorker{hooks: hooks})
	cfg := &river.Config{
		Queues:      map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 10}},
		Workers:     workers,
		RetryPolicy: backoff{base: retry},
		// A job of a process killed while it ran stays "running" until
		// the rescuer (every 30 s) finds it older than this, and
		// retries it: at least once, across kill -9.
		JobTimeout:           jobTimeout,
		RescueStuckJobsAfter: 2 * jobTimeout,
		Logger:               logger,
		FetchCooldown:        20 * time.Millisecond,
		FetchPollInterval:    200 * time.Millisecond,
	}
	if dsn == "" {
		path := filepath.Join(data, "queue.db")
		// Private from the start: SQLite gives its -wal and -shm files
		// the mode of the database's.
		f, ferr := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if ferr != nil {
			return nil, fmt.Errorf("queue: %w", ferr)
		}
		f.Close()
		if q.db, err = sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_busy_timeout=5000&_txlock=immediate"); err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
		q.db.SetMaxOpenConns(1)
		driver := riversqlite.New(q.db)
		if err := migrateQueue(ctx, driver); err != nil {
			q.db.Close()
			return nil, err
		}
		q.client, err = river.NewClient(driver, cfg)
	} else {
		if q.db, err = sql.Open("pgx", dsn); err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
		driver := riverdatabasesql.New(q.db)
		// Instances starting together on one database migrate in turn.
		conn, cerr := q.db.Conn(ctx)
		if cerr == nil {
			_, cerr = conn.ExecContext(ctx, `SELECT pg_advisory_lock(7270006)`)
		}
		if cerr != nil {
			q.db.Close()
			return nil, fmt.Errorf("queue: %w", cerr)
		}
		merr := migrateQueue(ctx, driver)
		conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(7270006)`)
		conn.Close()
		if merr != nil {
			q.db.Close()
			return nil, merr
		}
		q.client, err = river.NewClient(driver, cfg)
	}
	if err != nil {
		q.db.Close()
		return nil, fmt.Errorf("queue: %w", err)
	}
	if err := q.client.Start(context.WithoutCancel(ctx)); err != nil {
		q.db.Close()
		return nil, fmt.Errorf("queue: %w", err)
	}
	return q, nil
}

func migrateQueue[T any](ctx context.Context, driver riverdriver.Driver[T]) error {
	m, err := rivermigrate.New(driver, nil)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("queue: migrating River's tables: %w", err)
	}
	return nil
}

// enqueueDelivery is forge.Deliverer.Enqueue.
// A delivery's tries are the Deliverer's Attempts.
func (q *queue) enqueueDelivery(ctx context.Context, id int64) error {
	attempts := q.hooks.Attempts
	if attempts <= 0 {
		attempts = forge.DefaultAttempts
	}
	_, err := q.client.Insert(ctx, deliveryArgs{DeliveryID: id}, &river.InsertOpts{MaxAttempts: attempts})
	return err
}

// close stops the workers (a job running is given 10 s, then
// cancelled and left to be retried) and closes the database.
func (q *queue) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.client.Stop(ctx); err != nil {
		q.client.StopAndCancel(context.Background())
	}
	q.db.Close()
}
