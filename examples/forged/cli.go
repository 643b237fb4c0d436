package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/forgekit/forgekit/counting"
	"github.com/forgekit/forgekit/counting/sqlite"
	"github.com/forgekit/forgekit/forge"
)

// openForge opens the store under data and the metadata: the
// PostgreSQL database db, or DATA/forge.db when db is empty.
func openForge(ctx context.Context, data, db string) (*forge.Forge, error) {
	st, err := forge.NewStore(data)
	if err != nil {
		return nil, err
	}
	if db == "" {
		db = filepath.Join(data, "forge.db")
	}
	m, err := forge.OpenMetaDSN(ctx, db)
	if err != nil {
		return nil, err
	}
	return &forge.Forge{Store: st, Meta: m, Reserved: reservedName}, nil
}

// openViews opens the view counts: in the PostgreSQL database db, or in
// DATA/views.db when db is empty.
func openViews(ctx context.Context, data, db string) (counting.Store, io.Closer, error) {
	if db == "" {
		st, err := sqlite.Open(filepath.Join(data, "views.db"))
		return st, st, err
	}
	pg, err := sql.Open("pgx", db)
	if err != nil {
		return nil, nil, err
	}
	st, err := counting.NewPostgres(ctx, pg)
	if err != nil {
		pg.Close()
		return nil, nil, err
	}
	return st, st, nil
}

// parseInterspersed parses flags that may come before or after the
// positional arguments ("user add NAME -admin" and "user add -admin NAME").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// randomPassword returns a password of 128 random bits.
func randomPassword() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// admin runs "user add", "repo create" and "token create".
func admin(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) < 2 || strings.HasPrefix(args[1], "-") {
		return fmt.Errorf("usage: forged %s %s [flags] (see forged -h)", args[0], map[string]string{"user": "add NAME", "repo": "create|import|adopt ...", "token": "create USER"}[args[0]])
	}
	cmd := args[0] + " " + args[1]
	fs := flag.NewFlagSet("forged "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./forge-data", "data `directory`")
	db := fs.String("db", "", "metadata `DSN`: postgres://... (default: DATA/forge.db)")
	var run func(f *forge.Forge, pos []string) error
	var usage string
	nargs := 1
	switch cmd {
	case "user add":
		usage = "NAME"
		isAdmin := fs.Bool("admin", false, "make the user a site administrator")
		email := fs.String("email", "", "e-mail `address`")
		fromStdin := fs.Bool("password-stdin", false, "read the password from the first line of standard input (else one is generated and printed)")
		run = func(f *forge.Forge, pos []string) error {
			pass := ""
			if *fromStdin {
				line, err := bufio.NewReader(stdin).ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return err
				}
				pass = strings.TrimRight(line, "\r\n")
			} else {
				pass = randomPassword()
			}
			u, err := f.CreateUser(ctx, pos[0], *email, pass, *isAdmin)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "created user %s", u.Name)
			if u.Admin {
				fmt.Fprint(stdout, " (site administrator)")
			}
			fmt.Fprintln(stdout)
			if !*fromStdin {
				fmt.Fprintf(stdout, "password: %s\n(shown once; it is stored only as a hash)\n", pass)
			}
			return nil
		}
	case "repo create":
		usage = "OWNER/NAME"
		private := fs.Bool("private", false, "only the owner and collaborators may see it")
		desc := fs.String("description", "", "one-line `description`")
		run = func(f *forge.Forge, pos []string) error {
			owner, name, ok := strings.Cut(pos[0], "/")
			if !ok {
				return fmt.Errorf("%q is not OWNER/NAME", pos[0])
			}
			r, err := f.CreateRepo(ctx, owner, name, *private, *desc)
			if err != nil {
				return err
			}
			vis := "public"
			if r.Private {
				vis = "private"
			}
			fmt.Fprintf(stdout, "created %s repository %s/%s (default branch %s, protected)\n", vis, r.Owner, r.Name, r.DefaultBranch)
			return nil
		}
	case "repo import":
		usage = "OWNER/NAME"
		from := fs.String("from", "", "`path or URL` of the repository to copy (http, https, git, ssh, or a directory)")
		private := fs.Bool("private", false, "only the owner and collaborators may see it")
		desc := fs.String("description", "", "one-line `description`")
		run = func(f *forge.Forge, pos []string) error {
			owner, name, ok := strings.Cut(pos[0], "/")
			if !ok {
				return fmt.Errorf("%q is not OWNER/NAME", pos[0])
			}
			if *from == "" {
				return errors.New("-from: a path or URL is needed")
			}
			r, err := f.ImportRepo(ctx, owner, name, *from, *private, *desc)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "imported %s into %s/%s (default branch %s, protected; packed with a bitmap and a commit-graph)\n", *from, r.Owner, r.Name, r.DefaultBranch)
			return nil
		}
	case "repo adopt":
		usage, nargs = "", 0
		create := fs.Bool("create-owners", false, "create the owners that do not exist (with no password: set one with the admin page)")
		public := fs.Bool("public", false, "make the adopted repositories public (default: private)")
		run = func(f *forge.Forge, _ []string) error {
			res, err := f.Adopt(ctx, forge.AdoptOptions{CreateOwners: *create, Public: *public})
			if err != nil {
				if errors.Is(err, forge.ErrMissingOwners) {
					return fmt.Errorf("%w; add them with forged user add, or adopt with -create-owners", err)
				}
				return err
			}
			failed := 0
			for _, a := range res {
				if a.Err != nil {
					failed++
					fmt.Fprintf(stdout, "not adopted %s/%s: %v\n", a.Repo.Owner, a.Repo.Name, a.Err)
					continue
				}
				vis := "public"
				if a.Info.Private {
					vis = "private"
				}
				fmt.Fprintf(stdout, "adopted %s/%s (%s, default branch %s)\n", a.Info.Owner, a.Info.Name, vis, a.Info.DefaultBranch)
			}
			if len(res) == 0 {
				fmt.Fprintln(stdout, "nothing to adopt: every repository under repos/ is registered")
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d repositories not adopted", failed, len(res))
			}
			return nil
		}
	case "token create":
		usage = "USER"
		scope := fs.String("scope", "write", "`scope`: read (clone, fetch) or write (also push)")
		name := fs.String("name", "", "token `name` (default: cli-TIMESTAMP)")
		expires := fs.Duration("expires", 0, "lifetime, e.g. 720h (default: never expires)")
		run = func(f *forge.Forge, pos []string) error {
			if *scope != "read" && *scope != "write" {
				return fmt.Errorf("-scope: %q is not read or write", *scope)
			}
			if *expires < 0 {
				return errors.New("-expires: negative lifetime")
			}
			n := *name
			if n == "" {
				n = "cli-" + time.Now().UTC().Format("20060102T150405")
			}
			tok, err := f.CreateToken(ctx, pos[0], n, forge.Scope(*scope), *expires)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "token %s (%s) for %s:\n%s\n(shown once; use it as the password of git over HTTP)\n", n, *scope, pos[0], tok)
			return nil
		}
	default:
		return fmt.Errorf("unknown command %q (see forged -h)", cmd)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: forged %s %s [flags]\n\nFlags:\n", cmd, usage)
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args[2:])
	if err != nil {
		return err
	}
	if len(pos) != nargs {
		fs.Usage()
		if nargs == 0 {
			return fmt.Errorf("forged %s takes no argument", cmd)
		}
		return fmt.Errorf("forged %s takes exactly one %s", cmd, usage)
	}
	if *db != "" && !forge.IsPostgresDSN(*db) {
		return fmt.Errorf("-db: %q is not a postgres:// URL", *db)
	}
	f, err := openForge(ctx, *data, *db)
	if err != nil {
		return err
	}
	defer f.Meta.Close()
	return run(f, pos)
}
