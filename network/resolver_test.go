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

	"github.com/spf13/pflag"
	"go.uber.org/goleak"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
)

// fakeLookup is a DNS server in memory: answers can be changed, and calls are counted.
type fakeLookup struct {
	mu      sync.Mutex
	answers map[string][]string // guarded by mu
	fail    map[string]bool     // guarded by mu
	calls   map[string]int      // guarded by mu
	gate    chan struct{}       // when set, every call waits for it to close
	running int                 // guarded by mu; calls under way
	maxRun  int                 // guarded by mu; most calls under way at once
}

func newFakeLookup(answers map[string][]string) *fakeLookup {
	return &fakeLookup{answers: answers, fail: map[string]bool{}, calls: map[string]int{}}
}

func (f *fakeLookup) lookup(ctx context.Context, host string) ([]string, error) {
	f.mu.Lock()
	f.calls[host]++
	f.running++
	f.maxRun = max(f.maxRun, f.running)
	gate := f.gate
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
	}()
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

func (f *fakeLookup) inflight() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running
}

func (f *fakeLookup) maxInflight() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxRun
}

func TestResolverOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    network.ResolverOptions
		wantErr string
	}{
		{name: "defaults", opts: network.ResolverOptions{}},
		{name: "long TTL", opts: network.ResolverOptions{TTL: time.Hour}},
		{name: "short TTL", opts: network.ResolverOptions{TTL: time.Second}, wantErr: "--gateway-dns-refresh-interval: must be at least 30s, got 1s"},
		{name: "short TTL allowed", opts: network.ResolverOptions{TTL: time.Millisecond, AllowShortTTL: true}},
		{name: "negative TTL", opts: network.ResolverOptions{TTL: -time.Second, AllowShortTTL: true}, wantErr: "--gateway-dns-refresh-interval: must be at least 30s, got -1s"},
		{name: "negative lookup timeout", opts: network.ResolverOptions{LookupTimeout: -1}, wantErr: "resolver lookup timeout -1ns: must not be negative"},
		{name: "negative max hosts", opts: network.ResolverOptions{MaxHosts: -1}, wantErr: "--gateway-dns-max-names: must not be negative, got -1"},
		{name: "negative max addresses", opts: network.ResolverOptions{MaxAddrs: -1}, wantErr: "--gateway-dns-max-addresses: must not be negative, got -1"},
		{name: "negative concurrency", opts: network.ResolverOptions{Concurrency: -1}, wantErr: "--gateway-dns-concurrency: must not be negative, got -1"},
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

// runResolver runs r until the test ends.
func runResolver(t *testing.T, r *network.Resolver) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func TestResolverLookup(t *testing.T) {
	dns := newFakeLookup(map[string][]string{
		"gw.example.com": {"203.0.113.9", "203.0.113.8", "203.0.113.9", "::ffff:203.0.113.7", "junk"},
	})
	r, err := network.NewResolver(network.ResolverOptions{Lookup: dns.lookup, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	// Before Run, a new name is only queued.
	if got := r.Lookup("gw.example.com"); got != nil {
		t.Errorf("first Lookup = %v, want none before an answer", got)
	}
	if n := dns.count("gw.example.com"); n != 0 {
		t.Errorf("Lookup looked up %d times itself", n)
	}
	runResolver(t, r)
	want := []string{"203.0.113.7", "203.0.113.8", "203.0.113.9"}
	kubetest.Eventually(t, 5*time.Second, func() error {
		if got := r.Lookup("gw.example.com"); !slices.Equal(got, want) {
			return fmt.Errorf("Lookup = %v, want %v", got, want)
		}
		return nil
	})
	if n := dns.count("gw.example.com"); n != 1 {
		t.Errorf("%d look-ups of a cached host, want 1", n)
	}
	if got := r.Lookup("192.0.2.1"); !slices.Equal(got, []string{"192.0.2.1"}) {
		t.Errorf("Lookup(IP) = %v", got)
	}
	if n := dns.count("192.0.2.1"); n != 0 {
		t.Errorf("an IP address was looked up %d times", n)
	}
	r.Lookup("gone.example.com")
	kubetest.Eventually(t, 5*time.Second, func() error {
		if n := dns.count("gone.example.com"); n != 1 {
			return fmt.Errorf("%d look-ups of an unknown host", n)
		}
		return nil
	})
	if got := r.Lookup("gone.example.com"); got != nil {
		t.Errorf("Lookup(unknown) = %v", got)
	}
	// Callers get their own copy.
	r.Lookup("gw.example.com")[0] = "mine"
	if got := r.Lookup("gw.example.com")[0]; got != "203.0.113.7" {
		t.Errorf("cache changed through a returned slice: %v", got)
	}
}

// TestResolverGatewaysDoNotWaitOnDNS is the slow-DNS push: 20 gateway names whose
// look-ups block. Gateways, as a push calls it, must return while they are blocked,
// with at most Concurrency look-ups running; their answers then reach OnChange.
func TestResolverGatewaysDoNotWaitOnDNS(t *testing.T) {
	const names, concurrency = 20, 4
	dns := newFakeLookup(map[string][]string{})
	dns.gate = make(chan struct{})
	var gws []*meshv1alpha1.Network_IstioNetworkGateway
	for i := range names {
		host := fmt.Sprintf("gw%02d.example.com", i)
		dns.set(host, fmt.Sprintf("203.0.113.%d", i+1))
		gws = append(gws, addrGW(host, 15443))
	}
	nets, err := network.Compile(mesh(nets{"network2": {Gateways: gws}}))
	if err != nil {
		t.Fatal(err)
	}
	changed := make(chan struct{}, 1)
	r, err := network.NewResolver(network.ResolverOptions{
		Lookup: dns.lookup, Concurrency: concurrency, Logger: testLogger(t),
		OnChange: func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runResolver(t, r)

	// Returns with every look-up still blocked on the gate.
	if got := nets.Gateways(nil, r.Lookup); len(got) != 0 {
		t.Errorf("gateways before any answer: %v", got)
	}
	kubetest.Eventually(t, 5*time.Second, func() error {
		if n := dns.inflight(); n != concurrency {
			return fmt.Errorf("%d look-ups running, want %d", n, concurrency)
		}
		return nil
	})
	// A second push while the look-ups are blocked neither waits nor starts more.
	if got := nets.Gateways(nil, r.Lookup); len(got) != 0 {
		t.Errorf("gateways before any answer: %v", got)
	}
	if n := dns.maxInflight(); n > concurrency {
		t.Errorf("%d look-ups ran at once, want at most %d", n, concurrency)
	}
	select {
	case <-changed:
		t.Fatal("OnChange before any answer")
	default:
	}

	close(dns.gate)
	<-changed
	kubetest.Eventually(t, 5*time.Second, func() error {
		if got := nets.Gateways(nil, r.Lookup); len(got) != names {
			return fmt.Errorf("%d gateways, want %d", len(got), names)
		}
		return nil
	})
	for i := range names {
		if n := dns.count(fmt.Sprintf("gw%02d.example.com", i)); n != 1 {
			t.Errorf("gw%02d looked up %d times, want 1", i, n)
		}
	}
	if n := dns.maxInflight(); n > concurrency {
		t.Errorf("%d look-ups ran at once, want at most %d", n, concurrency)
	}
}

func TestResolverMaxAddrs(t *testing.T) {
	var answer []string
	for i := 40; i > 0; i-- {
		answer = append(answer, fmt.Sprintf("192.0.2.%d", i))
	}
	dns := newFakeLookup(map[string][]string{"many.example.com": answer})
	r, err := network.NewResolver(network.ResolverOptions{Lookup: dns.lookup, MaxAddrs: 16, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	runResolver(t, r)
	var want []string
	for i := 1; i <= 16; i++ {
		want = append(want, fmt.Sprintf("192.0.2.%d", i))
	}
	kubetest.Eventually(t, 5*time.Second, func() error {
		if got := r.Lookup("many.example.com"); !slices.Equal(got, want) {
			return fmt.Errorf("Lookup = %v, want %v", got, want)
		}
		return nil
	})
}

func TestResolverMaxHosts(t *testing.T) {
	dns := newFakeLookup(map[string][]string{
		"a.example.com": {"192.0.2.1"}, "b.example.com": {"192.0.2.2"}, "c.example.com": {"192.0.2.3"},
	})
	r, err := network.NewResolver(network.ResolverOptions{Lookup: dns.lookup, MaxHosts: 2, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	runResolver(t, r)
	for _, h := range []string{"a.example.com", "b.example.com", "c.example.com"} {
		r.Lookup(h)
	}
	kubetest.Eventually(t, 5*time.Second, func() error {
		if got := r.Lookup("b.example.com"); !slices.Equal(got, []string{"192.0.2.2"}) {
			return fmt.Errorf("Lookup(b) = %v", got)
		}
		return nil
	})
	if got := r.Lookup("c.example.com"); got != nil {
		t.Errorf("Lookup past MaxHosts = %v, want none", got)
	}
	if _, ok := r.Cached()["c.example.com"]; ok || len(r.Cached()) != 2 {
		t.Errorf("cached past MaxHosts: %v", r.Cached())
	}
	if n := dns.count("c.example.com"); n != 0 {
		t.Errorf("a host past MaxHosts was looked up %d times", n)
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
	// The first answers arrive in the background and are changes.
	kubetest.Eventually(t, 5*time.Second, func() error {
		if c := r.Cached(); len(c["gw.example.com"]) == 0 || len(c["idle.example.com"]) == 0 || changeCount() != 2 {
			return fmt.Errorf("cache %v after %d changes", c, changeCount())
		}
		return nil
	})

	// Refreshes with the same answers change nothing.
	start := dns.count("gw.example.com")
	kubetest.Eventually(t, 5*time.Second, func() error {
		r.Lookup("gw.example.com") // in use
		if n := dns.count("gw.example.com") - start; n < 3 {
			return fmt.Errorf("%d refreshes so far", n)
		}
		return nil
	})
	if n := changeCount(); n != 2 {
		t.Errorf("OnChange called %d times with unchanged answers", n-2)
	}

	// A host nobody asks for is dropped after a few TTLs; one in use is kept.
	kubetest.Eventually(t, 5*time.Second, func() error {
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
	kubetest.Eventually(t, 5*time.Second, func() error {
		got := r.Lookup("gw.example.com")
		if !slices.Equal(got, []string{"192.0.2.2", "192.0.2.3"}) || changeCount() == 2 {
			return fmt.Errorf("Lookup = %v after %d changes", got, changeCount())
		}
		return nil
	})

	// A failing refresh keeps the last answer and reports nothing.
	dns.setFail("gw.example.com", true)
	before, failStart := changeCount(), dns.count("gw.example.com")
	kubetest.Eventually(t, 5*time.Second, func() error {
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
	kubetest.Eventually(t, 5*time.Second, func() error {
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

// TestResolverFlags: the flags set the bounds, with the defaults documented for them.
func TestResolverFlags(t *testing.T) {
	var o network.ResolverOptions
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	o.AddFlags(fs)
	if o.TTL != network.MinResolverTTL || o.Concurrency != network.DefaultResolverConcurrency ||
		o.MaxHosts != network.DefaultResolverMaxHosts || o.MaxAddrs != network.DefaultResolverMaxAddrs {
		t.Errorf("defaults = %+v", o)
	}
	if err := fs.Parse([]string{"--gateway-dns-refresh-interval=2m", "--gateway-dns-concurrency=3",
		"--gateway-dns-max-names=40", "--gateway-dns-max-addresses=5"}); err != nil {
		t.Fatal(err)
	}
	if o.TTL != 2*time.Minute || o.Concurrency != 3 || o.MaxHosts != 40 || o.MaxAddrs != 5 {
		t.Errorf("options = %+v", o)
	}
	if err := fs.Parse([]string{"--gateway-dns-refresh-interval=5s", "--gateway-dns-max-names=-1"}); err != nil {
		t.Fatal(err)
	}
	_, err := network.NewResolver(o)
	for _, want := range []string{"--gateway-dns-refresh-interval: must be at least 30s, got 5s", "--gateway-dns-max-names: must not be negative, got -1"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want it to contain %q", err, want)
		}
	}
}

// TestResolverStats: look-ups, failures, cached names and names refused past the cap
// are counted.
func TestResolverStats(t *testing.T) {
	dns := newFakeLookup(map[string][]string{"a.example.com": {"192.0.2.1"}, "b.example.com": {"192.0.2.2"}})
	dns.setFail("b.example.com", true)
	r, err := network.NewResolver(network.ResolverOptions{Lookup: dns.lookup, MaxHosts: 2, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	runResolver(t, r)
	r.Lookup("a.example.com")
	r.Lookup("b.example.com")
	r.Lookup("c.example.com")
	r.Lookup("c.example.com")
	r.Lookup("192.0.2.9") // an address is not looked up, nor counted
	kubetest.Eventually(t, 5*time.Second, func() error {
		want := network.ResolverStats{Lookups: 2, Failures: 1, Names: 2, Refused: 2}
		if got := r.Stats(); got != want {
			return fmt.Errorf("Stats() = %+v, want %+v", got, want)
		}
		return nil
	})
}
