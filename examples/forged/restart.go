package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Zero-downtime restarts, as Unicorn does them on USR2: the running
// process starts the binary again with the listening socket as file
// descriptor 3 and a pipe as descriptor 4; the new process serves on the
// inherited socket, writes to the pipe, and the old one stops accepting
// and drains. The kernel queues connections on the socket throughout, so
// none is refused.
const (
	envListenFD = "FORGED_LISTEN_FD"
	envReadyFD  = "FORGED_READY_FD"
	// restartWait bounds how long the old process waits for the new one.
	restartWait = time.Minute
)

// listen returns the inherited socket of a restart, or a new one.
func listen(addr string) (ln net.Listener, inherited bool, err error) {
	if os.Getenv(envListenFD) == "3" {
		os.Unsetenv(envListenFD)
		f := os.NewFile(3, "listener")
		defer f.Close()
		ln, err = net.FileListener(f)
		return ln, true, err
	}
	ln, err = net.Listen("tcp", addr)
	return ln, false, err
}

// notifyParent tells the process that started this one that it serves.
func notifyParent(logger *slog.Logger) {
	if os.Getenv(envReadyFD) != "4" {
		return
	}
	os.Unsetenv(envReadyFD)
	f := os.NewFile(4, "ready")
	if _, err := f.Write([]byte("ready\n")); err != nil {
		logger.Warn("restart: cannot tell the old process", "err", err)
	}
	f.Close()
}

// restart starts a new process on ln and waits until it serves.
//
// The socket goes to the child as a raw descriptor through
// syscall.ForkExec, not as an *os.File through exec.Cmd.ExtraFiles:
// os/exec calls File.Fd, which switches the descriptor to blocking mode,
// and O_NONBLOCK belongs to the open file description that the duplicate
// shares with ln. The old process's accept would then block in the
// kernel past Shutdown, take one more connection and drop it.
func restart(ln net.Listener, logger *slog.Logger) error {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return errors.New("restart: the listener has no descriptor")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	dup := -1
	var dupErr error
	if err := raw.Control(func(fd uintptr) {
		// Close-on-exec, so that no other child (git) inherits it.
		r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
		if errno != 0 {
			dupErr = errno
			return
		}
		dup = int(r)
	}); err != nil {
		return err
	}
	if dupErr != nil {
		return fmt.Errorf("restart: dup: %w", dupErr)
	}
	defer syscall.Close(dup)
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return err
	}
	pr := os.NewFile(uintptr(p[0]), "ready")
	defer pr.Close()
	pid, err := syscall.ForkExec(exe, os.Args, &syscall.ProcAttr{
		Env:   append(os.Environ(), envListenFD+"=3", envReadyFD+"=4"),
		Files: []uintptr{uintptr(syscall.Stdin), uintptr(syscall.Stdout), uintptr(syscall.Stderr), uintptr(dup), uintptr(p[1])},
	})
	syscall.Close(p[1])
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	proc, _ := os.FindProcess(pid)
	exited := make(chan error, 1)
	go func() {
		st, err := proc.Wait()
		if err == nil {
			err = errors.New(st.String())
		}
		exited <- err
	}()
	got := make(chan error, 1)
	go func() {
		buf := make([]byte, 6)
		_, err := io.ReadFull(pr, buf)
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			proc.Kill()
			return fmt.Errorf("restart: the new process did not start serving: %v", err)
		}
		logger.Info("restart: the new process serves; draining", "pid", pid)
		return nil
	case err := <-exited:
		return fmt.Errorf("restart: the new process exited: %v", err)
	case <-time.After(restartWait):
		proc.Kill()
		return errors.New("restart: the new process did not answer in time")
	}
}

// signals handles SIGHUP/SIGUSR2 (restart) and SIGUSR1 (reopen the log)
// until ctx is done, the server fails, or a restart succeeds.
func (s *server) signals(ctx context.Context, ln net.Listener, lf *logFile, errc chan error) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sig)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			errc <- err // for run, which waits for Serve to end
			return err
		case v := <-sig:
			switch v {
			case syscall.SIGUSR1:
				if lf != nil {
					if err := lf.Reopen(); err != nil {
						s.log.Error("cannot reopen the log", "err", err)
					}
				}
			default:
				if err := restart(ln, s.log); err != nil {
					s.log.Error("restart failed; still serving", "err", err)
					continue
				}
				return nil
			}
		}
	}
}

// logFile is a log file that can be reopened after rotation. It is safe
// for concurrent use.
type logFile struct {
	path string
	mu   sync.Mutex // guards f
	f    *os.File
}

func openLogFile(path string) (*logFile, error) {
	l := &logFile{path: path}
	return l, l.Reopen()
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

// Reopen opens the path again (logrotate moved the old file away).
func (l *logFile) Reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
