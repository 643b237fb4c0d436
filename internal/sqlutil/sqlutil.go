// Package sqlutil provides what forgekit's SQL stores share across the
// databases they run on: so far, the rewriting of placeholders.
package sqlutil

import (
	"strconv"
	"strings"
)

// Dollar rewrites the ? placeholders of q as PostgreSQL's $1, $2, ...
// It does not parse SQL: q must have no ? inside a string literal or
// comment (forgekit's statements have none).
func Dollar(q string) string {
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 8)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}
