package slowlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/smtp"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Sink delivers reports. Send is called from one goroutine at a time, the
// watchdog's delivery goroutine, with a context bounded by
// DefaultSendTimeout.
type Sink interface {
	Send(ctx context.Context, r *Report) error
}

// SinkFunc adapts a function to the Sink interface.
type SinkFunc func(ctx context.Context, r *Report) error

// Send calls f(ctx, r).
func (f SinkFunc) Send(ctx context.Context, r *Report) error { return f(ctx, r) }

// Sinks sends every report to each of its sinks and returns their errors
// joined.
type Sinks []Sink

// Send implements Sink.
func (s Sinks) Send(ctx context.Context, r *Report) error {
	var errs []error
	for _, sink := range s {
		if err := sink.Send(ctx, r); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SlogSink logs each report at warning level (finals at info), the full
// text in the "report" attribute.
type SlogSink struct {
	Logger *slog.Logger // if nil, reports are dropped
}

// Send implements Sink.
func (s SlogSink) Send(ctx context.Context, r *Report) error {
	if s.Logger == nil {
		return nil
	}
	level, msg := slog.LevelWarn, "slowlog: slow "+r.Kind
	if r.Final {
		level, msg = slog.LevelInfo, "slowlog: slow "+r.Kind+" ended"
	}
	s.Logger.Log(ctx, level, msg, "id", r.ID, "method", r.Method, "route", r.Route,
		"elapsed", r.Elapsed, "status", r.Status, "report", r.String())
	return nil
}

// DefaultMaxFiles is the number of files a DirSink keeps when MaxFiles is
// zero.
const DefaultMaxFiles = 1000

// DirSink writes one text file per report into Dir, like dogslow's output
// directory, and removes the oldest beyond MaxFiles. It is safe for
// concurrent use.
type DirSink struct {
	Dir      string
	MaxFiles int // if zero, DefaultMaxFiles

	mu sync.Mutex // serializes writes and pruning
}

// Send implements Sink.
func (d *DirSink) Send(ctx context.Context, r *Report) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := os.MkdirAll(d.Dir, 0o750); err != nil {
		return fmt.Errorf("slowlog: %w", err)
	}
	kind := "slow"
	if r.Final {
		kind = "end"
	}
	name := fmt.Sprintf("%s-%s-%s-%d.txt", time.Now().UTC().Format("20060102T150405.000000000"), safeName(r.ID), kind, r.Seq)
	if err := os.WriteFile(filepath.Join(d.Dir, name), []byte(r.String()), 0o640); err != nil {
		return fmt.Errorf("slowlog: %w", err)
	}
	max := d.MaxFiles
	if max <= 0 {
		max = DefaultMaxFiles
	}
	files, _ := filepath.Glob(filepath.Join(d.Dir, "*.txt"))
	if len(files) > max {
		sort.Strings(files) // names start with the time
		for _, f := range files[:len(files)-max] {
			os.Remove(f)
		}
	}
	return nil
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// WebhookSink POSTs each report as JSON to URL.
type WebhookSink struct {
	URL    string
	Client *http.Client // if nil, http.DefaultClient
}

// Send implements Sink.
func (s WebhookSink) Send(ctx context.Context, r *Report) error {
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("slowlog: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("slowlog: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	c := s.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("slowlog: webhook: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("slowlog: webhook: %s", resp.Status)
	}
	return nil
}

// EmailSink mails each slow report (not the final lines) through the SMTP
// server at Addr, as dogslow does.
type EmailSink struct {
	Addr string // host:port
	Auth smtp.Auth
	From string
	To   []string
}

// Send implements Sink.
func (s EmailSink) Send(ctx context.Context, r *Report) error {
	if r.Final {
		return nil
	}
	var msg bytes.Buffer
	fmt.Fprintf(&msg, "From: %s\r\nTo: %s\r\nSubject: slow %s: %s %s (%s)\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		s.From, strings.Join(s.To, ", "), r.Kind, r.Method, r.Route, r.Elapsed.Round(time.Millisecond))
	msg.WriteString(strings.ReplaceAll(r.String(), "\n", "\r\n"))
	done := make(chan error, 1)
	go func() { done <- smtp.SendMail(s.Addr, s.Auth, s.From, s.To, msg.Bytes()) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("slowlog: email: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("slowlog: email: %w", context.Cause(ctx))
	}
}

// ReportsHandler serves the recent reports: a list, newest first, at its
// root, and one report as text with ?seq=N. The application decides who
// may reach it; it shows stacks and URLs.
func (wd *Watchdog) ReportsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		reports := wd.Reports()
		if seq := r.URL.Query().Get("seq"); seq != "" {
			for _, rep := range reports {
				if fmt.Sprint(rep.Seq) == seq {
					fmt.Fprint(w, rep.String())
					return
				}
			}
			http.Error(w, "no such report", http.StatusNotFound)
			return
		}
		for _, rep := range reports {
			what := "slow"
			if rep.Final {
				what = "ended"
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s %s\t%s\t%s\n", rep.Seq, rep.Start.Format(time.RFC3339), what, rep.Method, rep.Route, rep.Elapsed.Round(time.Millisecond), rep.ID)
		}
	})
}
