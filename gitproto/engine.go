package gitproto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Service names a git service as it appears in URLs and content types.
type Service string

// The smart services. UploadArchive (git archive --remote) exists only
// in sessions (SSH, git://): smart HTTP has no route for it.
const (
	UploadPack    Service = "git-upload-pack"    // fetch and clone
	ReceivePack   Service = "git-receive-pack"   // push
	UploadArchive Service = "git-upload-archive" // git archive --remote
)

// Engine runs one git service for one request. Handler does everything
// HTTP (routing, auth, limits, caching, status codes) and hands the engine
// a validated Invocation; the engine only speaks the git protocol on
// Stdin/Stdout.
//
// Run must not write anything to Stdout before it has started serving, so
// that an error it returns before its first write can still become an HTTP
// status. Run must return once ctx is done, having stopped all work it
// started.
//
// Handler also looks for two optional methods, with a type assertion:
//
//	MaxVersion() int
//
// reports the highest protocol version the engine speaks; Handler
// answers requests for newer versions in that one, as git clients
// accept. An engine without it speaks versions 0, 1 and 2.
//
//	InfoRefs(ctx context.Context, dir string) ([]byte, error)
//
// returns the refs of the dumb protocol's info/refs file, as git
// update-server-info writes it; an engine without it cannot serve
// Handler.Dumb's info/refs (ErrUnsupported). GitEngine has InfoRefs and
// no MaxVersion.
type Engine interface {
	Run(ctx context.Context, inv *Invocation) error
}

// Invocation describes one run of a service. It belongs to that run: the
// engine may read and change it, and nothing else uses it concurrently.
type Invocation struct {
	Service       Service
	Dir           string // the repository directory (bare, or a .git directory)
	Protocol      string // the validated Git-Protocol value, possibly empty
	Version       int    // the protocol version asked for: 0, 1 or 2
	AdvertiseRefs bool   // serve info/refs rather than a POST
	Stdin         io.Reader
	Stdout        io.Writer

	// Stateful runs the service as SSH and git:// carry it: one
	// full-duplex session on Stdin and Stdout, advertisement and
	// negotiation included, rather than one stateless request. Stdin
	// may then stay open after the service ends (the client closes its
	// side last); the engine does not wait for it. UploadArchive is
	// always stateful.
	Stateful bool

	// Stderr, if set, receives what the service writes to standard
	// error, for a session to pass on to the client.
	Stderr io.Writer

	// Shallow and Filter say, for an upload-pack request (not an
	// advertisement), whether the validated request asks for a shallow
	// fetch (shallow, deepen, deepen-since, deepen-not) or a partial
	// one (filter), so that an engine can refuse what it does not
	// support without parsing the request again.
	Shallow, Filter bool

	// MaxInputSize, if positive, is the most a receive-pack may read.
	MaxInputSize int64

	// Push carries the pusher's identity for receive-pack when hooks are
	// set; the engine fills in Updates and Env before calling the hooks.
	Push *Push

	// PreReceive, if set, is called by receive-pack after the objects
	// arrived and before any ref moves. Refs it rejects with Push.Reject
	// are not updated; an error rejects the whole push.
	PreReceive func(ctx context.Context, p *Push) error

	// PostReceive, if set, is called with the updates that succeeded.
	PostReceive func(ctx context.Context, p *Push)
}

// EngineError is returned by GitEngine when the git process fails.
type EngineError struct {
	Service  Service
	ExitCode int    // -1 if killed by a signal
	Stderr   string // the tail of what git wrote to standard error
	Killed   bool   // the process group was killed because ctx ended
}

func (e *EngineError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "gitproto: %s", strings.TrimPrefix(string(e.Service), "git-"))
	if e.Killed {
		b.WriteString(" killed")
	} else {
		fmt.Fprintf(&b, " exited with status %d", e.ExitCode)
	}
	if s := strings.TrimSpace(e.Stderr); s != "" {
		b.WriteString(": ")
		b.WriteString(s)
	}
	return b.String()
}

// Defaults for GitEngine.
const (
	DefaultWaitDelay = 5 * time.Second
	maxStderr        = 8 << 10
	killGrace        = 2 * time.Second // from SIGTERM to SIGKILL
)

// GitEngine runs the git binary (`git upload-pack --stateless-rpc` and
// `git receive-pack --stateless-rpc`), which supports everything git
// http-backend does: protocol v2, shallow and partial clones, bitmaps,
// multi_ack_detailed, side-band-64k. Every run gets its own process group,
// killed as a whole when the context ends, so no pack-objects, index-pack
// or hook outlives its request.
//
// Push hooks are bridged back into the serving process: for a push with
// PreReceive or PostReceive set, GitEngine writes tiny POSIX shell hooks
// into a private temporary directory, points core.hooksPath at it for that
// one receive-pack, and answers the hooks over a pair of named pipes. The
// embedding application needs no setup for this, but the repository's own
// hooks do not run for such pushes. Hooks need a Unix system with /bin/sh.
//
// A GitEngine is safe for concurrent use.
type GitEngine struct {
	// Path is the git binary. If empty, "git" is looked up on PATH.
	Path string

	// Env is added to the environment of every git process. The server's
	// own GIT_* variables are never passed on.
	Env []string

	// WaitDelay bounds how long Run waits for the pipes of a finished or
	// killed process to close. If zero, DefaultWaitDelay is used.
	WaitDelay time.Duration

	// NoFilter disables partial clone (uploadpack.allowFilter, and for
	// the lazy fetches of partial clones over v0 and v1
	// uploadpack.allowReachableSHA1InWant), which is enabled by default.
	NoFilter bool

	// Logger receives git's standard error at debug level. If nil,
	// nothing is logged.
	Logger *slog.Logger

	// OnRun, if set, is told of every git process Run and InfoRefs ran,
	// with the context of the request it served and how long it took,
	// for per-request accounting (slowlog's Work, which this package
	// does not import). svc is the invocation's service, or
	// "git-show-ref" for InfoRefs (not a Service the Handler routes).
	OnRun func(ctx context.Context, svc Service, d time.Duration)

	sweep sync.Once
}

// ran tells OnRun of a process started at start.
func (e *GitEngine) ran(ctx context.Context, svc Service, start time.Time) {
	if e.OnRun != nil {
		e.OnRun(ctx, svc, time.Since(start))
	}
}

func (e *GitEngine) path() (string, error) {
	if e.Path != "" {
		return e.Path, nil
	}
	p, err := exec.LookPath("git")
	if err != nil {
		return "", fmt.Errorf("gitproto: git binary not found: %w", err)
	}
	return p, nil
}

// Run implements Engine.
func (e *GitEngine) Run(ctx context.Context, inv *Invocation) error {
	// What a crashed server left (push bridges) goes at the first run.
	e.sweep.Do(sweepHookDirs)
	git, err := e.path()
	if err != nil {
		return err
	}
	var args []string
	if inv.Service == UploadPack && !e.NoFilter {
		// A partial clone fetches missing objects later by id. v0 and
		// v1 need allowReachableSHA1InWant for that: objects reachable
		// from a ref, and never others (a commit force-pushed away, a
		// secret with it, stays unfetchable until gc). (Protocol v2
		// lets upload-pack accept any object it has: that is git's
		// design, and git http-backend's too.)
		args = append(args, "-c", "uploadpack.allowFilter=true", "-c", "uploadpack.allowReachableSHA1InWant=true")
	}
	env := cleanEnv(os.Environ(), e.Env)
	if inv.Protocol != "" {
		env = append(env, "GIT_PROTOCOL="+inv.Protocol)
	}
	var bridge *hookBridge
	if inv.Service == ReceivePack {
		if inv.MaxInputSize > 0 {
			args = append(args, "-c", "receive.maxInputSize="+strconv.FormatInt(inv.MaxInputSize, 10))
		}
		if !inv.AdvertiseRefs && (inv.PreReceive != nil || inv.PostReceive != nil) {
			bridge, err = newHookBridge(inv)
			if err != nil {
				return err
			}
			defer bridge.close()
			args = append(args, "-c", "core.hooksPath="+bridge.hooksDir())
			env = append(env, hookDirEnv+"="+bridge.dir, "GITPROTO_SERVER_PID="+strconv.Itoa(os.Getpid()),
				"GITPROTO_HOOK_TIMEOUT="+strconv.Itoa(int(hookTimeout.Seconds())))
		}
	}
	args = append(args, strings.TrimPrefix(string(inv.Service), "git-"))
	stateful := inv.Stateful || inv.Service == UploadArchive
	if !stateful {
		args = append(args, "--stateless-rpc")
	}
	if inv.AdvertiseRefs && !stateful {
		args = append(args, "--advertise-refs")
	}
	args = append(args, inv.Dir)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, git, args...)
	cmd.Dir = inv.Dir
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var killed bool
	// Stopping git is two steps. SIGTERM first, to the whole process
	// group (the negative pid: git and the pack-objects, index-pack and
	// hooks it started): git removes its quarantine, lock files and
	// temporary packs on SIGTERM, and SIGKILL would leave them behind (a
	// client that hangs up in the middle of a push). SIGKILL follows for
	// a group still alive after killGrace.
	var (
		killMu sync.Mutex // guards reaped, and killing after the reap
		reaped bool
	)
	kill := func(sig syscall.Signal) error {
		killMu.Lock()
		defer killMu.Unlock()
		if reaped { // the pid may belong to someone else by now
			return os.ErrProcessDone
		}
		return syscall.Kill(-cmd.Process.Pid, sig)
	}
	cmd.Cancel = func() error {
		killed = true
		time.AfterFunc(killGrace, func() { kill(syscall.SIGKILL) })
		return kill(syscall.SIGTERM)
	}
	cmd.WaitDelay = e.WaitDelay
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = DefaultWaitDelay
	}
	var stdin io.WriteCloser
	switch {
	case stateful && inv.Stdin != nil:
		// Fed by a goroutine of ours that Wait does not wait for: the
		// session's input stays open until the client hangs up.
		if stdin, err = cmd.StdinPipe(); err != nil {
			return fmt.Errorf("gitproto: %w", err)
		}
	case inv.Stdin != nil:
		cmd.Stdin = inv.Stdin
	}
	stderr := &tailBuffer{max: maxStderr}
	cmd.Stderr = stderr
	if inv.Stderr != nil {
		cmd.Stderr = io.MultiWriter(stderr, inv.Stderr)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("gitproto: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("gitproto: starting git: %w", err)
	}
	defer e.ran(ctx, inv.Service, time.Now())
	if bridge != nil {
		bridge.start(ctx)
	}
	if stdin != nil {
		go func() {
			io.Copy(stdin, inv.Stdin)
			stdin.Close()
		}()
	}
	buf := make([]byte, 64<<10)
	_, copyErr := io.CopyBuffer(inv.Stdout, stdout, buf)
	switch {
	case copyErr == nil:
	case inv.Service == ReceivePack:
		// The client went away in the middle of a push. receive-pack
		// removes its quarantine when its input ends, not when it is
		// signalled (git 2.39 leaves the directory behind on SIGTERM as
		// on SIGKILL): end its input, drain what it says, and stop it
		// only if it has not finished in killGrace.
		if stdin != nil {
			stdin.Close()
		}
		t := time.AfterFunc(killGrace, cancel)
		io.Copy(io.Discard, stdout)
		t.Stop()
	default:
		// The client went away or the response failed: stop git now
		// rather than let it finish a pack nobody reads.
		cancel()
	}
	waitErr := cmd.Wait()
	killMu.Lock()
	reaped = true
	killMu.Unlock()
	if bridge != nil {
		bridge.close()
		if waitErr == nil && copyErr == nil {
			bridge.postReceive(ctx)
		}
	}
	if e.Logger != nil && stderr.Len() > 0 {
		e.Logger.DebugContext(ctx, "git stderr", "service", inv.Service, "dir", inv.Dir, "stderr", stderr.String())
	}
	if copyErr != nil {
		return fmt.Errorf("gitproto: writing response: %w", copyErr)
	}
	if waitErr != nil {
		ee := &EngineError{Service: inv.Service, ExitCode: -1, Stderr: stderr.String(), Killed: killed}
		var xe *exec.ExitError
		if errors.As(waitErr, &xe) {
			ee.ExitCode = xe.ExitCode()
		}
		if killed && ctx.Err() != nil {
			return errors.Join(ee, context.Cause(ctx))
		}
		return ee
	}
	return nil
}

// InfoRefs lists dir's refs for the dumb protocol, as git
// update-server-info would: "<id>\t<ref>\n" in ref order, each annotated
// tag followed by the object it finally points to, named "<ref>^{}".
func (e *GitEngine) InfoRefs(ctx context.Context, dir string) ([]byte, error) {
	git, err := e.path()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, git, "show-ref", "--dereference")
	cmd.Dir = dir
	cmd.Env = cleanEnv(os.Environ(), append([]string{"GIT_DIR=" + dir}, e.Env...))
	defer e.ran(ctx, "git-show-ref", time.Now())
	out, err := cmd.Output()
	if xe, ok := err.(*exec.ExitError); ok && xe.ExitCode() == 1 && len(out) == 0 {
		return nil, nil // no refs
	}
	if err != nil {
		return nil, fmt.Errorf("gitproto: show-ref: %w", err)
	}
	// show-ref separates with a space; info/refs with a tab.
	for i := 0; i < len(out); {
		if sp := bytes.IndexByte(out[i:], ' '); sp >= 0 {
			out[i+sp] = '\t'
		}
		nl := bytes.IndexByte(out[i:], '\n')
		if nl < 0 {
			break
		}
		i += nl + 1
	}
	return out, nil
}

// cleanEnv returns base without any GIT_* variable (a server started from
// inside a git hook must not leak its GIT_DIR into the repositories it
// serves), plus extra.
func cleanEnv(base, extra []string) []string {
	env := make([]string, 0, len(base)+len(extra)+2)
	for _, kv := range base {
		if strings.HasPrefix(kv, "GIT_") || strings.HasPrefix(kv, "GITPROTO_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// tailBuffer keeps the last max bytes written to it. It is safe for
// concurrent use, as os/exec may write from its own goroutine.
type tailBuffer struct {
	max int
	mu  sync.Mutex // guards b
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.b)
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.ToValidUTF8(t.b, []byte("?")))
}
