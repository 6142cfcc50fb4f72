package eds

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
)

// simulateDebounce feeds d changes at the given offsets from t0, firing the push
// timer as the push loop does, and returns the offsets of the pushes and, for
// each change, how long it waited to be pushed.
func simulateDebounce(d *debouncer, changes []time.Duration) (pushes, waited []time.Duration) {
	t0 := time.Unix(1_000_000, 0)
	var deadline *time.Duration
	var unpushed []time.Duration
	push := func(at time.Duration) {
		d.pushed()
		pushes = append(pushes, at)
		for _, c := range unpushed {
			waited = append(waited, at-c)
		}
		unpushed, deadline = nil, nil
	}
	for _, c := range changes {
		if deadline != nil && *deadline <= c {
			push(*deadline)
		}
		unpushed = append(unpushed, c)
		at := c + d.change(t0.Add(c))
		deadline = &at
	}
	if deadline != nil {
		push(*deadline)
	}
	return pushes, waited
}

func every(start, step time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = start + time.Duration(i)*step
	}
	return out
}

const ms = time.Millisecond

func TestDebouncePushesAQuietChangeAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name    string
		changes []time.Duration
		want    []time.Duration // push times
	}{
		{"one change", []time.Duration{0}, []time.Duration{0}},
		{"changes far apart", []time.Duration{0, 500 * ms, 2000 * ms}, []time.Duration{0, 500 * ms, 2000 * ms}},
		{"exactly after the quiet time", []time.Duration{0, 100 * ms}, []time.Duration{0, 100 * ms}},
		// The second comes 50ms after the first: batched, pushed once 100ms pass
		// without a change.
		{"two close changes", []time.Duration{0, 50 * ms}, []time.Duration{0, 150 * ms}},
		{"a burst", []time.Duration{0, 1 * ms, 2 * ms, 3 * ms, 4 * ms}, []time.Duration{0, 104 * ms}},
		// After the burst is pushed and a quiet period passes, a change goes at once.
		{"a burst, then quiet", []time.Duration{0, 10 * ms, 20 * ms, 400 * ms}, []time.Duration{0, 120 * ms, 400 * ms}},
		// A change that comes while a batch waits is added to it.
		{"a change joins a waiting batch", []time.Duration{0, 50 * ms, 120 * ms}, []time.Duration{0, 220 * ms}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pushes, _ := simulateDebounce(&debouncer{after: 100 * ms, max: time.Second}, tc.changes)
			if !slices.Equal(pushes, tc.want) {
				t.Errorf("changes at %v pushed at %v, want %v", tc.changes, pushes, tc.want)
			}
		})
	}
}

// TestDebounceBatchesChurn: changes that keep coming are batched — a push at least
// every max, not one per change — and none waits longer than max.
func TestDebounceBatchesChurn(t *testing.T) {
	for _, tc := range []struct {
		name       string
		after, max time.Duration
		changes    []time.Duration
		maxPushes  int
	}{
		// 30 changes a second for 60 s, the load tool's churn run.
		{"30/s for 60s", 100 * ms, time.Second, every(0, 33*ms, 1800), 62},
		{"1000/s for 10s", 100 * ms, time.Second, every(0, ms, 10_000), 12},
		{"no batching window", 0, 0, every(0, 33*ms, 30), 30},
		{"after equals max", 100 * ms, 100 * ms, every(0, 10*ms, 100), 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pushes, waited := simulateDebounce(&debouncer{after: tc.after, max: tc.max}, tc.changes)
			if len(pushes) > tc.maxPushes {
				t.Errorf("%d changes cost %d pushes, want at most %d", len(tc.changes), len(pushes), tc.maxPushes)
			}
			if len(waited) != len(tc.changes) {
				t.Fatalf("%d of %d changes pushed", len(waited), len(tc.changes))
			}
			if w := slices.Max(waited); w > tc.max {
				t.Errorf("a change waited %v to be pushed, more than max %v", w, tc.max)
			}
			if waited[0] != 0 {
				t.Errorf("the first change, after a quiet period, waited %v", waited[0])
			}
		})
	}
}

// TestRunPushesAQuietChangeAtOnce: with an hour of --debounce-after, a change that
// comes (on the debouncer's clock) two hours after the one before is pushed at once.
func TestRunPushesAQuietChangeAtOnce(t *testing.T) {
	src := &fakeSource{shards: map[string]map[network.ClusterID]*clusterregistry.Shard{}}
	src.set(hostA, "10.0.0.1")
	s, err := New(Options{Source: src, Networks: func() *network.Networks { return nil },
		DebounceAfter: time.Hour, DebounceMax: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64 // hours past t0
	t0 := time.Now()
	s.now = func() time.Time { return t0.Add(time.Duration(clock.Load()) * time.Hour) }
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitPushes := func(n uint64) {
		t.Helper()
		kubetest.Eventually(t, 10*time.Second, func() error {
			if got := s.Pushes(); got < n {
				return fmt.Errorf("not yet: %d pushes, want %d", got, n)
			}
			return nil
		})
	}
	waitPushes(1)
	clock.Store(2)
	src.set(hostA, "10.0.0.2")
	s.HostChanged(hostA)
	waitPushes(2)
}
