package kubetest

import (
	"testing"
	"time"
)

// Eventually calls cond every 20ms until it returns nil, and fails the test with
// cond's last error if that does not happen within timeout.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("test ended while waiting: %v", err)
		case <-tick.C:
		}
	}
}
