package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/mail"
	"net/netip"
	"net/smtp"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/trace"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"golang.org/x/crypto/ssh"

	"github.com/forgekit/forgekit/counting"
	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/gitproto/gitssh"
	"github.com/forgekit/forgekit/gitproto/gogit"
	"github.com/forgekit/forgekit/slowlog"
	"github.com/forgekit/forgekit/timebox"
	"github.com/forgekit/forgekit/viewcache"
)

// Defaults of the server's flags and limits.
const (
	// firstAdminName is the administrator created on the first start
	// ("admin" is reserved: it is the /admin URL).
	firstAdminName       = "root"
	defaultAddr          = "127.0.0.1:8080"
	defaultPageTimeout   = 10 * time.Second
	defaultGitTimeout    = time.Hour
	defaultSlowThreshold = 2 * time.Second
	// A profiled request (an administrator's signed link) runs outside
	// the page's limit, up to this.
	defaultProfileTimeout = 60 * time.Second
	// lastCommitBudget is how long the first view of a directory waits
	// for the last commit of each entry before it is sent without them,
	// to be filled in by its script once the walk completes.
	lastCommitBudget = 150 * time.Millisecond
)

type config struct {
	addr           string
	data           string
	db             string
	memcached      []string
	baseURL        *url.URL
	accel          string
	trustedProxies []netip.Prefix
	logFile        string
	engine         string
	packCache      bool
	advertCache    bool
	pageTimeout    time.Duration
	gitTimeout     time.Duration
	slowThreshold  time.Duration
	profileTimeout time.Duration
	traceWindow    time.Duration // of the flight recorder; 0 for none
	webhookPrivate bool
	purge          []string
	registration   bool   // visitors may create their own accounts
	sshAddr        string // git over SSH; "" for none
	slowMail       *slowlog.EmailSink
	slowWebhook    string
	gitAddr        string // git://; "" for none
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("forged", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var memcached, baseURL, proxies, purge, registration string
	fs.StringVar(&c.addr, "addr", defaultAddr, "listen `address`; loopback unless you say otherwise")
	fs.StringVar(&c.data, "data", "./forge-data", "data `directory` (repositories, databases, caches, secret key)")
	fs.StringVar(&c.db, "db", "", "`DSN` of a PostgreSQL database for metadata and view counts, postgres://... (default: SQLite files in the data directory)")
	fs.StringVar(&memcached, "memcached", "", "memcached `servers` host:port,... for the shared fragment cache (default: in-process only)")
	fs.StringVar(&baseURL, "base-url", "", "public `URL` of the forge, for clone URLs and secure cookies (default: http://ADDR)")
	fs.StringVar(&c.accel, "accel", "none", "front server that sends archive and pack files: nginx (X-Accel-Redirect), lighttpd (X-Sendfile) or none")
	fs.StringVar(&proxies, "trusted-proxies", "loopback", "comma-separated `CIDRs` of front servers whose X-Forwarded-For and X-Request-Id are believed; \"loopback\" for 127.0.0.0/8 and ::1 (a proxy on this machine), \"none\" for none")
	fs.StringVar(&c.logFile, "log", "", "JSON log `file`, reopened on SIGUSR1 (default: standard error)")
	fs.StringVar(&c.engine, "engine", "auto", "git protocol `engine`: git, gogit, or auto (git if installed)")
	fs.BoolVar(&c.packCache, "pack-cache", true, "share and keep pack generations of identical fetches")
	fs.BoolVar(&c.advertCache, "advert-cache", true, "keep ref advertisements in memory")
	fs.DurationVar(&c.pageTimeout, "page-timeout", defaultPageTimeout, "time limit of a web page")
	fs.DurationVar(&c.gitTimeout, "git-timeout", defaultGitTimeout, "time limit of a git request (clone, fetch, push)")
	fs.DurationVar(&c.slowThreshold, "slow", defaultSlowThreshold, "requests still running after this are reported with their stacks")
	fs.StringVar(&purge, "purge", "", "front cache `URLs` (http://varnish:6081/,...) told to drop a repository's pages when it stops being public or a force-push drops commits")
	fs.StringVar(&registration, "registration", "closed", "`closed`: only the administrator adds users (forged user add); open: visitors sign up at /register, as fast as the sign-in limits let them")
	fs.DurationVar(&c.profileTimeout, "profile-timeout", defaultProfileTimeout, "time limit of a request profiled through an administrator's link (instead of -page-timeout or -git-timeout)")
	fs.DurationVar(&c.traceWindow, "trace-window", 0, "keep an execution trace of the last `duration` in memory (Go's flight recorder), written beside slow reports and profiles; 0 for none")
	var slowMail string
	fs.StringVar(&slowMail, "slow-mail", "", "mail slow-request reports through this SMTP server: `smtp://[user:pass@]host:port?from=ADDR&to=ADDR[,ADDR]` (one per stack signature per 10 minutes, at most 10 per 10 minutes)")
	fs.StringVar(&c.slowWebhook, "slow-webhook", "", "POST slow-request reports as JSON to this `URL`, throttled as -slow-mail")
	fs.StringVar(&c.sshAddr, "ssh-addr", "", "serve git over SSH on this `address` (127.0.0.1:2222, say), with a host key kept in the data directory; off by default")
	fs.StringVar(&c.gitAddr, "git-addr", "", "serve git:// (anonymous, read-only, public repositories) on this `address` (127.0.0.1:9418, say); off by default")
	fs.BoolVar(&c.webhookPrivate, "webhook-private", false, "let webhooks reach loopback and private addresses (refused by default: repository admins could reach internal services)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage+commandsUsage()+`
Commands take -data DIR and -db DSN; forged COMMAND -h shows their flags.

Signals: SIGTERM or SIGINT drain and stop; SIGHUP or SIGUSR2 start a new
binary on the same socket and stop once it serves; SIGUSR1 reopens -log.

Flags of serve:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	}
	switch registration {
	case "closed":
	case "open":
		c.registration = true
	default:
		return nil, fmt.Errorf("-registration: %q is not closed or open", registration)
	}
	switch c.engine {
	case "auto", "git", "gogit":
	default:
		return nil, fmt.Errorf("-engine: %q is not git, gogit or auto", c.engine)
	}
	if c.db != "" && !forge.IsPostgresDSN(c.db) {
		return nil, fmt.Errorf("-db: %q is not a postgres:// URL (SQLite is the default, in -data)", c.db)
	}
	switch c.accel {
	case "none", "nginx", "lighttpd":
	default:
		return nil, fmt.Errorf("-accel: %q is not nginx, lighttpd or none", c.accel)
	}
	if _, _, err := net.SplitHostPort(c.addr); err != nil {
		return nil, fmt.Errorf("-addr: %v", err)
	}
	if memcached != "" {
		for _, s := range strings.Split(memcached, ",") {
			if _, _, err := net.SplitHostPort(strings.TrimSpace(s)); err != nil {
				return nil, fmt.Errorf("-memcached: %q: %v", s, err)
			}
			c.memcached = append(c.memcached, strings.TrimSpace(s))
		}
	}
	if baseURL != "" {
		u, err := url.Parse(baseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("-base-url: %q is not an http(s) URL", baseURL)
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		c.baseURL = u
	}
	if purge != "" {
		for _, u := range strings.Split(purge, ",") {
			pu, err := url.Parse(strings.TrimSpace(u))
			if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
				return nil, fmt.Errorf("-purge: %q is not an http(s) URL", u)
			}
			c.purge = append(c.purge, pu.String())
		}
	}
	if proxies != "" && proxies != "none" {
		for _, p := range strings.Split(proxies, ",") {
			p = strings.TrimSpace(p)
			if p == "loopback" {
				// A proxy on this machine: believed by default, so that
				// behind it every client is not the one address (a
				// shared login limit) and /metrics is not public.
				c.trustedProxies = append(c.trustedProxies, netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
				continue
			}
			if !strings.Contains(p, "/") {
				if a, err := netip.ParseAddr(p); err == nil {
					p = netip.PrefixFrom(a, a.BitLen()).String()
				}
			}
			pfx, err := netip.ParsePrefix(p)
			if err != nil {
				return nil, fmt.Errorf("-trusted-proxies: %v", err)
			}
			c.trustedProxies = append(c.trustedProxies, pfx.Masked())
		}
	}
	if slowMail != "" {
		m, err := parseSlowMail(slowMail)
		if err != nil {
			return nil, fmt.Errorf("-slow-mail: %v", err)
		}
		c.slowMail = m
	}
	if c.slowWebhook != "" {
		if u, err := url.Parse(c.slowWebhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("-slow-webhook: want an http or https URL, not %q", c.slowWebhook)
		}
	}
	if c.traceWindow < 0 {
		return nil, fmt.Errorf("-trace-window: must not be negative")
	}
	for name, d := range map[string]time.Duration{"-page-timeout": c.pageTimeout, "-git-timeout": c.gitTimeout, "-slow": c.slowThreshold, "-profile-timeout": c.profileTimeout} {
		if d <= 0 {
			return nil, fmt.Errorf("%s: must be positive", name)
		}
	}
	return c, nil
}

// server is the assembled forge: the page groups (web.go) and what they
// share, and what the process closes at the end.
type server struct {
	*site
	instance    string // names this server's private cache directories
	git         *gitproto.Handler
	views       *counting.Counter
	viewsDB     io.Closer // the counts' store
	code        *codeIndex
	codeDB      io.Closer // the code index's store
	mc          *memcache.Client
	mcGetter    *viewcache.Getter // the cache's lookups, on mc's servers
	archiver    *forge.Archiver
	purger      *purger
	lastCommits *forge.LastCommitCache
	maint       *forge.Maintainer
	hooks       *forge.Deliverer
	queue       *queue // River: the work that outlives a request (jobs.go)
	watchdog    *slowlog.Watchdog
	flight      *trace.FlightRecorder // nil without -trace-window
	repeats     sync.Map              // route, kind and key of repeated work logged
	profiler    *slowlog.Profiler
	tbox        *timebox.Handler
	logins      *loginLimiter
	browsers    *forge.Browsers
	metrics     *metrics
	handler     http.Handler
	table       *routeTable

	repo     *repoPages
	settings *repoSettings
	account  *accountPages
	explore  *explorePages
	api      *apiPages
	admin    *adminPages
	gitFront *gitFront
	ops      *ops
}

// newServer opens everything under cfg.data.
func newServer(ctx context.Context, cfg *config, logger *slog.Logger) (s *server, err error) {
	// The data directory is its owner's alone: it holds password and
	// token hashes, webhook secrets, the session key and private
	// repositories. (A front server given files with -accel must run as
	// the same user, or be given access to DATA/cache by the operator.)
	if err := os.MkdirAll(cfg.data, 0o700); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(cfg.data); err == nil && fi.Mode().Perm()&0o077 != 0 {
		logger.Warn("data directory readable by others: making it 0700", "dir", cfg.data, "mode", fi.Mode().Perm().String())
		if err := os.Chmod(cfg.data, 0o700); err != nil {
			return nil, err
		}
	}
	s = &server{site: &site{cfg: cfg, log: logger}, instance: newInstanceID()}
	opened := s // the returns below set s to nil
	defer func() {
		if err != nil {
			opened.Close()
		}
	}()
	if s.key, err = secretKey(filepath.Join(cfg.data, "secret.key")); err != nil {
		return nil, err
	}
	if s.forge, err = openForge(ctx, cfg.data, cfg.db); err != nil {
		return nil, err
	}
	s.forge.Logger = logger
	s.hooks = &forge.Deliverer{Meta: s.forge.Meta, Logger: logger, AllowPrivate: cfg.webhookPrivate}
	s.forge.Deliverer = s.hooks
	s.forge.OnPush = append(s.forge.OnPush, func(ctx context.Context, ev forge.PushEvent) { s.settings.pushed(ctx, ev) })

	var views counting.Store
	if views, s.viewsDB, err = openViews(ctx, cfg.data, cfg.db); err != nil {
		return nil, err
	}
	s.views = counting.New(views)
	s.views.Logger = logger
	s.views.OnQuery = func(ctx context.Context, d time.Duration) { slowlog.Count(ctx, slowlog.Query, d) }

	s.cache = viewcache.New("forged", templateVersion)
	s.cache.SoftTTL = 5 * time.Minute
	s.cache.Jitter = 0.1
	s.cache.Logger = logger
	s.cache.RunDetached = func(ctx context.Context, name string, f func(context.Context)) { s.watchdog.Do(ctx, name, f) }
	s.cache.OnWork = func(ctx context.Context, ev viewcache.WorkEvent, key string, d time.Duration) {
		switch ev {
		case viewcache.Asked:
			slowlog.CountKey(ctx, slowlog.CacheLookup, 0, key)
		case viewcache.RemoteGet:
			slowlog.Count(ctx, slowlog.CacheGet, 0)
		case viewcache.Rendered:
			slowlog.Count(ctx, slowlog.Render, d)
		}
	}
	if len(cfg.memcached) > 0 {
		servers := new(memcache.ServerList)
		if err := servers.SetServers(cfg.memcached...); err != nil {
			return nil, fmt.Errorf("-memcached: %w", err)
		}
		s.mc = memcache.NewFromSelector(servers)
		s.mc.Timeout = 200 * time.Millisecond
		s.cache.Memcache = s.mc
		// Lookups on their own connections, without a goroutine each.
		s.mcGetter = viewcache.NewGetter(servers)
		s.mcGetter.Timeout = s.mc.Timeout
		s.cache.Getter = s.mcGetter
	}

	var sendFile func(http.ResponseWriter, *http.Request, string) bool
	switch cfg.accel {
	case "nginx":
		sendFile = gitproto.AccelRedirect(cfg.data, "/_accel")
	case "lighttpd":
		sendFile = gitproto.XSendfile()
	}
	if s.archiver, err = forge.NewArchiver(filepath.Join(cfg.data, "cache", "archives", s.instance), 0); err != nil {
		return nil, err
	}
	s.archiver.SendFile = sendFile
	s.purger = &purger{urls: cfg.purge, log: logger, client: &http.Client{Timeout: 5 * time.Second}}
	// Last commits outlive the process: files shared by the instances of
	// the data directory (a result never changes).
	s.lastCommits = &forge.LastCommitCache{Dir: filepath.Join(cfg.data, "cache", "lastcommits"), Logger: logger,
		// Watched as jobs of their own, naming the request that started
		// them: a slow walk is reported while it runs.
		RunDetached: func(ctx context.Context, name string, f func(context.Context)) { s.watchdog.Do(ctx, name, f) }}

	s.git = s.forge.GitHandler()
	s.git.Admission = &gitproto.Admission{}
	s.git.Logger = logger
	s.git.SendFile = sendFile
	engine := cfg.engine
	if engine == "auto" {
		engine = "gogit"
		if _, err := exec.LookPath("git"); err == nil {
			engine = "git"
		}
	}
	if engine == "gogit" {
		s.git.Engine = &gogit.Engine{}
	}
	if cfg.packCache {
		if s.git.PackCache, err = gitproto.NewPackCache(filepath.Join(cfg.data, "cache", "packs", s.instance), 0); err != nil {
			return nil, err
		}
	}
	if cfg.advertCache {
		s.git.AdvertCache = &gitproto.AdvertCache{}
	}

	s.maint = &forge.Maintainer{Store: s.forge.Store, Logger: logger}

	sinks := slowlog.Sinks{slowlog.SlogSink{Logger: logger}, &slowlog.DirSink{Dir: filepath.Join(cfg.data, "slow")}}
	// Reports that reach people are throttled: one per stack signature
	// and a few per window, whatever the storm.
	if cfg.slowMail != nil {
		sinks = append(sinks, &slowlog.Throttle{Sink: cfg.slowMail})
	}
	if cfg.slowWebhook != "" {
		sinks = append(sinks, &slowlog.Throttle{Sink: slowlog.WebhookSink{URL: cfg.slowWebhook, Client: &http.Client{Timeout: 10 * time.Second}}})
	}
	s.watchdog = &slowlog.Watchdog{
		Threshold: cfg.slowThreshold,
		Sink:      sinks,
		Logger:    logger,
		Route:     func(r *http.Request) string { return s.route(r) },
		RequestID: requestID,
		// Who the verified cookie names, without the database lookup
		// the handler makes anyway (a report of a session whose password
		// has changed since still names its user).
		Principal: func(r *http.Request) string {
			name, _, _, _ := s.claims(r)
			return name
		},
	}
	if cfg.traceWindow > 0 {
		// One flight recorder per process: a second server in the same
		// process (tests) goes without.
		fr := trace.NewFlightRecorder(trace.FlightRecorderConfig{MinAge: cfg.traceWindow})
		if err := fr.Start(); err != nil {
			logger.Warn("no flight recorder", "err", err)
		} else {
			s.flight = fr
			s.watchdog.FlightRecorder = fr
			s.watchdog.TraceDir = filepath.Join(cfg.data, "slow")
		}
	}
	s.profiler = slowlog.NewProfiler(s.key)
	s.profiler.FlightRecorder = s.flight
	// Each repository's maintenance is a job of the queue (see
	// maintainDue), watched like every job; the queue's uniqueness
	// replaces the lock file.
	s.maint.NoLock = true
	s.profiler.Dir = filepath.Join(cfg.data, "profiles")
	if err := os.MkdirAll(s.profiler.Dir, 0o700); err != nil {
		return nil, err
	}
	s.profiler.URLPrefix = "/admin/profiles/"
	s.profiler.Audit = func(r *http.Request, subject, outcome string) {
		logger.Info("profile", "subject", subject, "outcome", outcome, "path", r.URL.Path)
	}

	// At most 256 repositories' Browsers (each maps its commit-graph):
	// bounded however many repositories are browsed.
	s.browsers = &forge.Browsers{}
	codeStore, codeDB, err := openCodeStore(ctx, cfg.data, cfg.db)
	if err != nil {
		return nil, fmt.Errorf("code index: %w", err)
	}
	s.codeDB = codeDB
	s.code = newCodeIndex(codeStore, s.forge, s.browsers, logger)

	// The work that outlives a request is jobs of the durable queue:
	// what waits when this process stops is done by the next.
	if s.queue, err = openQueue(ctx, s, forge.DefaultBackoff); err != nil {
		return nil, err
	}
	s.forge.Enqueue = s.queue.enqueuePush
	s.hooks.Enqueue = s.queue.enqueueDelivery
	s.purger.enqueue = s.queue.enqueuePurge
	s.code.enqueue = s.queue.enqueueIndex
	// Pushes made while no process ran are found.
	if err := s.code.markAll(ctx); err != nil {
		logger.Warn("code index: listing the repositories", "err", err)
	}
	s.logins = newLoginLimiter()
	if s.assets, err = loadAssets(); err != nil {
		return nil, err
	}
	if err = s.templates(); err != nil {
		return nil, err
	}
	s.viewlets = &viewcache.Viewlets{Cache: s.cache, Templates: s.fragments}
	s.metrics = newMetrics(s)

	s.repo = &repoPages{site: s.site, browsers: s.browsers, lastCommits: s.lastCommits, archiver: s.archiver, views: s.views,
		blames: newFills(2, 256, archiveTimeout), code: s.code}
	s.settings = &repoSettings{site: s.site, browsers: s.browsers, purger: s.purger, code: s.code}
	s.account = &accountPages{site: s.site, logins: s.logins, profiler: s.profiler}
	s.explore = &explorePages{site: s.site, views: s.views, code: s.code}
	s.api = &apiPages{site: s.site, pages: s.repo, browsers: s.browsers, logins: s.logins}
	s.admin = &adminPages{site: s.site, profiler: s.profiler, watchdog: s.watchdog, maint: s.maint, queue: s.queue, stats: s.stats}
	s.gitFront = &gitFront{site: s.site, git: s.git, logins: s.logins}
	s.ops = &ops{site: s.site, mc: s.mc, metrics: s.metrics}
	s.handler = s.routes()
	if err := s.queue.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// newInstanceID names a server's private cache directories: several
// instances (processes, machines) may share a data directory, and the
// archive and pack caches clear their directory when they start. Host,
// pid and a random part: pids repeat across machines. (A crashed
// instance leaves its directories behind; they are caches, safe to
// delete.)
func newInstanceID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%s-%d-%x", host, os.Getpid(), b)
}

// stats is every component's counters, for the administrator.
func (s *server) stats() string {
	return fmt.Sprintf("fragments  %+v\nviews      %+v\ngit        %+v\ntime boxes %+v\nslow       %+v\narchives   %+v",
		s.cache.Stats(), s.views.Stats(), s.git.Stats(), s.tbox.Stats(), s.watchdog.Stats(), s.archiver.Stats())
}

// Close stops the background work and closes the databases.
func (s *server) Close() error {
	if s.flight != nil {
		s.flight.Stop()
	}
	if s.forge != nil {
		s.forge.Wait() // pushes' records and webhooks, before their Meta and Deliverer close
	}
	if s.queue != nil {
		s.queue.close() // its workers use every component
	}
	if s.repo != nil {
		s.repo.blames.close()
	}
	if s.codeDB != nil {
		s.codeDB.Close()
	}
	if s.browsers != nil {
		s.browsers.Close()
	}
	if s.hooks != nil {
		s.hooks.Close()
	}
	if s.watchdog != nil {
		s.watchdog.Close()
	}
	var err error
	if s.views != nil {
		err = s.views.Close()
	}
	if s.viewsDB != nil {
		s.viewsDB.Close()
	}
	if s.cache != nil {
		s.cache.Close()
	}
	if s.mcGetter != nil {
		s.mcGetter.Close()
	}
	if s.forge != nil {
		s.forge.Meta.Close()
	}
	if s.archiver != nil {
		os.RemoveAll(filepath.Join(s.cfg.data, "cache", "archives", s.instance))
	}
	if s.git != nil && s.git.PackCache != nil {
		os.RemoveAll(filepath.Join(s.cfg.data, "cache", "packs", s.instance))
	}
	return err
}

// secretKey reads the 32-byte key at path, creating it (mode 0600) on
// first use. Every instance sharing the data directory uses the same key,
// so sessions and CSRF tokens work across them. A key file of another
// size is an error naming it: a short key would be a weak one, and
// replacing it would end every session.
func secretKey(path string) ([]byte, error) {
	for range 2 {
		b, err := os.ReadFile(path)
		if err == nil {
			if len(b) < 32 {
				return nil, fmt.Errorf("%s: %d bytes, not 32: remove it to make a new key (every session ends)", path, len(b))
			}
			return b[:32], nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		b = make([]byte, 32)
		rand.Read(b)
		tmp := fmt.Sprintf("%s.%d", path, os.Getpid())
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return nil, err
		}
		// Link, not rename: if another instance created it meanwhile,
		// keep theirs (and read it on the next turn).
		if err := os.Link(tmp, path); err != nil && !errors.Is(err, os.ErrExist) {
			os.Remove(tmp)
			return nil, err
		}
		os.Remove(tmp)
	}
	return nil, fmt.Errorf("%s: could not be read after it was created", path)
}

// firstAdmin creates the administrator "root" with a random password when there
// are no users, and returns the password ("" if nothing was created).
func (s *server) firstAdmin(ctx context.Context) (string, error) {
	users, err := s.forge.Meta.Users(ctx)
	if err != nil || len(users) > 0 {
		return "", err
	}
	pass := randomPassword()
	if _, err := s.forge.CreateUser(ctx, firstAdminName, "", pass, true); err != nil {
		if errors.Is(err, forge.ErrUserExists) {
			return "", nil // another instance was first
		}
		return "", err
	}
	return pass, nil
}

// baseURL is the forge's public URL for r.
func (s *site) baseURL(r *http.Request) string {
	if s.cfg.baseURL != nil {
		return s.cfg.baseURL.String()
	}
	return "http://" + r.Host
}

// run serves until ctx is done. ready, if set, receives the base URL once
// the server listens.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(url string)) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logw := io.Writer(stderr)
	var lf *logFile
	if cfg.logFile != "" {
		if lf, err = openLogFile(cfg.logFile); err != nil {
			return err
		}
		defer lf.Close()
		logw = lf
	}
	logger := slog.New(slog.NewJSONHandler(logw, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := newServer(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer s.Close()
	pass, err := s.firstAdmin(ctx)
	if err != nil {
		return err
	}
	ln, inherited, err := listen(cfg.addr)
	if err != nil {
		return err
	}
	base := "http://" + ln.Addr().String()
	if cfg.baseURL != nil {
		base = cfg.baseURL.String()
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	if inherited {
		fmt.Fprintf(stdout, "forged: took over %s from the previous process\n", ln.Addr())
	} else {
		fmt.Fprintf(stdout, "forged: serving %s on %s\n", cfg.data, base)
	}
	if pass != "" {
		fmt.Fprintf(stdout, "forged: created the administrator; sign in at %s/login as %s with password %s\n", base, firstAdminName, pass)
		fmt.Fprintf(stdout, "forged: (shown once; add users with: forged user add NAME -data %s)\n", cfg.data)
	} else if !inherited {
		fmt.Fprintf(stdout, "forged: sign in at %s/login (add users with: forged user add NAME -data %s)\n", base, cfg.data)
	}
	var sshSrv *gitssh.Server
	sshDone := make(chan error, 1)
	if cfg.sshAddr != "" {
		hostKey, err := loadHostKey(cfg.data)
		if err != nil {
			return err
		}
		sl, err := listenRetry(ctx, cfg.sshAddr, inherited)
		if err != nil {
			return fmt.Errorf("-ssh-addr: %w", err)
		}
		s.sshPort = sl.Addr().(*net.TCPAddr).Port
		sshSrv = s.newSSH(hostKey)
		go func() { sshDone <- sshSrv.Serve(sl) }()
		fmt.Fprintf(stdout, "forged: git over SSH on %s, host key %s\n", sl.Addr(), ssh.FingerprintSHA256(hostKey.PublicKey()))
	}
	var daemon *gitproto.Daemon
	daemonDone := make(chan error, 1)
	if cfg.gitAddr != "" {
		gl, err := listenRetry(ctx, cfg.gitAddr, inherited)
		if err != nil {
			return fmt.Errorf("-git-addr: %w", err)
		}
		daemon = s.newDaemon()
		go func() { daemonDone <- daemon.Serve(gl) }()
		fmt.Fprintf(stdout, "forged: git:// on %s (public repositories, read-only)\n", gl.Addr())
	}
	fresh := trackFresh(srv)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if ready != nil {
		ready(base)
	}
	notifyParent(logger) // a restarted process tells its parent it serves
	err = s.signals(ctx, ln, lf, errc)
	// Stop accepting (after a restart the new process accepts on the same
	// socket), then let the connections already accepted send their
	// requests: Shutdown closes, unanswered, a connection whose request
	// it reads after Shutdown began.
	ln.Close()
	fresh.wait(drainFresh)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Shutdown closes the listener again unless Serve has already seen it
	// closed and let go of it, which is a race; that second close's error
	// says nothing.
	// SSH and git:// sessions (a clone in progress) get the same grace
	// as HTTP requests, in parallel.
	sshShut := make(chan struct{})
	go func() {
		if sshSrv != nil {
			sshSrv.Shutdown(shutdownCtx)
			<-sshDone
		}
		if daemon != nil {
			daemon.Shutdown(shutdownCtx)
			<-daemonDone
		}
		close(sshShut)
	}()
	if serr := srv.Shutdown(shutdownCtx); serr != nil && !errors.Is(serr, net.ErrClosed) && err == nil {
		err = serr
	}
	<-sshShut
	if serveErr := <-errc; !errors.Is(serveErr, http.ErrServerClosed) && !errors.Is(serveErr, net.ErrClosed) && err == nil {
		err = serveErr
	}
	return err
}

// drainFresh bounds the wait for accepted connections to send their
// first request before shutting down; a client that connects and stays
// silent longer is dropped.
const drainFresh = time.Second

// freshConns tracks the connections accepted whose first request has not
// been read yet.
type freshConns struct {
	conns sync.Map // net.Conn → struct{}
	n     atomic.Int64
}

func trackFresh(srv *http.Server) *freshConns {
	f := &freshConns{}
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			f.conns.Store(c, struct{}{})
			f.n.Add(1)
		} else if _, ok := f.conns.LoadAndDelete(c); ok {
			f.n.Add(-1)
		}
	}
	return f
}

// wait waits until no accepted connection is waiting for its first
// request, or for at most d.
func (f *freshConns) wait(d time.Duration) {
	deadline := time.Now().Add(d)
	for f.n.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
}

// parseSlowMail reads -slow-mail: smtp://[user:pass@]host:port?from=...&to=a,b.
func parseSlowMail(v string) (*slowlog.EmailSink, error) {
	u, err := url.Parse(v)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "smtp" || u.Hostname() == "" || u.Port() == "" {
		return nil, fmt.Errorf("want smtp://host:port?from=...&to=..., not %q", v)
	}
	q := u.Query()
	m := &slowlog.EmailSink{Addr: u.Host, From: q.Get("from")}
	for _, to := range strings.Split(q.Get("to"), ",") {
		if to = strings.TrimSpace(to); to != "" {
			m.To = append(m.To, to)
		}
	}
	for _, a := range append([]string{m.From}, m.To...) {
		if _, err := mail.ParseAddress(a); err != nil {
			return nil, fmt.Errorf("bad address %q in %q: need from= and to=", a, v)
		}
	}
	if u.User != nil {
		pass, _ := u.User.Password()
		// net/smtp sends PLAIN credentials only over TLS or to localhost.
		m.Auth = smtp.PlainAuth("", u.User.Username(), pass, u.Hostname())
	}
	return m, nil
}
