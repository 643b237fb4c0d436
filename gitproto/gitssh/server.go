// Package gitssh provides git over SSH for a gitproto.Handler: clone,
// fetch and push (git-upload-pack, git-receive-pack) and git archive
// --remote (git-upload-archive), with golang.org/x/crypto/ssh.
//
// A Server authenticates each connection by public key only, through the
// caller's Authenticate hook, which maps a key to a user. Each session's
// exec request ("git-upload-pack '/owner/repo.git'") becomes a
// gitproto.Session that the Handler serves with the same Resolver, hooks,
// admission control and caches as smart HTTP; the Handler's
// SessionAuthorizer decides what the user may do. Protocol v2 arrives
// through the GIT_PROTOCOL environment variable (git's ssh transport
// sends it with SendEnv). Errors reach the user on standard error, with
// git's exit statuses.
//
// It is a git server, not a login server: no shell, no pty, no
// subsystems, no port forwarding of either direction, no agent. A
// session asking for a shell is told who it authenticated as, as GitHub
// does, and ends with status 1.
//
// Slow or stuck peers are bounded: the handshake by HandshakeTimeout, a
// connection without traffic by IdleTimeout, a session by
// MaxSessionTime (its git processes are killed and the channel closed);
// concurrent connections per address and sessions per key are limited.
package gitssh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/gitproto/internal/netserve"
)

// Defaults for Server's zero fields.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultIdleTimeout      = 2 * time.Minute
	DefaultMaxSessionTime   = time.Hour
	DefaultMaxConnsPerAddr  = 16
	DefaultMaxSessionsByKey = 8
)

var (
	// ErrCommand is wrapped by ParseCommand's errors: the exec request
	// does not name a git service and a repository.
	ErrCommand = errors.New("gitssh: not a git command")
	// ErrServerClosed is returned by Serve after Close or Shutdown.
	ErrServerClosed = errors.New("gitssh: server closed")
	// ErrUnknownKey is what an Authenticate hook returns for a key that
	// belongs to nobody (any error refuses the key; this one is not
	// logged).
	ErrUnknownKey = errors.New("gitssh: unknown key")
)

// Server serves git over SSH. Set its fields before Serve; a Server is
// safe for concurrent use once serving.
type Server struct {
	// Handler serves the sessions. Required.
	Handler *gitproto.Handler

	// HostKeys are the server's host keys. At least one is required.
	HostKeys []ssh.Signer

	// Authenticate maps a client's public key to the user it belongs to,
	// or returns an error (ErrUnknownKey for a key of nobody's) to
	// refuse it. It is asked at every connection, so that a removed key
	// is refused at once. Required.
	Authenticate func(ctx context.Context, key ssh.PublicKey) (user string, err error)

	// HandshakeTimeout bounds the SSH handshake and authentication. If
	// zero, DefaultHandshakeTimeout is used.
	HandshakeTimeout time.Duration

	// IdleTimeout closes a connection on which nothing was sent or
	// received for so long. If zero, DefaultIdleTimeout is used.
	IdleTimeout time.Duration

	// MaxSessionTime bounds one session (one git command). If zero,
	// DefaultMaxSessionTime is used.
	MaxSessionTime time.Duration

	// MaxConnsPerAddr bounds the concurrent connections from one IP
	// address. If zero, DefaultMaxConnsPerAddr is used.
	MaxConnsPerAddr int

	// MaxSessionsByKey bounds the concurrent sessions of one key. If
	// zero, DefaultMaxSessionsByKey is used.
	MaxSessionsByKey int

	// Banner, if set, is the server's version string after "SSH-2.0-".
	// If empty, "forgekit" is used.
	Banner string

	// Logger receives connection and session errors. If nil, nothing is
	// logged.
	Logger *slog.Logger

	once   sync.Once
	config *ssh.ServerConfig
	set    netserve.Set // listeners, connections, running sessions; its Context is every session's parent

	mu    sync.Mutex     // guards byKey
	byKey map[string]int // running sessions per key fingerprint

	stats serverStats
}

// Stats are cumulative counters of a Server.
type Stats struct {
	Connections int64 // connections accepted
	Open        int64 // connections open now
	AuthFailed  int64 // connections whose every key was refused
	Sessions    int64 // git commands started
	Refused     int64 // connections and sessions refused by the limits
	Rejected    int64 // requests refused: shells, forwarding, other channels, bad commands
	Failed      int64 // sessions that ended with an error
}

type serverStats struct {
	connections, open, authFailed, sessions, refused, rejected, failed atomic.Int64
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Connections: s.stats.connections.Load(),
		Open:        s.stats.open.Load(),
		AuthFailed:  s.stats.authFailed.Load(),
		Sessions:    s.stats.sessions.Load(),
		Refused:     s.stats.refused.Load(),
		Rejected:    s.stats.rejected.Load(),
		Failed:      s.stats.failed.Load(),
	}
}

func (s *Server) init() {
	s.once.Do(func() {
		if s.Handler == nil || len(s.HostKeys) == 0 || s.Authenticate == nil {
			panic("gitssh: Server needs a Handler, HostKeys and Authenticate")
		}
		s.byKey = map[string]int{}
		banner := s.Banner
		if banner == "" {
			banner = "forgekit"
		}
		s.config = &ssh.ServerConfig{
			ServerVersion:     "SSH-2.0-" + banner,
			PublicKeyCallback: s.publicKey,
			MaxAuthTries:      6,
		}
		for _, k := range s.HostKeys {
			s.config.AddHostKey(k)
		}
	})
}

// publicKey asks Authenticate about a key. The ssh package calls it for
// a key offered without a signature as well; it remembers the answer for
// the signed attempt that follows.
func (s *Server) publicKey(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	ctx, cancel := context.WithTimeout(s.set.Context(), s.handshakeTimeout())
	defer cancel()
	user, err := s.Authenticate(ctx, key)
	if err != nil {
		if !errors.Is(err, ErrUnknownKey) {
			s.logger().Warn("gitssh: authenticating a key", "addr", meta.RemoteAddr().String(), "err", err)
		}
		return nil, errors.New("key refused")
	}
	return &ssh.Permissions{Extensions: map[string]string{
		"user": user,
		"key":  ssh.FingerprintSHA256(key),
	}}, nil
}

// Serve accepts connections on l until Close or Shutdown, and returns
// ErrServerClosed then; other errors of l end it too.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	return s.set.Serve(l, ErrServerClosed, s.serveConn)
}

// Close stops the listeners and closes every connection at once; their
// sessions' git processes are killed.
func (s *Server) Close() error {
	s.init()
	s.set.Close()
	return nil
}

// Shutdown stops the listeners and waits for the running sessions to
// end, or for ctx; then it closes what remains as Close does.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	return s.set.Shutdown(ctx)
}

func (s *Server) serveConn(c net.Conn) {
	s.stats.connections.Add(1)
	release := s.set.Admit(c, c.RemoteAddr(), knob(s.MaxConnsPerAddr, DefaultMaxConnsPerAddr))
	if release == nil {
		s.stats.refused.Add(1)
		c.Close()
		return
	}
	defer release()
	s.stats.open.Add(1)
	defer s.stats.open.Add(-1)
	ic := &gitproto.IdleConn{Conn: c, Timeout: s.idleTimeout()}
	defer ic.Close()
	c.SetDeadline(time.Now().Add(s.handshakeTimeout()))
	sc, chans, reqs, err := ssh.NewServerConn(ic, s.config)
	if err != nil {
		s.stats.authFailed.Add(1)
		return
	}
	c.SetDeadline(time.Time{})
	ic.Start()
	// Held as well, so that Close ends the SSH connection, not just
	// the socket under it.
	unhold := s.set.Hold(sc)
	if unhold == nil {
		sc.Close()
		return
	}
	defer func() {
		unhold()
		sc.Close()
	}()
	go s.refuseGlobal(reqs)
	var wg sync.WaitGroup
	for nc := range chans {
		if nc.ChannelType() != "session" {
			// direct-tcpip (-L), and whatever else: not a git server's.
			s.stats.rejected.Add(1)
			nc.Reject(ssh.Prohibited, "only git commands are served here")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveChannel(sc, ch, creqs)
		}()
	}
	wg.Wait()
}

// refuseGlobal answers the connection's global requests (tcpip-forward
// for -R, keepalives) with a refusal, which keepalives accept.
func (s *Server) refuseGlobal(reqs <-chan *ssh.Request) {
	for r := range reqs {
		if r.Type == "tcpip-forward" {
			s.stats.rejected.Add(1)
		}
		if r.WantReply {
			r.Reply(false, nil)
		}
	}
}

// serveChannel serves one session channel: env requests (GIT_PROTOCOL
// only), then an exec of a git command, or a shell for the greeting.
func (s *Server) serveChannel(sc *ssh.ServerConn, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	user, key := sc.Permissions.Extensions["user"], sc.Permissions.Extensions["key"]
	var protocol string
	for r := range reqs {
		switch r.Type {
		case "env":
			var kv struct{ Name, Value string }
			ok := ssh.Unmarshal(r.Payload, &kv) == nil && kv.Name == "GIT_PROTOCOL"
			if ok {
				protocol = kv.Value
			}
			r.Reply(ok, nil)
		case "shell":
			r.Reply(true, nil)
			fmt.Fprintf(ch.Stderr(), "Hi %s! You have authenticated, but this server runs git commands only; there is no shell.\r\n", user)
			exit(ch, 1)
			return
		case "exec":
			var cmd struct{ Command string }
			if ssh.Unmarshal(r.Payload, &cmd) != nil {
				r.Reply(false, nil)
				continue
			}
			r.Reply(true, nil)
			go drain(reqs) // later requests (signals, window changes) are ignored
			exit(ch, s.exec(sc, ch, user, key, protocol, cmd.Command))
			return
		default:
			// pty-req, subsystem (sftp), x11-req, auth-agent-req, ...
			s.stats.rejected.Add(1)
			if r.WantReply {
				r.Reply(false, nil)
			}
		}
	}
}

// exec runs one git command and returns the exit status to send.
func (s *Server) exec(sc *ssh.ServerConn, ch ssh.Channel, user, key, protocol, command string) int {
	svc, repo, err := ParseCommand(command)
	if err != nil {
		s.stats.rejected.Add(1)
		fmt.Fprintf(ch.Stderr(), "fatal: %s\n", trimPkg(err.Error()))
		return 128
	}
	s.mu.Lock()
	if s.byKey[key] >= knob(s.MaxSessionsByKey, DefaultMaxSessionsByKey) {
		s.mu.Unlock()
		s.stats.refused.Add(1)
		fmt.Fprintf(ch.Stderr(), "fatal: too many concurrent sessions for this key; try again later\n")
		return 128
	}
	if !s.set.Begin() {
		s.mu.Unlock()
		fmt.Fprintf(ch.Stderr(), "fatal: the server is shutting down\n")
		return 128
	}
	s.byKey[key]++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.byKey[key]--; s.byKey[key] <= 0 {
			delete(s.byKey, key)
		}
		s.mu.Unlock()
		s.set.End()
	}()
	s.stats.sessions.Add(1)
	ctx, cancel := context.WithTimeoutCause(context.WithValue(s.set.Context(), fingerprintKey{}, key), s.maxSessionTime(), errSessionTime)
	defer cancel()
	// A client that hangs up ends the session at once: the channel's
	// close makes its reads fail, which stops the service's input, and
	// its writes fail, which stops the service.
	err = s.Handler.ServeSession(ctx, &gitproto.Session{
		Service:  svc,
		Repo:     repo,
		Protocol: protocol,
		User:     user,
		Stdin:    ch,
		Stdout:   ch,
		Stderr:   ch.Stderr(),
	})
	if err == nil {
		return 0
	}
	s.stats.failed.Add(1)
	if context.Cause(ctx) == errSessionTime {
		err = errSessionTime
	}
	msg, status := gitproto.SessionMessage(err)
	if msg != "" {
		fmt.Fprintf(ch.Stderr(), "fatal: %s\n", msg)
	}
	if status == 1 || errors.Is(err, errSessionTime) {
		s.logger().Warn("gitssh: session failed", "addr", sc.RemoteAddr().String(), "user", user, "command", truncate(command, 200), "err", err)
	}
	return status
}

type fingerprintKey struct{}

// Fingerprint returns, in the context of a session (the one
// Handler.ServeSession and its SessionAuthorizer get), the SHA-256
// fingerprint of the key that authenticated it, as ssh.FingerprintSHA256
// writes it: a SessionAuthorizer can tell a user's keys apart (a
// read-only key) or check that the key is still valid.
func Fingerprint(ctx context.Context) string {
	fp, _ := ctx.Value(fingerprintKey{}).(string)
	return fp
}

var errSessionTime = fmt.Errorf("gitssh: session ran past its time limit: %w", context.DeadlineExceeded)

// exit sends the exit status; the channel is closed by the caller.
func exit(ch ssh.Channel, status int) {
	ch.CloseWrite()
	ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
}

func drain(reqs <-chan *ssh.Request) {
	for r := range reqs {
		if r.WantReply {
			r.Reply(false, nil)
		}
	}
}

func trimPkg(s string) string {
	for _, p := range []string{"gitssh: ", "gitproto: "} {
		if len(s) > len(p) && s[:len(p)] == p {
			return s[len(p):]
		}
	}
	return s
}

func knob[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

func (s *Server) handshakeTimeout() time.Duration {
	return knob(s.HandshakeTimeout, DefaultHandshakeTimeout)
}
func (s *Server) idleTimeout() time.Duration { return knob(s.IdleTimeout, DefaultIdleTimeout) }
func (s *Server) maxSessionTime() time.Duration {
	return knob(s.MaxSessionTime, DefaultMaxSessionTime)
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}
