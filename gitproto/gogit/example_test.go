package gogit_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/go-git/go-git/v5"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/gitproto/gogit"
)

// A Handler that serves with go-git, on a host without a git binary.
func ExampleEngine() {
	root, _ := os.MkdirTemp("", "repos")
	defer os.RemoveAll(root)
	if _, err := git.PlainInit(filepath.Join(root, "proj.git"), true); err != nil {
		fmt.Println(err)
		return
	}
	h := &gitproto.Handler{
		Resolver: gitproto.DirResolver{Root: root},
		Engine:   &gogit.Engine{},
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	res, err := http.Get(srv.URL + "/proj.git/info/refs?service=git-upload-pack")
	if err != nil {
		fmt.Println(err)
		return
	}
	res.Body.Close()
	fmt.Println(res.StatusCode, res.Header.Get("Content-Type"))
	// Output: 200 application/x-git-upload-pack-advertisement
}
