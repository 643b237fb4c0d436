package testenv

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx"
)

// postgresDirs are where Debian installs the PostgreSQL server binaries,
// which are not on PATH.
func postgresDirs() []string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	return dirs
}

// Postgres starts a throwaway PostgreSQL cluster for the test on a
// loopback port (initdb into a temporary directory; fsync off) and
// returns the DSN of its "postgres" database for the superuser
// "postgres" (trust authentication, loopback only). The cluster is
// stopped and removed when the test ends. PostgreSQL refuses to run as
// root, so when the test runs as root the cluster runs as "nobody". It
// needs the Debian package postgresql.
func Postgres(tb testing.TB) string {
	tb.Helper()
	initdb := Binary(tb, "initdb", "postgresql", postgresDirs()...)
	postgres := filepath.Join(filepath.Dir(initdb), "postgres")
	dir, err := os.MkdirTemp("", "forgekit-pg")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			tb.Fatalf("PostgreSQL will not run as root and there is no user nobody: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			tb.Fatal(err)
		}
	}
	command := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "HOME=" + dir}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
		return cmd
	}
	data := filepath.Join(dir, "data")
	if out, err := command(initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		tb.Fatalf("initdb: %v\n%s", err, out)
	}
	for attempt := 0; ; attempt++ {
		port := FreePort(tb)
		cmd := command(postgres, "-D", data, "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-k", dir,
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=100")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			tb.Fatalf("postgres: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		addr := "127.0.0.1:" + strconv.Itoa(port)
		dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", addr)
		if waitUp(addr, exited, 30*time.Second) && acceptsLogins(dsn, 30*time.Second) {
			tb.Cleanup(func() {
				cmd.Process.Signal(syscall.SIGINT) // fast shutdown
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
					syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
					<-exited
				}
			})
			return dsn
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if attempt == 2 {
			tb.Fatalf("postgres did not start on %s: %s", addr, out.String())
		}
	}
}

// acceptsLogins waits until the server, listening already, has finished
// starting up and accepts a session.
func acceptsLogins(dsn string, timeout time.Duration) bool {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return false
	}
	defer db.Close()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := db.PingContext(ctx)
		cancel()
		if err == nil {
			return true
		}
	}
	return false
}

// PostgresCluster is a throwaway cluster that the subtests of one test
// share, each in a database of its own. It is safe for concurrent use.
type PostgresCluster struct {
	dsn string
	mu  sync.Mutex // guards n
	n   int
}

// StartPostgresCluster starts a cluster for tb, as Postgres does.
func StartPostgresCluster(tb testing.TB) *PostgresCluster {
	return &PostgresCluster{dsn: Postgres(tb)}
}

// NewDatabase creates an empty database on the cluster and returns its
// DSN.
func (c *PostgresCluster) NewDatabase(tb testing.TB) string {
	tb.Helper()
	c.mu.Lock()
	c.n++
	name := fmt.Sprintf("t%d", c.n)
	c.mu.Unlock()
	admin, err := sql.Open("pgx", c.dsn)
	if err != nil {
		tb.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		tb.Fatal(err)
	}
	return strings.Replace(c.dsn, "/postgres?", "/"+name+"?", 1)
}
