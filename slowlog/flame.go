package slowlog

import (
	"fmt"
	"html"
	"io"
	"sort"
	"strings"

	"github.com/google/pprof/profile"
)

// FuncStat is one function's share of a profile.
type FuncStat struct {
	Func string
	Flat int64 // in the function itself
	Cum  int64 // in it and what it called
}

// sampleIndex is the value a view reads: the last sample type (CPU
// nanoseconds of a CPU profile, goroutines of a goroutine profile,
// in-use bytes of a heap profile).
func sampleIndex(p *profile.Profile) int { return len(p.SampleType) - 1 }

// frames returns a sample's function names, root first.
func frames(s *profile.Sample) []string {
	var out []string
	for i := len(s.Location) - 1; i >= 0; i-- {
		loc := s.Location[i]
		for j := len(loc.Line) - 1; j >= 0; j-- { // inlined calls: outermost first
			if fn := loc.Line[j].Function; fn != nil {
				out = append(out, fn.Name)
			}
		}
	}
	return out
}

// TopFunctions returns the n functions with the most flat value, as `go
// tool pprof -top` lists them, and the profile's total.
func TopFunctions(p *profile.Profile, n int) (top []FuncStat, total int64) {
	if len(p.SampleType) == 0 {
		return nil, 0
	}
	idx := sampleIndex(p)
	stats := map[string]*FuncStat{}
	get := func(fn string) *FuncStat {
		st := stats[fn]
		if st == nil {
			st = &FuncStat{Func: fn}
			stats[fn] = st
		}
		return st
	}
	for _, s := range p.Sample {
		v := s.Value[idx]
		total += v
		fs := frames(s)
		if len(fs) == 0 {
			continue
		}
		get(fs[len(fs)-1]).Flat += v
		seen := map[string]bool{}
		for _, fn := range fs {
			if !seen[fn] { // recursion counts once
				seen[fn] = true
				get(fn).Cum += v
			}
		}
	}
	for _, st := range stats {
		top = append(top, *st)
	}
	sort.Slice(top, func(i, j int) bool {
		if top[i].Flat != top[j].Flat {
			return top[i].Flat > top[j].Flat
		}
		if top[i].Cum != top[j].Cum {
			return top[i].Cum > top[j].Cum
		}
		return top[i].Func < top[j].Func
	})
	if n > 0 && len(top) > n {
		top = top[:n]
	}
	return top, total
}

// flameNode is a frame in the flame graph's tree.
type flameNode struct {
	name     string
	value    int64
	children map[string]*flameNode
}

func (n *flameNode) child(name string) *flameNode {
	c := n.children[name]
	if c == nil {
		if n.children == nil {
			n.children = map[string]*flameNode{}
		}
		c = &flameNode{name: name}
		n.children[name] = c
	}
	return c
}

// Flame graph geometry.
const (
	flameWidth  = 1200
	flameRow    = 16
	flameMinPx  = 0.5 // narrower frames are left out
	flameMaxDep = 128
)

// WriteFlameGraph writes the profile as a flame graph in SVG: the root
// at the bottom, each frame as wide as its share of the total, siblings
// in name order; a frame's title gives its value and share. It needs no
// script: the picture and its tooltips are plain SVG.
func WriteFlameGraph(w io.Writer, p *profile.Profile) error {
	root := &flameNode{name: "all"}
	if len(p.SampleType) > 0 {
		idx := sampleIndex(p)
		for _, s := range p.Sample {
			v := s.Value[idx]
			root.value += v
			n := root
			for _, fn := range frames(s) {
				n = n.child(fn)
				n.value += v
			}
		}
	}
	unit := ""
	if len(p.SampleType) > 0 {
		unit = p.SampleType[sampleIndex(p)].Unit
	}
	depth := treeDepth(root, 0)
	height := (depth + 1) * flameRow
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="flame" width="%d" height="%d" viewBox="0 0 %d %d" font-family="monospace" font-size="11">`+"\n",
		flameWidth, height, flameWidth, height)
	if root.value == 0 {
		b.WriteString(`<text x="4" y="12">no samples</text>` + "\n")
	} else {
		drawFlame(&b, root, 0, float64(flameWidth), 0, height, root.value, unit)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func treeDepth(n *flameNode, d int) int {
	if d >= flameMaxDep {
		return d
	}
	max := d
	for _, c := range n.children {
		if cd := treeDepth(c, d+1); cd > max {
			max = cd
		}
	}
	return max
}

func drawFlame(b *strings.Builder, n *flameNode, x, width float64, depth, height int, total int64, unit string) {
	if width < flameMinPx || depth > flameMaxDep {
		return
	}
	y := height - (depth+1)*flameRow
	share := 100 * float64(n.value) / float64(total)
	fmt.Fprintf(b, `<g><title>%s: %d %s (%.1f%%)</title><rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" stroke="#fff" stroke-width="0.5"/>`,
		html.EscapeString(n.name), n.value, html.EscapeString(unit), share, x, y, width, flameRow-1, flameColor(n.name))
	if chars := int((width - 6) / 7); chars >= 3 {
		label := shortFunc(n.name)
		if len(label) > chars {
			label = label[:chars-2] + ".."
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%d">%s</text>`, x+3, y+flameRow-4, html.EscapeString(label))
	}
	b.WriteString("</g>\n")
	names := make([]string, 0, len(n.children))
	for name := range n.children {
		names = append(names, name)
	}
	sort.Strings(names)
	cx := x
	for _, name := range names {
		c := n.children[name]
		cw := width * float64(c.value) / float64(n.value)
		drawFlame(b, c, cx, cw, depth+1, height, total, unit)
		cx += cw
	}
}

// shortFunc drops the package path: "github.com/x/y/pkg.(*T).M" is
// "pkg.(*T).M".
func shortFunc(fn string) string {
	if i := strings.LastIndexByte(fn, '/'); i >= 0 {
		return fn[i+1:]
	}
	return fn
}

// flameColor picks a warm colour from the function's name, so that a
// function has the same colour everywhere in the graph.
func flameColor(fn string) string {
	var h uint32 = 2166136261
	for i := 0; i < len(fn); i++ {
		h = (h ^ uint32(fn[i])) * 16777619
	}
	return fmt.Sprintf("rgb(%d,%d,%d)", 205+h%50, 80+(h>>8)%120, 40+(h>>16)%50)
}
