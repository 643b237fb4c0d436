package slowlog

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/pprof/profile"
)

// Defaults for Profiler.
const (
	DefaultProfileInterval = 10 * time.Millisecond
	profileLabel           = "slowlog.profile"
)

var (
	// ErrBadToken is returned for a profile token that is malformed,
	// forged, expired, for another path, or used already.
	ErrBadToken = errors.New("slowlog: invalid profile token")
)

// Profiler profiles one request on demand, as geordi did with
// ?__geordi__, but safely: only with a signed, short-lived token (from
// Token, in the X-Profile-Token header or the __profile__ query
// parameter) that names the request's path and works once (a leaked link
// profiles nothing else, and nothing again), one request at a time,
// every attempt audited. The request
// runs under a pprof label; if the CPU profiler is free, a CPU profile is
// taken for the request's duration and filtered to that label, otherwise
// goroutine profiles are sampled every DefaultProfileInterval, filtered
// and merged. The result is a pprof file (gzipped protobuf, for `go tool
// pprof`) kept in Dir and served by Handler; its URL goes back to the
// client in the X-Profile-URL response header.
//
// A Profiler is safe for concurrent use; set its fields before use.
type Profiler struct {
	// Dir keeps the profiles. If empty, os.TempDir().
	Dir string

	// URLPrefix is where Handler is mounted, for X-Profile-URL.
	URLPrefix string

	// Audit, if set, is told of every attempt: who (the token's subject,
	// empty if the token was bad) and the outcome.
	Audit func(r *http.Request, subject, outcome string)

	key  []byte
	busy atomic.Bool
	seq  atomic.Uint64
	mu   sync.Mutex // serializes profile file writes

	usedMu sync.Mutex           // guards used
	used   map[string]time.Time // nonces of tokens used, until they expire
}

// NewProfiler returns a profiler whose tokens are signed with key, which
// must be at least 32 random bytes (it panics otherwise: a setup error).
func NewProfiler(key []byte) *Profiler {
	if len(key) < 32 {
		panic("slowlog: NewProfiler needs a key of at least 32 bytes")
	}
	return &Profiler{key: slices.Clone(key)}
}

// Token returns a token that lets subject profile one request of path
// within ttl.
func (p *Profiler) Token(subject, path string, ttl time.Duration) string {
	nonce := make([]byte, 12)
	rand.Read(nonce)
	payload := subject + "|" + strconv.FormatInt(time.Now().Add(ttl).Unix(), 10) + "|" + path + "|" + base64.RawURLEncoding.EncodeToString(nonce)
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(p.sign(payload))
}

func (p *Profiler) sign(payload string) []byte {
	m := hmac.New(sha256.New, p.key)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// Verify returns the subject of a valid token for path, and uses it up:
// a token works once. (Several processes sharing the key each accept it
// once; the short lifetime bounds that.)
func (p *Profiler) Verify(token, path string, now time.Time) (string, error) {
	enc, sig, ok := strings.Cut(token, ".")
	if !ok {
		return "", ErrBadToken
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(enc)
	mac, err2 := base64.RawURLEncoding.DecodeString(sig)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, p.sign(string(payload))) {
		return "", ErrBadToken
	}
	f := strings.Split(string(payload), "|")
	if len(f) != 4 {
		return "", ErrBadToken
	}
	subject, tokenPath, nonce := f[0], f[2], f[3]
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || now.Unix() > n {
		return "", fmt.Errorf("%w: expired", ErrBadToken)
	}
	if tokenPath != path {
		return "", fmt.Errorf("%w: for another path", ErrBadToken)
	}
	p.usedMu.Lock()
	defer p.usedMu.Unlock()
	if _, ok := p.used[nonce]; ok {
		return "", fmt.Errorf("%w: used already", ErrBadToken)
	}
	if p.used == nil {
		p.used = map[string]time.Time{}
	}
	for k, exp := range p.used {
		if now.After(exp) {
			delete(p.used, k) // expired tokens fail anyway
		}
	}
	p.used[nonce] = time.Unix(n, 0)
	return subject, nil
}

func (p *Profiler) audit(r *http.Request, subject, outcome string) {
	if p.Audit != nil {
		p.Audit(r, subject, outcome)
	}
}

// Middleware profiles the requests that carry a valid token and passes
// the others through untouched. A bad token gets 403.
func (p *Profiler) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := r.Header.Get("X-Profile-Token")
		if token == "" {
			token = r.URL.Query().Get("__profile__")
		}
		if token == "" {
			next.ServeHTTP(w, r)
			return
		}
		subject, err := p.Verify(token, r.URL.Path, time.Now())
		if err != nil {
			p.audit(r, "", "refused: "+err.Error())
			http.Error(w, "invalid profile token", http.StatusForbidden)
			return
		}
		if !p.busy.CompareAndSwap(false, true) {
			p.audit(r, subject, "busy")
			w.Header().Set("X-Profile", "busy")
			next.ServeHTTP(w, r)
			return
		}
		defer p.busy.Store(false)
		id := strconv.FormatUint(p.seq.Add(1), 10)
		name := fmt.Sprintf("profile-%s-%s.pb.gz", time.Now().UTC().Format("20060102T150405"), id)
		w.Header().Set("X-Profile-URL", p.URLPrefix+name)
		var cpu bytes.Buffer
		kind := "cpu"
		var samples []*profile.Profile
		stop := func() {}
		if err := pprof.StartCPUProfile(&cpu); err != nil {
			kind = "goroutine"
			stop = p.sampleGoroutines(&samples)
		}
		pprof.Do(r.Context(), pprof.Labels(profileLabel, id), func(ctx context.Context) {
			next.ServeHTTP(w, r.WithContext(ctx))
		})
		if kind == "cpu" {
			pprof.StopCPUProfile()
			prof, err := profile.Parse(&cpu)
			if err == nil {
				samples = []*profile.Profile{prof}
			}
		} else {
			stop()
		}
		err = p.save(name, samples, id)
		outcome := "profiled (" + kind + ") " + name
		if err != nil {
			outcome = "failed: " + err.Error()
		}
		p.audit(r, subject, outcome)
	})
}

// sampleGoroutines takes goroutine profiles until stop is called.
func (p *Profiler) sampleGoroutines(out *[]*profile.Profile) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(DefaultProfileInterval)
		defer t.Stop()
		take := func() {
			var b bytes.Buffer
			if pprof.Lookup("goroutine").WriteTo(&b, 0) == nil {
				if prof, err := profile.Parse(&b); err == nil {
					*out = append(*out, prof)
				}
			}
		}
		take()
		for {
			select {
			case <-t.C:
				take()
			case <-done:
				take()
				return
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// save filters the samples to the request's label, merges them and
// writes the file.
func (p *Profiler) save(name string, profs []*profile.Profile, id string) error {
	if len(profs) == 0 {
		return errors.New("slowlog: no profile data")
	}
	for _, prof := range profs {
		prof.FilterSamplesByTag(func(s *profile.Sample) bool {
			return slices.Contains(s.Label[profileLabel], id)
		}, nil)
	}
	merged, err := profile.Merge(profs)
	if err != nil {
		return fmt.Errorf("slowlog: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(p.dir(), name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("slowlog: %w", err)
	}
	if err := merged.Write(f); err != nil {
		f.Close()
		return fmt.Errorf("slowlog: %w", err)
	}
	return f.Close()
}

func (p *Profiler) dir() string {
	if p.Dir != "" {
		return p.Dir
	}
	return os.TempDir()
}

var profileName = regexp.MustCompile(`^profile-[0-9T]+-[0-9]+\.pb\.gz$`)

// Handler serves the profiles by name (the last path segment) as
// downloads. The application decides who may reach it.
func (p *Profiler) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		if !profileName.MatchString(name) {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
		http.ServeFile(w, r, filepath.Join(p.dir(), name))
	})
}
