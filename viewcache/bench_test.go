package viewcache_test

// go test ./viewcache -run '^$' -bench . -benchtime 2000x

import (
	"context"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/forgekit/forgekit/viewcache"
)

var value4k = make([]byte, 4096)

func render4k(context.Context) ([]byte, error) { return value4k, nil }

// BenchmarkL1Hit: an in-process hit vs a plain golang-lru Get, in
// alternating batches of the same run. Target: ≤ 200 ns/op.
func BenchmarkL1Hit(b *testing.B) {
	ctx := context.Background()
	c := viewcache.New("forge", "v1")
	deps := []string{"repo:alice/proj", "user:42"}
	c.GetOrRender(ctx, "readme", deps, render4k)
	plain, _ := lru.New[string, []byte](1024)
	plain.Add("readme", value4k)
	const batch = 1000
	var tOurs, tPlain time.Duration
	for b.Loop() {
		start := time.Now()
		for range batch {
			c.GetOrRender(ctx, "readme", deps, render4k)
		}
		tOurs += time.Since(start)
		start = time.Now()
		for range batch {
			plain.Get("readme")
		}
		tPlain += time.Since(start)
	}
	n := float64(b.N * batch)
	b.ReportMetric(float64(tOurs.Nanoseconds())/n, "viewcache-ns/hit")
	b.ReportMetric(float64(tPlain.Nanoseconds())/n, "golang-lru-ns/get")
	b.ReportMetric(float64(tOurs)/float64(tPlain), "x-golang-lru")
	b.ReportMetric(testing.AllocsPerRun(1000, func() { c.GetOrRender(ctx, "readme", deps, render4k) }), "allocs/hit")
}

// BenchmarkL1HitParallel: the same hit from all cores.
func BenchmarkL1HitParallel(b *testing.B) {
	ctx := context.Background()
	c := viewcache.New("forge", "v1")
	deps := []string{"repo:alice/proj"}
	c.GetOrRender(ctx, "readme", deps, render4k)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.GetOrRender(ctx, "readme", deps, render4k)
		}
	})
}

// BenchmarkL2Hit: a memcached hit with L1 disabled (entry and the
// generations of two dependencies in one round trip) vs a raw gomemcache
// Get of the same 4 KB value. Target: ≤ 1.2x.
func BenchmarkL2Hit(b *testing.B) {
	mc, _ := memcachedB(b)
	ctx := context.Background()
	c := viewcache.New("forge", "v1")
	c.Memcache, c.MaxBytes = mc, -1
	deps := []string{"repo:alice/proj", "user:42"}
	c.Invalidate(ctx, deps...) // counters exist, as on a live site
	c.GetOrRender(ctx, "readme", deps, render4k)
	mc.Set(&memcache.Item{Key: "raw", Value: value4k})
	mc.Set(&memcache.Item{Key: "raw-g1", Value: []byte("12345")})
	mc.Set(&memcache.Item{Key: "raw-g2", Value: []byte("12345")})
	multi := []string{"raw", "raw-g1", "raw-g2"}
	var tOurs, tRaw, tMulti time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := mc.GetMulti(multi); err != nil {
			b.Fatal(err)
		}
		tMulti += time.Since(start)
		start = time.Now()
		if _, err := c.GetOrRender(ctx, "readme", deps, render4k); err != nil {
			b.Fatal(err)
		}
		tOurs += time.Since(start)
		start = time.Now()
		if _, err := mc.Get("raw"); err != nil {
			b.Fatal(err)
		}
		tRaw += time.Since(start)
	}
	if s := c.Stats(); s.Renders != 1 {
		b.Fatalf("not hits: %+v", s)
	}
	n := float64(b.N)
	b.ReportMetric(float64(tOurs.Microseconds())/n, "viewcache-µs/hit")
	b.ReportMetric(float64(tRaw.Microseconds())/n, "gomemcache-µs/get")
	b.ReportMetric(float64(tOurs)/float64(tRaw), "x-gomemcache")
	b.ReportMetric(float64(tMulti.Microseconds())/n, "gomemcache-3key-getmulti-µs")
	b.ReportMetric(float64(tOurs)/float64(tMulti), "x-getmulti")
}
