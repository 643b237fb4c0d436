package gitproto_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/gitproto"
	"github.com/forgekit/forgekit/internal/testenv"
)

// rawGET sends a request with the path exactly as given, bypassing
// net/url's cleaning, and returns the status code.
func rawRequest(t *testing.T, addr, method, path string, hdr map[string]string, body []byte) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	var b bytes.Buffer
	b.WriteString(method + " " + path + " HTTP/1.1\r\nHost: test\r\nConnection: close\r\n")
	for k, v := range hdr {
		b.WriteString(k + ": " + v + "\r\n")
	}
	if body != nil {
		b.WriteString("Content-Length: " + itoa(len(body)) + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	_, err = c.Write(b.Bytes())
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufioReader(c), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(rb)
}

func TestPathsOutsideTheRoot(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{}, nil)
	// A repository outside the root, reachable by symlink from inside.
	outside := t.TempDir()
	testenv.BareRepo(t, filepath.Join(outside, "secret.git"), testenv.RepoOptions{})
	require.NoError(t, os.Symlink(filepath.Join(outside, "secret.git"), filepath.Join(f.root, "alice", "link.git")))
	require.NoError(t, os.Symlink(outside, filepath.Join(f.root, "escape")))
	addr := strings.TrimPrefix(f.srv.URL, "http://")
	for _, tc := range []struct{ name, path string }{
		{name: "dotdot", path: "/alice/../../" + filepath.Base(outside) + "/secret.git/info/refs?service=git-upload-pack"},
		{name: "encoded dotdot", path: "/alice/%2e%2e/%2e%2e/secret.git/info/refs?service=git-upload-pack"},
		{name: "encoded slash", path: "/alice%2Fproj.git/info/refs?service=git-upload-pack"},
		{name: "encoded backslash", path: "/alice%5Cproj.git/info/refs?service=git-upload-pack"},
		{name: "NUL", path: "/alice/proj.git%00/info/refs?service=git-upload-pack"},
		{name: "absolute", path: "//etc/info/refs?service=git-upload-pack"},
		{name: "absolute repo", path: "/" + outside + "/secret.git/info/refs?service=git-upload-pack"},
		{name: "symlink repo out of root", path: "/alice/link.git/info/refs?service=git-upload-pack"},
		{name: "symlink dir out of root", path: "/escape/secret.git/info/refs?service=git-upload-pack"},
		{name: "hidden segment", path: "/alice/.git/info/refs?service=git-upload-pack"},
		{name: "not a repository", path: "/alice/info/refs?service=git-upload-pack"},
		{name: "unknown route", path: "/alice/proj.git/config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := rawRequest(t, addr, "GET", tc.path, nil, nil)
			assert.Equal(t, http.StatusNotFound, code, body)
		})
	}
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{}, func(h *gitproto.Handler) { h.MaxRequestBytes = 1 << 20 })
	head := f.serverRef("alice/proj.git", "main")
	upload := map[string]string{"Content-Type": "application/x-git-upload-pack-request"}
	with := func(m map[string]string, k, v string) map[string]string {
		n := map[string]string{k: v}
		for a, b := range m {
			n[a] = b
		}
		return n
	}
	bomb := gz(bytes.Repeat([]byte("0"), 64<<20)) // 64 MiB of zeros in ~64 KiB
	for _, tc := range []struct {
		name   string
		method string
		path   string
		hdr    map[string]string
		body   []byte
		want   int
		inBody string
	}{
		{name: "malformed length", path: "/alice/proj.git/git-upload-pack", hdr: upload, body: []byte("zzzzwant"), want: 400, inBody: "malformed pkt-line"},
		{name: "truncated packet", path: "/alice/proj.git/git-upload-pack", hdr: upload, body: []byte("0032want " + head[:10]), want: 400},
		{name: "bad want", path: "/alice/proj.git/git-upload-pack", hdr: upload, body: []byte("000ewant nope\n0000"), want: 400},
		{name: "reserved length", path: "/alice/proj.git/git-upload-pack", hdr: upload, body: []byte("0003"), want: 400},
		{name: "unknown v0 command", path: "/alice/proj.git/git-upload-pack", hdr: upload, body: []byte("000bbogus\n0000"), want: 400},
		{name: "bad v2 command", path: "/alice/proj.git/git-upload-pack", hdr: with(upload, "Git-Protocol", "version=2"), body: []byte("0014command=rm -rf\n0000"), want: 400},
		{name: "v2 without flush", path: "/alice/proj.git/git-upload-pack", hdr: with(upload, "Git-Protocol", "version=2"), body: []byte("0013command=ls-refs\n"), want: 400},
		{name: "bad Git-Protocol", path: "/alice/proj.git/info/refs?service=git-upload-pack", method: "GET", hdr: map[string]string{"Git-Protocol": "version=2;rm -rf /"}, want: 400},
		{name: "unsupported version", path: "/alice/proj.git/info/refs?service=git-upload-pack", method: "GET", hdr: map[string]string{"Git-Protocol": "version=3"}, want: 400},
		{name: "wrong content type", path: "/alice/proj.git/git-upload-pack", hdr: map[string]string{"Content-Type": "text/plain"}, body: []byte("0000"), want: 415},
		{name: "unknown encoding", path: "/alice/proj.git/git-upload-pack", hdr: with(upload, "Content-Encoding", "br"), body: []byte("0000"), want: 415},
		{name: "bad gzip", path: "/alice/proj.git/git-upload-pack", hdr: with(upload, "Content-Encoding", "gzip"), body: []byte("not gzip"), want: 400},
		{name: "gzip bomb", path: "/alice/proj.git/git-upload-pack", hdr: with(upload, "Content-Encoding", "gzip"), body: bomb, want: 413},
		{name: "x-gzip bomb", path: "/alice/proj.git/git-upload-pack", hdr: with(upload, "Content-Encoding", "x-gzip"), body: bomb, want: 413},
		{name: "too large", path: "/alice/proj.git/git-upload-pack", hdr: upload, body: bytes.Repeat([]byte("0"), 2<<20), want: 413},
		{name: "unknown service", method: "GET", path: "/alice/proj.git/info/refs?service=git-shell", want: 403},
		{name: "GET on POST route", method: "GET", path: "/alice/proj.git/git-upload-pack", want: 405},
		{name: "POST on info/refs", path: "/alice/proj.git/info/refs?service=git-upload-pack", hdr: upload, body: []byte("0000"), want: 405},
		{name: "dumb disabled", method: "GET", path: "/alice/proj.git/info/refs", want: 404},
		{name: "dumb HEAD disabled", method: "GET", path: "/alice/proj.git/HEAD", want: 404},
		{name: "receive-pack garbage", path: "/alice/proj.git/git-receive-pack", hdr: map[string]string{"Content-Type": "application/x-git-receive-pack-request", "Authorization": "Basic YWxpY2U6c2VjcmV0"}, body: []byte("0010not a command0000"), want: 400},
		{name: "receive-pack truncated", path: "/alice/proj.git/git-receive-pack", hdr: map[string]string{"Content-Type": "application/x-git-receive-pack-request", "Authorization": "Basic YWxpY2U6c2VjcmV0"}, body: []byte("00a0" + head), want: 400},
		{name: "gzip ok", path: "/alice/proj.git/git-upload-pack", hdr: with(upload, "Content-Encoding", "gzip"), body: gz([]byte("0032want " + head + "\n00000009done\n")), want: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "POST"
			}
			req, err := http.NewRequest(method, f.srv.URL+tc.path, bytes.NewReader(tc.body))
			require.NoError(t, err)
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			assert.Equal(t, tc.want, resp.StatusCode, "%s", b)
			if tc.inBody != "" {
				assert.Contains(t, string(b), tc.inBody)
			}
		})
	}
	http.DefaultClient.CloseIdleConnections()
	// Nothing was lost: the repository is intact.
	assert.Equal(t, head, f.serverRef("alice/proj.git", "main"))
	testenv.Run(t, filepath.Join(f.root, "alice", "proj.git"), "fsck", "--no-progress")
}

// TestLimitRule: every limit of Handler reads zero as its default and a
// negative value as none.
func TestLimitRule(t *testing.T) {
	t.Parallel()
	body := append([]byte("zzzz"), bytes.Repeat([]byte("0"), gitproto.DefaultMaxRequestBytes+1<<20)...)
	for _, tc := range []struct {
		name  string
		limit int64
		want  int
	}{
		{"zero is the default", 0, http.StatusRequestEntityTooLarge},
		{"negative is none", -1, http.StatusBadRequest}, // read whole, then found malformed
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, testenv.RepoOptions{}, func(h *gitproto.Handler) { h.MaxRequestBytes = tc.limit })
			// Chunked: no Content-Length to refuse early.
			res, err := http.Post(f.srv.URL+"/alice/proj.git/git-upload-pack", "application/x-git-upload-pack-request", io.MultiReader(bytes.NewReader(body)))
			require.NoError(t, err)
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			assert.Equal(t, tc.want, res.StatusCode)
		})
	}
}

func TestPushOverLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.RepoOptions{}, func(h *gitproto.Handler) { h.MaxPushBytes = 64 << 10 })
	dst := filepath.Join(f.work, "clone")
	f.mustGit("", "clone", "-q", f.url("alice", "alice/proj.git"), dst)
	before := f.serverRef("alice/proj.git", "main")
	// 1 MiB of incompressible data.
	big := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	require.NoError(t, os.WriteFile(filepath.Join(dst, "big.bin"), big, 0o644))
	f.mustGit(dst, "add", "big.bin")
	f.mustGit(dst, "commit", "-q", "-m", "big")
	_, err := f.git(dst, "push", "origin", "main")
	require.Error(t, err)
	assert.Equal(t, before, f.serverRef("alice/proj.git", "main"))
}
