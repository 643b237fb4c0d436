package forge_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/internal/testenv"
	"github.com/forgekit/forgekit/slowlog"
	"github.com/forgekit/forgekit/timebox"
)

// fragment pushes history in small pushes, which git stores as loose
// objects (fewer than receive.unpackLimit each), as a busy repository
// accumulates them.
func fragment(t *testing.T, dir string, commits int) {
	src := filepath.Join(t.TempDir(), "src")
	testenv.BareRepo(t, src, testenv.RepoOptions{Commits: commits, Files: 1})
	revs := strings.Fields(testenv.Run(t, src, "rev-list", "--reverse", "main"))
	for _, rev := range revs {
		testenv.Run(t, src, "push", "-q", dir, rev+":refs/heads/main")
	}
}

func TestMaintainer(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	var repos []*forge.Repo
	for _, n := range []string{"busy", "quiet"} {
		r, err := s.Create(ctx, "ops", n)
		require.NoError(t, err)
		repos = append(repos, r)
	}
	fragment(t, repos[0].Dir, 6)
	before, _ := forge.Counts(repos[0].Dir)
	require.GreaterOrEqual(t, before, 10)

	m := &forge.Maintainer{Store: s, LooseThreshold: 10, Slice: 1}
	// Each run goes through RunDetached (a watchdog's Do, in forged),
	// which sees its work.
	var jobs []string
	var work slowlog.Tally
	m.RunDetached = func(ctx context.Context, name string, f func(context.Context)) {
		jobs = append(jobs, name)
		w := &slowlog.Work{}
		f(slowlog.WithWork(ctx, w))
		work = w.Tally()
	}
	// One repository per tick: the first tick sees ops/busy.
	res := m.Tick(ctx)
	require.Len(t, res, 1)
	assert.Equal(t, []string{"maintain ops/busy"}, jobs)
	assert.Equal(t, int64(4), work.GitRuns, "repack, commit-graph, prune-packed, prune")
	assert.NoError(t, res[0].Err)
	assert.Equal(t, "ops/busy", res[0].Repo)
	assert.Equal(t, before, res[0].Loose)
	loose, packs := forge.Counts(repos[0].Dir)
	assert.Zero(t, loose)
	assert.Equal(t, 1, packs)
	bitmaps, _ := filepath.Glob(filepath.Join(repos[0].Dir, "objects", "pack", "*.bitmap"))
	assert.Len(t, bitmaps, 1)
	assert.FileExists(t, filepath.Join(repos[0].Dir, "objects", "info", "commit-graph"))
	assert.Empty(t, m.Tick(ctx), "ops/quiet needs nothing")
	assert.Len(t, m.Results(), 1)
}

// TestMaintainerDue: Due walks the repositories a slice at a time and
// names those that need a run, for a queue to schedule; with NoLock, Run
// takes no lock file (the queue's unique job stands for it).
func TestMaintainerDue(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	var repos []*forge.Repo
	for _, n := range []string{"a-busy", "b-quiet", "c-busy"} {
		r, err := s.Create(ctx, "ops", n)
		require.NoError(t, err)
		repos = append(repos, r)
	}
	fragment(t, repos[0].Dir, 3)
	fragment(t, repos[2].Dir, 3)
	m := &forge.Maintainer{Store: s, LooseThreshold: 3, Slice: 2, NoLock: true}
	names := func(rs []forge.Repo) (out []string) {
		for _, r := range rs {
			out = append(out, r.Name)
		}
		return out
	}
	due, err := m.Due(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"a-busy"}, names(due), "first slice: a-busy, b-quiet")
	due, err = m.Due(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"c-busy"}, names(due), "second slice")
	due, err = m.Due(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"a-busy"}, names(due), "then over again")

	_, err = m.Run(ctx, due[0])
	require.NoError(t, err)
	assert.NoFileExists(t, filepath.Join(due[0].Dir, "forgekit-maintenance.lock"))
	due, err = m.Due(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"c-busy"}, names(due))
	due, err = m.Due(ctx)
	require.NoError(t, err)
	assert.Empty(t, due, "a-busy is maintained")
}

func TestMaintainerLockAndLimit(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	r, err := s.Create(ctx, "ops", "locked")
	require.NoError(t, err)
	fragment(t, r.Dir, 2)

	// Another process holds the maintenance lock (flock is per open
	// file, so a second descriptor stands for it).
	f, err := os.OpenFile(filepath.Join(r.Dir, "forgekit-maintenance.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	require.NoError(t, err)
	require.NoError(t, syscall.Flock(int(f.Fd()), syscall.LOCK_EX))
	m := &forge.Maintainer{Store: s}
	_, err = m.Run(ctx, *r)
	assert.ErrorIs(t, err, forge.ErrBusy)
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	f.Close()

	// A run past its limit fails in a controlled way.
	m.Limit = time.Nanosecond
	_, err = m.Run(ctx, *r)
	assert.ErrorIs(t, err, timebox.ErrExpired)
	m.Limit = time.Minute
	_, err = m.Run(ctx, *r)
	assert.NoError(t, err, "and the lock was released")
}

func TestMaintainerInTheBackground(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	r, err := s.Create(ctx, "ops", "bg")
	require.NoError(t, err)
	fragment(t, r.Dir, 4)
	m := &forge.Maintainer{Store: s, LooseThreshold: 5}
	m.Start(10 * time.Millisecond)
	defer m.Close()
	require.Eventually(t, func() bool { return len(m.Results()) == 1 }, 20*time.Second, 10*time.Millisecond)
	loose, _ := forge.Counts(r.Dir)
	assert.Zero(t, loose)
	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "twice is fine")
}

// TestMaintainerLockAcrossProcesses: while another process (flock(1),
// as a second forged would) holds a repository's maintenance lock, a run
// is refused with ErrBusy; once that process is gone, it goes ahead.
func TestMaintainerLockAcrossProcesses(t *testing.T) {
	t.Parallel()
	flock := testenv.Binary(t, "flock", "util-linux")
	s := newStore(t)
	ctx := context.Background()
	r, err := s.Create(ctx, "ops", "shared")
	require.NoError(t, err)
	fragment(t, r.Dir, 2)
	lock := filepath.Join(r.Dir, "forgekit-maintenance.lock")
	// -o: the lock stays with flock(1) itself, not its child, so that it
	// is released exactly when flock has exited.
	holder := exec.Command(flock, "-o", lock, "sh", "-c", "echo held; exec sleep 60")
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := holder.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, holder.Start())
	stop := func() { syscall.Kill(-holder.Process.Pid, syscall.SIGKILL); holder.Wait() }
	t.Cleanup(stop)
	line := make([]byte, 5)
	_, err = io.ReadFull(out, line)
	require.NoError(t, err, "the other process holds the lock")

	m := &forge.Maintainer{Store: s}
	_, err = m.Run(ctx, *r)
	assert.ErrorIs(t, err, forge.ErrBusy)
	stop()
	_, err = m.Run(ctx, *r)
	assert.NoError(t, err)
}

// TestSweepInterruptedPushes: what a push killed midway leaves (its
// quarantine, temporary packs) goes once it is old enough that no push
// under way can be using it.
func TestSweepInterruptedPushes(t *testing.T) {
	t.Parallel()
	testenv.Git(t)
	st, err := forge.NewStore(t.TempDir())
	require.NoError(t, err)
	r, err := st.Create(context.Background(), "alice", "proj")
	require.NoError(t, err)
	old := time.Now().Add(-2 * forge.StaleAge)
	mk := func(p string, dir bool, when time.Time) string {
		full := filepath.Join(r.Dir, p)
		if dir {
			require.NoError(t, os.MkdirAll(filepath.Join(full, "pack"), 0o700))
		} else {
			require.NoError(t, os.WriteFile(full, []byte("x"), 0o600))
		}
		require.NoError(t, os.Chtimes(full, when, when))
		return full
	}
	staleQ := mk("objects/tmp_objdir-incoming-abc", true, old)
	stalePack := mk("objects/pack/tmp_pack_123", false, old)
	fresh := mk("objects/tmp_objdir-incoming-new", true, time.Now())
	m := &forge.Maintainer{Store: st}
	n, err := m.Sweep(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.NoDirExists(t, staleQ)
	assert.NoFileExists(t, stalePack)
	assert.DirExists(t, fresh, "a push under way keeps its quarantine")
	testenv.Run(t, r.Dir, "fsck")
}
