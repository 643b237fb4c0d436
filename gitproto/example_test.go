package gitproto_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/forgekit/forgekit/gitproto"
)

// A forge mounts the handler under /git/, lets anyone read, and asks for
// credentials to push. Pushes to main must be fast-forwards.
func ExampleHandler() {
	root, _ := os.MkdirTemp("", "repos")
	defer os.RemoveAll(root)

	h := &gitproto.Handler{
		Resolver: gitproto.DirResolver{Root: root},
		Prefix:   "/git",
		Authorizer: gitproto.AuthorizerFunc(func(r *http.Request, repo string, op gitproto.Op) (string, error) {
			user, pass, ok := r.BasicAuth()
			switch {
			case ok && user == "alice" && pass == "s3cret":
				return user, nil
			case ok:
				return "", gitproto.ErrUnauthorized // wrong password
			case op == gitproto.Read:
				return "", nil // anonymous read
			}
			return "", gitproto.ErrUnauthorized
		}),
		PreReceive: func(ctx context.Context, p *gitproto.Push) error {
			for _, u := range p.Updates {
				if u.Ref == "refs/heads/main" && !u.IsCreate() && !u.IsDelete() {
					if ff, err := p.IsAncestor(ctx, u.Old, u.New); err != nil {
						return err
					} else if !ff {
						p.Reject(u.Ref, "force-push to main is not allowed")
					}
				}
			}
			return nil
		},
	}
	mux := http.NewServeMux()
	mux.Handle("/git/", h)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, path := range []string{
		"/git/alice/proj.git/info/refs?service=git-receive-pack", // push, anonymous
		"/git/alice/missing.git/info/refs?service=git-upload-pack",
		"/git/../etc/info/refs?service=git-upload-pack",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
		fmt.Println(strings.TrimSpace(fmt.Sprint(resp.StatusCode, " ", resp.Header.Get("WWW-Authenticate"))))
	}
	// Output:
	// 401 Basic realm="git", charset="UTF-8"
	// 404
	// 404
}

// The caches and admission control are one field each.
func ExampleNewPackCache() {
	dir, _ := os.MkdirTemp("", "packcache")
	defer os.RemoveAll(dir)
	packs, err := gitproto.NewPackCache(filepath.Join(dir, "packs"), 512<<20)
	if err != nil {
		fmt.Println(err)
		return
	}
	h := &gitproto.Handler{
		Resolver:    gitproto.DirResolver{Root: "/srv/git"},
		PackCache:   packs,
		AdvertCache: &gitproto.AdvertCache{MaxBytes: 32 << 20},
		Admission:   &gitproto.Admission{MaxFullClonesPerRepo: 2, MaxQueue: 16},
	}
	_ = h
	fmt.Printf("%+v\n", packs.Stats())
	// Output:
	// {Hits:0 Shared:0 Misses:0 Bypassed:0 Evictions:0 Failures:0 Whole:0 Entries:0 Bytes:0}
}

func ExampleParseGitProtocol() {
	for _, v := range []string{"version=2", "version=1:object-format=sha1", "", "version=2;rm"} {
		n, err := gitproto.ParseGitProtocol(v)
		fmt.Println(n, err)
	}
	// Output:
	// 2 <nil>
	// 1 <nil>
	// 0 <nil>
	// 0 gitproto: invalid Git-Protocol header: invalid parameter "version=2;rm"
}

func ExampleCheckRepoName() {
	for _, name := range []string{"alice/proj.git", "alice/../bob.git", "/etc/passwd", "alice/.ssh"} {
		err := gitproto.CheckRepoName(name)
		fmt.Println(name, err == nil)
	}
	// Output:
	// alice/proj.git true
	// alice/../bob.git false
	// /etc/passwd false
	// alice/.ssh false
}

// Anonymous read with authenticated write, the most common policy, as an
// AuthorizerFunc.
func ExampleAuthorizerFunc() {
	authz := gitproto.AuthorizerFunc(func(r *http.Request, repo string, op gitproto.Op) (string, error) {
		if _, _, ok := r.BasicAuth(); !ok {
			if op == gitproto.Write || strings.HasPrefix(repo, "private/") {
				return "", gitproto.ErrUnauthorized
			}
			return "", nil
		}
		return "someone", nil // check the credentials here
	})
	r := httptest.NewRequest("GET", "/alice/proj.git/info/refs?service=git-receive-pack", nil)
	_, err := authz.Authorize(r, "alice/proj.git", gitproto.Write)
	fmt.Println(err)
	// Output:
	// gitproto: authentication required
}
