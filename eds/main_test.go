package eds

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any leaves a goroutine behind: a push loop,
// a stream, or a gRPC server or connection a fixture did not close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
