package viewcache_test

import (
	"context"
	"fmt"
	"html/template"
	"strings"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/forgekit/forgekit/viewcache"
)

func ExampleCache_GetOrRender() {
	c := viewcache.New("forge", "templates-v7")
	// c.Memcache = memcache.New("10.0.0.5:11211", "10.0.0.6:11211") to share it
	ctx := context.Background()
	renders := 0
	readme := func(ctx context.Context) ([]byte, error) {
		renders++
		return []byte("<h1>proj</h1>"), nil
	}
	deps := []string{"repo:alice/proj"}
	html, _ := c.GetOrRender(ctx, "readme:alice/proj", deps, readme)
	html, _ = c.GetOrRender(ctx, "readme:alice/proj", deps, readme)
	fmt.Println(string(html), renders)

	// A push to alice/proj makes every fragment that depends on it stale.
	c.Invalidate(ctx, "repo:alice/proj")
	c.GetOrRender(ctx, "readme:alice/proj", deps, readme)
	fmt.Println(renders)
	// Output:
	// <h1>proj</h1> 1
	// 2
}

// Templates include cached fragments with the viewlet function.
func ExampleViewlets() {
	v := &viewcache.Viewlets{Cache: viewcache.New("forge", "v1")}
	t := template.New("page").Funcs(v.FuncMap())
	template.Must(t.Parse(`<main>{{viewlet .Ctx "files" "files:alice/proj@main" (deps "repo:alice/proj") .}}</main>`))
	template.Must(t.New("files").Parse(`<ul>{{range .Files}}<li>{{.}}</li>{{end}}</ul>`))
	v.Templates = t
	data := struct {
		Ctx   context.Context
		Files []string
	}{context.Background(), []string{"README.md", "main.go"}}
	var b strings.Builder
	t.Execute(&b, data)
	fmt.Println(b.String())
	// Output:
	// <main><ul><li>README.md</li><li>main.go</li></ul></main>
}

// Render loads a fragment's data only when the fragment is not cached.
func ExampleViewlets_Render() {
	t := template.Must(template.New("readme").Parse(`<article>{{.}}</article>`))
	v := &viewcache.Viewlets{Cache: viewcache.New("forge", "v1"), Templates: t}
	loads := 0
	load := func(ctx context.Context) (any, error) {
		loads++ // reading the README from the repository
		return "Hello", nil
	}
	for range 3 {
		b, _ := v.Render(context.Background(), "readme", "readme:alice/proj@c0ffee", []string{"repo:alice/proj"}, load)
		fmt.Println(string(b))
	}
	fmt.Println("loads:", loads)
	// Output:
	// <article>Hello</article>
	// <article>Hello</article>
	// <article>Hello</article>
	// loads: 1
}

// A Cache shared through memcached reads through a Getter built on the
// same servers as the client that writes. (Not run here: it needs the
// servers.)
func ExampleGetter() {
	ss := new(memcache.ServerList)
	if err := ss.SetServers("10.0.0.5:11211", "10.0.0.6:11211"); err != nil {
		panic(err)
	}
	c := viewcache.New("forge", "templates-v7")
	c.Memcache = memcache.NewFromSelector(ss) // writes, invalidations, locks
	c.Getter = viewcache.NewGetter(ss)        // lookups, one round trip per server
	_ = c
}
