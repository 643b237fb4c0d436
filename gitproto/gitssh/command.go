package gitssh

import (
	"errors"
	"fmt"
	"strings"

	"github.com/forgekit/forgekit/gitproto"
)

// maxCommand bounds an exec request's command line.
const maxCommand = 4096

// ParseCommand parses the command an SSH client asks to run, as git
// sends it: the service, dashed ("git-upload-pack") or not ("git
// upload-pack"), and the repository path as one argument, single-quoted
// the way git quotes it ('it'\”s', '\!' for "!") or bare. It returns
// the service and the repository path without its leading slash, so that
// ssh://host/owner/repo.git and host:owner/repo.git name the same
// repository. Anything else is an error wrapping ErrCommand.
func ParseCommand(cmd string) (gitproto.Service, string, error) {
	bad := func(why string) error { return fmt.Errorf("%w: %s", ErrCommand, why) }
	if len(cmd) > maxCommand {
		return "", "", bad("command too long")
	}
	name, arg, ok := strings.Cut(cmd, " ")
	if name == "git" {
		name, arg, ok = strings.Cut(arg, " ")
		name = "git-" + name
	}
	if !ok {
		return "", "", bad("no repository named")
	}
	var svc gitproto.Service
	switch gitproto.Service(name) {
	case gitproto.UploadPack, gitproto.ReceivePack, gitproto.UploadArchive:
		svc = gitproto.Service(name)
	default:
		return "", "", bad(fmt.Sprintf("%q is not a git service", truncate(name, 40)))
	}
	path, err := unquote(strings.TrimLeft(arg, " "))
	if err != nil {
		return "", "", bad(err.Error())
	}
	path = strings.TrimPrefix(path, "/")
	if path == "" || strings.HasPrefix(path, "/") {
		return "", "", bad("no repository named")
	}
	return svc, path, nil
}

// unquote undoes git's sq_quote: a run of single-quoted parts, between
// which \' and \! stand for the quote and the bang; or one bare word.
func unquote(s string) (string, error) {
	if !strings.HasPrefix(s, "'") {
		if strings.ContainsAny(s, " \t\n'\"\\`$;|&<>(){}*?[]#~") {
			return "", errors.New("unquoted argument with special characters")
		}
		return s, nil
	}
	var b strings.Builder
	for len(s) > 0 {
		if s[0] != '\'' {
			return "", errors.New("bad quoting")
		}
		end := strings.IndexByte(s[1:], '\'')
		if end < 0 {
			return "", errors.New("unterminated quote")
		}
		b.WriteString(s[1 : 1+end])
		s = s[2+end:]
		if s == "" {
			break
		}
		if len(s) < 3 || s[0] != '\\' || (s[1] != '\'' && s[1] != '!') {
			return "", errors.New("bad quoting")
		}
		b.WriteByte(s[1])
		s = s[2:]
	}
	return b.String(), nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
