package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/internal/testenv"
)

// buildForged builds the command for tests that need it as a process.
func buildForged(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "forged")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// alive reports whether pid runs (a zombie does not: in some sandboxes
// nobody reaps orphans).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRestartRefusesNothing runs forged as a process under a request
// loop, sends SIGHUP, and checks that the new process took the socket
// over while the old one drained, with no failed request; then that
// SIGUSR1 reopens the log after rotation and SIGTERM stops the server.
func TestRestartRefusesNothing(t *testing.T) {
	testenv.Git(t)
	bin := buildForged(t)
	data := t.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	logPath := filepath.Join(data, "forged.log")
	// A file, not a pipe: the new process inherits it, and Wait would
	// wait for a pipe's last writer.
	out, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	require.NoError(t, err)
	defer out.Close()
	stdout := func() string { b, _ := os.ReadFile(out.Name()); return string(b) }
	cmd := exec.Command(bin, "-addr", addr, "-data", data, "-log", logPath)
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	oldPid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var newPid atomic.Int64
	t.Cleanup(func() {
		cmd.Process.Kill()
		if p := int(newPid.Load()); p > 0 {
			syscall.Kill(p, syscall.SIGKILL)
		}
	})
	testenv.WaitListening(t, addr, 20*time.Second)

	// The load: new connections and kept-alive ones, until stopped.
	ctx, stop := context.WithCancel(context.Background())
	var okN, failN atomic.Int64
	t0 := time.Now()
	var failures sync.Map
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{DisableKeepAlives: i%2 == 0}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for n := 0; ctx.Err() == nil && n < 100000; n++ {
				path := []string{"/healthz", "/explore", "/static/nothing", "/root"}[n%4]
				res, err := c.Get("http://" + addr + path)
				if err != nil {
					failN.Add(1)
					failures.Store(fmt.Sprintf("%v (keep-alive %v, after %d requests, at %v)", err, i%2 == 1, n, time.Since(t0)), true)
					continue
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode >= 500 {
					failN.Add(1)
					failures.Store(res.Status, true)
					continue
				}
				okN.Add(1)
			}
		}()
	}
	waitFor(t, "requests before the restart", 10*time.Second, func() bool { return okN.Load() > 50 })

	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	select {
	case err := <-exited:
		require.NoError(t, err, "the old process drains and exits cleanly\n%s", stdout())
	case <-time.After(60 * time.Second):
		t.Fatalf("the old process did not stop\n%s", stdout())
	}
	assert.Contains(t, stdout(), "took over "+addr)
	logs, _ := os.ReadFile(logPath)
	m := regexp.MustCompile(`"msg":"restart: the new process serves; draining","pid":(\d+)`).FindSubmatch(logs)
	require.NotNil(t, m, string(logs))
	pid, _ := strconv.Atoi(string(m[1]))
	newPid.Store(int64(pid))
	assert.NotEqual(t, oldPid, pid)
	before := okN.Load()
	waitFor(t, "requests after the restart", 10*time.Second, func() bool { return okN.Load() > before+50 })
	stop()
	wg.Wait()
	failures.Range(func(k, _ any) bool { t.Logf("failure: %v", k); return true })
	assert.Zero(t, failN.Load(), "no request failed across the restart (%d succeeded)", okN.Load())

	// SIGUSR1: the log file is reopened after rotation.
	require.NoError(t, os.Rename(logPath, logPath+".1"))
	require.NoError(t, syscall.Kill(pid, syscall.SIGUSR1))
	waitFor(t, "the reopened log", 10*time.Second, func() bool {
		if res, err := http.Get("http://" + addr + "/healthz"); err == nil {
			res.Body.Close()
		}
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), `"route":"/healthz"`)
	})

	// SIGTERM: the new process stops.
	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	waitFor(t, "the new process to stop", 30*time.Second, func() bool { return !alive(pid) })
}
