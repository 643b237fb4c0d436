// Command forged is the reference forge assembled from forgekit's
// packages: Git over smart HTTP (gitproto through forge's access rules),
// a server-rendered web UI built from cached viewlets (viewcache), view
// counting (counting), per-route time limits (timebox) and slow-request
// reports (slowlog).
//
// Usage:
//
//	forged [serve] [-addr 127.0.0.1:8080] [-ssh-addr 127.0.0.1:2222] [-git-addr 127.0.0.1:9418] [-data ./forge-data] [flags]
//	forged user add NAME [-admin] [-email E] [-password-stdin] [-data DIR]
//	forged user key add NAME [-name N] [-read-only] < key.pub
//	forged repo create OWNER/NAME [-private] [-description D] [-data DIR]
//	forged token create USER [-scope read|write] [-name N] [-expires D] [-data DIR]
//	forged migrate -from sqlite:DIR -to postgres://...
//
// On its first start with no users, forged creates the user "root" (a site administrator) and
// prints its password once. Everything lives under the data directory:
// repos/ (bare repositories), forge.db (users, tokens, repositories),
// views.db (view counts), cache/ (packs, archives), slow/ (reports),
// secret.key (signs sessions, CSRF and profiling tokens),
// ssh_host_ed25519_key (with -ssh-addr).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Everything forged and its git processes create is its user's
	// alone: repositories, databases, caches, reports.
	syscall.Umask(0o077)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := dispatch(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "forged:", err)
		os.Exit(2)
	}
}

// dispatch runs a subcommand, or the server.
func dispatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "user", "repo", "token", "jobs":
			return operate(ctx, args, stdin, stdout, stderr)
		case "version":
			return version(stdout)
		case "help":
			fmt.Fprintf(stdout, "%s", usage)
			fmt.Fprint(stdout, commandsUsage())
			fmt.Fprintln(stdout, "\nforged COMMAND -h shows a command's flags; forged -h shows the server's.")
			return nil
		case "migrate":
			return migrate(ctx, args[1:], stdout, stderr)
		case "serve":
			args = args[1:]
		}
	}
	return run(ctx, args, stdout, stderr, nil)
}
