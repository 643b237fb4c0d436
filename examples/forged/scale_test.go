package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/internal/testenv"
)

// TestScaleOut runs three forged instances on one data directory, one
// PostgreSQL and one memcached, behind nginx with examples/deploy's
// load-balancer configuration: pushes, pages, sign-ins and view counts
// through it work whichever instance answers, a push is seen by every
// instance, and git traffic from CI user agents goes to the CI pool.
func TestScaleOut(t *testing.T) {
	t.Parallel()
	nginx := testenv.Binary(t, "nginx", "nginx", "/usr/sbin")
	dsn := testenv.Postgres(t)
	mc := testenv.Memcached(t)
	data := t.TempDir()
	var instances []*testForge
	for range 3 {
		instances = append(instances, newInstance(t, data, "-db", dsn, "-memcached", mc, "-trusted-proxies", "127.0.0.1"))
	}
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	site := deployConfig(t, "nginx-lb.conf",
		"server 127.0.0.1:8081;", "server "+instances[0].ts.Listener.Addr().String()+";",
		"server 127.0.0.1:8082;", "server "+instances[1].ts.Listener.Addr().String()+";",
		"server 127.0.0.1:8083;", "server "+instances[2].ts.Listener.Addr().String()+";",
		"listen 80;", "listen "+addr+";")
	startNginx(t, nginx, t.TempDir(), addr, site)
	lb := &testForge{t: t, s: instances[0].s, ts: &httptest.Server{URL: "http://" + addr}, data: data}

	lb.mustCLI("alice-password\n", "user", "add", "alice", "-password-stdin", "-db", dsn)
	tok := tokenRE.FindString(lb.mustCLI("", "token", "create", "alice", "-db", dsn))
	lb.mustCLI("", "repo", "create", "alice/proj", "-db", dsn)
	work := lb.pushSample("alice/proj", "alice", tok)

	gitRequests := func() []int64 {
		var n []int64
		for _, in := range instances {
			n = append(n, in.s.git.Stats().Requests)
		}
		return n
	}
	// CI clones go to the CI pool (the third instance) only.
	before := gitRequests()
	testenv.Run(t, "", "-c", "http.userAgent=gitlab-runner 16.11", "clone", "-q", lb.gitURL("alice/proj", "", ""), filepath.Join(t.TempDir(), "ci"))
	after := gitRequests()
	assert.Equal(t, before[0], after[0], "no CI traffic on the people's instances")
	assert.Equal(t, before[1], after[1])
	assert.Greater(t, after[2], before[2])
	// People's clones go round the people's pool.
	before = gitRequests()
	for i := range 4 {
		testenv.Run(t, "", "clone", "-q", lb.gitURL("alice/proj", "", ""), filepath.Join(t.TempDir(), fmt.Sprint("c", i)))
	}
	after = gitRequests()
	assert.Greater(t, after[0], before[0])
	assert.Greater(t, after[1], before[1])
	assert.Equal(t, before[2], after[2])

	// Signed in once, served by any instance.
	alice := lb.browser()
	alice.login("alice", "alice-password")
	for range 6 {
		assert.Equal(t, http.StatusOK, alice.get("/settings").code)
	}
	// Views counted by every instance add up in PostgreSQL.
	anon := lb.browser()
	for range 10 {
		require.Equal(t, http.StatusOK, anon.get("/alice/proj").code)
	}
	var total int64
	for _, in := range instances {
		require.NoError(t, in.s.views.Flush(context.Background()))
	}
	total, err := instances[2].s.views.Total(context.Background(), "alice/proj", time.Unix(0, 0), time.Now().Add(time.Hour))
	require.NoError(t, err)
	assert.Equal(t, int64(10), total, "the ten views, whichever instance counted them")

	// A push through the balancer is seen by every instance (fragments
	// invalidated through memcached, refs re-read within refsTTL).
	for _, in := range instances {
		assert.NotContains(t, in.browser().get("/alice/proj/commits/main").body, "Scaled")
	}
	testenv.Run(t, work, "commit", "-q", "--allow-empty", "-m", "Scaled out")
	testenv.Run(t, work, "push", "-q", lb.gitURL("alice/proj", "alice", tok), "main")
	for i, in := range instances {
		waitFor(t, fmt.Sprint("the push on instance ", i), 10*time.Second, func() bool {
			return strings.Contains(in.browser().get("/alice/proj/commits/main").body, "Scaled out")
		})
	}
	st := instances[0].s.cache.Stats()
	assert.Zero(t, st.L2Errors, "memcached shared without errors")
}
