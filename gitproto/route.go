package gitproto

import "strings"

// route is what a request path asks for.
type route struct {
	repo    string
	service Service
	advert  bool
	file    string // dumb HTTP: path inside the repository
}

var dumbFiles = []string{"/HEAD", "/info/refs", "/objects/info/packs", "/objects/info/alternates", "/objects/info/http-alternates"}

func parseRoute(p string) (route, bool) {
	switch {
	case strings.HasSuffix(p, "/info/refs"):
		return route{repo: strings.TrimSuffix(p, "/info/refs"), advert: true}, true
	case strings.HasSuffix(p, "/git-upload-pack"):
		return route{repo: strings.TrimSuffix(p, "/git-upload-pack"), service: UploadPack}, true
	case strings.HasSuffix(p, "/git-receive-pack"):
		return route{repo: strings.TrimSuffix(p, "/git-receive-pack"), service: ReceivePack}, true
	}
	for _, f := range dumbFiles {
		if strings.HasSuffix(p, f) {
			return route{repo: strings.TrimSuffix(p, f), file: f[1:]}, true
		}
	}
	if i := strings.LastIndex(p, "/objects/"); i >= 0 {
		rest := p[i+len("/objects/"):]
		if looseObjectPath(rest) || packFilePath(rest) {
			return route{repo: p[:i], file: "objects/" + rest}, true
		}
	}
	return route{}, false
}

func looseObjectPath(s string) bool {
	dir, file, ok := strings.Cut(s, "/")
	return ok && len(dir) == 2 && isHex(dir) && (len(file) == 38 || len(file) == 62) && isHex(file)
}

func packFilePath(s string) bool {
	name, ok := strings.CutPrefix(s, "pack/pack-")
	if !ok {
		return false
	}
	for _, ext := range []string{".pack", ".idx"} {
		if h, ok := strings.CutSuffix(name, ext); ok {
			return (len(h) == 40 || len(h) == 64) && isHex(h)
		}
	}
	return false
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return s != ""
}
