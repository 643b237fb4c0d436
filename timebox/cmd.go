package timebox

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultGrace is how long Cmd waits after SIGTERM before SIGKILL.
const DefaultGrace = 5 * time.Second

// Cmd is an exec.Cmd whose process runs in its own process group, so
// that everything it starts (git spawns pack-objects, index-pack and
// hooks) ends with it. When the context passed to Command is done, the
// whole group gets SIGTERM, and SIGKILL after Grace if anything in it is
// still alive; Wait then reports which of the two it took (ErrTerminated
// or ErrKilled), joined with the context's cause (an *Expired when a
// time box ran out).
//
// Use Cmd's Run, Wait, Output and CombinedOutput, not those of the
// embedded exec.Cmd, which do not clean up the group. Set Grace before
// Start. A Cmd is used by one goroutine, like exec.Cmd.
type Cmd struct {
	*exec.Cmd

	// Grace is the time between SIGTERM and SIGKILL. If zero,
	// DefaultGrace is used.
	Grace time.Duration

	// OnExit, if set, is called when Wait returns, with the time since
	// Start: for accounting of the work a request did (slowlog's Work,
	// which this package does not import).
	OnExit func(d time.Duration)

	ctx     context.Context
	started time.Time

	mu     sync.Mutex // guards the fields below
	termed bool
	killed bool
	timer  *time.Timer
}

// Command returns a Cmd to run name with args, stopped as a process group
// when ctx is done.
func Command(ctx context.Context, name string, args ...string) *Cmd {
	c := &Cmd{Cmd: exec.CommandContext(ctx, name, args...), ctx: ctx}
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = c.terminate
	return c
}

func (c *Cmd) grace() time.Duration {
	if c.Grace > 0 {
		return c.Grace
	}
	return DefaultGrace
}

// terminate is exec.Cmd.Cancel: SIGTERM to the group now, SIGKILL later.
func (c *Cmd) terminate() error {
	pgid := c.Process.Pid
	c.mu.Lock()
	defer c.mu.Unlock()
	c.termed = true
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil {
		return nil // already gone
	}
	c.timer = time.AfterFunc(c.grace(), func() {
		c.mu.Lock()
		c.killed = true
		c.mu.Unlock()
		syscall.Kill(-pgid, syscall.SIGKILL)
	})
	return nil
}

// Start starts the command.
func (c *Cmd) Start() error {
	// The pipes of a grandchild that outlives the group's leader must not
	// keep Wait hanging: close them once SIGKILL has had its chance.
	if c.WaitDelay == 0 {
		c.WaitDelay = c.grace() + time.Second
	}
	c.started = time.Now()
	return c.Cmd.Start()
}

// Wait waits for the command to exit and for the process group to be
// gone if it was stopped.
func (c *Cmd) Wait() error {
	if c.OnExit != nil {
		defer func() { c.OnExit(time.Since(c.started)) }()
	}
	err := c.Cmd.Wait()
	c.mu.Lock()
	termed := c.termed
	c.mu.Unlock()
	if termed {
		// The leader is gone, but members of its group (grandchildren)
		// may still be on their way out, or ignoring SIGTERM until the
		// timer sends SIGKILL. They are not our children, so there is
		// nothing to wait on: watch the group until it is empty.
		pgid := c.Process.Pid
		deadline := time.Now().Add(c.grace() + time.Second)
		for groupAlive(pgid) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if groupAlive(pgid) && syscall.Kill(-pgid, syscall.SIGKILL) == nil {
			c.mu.Lock()
			c.killed = true
			c.mu.Unlock()
		}
	}
	c.mu.Lock()
	killed := c.killed
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	if !termed {
		return err
	}
	how := ErrTerminated
	if killed {
		how = ErrKilled
	}
	cause := context.Cause(c.ctx)
	if err == nil || errors.Is(err, c.ctx.Err()) {
		return errors.Join(how, cause)
	}
	return errors.Join(how, cause, err)
}

// Run starts the command and waits for it.
func (c *Cmd) Run() error {
	if err := c.Start(); err != nil {
		return err
	}
	return c.Wait()
}

// Output runs the command and returns its standard output.
func (c *Cmd) Output() ([]byte, error) {
	if c.Stdout != nil {
		return nil, errors.New("timebox: Stdout already set")
	}
	var out bytes.Buffer
	c.Stdout = &out
	err := c.Run()
	return out.Bytes(), err
}

// CombinedOutput runs the command and returns its standard output and
// standard error.
func (c *Cmd) CombinedOutput() ([]byte, error) {
	if c.Stdout != nil || c.Stderr != nil {
		return nil, errors.New("timebox: Stdout or Stderr already set")
	}
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	return out.Bytes(), err
}

// groupAlive reports whether the process group has a member that is not
// a zombie. Exited grandchildren are reaped by init, not by us, and may
// linger as zombies for a while; they count as gone. Where /proc is
// missing, any member counts.
func groupAlive(pgid int) bool {
	if syscall.Kill(-pgid, 0) != nil {
		return false
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	want := strconv.Itoa(pgid)
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may contain spaces.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) >= 3 && f[2] == want && f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
}
