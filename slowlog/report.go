package slowlog

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Report is one snapshot of a slow request or job, or (Final) the line
// that says how it ended.
type Report struct {
	Seq         int    // position among this watchdog's reports, for ReportsHandler
	ID          string // request id (the pprof label slowlog.id)
	Kind        string // "request" or "job"
	Parent      string // for a job, the id of the request or job that started it
	Method      string
	Route       string // the ServeMux pattern, else the path; the job's name
	URL         string // redacted: no credentials, no query values
	Principal   string
	Start       time.Time
	Elapsed     time.Duration
	Threshold   time.Duration // the threshold crossed; zero for captures and finals
	Reason      string        // why a capture was taken, or why stacks are missing
	Goroutines  int           // in the whole process
	Host        string
	PID         int
	Version     string
	Stacks      []Stack // the request's goroutines, most numerous first
	Annotations []Annotation
	Suppressed  int    // similar reports not sent since the group's last one
	Trace       string // file with an execution-trace snapshot, if one was taken
	Work        *Tally // what the request had done so far; nil if its context carries no Work

	Final  bool   // the request ended; Elapsed is its duration
	Status int    // its HTTP status, when Final
	Panic  string // the value it panicked with, if it did
}

// Stack is a group of identical goroutine stacks of one request.
type Stack struct {
	Count  int     // goroutines with this stack
	State  string  // wait state inferred from the innermost frames, e.g. "chan receive"
	Frames []Frame // innermost first
}

// Frame is one call in a stack.
type Frame struct {
	Func string
	File string
	Line int
}

// String renders the report as text, dogslow style.
func (r *Report) String() string {
	var b strings.Builder
	what := "slow " + r.Kind
	if r.Final {
		what = r.Kind + " ended"
	}
	fmt.Fprintf(&b, "%s %s %s (id %s)\n", what, r.Method, r.Route, r.ID)
	if r.URL != "" {
		fmt.Fprintf(&b, "URL: %s\n", r.URL)
	}
	if r.Principal != "" {
		fmt.Fprintf(&b, "Principal: %s\n", r.Principal)
	}
	if r.Parent != "" {
		fmt.Fprintf(&b, "Started by: %s\n", r.Parent)
	}
	fmt.Fprintf(&b, "Started: %s\n", r.Start.Format(time.RFC3339Nano))
	if r.Final {
		fmt.Fprintf(&b, "Duration: %s\nStatus: %d\n", r.Elapsed.Round(time.Millisecond), r.Status)
		if r.Work != nil {
			fmt.Fprintf(&b, "Work: %s\n", r.Work)
		}
		if r.Panic != "" {
			fmt.Fprintf(&b, "Panic: %s\n", r.Panic)
		}
		return b.String()
	}
	fmt.Fprintf(&b, "Elapsed: %s", r.Elapsed.Round(time.Millisecond))
	if r.Threshold > 0 {
		fmt.Fprintf(&b, " (threshold %s)", r.Threshold)
	}
	b.WriteByte('\n')
	if r.Reason != "" {
		fmt.Fprintf(&b, "Reason: %s\n", r.Reason)
	}
	if r.Work != nil {
		fmt.Fprintf(&b, "Work: %s\n", r.Work)
	}
	fmt.Fprintf(&b, "Host: %s pid %d version %s goroutines %d\n", r.Host, r.PID, r.Version, r.Goroutines)
	if r.Suppressed > 0 {
		fmt.Fprintf(&b, "Similar reports not sent: %d\n", r.Suppressed)
	}
	if r.Trace != "" {
		fmt.Fprintf(&b, "Execution trace: %s (go tool trace)\n", r.Trace)
	}
	for _, a := range r.Annotations {
		fmt.Fprintf(&b, "Note %s: %s = %s\n", a.Time.Format("15:04:05.000"), a.Key, a.Value)
	}
	for _, s := range r.Stacks {
		fmt.Fprintf(&b, "\n%d goroutine(s) [%s]:\n", s.Count, s.State)
		for _, f := range s.Frames {
			fmt.Fprintf(&b, "%s\n\t%s:%d\n", f.Func, f.File, f.Line)
		}
	}
	return b.String()
}

// parseProfile reads runtime/pprof's goroutine profile in its debug=1
// text form and returns the stacks of labelled goroutines by request id:
//
//	3 @ 0x4321 0x4567
//	# labels: {"slowlog.id":"42"}
//	#	0x4320	main.f+0x1f	/src/main.go:12
func parseProfile(text string) map[string][]Stack {
	out := make(map[string][]Stack)
	var cur *Stack
	var id string
	var pcs []uintptr
	flush := func() {
		if cur != nil && id != "" {
			cur.State = inferState(pcs)
			out[id] = append(out[id], *cur)
		}
		cur, id, pcs = nil, "", nil
	}
	for _, line := range strings.Split(text, "\n") {
		switch {
		case line == "":
			flush()
		case strings.HasPrefix(line, "# labels: "):
			id = labelValue(line[len("# labels: "):], labelKey)
		case strings.HasPrefix(line, "#\t"):
			if cur == nil {
				continue
			}
			// Fields are separated by one or more tabs (for alignment).
			f := strings.FieldsFunc(line[2:], func(r rune) bool { return r == '\t' })
			if len(f) < 3 {
				continue
			}
			fn := f[1]
			if i := strings.LastIndex(fn, "+0x"); i > 0 {
				fn = fn[:i]
			}
			file, lineNo := f[2], 0
			if i := strings.LastIndexByte(file, ':'); i > 0 {
				lineNo, _ = strconv.Atoi(strings.TrimSpace(file[i+1:]))
				file = file[:i]
			}
			cur.Frames = append(cur.Frames, Frame{Func: fn, File: file, Line: lineNo})
		case !strings.HasPrefix(line, "#"):
			if n, rest, ok := strings.Cut(line, " @ "); ok && rest != "" {
				flush()
				count, _ := strconv.Atoi(n)
				cur = &Stack{Count: count}
				// The printed frames leave out the runtime's; the raw
				// pcs keep them, and they tell what the goroutine waits on.
				for i, a := range strings.Fields(rest) {
					if i == 10 {
						break
					}
					if pc, err := strconv.ParseUint(strings.TrimPrefix(a, "0x"), 16, 64); err == nil {
						pcs = append(pcs, uintptr(pc))
					}
				}
			}
		}
	}
	flush()
	return out
}

// labelValue finds key in a label set printed as {"k":"v", ...}.
func labelValue(set, key string) string {
	needle := strconv.Quote(key) + ":"
	i := strings.Index(set, needle)
	if i < 0 {
		return ""
	}
	rest := set[i+len(needle):]
	if len(rest) == 0 || rest[0] != '"' {
		return ""
	}
	// The value is Go-quoted; find its closing quote.
	for j := 1; j < len(rest); j++ {
		switch rest[j] {
		case '\\':
			j++
		case '"':
			v, err := strconv.Unquote(rest[:j+1])
			if err != nil {
				return ""
			}
			return v
		}
	}
	return ""
}

// states maps well-known innermost calls to the wait states the runtime
// prints in full goroutine dumps.
var states = []struct{ prefix, state string }{
	{"runtime.chanrecv", "chan receive"},
	{"runtime.chansend", "chan send"},
	{"runtime.selectgo", "select"},
	{"runtime.block", "select (no cases)"},
	{"time.Sleep", "sleep"},
	{"sync.(*Mutex).Lock", "sync.Mutex.Lock"},
	{"sync.(*Mutex).lockSlow", "sync.Mutex.Lock"},
	{"sync.(*RWMutex).", "sync.RWMutex.Lock"},
	{"sync.(*WaitGroup).Wait", "sync.WaitGroup.Wait"},
	{"sync.(*Cond).Wait", "sync.Cond.Wait"},
	// Go 1.24 and later: sync.Mutex is internal/sync's.
	{"internal/sync.(*Mutex).Lock", "sync.Mutex.Lock"},
	{"internal/sync.(*Mutex).lockSlow", "sync.Mutex.Lock"},
	{"internal/poll.runtime_pollWait", "IO wait"},
	{"syscall.Syscall", "syscall"},
	{"syscall.RawSyscall", "syscall"},
	{"internal/runtime/syscall", "syscall"},
	{"runtime/pprof.writeGoroutine", "running"},
}

// inferState names what a goroutine waits on from the innermost pcs of
// its stack (this process's own, so they resolve with runtime.FuncForPC).
func inferState(pcs []uintptr) string {
	for _, pc := range pcs {
		fn := runtime.FuncForPC(pc - 1)
		if fn == nil {
			continue
		}
		name := fn.Name()
		if name == "runtime.gopark" || name == "runtime.goparkunlock" ||
			strings.HasPrefix(name, "internal/sync.runtime_") || strings.HasPrefix(name, "sync.runtime_") {
			continue // the semaphore under a lock: the caller says which
		}
		for _, s := range states {
			if strings.HasPrefix(name, s.prefix) {
				return s.state
			}
		}
		if !strings.HasPrefix(name, "runtime.") {
			return "running"
		}
	}
	return "waiting"
}
