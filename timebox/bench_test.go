package timebox_test

// Benchmarks against the anchors of the issue, in the same run, as ratios:
//
//	go test ./timebox -run '^$' -bench . -benchtime 2s

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/forgekit/forgekit/timebox"
)

func noop(context.Context) error { return nil }

// BenchmarkBox: one box around a no-op vs a bare context.WithTimeout and
// cancel, timed in alternating batches of the same run. Target: ≤ 1.3x.
func BenchmarkBox(b *testing.B) {
	ctx := context.Background()
	const batch = 1000
	var tOurs, tBase time.Duration
	for b.Loop() {
		start := time.Now()
		for range batch {
			timebox.Do(ctx, time.Second, noop)
		}
		tOurs += time.Since(start)
		start = time.Now()
		for range batch {
			c, cancel := context.WithTimeout(ctx, time.Second)
			noop(c)
			cancel()
		}
		tBase += time.Since(start)
	}
	ours := testing.AllocsPerRun(1000, func() { timebox.Do(ctx, time.Second, noop) })
	base := testing.AllocsPerRun(1000, func() {
		c, cancel := context.WithTimeout(ctx, time.Second)
		noop(c)
		cancel()
	})
	n := float64(b.N * batch)
	b.ReportMetric(float64(tOurs.Nanoseconds())/n, "timebox-ns/box")
	b.ReportMetric(float64(tBase.Nanoseconds())/n, "withtimeout-ns/box")
	b.ReportMetric(float64(tOurs)/float64(tBase), "x-withtimeout")
	b.ReportMetric(ours, "timebox-allocs/box")
	b.ReportMetric(base, "withtimeout-allocs/box")
}

// streamer writes 1 MB in 64 KB chunks, flushing after each; pace is
// the time it spends producing each chunk (rendering, reading a blob).
func streamer(pace time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for range 16 {
			if pace > 0 {
				time.Sleep(pace)
			}
			if _, err := w.Write(chunk); err != nil {
				return
			}
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
		}
	})
}

type result struct {
	ttfb, total time.Duration
	bytes       uint64 // allocated per request, server and client
}

func measure(b *testing.B, h http.Handler, n int) result {
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	buf := make([]byte, 64<<10)
	var r result
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	for range n {
		start := time.Now()
		resp, err := client.Get(srv.URL)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(resp.Body, buf[:1]); err != nil {
			b.Fatal(err)
		}
		r.ttfb += time.Since(start)
		io.CopyBuffer(io.Discard, resp.Body, buf)
		resp.Body.Close()
		r.total += time.Since(start)
	}
	runtime.ReadMemStats(&ms1)
	r.ttfb /= time.Duration(n)
	r.total /= time.Duration(n)
	r.bytes = (ms1.TotalAlloc - ms0.TotalAlloc) / uint64(n)
	return r
}

// BenchmarkMiddleware: the streaming handler over a real loopback
// connection, bare, under timebox.Handler and under http.TimeoutHandler;
// "instant" writes as fast as it can, "paced" spends 1 ms per chunk.
// Targets: time to first byte ≥ 10x sooner and bytes allocated ≥ 10x
// fewer than TimeoutHandler; throughput overhead ≤ 5% vs bare.
func BenchmarkMiddleware(b *testing.B) {
	for _, tc := range []struct {
		name string
		pace time.Duration
	}{
		{name: "instant"},
		{name: "paced", pace: time.Millisecond},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := streamer(tc.pace)
			ours := &timebox.Handler{Handler: h, Timeout: time.Minute}
			std := http.TimeoutHandler(h, time.Minute, "timeout")
			var none, tb, th result
			add := func(sum *result, r result) {
				sum.ttfb += r.ttfb
				sum.total += r.total
				sum.bytes += r.bytes
			}
			for b.Loop() {
				const n = 20
				add(&none, measure(b, h, n))
				add(&tb, measure(b, ours, n))
				add(&th, measure(b, std, n))
			}
			n := float64(b.N)
			b.ReportMetric(float64(none.ttfb.Microseconds())/n, "bare-ttfb-µs")
			b.ReportMetric(float64(tb.ttfb.Microseconds())/n, "timebox-ttfb-µs")
			b.ReportMetric(float64(th.ttfb.Microseconds())/n, "timeouthandler-ttfb-µs")
			b.ReportMetric(float64(th.ttfb)/float64(tb.ttfb), "x-ttfb-sooner")
			b.ReportMetric(float64(none.bytes)/n, "bare-B/req")
			b.ReportMetric(float64(tb.bytes)/n, "timebox-B/req")
			b.ReportMetric(float64(th.bytes)/n, "timeouthandler-B/req")
			b.ReportMetric(float64(th.bytes)/float64(tb.bytes), "x-fewer-bytes")
			b.ReportMetric(float64(tb.bytes-min(tb.bytes, none.bytes))/n, "timebox-extra-B/req")
			b.ReportMetric(100*(float64(tb.total)/float64(none.total)-1), "%-overhead-vs-bare")
		})
	}
}

// BenchmarkFiringLateness: 10,000 concurrent boxes; the delay from each
// deadline to its function seeing the cancellation. Target: p99 ≤ 2 ms.
func BenchmarkFiringLateness(b *testing.B) {
	const boxes = 10000
	var all []time.Duration
	for b.Loop() {
		late := make([]time.Duration, boxes)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range boxes {
			wg.Add(1)
			d := 100*time.Millisecond + time.Duration(i%100)*time.Millisecond
			go func() {
				defer wg.Done()
				timebox.Do(context.Background(), d, func(ctx context.Context) error {
					<-ctx.Done()
					dl, _ := ctx.Deadline()
					late[i] = time.Since(dl)
					return nil
				})
			}()
		}
		wg.Wait()
		_ = start
		all = append(all, late...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-late-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-late-µs")
	b.ReportMetric(float64(all[len(all)-1].Microseconds()), "max-late-µs")
}
