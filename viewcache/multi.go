package viewcache

import (
	"context"

	"golang.org/x/sync/errgroup"
)

// DefaultMaxParallel bounds the renders of one GetOrRenderMulti.
const DefaultMaxParallel = 4

// Item is one fragment of a GetOrRenderMulti.
type Item struct {
	Key    string
	Deps   []string
	Render Render
}

// GetOrRenderMulti returns the fragments of items in order: the cached
// ones from process memory or, all together, from one memcached multi-get
// round trip; the misses rendered in parallel, at most MaxParallel at a
// time. The first render error is returned (with the fragments that
// succeeded still filled in).
func (c *Cache) GetOrRenderMulti(ctx context.Context, items []Item) ([][]byte, error) {
	c.init()
	for _, it := range items {
		c.work(ctx, Asked, it.Key, 0)
	}
	out := make([][]byte, len(items))
	todo := make([]int, 0, len(items))
	now := c.clock()
	for i, it := range items {
		if v, ok := c.l1Get(it.Key, now); ok {
			out[i] = v
			continue
		}
		todo = append(todo, i)
	}
	if len(todo) == 0 {
		return out, nil
	}
	stale := make(map[int]*entry)
	if c.l2 != nil {
		keys := make([]string, 0, 3*len(todo))
		offsets := make([]int, len(todo)) // where the keys of todo[j] start
		for j, i := range todo {
			offsets[j] = len(keys)
			keys = append(keys, c.memKey("v:", items[i].Key))
			for _, d := range items[i].Deps {
				keys = append(keys, c.genKey(d))
			}
		}
		c.work(ctx, RemoteGet, "", 0)
		found, err := c.l2.getMulti(keys)
		if err != nil {
			c.l2Error("get", err)
		} else {
			rest := todo[:0]
			for j, i := range todo {
				o := offsets[j]
				e, gens, err := c.parse(found, keys[o:o+1+len(items[i].Deps)], items[i].Deps)
				if err != nil || e == nil {
					rest = append(rest, i)
					continue
				}
				fresh, valid := c.judge(e, gens, now)
				switch {
				case valid && fresh:
					c.l2Hits.Add(1)
					c.storeL1(items[i].Key, items[i].Deps, e, now)
					out[i] = e.value
				case valid:
					c.staleHits.Add(1)
					c.storeL1(items[i].Key, items[i].Deps, e, now)
					c.refreshAsync(ctx, items[i].Key, items[i].Deps, items[i].Render)
					out[i] = e.value
				default:
					if now.Before(e.hard) {
						stale[i] = e
					}
					rest = append(rest, i)
				}
			}
			todo = rest
		}
	}
	max := c.MaxParallel
	if max <= 0 {
		max = DefaultMaxParallel
	}
	var g errgroup.Group
	g.SetLimit(max)
	for _, i := range todo {
		c.misses.Add(1)
		g.Go(func() error {
			v, err := c.renderShared(ctx, items[i].Key, items[i].Deps, items[i].Render, stale[i])
			out[i] = v
			return err
		})
	}
	return out, g.Wait()
}
