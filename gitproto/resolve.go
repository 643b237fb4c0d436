package gitproto

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Resolver maps the repository part of a request path to a repository
// directory. It returns an error wrapping ErrNotFound for anything that is
// not a repository it serves; Handler answers that with 404.
type Resolver interface {
	Resolve(ctx context.Context, name string) (dir string, err error)
}

// ResolverFunc adapts a function to the Resolver interface.
type ResolverFunc func(ctx context.Context, name string) (string, error)

// Resolve calls f(ctx, name).
func (f ResolverFunc) Resolve(ctx context.Context, name string) (string, error) { return f(ctx, name) }

// DirResolver serves the repositories under Root at the same relative
// path: "a/b.git" is Root/a/b.git, and "a/b" finds Root/a/b.git too. It
// refuses names with "..", empty or dot segments, backslashes, NUL or
// other control characters, absolute paths, and anything whose real path
// (after symlinks) lies outside Root; only directories that look like git
// repositories (HEAD, objects/, refs/) are served. A DirResolver is safe
// for concurrent use.
type DirResolver struct {
	Root string
}

// Resolve implements Resolver.
func (d DirResolver) Resolve(ctx context.Context, name string) (string, error) {
	if err := CheckRepoName(name); err != nil {
		return "", err
	}
	root, err := filepath.EvalSymlinks(d.Root)
	if err != nil {
		return "", fmt.Errorf("gitproto: resolver root: %w", err)
	}
	candidates := []string{name}
	if !strings.HasSuffix(name, ".git") {
		candidates = append(candidates, name+".git")
	}
	for _, c := range candidates {
		p := filepath.Join(root, filepath.FromSlash(c))
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			continue
		}
		if rel, err := filepath.Rel(root, real); err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return "", fmt.Errorf("%w: %q leaves the root", ErrNotFound, name)
		}
		if isGitDir(real) {
			return real, nil
		}
	}
	return "", fmt.Errorf("%w: %q", ErrNotFound, name)
}

// CheckRepoName reports whether name is a safe relative repository path:
// slash-separated segments without "..", ".", empty segments, backslashes
// or control characters. The error wraps ErrNotFound, so that an unsafe
// name looks like any other missing repository.
func CheckRepoName(name string) error {
	bad := func(why string) error { return fmt.Errorf("%w: %s", ErrNotFound, why) }
	if name == "" || len(name) > 1024 {
		return bad("empty or overlong name")
	}
	if strings.HasPrefix(name, "/") {
		return bad("absolute path")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c == 0x7f || c == '\\' || c == ':' {
			return bad("forbidden character in name")
		}
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.HasPrefix(seg, ".") {
			return bad("forbidden path segment")
		}
	}
	return nil
}

func isGitDir(dir string) bool {
	for _, f := range []string{"HEAD", "objects", "refs"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return false
		}
	}
	return true
}
