package codesearch_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind (the
// feeder of git cat-file, above all).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
