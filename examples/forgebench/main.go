// Command forgebench measures the reference forge against the tools
// people run today, on one repository, in one run, and prints a table:
//
//   - the repository home, a tree, a commit and a blob page, cold (the
//     first request after a start) and warm (throughput with -c
//     concurrent connections for -d each): forged against cgit run as a
//     CGI with its page cache on;
//   - the first view of the repository after a restart, and how long its
//     last-commit column takes to fill in;
//   - a full clone through forged against git http-backend;
//   - forged's memory after the load.
//
// Usage:
//
//	go run ./examples/forgebench [-repo DIR] [-c 16] [-d 5s]
//
// The repository is -repo, else $FORGEKIT_BENCH_REPO, else one generated
// by ../shared/bench/mkrepo (20k commits) under the temporary directory
// and kept for the next run. It needs git, Debian's cgit and a Go
// toolchain (forged is built from this module).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// quiet drops the CGI handler's complaints about clients that go away
// when a measurement ends.
var quiet = log.New(io.Discard, "", 0)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "forgebench:", err)
		os.Exit(1)
	}
}

type config struct {
	repo, forged, cgit, backend string
	conc                        int
	dur                         time.Duration
	clone                       bool
}

func run() error {
	c := config{}
	flag.StringVar(&c.repo, "repo", os.Getenv("FORGEKIT_BENCH_REPO"), "bare `repository` to serve (default: generate one with ../shared/bench/mkrepo)")
	flag.StringVar(&c.forged, "forged", "", "forged `binary` (default: build ./examples/forged)")
	flag.StringVar(&c.cgit, "cgit", "/usr/lib/cgit/cgit.cgi", "cgit CGI `binary` (Debian package cgit)")
	flag.StringVar(&c.backend, "http-backend", "/usr/lib/git-core/git-http-backend", "git http-backend `binary`")
	flag.IntVar(&c.conc, "c", 16, "concurrent connections for throughput")
	flag.DurationVar(&c.dur, "d", 5*time.Second, "`duration` of each throughput measurement")
	flag.BoolVar(&c.clone, "clone", true, "also measure a full clone")
	flag.Parse()
	work, err := os.MkdirTemp("", "forgebench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if c.repo == "" {
		if c.repo, err = generate(); err != nil {
			return err
		}
	}
	for _, bin := range []string{c.cgit, c.backend} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%v (install the Debian packages cgit and git)", err)
		}
	}
	if c.forged == "" {
		c.forged = filepath.Join(work, "forged")
		fmt.Fprintln(os.Stderr, "building forged ...")
		if out, err := exec.Command("go", "build", "-o", c.forged, "./examples/forged").CombinedOutput(); err != nil {
			return fmt.Errorf("go build (run from the module root): %v\n%s", err, out)
		}
	}

	// forged's data directory, with a copy of the repository as bench/big.
	data := filepath.Join(work, "data")
	for _, args := range [][]string{{"user", "add", "bench"}, {"repo", "create", "bench/big"}} {
		if out, err := exec.Command(c.forged, append(args, "-data", data)...).CombinedOutput(); err != nil {
			return fmt.Errorf("forged %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	dst := filepath.Join(data, "repos", "bench", "big.git")
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if out, err := exec.Command("cp", "-a", c.repo, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("cp: %v\n%s", err, out)
	}
	head, dir, file, err := pick(dst)
	if err != nil {
		return err
	}

	// cgit, with its page cache, and git http-backend, as CGIs.
	if err := os.MkdirAll(filepath.Join(work, "cgit-cache"), 0o755); err != nil {
		return err
	}
	rc := filepath.Join(work, "cgitrc")
	os.WriteFile(rc, []byte(fmt.Sprintf("cache-root=%s\ncache-size=1000\nvirtual-root=/\nrepo.url=repo\nrepo.path=%s\n", filepath.Join(work, "cgit-cache"), c.repo)), 0o644)
	cgitURL, stopCgit, err := serve(&cgi.Handler{Path: c.cgit, Env: []string{"CGIT_CONFIG=" + rc}, Logger: quiet})
	if err != nil {
		return err
	}
	defer stopCgit()
	backendURL, stopBackend, err := serve(&cgi.Handler{Path: c.backend, Env: []string{"GIT_PROJECT_ROOT=" + filepath.Dir(c.repo), "GIT_HTTP_EXPORT_ALL=1"}, Logger: quiet})
	if err != nil {
		return err
	}
	defer stopBackend()

	fmt.Fprintln(os.Stderr, "starting forged ...")
	f, err := startForged(c.forged, data)
	if err != nil {
		return err
	}
	defer f.stop()

	// The first view after a start, and the fill of its last commits.
	t0 := time.Now()
	body, err := fetch(f.url + "/bench/big")
	if err != nil {
		return err
	}
	firstView := time.Since(t0)
	fill := "complete in the page"
	if m := regexp.MustCompile(`data-fill="([^"]+)"`).FindStringSubmatch(body); m != nil {
		if _, err := fetch(f.url + strings.ReplaceAll(m[1], "&amp;", "&")); err != nil {
			return err
		}
		fill = fmt.Sprintf("filled after %v", time.Since(t0).Round(time.Millisecond))
	}

	pages := []struct{ name, forged, cgit string }{
		{"repository home", "/bench/big", "/repo/"},
		{"tree of " + dir, "/bench/big/tree/main/" + dir, "/repo/tree/" + dir},
		{"commit (HEAD)", "/bench/big/commit/" + head, "/repo/commit/?id=" + head},
		{"blob " + file, "/bench/big/blob/main/" + file, "/repo/tree/" + file},
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "page\tforged cold\tlast commits\tcgit cold\tforged req/s\tcgit req/s\tratio\t\n")
	for _, p := range pages {
		t0 := time.Now()
		page, err := fetch(f.url + p.forged)
		if err != nil {
			return err
		}
		fc := time.Since(t0)
		complete := "-"
		if strings.Contains(page, `class="files"`) {
			complete = "in the page"
			if m := regexp.MustCompile(`data-fill="([^"]+)"`).FindStringSubmatch(page); m != nil {
				if _, err := fetch(f.url + strings.ReplaceAll(m[1], "&amp;", "&")); err != nil {
					return err
				}
				complete = "after " + ms(time.Since(t0))
			}
		}
		cc, err := timeOne(cgitURL + p.cgit)
		if err != nil {
			return err
		}
		fr, err := throughput(f.url+p.forged, c.conc, c.dur)
		if err != nil {
			return err
		}
		cr, err := throughput(cgitURL+p.cgit, c.conc, c.dur)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%v\t%s\t%v\t%.0f\t%.0f\t%.2fx\t\n", p.name, ms(fc), complete, ms(cc), fr, cr, fr/cr)
	}
	tw.Flush()
	fmt.Printf("\nfirst view of the repository after a start: %v (last commits %s)\n", ms(firstView), fill)

	if c.clone {
		fd, err := cloneTime(f.url+"/bench/big.git", work)
		if err != nil {
			return err
		}
		bd, err := cloneTime(backendURL+"/"+filepath.Base(c.repo), work)
		if err != nil {
			return err
		}
		fmt.Printf("full clone: forged %v, git http-backend %v (%.2fx the time)\n", fd.Round(time.Millisecond), bd.Round(time.Millisecond), fd.Seconds()/bd.Seconds())
	}
	rss, hwm := memory(f.cmd.Process.Pid)
	fmt.Printf("forged memory after the load: RSS %s, peak %s\n", rss, hwm)
	fmt.Printf("(%d connections, %v per throughput measurement, on %s)\n", c.conc, c.dur, c.repo)
	return nil
}

// generate makes (or reuses) the standard benchmark repository.
func generate() (string, error) {
	repo := filepath.Join(os.TempDir(), "forgekit-bench", "repo.git")
	if _, err := os.Stat(filepath.Join(repo, "HEAD")); err == nil {
		return repo, nil
	}
	script := filepath.Join("..", "shared", "bench", "mkrepo")
	if _, err := os.Stat(script); err != nil {
		return "", errors.New("no -repo and no ../shared/bench/mkrepo to generate one")
	}
	fmt.Fprintln(os.Stderr, "generating the benchmark repository (about 35 s) ...")
	if out, err := exec.Command(script, repo).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mkrepo: %v\n%s", err, out)
	}
	return repo, nil
}

// pick finds HEAD, the first directory and the first file of the root.
func pick(repo string) (head, dir, file string, err error) {
	out, err := exec.Command("git", "-C", repo, "rev-parse", "main").Output()
	if err != nil {
		return "", "", "", fmt.Errorf("rev-parse main: %v", err)
	}
	head = strings.TrimSpace(string(out))
	out, err = exec.Command("git", "-C", repo, "ls-tree", "-r", "-t", head).Output()
	if err != nil {
		return "", "", "", err
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		if f[1] == "tree" && dir == "" && !strings.Contains(f[3], "/") {
			dir = f[3]
		}
		if f[1] == "blob" && file == "" && strings.Contains(f[3], "/") {
			file = f[3]
		}
	}
	if dir == "" || file == "" {
		return "", "", "", errors.New("the repository needs a directory and a file in it")
	}
	return head, dir, file, nil
}

func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

type forgedProc struct {
	cmd *exec.Cmd
	url string
}

func startForged(bin, data string) (*forgedProc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "-addr", addr, "-data", data, "-log", filepath.Join(data, "forged.log"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return &forgedProc{cmd: cmd, url: "http://" + addr}, nil
		}
	}
	cmd.Process.Kill()
	return nil, fmt.Errorf("forged did not start: %s", out.String())
}

func (f *forgedProc) stop() {
	f.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { f.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		f.cmd.Process.Kill()
	}
}

func fetch(url string) (string, error) {
	res, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, res.Status)
	}
	return string(b), err
}

func timeOne(url string) (time.Duration, error) {
	t0 := time.Now()
	_, err := fetch(url)
	return time.Since(t0), err
}

// throughput is completed requests per second over d with conc clients
// on kept-alive connections.
func throughput(url string, conc int, d time.Duration) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	// No gzip: inflating would take the load generator's share of the
	// same cores, and cgit sends none, so neither server compresses.
	tr := &http.Transport{MaxIdleConnsPerHost: conc, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var n atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
				res, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						firstErr.CompareAndSwap(nil, err)
					}
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					firstErr.CompareAndSwap(nil, fmt.Errorf("GET %s: %s", url, res.Status))
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

func cloneTime(url, work string) (time.Duration, error) {
	dst, err := os.MkdirTemp(work, "clone")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dst)
	t0 := time.Now()
	if out, err := exec.Command("git", "clone", "-q", "--bare", url, filepath.Join(dst, "c.git")).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("clone %s: %v\n%s", url, err, out)
	}
	return time.Since(t0), nil
}

func memory(pid int) (rss, peak string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?", "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			kb, _ := strconv.Atoi(f[1])
			switch f[0] {
			case "VmRSS:":
				rss = fmt.Sprintf("%d MiB", kb/1024)
			case "VmHWM:":
				peak = fmt.Sprintf("%d MiB", kb/1024)
			}
		}
	}
	return rss, peak
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + " ms"
}
