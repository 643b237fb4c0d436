// Command queuebench measures River (github.com/riverqueue/river), the
// candidate queue engine for forged's durable background work, on the
// two databases forged runs on: how long queueing one job takes (what a
// push would pay per job) and how fast a queue of webhook deliveries to
// a local receiver drains.
//
//	go run ./examples/queuebench
//	go run ./examples/queuebench -pg 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'
//
// SQLite runs on a temporary file, with one connection as River's SQLite
// driver asks; PostgreSQL runs on the database named by -pg, in a schema
// of its own that it drops afterwards.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx"
	_ "github.com/mattn/go-sqlite3"    // the database/sql driver "sqlite3"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
)

// deliveryArgs is a webhook delivery job.
type deliveryArgs struct {
	URL string `json:"url"`
	N   int    `json:"n"`
}

func (deliveryArgs) Kind() string { return "webhook_delivery" }

type deliveryWorker struct {
	river.WorkerDefaults[deliveryArgs]
	client *http.Client
	done   *atomic.Int64
}

func (w *deliveryWorker) Work(ctx context.Context, job *river.Job[deliveryArgs]) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, job.Args.URL, nil)
	if err != nil {
		return err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("receiver: %s", resp.Status)
	}
	w.done.Add(1)
	return nil
}

func main() {
	n := flag.Int("n", 1000, "deliveries to queue and drain")
	workers := flag.Int("workers", 20, "River workers")
	pg := flag.String("pg", "", "PostgreSQL `DSN` to measure too")
	flag.Parse()
	log.SetFlags(0)
	dir, err := os.MkdirTemp("", "queuebench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "queue.db")+"?_journal_mode=WAL&_busy_timeout=5000&_txlock=immediate")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	measure("sqlite", riversqlite.New(db), *n, *workers, "")
	if *pg != "" {
		pdb, err := sql.Open("pgx", *pg)
		if err != nil {
			log.Fatal(err)
		}
		defer pdb.Close()
		const schema = "queuebench"
		if _, err := pdb.Exec("DROP SCHEMA IF EXISTS " + schema + " CASCADE; CREATE SCHEMA " + schema); err != nil {
			log.Fatal(err)
		}
		defer pdb.Exec("DROP SCHEMA " + schema + " CASCADE")
		measure("postgres", riverdatabasesql.New(pdb), *n, *workers, schema)
	}
}

func measure[T any](name string, driver riverdriver.Driver[T], n, maxWorkers int, schema string) {
	ctx := context.Background()
	m, err := rivermigrate.New(driver, &rivermigrate.Config{Schema: schema})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		log.Fatalf("%s: migrate: %v", name, err)
	}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer recv.Close()
	var done atomic.Int64
	workers := river.NewWorkers()
	river.AddWorker(workers, &deliveryWorker{client: recv.Client(), done: &done})
	client, err := river.NewClient(driver, &river.Config{
		Schema:            schema,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: maxWorkers}},
		Workers:           workers,
		FetchCooldown:     5 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		log.Fatal(err)
	}
	// Queueing, one job per call, as a push would queue its deliveries.
	lat := make([]time.Duration, 0, n)
	for i := range n {
		start := time.Now()
		if _, err := client.Insert(ctx, deliveryArgs{URL: recv.URL, N: i}, nil); err != nil {
			log.Fatalf("%s: insert: %v", name, err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	start := time.Now()
	if err := client.Start(ctx); err != nil {
		log.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for done.Load() < int64(n) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	drain := time.Since(start)
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client.Stop(stopCtx)
	fmt.Printf("%-8s queue one job: p50 %.3f ms, p99 %.3f ms; drain %d deliveries: %.0f/s (%d delivered)\n",
		name, ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100]), n, float64(done.Load())/drain.Seconds(), done.Load())
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
