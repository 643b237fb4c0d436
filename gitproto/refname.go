package gitproto

import (
	"fmt"
	"strings"
)

// CheckRefName reports whether name is a full ref name that git accepts
// (the rules of git check-ref-format, without its options): at least two
// slash-separated components, none empty, none starting with "." or
// ending in ".lock"; no "..", no "@{", not "@" alone, no trailing "."; no
// control characters, space, "~", "^", ":", "?", "*", "[" or "\". A ref
// that breaks them can be written by a program, but git itself can then
// neither update nor delete it, so servers refuse them on push.
//
// It returns nil or an error wrapping ErrMalformed that says why.
func CheckRefName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: ref name %q %s", ErrMalformed, truncate(name, 80), why)
	}
	if name == "@" {
		return bad(`is "@"`)
	}
	if strings.HasSuffix(name, ".") {
		return bad(`ends with "."`)
	}
	n := 0
	for c := range strings.SplitSeq(name, "/") {
		n++
		switch {
		case c == "":
			return bad("has an empty component")
		case c[0] == '.':
			return bad(`has a component starting with "."`)
		case strings.HasSuffix(c, ".lock"):
			return bad(`has a component ending in ".lock"`)
		}
		for i := 0; i < len(c); i++ {
			switch b := c[i]; {
			case b < 0x20 || b == 0x7f:
				return bad("has a control character")
			case strings.IndexByte(" ~^:?*[\\", b) >= 0:
				return bad(fmt.Sprintf("has %q", b))
			case b == '.' && i > 0 && c[i-1] == '.':
				return bad(`has ".."`)
			case b == '{' && i > 0 && c[i-1] == '@':
				return bad(`has "@{"`)
			}
		}
	}
	if n < 2 {
		return bad("has one component only")
	}
	return nil
}
