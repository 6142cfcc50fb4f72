package clusterregistry_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/connrotation"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
)

// probeInterval keeps the stale tests fast; the default is a few seconds.
const probeInterval = 200 * time.Millisecond

func newStaleRegistry(t *testing.T, grace time.Duration) *clusterregistry.Registry {
	t.Helper()
	r, err := clusterregistry.New(clusterregistry.Options{
		DomainSuffix:  "cluster.local",
		Namespace:     "istio-system",
		SyncTimeout:   5 * time.Second,
		StaleGrace:    grace,
		ProbeInterval: probeInterval,
		Logger:        slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// startCluster starts an API server of the test's own, which it may stop.
func startCluster(t *testing.T, name string) *kubetest.Cluster {
	t.Helper()
	c, err := env.StartCluster(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Kill)
	return c
}

func clusterStatus(r *clusterregistry.Registry, id network.ClusterID) clusterregistry.ClusterStatus {
	for _, st := range r.Clusters() {
		if st.ID == id {
			return st
		}
	}
	return clusterregistry.ClusterStatus{}
}

// addresses returns the sorted addresses of host's ready endpoints on port in cluster id.
func addresses(r *clusterregistry.Registry, host string, port int32, id network.ClusterID) []string {
	var out []string
	for _, ep := range r.Endpoints(host, port)[id] {
		out = append(out, ep.Address)
	}
	sort.Strings(out)
	return out
}

// changeCounter counts the changes a subscriber is told of.
type changeCounter struct {
	mu sync.Mutex
	n  map[clusterregistry.Change]int
}

func countChanges(r *clusterregistry.Registry) *changeCounter {
	c := &changeCounter{n: map[clusterregistry.Change]int{}}
	r.Subscribe(func(ch clusterregistry.Change) {
		c.mu.Lock()
		c.n[ch]++
		c.mu.Unlock()
	})
	return c
}

func (c *changeCounter) count(ch clusterregistry.Change) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[ch]
}

// waitState waits until cluster id is in state, and returns its status.
func waitState(t *testing.T, r *clusterregistry.Registry, id network.ClusterID, state clusterregistry.SyncState, timeout time.Duration) clusterregistry.ClusterStatus {
	t.Helper()
	var st clusterregistry.ClusterStatus
	kubetest.Eventually(t, timeout, func() error {
		st = clusterStatus(r, id)
		if st.State != state {
			return fmt.Errorf("cluster %s is %q, want %q: %+v", id, st.State, state, st)
		}
		return nil
	})
	return st
}

// TestStaleClusterServedThenWithdrawnThenBack stops a synced cluster's API server: the
// cluster turns stale and its endpoints are still served; after the grace they are
// withdrawn and subscribers told; once the server is back, an endpoint added then is
// served and the cluster is synced again, with no restart of the registry.
func TestStaleClusterServedThenWithdrawnThenBack(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	kc := startCluster(t, "stale-withdraw")
	const host = "web.stale-sample.svc.cluster.local"
	svc := kubetest.Service{
		Namespace: "stale-sample", Name: "web", Ports: []corev1.ServicePort{httpPort(80, 8080)},
		Backends: []kubetest.Backend{{Pod: "web-1", IP: "10.5.0.1", Ready: true}},
	}
	if err := kubetest.Deploy(ctx, kc.Client, svc); err != nil {
		t.Fatal(err)
	}
	const grace = 2 * time.Second
	r := newStaleRegistry(t, grace)
	changes := countChanges(r)
	change := clusterregistry.Change{Host: host, Cluster: "remote"}
	var statusCalls atomic.Int64
	r.OnStatusChange(func() { statusCalls.Add(1) })
	r.SetCluster("remote", "test", kc.Config)
	waitSynced(t, r, "remote")
	if got := addresses(r, host, 80, "remote"); !slices.Equal(got, []string{"10.5.0.1"}) {
		t.Fatalf("endpoints = %v", got)
	}

	calls := statusCalls.Load()
	stopped := time.Now()
	kc.Kill()
	st := waitState(t, r, "remote", clusterregistry.StateStale, 10*time.Second)
	t.Logf("stale %s after the server stopped", time.Since(stopped).Round(time.Millisecond))
	if !st.Stale || st.StaleSince.IsZero() || st.Withdrawn || st.Endpoints != 1 || st.LastError == "" {
		t.Errorf("stale status = %+v", st)
	}
	if got := addresses(r, host, 80, "remote"); !slices.Equal(got, []string{"10.5.0.1"}) {
		t.Fatalf("stale cluster's endpoints not served during the grace: %v", got)
	}
	// Watchers are told after the state is recorded (and readable), so wait for it.
	kubetest.Eventually(t, 5*time.Second, func() error {
		if statusCalls.Load() == calls {
			return errors.New("status watchers not told the cluster went stale")
		}
		return nil
	})
	if !r.HasSynced() {
		t.Fatal("registry not synced because a synced cluster went stale")
	}
	seen := changes.count(change)

	kubetest.Eventually(t, grace+5*time.Second, func() error {
		if eps := r.Endpoints(host, 80); len(eps) != 0 {
			return fmt.Errorf("endpoints still served: %v", eps)
		}
		return nil
	})
	if since := time.Since(st.StaleSince); since < grace {
		t.Errorf("endpoints withdrawn %s after the cluster went stale, before the %s grace", since, grace)
	}
	if s := r.Services(host); len(s) != 0 || slices.Contains(r.Hosts(), host) {
		t.Errorf("withdrawn service still known: %v, hosts %v", s, r.Hosts())
	}
	st = clusterStatus(r, "remote")
	if st.State != clusterregistry.StateStale || !st.Withdrawn || st.Services != 0 || st.Endpoints != 0 {
		t.Errorf("withdrawn status = %+v", st)
	}
	// Subscribers are told after the shards change (and are readable): wait for it.
	kubetest.Eventually(t, 5*time.Second, func() error {
		if changes.count(change) == seen {
			return errors.New("subscriber not told of the withdrawal")
		}
		return nil
	})
	if !r.HasSynced() {
		t.Fatal("registry not synced because a synced cluster was withdrawn")
	}
	seen = changes.count(change)

	// Back, with an endpoint more.
	if err := kc.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	svc.Backends = append(svc.Backends, kubetest.Backend{Pod: "web-2", IP: "10.5.0.2", Ready: true})
	if err := kubetest.Deploy(ctx, kc.Client, svc); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	kubetest.Eventually(t, 15*time.Second, func() error {
		st := clusterStatus(r, "remote")
		if got := addresses(r, host, 80, "remote"); !slices.Equal(got, []string{"10.5.0.1", "10.5.0.2"}) || st.State != clusterregistry.StateSynced {
			return fmt.Errorf("endpoints %v, status %+v", got, st)
		}
		if st.Stale || !st.StaleSince.IsZero() || st.Withdrawn || st.Endpoints != 2 {
			return fmt.Errorf("status after recovery = %+v", st)
		}
		return nil
	})
	t.Logf("new endpoint served %s after the server was back", time.Since(restarted).Round(time.Millisecond))
	// Subscribers are told after the shards change (and are readable): wait for it.
	kubetest.Eventually(t, 5*time.Second, func() error {
		if changes.count(change) == seen {
			return errors.New("subscriber not told of the endpoints coming back")
		}
		return nil
	})
}

// TestStaleClusterWithoutGraceKeepsEndpoints: with no grace, a stale cluster's last
// known endpoints stay served for as long as it is down.
func TestStaleClusterWithoutGraceKeepsEndpoints(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	kc := startCluster(t, "stale-keep")
	const host = "web.keep-sample.svc.cluster.local"
	if err := kubetest.Deploy(ctx, kc.Client, kubetest.Service{
		Namespace: "keep-sample", Name: "web", Ports: []corev1.ServicePort{httpPort(80, 8080)},
		Backends: []kubetest.Backend{{Pod: "web-1", IP: "10.6.0.1", Ready: true}},
	}); err != nil {
		t.Fatal(err)
	}
	r := newStaleRegistry(t, 0)
	changes := countChanges(r)
	change := clusterregistry.Change{Host: host, Cluster: "remote"}
	r.SetCluster("remote", "test", kc.Config)
	waitSynced(t, r, "remote")
	seen := changes.count(change)

	kc.Kill()
	waitState(t, r, "remote", clusterregistry.StateStale, 10*time.Second)
	kubetest.Consistently(t, 3*time.Second, func() error {
		if got := addresses(r, host, 80, "remote"); !slices.Equal(got, []string{"10.6.0.1"}) {
			return fmt.Errorf("endpoints = %v", got)
		}
		if st := clusterStatus(r, "remote"); st.State != clusterregistry.StateStale || st.Withdrawn {
			return fmt.Errorf("status = %+v", st)
		}
		if !r.HasSynced() {
			return fmt.Errorf("registry not synced")
		}
		return nil
	})
	if n := changes.count(change); n != seen {
		t.Errorf("subscriber told of %d changes while nothing changed", n-seen)
	}

	// Back with nothing changed: synced again, and nobody told of a change.
	if err := kc.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitState(t, r, "remote", clusterregistry.StateSynced, 10*time.Second)
	if got := addresses(r, host, 80, "remote"); !slices.Equal(got, []string{"10.6.0.1"}) {
		t.Fatalf("endpoints after recovery = %v", got)
	}
	if n := changes.count(change); n != seen {
		t.Errorf("subscriber told of %d changes while nothing changed", n-seen)
	}
}

// partition is a dialer that can cut a client off its server: it closes the
// connections it made and refuses the next dials.
type partition struct {
	refuse atomic.Int64 // dials still to refuse
	dialer *connrotation.Dialer
}

func newPartition() *partition {
	p := &partition{}
	p.dialer = connrotation.NewDialer(func(ctx context.Context, netw, address string) (net.Conn, error) {
		if p.refuse.Add(-1) >= 0 {
			return nil, &net.OpError{Op: "dial", Net: netw, Err: syscall.ECONNREFUSED}
		}
		p.refuse.Store(0)
		return (&net.Dialer{}).DialContext(ctx, netw, address)
	})
	return p
}

// cut closes every connection and refuses n dials after that.
func (p *partition) cut(n int64) {
	p.refuse.Store(n)
	p.dialer.CloseAll()
}

func (p *partition) heal() { p.refuse.Store(0) }

// TestChangesWhileUnreachableServedOnReturn cuts the registry off a cluster whose API
// server keeps running, changes the service meanwhile, and heals: what is served then
// is the cluster's current state, with the endpoint deleted meanwhile gone.
func TestChangesWhileUnreachableServedOnReturn(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	const host = "web.partition-sample.svc.cluster.local"
	svc := kubetest.Service{
		Namespace: "partition-sample", Name: "web", Ports: []corev1.ServicePort{httpPort(80, 8080)},
		Backends: []kubetest.Backend{{Pod: "web-1", IP: "10.7.0.1", Ready: true}, {Pod: "web-2", IP: "10.7.0.2", Ready: true}},
	}
	if err := kubetest.Deploy(ctx, cluster.Client, svc); err != nil {
		t.Fatal(err)
	}
	r := newStaleRegistry(t, 0)
	changes := countChanges(r)
	change := clusterregistry.Change{Host: host, Cluster: "remote"}
	p := newPartition()
	cfg := rest.CopyConfig(cluster.Config)
	cfg.Dial = p.dialer.DialContext
	r.SetCluster("remote", "test", cfg)
	waitSynced(t, r, "remote")

	// A blip, one refused dial, is not an outage: the check that follows it succeeds.
	p.cut(1)
	kubetest.Eventually(t, 5*time.Second, func() error {
		if n := p.refuse.Load(); n > 0 {
			return fmt.Errorf("%d dials still to refuse", n)
		}
		return nil
	})
	kubetest.Consistently(t, time.Second, func() error {
		if st := clusterStatus(r, "remote"); st.State != clusterregistry.StateSynced {
			return fmt.Errorf("status after one refused dial: %+v", st)
		}
		return nil
	})

	p.cut(math.MaxInt64)
	waitState(t, r, "remote", clusterregistry.StateStale, 10*time.Second)
	// web-1 leaves, web-3 arrives, and another service appears: the registry cannot
	// see any of it.
	svc.Backends = []kubetest.Backend{svc.Backends[1], {Pod: "web-3", IP: "10.7.0.3", Ready: true}}
	if err := kubetest.Deploy(ctx, cluster.Client, svc); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Client.CoreV1().Pods("partition-sample").Delete(ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := kubetest.Deploy(ctx, cluster.Client, kubetest.Service{
		Namespace: "partition-sample", Name: "api", Ports: []corev1.ServicePort{httpPort(80, 8080)},
		Backends: []kubetest.Backend{{Pod: "api-1", IP: "10.7.1.1", Ready: true}},
	}); err != nil {
		t.Fatal(err)
	}
	if got := addresses(r, host, 80, "remote"); !slices.Equal(got, []string{"10.7.0.1", "10.7.0.2"}) {
		t.Fatalf("stale cluster serves %v, want its last known endpoints", got)
	}
	seen := changes.count(change)

	p.heal()
	kubetest.Eventually(t, 10*time.Second, func() error {
		if got := addresses(r, host, 80, "remote"); !slices.Equal(got, []string{"10.7.0.2", "10.7.0.3"}) {
			return fmt.Errorf("endpoints %v", got)
		}
		if got := addresses(r, "api.partition-sample.svc.cluster.local", 80, "remote"); !slices.Equal(got, []string{"10.7.1.1"}) {
			return fmt.Errorf("new service's endpoints %v", got)
		}
		if st := clusterStatus(r, "remote"); st.State != clusterregistry.StateSynced {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if changes.count(change) == seen {
		t.Error("subscriber not told of the changed endpoints")
	}
}

// TestStaleClusterLifecycleLeaksNothing takes a cluster stale and back, rotates the
// credentials of a stale cluster, and removes a stale cluster; afterwards no goroutine
// of any of it may remain.
func TestStaleClusterLifecycleLeaksNothing(t *testing.T) {
	ctx := t.Context()
	kc := startCluster(t, "stale-leak")
	const host = "web.stale-leak.svc.cluster.local"
	if err := kubetest.Deploy(ctx, kc.Client, kubetest.Service{
		Namespace: "stale-leak", Name: "web", Ports: []corev1.ServicePort{httpPort(80, 8080)},
		Backends: []kubetest.Backend{{Pod: "web-1", IP: "10.8.0.1", Ready: true}},
	}); err != nil {
		t.Fatal(err)
	}
	r := newStaleRegistry(t, 500*time.Millisecond)
	served := func(id network.ClusterID) {
		t.Helper()
		kubetest.Eventually(t, 15*time.Second, func() error {
			if st := clusterStatus(r, id); st.State != clusterregistry.StateSynced || st.Rotation != nil {
				return fmt.Errorf("status %+v", st)
			}
			if got := addresses(r, host, 80, id); !slices.Equal(got, []string{"10.8.0.1"}) {
				return fmt.Errorf("endpoints %v", got)
			}
			return nil
		})
	}
	// One cycle first, so that process-wide goroutines started once by client-go are
	// part of the baseline.
	r.SetCluster("warm-up", "test", kc.Config)
	served("warm-up")
	r.RemoveCluster("warm-up")
	baseline := goleak.IgnoreCurrent()
	restart := func() {
		t.Helper()
		if err := kc.Restart(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Stale, withdrawn, back.
	r.SetCluster("c", "test", kc.Config)
	served("c")
	kc.Kill()
	kubetest.Eventually(t, 10*time.Second, func() error {
		if st := clusterStatus(r, "c"); !st.Withdrawn {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	restart()
	served("c")

	// New credentials while stale: they take over once the server is back.
	kc.Kill()
	waitState(t, r, "c", clusterregistry.StateStale, 10*time.Second)
	r.SetCluster("c", "rotated", rest.CopyConfig(kc.Config))
	restart()
	served("c")
	if st := clusterStatus(r, "c"); st.Source != "rotated" {
		t.Fatalf("rotation not swapped in: %+v", st)
	}

	// Removed while stale.
	kc.Kill()
	waitState(t, r, "c", clusterregistry.StateStale, 10*time.Second)
	start := time.Now()
	r.RemoveCluster("c")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("removing a stale cluster took %s", took)
	}
	if len(r.Clusters()) != 0 || len(r.Endpoints(host, 80)) != 0 {
		t.Fatalf("removed cluster remains: %+v", r.Clusters())
	}
	// The restarted API server's process is waited for by a goroutine of kubetest.
	goleak.VerifyNone(t, baseline, goleak.IgnoreAnyFunction("github.com/horizon-mesh/horizon/cmd/localmesh.startProcess.func1"))
}

// TestHungClusterStaleThenBack freezes a synced cluster's API server with SIGSTOP: it
// accepts connections and answers nothing, and no request fails. A pause shorter than
// ProbeFailures probe timeouts is not an outage; a longer one makes the cluster stale
// (long before the client's own HTTP/2 health check would break the connection), its
// endpoints served meanwhile; once the server runs again the cluster is synced and
// follows changes.
func TestHungClusterStaleThenBack(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	kc := startCluster(t, "stale-hung")
	t.Cleanup(kc.Thaw) // before Kill: a frozen server must not outlive the test
	const host = "web.hung-sample.svc.cluster.local"
	svc := kubetest.Service{
		Namespace: "hung-sample", Name: "web", Ports: []corev1.ServicePort{httpPort(80, 8080)},
		Backends: []kubetest.Backend{{Pod: "web-1", IP: "10.8.0.1", Ready: true}},
	}
	if err := kubetest.Deploy(ctx, kc.Client, svc); err != nil {
		t.Fatal(err)
	}
	const probeTimeout = time.Second
	r, err := clusterregistry.New(clusterregistry.Options{
		DomainSuffix:  "cluster.local",
		Namespace:     "istio-system",
		SyncTimeout:   5 * time.Second,
		StaleGrace:    time.Hour,
		ProbeInterval: probeInterval,
		ProbeTimeout:  probeTimeout,
		ProbeFailures: 3,
		Logger:        slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	r.SetCluster("remote", "test", kc.Config)
	waitSynced(t, r, "remote")
	served := func(want ...string) error {
		if got := addresses(r, host, 80, "remote"); !slices.Equal(got, want) {
			return fmt.Errorf("endpoints = %v, want %v", got, want)
		}
		return nil
	}
	if err := served("10.8.0.1"); err != nil {
		t.Fatal(err)
	}

	// A pause of one and a half probe timeouts fails one probe at most: not stale.
	if err := kc.Freeze(); err != nil {
		t.Fatal(err)
	}
	notStale := func() error {
		if st := clusterStatus(r, "remote"); st.State != clusterregistry.StateSynced {
			return fmt.Errorf("a paused server shown %s: %+v", st.State, st)
		}
		return served("10.8.0.1")
	}
	kubetest.Consistently(t, probeTimeout*3/2, notStale)
	kc.Thaw()
	kubetest.Consistently(t, 2*probeTimeout, notStale)

	// Hung for good: stale within a few probe timeouts, endpoints kept.
	frozen := time.Now()
	if err := kc.Freeze(); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, r, "remote", clusterregistry.StateStale, 20*time.Second)
	t.Logf("hung server stale %s after it froze (probe every %s, timeout %s, 3 failures)",
		time.Since(frozen).Round(time.Millisecond), probeInterval, probeTimeout)
	if st.Withdrawn || st.Endpoints != 1 || !strings.Contains(st.LastError, "probes in a row failed") {
		t.Errorf("stale status = %+v", st)
	}
	kubetest.Consistently(t, time.Second, func() error { return served("10.8.0.1") })

	thawed := time.Now()
	kc.Thaw()
	waitState(t, r, "remote", clusterregistry.StateSynced, 20*time.Second)
	t.Logf("synced again %s after the server continued", time.Since(thawed).Round(time.Millisecond))
	if err := served("10.8.0.1"); err != nil {
		t.Fatal(err)
	}
	svc.Backends = append(svc.Backends, kubetest.Backend{Pod: "web-2", IP: "10.8.0.2", Ready: true})
	if err := kubetest.Deploy(ctx, kc.Client, svc); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 15*time.Second, func() error { return served("10.8.0.1", "10.8.0.2") })
}
