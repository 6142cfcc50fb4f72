package kubetest

import (
	"testing"
	"time"
)

// Eventually calls cond every 20ms until it returns nil, and fails the test with
// cond's last error if that does not happen within timeout. It works in cleanup
// functions too, after the test's context has ended.
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
		<-tick.C
	}
}

// Consistently calls cond every 20ms for duration and fails the test as soon as it
// returns an error: for asserting that something keeps holding.
func Consistently(t testing.TB, duration time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(duration)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := cond(); err != nil {
			t.Fatalf("condition stopped holding after %s: %v", duration-time.Until(deadline), err)
		}
		if time.Now().After(deadline) {
			return
		}
		<-tick.C
	}
}
