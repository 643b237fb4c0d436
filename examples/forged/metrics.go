package main

import (
	"net/http"
	"strconv"
	"time"

	"github.com/forgekit/forgekit/slowlog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics, in a registry of its own
// (no global state): request latency by route, and the counters of every
// package read when scraped.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
	queries  *prometheus.HistogramVec
}

func newMetrics(s *server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "forged_request_duration_seconds",
			Help:    "Time to serve a request, by route, method and status class.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "method", "code"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "forged_response_bytes_total",
			Help: "Bytes of response bodies, by route.",
		}, []string{"route"}),
		queries: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "forged_request_queries",
			Help:    "SQL queries per request, by route.",
			Buckets: []float64{0, 1, 2, 4, 8, 16, 32, 64, 128},
		}, []string{"route"}),
	}
	m.reg.MustRegister(m.requests, m.bytes, m.queries,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if s.queue != nil {
		m.reg.MustRegister(newJobsCollector(s.queue), s.queue.done, s.queue.took)
	}
	gauge := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	counter("forged_fragment_hits_total", "Fragment cache hits, in-process and memcached.", func() float64 {
		st := s.cache.Stats()
		return float64(st.L1Hits + st.L2Hits)
	})
	counter("forged_fragment_stale_hits_total", "Fragments served stale while refreshed.", func() float64 { return float64(s.cache.Stats().StaleHits) })
	counter("forged_fragment_misses_total", "Fragment cache misses.", func() float64 { return float64(s.cache.Stats().Misses) })
	counter("forged_fragment_renders_total", "Fragments rendered.", func() float64 { return float64(s.cache.Stats().Renders) })
	counter("forged_fragment_l2_errors_total", "memcached errors (each served as a miss).", func() float64 { return float64(s.cache.Stats().L2Errors) })
	gauge("forged_fragment_bytes", "Bytes held by the in-process fragment cache.", func() float64 { return float64(s.cache.Stats().Bytes) })
	counter("forged_views_counted_total", "Repository page views counted.", func() float64 { return float64(s.views.Stats().Counted) })
	counter("forged_views_flushed_total", "Views written to the database.", func() float64 { return float64(s.views.Stats().Flushed) })
	counter("forged_views_dropped_total", "Views dropped after failed flushes.", func() float64 { return float64(s.views.Stats().Dropped) })
	gauge("forged_views_pending", "Views waiting for a flush.", func() float64 { return float64(s.views.Stats().Pending) })
	counter("forged_git_requests_total", "Git HTTP requests.", func() float64 { return float64(s.git.Stats().Requests) })
	counter("forged_git_bytes_out_total", "Git bytes sent.", func() float64 { return float64(s.git.Stats().BytesOut) })
	counter("forged_git_bytes_in_total", "Git bytes received.", func() float64 { return float64(s.git.Stats().BytesIn) })
	counter("forged_timebox_expired_total", "Requests that reached their time limit.", func() float64 { return float64(s.tbox.Stats().Expired) })
	counter("forged_slow_reports_total", "Slow-request reports taken.", func() float64 { return float64(s.watchdog.Stats().Reports) })
	counter("forged_archives_generated_total", "Archives generated.", func() float64 { return float64(s.archiver.Stats().Generated) })
	return m
}

func (m *metrics) observe(method, route string, status int, d time.Duration, bytes int64) {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
	default:
		method = "other" // any token is a method to net/http: no series per invention
	}
	m.requests.WithLabelValues(route, method, strconv.Itoa(status/100)+"xx").Observe(d.Seconds())
	m.bytes.WithLabelValues(route).Add(float64(bytes))
}

// observeWork records what a request did.
func (m *metrics) observeWork(route string, t slowlog.Tally) {
	m.queries.WithLabelValues(route).Observe(float64(t.Queries))
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
