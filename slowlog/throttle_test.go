package slowlog_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/forgekit/forgekit/slowlog"
)

func TestThrottle(t *testing.T) {
	t.Parallel()
	var got []*slowlog.Report
	th := &slowlog.Throttle{Max: 3, Sink: slowlog.SinkFunc(func(ctx context.Context, r *slowlog.Report) error {
		got = append(got, r)
		return nil
	})}
	stuck := func(id, route, fn string) *slowlog.Report {
		return &slowlog.Report{ID: id, Kind: "request", Method: "GET", Route: route,
			Stacks: []slowlog.Stack{{Count: 1, Frames: []slowlog.Frame{{Func: fn, Line: len(id)}, {Func: "main.handler"}}}}}
	}
	ctx := context.Background()
	for _, r := range []*slowlog.Report{
		stuck("1", "/a", "db.Query"),
		stuck("2", "/a", "db.Query"),                         // same signature (other line): held
		stuck("3", "/a", "git.Wait"),                         // same route, other stack: passes
		{ID: "2", Route: "/a", Kind: "request", Final: true}, // its report was held: so is its end
		{ID: "1", Route: "/a", Kind: "request", Final: true}, // passes
		stuck("4", "/b", "db.Query"),
		stuck("5", "/c", "db.Query"), // over Max for the window: held
	} {
		assert.NoError(t, th.Send(ctx, r))
	}
	var ids []string
	for _, r := range got {
		ids = append(ids, fmt.Sprint(r.ID, r.Final))
	}
	assert.Equal(t, []string{"1false", "3false", "1true", "4false"}, ids)
	assert.Equal(t, 1, got[1].Suppressed, "the report after a held one says so")
	assert.Equal(t, slowlog.ThrottleStats{Passed: 4, Suppressed: 3}, th.Stats())
	assert.Equal(t, slowlog.Signature(stuck("1", "/a", "db.Query")), slowlog.Signature(stuck("22", "/a", "db.Query")))
	assert.NotEqual(t, slowlog.Signature(stuck("1", "/a", "db.Query")), slowlog.Signature(stuck("1", "/b", "db.Query")))
}
