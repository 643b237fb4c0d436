package counting

import (
	"container/heap"
	"sort"
	"sync"
	"time"
)

// Defaults for trending.
const (
	DefaultTrendingK = 100
	trendingSlot     = time.Minute
)

// trending keeps, per minute, a Space-Saving summary of the counts
// flushed in it (Metwally et al.: at most K counters; a new id replaces
// the smallest and inherits its count as error), so that the top ids of
// the last window are known in bounded memory whatever the number of ids.
// It is fed by flushes, not by Count, so the request path pays nothing.
type trending struct {
	mu    sync.Mutex // guards slots
	k     int
	slots []*spaceSaving // ring, one per minute of the window
	stamp []int64        // the minute each slot holds
}

func newTrending(window time.Duration, k int) *trending {
	n := int(window/trendingSlot) + 1
	return &trending{k: k, slots: make([]*spaceSaving, n), stamp: make([]int64, n)}
}

func (t *trending) add(now time.Time, counts map[string]int64) {
	m := now.Unix() / int64(trendingSlot/time.Second)
	i := int(m % int64(len(t.slots)))
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.slots[i] == nil || t.stamp[i] != m {
		t.slots[i], t.stamp[i] = newSpaceSaving(t.k), m
	}
	// Heaviest first: the light ids then compete for the last counters
	// among themselves instead of inflating a heavy one's estimate.
	ids := make([]string, 0, len(counts))
	for id := range counts {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool { return counts[ids[a]] > counts[ids[b]] })
	for _, id := range ids {
		t.slots[i].add(id, counts[id])
	}
}

func (t *trending) top(now time.Time, limit int) []Entry {
	m := now.Unix() / int64(trendingSlot/time.Second)
	totals := make(map[string]int64)
	t.mu.Lock()
	for i, s := range t.slots {
		if s != nil && m-t.stamp[i] < int64(len(t.slots)) {
			for _, c := range s.items {
				totals[c.id] += c.n
			}
		}
	}
	t.mu.Unlock()
	return top(totals, limit)
}

type ssItem struct {
	id    string
	n     int64
	err   int64
	index int
}

// spaceSaving is a weighted Space-Saving summary: a min-heap of at most
// k counters, indexed by id.
type spaceSaving struct {
	k     int
	items ssHeap
	byID  map[string]*ssItem
}

func newSpaceSaving(k int) *spaceSaving {
	return &spaceSaving{k: k, byID: make(map[string]*ssItem, k)}
}

func (s *spaceSaving) add(id string, n int64) {
	if it, ok := s.byID[id]; ok {
		it.n += n
		heap.Fix(&s.items, it.index)
		return
	}
	if len(s.items) < s.k {
		it := &ssItem{id: id, n: n}
		heap.Push(&s.items, it)
		s.byID[id] = it
		return
	}
	min := s.items[0]
	delete(s.byID, min.id)
	min.id, min.err, min.n = id, min.n, min.n+n
	s.byID[id] = min
	heap.Fix(&s.items, 0)
}

type ssHeap []*ssItem

func (h ssHeap) Len() int           { return len(h) }
func (h ssHeap) Less(i, j int) bool { return h[i].n < h[j].n }
func (h ssHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *ssHeap) Push(x any) {
	it := x.(*ssItem)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *ssHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
