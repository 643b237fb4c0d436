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
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/forgekit/forgekit/counting"
	"github.com/forgekit/forgekit/counting/sqlite"
	"github.com/forgekit/forgekit/forge"
	"github.com/riverqueue/river"
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

// command is one of the operator's commands ("user add"): its
// positional arguments, its help, and its flags, which flags declares
// on the command's flag set before returning what runs it.
type command struct {
	name  string
	args  string // usage of the positional arguments, "" for none
	nargs int
	help  string
	flags func(fs *flag.FlagSet) func(ctx context.Context, c *cli, pos []string) error
}

// cli is what a command runs with.
type cli struct {
	f              *forge.Forge
	data, db       string // the -data directory and -db DSN
	stdin          io.Reader
	stdout, stderr io.Writer
}

// commands are the operator's commands, by noun.
var commands = []command{
	{name: "user add", args: "NAME", nargs: 1, help: "create a user (a password is generated unless -password-stdin)", flags: userAdd},
	{name: "user list", help: "list the users", flags: noFlags(userList)},
	{name: "user passwd", args: "NAME", nargs: 1, help: "set a user's password (the way back in when root's is lost)", flags: userPasswd},
	{name: "user disable", args: "NAME", nargs: 1, help: "stop a user's sign-ins, sessions and tokens at once", flags: noFlags(userEnable(true))},
	{name: "user enable", args: "NAME", nargs: 1, help: "let a disabled user back in", flags: noFlags(userEnable(false))},
	{name: "user admin", args: "NAME", nargs: 1, help: "make a user a site administrator (-revoke: no longer)", flags: userAdmin},
	{name: "user delete", args: "NAME", nargs: 1, help: "delete a user, their tokens and collaborations (their repositories stay)", flags: noFlags(userDelete)},
	{name: "user key add", args: "NAME", nargs: 1, help: "add an SSH public key for git over SSH, read from standard input (-read-only: no push)", flags: keyAdd},
	{name: "user key list", args: "NAME", nargs: 1, help: "list a user's SSH keys with their fingerprints and last use", flags: noFlags(keyList)},
	{name: "user key remove", args: "NAME FINGERPRINT", nargs: 2, help: "remove an SSH key, at once", flags: noFlags(keyRemove)},
	{name: "repo create", args: "OWNER/NAME", nargs: 1, help: "create an empty repository", flags: repoCreate},
	{name: "repo import", args: "OWNER/NAME", nargs: 1, help: "copy a repository from a path or URL (-from)", flags: repoImport},
	{name: "repo adopt", help: "register the bare repositories put under DATA/repos/OWNER/NAME.git", flags: repoAdopt},
	{name: "repo list", help: "list the repositories", flags: repoList},
	{name: "repo delete", args: "OWNER/NAME", nargs: 1, help: "move a repository to the trash (its settings go)", flags: noFlags(repoDelete)},
	{name: "repo restore", args: "OWNER/NAME", nargs: 1, help: "bring a deleted repository back from the trash, private", flags: noFlags(repoRestore)},
	{name: "repo rename", args: "OWNER/NAME NEWNAME", nargs: 2, help: "rename a repository (the old name is free at once)", flags: noFlags(repoRename)},
	{name: "token create", args: "USER", nargs: 1, help: "create an access token (shown once)", flags: tokenCreate},
	{name: "token list", args: "USER", nargs: 1, help: "list a user's tokens", flags: noFlags(tokenList)},
	{name: "token revoke", args: "USER TOKEN-NAME", nargs: 2, help: "revoke a token, at once", flags: noFlags(tokenRevoke)},
	{name: "jobs list", help: "list the background jobs (deliveries, indexing, archives, purges, maintenance), newest first (-state, -kind: only those)", flags: jobsList},
	{name: "jobs retry", args: "ID", nargs: 1, help: "run a failed, cancelled or waiting job again now", flags: noFlags(jobsRetry)},
	{name: "jobs cancel", args: "ID", nargs: 1, help: "cancel a job that has not completed", flags: noFlags(jobsCancel)},
}

func findCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// usage opens forged's help; commandsUsage follows it.
const usage = `Usage:
  forged [serve] [flags]                       serve the forge
  forged migrate -from sqlite:DIR -to postgres://...
                                               copy a forge's databases to PostgreSQL
  forged version                               the version and revision of this binary
  forged help                                  this
`

// commandsUsage lists the commands for -h and help.
func commandsUsage() string {
	var b strings.Builder
	for _, c := range commands {
		line := "  forged " + c.name
		if c.args != "" {
			line += " " + c.args
		}
		fmt.Fprintf(&b, "%-46s %s\n", line, c.help)
	}
	return b.String()
}

func noFlags(run func(ctx context.Context, c *cli, pos []string) error) func(*flag.FlagSet) func(context.Context, *cli, []string) error {
	return func(*flag.FlagSet) func(context.Context, *cli, []string) error { return run }
}

// operate runs one of the commands: args is the noun, the verb, then
// the command's arguments and flags (-data and -db for all of them).
func operate(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	noun := args[0]
	var verbs []string
	for _, c := range commands {
		if v, ok := strings.CutPrefix(c.name, noun+" "); ok {
			verbs = append(verbs, v)
		}
	}
	if len(args) < 2 || strings.HasPrefix(args[1], "-") {
		return fmt.Errorf("usage: forged %s %s ... (see forged help)", noun, strings.Join(verbs, "|"))
	}
	// Commands are two words ("user add") or three ("user key add").
	name, rest := noun+" "+args[1], args[2:]
	if len(args) > 2 && !strings.HasPrefix(args[2], "-") && findCommand(name+" "+args[2]) != nil {
		name, rest = name+" "+args[2], args[3:]
	}
	cmd := findCommand(name)
	if cmd == nil {
		return fmt.Errorf("unknown command %q: forged %s takes %s (see forged help)", name, noun, strings.Join(verbs, ", "))
	}
	fs := flag.NewFlagSet("forged "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./forge-data", "data `directory`")
	db := fs.String("db", "", "metadata `DSN`: postgres://... (default: DATA/forge.db)")
	run := cmd.flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: forged %s %s [flags]\n\n%s.\n\nFlags:\n", name, cmd.args, cmd.help)
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, rest)
	if err != nil {
		return err
	}
	if len(pos) != cmd.nargs {
		fs.Usage()
		switch cmd.nargs {
		case 0:
			return fmt.Errorf("forged %s takes no argument", name)
		case 1:
			return fmt.Errorf("forged %s takes exactly one %s", name, cmd.args)
		}
		return fmt.Errorf("forged %s takes %s", name, cmd.args)
	}
	if *db != "" && !forge.IsPostgresDSN(*db) {
		return fmt.Errorf("-db: %q is not a postgres:// URL", *db)
	}
	f, err := openForge(ctx, *data, *db)
	if err != nil {
		return err
	}
	defer f.Meta.Close()
	return run(ctx, &cli{f: f, data: *data, db: *db, stdin: stdin, stdout: stdout, stderr: stderr}, pos)
}

// ownerName splits OWNER/NAME.
func ownerName(s string) (string, string, error) {
	owner, name, ok := strings.Cut(s, "/")
	if !ok || owner == "" || name == "" {
		return "", "", fmt.Errorf("%q is not OWNER/NAME", s)
	}
	return owner, name, nil
}

// readPassword is the first line of stdin.
func readPassword(stdin io.Reader) (string, error) {
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func userAdd(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	isAdmin := fs.Bool("admin", false, "make the user a site administrator")
	email := fs.String("email", "", "e-mail `address`")
	fromStdin := fs.Bool("password-stdin", false, "read the password from the first line of standard input (else one is generated and printed)")
	return func(ctx context.Context, c *cli, pos []string) error {
		pass := randomPassword()
		if *fromStdin {
			var err error
			if pass, err = readPassword(c.stdin); err != nil {
				return err
			}
		}
		u, err := c.f.CreateUser(ctx, pos[0], *email, pass, *isAdmin)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "created user %s", u.Name)
		if u.Admin {
			fmt.Fprint(c.stdout, " (site administrator)")
		}
		fmt.Fprintln(c.stdout)
		if !*fromStdin {
			fmt.Fprintf(c.stdout, "password: %s\n(shown once; it is stored only as a hash)\n", pass)
		}
		return nil
	}
}

func userList(ctx context.Context, c *cli, _ []string) error {
	users, err := c.f.Meta.Users(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tE-MAIL\tROLE\tSTATE")
	for _, u := range users {
		role, state := "user", "active"
		if u.Admin {
			role = "administrator"
		}
		if u.Disabled {
			state = "disabled"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Name, u.Email, role, state)
	}
	return tw.Flush()
}

func userPasswd(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	fromStdin := fs.Bool("password-stdin", false, "read the password from the first line of standard input (else one is generated and printed)")
	return func(ctx context.Context, c *cli, pos []string) error {
		pass := randomPassword()
		if *fromStdin {
			var err error
			if pass, err = readPassword(c.stdin); err != nil {
				return err
			}
		}
		if err := c.f.SetPassword(ctx, pos[0], pass); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "new password set for %s; their sessions have ended\n", pos[0])
		if !*fromStdin {
			fmt.Fprintf(c.stdout, "password: %s\n(shown once; it is stored only as a hash)\n", pass)
		}
		return nil
	}
}

func userEnable(disable bool) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, pos []string) error {
		if err := c.f.SetDisabled(ctx, pos[0], disable); err != nil {
			return err
		}
		if disable {
			fmt.Fprintf(c.stdout, "disabled %s: no sign-in, session or token of theirs works now\n", pos[0])
		} else {
			fmt.Fprintf(c.stdout, "enabled %s\n", pos[0])
		}
		return nil
	}
}

func userAdmin(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	revoke := fs.Bool("revoke", false, "take the role away instead")
	return func(ctx context.Context, c *cli, pos []string) error {
		if err := c.f.SetAdmin(ctx, pos[0], !*revoke); err != nil {
			return err
		}
		if *revoke {
			fmt.Fprintf(c.stdout, "%s is no longer a site administrator\n", pos[0])
		} else {
			fmt.Fprintf(c.stdout, "%s is a site administrator\n", pos[0])
		}
		return nil
	}
}

func userDelete(ctx context.Context, c *cli, pos []string) error {
	if err := c.f.DeleteUser(ctx, pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "deleted user %s (their repositories stay, owned by no one)\n", pos[0])
	return nil
}

func repoCreate(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	private := fs.Bool("private", false, "only the owner and collaborators may see it")
	desc := fs.String("description", "", "one-line `description`")
	return func(ctx context.Context, c *cli, pos []string) error {
		owner, name, err := ownerName(pos[0])
		if err != nil {
			return err
		}
		r, err := c.f.CreateRepo(ctx, owner, name, *private, *desc)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "created %s repository %s/%s (default branch %s, protected)\n", visibility(r), r.Owner, r.Name, r.DefaultBranch)
		return nil
	}
}

func visibility(r *forge.RepoInfo) string {
	if r.Private {
		return "private"
	}
	return "public"
}

func repoImport(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	from := fs.String("from", "", "`path or URL` of the repository to copy (http, https, git, ssh, or a directory)")
	private := fs.Bool("private", false, "only the owner and collaborators may see it")
	desc := fs.String("description", "", "one-line `description`")
	return func(ctx context.Context, c *cli, pos []string) error {
		owner, name, err := ownerName(pos[0])
		if err != nil {
			return err
		}
		if *from == "" {
			return errors.New("-from: a path or URL is needed")
		}
		r, err := c.f.ImportRepo(ctx, owner, name, *from, *private, *desc)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "imported %s into %s/%s (default branch %s, protected; packed with a bitmap and a commit-graph)\n", *from, r.Owner, r.Name, r.DefaultBranch)
		return nil
	}
}

func repoAdopt(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	create := fs.Bool("create-owners", false, "create the owners that do not exist (with no password: set one with forged user passwd)")
	public := fs.Bool("public", false, "make the adopted repositories public (default: private)")
	return func(ctx context.Context, c *cli, _ []string) error {
		res, err := c.f.Adopt(ctx, forge.AdoptOptions{CreateOwners: *create, Public: *public})
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
				fmt.Fprintf(c.stdout, "not adopted %s/%s: %v\n", a.Repo.Owner, a.Repo.Name, a.Err)
				continue
			}
			fmt.Fprintf(c.stdout, "adopted %s/%s (%s, default branch %s)\n", a.Info.Owner, a.Info.Name, visibility(a.Info), a.Info.DefaultBranch)
		}
		if len(res) == 0 {
			fmt.Fprintln(c.stdout, "nothing to adopt: every repository under repos/ is registered")
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d repositories not adopted", failed, len(res))
		}
		return nil
	}
}

func repoList(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	owner := fs.String("owner", "", "only this `user`'s repositories")
	trash := fs.Bool("trash", false, "list the deleted repositories that restore can bring back")
	return func(ctx context.Context, c *cli, _ []string) error {
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		if *trash {
			all, err := c.f.Store.Trash()
			if err != nil {
				return err
			}
			fmt.Fprintln(tw, "REPOSITORY\tDELETED")
			for _, t := range all {
				if *owner == "" || strings.EqualFold(t.Owner, *owner) {
					fmt.Fprintf(tw, "%s/%s\t%s\n", t.Owner, t.Name, t.Deleted.UTC().Format(time.RFC3339))
				}
			}
			return tw.Flush()
		}
		repos, err := c.f.Meta.Repos(ctx, forge.RepoQuery{Owner: *owner, Limit: 1 << 30})
		if err != nil {
			return err
		}
		fmt.Fprintln(tw, "REPOSITORY\tVISIBILITY\tSIZE\tPUSHED")
		for _, r := range repos {
			pushed := "never"
			if !r.PushedAt.IsZero() {
				pushed = r.PushedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\n", r.Owner, r.Name, visibility(&r), humanSize(r.Size), pushed)
		}
		return tw.Flush()
	}
}

func repoDelete(ctx context.Context, c *cli, pos []string) error {
	owner, name, err := ownerName(pos[0])
	if err != nil {
		return err
	}
	info, err := c.f.Meta.RepoInfo(ctx, owner, name)
	if err != nil {
		return err
	}
	if err := c.f.DeleteRepo(ctx, owner, name); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "moved %s/%s to the trash (forged repo restore %s/%s brings it back)\n", owner, name, owner, name)
	// As the settings page does: front caches drop its pages, the code
	// index forgets it (jobs for the server, which knows the caches).
	c.queue(ctx, append(indexParams(info.ID), river.InsertManyParams{Args: purgeRepoArgs{RepoID: info.ID, Why: "deleted"}})...)
	return nil
}

func repoRestore(ctx context.Context, c *cli, pos []string) error {
	owner, name, err := ownerName(pos[0])
	if err != nil {
		return err
	}
	r, err := c.f.RestoreRepo(ctx, owner, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "restored %s/%s (private, default branch %s protected; collaborators and webhooks are to be set again)\n", r.Owner, r.Name, r.DefaultBranch)
	return nil
}

func repoRename(ctx context.Context, c *cli, pos []string) error {
	owner, name, err := ownerName(pos[0])
	if err != nil {
		return err
	}
	r, err := c.f.RenameRepo(ctx, owner, name, pos[1])
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "renamed %s/%s to %s/%s\n", owner, name, r.Owner, r.Name)
	// The old name's pages go from front caches, as on the settings page.
	c.queue(ctx, river.InsertManyParams{Args: purgeRepoArgs{RepoID: r.ID, Why: "renamed"}})
	return nil
}

// queue hands jobs to the server's queue. The command has done its
// work; a queue it cannot reach is reported, not failed on.
func (c *cli) queue(ctx context.Context, jobs ...river.InsertManyParams) {
	client, db, err := openQueueAdmin(ctx, c.data, c.db)
	if err == nil {
		_, err = client.InsertMany(ctx, jobs)
		db.Close()
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "warning: not queued for the server (front-cache purges, code index): %v\n", err)
	}
}

func tokenCreate(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	scope := fs.String("scope", "write", "`scope`: read (clone, fetch) or write (also push)")
	name := fs.String("name", "", "token `name` (default: cli-TIMESTAMP)")
	expires := fs.Duration("expires", 0, "lifetime, e.g. 720h (default: never expires)")
	return func(ctx context.Context, c *cli, pos []string) error {
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
		tok, err := c.f.CreateToken(ctx, pos[0], n, forge.Scope(*scope), *expires)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "token %s (%s) for %s:\n%s\n(shown once; use it as the password of git over HTTP)\n", n, *scope, pos[0], tok)
		return nil
	}
}

func tokenList(ctx context.Context, c *cli, pos []string) error {
	if _, err := c.f.Meta.User(ctx, pos[0]); err != nil {
		return err
	}
	toks, err := c.f.Meta.Tokens(ctx, pos[0])
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSCOPE\tCREATED\tEXPIRES")
	for _, t := range toks {
		exp := "never"
		if !t.Expires.IsZero() {
			exp = t.Expires.UTC().Format(time.RFC3339)
			if t.ExpiredAt {
				exp += " (expired)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Scope, t.Created.UTC().Format(time.RFC3339), exp)
	}
	return tw.Flush()
}

func tokenRevoke(ctx context.Context, c *cli, pos []string) error {
	if err := c.f.RevokeToken(ctx, pos[0], pos[1]); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "revoked %s's token %s; it works no more\n", pos[0], pos[1])
	return nil
}

// version prints the module's version and the VCS revision the binary
// was built from, as the Go toolchain recorded them.
func version(stdout io.Writer) error {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return errors.New("no build information in this binary")
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	fmt.Fprintf(stdout, "forged %s (%s %s)\n", v, bi.Path, bi.Main.Path)
	for _, d := range bi.Deps {
		if d.Path == "github.com/forgekit/forgekit" {
			fmt.Fprintf(stdout, "forgekit %s\n", d.Version)
		}
	}
	if rev := settings["vcs.revision"]; rev != "" {
		dirty := ""
		if settings["vcs.modified"] == "true" {
			dirty = " (modified)"
		}
		fmt.Fprintf(stdout, "revision %s%s %s\n", rev, dirty, settings["vcs.time"])
	}
	fmt.Fprintf(stdout, "built with %s\n", bi.GoVersion)
	return nil
}

func keyAdd(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	name := fs.String("name", "", "key `name` (default: the key's comment)")
	readOnly := fs.Bool("read-only", false, "the key may clone and fetch, not push")
	return func(ctx context.Context, c *cli, pos []string) error {
		line, err := io.ReadAll(io.LimitReader(c.stdin, 64<<10))
		if err != nil {
			return err
		}
		k, err := c.f.AddSSHKey(ctx, pos[0], *name, string(line), *readOnly)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "added %s's key %s: %s\n", pos[0], k.Name, k.Fingerprint)
		return nil
	}
}

func keyList(ctx context.Context, c *cli, pos []string) error {
	if _, err := c.f.Meta.User(ctx, pos[0]); err != nil {
		return err
	}
	keys, err := c.f.Meta.SSHKeys(ctx, pos[0])
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FINGERPRINT\tTYPE\tNAME\tACCESS\tADDED\tLAST USED")
	for _, k := range keys {
		access, used := "write", "never"
		if k.ReadOnly {
			access = "read"
		}
		if !k.LastUsed.IsZero() {
			used = k.LastUsed.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.Fingerprint, k.Type, k.Name, access, k.Created.Format(time.RFC3339), used)
	}
	return tw.Flush()
}

func keyRemove(ctx context.Context, c *cli, pos []string) error {
	if err := c.f.RemoveSSHKey(ctx, pos[0], pos[1]); errors.Is(err, forge.ErrNotFound) {
		return fmt.Errorf("%s has no SSH key %s (forged user key list %s shows the fingerprints)", pos[0], pos[1], pos[0])
	} else if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "removed %s's key %s; it works no more\n", pos[0], pos[1])
	return nil
}
