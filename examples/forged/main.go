// Command forged is the reference forge assembled from forgekit's
// packages.
//
// Until the forge issue lands, it serves the bare repositories under
// DATA/repos over Git smart HTTP at the same relative path
// (DATA/repos/a/b.git is http://ADDR/a/b.git), read-only and
// anonymous, with the pack and advertisement caches on:
//
//	go run ./examples/forged [-addr 127.0.0.1:8080] [-data ./forge-data]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/forgekit/forgekit/gitproto"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "forged:", err)
		}
		os.Exit(2)
	}
}

type config struct {
	addr        string
	data        string
	packCache   bool
	advertCache bool
	engine      string
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("forged", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "listen `address`; loopback unless you say otherwise")
	fs.StringVar(&c.data, "data", "./forge-data", "data `directory`; repositories are served from DIR/repos")
	fs.BoolVar(&c.packCache, "pack-cache", true, "share and keep pack generations of identical fetches")
	fs.BoolVar(&c.advertCache, "advert-cache", true, "keep ref advertisements in memory")
	fs.StringVar(&c.engine, "engine", "auto", "git protocol `engine`: git, gogit, or auto (git if installed)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: forged [flags]\n\nServes the bare repositories under DATA/repos over Git smart HTTP.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	}
	switch c.engine {
	case "auto", "git", "gogit":
	default:
		return nil, fmt.Errorf("-engine: %q is not git, gogit or auto", c.engine)
	}
	if _, _, err := net.SplitHostPort(c.addr); err != nil {
		return nil, fmt.Errorf("-addr: %v", err)
	}
	return c, nil
}

// run starts the server and blocks until ctx is done. ready, if set,
// receives the base URL once the server listens.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(url string)) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	repos := filepath.Join(c.data, "repos")
	if err := os.MkdirAll(repos, 0o755); err != nil {
		return err
	}
	h := &gitproto.Handler{
		Resolver:  gitproto.DirResolver{Root: repos},
		Admission: &gitproto.Admission{},
		Logger:    logger,
	}
	engine := c.engine
	if engine == "auto" {
		engine = "gogit"
		if _, err := exec.LookPath("git"); err == nil {
			engine = "git"
		}
	}
	if engine == "gogit" {
		h.Engine = &gitproto.GoGitEngine{}
	}
	if c.packCache {
		pc, err := gitproto.NewPackCache(filepath.Join(c.data, "cache", "packs"), 0)
		if err != nil {
			return err
		}
		h.PackCache = pc
	}
	if c.advertCache {
		h.AdvertCache = &gitproto.AdvertCache{}
	}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	base := "http://" + ln.Addr().String()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	fmt.Fprintf(stdout, "forged: serving %s at %s (engine %s)\n", repos, base, engine)
	fmt.Fprintf(stdout, "forged: anonymous read-only; there is no login yet\n")
	names := listRepos(repos)
	if len(names) == 0 {
		fmt.Fprintf(stdout, "forged: no repositories yet; add one with:\n  git clone --bare https://example.com/some/repo.git %s\n", filepath.Join(repos, "owner", "repo.git"))
	}
	for i, n := range names {
		if i == 20 {
			fmt.Fprintf(stdout, "  ... and %d more\n", len(names)-20)
			break
		}
		fmt.Fprintf(stdout, "  git clone %s/%s\n", base, n)
	}
	if ready != nil {
		ready(base)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	<-errc
	return nil
}

// listRepos finds the bare repositories under root.
func listRepos(root string) []string {
	var names []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || p == root {
			return nil
		}
		if _, err := os.Stat(filepath.Join(p, "HEAD")); err == nil {
			if _, err := os.Stat(filepath.Join(p, "objects")); err == nil {
				rel, _ := filepath.Rel(root, p)
				names = append(names, filepath.ToSlash(rel))
				return filepath.SkipDir
			}
		}
		if strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		return nil
	})
	sort.Strings(names)
	return names
}
