package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/internal/testenv"
)

// BenchmarkPushQueueing: what queueing a push's work adds to the push.
// "queue" is what forged does before answering a push: one River insert
// of the push's job (which, run, records its size, queues its webhooks,
// its code index, its last commits and its tags' archives), on SQLite
// and on PostgreSQL, with the workers running those jobs meanwhile
// (pushes 5 ms apart), then with the workers paused: the insert alone.
// "goroutines" is what it did before: a goroutine for the push's work
// and a mark in the code index's in-memory set. added-ms is the
// difference of the medians, per push; the target is at most 1 ms.
//
//	go test ./examples/forged -run '^$' -bench PushQueueing -benchtime 500x
func BenchmarkPushQueueing(b *testing.B) {
	ev := forge.PushEvent{Repo: "bench/repo", Pusher: "bench",
		Updates: []gitproto.RefUpdate{{Ref: "refs/heads/main", Old: "1111111111111111111111111111111111111111", New: "2222222222222222222222222222222222222222"}}}
	var goroutines float64
	b.Run("goroutines", func(b *testing.B) {
		b.ReportAllocs()
		var wg sync.WaitGroup
		var mu sync.Mutex
		dirty := map[int64]bool{}
		wake := make(chan struct{}, 1)
		for i := 0; b.Loop(); i++ {
			id := int64(i + 1)
			wg.Go(func() { runtime.Gosched() }) // the push's work, in the background
			mu.Lock()
			dirty[id] = true // the code index's mark
			mu.Unlock()
			select {
			case wake <- struct{}{}:
			default:
			}
		}
		wg.Wait()
		goroutines = b.Elapsed().Seconds() * 1000 / float64(b.N)
		b.ReportMetric(goroutines, "ms/push")
	})
	for _, db := range []string{"sqlite", "postgres"} {
		for _, idle := range []bool{false, true} {
			name := "queue-" + db
			if idle {
				name += "-workers-paused" // what the insert costs alone
			}
			b.Run(name, func(b *testing.B) { pushQueueing(b, db, idle, ev, goroutines) })
		}
	}
}

func pushQueueing(b *testing.B, db string, idle bool, ev forge.PushEvent, goroutines float64) {
	var flags []string
	if db == "postgres" {
		flags = append(flags, "-db", testenv.Postgres(b))
	}
	s, _ := startInstance(b, b.TempDir(), flags...)
	ctx := context.Background()
	b.ReportAllocs() // the process's, workers included
	var peak uint64
	defer func() { b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB") }()
	defer testenv.SampleHeap(&peak)()
	if idle {
		for _, q := range []string{"default", slowQueue} {
			if err := s.queue.client.QueuePause(ctx, q, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	var took []time.Duration
	for i := 0; b.Loop(); i++ {
		ev := ev
		ev.RepoID, ev.ID = int64(i+1), int64(i+1) // jobs of repositories that are not there: they end at once
		t0 := time.Now()
		if err := s.forge.Enqueue(ctx, forge.PushWork{RepoID: ev.RepoID, Event: ev}); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(t0))
		// Pushes come a few milliseconds apart at most, with
		// the workers running the jobs of the earlier ones.
		b.StopTimer()
		time.Sleep(5 * time.Millisecond)
		b.StartTimer()
	}
	slices.Sort(took)
	p50 := took[len(took)/2].Seconds() * 1000
	b.ReportMetric(p50, "p50-ms/push")
	b.ReportMetric(took[len(took)*95/100].Seconds()*1000, "p95-ms/push")
	b.ReportMetric(p50-goroutines, "added-ms")
}

// BenchmarkDeliveryDrain: 1,000 webhook deliveries queued while the
// workers are paused, then drained to a receiver on loopback, through
// forged's own delivery jobs (each attempt recorded), on SQLite and on
// PostgreSQL. Target: at least 500 deliveries a second on both.
//
//	go test ./examples/forged -run '^$' -bench DeliveryDrain -benchtime 1x
func BenchmarkDeliveryDrain(b *testing.B) {
	const n = 1000
	for _, db := range []string{"sqlite", "postgres"} {
		b.Run(db, func(b *testing.B) {
			var got atomic.Int64
			recv := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got.Add(1) })
			b.ReportAllocs()
			var peak uint64
			defer func() { b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB") }()
			defer testenv.SampleHeap(&peak)()
			for b.Loop() {
				b.StopTimer()
				flags := []string{"-webhook-private"}
				if db == "postgres" {
					flags = append(flags, "-db", testenv.Postgres(b))
				}
				s, _ := startInstance(b, b.TempDir(), flags...)
				ctx := context.Background()
				if _, err := s.forge.CreateUser(ctx, "bench", "", "bench-password", false); err != nil {
					b.Fatal(err)
				}
				info, err := s.forge.CreateRepo(ctx, "bench", "repo", false, "")
				if err != nil {
					b.Fatal(err)
				}
				rs := httptest.NewServer(recv)
				b.Cleanup(rs.Close)
				url := rs.URL + "/hook"
				if _, err := s.forge.AddWebhook(ctx, info.ID, url, "s"); err != nil {
					b.Fatal(err)
				}
				if err := s.queue.client.QueuePause(ctx, "default", nil); err != nil {
					b.Fatal(err)
				}
				got.Store(0)
				for i := range n {
					if err := s.hooks.Push(ctx, info.ID, forge.PushEvent{ID: int64(i + 1), Repo: "bench/repo"}); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				start := time.Now()
				if err := s.queue.client.QueueResume(ctx, "default", nil); err != nil {
					b.Fatal(err)
				}
				for got.Load() < n {
					if time.Since(start) > 2*time.Minute {
						b.Fatalf("%d of %d delivered", got.Load(), n)
					}
					time.Sleep(time.Millisecond)
				}
				b.ReportMetric(n/time.Since(start).Seconds(), "deliveries/s")
			}
		})
	}
}
