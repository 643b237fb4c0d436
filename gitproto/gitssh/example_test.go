package gitssh_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log"
	"net"

	"golang.org/x/crypto/ssh"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/gitproto/gitssh"
)

// A git server on SSH beside smart HTTP: the same Handler serves both,
// with a SessionAuthorizer for the users whose keys Authenticate knows.
func ExampleServer() {
	_, hostKey, _ := ed25519.GenerateKey(rand.Reader) // keep it on disk in practice
	host, err := ssh.NewSignerFromKey(hostKey)
	if err != nil {
		log.Fatal(err)
	}
	keys := map[string]string{} // ssh.FingerprintSHA256 → user, from your database
	h := &gitproto.Handler{
		Resolver: gitproto.DirResolver{Root: "/srv/git"},
		SessionAuthorizer: gitproto.SessionAuthorizerFunc(func(ctx context.Context, user, repo string, op gitproto.Op) (context.Context, string, error) {
			if op == gitproto.Write && user != "alice" {
				return nil, "", gitproto.ErrForbidden
			}
			return nil, user, nil
		}),
	}
	srv := &gitssh.Server{
		Handler:  h,
		HostKeys: []ssh.Signer{host},
		Authenticate: func(ctx context.Context, key ssh.PublicKey) (string, error) {
			if u, ok := keys[ssh.FingerprintSHA256(key)]; ok {
				return u, nil
			}
			return "", gitssh.ErrUnknownKey
		},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0") // loopback unless told otherwise
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	fmt.Printf("%+v\n", srv.Stats())
	// Output:
	// {Connections:0 Open:0 AuthFailed:0 Sessions:0 Refused:0 Rejected:0 Failed:0}
}

func ExampleParseCommand() {
	for _, cmd := range []string{
		"git-upload-pack '/alice/proj.git'",
		"git receive-pack 'alice/it'\\''s.git'",
		"git-upload-pack '/a.git'; reboot",
	} {
		svc, repo, err := gitssh.ParseCommand(cmd)
		fmt.Println(svc, repo, err)
	}
	// Output:
	// git-upload-pack alice/proj.git <nil>
	// git-receive-pack alice/it's.git <nil>
	//   gitssh: not a git command: bad quoting
}
