package viewcache

import (
	"bytes"
	"testing"
	"time"
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
