package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/forgekit/forgekit/forge"
	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/gitproto/gitssh"
)

// hostKeyFile is the SSH host key in the data directory, made on the
// first start with -ssh-addr and kept: clients pin it.
const hostKeyFile = "ssh_host_ed25519_key"

// loadHostKey reads the data directory's host key, generating it first
// if there is none.
func loadHostKey(data string) (ssh.Signer, error) {
	path := filepath.Join(data, hostKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, gerr
		}
		block, merr := ssh.MarshalPrivateKey(priv, "forged host key")
		if merr != nil {
			return nil, merr
		}
		b = pem.EncodeToMemory(block)
		// O_EXCL: of two instances starting on one data directory, the
		// second reads the first one's key.
		f, oerr := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		switch {
		case errors.Is(oerr, os.ErrExist):
			time.Sleep(100 * time.Millisecond)
			b, err = os.ReadFile(path)
		case oerr != nil:
			return nil, oerr
		default:
			_, werr := f.Write(b)
			if cerr := f.Close(); werr == nil {
				werr = cerr
			}
			if werr != nil {
				os.Remove(path)
				return nil, werr
			}
			err = nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ssh host key: %w", err)
	}
	k, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("ssh host key %s: %w", path, err)
	}
	return k, nil
}

// newDaemon makes the git:// server for -git-addr: anonymous, so the
// sessions' authorizer (set up here if newSSH did not) lets them read
// public repositories only.
func (s *server) newDaemon() *gitproto.Daemon {
	if s.git.SessionAuthorizer == nil {
		s.git.SessionAuthorizer = s.sessionAuthorizer()
	}
	return &gitproto.Daemon{Handler: s.git, MaxSessionTime: s.cfg.gitTimeout, Logger: s.log}
}

// sessionAuthorizer decides for SSH and git:// sessions with the forge's
// git policy: the principal of the session's SSH key (checked again, so
// that a removed key stops at once), or anonymous.
func (s *server) sessionAuthorizer() gitproto.SessionAuthorizer {
	policy := s.forge.GitPolicy()
	return gitproto.SessionAuthorizerFunc(func(ctx context.Context, user, repo string, op gitproto.Op) (context.Context, string, error) {
		var p *forge.Principal
		if fp := gitssh.Fingerprint(ctx); fp != "" {
			var err error
			if p, err = s.forge.KeyPrincipal(ctx, fp); errors.Is(err, forge.ErrBadCredentials) {
				return nil, "", gitproto.ErrUnauthorized
			} else if err != nil {
				s.log.WarnContext(ctx, "ssh key not checked", "err", err)
				return nil, "", gitproto.ErrUnavailable
			}
		}
		actx, who, err := policy.AuthorizePrincipal(ctx, p, repo, op)
		if p == nil && errors.Is(err, gitproto.ErrUnauthorized) {
			// git:// can log nobody in: what would need a login is
			// simply not there, private and missing alike.
			err = gitproto.ErrNotFound
		}
		return actx, who, err
	})
}

// newSSH makes the SSH server for -ssh-addr: keys from the forge's
// users, the forge's git policy for every session (a key is checked
// again at each command, so that a removed one stops at once), the git
// time limit per session.
func (s *server) newSSH(hostKey ssh.Signer) *gitssh.Server {
	s.git.SessionAuthorizer = s.sessionAuthorizer()
	return &gitssh.Server{
		Handler:  s.git,
		HostKeys: []ssh.Signer{hostKey},
		Authenticate: func(ctx context.Context, key ssh.PublicKey) (string, error) {
			p, err := s.forge.KeyPrincipal(ctx, ssh.FingerprintSHA256(key))
			if errors.Is(err, forge.ErrBadCredentials) {
				return "", gitssh.ErrUnknownKey
			}
			if err != nil {
				return "", err
			}
			return p.User.Name, nil
		},
		MaxSessionTime: s.cfg.gitTimeout,
		Logger:         s.log,
	}
}

// listenSSH listens on addr (-ssh-addr, -git-addr); after a restart
// (the port still held by the process handing over), it retries for a
// while.
func listenRetry(ctx context.Context, addr string, retry bool) (net.Listener, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := net.Listen("tcp", addr)
		if err == nil || !retry || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return l, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sshURL is the SSH clone URL of repo ("owner/name.git"), or "" when
// git over SSH is not served: scp-like on port 22, ssh:// otherwise.
func (s *site) sshURL(r *http.Request, repo string) string {
	if s.sshPort == 0 {
		return ""
	}
	host := r.Host
	if u, err := url.Parse(s.baseURL(r)); err == nil && u.Host != "" {
		host = u.Host
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if s.sshPort == 22 {
		return "git@" + host + ":" + repo
	}
	return "ssh://git@" + net.JoinHostPort(host, strconv.Itoa(s.sshPort)) + "/" + repo
}
