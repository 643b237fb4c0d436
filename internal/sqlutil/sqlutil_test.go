package sqlutil

import "testing"

func TestDollar(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, in, want string }{
		{"none", "SELECT 1", "SELECT 1"},
		{"one", "SELECT * FROM t WHERE a = ?", "SELECT * FROM t WHERE a = $1"},
		{"many", "INSERT INTO t VALUES (?, ?, ?), (?, ?, ?, ?, ?, ?, ?, ?)", "INSERT INTO t VALUES ($1, $2, $3), ($4, $5, $6, $7, $8, $9, $10, $11)"},
	} {
		if got := Dollar(tc.in); got != tc.want {
			t.Errorf("%s: Dollar(%q) = %q, want %q", tc.name, tc.in, got, tc.want)
		}
	}
}
