package slowlog

import "testing"

// go test ./slowlog -run '^$' -fuzz FuzzParseProfile -fuzztime 30s
func FuzzParseProfile(f *testing.F) {
	f.Add("goroutine profile: total 2\n1 @ 0x4321 0x4567\n# labels: {\"slowlog.id\":\"42\"}\n#\t0x4320\tmain.f+0x1f\t\t/src/main.go:12\n\n")
	f.Add("1 @ 0x1\n# labels: {\"slowlog.id\":\"a\\\"b\"}\n#\t0x1\tx\ty:z\n")
	f.Add("# labels: {\"slowlog.id\":")
	f.Fuzz(func(t *testing.T, text string) {
		for id, stacks := range parseProfile(text) {
			if id == "" {
				t.Fatal("stacks filed under an empty id")
			}
			for _, s := range stacks {
				if s.State == "" {
					t.Fatal("stack without a state")
				}
			}
		}
	})
}
