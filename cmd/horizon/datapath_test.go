package main

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/horizon-mesh/horizon/cmd/localmesh/dataplane"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

// Addresses in the data-path test's private network namespace.
const (
	v1Addr  = "192.0.2.11"
	v2aAddr = "192.0.2.12"
	v2bAddr = "192.0.2.13"
	gwAddr  = "192.0.2.20" // network2's gateway
)

var dataPathAddrs = []string{v1Addr, v2aAddr, v2bAddr, gwAddr}

// TestDataPath makes real cross-network calls: a proxyless gRPC client (grpc-go's own
// xDS client) on network1 calls helloworld over mTLS; v1 answers from cluster 1 by pod
// IP, v2 from cluster 2 through network2's gateway with the SNI intact. The gateway
// is nginx's stream module with ssl_preread — it stands in for Envoy, which cannot be
// installed here; the Envoy gateway's own configuration (LDS/CDS/EDS) is checked by
// TestGatewayProxy. Pods are gRPC servers on addresses of a private network namespace.
//
// grpc-go sends the xDS SNI only with GRPC_EXPERIMENTAL_XDS_SNI=true, read at start,
// so the test re-executes itself in a new network namespace with that set.
func TestDataPath(t *testing.T) {
	if kubetest.RunInNetns(t, "datapath_test.go", "GRPC_EXPERIMENTAL_XDS_SNI=true") {
		return
	}
	ctx := t.Context()
	dir := t.TempDir()
	// The client runs as sleep; each version's pods as helloworld-<version> (their
	// ServiceAccount below), the identity Horizon tells the client to expect of
	// them: v2's, in cluster 2 behind the gateway, too.
	certs, err := dataplane.NewCerts(dir, "sample", "sleep")
	if err != nil {
		t.Fatal(err)
	}
	startPod := func(name, version, ip string) *dataplane.Pod {
		return startHelloPod(t, certs, dir, name, version, ip)
	}
	startPod("helloworld-v1-0", "v1", v1Addr)
	v2a := startPod("helloworld-v2-0", "v2", v2aAddr)
	gw, err := dataplane.StartGateway(filepath.Join(dir, "gateway"), gwAddr+":15443", map[string][]string{
		"outbound_.5000_._." + helloHost: {v2aAddr + ":5000", v2bAddr + ":5000"},
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
	deploy := func(c *kubetest.Cluster, version string, ips ...string) {
		t.Helper()
		s := kubetest.Service{
			Namespace: "sample", Name: "helloworld",
			Ports: []corev1.ServicePort{{Name: "grpc", Port: 5000, TargetPort: intstr.FromInt32(5000)}},
		}
		node := map[*kubetest.Cluster]string{cluster1: "node-1", cluster2: "node-2"}[c]
		for i, ip := range ips {
			s.Backends = append(s.Backends, kubetest.Backend{
				Pod: fmt.Sprintf("helloworld-%s-%d", version, i), IP: ip, Node: node, Ready: true, ServiceAccount: "helloworld-" + version,
				Labels: map[string]string{"version": version, network.LabelTLSMode: network.TLSModeIstio},
			})
		}
		if err := kubetest.Deploy(ctx, c.Client, s); err != nil {
			t.Fatal(err)
		}
	}
	deploy(cluster1, "v1", v1Addr)
	deploy(cluster2, "v2", v2aAddr)
	writeMeshNetworks(t, fmt.Sprintf(`
networks:
  network1:
    endpoints: [{fromRegistry: cluster1}]
  network2:
    endpoints: [{fromRegistry: cluster2}]
    gateways: [{address: %s, port: 15443}]
`, gwAddr))
	writeRemoteSecret(t, "istio-remote-secret-datapath", cluster2, "cluster2")
	xdsAddr, _, _ := startServe(t)

	// What a proxyless client on network1 is told, seen by an observer in its group.
	observer := xdstest.Connect(t, xdsAddr, xdstest.NodeWithMetadata("sidecar~192.0.2.31~observer.sample~sample.svc.cluster.local",
		map[string]any{"NETWORK": "network1", "GENERATOR": "grpc"}), xdstest.Options{EDS: []string{helloCLA}})
	client, err := dataplane.DialNode(xdsAddr, dataplane.Node{
		ID: "sidecar~192.0.2.30~sleep.sample~sample.svc.cluster.local", Network: "network1", Region: "region", Zone: "zone-a",
	}, helloHost+":5000", certs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })

	failures := 0
	call := func() string {
		v, _, err := client.Call(ctx)
		if err != nil {
			failures++
			t.Logf("call failed: %v", err)
		}
		return v
	}
	// share calls n times and returns the fraction answered by v2.
	share := func(n int) float64 {
		v2 := 0
		for range n {
			if call() == "v2" {
				v2++
			}
		}
		return float64(v2) / float64(n)
	}
	waitEDS := func(want string) {
		t.Helper()
		kubetest.Eventually(t, 15*time.Second, func() error {
			if got := strings.Join(xdstest.Summary(observer.CLA(helloCLA)), " | "); got != want {
				return fmt.Errorf("EDS %q, want %q", got, want)
			}
			return nil
		})
	}
	// waitShare calls until the v2 share of 100 calls is within 0.1 of want, then
	// measures it over 300 calls.
	waitShare := func(want float64) float64 {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for math.Abs(share(100)-want) > 0.1 {
			if time.Now().After(deadline) {
				t.Fatalf("v2 share never approached %.2f", want)
			}
		}
		got := share(300)
		if math.Abs(got-want) > 0.1 {
			t.Fatalf("v2 answered %.2f of 300 calls; EDS weights say %.2f (tolerance 0.1)", got, want)
		}
		return got
	}

	// v1 by pod IP in zone-a, v2 through the gateway in zone-b: equal locality weights.
	waitEDS(fmt.Sprintf("region/zone-a/(1): %s:5000*1+mtls | region/zone-b/(1): %s:15443*1+mtls", v1Addr, gwAddr))
	got := waitShare(0.5)
	t.Logf("1 v1 pod, 1 v2 pod behind the gateway: v2 answered %.0f%% of 300 calls (EDS weights 1:1)", got*100)

	// A second v2 pod: the gateway stands for two endpoints and weighs 2.
	startPod("helloworld-v2-1", "v2", v2bAddr)
	deploy(cluster2, "v2", v2aAddr, v2bAddr)
	waitEDS(fmt.Sprintf("region/zone-a/(1): %s:5000*1+mtls | region/zone-b/(2): %s:15443*2+mtls", v1Addr, gwAddr))
	got = waitShare(2.0 / 3)
	t.Logf("1 v1 pod, 2 v2 pods: v2 answered %.0f%% of 300 calls (EDS weights 1:2)", got*100)

	// Scale v2 to zero. Its pods keep running until every call lands on v1 (as a
	// terminating pod would); after that no call may fail.
	deploy(cluster2, "v2")
	waitEDS(fmt.Sprintf("region/zone-a/(1): %s:5000*1+mtls", v1Addr))
	deadline := time.Now().Add(20 * time.Second)
	for streak := 0; streak < 50; {
		if call() == "v1" {
			streak++
		} else {
			streak = 0
		}
		if time.Now().After(deadline) {
			t.Fatal("calls still reach v2 after it was scaled to zero")
		}
	}
	v2a.Stop()
	if got := share(200); got != 0 {
		t.Fatalf("v2 answered %.2f of calls after scaling to zero", got)
	}
	if failures > 0 {
		t.Fatalf("%d calls failed", failures)
	}
	t.Logf("after scaling v2 to zero: 200 calls, all on v1, none failed; no call failed in the whole test")

	// The gateway logs a connection when it ends; the client dropped its gateway
	// connection with the gateway's endpoint. It carried the SNI, routed to v2.
	kubetest.Eventually(t, 10*time.Second, func() error {
		if l := gw.Log(); !strings.Contains(l, "outbound_.5000_._."+helloHost+" "+v2aAddr+":5000") {
			return fmt.Errorf("gateway log has no connection routed by SNI to v2:\n%s", l)
		}
		return nil
	})
}

// startHelloPod starts helloworld pod name of version at ip:5000 with a certificate
// for ServiceAccount helloworld-<version> issued by certs under dir, stopped when
// the test ends.
func startHelloPod(t *testing.T, certs *dataplane.Certs, dir, name, version, ip string) *dataplane.Pod {
	t.Helper()
	podCerts, err := certs.Issue(filepath.Join(dir, name), "sample", "helloworld-"+version)
	if err != nil {
		t.Fatal(err)
	}
	p, err := dataplane.StartPod(name, version, ip+":5000", podCerts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}
