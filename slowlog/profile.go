package slowlog

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"runtime/trace"
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

	// FlightRecorder, if set and running, gives an execution-trace
	// snapshot of the profiled request's last moments, kept beside its
	// profiles.
	FlightRecorder *trace.FlightRecorder

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
		start := time.Now()
		base := fmt.Sprintf("profile-%s-%s", start.UTC().Format("20060102T150405"), id)
		w.Header().Set("X-Profile-URL", p.URLPrefix+base)
		// A CPU profile if the profiler is free; goroutine samples of the
		// request in any case (what it waited on, which CPU time misses).
		var cpu bytes.Buffer
		kind := "cpu"
		if err := pprof.StartCPUProfile(&cpu); err != nil {
			kind = "goroutine"
		}
		var gsamples []*profile.Profile
		stop := p.sampleGoroutines(&gsamples)
		ctx := context.WithValue(r.Context(), profiledKey{}, true)
		pprof.Do(ctx, pprof.Labels(profileLabel, id), func(ctx context.Context) {
			next.ServeHTTP(w, r.WithContext(ctx))
		})
		elapsed := time.Since(start)
		stop()
		main := gsamples
		if kind == "cpu" {
			pprof.StopCPUProfile()
			if prof, err := profile.Parse(&cpu); err == nil {
				main = []*profile.Profile{prof}
			}
		}
		err = p.save(base+".pb.gz", main, id)
		if err == nil && kind == "cpu" {
			err = p.save(base+"-goroutine.pb.gz", gsamples, id)
		}
		if err == nil {
			err = p.saveExtras(base, ProfileInfo{
				Path: r.URL.Path, Subject: subject, Kind: kind, Start: start, Elapsed: elapsed,
				Work: workOf(r.Context()),
			})
		}
		outcome := "profiled (" + kind + ") " + base
		if err != nil {
			outcome = "failed: " + err.Error()
		}
		p.audit(r, subject, outcome)
	})
}

type profiledKey struct{}

// Profiled reports whether ctx is the context of a request being
// profiled: an application may give it a longer time limit (geordi ran
// profiled requests outside the worker pool's limits).
func Profiled(ctx context.Context) bool {
	v, _ := ctx.Value(profiledKey{}).(bool)
	return v
}

func workOf(ctx context.Context) Tally {
	if w := WorkFrom(ctx); w != nil {
		return w.Tally()
	}
	return Tally{}
}

// ProfileInfo describes a profiled request; it is kept beside the
// profiles, as JSON.
type ProfileInfo struct {
	Path    string
	Subject string // who asked for the profile
	Kind    string // "cpu", or "goroutine" when the CPU profiler was busy
	Start   time.Time
	Elapsed time.Duration
	Work    Tally // what the request did, if its context carried a Work
	Trace   bool  // an execution-trace snapshot was kept
}

// saveExtras writes the process's heap profile, a flight-recorder
// snapshot when there is a recorder, and info.
func (p *Profiler) saveExtras(base string, info ProfileInfo) error {
	var heap bytes.Buffer
	if err := pprof.Lookup("heap").WriteTo(&heap, 0); err == nil {
		if err := p.writeFile(base+"-heap.pb.gz", heap.Bytes()); err != nil {
			return err
		}
	}
	if fr := p.FlightRecorder; fr != nil && fr.Enabled() {
		var tr bytes.Buffer
		if _, err := fr.WriteTo(&tr); err == nil {
			if err := p.writeFile(base+".trace", tr.Bytes()); err != nil {
				return err
			}
			info.Trace = true
		}
	}
	b, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("slowlog: %w", err)
	}
	return p.writeFile(base+".json", b)
}

func (p *Profiler) writeFile(name string, data []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(p.dir(), name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("slowlog: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("slowlog: %w", err)
	}
	return f.Close()
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
	var b bytes.Buffer
	if err := merged.Write(&b); err != nil {
		return fmt.Errorf("slowlog: %w", err)
	}
	return p.writeFile(name, b.Bytes())
}

func (p *Profiler) dir() string {
	if p.Dir != "" {
		return p.Dir
	}
	return os.TempDir()
}

var (
	profilePage = regexp.MustCompile(`^profile-[0-9T]+-[0-9]+$`)
	profileFile = regexp.MustCompile(`^profile-[0-9T]+-[0-9]+(-goroutine|-heap)?\.pb\.gz$|^profile-[0-9T]+-[0-9]+\.trace$`)
)

// Handler serves the profiles by name (the last path segment): a page
// for each profiled request (its name, without extension, as in
// X-Profile-URL) with its work, its top functions, a flame graph and
// links to the files, which it serves as downloads for `go tool pprof`
// and `go tool trace`. The application decides who may reach it.
func (p *Profiler) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		w.Header().Set("Cache-Control", "no-store")
		switch {
		case profilePage.MatchString(name):
			p.page(w, r, name)
		case profileFile.MatchString(name):
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
			http.ServeFile(w, r, filepath.Join(p.dir(), name))
		default:
			http.NotFound(w, r)
		}
	})
}

// page renders the profile page of base.
func (p *Profiler) page(w http.ResponseWriter, r *http.Request, base string) {
	var info ProfileInfo
	b, err := os.ReadFile(filepath.Join(p.dir(), base+".json"))
	if err == nil {
		err = json.Unmarshal(b, &info)
	}
	if err != nil {
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(filepath.Join(p.dir(), base+".pb.gz"))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	prof, err := profile.Parse(f)
	f.Close()
	if err != nil {
		http.Error(w, "slowlog: unreadable profile: "+err.Error(), http.StatusInternalServerError)
		return
	}
	top, total := TopFunctions(prof, 30)
	unit := ""
	if len(prof.SampleType) > 0 {
		unit = prof.SampleType[sampleIndex(prof)].Unit
	}
	var out bytes.Buffer
	esc := html.EscapeString
	fmt.Fprintf(&out, `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Profile of %s</title>
<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{padding:2px 8px;text-align:right}td.f{text-align:left;font-family:monospace}svg.flame{max-width:100%%;height:auto}</style></head><body>
<h1>Profile of %s</h1>
<p>%s profile, asked for by %s; the request took %s from %s.</p>
<p>Work: %s</p>
`, esc(info.Path), esc(info.Path), esc(info.Kind), esc(info.Subject), info.Elapsed.Round(time.Millisecond), info.Start.UTC().Format(time.RFC3339), esc(info.Work.String()))
	fmt.Fprintf(&out, `<p>Downloads: <a href="%s.pb.gz">%s profile</a>`, base, esc(info.Kind))
	if info.Kind == "cpu" {
		fmt.Fprintf(&out, `, <a href="%s-goroutine.pb.gz">goroutine samples</a>`, base)
	}
	fmt.Fprintf(&out, `, <a href="%s-heap.pb.gz">heap (whole process)</a>`, base)
	if info.Trace {
		fmt.Fprintf(&out, `, <a href="%s.trace">execution trace</a> (go tool trace)`, base)
	}
	out.WriteString(" (go tool pprof)</p>\n<h2>Flame graph</h2>\n")
	if err := WriteFlameGraph(&out, prof); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprintf(&out, "<h2>Top functions</h2>\n<table><tr><th>flat</th><th>flat%%</th><th>cum</th><th>cum%%</th><th class=f>function</th></tr>\n")
	pct := func(v int64) float64 {
		if total == 0 {
			return 0
		}
		return 100 * float64(v) / float64(total)
	}
	for _, t := range top {
		fmt.Fprintf(&out, "<tr><td>%d</td><td>%.1f%%</td><td>%d</td><td>%.1f%%</td><td class=f>%s</td></tr>\n",
			t.Flat, pct(t.Flat), t.Cum, pct(t.Cum), esc(t.Func))
	}
	fmt.Fprintf(&out, "</table>\n<p>Values in %s; total %d.</p></body></html>\n", esc(unit), total)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.Write(out.Bytes())
}
