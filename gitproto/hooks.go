package gitproto

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// RefUpdate is one ref a push asks to move. Old is all zeros for a create,
// New is all zeros for a delete.
type RefUpdate struct {
	Ref string // full name, e.g. refs/heads/main
	Old string // hex object id
	New string // hex object id
}

// IsCreate reports whether the update creates the ref.
func (u RefUpdate) IsCreate() bool { return zeroOID(u.Old) }

// IsDelete reports whether the update deletes the ref.
func (u RefUpdate) IsDelete() bool { return zeroOID(u.New) }

func zeroOID(s string) bool { return strings.Trim(s, "0") == "" }

// Push is what the push hooks see of one receive-pack request. A Push is
// used by one goroutine at a time: the hook that received it.
type Push struct {
	Repo      string      // the repository name from the URL
	Dir       string      // its directory
	Principal string      // who is pushing, as the Authorizer said
	Updates   []RefUpdate // in the order the client sent them

	// Env, set by GitEngine during PreReceive, holds the variables that
	// let git commands run with Dir as their working directory see the
	// pushed objects while they are still in quarantine
	// (GIT_OBJECT_DIRECTORY, GIT_ALTERNATE_OBJECT_DIRECTORIES,
	// GIT_QUARANTINE_PATH).
	Env []string

	// Ancestor, if set, answers IsAncestor. Engines that do not run git
	// (see package gitproto/gogit) set it; if nil, IsAncestor runs git
	// merge-base in Dir with Env.
	Ancestor func(ctx context.Context, a, b string) (bool, error)

	rejected map[string]string
}

// Reject refuses the update of ref with a reason the pushing user sees.
// Other refs of the same push go ahead.
func (p *Push) Reject(ref, reason string) {
	if p.rejected == nil {
		p.rejected = make(map[string]string)
	}
	if reason == "" {
		reason = "rejected by policy"
	}
	p.rejected[ref] = reason
}

// Rejected returns the reason ref was rejected, if it was.
func (p *Push) Rejected(ref string) (reason string, ok bool) {
	reason, ok = p.rejected[ref]
	return reason, ok
}

// IsAncestor reports whether commit a is an ancestor of (or equal to)
// commit b, seeing the pushed objects. A hook uses it to tell a
// fast-forward (IsAncestor(ctx, u.Old, u.New)) from a force-push.
func (p *Push) IsAncestor(ctx context.Context, a, b string) (bool, error) {
	if p.Ancestor != nil {
		return p.Ancestor(ctx, a, b)
	}
	if quickAncestor(p.Env, a, b) {
		return true, nil
	}
	git, err := exec.LookPath("git")
	if err != nil {
		return false, fmt.Errorf("gitproto: IsAncestor needs git: %w", err)
	}
	cmd := exec.CommandContext(ctx, git, "merge-base", "--is-ancestor", a, b)
	cmd.Dir = p.Dir
	cmd.Env = append(cleanEnv(os.Environ(), nil), p.Env...)
	err = cmd.Run()
	if err == nil {
		return true, nil
	}
	if xe, ok := err.(*exec.ExitError); ok && xe.ExitCode() == 1 {
		return false, nil
	}
	return false, fmt.Errorf("gitproto: merge-base %s %s: %w", a, b, err)
}

// maxQuickWalk bounds quickAncestor's walk through the pushed commits.
const maxQuickWalk = 1000

// quickAncestor proves, without a git process, the common case of a push
// that moves a branch forward: a reached from b through the parents of
// the commits the push brought, which (a push of fewer than git's
// receive.unpackLimit objects) lie loose in the quarantine. It reports
// false when it cannot tell (b packed, a not among the new commits'
// ancestors within reach, no quarantine), and IsAncestor then asks git.
func quickAncestor(env []string, a, b string) bool {
	if a == b {
		return validOID([]byte(a))
	}
	var objects string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GIT_OBJECT_DIRECTORY="); ok {
			objects = v
		}
	}
	if objects == "" || !validOID([]byte(a)) || !validOID([]byte(b)) {
		return false
	}
	queue, seen := []string{b}, map[string]bool{b: true}
	for len(queue) > 0 && len(seen) <= maxQuickWalk {
		c := queue[0]
		queue = queue[1:]
		parents, ok := looseParents(objects, c)
		if !ok {
			continue // not a new commit: beyond what this walk reads
		}
		for _, pid := range parents {
			if pid == a {
				return true
			}
			if !seen[pid] {
				seen[pid] = true
				queue = append(queue, pid)
			}
		}
	}
	return false
}

// looseParents reads the parents of the loose commit id under objects.
func looseParents(objects, id string) ([]string, bool) {
	f, err := os.Open(filepath.Join(objects, id[:2], id[2:]))
	if err != nil {
		return nil, false
	}
	defer f.Close()
	zr, err := zlib.NewReader(f)
	if err != nil {
		return nil, false
	}
	defer zr.Close()
	// The header and the lines before the message; a commit's parents
	// come right after its tree.
	head := make([]byte, 4096)
	n, _ := io.ReadFull(zr, head)
	head = head[:n]
	hdr, body, ok := bytes.Cut(head, []byte{0})
	if !ok || !bytes.HasPrefix(hdr, []byte("commit ")) {
		return nil, false
	}
	var parents []string
	for _, line := range bytes.Split(body, []byte{'\n'}) {
		if pid, ok := bytes.CutPrefix(line, []byte("parent ")); ok && validOID(pid) {
			parents = append(parents, string(pid))
		} else if !bytes.HasPrefix(line, []byte("tree ")) {
			return parents, true
		}
	}
	return nil, false // cut before the end of the parents
}

// hookDirEnv names the per-push bridge directory in the hooks' environment.
const hookDirEnv = "GITPROTO_HOOK_DIR"

// hookScript is installed as pre-receive, update and post-receive. It
// forwards its arguments, the quarantine variables and its standard input
// to the serving process over the req pipe, then relays the answer from
// the resp pipe: "msg TEXT" lines go to standard error (which git shows
// the pusher as "remote: TEXT") and "exit N" ends it. If the server is
// gone, resp reaches end of file and the hook fails closed.
//
// A hook never outlives the server, nor waits on it without bound: a
// watcher ends it when the server's process is gone (a server killed
// with -9 leaves no one to answer, and opening a pipe nobody writes would
// block for ever) or after GITPROTO_HOOK_TIMEOUT seconds. The watcher
// holds none of the hook's pipes, which git waits on.
const hookScript = `#!/bin/sh
# Written by github.com/forgekit/forgekit/gitproto for a single push.
d=$GITPROTO_HOOK_DIR
if [ -z "$d" ] || [ ! -p "$d/req" ]; then
	echo "gitproto: hook bridge unavailable" >&2
	exit 1
fi
# update only enforces what pre-receive refused; with nothing refused
# there is nothing to ask.
if [ "${0##*/}" = update ] && [ ! -e "$d/rejected" ]; then
	exit 0
fi
me=$$
(
	n=0
	while kill -0 "$GITPROTO_SERVER_PID" 2>/dev/null && [ "$n" -lt "$GITPROTO_HOOK_TIMEOUT" ]; do
		sleep 1
		n=$((n + 1))
	done
	kill -TERM "$me" 2>/dev/null
) </dev/null >/dev/null 2>&1 &
watcher=$!
exec 4<"$d/resp" || exit 1
h=${0##*/}
{
	printf 'hook %s' "$h"
	for a in "$@"; do printf ' %s' "$a"; done
	printf '\n'
	[ -n "${GIT_QUARANTINE_PATH-}" ] && printf 'env GIT_QUARANTINE_PATH=%s\n' "$GIT_QUARANTINE_PATH"
	[ -n "${GIT_OBJECT_DIRECTORY-}" ] && printf 'env GIT_OBJECT_DIRECTORY=%s\n' "$GIT_OBJECT_DIRECTORY"
	[ -n "${GIT_ALTERNATE_OBJECT_DIRECTORIES-}" ] && printf 'env GIT_ALTERNATE_OBJECT_DIRECTORIES=%s\n' "$GIT_ALTERNATE_OBJECT_DIRECTORIES"
	if [ "$h" != update ]; then
		while IFS= read -r l; do printf 'in %s\n' "$l"; done
	fi
	printf 'end\n'
} >"$d/req"
code=1
while IFS= read -r l <&4; do
	case $l in
	"msg "*) printf '%s\n' "${l#msg }" >&2 ;;
	"exit "*) code=${l#exit }; break ;;
	esac
done
kill "$watcher" 2>/dev/null
exit "$code"
`

// hookTimeout bounds a hook's wait for the server's answer.
const hookTimeout = time.Hour

// hookDirPrefix names bridge directories, with the serving process's id,
// so that a later process can tell the ones a crashed process left.
func hookDirPrefix(pid int) string { return "gitproto-push-" + strconv.Itoa(pid) + "-" }

// sweepHookDirs removes the bridge directories of processes that are
// gone (a server killed during a push leaves its directory).
func sweepHookDirs() {
	ents, _ := os.ReadDir(os.TempDir())
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "gitproto-push-")
		if !ok || !e.IsDir() {
			continue
		}
		ps, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(ps)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(filepath.Join(os.TempDir(), e.Name()))
		}
	}
}

// hookBridge answers the hooks of one receive-pack run.
type hookBridge struct {
	inv       *Invocation
	dir       string
	req, resp *os.File
	wg        sync.WaitGroup
	closeOnce sync.Once

	// Written only by the serve goroutine; read after it has exited.
	push *Push
	post []RefUpdate
}

func newHookBridge(inv *Invocation) (*hookBridge, error) {
	dir, err := os.MkdirTemp("", hookDirPrefix(os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("gitproto: hook bridge: %w", err)
	}
	b := &hookBridge{inv: inv, dir: dir}
	fail := func(err error) (*hookBridge, error) {
		b.close()
		return nil, fmt.Errorf("gitproto: hook bridge: %w", err)
	}
	hooks := b.hooksDir()
	if err := os.Mkdir(hooks, 0o700); err != nil {
		return fail(err)
	}
	names := []string{"pre-receive", "update"}
	if b.reftable() {
		// What succeeded is read from the refs after the push (see
		// succeeded), which this package reads in the files backend
		// only; reftable repositories report it through a hook.
		names = append(names, "post-receive")
	}
	for _, name := range names {
		if err := os.WriteFile(filepath.Join(hooks, name), []byte(hookScript), 0o700); err != nil {
			return fail(err)
		}
	}
	for _, name := range []string{"req", "resp"} {
		if err := syscall.Mkfifo(filepath.Join(dir, name), 0o600); err != nil {
			return fail(err)
		}
	}
	// Opening both pipes read-write never blocks, keeps them from
	// reporting end of file between hooks, and lets close unblock a read.
	if b.req, err = os.OpenFile(filepath.Join(dir, "req"), os.O_RDWR, 0); err != nil {
		return fail(err)
	}
	if b.resp, err = os.OpenFile(filepath.Join(dir, "resp"), os.O_RDWR, 0); err != nil {
		return fail(err)
	}
	return b, nil
}

func (b *hookBridge) hooksDir() string { return filepath.Join(b.dir, "hooks") }

func (b *hookBridge) start(ctx context.Context) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.serve(ctx)
	}()
}

// close stops the bridge and removes its files. It is idempotent.
func (b *hookBridge) close() {
	b.closeOnce.Do(func() {
		if b.req != nil {
			b.req.Close()
		}
		if b.resp != nil {
			b.resp.Close()
		}
		b.wg.Wait()
		os.RemoveAll(b.dir)
	})
}

type hookCall struct {
	name string
	args []string
	env  []string
	in   []RefUpdate
}

func (b *hookBridge) serve(ctx context.Context) {
	r := bufio.NewReader(b.req)
	for {
		call, err := readHookCall(r)
		if err != nil {
			return // closed, or garbage from a broken hook: the hook fails closed
		}
		code, msg := b.answer(ctx, call)
		var out strings.Builder
		for _, line := range strings.Split(strings.TrimRight(msg, "\n"), "\n") {
			if line != "" {
				fmt.Fprintf(&out, "msg %s\n", truncate(line, 4096))
			}
		}
		fmt.Fprintf(&out, "exit %d\n", code)
		if _, err := b.resp.WriteString(out.String()); err != nil {
			return
		}
	}
}

func readHookCall(r *bufio.Reader) (*hookCall, error) {
	c := &hookCall{}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimSuffix(line, "\n")
		kw, rest, _ := strings.Cut(line, " ")
		switch kw {
		case "hook":
			f := strings.Fields(rest)
			if len(f) == 0 {
				return nil, fmt.Errorf("gitproto: bad hook call")
			}
			c.name, c.args = f[0], f[1:]
		case "env":
			c.env = append(c.env, rest)
		case "in":
			f := strings.Fields(rest)
			if len(f) == 3 {
				c.in = append(c.in, RefUpdate{Old: f[0], New: f[1], Ref: f[2]})
			}
		case "end":
			if c.name == "" {
				return nil, fmt.Errorf("gitproto: hook call without name")
			}
			return c, nil
		}
	}
}

func (b *hookBridge) answer(ctx context.Context, c *hookCall) (code int, msg string) {
	// The hooks run on the bridge's goroutine, where net/http cannot
	// recover a panic: a panicking policy rejects the push instead of
	// taking the server down.
	defer func() {
		if p := recover(); p != nil {
			code, msg = 1, fmt.Sprintf("push policy failed: %v", p)
		}
	}()
	switch c.name {
	case "pre-receive":
		p := b.newPush(c.in)
		p.Env = c.env
		b.push = p
		if b.inv.PreReceive == nil {
			return 0, ""
		}
		if err := b.inv.PreReceive(ctx, p); err != nil {
			return 1, strings.TrimPrefix(err.Error(), "gitproto: ")
		}
		if len(p.rejected) > 0 {
			// The update hooks ask only when this exists.
			if err := os.WriteFile(filepath.Join(b.dir, "rejected"), nil, 0o600); err != nil {
				return 1, "push policy not recorded: " + err.Error()
			}
		}
		return 0, ""
	case "update":
		if len(c.args) != 3 || b.push == nil {
			return 0, ""
		}
		if reason, ok := b.push.Rejected(c.args[0]); ok {
			return 1, c.args[0] + ": " + reason
		}
		return 0, ""
	case "post-receive":
		b.post = c.in
		return 0, ""
	}
	return 0, ""
}

func (b *hookBridge) newPush(u []RefUpdate) *Push {
	p := &Push{Updates: u}
	if t := b.inv.Push; t != nil {
		p.Repo, p.Dir, p.Principal = t.Repo, t.Dir, t.Principal
	}
	if p.Dir == "" {
		p.Dir = b.inv.Dir
	}
	return p
}

// postReceive runs the PostReceive hook for what succeeded; call it only
// after close, and only when receive-pack succeeded.
func (b *hookBridge) postReceive(ctx context.Context) {
	if b.inv.PostReceive == nil {
		return
	}
	post := b.post
	if !b.reftable() {
		post = b.succeeded()
	}
	if len(post) > 0 {
		b.inv.PostReceive(ctx, b.newPush(post))
	}
}

// reftable reports whether the repository keeps its refs in reftable.
func (b *hookBridge) reftable() bool {
	_, err := os.Stat(filepath.Join(b.inv.Dir, "reftable"))
	return err == nil
}

// succeeded is what post-receive would have been told, without running
// it (a shell and its watcher per push): the updates pre-receive saw
// whose ref now holds the new value (or is gone, for a deletion). An
// update refused by the policy or by receive-pack itself (not a
// fast-forward, a lost race) left its ref elsewhere.
func (b *hookBridge) succeeded() []RefUpdate {
	if b.push == nil {
		return nil
	}
	var out []RefUpdate
	for _, u := range b.push.Updates {
		if _, refused := b.push.Rejected(u.Ref); refused {
			continue
		}
		cur, err := readRef(b.inv.Dir, u.Ref)
		if err != nil {
			continue
		}
		if cur == u.New || (u.IsDelete() && cur == "") {
			out = append(out, u)
		}
	}
	return out
}

// readRef returns the object id ref holds in the files backend (a loose
// ref, else packed-refs), "" if it does not exist.
func readRef(dir, ref string) (string, error) {
	if b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(ref))); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		return "", err
	}
	f, err := os.Open(filepath.Join(dir, "packed-refs"))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if id, name, ok := strings.Cut(line, " "); ok && name == ref && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "^") {
			return id, nil
		}
	}
	return "", sc.Err()
}
