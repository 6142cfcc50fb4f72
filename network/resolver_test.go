package network_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/horizon-mesh/horizon/network"
)

// fakeLookup is a DNS server in memory: answers can be changed, and calls are counted.
type fakeLookup struct {
	mu      sync.Mutex
	answers map[string][]string // guarded by mu
	fail    map[string]bool     // guarded by mu
	calls   map[string]int      // guarded by mu
	gate    chan struct{}       // when set, every call waits for it to close
}

func newFakeLookup(answers map[string][]string) *fakeLookup {
	return &fakeLookup{answers: answers, fail: map[string]bool{}, calls: map[string]int{}}
}

func (f *fakeLookup) lookup(ctx context.Context, host string) ([]string, error) {
	f.mu.Lock()
	f.calls[host]++
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail[host] {
		return nil, errors.New("server misbehaving")
	}
	if a, ok := f.answers[host]; ok {
		return slices.Clone(a), nil
	}
	return nil, fmt.Errorf("lookup %s: no such host", host)
}

func (f *fakeLookup) set(host string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[host] = addrs
}

func (f *fakeLookup) setFail(host string, fail bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[host] = fail
}

func (f *fakeLookup) count(host string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[host]
}

// eventually calls cond until it returns nil, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
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

func TestResolverOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    network.ResolverOptions
		wantErr string
	}{
		{name: "defaults", opts: network.ResolverOptions{}},
		{name: "long TTL", opts: network.ResolverOptions{TTL: time.Hour}},
		{name: "short TTL", opts: network.ResolverOptions{TTL: time.Second}, wantErr: "resolver TTL 1s: must be at least 30s"},
		{name: "short TTL allowed", opts: network.ResolverOptions{TTL: time.Millisecond, AllowShortTTL: true}},
		{name: "negative TTL", opts: network.ResolverOptions{TTL: -time.Second, AllowShortTTL: true}, wantErr: "resolver TTL -1s: must be at least 30s"},
		{name: "negative lookup timeout", opts: network.ResolverOptions{LookupTimeout: -1}, wantErr: "resolver lookup timeout -1ns: must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := network.NewResolver(tc.opts)
			if tc.wantErr == "" {
				if err != nil || r == nil {
					t.Fatalf("NewResolver = %v, %v", r, err)
				}
				return
			}
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("error = %v, want %q", err, tc.wantErr)
			}
			if r != nil {
				t.Error("a Resolver with an error")
			}
		})
	}
}

func TestResolverLookup(t *testing.T) {
	dns := newFakeLookup(map[string][]string{
		"gw.example.com": {"203.0.113.9", "203.0.113.8", "203.0.113.9", "::ffff:203.0.113.7", "junk"},
	})
	r, err := network.NewResolver(network.ResolverOptions{Lookup: dns.lookup, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		host      string
		want      []string
		wantCalls int // look-ups of host so far
	}{
		{name: "first call resolves", host: "gw.example.com", want: []string{"203.0.113.7", "203.0.113.8", "203.0.113.9"}, wantCalls: 1},
		{name: "second call is cached", host: "gw.example.com", want: []string{"203.0.113.7", "203.0.113.8", "203.0.113.9"}, wantCalls: 1},
		{name: "IP address as is", host: "192.0.2.1", want: []string{"192.0.2.1"}, wantCalls: 0},
		{name: "unknown host", host: "gone.example.com", want: nil, wantCalls: 1},
		{name: "unknown host is not asked again before a refresh", host: "gone.example.com", want: nil, wantCalls: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := r.Lookup(tc.host)
			if !slices.Equal(got, tc.want) {
				t.Errorf("Lookup(%q) = %v, want %v", tc.host, got, tc.want)
			}
			if n := dns.count(tc.host); n != tc.wantCalls {
				t.Errorf("%d look-ups of %q, want %d", n, tc.host, tc.wantCalls)
			}
		})
	}
	// Callers get their own copy.
	r.Lookup("gw.example.com")[0] = "mine"
	if got := r.Lookup("gw.example.com")[0]; got != "203.0.113.7" {
		t.Errorf("cache changed through a returned slice: %v", got)
	}
}

func TestResolverConcurrentFirstLookup(t *testing.T) {
	dns := newFakeLookup(map[string][]string{"gw.example.com": {"192.0.2.1"}})
	dns.gate = make(chan struct{})
	r, err := network.NewResolver(network.ResolverOptions{Lookup: dns.lookup, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([][]string, 8)
	for i := range results {
		wg.Go(func() { results[i] = r.Lookup("gw.example.com") })
	}
	eventually(t, 5*time.Second, func() error {
		if dns.count("gw.example.com") == 0 {
			return errors.New("no look-up started")
		}
		return nil
	})
	close(dns.gate)
	wg.Wait()
	if n := dns.count("gw.example.com"); n != 1 {
		t.Errorf("%d look-ups for concurrent first calls, want 1", n)
	}
	for i, got := range results {
		if !slices.Equal(got, []string{"192.0.2.1"}) {
			t.Errorf("caller %d got %v", i, got)
		}
	}
}

func TestResolverRun(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const ttl = 40 * time.Millisecond
	dns := newFakeLookup(map[string][]string{
		"gw.example.com":   {"192.0.2.1"},
		"idle.example.com": {"192.0.2.50"},
	})
	var mu sync.Mutex
	changes := 0
	onChange := func() {
		mu.Lock()
		defer mu.Unlock()
		changes++
	}
	changeCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return changes
	}
	r, err := network.NewResolver(network.ResolverOptions{TTL: ttl, AllowShortTTL: true, Lookup: dns.lookup, OnChange: onChange, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()

	r.Lookup("gw.example.com")
	r.Lookup("idle.example.com")

	// Refreshes with the same answers change nothing.
	start := dns.count("gw.example.com")
	eventually(t, 5*time.Second, func() error {
		r.Lookup("gw.example.com") // in use
		if n := dns.count("gw.example.com") - start; n < 3 {
			return fmt.Errorf("%d refreshes so far", n)
		}
		return nil
	})
	if n := changeCount(); n != 0 {
		t.Errorf("OnChange called %d times with unchanged answers", n)
	}

	// A host nobody asks for is dropped after a few TTLs; one in use is kept.
	eventually(t, 5*time.Second, func() error {
		r.Lookup("gw.example.com")
		if _, ok := r.Cached()["idle.example.com"]; ok {
			return errors.New("idle host still cached")
		}
		return nil
	})
	if _, ok := r.Cached()["gw.example.com"]; !ok {
		t.Fatal("host in use was dropped")
	}

	// A changed answer is picked up and reported.
	dns.set("gw.example.com", "192.0.2.3", "192.0.2.2")
	eventually(t, 5*time.Second, func() error {
		got := r.Lookup("gw.example.com")
		if !slices.Equal(got, []string{"192.0.2.2", "192.0.2.3"}) || changeCount() == 0 {
			return fmt.Errorf("Lookup = %v after %d changes", got, changeCount())
		}
		return nil
	})

	// A failing refresh keeps the last answer and reports nothing.
	dns.setFail("gw.example.com", true)
	before, failStart := changeCount(), dns.count("gw.example.com")
	eventually(t, 5*time.Second, func() error {
		got := r.Lookup("gw.example.com")
		if !slices.Equal(got, []string{"192.0.2.2", "192.0.2.3"}) {
			t.Fatalf("answer lost on a failed refresh: %v", got)
		}
		if n := dns.count("gw.example.com") - failStart; n < 3 {
			return fmt.Errorf("%d failed refreshes so far", n)
		}
		return nil
	})
	if n := changeCount(); n != before {
		t.Errorf("OnChange called on failed refreshes: %d → %d", before, n)
	}

	// Once DNS answers again, an empty answer is a change too.
	dns.setFail("gw.example.com", false)
	dns.set("gw.example.com")
	eventually(t, 5*time.Second, func() error {
		if got := r.Lookup("gw.example.com"); len(got) != 0 {
			return fmt.Errorf("Lookup = %v, want none", got)
		}
		return nil
	})
	if strings.Contains(fmt.Sprint(r.Cached()), "idle") {
		t.Errorf("idle host came back: %v", r.Cached())
	}
}

// testLogger writes log lines to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}
