package viewcache_test

import (
	"context"
	"html/template"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/forgekit/forgekit/viewcache"
)

type page struct {
	Ctx  context.Context
	Repo string
	Desc string
}

func newViewlets(t *testing.T, esi bool) (*viewcache.Viewlets, *template.Template, *atomic.Int64) {
	var renders atomic.Int64
	v := &viewcache.Viewlets{Cache: viewcache.New("forge", "v1"), ESI: esi, FragmentURL: "/_fragments/"}
	tmpl := template.New("page").Funcs(v.FuncMap()).Funcs(template.FuncMap{"count": func() string { renders.Add(1); return "" }})
	template.Must(tmpl.Parse(`<main>{{viewlet $.Ctx "readme" (printf "readme:%s" .Repo) (deps (printf "repo:%s" .Repo)) .}}</main>`))
	template.Must(tmpl.New("readme").Parse(`{{count}}<p>{{.Desc}}</p>`))
	v.Templates = tmpl
	return v, tmpl, &renders
}

func TestTemplateViewlet(t *testing.T) {
	t.Parallel()
	v, tmpl, renders := newViewlets(t, false)
	for range 3 {
		var b strings.Builder
		require.NoError(t, tmpl.Execute(&b, page{Ctx: context.Background(), Repo: "alice/proj", Desc: "<b>fast</b>"}))
		assert.Equal(t, "<main><p>&lt;b&gt;fast&lt;/b&gt;</p></main>", b.String())
	}
	assert.Equal(t, int64(1), renders.Load())
	v.Cache.Invalidate(context.Background(), "repo:alice/proj")
	require.NoError(t, tmpl.Execute(&strings.Builder{}, page{Ctx: context.Background(), Repo: "alice/proj"}))
	assert.Equal(t, int64(2), renders.Load())
}

func TestESIAndFragmentHandler(t *testing.T) {
	t.Parallel()
	v, tmpl, _ := newViewlets(t, true)
	var b strings.Builder
	require.NoError(t, tmpl.Execute(&b, page{Ctx: context.Background(), Repo: "alice/proj", Desc: "d"}))
	assert.Equal(t, `<main><esi:include src="/_fragments/readme:alice%2Fproj"/></main>`, b.String())

	h := v.Cache.Handler("/_fragments/", func(r *http.Request, key string) ([]string, viewcache.Render, bool) {
		repo, ok := strings.CutPrefix(key, "readme:")
		if !ok {
			return nil, nil, false
		}
		return []string{"repo:" + repo}, func(context.Context) ([]byte, error) { return []byte("rendered by handler"), nil }, true
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/_fragments/readme:alice%2Fproj", nil))
	assert.Equal(t, 200, rec.Code)
	assert.Equal(t, "<p>d</p>", rec.Body.String(), "served from the cache the page filled")
	assert.Equal(t, "repo:alice/proj", rec.Header().Get("Surrogate-Key"))
	assert.Equal(t, "repo:alice/proj", rec.Header().Get("xkey"))
	assert.Contains(t, rec.Header().Get("Cache-Control"), "public, max-age=")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/_fragments/unknown", nil))
	assert.Equal(t, 404, rec.Code)
}

func TestGetOrRenderMulti(t *testing.T) {
	t.Parallel()
	mc, _ := memcached(t)
	for _, tc := range []struct {
		name string
		mc   bool
	}{{name: "in process"}, {name: "memcached", mc: true}} {
		t.Run(tc.name, func(t *testing.T) {
			c := viewcache.New("multi-"+tc.name, "v1")
			if tc.mc {
				c.Memcache, c.MaxBytes = mc, -1
			}
			var r counter
			items := make([]viewcache.Item, 20)
			for i := range items {
				items[i] = viewcache.Item{Key: "frag" + string(rune('a'+i)), Deps: []string{"d"}, Render: r.render}
			}
			out, err := c.GetOrRenderMulti(context.Background(), items)
			require.NoError(t, err)
			assert.Len(t, out, 20)
			assert.Equal(t, int64(20), r.n.Load())
			out2, err := c.GetOrRenderMulti(context.Background(), items)
			require.NoError(t, err)
			assert.Equal(t, out, out2)
			assert.Equal(t, int64(20), r.n.Load(), "all hits the second time")
			c.Invalidate(context.Background(), "d")
			_, err = c.GetOrRenderMulti(context.Background(), items[:5])
			require.NoError(t, err)
			assert.Equal(t, int64(25), r.n.Load())
		})
	}
}
