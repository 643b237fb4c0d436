package viewcache

import (
	"bufio"
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// go test ./viewcache -run '^$' -fuzz FuzzDecode -fuzztime 30s
func FuzzDecode(f *testing.F) {
	now := time.Unix(1700000000, 0)
	f.Add(encode(&entry{value: []byte("<p>hi</p>"), gens: []uint64{1, 2}, created: now, soft: now, hard: now}))
	f.Add(encode(&entry{created: now, soft: now, hard: now}))
	f.Add([]byte("VC1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decode(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes.
		if !bytes.Equal(encode(e), b) {
			t.Fatalf("decode/encode mismatch for %q", b)
		}
	})
}

// go test ./viewcache -run '^$' -fuzz FuzzReadItems -fuzztime 30s
func FuzzReadItems(f *testing.F) {
	f.Add([]byte("VALUE a 0 2\r\nhi\r\nVALUE b 7 0 99\r\n\r\nEND\r\n"))
	f.Add([]byte("END\r\n"))
	f.Add([]byte("SERVER_ERROR out of memory\r\n"))
	f.Add([]byte("VALUE a 0 2147483648\r\nhi\r\nEND\r\n"))
	f.Add([]byte("VALUE c 0 5\r\nEND\r\n\r\nEND\r\n"))
	keys := []string{"a", "b", "c"}
	f.Fuzz(func(t *testing.T, b []byte) {
		var items []*memcache.Item
		err := readItems(bufio.NewReader(bytes.NewReader(b)), keys, func(it *memcache.Item) { items = append(items, it) })
		if err != nil {
			return
		}
		// What was accepted re-encodes to an answer that reads the same.
		var again bytes.Buffer
		for _, it := range items {
			if !slices.Contains(keys, it.Key) {
				t.Fatalf("key %q not asked for", it.Key)
			}
			fmt.Fprintf(&again, "VALUE %s %d %d\r\n%s\r\n", it.Key, it.Flags, len(it.Value), it.Value)
		}
		again.WriteString("END\r\n")
		var items2 []*memcache.Item
		if err := readItems(bufio.NewReader(&again), keys, func(it *memcache.Item) { items2 = append(items2, it) }); err != nil {
			t.Fatalf("re-encoded answer refused: %v", err)
		}
		if len(items) != len(items2) {
			t.Fatalf("%d items, then %d", len(items), len(items2))
		}
		for i := range items {
			if items[i].Key != items2[i].Key || items[i].Flags != items2[i].Flags || !bytes.Equal(items[i].Value, items2[i].Value) {
				t.Fatalf("item %d differs: %+v vs %+v", i, items[i], items2[i])
			}
		}
	})
}
