package slowlog_test

// go test ./slowlog -run '^$' -bench . -benchtime 2000x

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/forgekit/forgekit/slowlog"
)

type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

// BenchmarkMiddleware: a fast request through the watchdog vs without it,
// in the same run. Target: ≤ 1 µs and ≤ 4 allocs added per request.
func BenchmarkMiddleware(b *testing.B) {
	wd := &slowlog.Watchdog{Threshold: time.Minute}
	defer wd.Close()
	fast := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	watched := wd.Handler(fast)
	r := httptest.NewRequest("GET", "/repos/alice/proj?tab=files", nil)
	w := &discardWriter{h: http.Header{}}
	const batch = 1000
	var tBare, tOurs time.Duration
	for b.Loop() {
		start := time.Now()
		for range batch {
			fast.ServeHTTP(w, r)
		}
		tBare += time.Since(start)
		start = time.Now()
		for range batch {
			watched.ServeHTTP(w, r)
		}
		tOurs += time.Since(start)
	}
	allocs := testing.AllocsPerRun(1000, func() { watched.ServeHTTP(w, r) })
	bare := testing.AllocsPerRun(1000, func() { fast.ServeHTTP(w, r) })
	n := float64(b.N * batch)
	b.ReportMetric(float64((tOurs-tBare).Nanoseconds())/n, "added-ns/req")
	b.ReportMetric(allocs-bare, "added-allocs/req")
	b.ReportMetric(float64(tOurs.Nanoseconds())/n, "watched-ns/req")
	b.ReportMetric(float64(tBare.Nanoseconds())/n, "bare-ns/req")
}

// BenchmarkReportLatency: 10,000 requests in flight, 100 of them slow;
// the time from each slow request's threshold to its report reaching the
// sink.
func BenchmarkReportLatency(b *testing.B) {
	const inflight, slow = 10000, 100
	threshold := 200 * time.Millisecond
	var lat []time.Duration
	for b.Loop() {
		var mu sync.Mutex
		got := make(chan struct{}, slow)
		wd := &slowlog.Watchdog{
			Thresholds:    []time.Duration{threshold},
			Tick:          10 * time.Millisecond,
			DedupInterval: -1,
			QueueSize:     slow * 2,
			Sink: slowlog.SinkFunc(func(ctx context.Context, r *slowlog.Report) error {
				if !r.Final {
					mu.Lock()
					lat = append(lat, time.Since(r.Start.Add(r.Threshold)))
					mu.Unlock()
					got <- struct{}{}
				}
				return nil
			}),
		}
		release := make(chan struct{})
		var wg sync.WaitGroup
		for i := range inflight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				wd.Do(context.Background(), "job", func(ctx context.Context) {
					if i < slow {
						<-release
					} else {
						time.Sleep(threshold / 4) // fast: done before the threshold
					}
				})
			}()
		}
		for range slow {
			<-got
		}
		close(release)
		wg.Wait()
		wd.Close()
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
