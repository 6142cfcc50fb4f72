package main

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/horizon-mesh/horizon/cmd/localmesh/dataplane"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

// TestFailover runs the failover scenario (dataplane.Failover) with grpc-go's xDS
// client on real processes, as TestDataPath does: helloworld v1 in cluster 1
// (network1, zone-a) by pod IP, v2 in cluster 2 (network2, zone-b) through
// network2's SNI gateway, the Service PreferClose (set in cluster 1 only, which is
// enough). The client, on network1 in zone-a, gets v1 in priority 0 and the gateway
// in priority 1:
//
//   - every call lands on v1;
//   - v1's server stops, its EndpointSlice untouched: grpc-go fails over to the
//     gateway on its own (the failover time and failed calls are logged);
//   - v1 marked not ready: Horizon sends the gateway alone, in priority 0; with v1's
//     server back but not ready, every call stays on v2;
//   - v1 ready again: calls return to v1;
//   - the Service without the setting: one priority, calls split by weight as
//     before.
func TestFailover(t *testing.T) {
	if kubetest.RunInNetns(t, "failover_test.go", "GRPC_EXPERIMENTAL_XDS_SNI=true") {
		return
	}
	runFailover(t, func(t *testing.T, xdsAddr string, node dataplane.Node, certs *dataplane.Certs) func(context.Context) (string, error) {
		client, err := dataplane.DialNode(xdsAddr, node, helloHost+":5000", certs)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close() })
		return func(ctx context.Context) (string, error) {
			v, _, err := client.CallNow(ctx)
			return v, err
		}
	})
}

// failoverClient starts an xDS client of helloworld (xds:///helloworld.sample.svc.cluster.local:5000)
// as node, through Horizon at xdsAddr, with mesh certificates certs (its bootstrap's
// certificate provider "default"), and returns a function making one call that
// returns the answering version. It runs in the test's network namespace.
type failoverClient func(t *testing.T, xdsAddr string, node dataplane.Node, certs *dataplane.Certs) (call func(context.Context) (string, error))

// runFailover is TestFailover's body for any xDS client: it sets up the clusters,
// pods, gateway and Horizon, starts the client with newClient, and runs the
// scenario. The caller runs it in a network namespace (kubetest.RunInNetns).
func runFailover(t *testing.T, newClient failoverClient) {
	ctx := t.Context()
	dir := t.TempDir()
	certs, err := dataplane.NewCerts(dir, "sample", "sleep")
	if err != nil {
		t.Fatal(err)
	}
	startPod := func(name, version, ip string) *dataplane.Pod {
		return startHelloPod(t, certs, dir, name, version, ip)
	}
	v1 := startPod("helloworld-v1-0", "v1", v1Addr)
	startPod("helloworld-v2-0", "v2", v2aAddr)
	gw, err := dataplane.StartGateway(filepath.Join(dir, "gateway"), gwAddr+":15443", map[string][]string{
		"outbound_.5000_._." + helloHost: {v2aAddr + ":5000"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Stop)

	if err := kubetest.CreateNode(ctx, cluster1.Client, "node-1", "region", "zone-a", ""); err != nil {
		t.Fatal(err)
	}
	if err := kubetest.CreateNode(ctx, cluster2.Client, "node-2", "region", "zone-b", ""); err != nil {
		t.Fatal(err)
	}
	deploy := func(ctx context.Context, c *kubetest.Cluster, version, ip string, ready bool, dist string) error {
		node := map[*kubetest.Cluster]string{cluster1: "node-1", cluster2: "node-2"}[c]
		return kubetest.Deploy(ctx, c.Client, kubetest.Service{
			Namespace: "sample", Name: "helloworld", TrafficDistribution: &dist,
			Ports: []corev1.ServicePort{{Name: "grpc", Port: 5000, TargetPort: intstr.FromInt32(5000)}},
			Backends: []kubetest.Backend{{
				Pod: "helloworld-" + version + "-0", IP: ip, Node: node, Ready: ready, ServiceAccount: "helloworld-" + version,
				Labels: map[string]string{"version": version, network.LabelTLSMode: network.TLSModeIstio},
			}},
		})
	}
	if err := deploy(ctx, cluster1, "v1", v1Addr, true, "PreferClose"); err != nil {
		t.Fatal(err)
	}
	if err := deploy(ctx, cluster2, "v2", v2aAddr, true, ""); err != nil {
		t.Fatal(err)
	}
	writeMeshNetworks(t, fmt.Sprintf(`
networks:
  network1:
    endpoints: [{fromRegistry: cluster1}]
  network2:
    endpoints: [{fromRegistry: cluster2}]
    gateways: [{address: %s, port: 15443}]
`, gwAddr))
	writeRemoteSecret(t, "istio-remote-secret-failover", cluster2, "cluster2")
	xdsAddr, _, _ := startServe(t)

	// The client and an observer in its group: network1, zone-a.
	node := dataplane.Node{ID: "sidecar~192.0.2.30~sleep.sample~sample.svc.cluster.local", Network: "network1", Region: "region", Zone: "zone-a"}
	obsNode := xdstest.NodeWithMetadata("sidecar~192.0.2.31~observer.sample~sample.svc.cluster.local",
		map[string]any{"NETWORK": "network1", "GENERATOR": "grpc"})
	obsNode.Locality = &corev3.Locality{Region: node.Region, Zone: node.Zone}
	observer := xdstest.Connect(t, xdsAddr, obsNode, xdstest.Options{EDS: []string{helloCLA}})
	call := newClient(t, xdsAddr, node, certs)

	local := fmt.Sprintf("p0 region/zone-a/(1): %s:5000*1+mtls", v1Addr)
	remote := func(p int) string { return fmt.Sprintf("p%d region/zone-b/(1): %s:15443*1+mtls", p, gwAddr) }
	waitEDS := func(ctx context.Context, want ...string) error {
		var last string
		deadline := time.Now().Add(30 * time.Second)
		for {
			last = strings.Join(xdstest.PrioritySummary(observer.CLA(helloCLA)), " | ")
			if last == strings.Join(want, " | ") {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("EDS %q, want %q", last, strings.Join(want, " | "))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}

	f := dataplane.Failover{
		Call:  call,
		Local: "v1", Remote: "v2",
		StopLocal: func() error { v1.Stop(); return nil },
		StartLocal: func() error {
			v1 = startPod("helloworld-v1-0", "v1", v1Addr)
			return nil
		},
		SetLocalReady: func(ctx context.Context, ready bool) error {
			return deploy(ctx, cluster1, "v1", v1Addr, ready, "PreferClose")
		},
		Expect: func(ctx context.Context, step dataplane.FailoverStep) error {
			switch step {
			case dataplane.StepLocalNotReady, dataplane.StepLocalRestarted:
				return waitEDS(ctx, remote(0))
			default: // v1 in priority 0, whether its server runs or not
				return waitEDS(ctx, local, remote(1))
			}
		},
		Logf: func(format string, args ...any) { t.Logf(format, args...) },
	}
	results, err := f.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Step == dataplane.StepLocalStopped {
			t.Logf("failover by the client after v1's server stopped: first call on v2 %s after the stop, %d of %d calls failed meanwhile",
				r.Settle.Round(time.Millisecond), r.Failed, r.Tries)
		}
	}

	// Without the setting, as before: one priority, v1 and the gateway weighing 1:1.
	if err := deploy(ctx, cluster1, "v1", v1Addr, true, ""); err != nil {
		t.Fatal(err)
	}
	if err := waitEDS(ctx, fmt.Sprintf("p0 region/zone-a/(1): %s:5000*1+mtls", v1Addr), remote(0)); err != nil {
		t.Fatal(err)
	}
	share := func(n int) float64 {
		v2 := 0
		for range n {
			if v, err := call(ctx); err != nil {
				t.Fatalf("call failed: %v", err)
			} else if v == "v2" {
				v2++
			}
		}
		return float64(v2) / float64(n)
	}
	deadline := time.Now().Add(20 * time.Second)
	for math.Abs(share(100)-0.5) > 0.15 {
		if time.Now().After(deadline) {
			t.Fatal("without a traffic distribution, calls never split between v1 and v2")
		}
	}
	got := share(300)
	if math.Abs(got-0.5) > 0.15 {
		t.Fatalf("without a traffic distribution, v2 answered %.2f of 300 calls; EDS weights say 0.50", got)
	}
	t.Logf("without a traffic distribution: v2 answered %.0f%% of 300 calls (one priority, weights 1:1)", got*100)
}
