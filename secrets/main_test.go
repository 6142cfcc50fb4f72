package secrets_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests: every test joins
// the controllers it runs, so anything left behind is a goroutine the controller
// started and never joined.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
