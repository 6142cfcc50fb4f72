package xdsserver

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any leaves a goroutine behind: a stream's
// handler or sender, or a gRPC server or connection a fixture did not close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
