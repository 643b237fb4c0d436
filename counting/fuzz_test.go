package counting

import "testing"

// go test ./counting -run '^$' -fuzz FuzzUnmarshalHLL -fuzztime 30s
func FuzzUnmarshalHLL(f *testing.F) {
	s := newHLL()
	s.add("a")
	f.Add(s.marshal())
	for i := range 600 {
		s.add(string(rune(i)))
	}
	f.Add(s.marshal())
	f.Add([]byte("S\xff\xff\x05"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := unmarshalHLL(b)
		if err != nil {
			return
		}
		// A valid sketch survives a round trip and estimates sanely.
		again, err := unmarshalHLL(s.marshal())
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if a, b := s.estimate(), again.estimate(); a != b || a < 0 {
			t.Fatalf("estimates %d and %d", a, b)
		}
	})
}
