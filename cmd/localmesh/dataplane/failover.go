package dataplane

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Failover drives the failover scenario of a service whose traffic distribution
// prefers close endpoints, with one local version (by pod IP, priority 0) and one
// remote version (through another network's gateway, a lower priority), and any xDS
// client that Call wraps:
//
//  1. every call lands on Local;
//  2. StopLocal (the local pod's server dies, its EndpointSlice untouched): calls
//     move to Remote, the client failing over on its own; the time from the stop
//     to the first call answered by Remote, and the calls that failed meanwhile,
//     are recorded;
//  3. SetLocalReady(false) (its EndpointSlice says not ready): Horizon drops it
//     from the assignment, every call on Remote; StartLocal brings the server
//     back, and still every call lands on Remote;
//  4. SetLocalReady(true): calls return to Local; the time that took is recorded.
//
// Each step waits (up to Timeout) for calls to settle on the expected version,
// then makes Calls calls that must all land there. Expect, if set, is called after
// each change to wait for the assignment the client should get.
type Failover struct {
	// Call makes one call and returns the version that answered it.
	Call func(ctx context.Context) (version string, err error)
	// Local and Remote are the versions of the local and remote pods.
	Local, Remote string
	// StopLocal and StartLocal stop and restart the local pod's server.
	StopLocal  func() error
	StartLocal func() error
	// SetLocalReady sets the local pod's readiness in its EndpointSlice.
	SetLocalReady func(ctx context.Context, ready bool) error
	// Expect, if not nil, waits until the client is sent the assignment of step.
	Expect func(ctx context.Context, step FailoverStep) error
	// Calls is how many calls each step measures (default 100); Timeout bounds how
	// long a step waits for calls to settle (default 60 s).
	Calls   int
	Timeout time.Duration
	// Logf, if not nil, reports progress.
	Logf func(format string, args ...any)
}

// FailoverStep names a step of the scenario.
type FailoverStep string

// The steps of Failover.Run, in order.
const (
	StepLocal         FailoverStep = "local"           // all calls on Local
	StepLocalStopped  FailoverStep = "local stopped"   // failed over to Remote by the client
	StepLocalNotReady FailoverStep = "local not ready" // moved to Remote by Horizon
	// StepLocalRestarted: the local server is back but still not ready; calls stay
	// on Remote.
	StepLocalRestarted FailoverStep = "local restarted, not ready"
	StepLocalBack      FailoverStep = "local back" // returned to Local
)

// FailoverResult is what one step saw.
type FailoverResult struct {
	Step FailoverStep
	// Settle is how long calls took to land on the step's version after the change
	// (the failover time of StepLocalStopped, the return time of StepLocalBack).
	Settle time.Duration
	// Failed counts the calls that failed while settling; Tries counts all the
	// calls made while settling.
	Failed, Tries int
	// Counts are the versions that answered the Calls measured calls.
	Counts map[string]int
}

// String is the result as one line.
func (r FailoverResult) String() string {
	var counts []string
	for _, v := range slices.Sorted(maps.Keys(r.Counts)) {
		counts = append(counts, fmt.Sprintf("%s=%d", v, r.Counts[v]))
	}
	return fmt.Sprintf("%s: settled in %s after %d calls (%d failed); then %s",
		r.Step, r.Settle.Round(time.Millisecond), r.Tries, r.Failed, strings.Join(counts, " "))
}

// settleStreak is how many calls in a row must land on the expected version for
// calls to count as settled on it.
const settleStreak = 20

// Run runs the scenario and returns what each step saw; it stops at the first step
// whose calls do not all land where they should.
func (f Failover) Run(ctx context.Context) ([]FailoverResult, error) {
	if f.Call == nil || f.StopLocal == nil || f.StartLocal == nil || f.SetLocalReady == nil {
		return nil, errors.New("failover: Call, StopLocal, StartLocal and SetLocalReady are required")
	}
	if f.Calls <= 0 {
		f.Calls = 100
	}
	if f.Timeout <= 0 {
		f.Timeout = time.Minute
	}
	var out []FailoverResult
	step := func(s FailoverStep, want string, change func() error) error {
		start := time.Now()
		if change != nil {
			if err := change(); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		if f.Expect != nil {
			if err := f.Expect(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		r, err := f.settle(ctx, s, want, start)
		if err != nil {
			return err
		}
		r.Counts = map[string]int{}
		for range f.Calls {
			v, err := f.Call(ctx)
			if err != nil {
				v = "failed"
			}
			r.Counts[v]++
		}
		out = append(out, r)
		f.logf("%s", r)
		if r.Counts[want] != f.Calls {
			return fmt.Errorf("%s: %d of %d calls landed on %s, want all", s, r.Counts[want], f.Calls, want)
		}
		return nil
	}
	if err := step(StepLocal, f.Local, nil); err != nil {
		return out, err
	}
	if err := step(StepLocalStopped, f.Remote, f.StopLocal); err != nil {
		return out, err
	}
	if err := step(StepLocalNotReady, f.Remote, func() error { return f.SetLocalReady(ctx, false) }); err != nil {
		return out, err
	}
	// The server is back, still not ready: only Horizon keeps calls off it.
	if err := step(StepLocalRestarted, f.Remote, f.StartLocal); err != nil {
		return out, err
	}
	if err := step(StepLocalBack, f.Local, func() error { return f.SetLocalReady(ctx, true) }); err != nil {
		return out, err
	}
	return out, nil
}

// settle calls until settleStreak calls in a row land on want.
func (f Failover) settle(ctx context.Context, s FailoverStep, want string, start time.Time) (FailoverResult, error) {
	r := FailoverResult{Step: s}
	deadline := start.Add(f.Timeout)
	first := time.Time{}
	lastErr := ""
	for streak := 0; streak < settleStreak; {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("%s: calls did not settle on %s within %s (%d calls, %d failed, last error: %s)", s, want, f.Timeout, r.Tries, r.Failed, lastErr)
		}
		v, err := f.Call(ctx)
		r.Tries++
		switch {
		case err != nil:
			r.Failed++
			lastErr = err.Error()
			streak = 0
		case v == want:
			if streak == 0 {
				first = time.Now()
			}
			streak++
		default:
			streak = 0
		}
	}
	r.Settle = first.Sub(start)
	return r, nil
}

func (f Failover) logf(format string, args ...any) {
	if f.Logf != nil {
		f.Logf(format, args...)
	}
}
