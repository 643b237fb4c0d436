package slowlog_test

import (
	"strings"
	"testing"

	"github.com/google/pprof/profile"
	"github.com/stretchr/testify/assert"

	"github.com/forgekit/forgekit/slowlog"
)

// synthetic builds a profile from stacks (root first) and their values.
func synthetic(stacks map[string]int64) *profile.Profile {
	p := &profile.Profile{SampleType: []*profile.ValueType{{Type: "cpu", Unit: "nanoseconds"}}}
	funcs := map[string]*profile.Function{}
	for stack, v := range stacks {
		names := strings.Split(stack, ";")
		s := &profile.Sample{Value: []int64{v}}
		for i := len(names) - 1; i >= 0; i-- { // leaf first, as pprof keeps them
			fn := funcs[names[i]]
			if fn == nil {
				fn = &profile.Function{ID: uint64(len(funcs) + 1), Name: names[i]}
				funcs[names[i]] = fn
				p.Function = append(p.Function, fn)
			}
			loc := &profile.Location{ID: uint64(len(p.Location) + 1), Line: []profile.Line{{Function: fn}}}
			p.Location = append(p.Location, loc)
			s.Location = append(s.Location, loc)
		}
		p.Sample = append(p.Sample, s)
	}
	return p
}

func TestTopFunctionsAndFlameGraph(t *testing.T) {
	t.Parallel()
	p := synthetic(map[string]int64{
		"main;serve;query":            60,
		"main;serve;render;render":    30, // recursion counts once in cum
		"main;serve;render;<escape&>": 10,
	})
	top, total := slowlog.TopFunctions(p, 3)
	assert.Equal(t, int64(100), total)
	assert.Equal(t, []slowlog.FuncStat{
		{Func: "query", Flat: 60, Cum: 60},
		{Func: "render", Flat: 30, Cum: 40},
		{Func: "<escape&>", Flat: 10, Cum: 10},
	}, top)

	var b strings.Builder
	assert.NoError(t, slowlog.WriteFlameGraph(&b, p))
	svg := b.String()
	assert.True(t, strings.HasPrefix(svg, "<svg "))
	assert.Contains(t, svg, "<title>serve: 100 nanoseconds (100.0%)</title>")
	assert.Contains(t, svg, "<title>query: 60 nanoseconds (60.0%)</title>")
	assert.Contains(t, svg, "&lt;escape&amp;&gt;")
	assert.NotContains(t, svg, "<escape&>")

	b.Reset()
	assert.NoError(t, slowlog.WriteFlameGraph(&b, &profile.Profile{}))
	assert.Contains(t, b.String(), "no samples")
}
