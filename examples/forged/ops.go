package main

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

func (s *ops) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintln(w, "ok")
}

// readyz checks the database and, when configured, memcached.
func (s *ops) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var problems []string
	if err := s.forge.Meta.Ping(ctx); err != nil {
		problems = append(problems, "database: "+err.Error())
	}
	if s.mc != nil {
		if err := s.mc.Ping(); err != nil {
			problems = append(problems, "memcached: "+err.Error())
		}
	}
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(problems, "\n"))
		return
	}
	fmt.Fprintln(w, "ready")
}

// internal lets through loopback clients, trusted proxies and site
// administrators; others get 404. Metrics say more about the site than
// its visitors need to know.
func (s *ops) internal(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a, err := netip.ParseAddr(s.clientIP(r)); err == nil && (a.IsLoopback() || s.trustedAddr(a)) {
			h.ServeHTTP(w, r)
			return
		}
		s.adminOnly(h).ServeHTTP(w, r)
	})
}
