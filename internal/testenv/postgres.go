package testenv

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
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

// postgresEnv carries the DSN of RunOnPostgres's cluster to the test
// binary it runs.
const postgresEnv = "FORGEKIT_TEST_POSTGRES"

// OnPostgres returns the cluster this test binary runs on when
// RunOnPostgres started it, or nil in an ordinary run: helpers that open
// a store open it there (a database per test, NewDatabase) instead of
// in SQLite.
func OnPostgres() *PostgresCluster {
	onPostgresOnce.Do(func() {
		if dsn := os.Getenv(postgresEnv); dsn != "" {
			onPostgres = &PostgresCluster{dsn: dsn}
		}
	})
	return onPostgres
}

var (
	onPostgresOnce sync.Once
	onPostgres     *PostgresCluster
)

// RunOnPostgres runs again on a throwaway PostgreSQL cluster every test
// of the calling package that calls one of helpers (the package's
// functions that open a store, which open it on the cluster when
// OnPostgres says so). It chooses them by reading the package's test
// files, so a new test that uses the helpers runs on both databases
// without being listed anywhere; a test that needs SQLite itself uses
// another helper. They run in a child process of the test binary, with
// the same flags that matter (-test.short, -test.v), and their output is
// shown if they fail. It needs the Debian package postgresql.
func RunOnPostgres(t *testing.T, helpers ...string) {
	t.Helper()
	if OnPostgres() != nil {
		t.Skip("this process is the run on PostgreSQL")
	}
	tests, err := testsCalling(".", helpers)
	if err != nil {
		t.Fatal(err)
	}
	if len(tests) == 0 {
		t.Fatalf("no test calls %s", strings.Join(helpers, ", "))
	}
	cluster := StartPostgresCluster(t)
	args := []string{"-test.run", "^(" + strings.Join(tests, "|") + ")$", "-test.count=1", "-test.timeout=15m"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), postgresEnv+"="+cluster.dsn)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("on PostgreSQL: %v\n%s", err, out)
	}
	t.Logf("ran on PostgreSQL: %s", strings.Join(tests, ", "))
	if testing.Verbose() {
		t.Logf("%s", out)
	}
}

// testsCalling returns the names of the Test functions in dir's
// _test.go files whose bodies call one of helpers.
func testsCalling(dir string, helpers []string) ([]string, error) {
	want := map[string]bool{}
	for _, h := range helpers {
		want[h] = true
	}
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	var out []string
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			return nil, err
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv != nil || fd.Body == nil || !strings.HasPrefix(fd.Name.Name, "Test") || fd.Type.Params.NumFields() != 1 {
				continue
			}
			calls := false
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				if c, ok := n.(*ast.CallExpr); ok {
					if id, ok := c.Fun.(*ast.Ident); ok && want[id.Name] {
						calls = true
					}
				}
				return !calls
			})
			if calls {
				out = append(out, fd.Name.Name)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}
