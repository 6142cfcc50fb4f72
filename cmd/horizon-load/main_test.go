package main

import (
	"bytes"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/horizon-mesh/horizon/eds"
	"github.com/horizon-mesh/horizon/network"
)

// TestRunSmall runs the whole tool against real API servers and a real horizon with
// tiny numbers: with two clusters in the default shape (a connection per proxy, state
// of the world) and full mesh, and with three clusters, half the proxies on delta and
// eight on each connection. Every proxy must be served, the change must reach every
// proxy that watches the changed service, and each kind of proxy must be reported
// apart with the bytes it was sent; churn must converge, every cluster must be
// reported synced, and nothing may be rejected.
func TestRunSmall(t *testing.T) {
	bin := buildHorizon(t)
	baseline := goleak.IgnoreCurrent()
	for _, tc := range []struct {
		name          string
		clusters      int
		proxies       int
		fullMesh      bool
		perConn       int
		deltaFraction float64
		wantConns     int
		wantDelta     int
	}{
		{"two clusters, defaults, full mesh", 2, 20, true, 1, 0, 20, 0},
		{"three clusters, multiplexed, half delta", 3, 30, false, 8, 0.5, 4, 15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaultConfig()
			if cfg.ProxiesPerConn != 1 || cfg.DeltaFraction != 0 || cfg.FullMesh {
				t.Fatalf("defaults: %d proxies per connection, delta fraction %g, full mesh %v; want 1, 0 and false (Envoy's shape)",
					cfg.ProxiesPerConn, cfg.DeltaFraction, cfg.FullMesh)
			}
			cfg.Clusters = tc.clusters
			cfg.Services, cfg.Endpoints, cfg.Proxies = 2, 2, tc.proxies
			if tc.fullMesh {
				cfg.Services, cfg.FullMesh = 3, true
			} else {
				cfg.Watch = 2
			}
			cfg.ProxiesPerConn, cfg.DeltaFraction = tc.perConn, tc.deltaFraction
			cfg.Changes = 1
			cfg.ChurnRate, cfg.ChurnDuration = 10, time.Second
			cfg.ChangeTimeout, cfg.ServeTimeout, cfg.Duration = 10*time.Second, 20*time.Second, 90*time.Second
			cfg.Settle = 100 * time.Millisecond
			cfg.Horizon = bin
			cfg.Markdown = filepath.Join(t.TempDir(), "results.md")
			var progress, out bytes.Buffer
			cfg.Progress = &progress

			rep, err := run(t.Context(), cfg, &out)
			if err != nil {
				t.Fatalf("run: %v\nprogress:\n%s", err, progress.String())
			}
			t.Logf("report:\n%s", out.String())
			checkSmallRun(t, cfg, rep, tc.wantConns, tc.wantDelta, out.String())
		})
	}
	goleak.VerifyNone(t, baseline)
}

// buildHorizon builds cmd/horizon into a temporary directory and returns its path.
func buildHorizon(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "horizon")
	build := exec.Command("go", "build", "-o", bin, "../horizon")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build horizon: %v\n%s", err, out)
	}
	return bin
}

// checkSmallRun checks a TestRunSmall run's report.
func checkSmallRun(t *testing.T, cfg config, rep *report, wantConns, wantDelta int, out string) {
	t.Helper()
	n := cfg.Proxies
	if rep.Served != n {
		t.Errorf("served %d of %d proxies", rep.Served, n)
	}
	if rep.Conns != wantConns || rep.DeltaProxies != wantDelta {
		t.Errorf("%d connections and %d delta proxies, want %d and %d", rep.Conns, rep.DeltaProxies, wantConns, wantDelta)
	}
	if rep.ServeTimesSotW.N != n-wantDelta || rep.ServeTimesDelta.N != wantDelta {
		t.Errorf("served %d state-of-the-world and %d delta proxies, want %d and %d", rep.ServeTimesSotW.N, rep.ServeTimesDelta.N, n-wantDelta, wantDelta)
	}
	if len(rep.Changes) != 1 {
		t.Fatalf("%d changes timed, want 1", len(rep.Changes))
	}
	ch := rep.Changes[0]
	if ch.Watchers != n || ch.Reached != ch.Watchers {
		t.Errorf("change reached %d of %d watching proxies, want all %d proxies (each watches every service)", ch.Reached, ch.Watchers, n)
	}
	if rep.ChangeTimeouts != 0 || rep.ChangeLatency.N != n || rep.ChangeLatencySotW.N != n-wantDelta || rep.ChangeLatencyDelta.N != wantDelta {
		t.Errorf("%d change timeouts, %d latencies (%d state of the world, %d delta)", rep.ChangeTimeouts, rep.ChangeLatency.N,
			rep.ChangeLatencySotW.N, rep.ChangeLatencyDelta.N)
	}
	// Every watcher is sent at least the changed assignment; a delta proxy only that
	// one resource.
	if ch.ChangedSize <= 0 || !(ch.Bytes.SotW >= float64(ch.ChangedSize)) || !(ch.Resources.SotW >= 1) {
		t.Errorf("change: assignment of %d bytes; a state-of-the-world watcher received %.0f bytes in %.1f resources",
			ch.ChangedSize, ch.Bytes.SotW, ch.Resources.SotW)
	}
	if wantDelta > 0 && (!(ch.Bytes.Delta >= float64(ch.ChangedSize)) || ch.Resources.Delta != 1) {
		t.Errorf("change: assignment of %d bytes; a delta watcher received %.0f bytes in %.1f resources, want 1",
			ch.ChangedSize, ch.Bytes.Delta, ch.Resources.Delta)
	}
	if !(rep.ServeBytes.SotW > 0) || (wantDelta > 0) != !math.IsNaN(rep.ServeBytes.Delta) {
		t.Errorf("bytes per proxy until served: %+v", rep.ServeBytes)
	}
	// A full-mesh state-of-the-world proxy subscribes to CDS too.
	if sotw := n - wantDelta; cfg.FullMesh && rep.CDSResponses < sotw || !cfg.FullMesh && rep.CDSResponses != 0 {
		t.Errorf("the fleet received %d CDS responses; full mesh %v with %d state-of-the-world proxies", rep.CDSResponses, cfg.FullMesh, sotw)
	}
	if rep.NACKs != 0 || rep.ClientNACKs != 0 {
		t.Errorf("NACKs: horizon counted %v, proxies sent %d", rep.NACKs, rep.ClientNACKs)
	}
	if rep.Churn == nil || !rep.Churn.Converged || rep.Churn.Writes == 0 {
		t.Errorf("churn: %+v", rep.Churn)
	}
	if rep.MemBefore.RSS == 0 || rep.MemWith.Heap == 0 || rep.Pushes == 0 {
		t.Errorf("memory %+v → %+v, %v pushes: want readings", rep.MemBefore, rep.MemWith, rep.Pushes)
	}
	if len(rep.ClusterSyncs) != cfg.Clusters {
		t.Errorf("%d clusters reported synced, want %d: %+v", len(rep.ClusterSyncs), cfg.Clusters, rep.ClusterSyncs)
	}
	for c, s := range rep.ClusterSyncs {
		// Services counts the API server's own "kubernetes" Service too.
		if s.ID != clusterName(c) || s.State != "synced" || s.Services != cfg.Services+1 || s.Endpoints != cfg.Services*cfg.Endpoints {
			t.Errorf("cluster %d: %+v; want %s synced with %d services and %d endpoints", c, s, clusterName(c), cfg.Services+1, cfg.Services*cfg.Endpoints)
		}
	}
	if rep.SyncToReady < 0 || rep.SyncToServed < rep.SyncToReady || rep.ReadyToServed < rep.SyncToServed {
		t.Errorf("last sync → ready %s, → served %s; start → served %s: want 0 ≤ ready ≤ served ≤ start → served",
			rep.SyncToReady, rep.SyncToServed, rep.ReadyToServed)
	}
	if !rep.OK() {
		t.Error("report is not OK")
	}
	for _, want := range []string{
		fmt.Sprintf("%d clusters on %d networks", cfg.Clusters, cfg.Clusters),
		fmt.Sprintf("%-15s synced at", clusterName(cfg.Clusters-1)),
		"last sync →     ready",
		"no proxies      heap",
		fmt.Sprintf("served          %d of %d proxies", n, n),
		fmt.Sprintf("reached %d/%d", n, n),
		fmt.Sprintf("state of world %d pairs", n-wantDelta),
		fmt.Sprintf("state of world %d served", n-wantDelta),
		"timeouts        0",
		"horizon_xds_nacks_total 0",
		"horizon_xds_refused_requests_total 0, horizon_xds_throttled_requests_total 0", // the default limits let the fleet in
		"Result: every proxy converged and every change reached every watching proxy",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	md, err := os.ReadFile(cfg.Markdown)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf("| proxies served | %d / %d | all |", n, n),
		"| change timeouts | 0 | 0 |",
		"| last cluster synced → ready / serving every endpoint |",
		"| Go heap / RSS with no proxies |",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestExpected(t *testing.T) {
	for _, tc := range []struct {
		name    string
		network int
		counts  []int
		want    sig
	}{
		{"local and remote", 0, []int{10, 10}, sig{endpoints: 11, weight: 20}},
		{"remote added", 0, []int{10, 11}, sig{endpoints: 11, weight: 21}},
		{"remote added, seen from the remote network", 1, []int{10, 11}, sig{endpoints: 12, weight: 21}},
		{"no remote endpoints: no gateway", 0, []int{10, 0}, sig{endpoints: 10, weight: 10}},
		{"three networks: a gateway for each other network", 0, []int{10, 10, 10}, sig{endpoints: 12, weight: 30}},
		{"three networks, cluster2 added, seen from network3", 2, []int{10, 11, 10}, sig{endpoints: 12, weight: 31}},
		{"three networks, cluster2 empty", 2, []int{10, 0, 10}, sig{endpoints: 11, weight: 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := expected(tc.network, tc.counts); got != tc.want {
				t.Errorf("expected(%d, %v) = %+v, want %+v", tc.network, tc.counts, got, tc.want)
			}
		})
	}
}

func TestSigOf(t *testing.T) {
	ep := func(w uint32) *endpointv3.LbEndpoint {
		e := &endpointv3.LbEndpoint{}
		if w > 0 {
			e.LoadBalancingWeight = wrapperspb.UInt32(w)
		}
		return e
	}
	cla := &endpointv3.ClusterLoadAssignment{Endpoints: []*endpointv3.LocalityLbEndpoints{
		{LbEndpoints: []*endpointv3.LbEndpoint{ep(1), ep(0)}},
		{LbEndpoints: []*endpointv3.LbEndpoint{ep(10)}},
	}}
	if got, want := sigOf(cla), (sig{endpoints: 3, weight: 12}); got != want {
		t.Errorf("sigOf = %+v, want %+v (an unset weight counts 1)", got, want)
	}
}

func TestSpecs(t *testing.T) {
	const n, k, services = 1200, 20, 100
	for _, tc := range []struct {
		name       string
		networks   int
		perNetwork []int
		delta      []int
	}{
		{"two networks: even on network1, odd on network2", 2, []int{600, 600}, []int{300, 300}},
		{"three networks", 3, []int{400, 400, 400}, []int{200, 200, 200}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp := specs(n, k, services, tc.networks, 0.5, true)
			watched := map[string]int{}
			perNetwork, delta := make([]int, tc.networks), make([]int, tc.networks)
			for _, s := range sp {
				if s.network != s.index%tc.networks {
					t.Fatalf("proxy %d on network %d", s.index, s.network)
				}
				perNetwork[s.network]++
				if s.cds == s.delta {
					t.Fatalf("proxy %d: delta %v, CDS %v; want CDS for every state-of-the-world proxy only", s.index, s.delta, s.cds)
				}
				if s.delta {
					delta[s.network]++
				}
				seen := map[string]bool{}
				for _, name := range s.names {
					if seen[name] {
						t.Fatalf("proxy %d watches %s twice", s.index, name)
					}
					seen[name] = true
					watched[name]++
				}
			}
			if len(watched) != services {
				t.Errorf("%d services watched, want all %d", len(watched), services)
			}
			if !slices.Equal(perNetwork, tc.perNetwork) || !slices.Equal(delta, tc.delta) {
				t.Errorf("per network %v, delta %v; want %v and %v", perNetwork, delta, tc.perNetwork, tc.delta)
			}
			if id := sp[3].node().GetId(); id != "sidecar~100.64.0.3~load-3.loadtest~loadtest.svc.cluster.local" {
				t.Errorf("node id %q", id)
			}
			if got, want := sp[3].node().GetMetadata().GetFields()[eds.MetaNetwork].GetStringValue(), networkName(3%tc.networks); got != want {
				t.Errorf("proxy 3 on network %q, want %q", got, want)
			}
		})
	}
}

func TestMeshNetworks(t *testing.T) {
	// Two clusters: the meshNetworks the tool has always written.
	const two = `networks:
  network1:
    endpoints:
    - fromRegistry: cluster1
    gateways:
    - address: 192.0.2.1
      port: 15443
  network2:
    endpoints:
    - fromRegistry: cluster2
    gateways:
    - address: 192.0.2.2
      port: 15443
`
	if got := meshNetworks(2); got != two {
		t.Errorf("meshNetworks(2) =\n%s\nwant\n%s", got, two)
	}
	three := meshNetworks(3)
	if !strings.HasPrefix(three, two) || !strings.HasSuffix(three, `  network3:
    endpoints:
    - fromRegistry: cluster3
    gateways:
    - address: 192.0.2.3
      port: 15443
`) {
		t.Errorf("meshNetworks(3) =\n%s", three)
	}
	mn, err := network.ParseMeshNetworks([]byte(meshNetworks(maxClusters)))
	if err != nil {
		t.Fatalf("meshNetworks(%d): %v", maxClusters, err)
	}
	if got := len(mn.GetNetworks()); got != maxClusters {
		t.Errorf("meshNetworks(%d) has %d networks", maxClusters, got)
	}
}

func TestParseMetrics(t *testing.T) {
	m := parseMetrics([]byte(`# HELP horizon_xds_nacks_total Responses rejected.
# TYPE horizon_xds_nacks_total counter
horizon_xds_nacks_total{type_url="a"} 2
horizon_xds_nacks_total{type_url="b{}"} 3
horizon_xds_pushes_total 7
go_memstats_heap_alloc_bytes 1.2345e+07
`))
	if m["horizon_xds_nacks_total"] != 5 || m["horizon_xds_pushes_total"] != 7 || m["go_memstats_heap_alloc_bytes"] != 12345000 {
		t.Errorf("parseMetrics = %v", m)
	}
}

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := summarize(ds)
	if s.N != 100 || s.P50 != 50*time.Millisecond || s.P99 != 99*time.Millisecond || s.Max != 100*time.Millisecond {
		t.Errorf("summarize = %+v", s)
	}
	if (summarize(nil) != stats{}) {
		t.Error("summarize(nil) not zero")
	}
}

func TestParseFlags(t *testing.T) {
	var stderr bytes.Buffer
	cfg, err := parseFlags([]string{"-proxies", "10000", "-delta-fraction", "0.25", "-churn-rate", "20"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Proxies != 10000 || cfg.DeltaFraction != 0.25 || cfg.ChurnRate != 20 || cfg.Services != 100 {
		t.Errorf("parsed %+v", cfg)
	}
	if cfg.Clusters != 2 {
		t.Errorf("default -clusters %d, want 2", cfg.Clusters)
	}
	if cfg, err := parseFlags([]string{"-clusters", "3"}, &stderr); err != nil || cfg.Clusters != 3 {
		t.Errorf("-clusters 3: %d, %v", cfg.Clusters, err)
	}
	if cfg, err := parseFlags([]string{"-full-mesh"}, &stderr); err != nil || !cfg.FullMesh || cfg.watchCount() != cfg.Services {
		t.Errorf("-full-mesh: watching %d of %d services, %v", cfg.watchCount(), cfg.Services, err)
	}
	if _, err := parseFlags([]string{"-full-mesh", "-watch", "5"}, &stderr); err == nil || !strings.Contains(err.Error(), "-watch") {
		t.Errorf("-full-mesh -watch 5: error %v, want -watch named", err)
	}
	if _, err := parseFlags([]string{"-endpoints", "0", "-delta-fraction", "2"}, &stderr); err == nil ||
		!strings.Contains(err.Error(), "-endpoints") || !strings.Contains(err.Error(), "-delta-fraction") {
		t.Errorf("invalid flags: error %v, want both named", err)
	}
	for _, n := range []string{"1", "8"} {
		if _, err := parseFlags([]string{"-clusters", n}, &stderr); err == nil || !strings.Contains(err.Error(), "-clusters") {
			t.Errorf("-clusters %s: error %v, want -clusters named", n, err)
		}
	}
}

// TestPodIPsAreDistinct: the address plan gives every endpoint of every cluster its
// own valid address, up to the limits.
func TestPodIPsAreDistinct(t *testing.T) {
	seen := map[netip.Addr]string{}
	for c := range maxClusters {
		for _, j := range []int{0, 255, 256, maxServices - 1} {
			for _, e := range []int{0, maxEndpoints} {
				ip := podIP(c, j, e)
				a, err := netip.ParseAddr(ip)
				if err != nil || !a.Is4() || a.IsLoopback() || netip.MustParsePrefix("100.64.0.0/10").Contains(a) {
					t.Fatalf("podIP(%d, %d, %d) = %q, want an IPv4 address outside loopback and the proxies' range", c, j, e, ip)
				}
				key := fmt.Sprintf("(%d, %d, %d)", c, j, e)
				if prev, ok := seen[a]; ok {
					t.Fatalf("podIP%s = podIP%s = %s", key, prev, ip)
				}
				seen[a] = key
			}
		}
	}
}
