package forge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/forgekit/forgekit/slowlog"
	"github.com/forgekit/forgekit/timebox"
)

// Defaults for Maintainer.
const (
	DefaultLooseThreshold = 1000
	DefaultPackThreshold  = 20
	DefaultMaintainLimit  = 30 * time.Minute
	DefaultMaintainSlice  = 10
)

// MaintainResult is the outcome of one maintenance run.
type MaintainResult struct {
	Repo          string
	Start         time.Time
	Duration      time.Duration
	Loose, Packs  int   // before the run
	Before, After int64 // repository size in bytes
	Err           error
}

// Maintainer keeps repositories fast: the ones whose loose objects or
// packs pass a threshold are repacked into one pack with a bitmap index
// and get a fresh commit-graph (a Bitbucket lesson: one request went from
// 35 s to 0.1 s after a git gc of a fragmented repository). Each Tick
// looks at a slice of the repositories, so the work spreads over time;
// each run is time-boxed (its git process group killed past Limit) and
// holds a lock file inside the repository, so that no two processes
// sharing the data directory maintain one repository at once (unless
// NoLock: a queue with unique jobs schedules the runs instead, with Due
// and Run). A
// Maintainer is safe for concurrent use; set its fields before use.
type Maintainer struct {
	Store *Store

	// LooseThreshold is the loose-object count that calls for a run. If
	// zero, DefaultLooseThreshold.
	LooseThreshold int
	// PackThreshold is the pack count that calls for a run. If zero,
	// DefaultPackThreshold.
	PackThreshold int
	// Limit bounds one run. If zero, DefaultMaintainLimit.
	Limit time.Duration
	// Slice is how many repositories a Tick looks at. If zero,
	// DefaultMaintainSlice.
	Slice int
	// Logger receives the runs' outcomes. If nil, nothing is logged.
	Logger *slog.Logger

	// RunDetached, if set, runs each repository's maintenance of a Tick,
	// for example with a slowlog Watchdog's Do, so that a slow run is
	// reported with its stacks and its work (its git processes are
	// counted into the slowlog.Work of its context). It must call f,
	// with a context derived from ctx, and return when f does. If nil,
	// runs just run.
	RunDetached func(ctx context.Context, name string, f func(ctx context.Context))

	// NoLock leaves out Run's lock file, for a caller that already runs
	// at most one maintenance of a repository at a time across
	// processes: a durable queue's unique job per repository (forged).
	NoLock bool

	mu      sync.Mutex // guards cursor, results and stop
	cursor  string
	results []MaintainResult
	stop    context.CancelFunc
	done    chan struct{}
}

// DefaultMaintainEvery is the time between ticks of Start.
const DefaultMaintainEvery = time.Minute

// StaleAge is how old what an interrupted push left in a repository must
// be before Sweep removes it: a push under way has its quarantine in use.
const StaleAge = time.Hour

// sweepRepo removes what pushes killed midway left in the repository in
// dir (their server or git killed): quarantine directories and temporary
// pack files older than age. It returns how many it removed.
func sweepRepo(dir string, age time.Duration) int {
	var stale []string
	for _, pattern := range []string{"objects/tmp_objdir-incoming-*", "objects/incoming-*", "objects/pack/tmp_pack_*", "objects/pack/tmp_idx_*", "objects/pack/tmp_rev_*"} {
		m, _ := filepath.Glob(filepath.Join(dir, pattern))
		stale = append(stale, m...)
	}
	n := 0
	for _, p := range stale {
		if fi, err := os.Lstat(p); err == nil && time.Since(fi.ModTime()) > age {
			if os.RemoveAll(p) == nil {
				n++
			}
		}
	}
	return n
}

// Sweep removes, from every repository, what pushes killed midway left
// (see StaleAge), and returns how many it removed. Start runs it first.
func (m *Maintainer) Sweep(ctx context.Context) (int, error) {
	n := 0
	after := ""
	for {
		page, next, err := m.Store.List(ctx, "", after, 500)
		if err != nil {
			return n, err
		}
		for _, r := range page {
			if err := ctx.Err(); err != nil {
				return n, err
			}
			n += sweepRepo(r.Dir, StaleAge)
		}
		if next == "" {
			break
		}
		after = next
	}
	if n > 0 && m.Logger != nil {
		m.Logger.Info("forge: removed what interrupted pushes left", "count", n)
	}
	return n, nil
}

// Start runs Sweep, then Tick every interval (DefaultMaintainEvery if
// zero), in the background until Close; a run already under way is cancelled by Close
// (its git processes killed, the repository left as git leaves it).
func (m *Maintainer) Start(every time.Duration) {
	if every <= 0 {
		every = DefaultMaintainEvery
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stop != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.stop, m.done = cancel, make(chan struct{})
	go func() {
		defer close(m.done)
		m.Sweep(ctx)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				m.Tick(ctx)
			}
		}
	}()
}

// Close stops the background ticks started by Start and waits for them.
func (m *Maintainer) Close() error {
	m.mu.Lock()
	stop, done := m.stop, m.done
	m.stop = nil
	m.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	return nil
}

// Counts returns the loose objects and the packs of the repository in dir.
func Counts(dir string) (loose, packs int) {
	subs, _ := filepath.Glob(filepath.Join(dir, "objects", "[0-9a-f][0-9a-f]"))
	for _, s := range subs {
		ents, _ := os.ReadDir(s)
		loose += len(ents)
	}
	p, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "pack-*.pack"))
	return loose, len(p)
}

func (m *Maintainer) needs(dir string) (bool, int, int) {
	lt, pt := m.LooseThreshold, m.PackThreshold
	if lt <= 0 {
		lt = DefaultLooseThreshold
	}
	if pt <= 0 {
		pt = DefaultPackThreshold
	}
	loose, packs := Counts(dir)
	return loose >= lt || packs >= pt, loose, packs
}

// Due sweeps the next Slice repositories (removing what interrupted
// pushes left, see StaleAge) and returns those whose counts call for a
// Run. Each call moves on to the next slice, and starts over after the
// last: a scheduler calling it every minute (Tick, or a queue's
// periodic job) spreads the work over time.
func (m *Maintainer) Due(ctx context.Context) ([]Repo, error) {
	slice := m.Slice
	if slice <= 0 {
		slice = DefaultMaintainSlice
	}
	m.mu.Lock()
	after := m.cursor
	m.mu.Unlock()
	page, next, err := m.Store.List(ctx, "", after, slice)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.cursor = next // "" starts over at the next tick
	m.mu.Unlock()
	var due []Repo
	for _, r := range page {
		sweepRepo(r.Dir, StaleAge)
		if ok, _, _ := m.needs(r.Dir); ok {
			due = append(due, r)
		}
	}
	return due, nil
}

// Tick maintains, among the next Slice repositories, those that need it
// (see Due).
func (m *Maintainer) Tick(ctx context.Context) []MaintainResult {
	page, err := m.Due(ctx)
	if err != nil {
		return nil
	}
	var out []MaintainResult
	for _, r := range page {
		var res MaintainResult
		var err error
		ran := false
		run := func(ctx context.Context) { ran = true; res, err = m.Run(ctx, r) }
		if m.RunDetached != nil {
			m.RunDetached(ctx, "maintain "+r.Owner+"/"+r.Name, run)
		}
		if !ran {
			run(ctx) // no hook, or a broken one: the run is not lost
		}
		if errors.Is(err, ErrBusy) {
			continue
		}
		out = append(out, res)
	}
	return out
}

// Run maintains one repository now, whatever its counts.
func (m *Maintainer) Run(ctx context.Context, r Repo) (MaintainResult, error) {
	res := MaintainResult{Repo: r.Owner + "/" + r.Name, Start: time.Now()}
	_, res.Loose, res.Packs = m.needs(r.Dir)
	if !m.NoLock {
		lock, err := os.OpenFile(filepath.Join(r.Dir, "forgekit-maintenance.lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return res, fmt.Errorf("forge: %w", err)
		}
		defer lock.Close()
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			return res, ErrBusy
		}
		defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	}
	res.Before = dirSize(r.Dir)
	limit := m.Limit
	if limit <= 0 {
		limit = DefaultMaintainLimit
	}
	git := m.Store.git()
	res.Err = timebox.Box{Name: "maintain " + res.Repo, Limit: limit}.Do(ctx, func(ctx context.Context) error {
		for _, args := range [][]string{
			{"repack", "-a", "-d", "-q", "--write-bitmap-index"},
			{"commit-graph", "write", "--reachable", "--changed-paths"}, // Bloom filters for path history
			{"prune-packed", "-q"},
			{"prune", "--expire=2.weeks.ago"}, // as gc does: recent objects may belong to pushes in flight
		} {
			cmd := timebox.Command(ctx, git, args...)
			cmd.Dir = r.Dir
			cmd.Grace = 5 * time.Second
			cmd.OnExit = func(d time.Duration) { slowlog.Count(ctx, slowlog.GitRun, d) }
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("forge: git %s: %w: %s", args[0], err, out)
			}
		}
		return nil
	})
	res.After = dirSize(r.Dir)
	res.Duration = time.Since(res.Start)
	m.mu.Lock()
	m.results = append(m.results, res)
	if len(m.results) > 1000 {
		m.results = m.results[len(m.results)-1000:]
	}
	m.mu.Unlock()
	if m.Logger != nil {
		m.Logger.Info("forge: maintained", "repo", res.Repo, "loose", res.Loose, "packs", res.Packs,
			"before", res.Before, "after", res.After, "duration", res.Duration, "err", res.Err)
	}
	return res, res.Err
}

// Results returns the recent runs, oldest first, for a status page.
func (m *Maintainer) Results() []MaintainResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]MaintainResult(nil), m.results...)
}
