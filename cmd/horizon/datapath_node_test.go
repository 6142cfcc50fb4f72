package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
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

// nodeModulesEnv passes the Node client's installed packages to the test re-executed
// in its network namespace, which cannot reach the npm registry.
const nodeModulesEnv = "HORIZON_TEST_NODE_MODULES"

// helloSNI is the SNI Horizon sets on helloworld's cluster and network2's gateway
// routes on.
const helloSNI = "outbound_.5000_._." + helloHost

// TestDataPathNode is TestDataPath with a second xDS client that Horizon did not
// write: Node's @grpc/grpc-js-xds (cmd/localmesh/dataplane/nodeclient), installed
// by hack/nodeclient.sh. On network1 in zone-a it calls helloworld over xDS mTLS: v1
// answers by pod IP, v2 through network2's gateway, which routes by the SNI the
// client sends. Then it checks the two things that client needs which grpc-go does
// not: a node locality in the bootstrap, and the SNI given as
// grpc.ssl_target_name_override, since it ignores UpstreamTlsContext.sni.
func TestDataPathNode(t *testing.T) {
	var env []string
	if !dataplane.InNetns() {
		modules, err := dataplane.InstallNodeClient(t.Context(), "../..")
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, nodeModulesEnv+"="+modules)
	}
	if kubetest.RunInNetns(t, "datapath_node_test.go", env...) {
		return
	}
	dp := startDataPathNode(t)
	ctx := t.Context()

	// v1 by pod IP in zone-a, v2 through the gateway in zone-b: equal locality weights.
	dp.waitEDS(t, fmt.Sprintf("p0 region/zone-a/(1): %s:5000*1+mtls | p0 region/zone-b/(1): %s:15443*1+mtls", v1Addr, gwAddr))
	client := dp.nodeClient(t, "sleep", dp.bootstrap(t, clientRegion, clientZone), helloSNI, false)
	first := time.Now()
	b := waitVersions(t, client, 20*time.Second, func(v map[string]int) bool { return v["v1"] > 0 && v["v2"] > 0 })
	t.Logf("Node client: both versions answered after %v (%d calls, %d failed)", time.Since(first).Round(time.Millisecond), b.Calls, b.Failed)
	got := nodeShare(t, client, 300)
	if math.Abs(got-0.5) > 0.1 {
		t.Fatalf("v2 answered %.2f of 300 calls; EDS weights say 0.50 (tolerance 0.1)", got)
	}
	t.Logf("Node client, 1 v1 pod, 1 v2 pod behind the gateway: v2 answered %.0f%% of 300 calls (EDS weights 1:1)", got*100)
	if err := client.Close(); err != nil {
		t.Errorf("node client exit: %v\n%s", err, client.Log())
	}
	checkNoNACK(t, client)
	// The gateway logs a connection when it ends: the client's, closed with it,
	// carried Horizon's SNI and was routed to v2.
	kubetest.Eventually(t, 10*time.Second, func() error {
		if l := dp.gw.Log(); !strings.Contains(l, helloSNI+" "+v2aAddr+":5000") {
			return fmt.Errorf("gateway log has no connection routed by SNI to v2:\n%s", l)
		}
		return nil
	})

	// Without grpc.ssl_target_name_override the client sends the target's host as
	// SNI, whatever the cluster's UpstreamTlsContext.sni says: the gateway has no
	// route for it, and only v1 answers.
	noSNI := dp.nodeClient(t, "nosni", dp.bootstrap(t, clientRegion, clientZone), "", false)
	waitVersions(t, noSNI, 20*time.Second, func(v map[string]int) bool { return v["v1"] > 0 })
	b, err := noSNI.Calls(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	if b.Versions["v2"] != 0 {
		t.Fatalf("without the SNI override v2 answered %d of 20 calls: the client now sends UpstreamTlsContext.sni; "+
			"drop the override and update examples/README.md", b.Versions["v2"])
	}
	_ = noSNI.Close()
	var seen string
	kubetest.Eventually(t, 10*time.Second, func() error {
		for _, l := range strings.Split(dp.gw.Log(), "\n") {
			if strings.HasPrefix(l, helloHost+" ") {
				seen = l
				return nil
			}
		}
		return fmt.Errorf("gateway log has no connection with SNI %s:\n%s", helloHost, dp.gw.Log())
	})
	t.Logf("Node client without the SNI override: 20 calls, %d on v1, %d failed; gateway log (SNI upstream status): %q", b.Versions["v1"], b.Failed, seen)

	// A bootstrap whose node has no locality: the client refuses it, and every call
	// fails with a resolver error that does not say why.
	var boot map[string]any
	if err := json.Unmarshal(dp.bootstrap(t, "", ""), &boot); err != nil {
		t.Fatal(err)
	}
	delete(boot["node"].(map[string]any), "locality")
	noLocality, err := json.Marshal(boot)
	if err != nil {
		t.Fatal(err)
	}
	bad := dp.nodeClient(t, "nolocality", noLocality, helloSNI, true)
	b, err = bad.Calls(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if b.Failed != 1 || !strings.Contains(b.Results[0].Error, "xDS name resolution failed") {
		t.Fatalf("with no node locality in the bootstrap, a call got %+v, want a name resolution error: "+
			"the client behaves differently now; update examples/README.md", b.Results)
	}
	t.Logf("Node client with no node locality in its bootstrap: the call failed with %q", b.Results[0].Error)
}

// TestDataPathNodeFailover runs TestFailover's scenario (runFailover, on
// dataplane.Failover) with Node's xDS client: helloworld marked PreferClose keeps
// every call on v1 (zone-a, the client's own, priority 0) while v1 is healthy; when
// v1's server dies with its EndpointSlice untouched the client fails over on its own
// to priority 1, network2's gateway; when v1 is marked not ready Horizon sends the
// gateway alone; when v1 is ready again calls return to it; without the setting
// calls spread by the EDS weights again. Calls do not wait for a ready connection,
// so that a call the client cannot place fails and is counted, as grpc-go's CallNow
// does. The client must refuse nothing Horizon sends.
func TestDataPathNodeFailover(t *testing.T) {
	var env []string
	if !dataplane.InNetns() {
		modules, err := dataplane.InstallNodeClient(t.Context(), "../..")
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, nodeModulesEnv+"="+modules)
	}
	// The scenario logs from runFailover's file; a failure shows everything.
	if kubetest.RunInNetns(t, "failover_test.go", env...) {
		return
	}
	runFailover(t, func(t *testing.T, xdsAddr string, node dataplane.Node, certs *dataplane.Certs) func(context.Context) (string, error) {
		boot, err := dataplane.BootstrapNode(xdsAddr, node, certs)
		if err != nil {
			t.Fatal(err)
		}
		c, err := dataplane.StartNodeClient(dataplane.NodeClientOptions{
			Root: "../..", Modules: os.Getenv(nodeModulesEnv), Bootstrap: boot, Dir: filepath.Join(t.TempDir(), "node"),
			Target: helloHost + ":5000", SNI: helloSNI, NoWaitForReady: true, Env: nodeTrace,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := c.Close(); err != nil {
				t.Errorf("node client exit: %v", err)
			}
			checkNoNACK(t, c)
		})
		return func(ctx context.Context) (string, error) {
			b, err := c.Calls(ctx, 1)
			if err != nil {
				t.Fatal(err) // the client itself failed, not a call
			}
			if r := b.Results[0]; r.Error != "" {
				return "", errors.New(r.Error)
			}
			return b.Results[0].Version, nil
		}
	})
}

// dataPathNode is the data path of TestDataPathNode: v1 in cluster 1 on network1,
// v2 in cluster 2 behind network2's gateway, and Horizon serving both.
type dataPathNode struct {
	dir      string
	xdsAddr  string
	certs    *dataplane.Certs
	gw       *dataplane.Gateway
	observer *xdstest.Proxy
	modules  string
	pods     map[string]*dataplane.Pod // by name
}

// The Node clients (and the observer) run on node-1, in v1's region and zone.
const clientRegion, clientZone = "region", "zone-a"

// startPod starts (or restarts) pod name of version on ip:5000, presenting the
// identity of its service account helloworld-<version>.
func (dp *dataPathNode) startPod(t *testing.T, name, version, ip string) *dataplane.Pod {
	t.Helper()
	podCerts, err := dp.certs.Issue(filepath.Join(dp.dir, name), "sample", "helloworld-"+version)
	if err != nil {
		t.Fatal(err)
	}
	pod, err := dataplane.StartPod(name, version, ip+":5000", podCerts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pod.Stop)
	dp.pods[name] = pod
	return pod
}

func startDataPathNode(t *testing.T) *dataPathNode {
	t.Helper()
	ctx := t.Context()
	dp := &dataPathNode{dir: t.TempDir(), modules: os.Getenv(nodeModulesEnv), pods: map[string]*dataplane.Pod{}}
	if dp.modules == "" {
		t.Fatalf("%s not set: the Node client's packages were not installed", nodeModulesEnv)
	}
	var err error
	dp.certs, err = dataplane.NewCerts(filepath.Join(dp.dir, "sleep"), "sample", "sleep")
	if err != nil {
		t.Fatal(err)
	}
	dp.startPod(t, "helloworld-v1-0", "v1", v1Addr)
	dp.startPod(t, "helloworld-v2-0", "v2", v2aAddr)
	dp.gw, err = dataplane.StartGateway(filepath.Join(dp.dir, "gateway"), gwAddr+":15443", map[string][]string{
		helloSNI: {v2aAddr + ":5000"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dp.gw.Stop)

	if err := kubetest.CreateNode(ctx, cluster1.Client, "node-1", "region", "zone-a", ""); err != nil {
		t.Fatal(err)
	}
	if err := kubetest.CreateNode(ctx, cluster2.Client, "node-2", "region", "zone-b", ""); err != nil {
		t.Fatal(err)
	}
	dp.deploy(t, cluster1, "v1", true)
	dp.deploy(t, cluster2, "v2", true)
	writeMeshNetworks(t, fmt.Sprintf(`
networks:
  network1:
    endpoints: [{fromRegistry: cluster1}]
  network2:
    endpoints: [{fromRegistry: cluster2}]
    gateways: [{address: %s, port: 15443}]
`, gwAddr))
	writeRemoteSecret(t, "istio-remote-secret-datapath", cluster2, "cluster2")
	dp.xdsAddr, _, _ = startServe(t)
	observer := xdstest.NodeWithMetadata("sidecar~192.0.2.31~observer.sample~sample.svc.cluster.local",
		map[string]any{"NETWORK": "network1", "GENERATOR": "grpc"})
	observer.Locality = &corev3.Locality{Region: clientRegion, Zone: clientZone}
	dp.observer = xdstest.Connect(t, dp.xdsAddr, observer, xdstest.Options{EDS: []string{helloCLA}})
	return dp
}

// deploy writes helloworld's Service, pod and EndpointSlice for version's one pod
// (v1 in cluster 1 on node-1, v2 in cluster 2 on node-2), ready or not.
func (dp *dataPathNode) deploy(t *testing.T, c *kubetest.Cluster, version string, ready bool) {
	t.Helper()
	node, ip := "node-1", v1Addr
	if version == "v2" {
		node, ip = "node-2", v2aAddr
	}
	s := kubetest.Service{
		Namespace: "sample", Name: "helloworld",
		Ports: []corev1.ServicePort{{Name: "grpc", Port: 5000, TargetPort: intstr.FromInt32(5000)}},
		Backends: []kubetest.Backend{{
			Pod: "helloworld-" + version + "-0", IP: ip, Node: node, Ready: ready, ServiceAccount: "helloworld-" + version,
			Labels: map[string]string{"version": version, network.LabelTLSMode: network.TLSModeIstio},
		}},
	}
	if err := kubetest.Deploy(t.Context(), c.Client, s); err != nil {
		t.Fatal(err)
	}
}

// bootstrap is the Node client's bootstrap: sleep on network1 in region and zone.
func (dp *dataPathNode) bootstrap(t *testing.T, region, zone string) []byte {
	t.Helper()
	b, err := dataplane.BootstrapNode(dp.xdsAddr, dataplane.Node{
		ID: "sidecar~192.0.2.30~sleep.sample~sample.svc.cluster.local", Network: "network1", Region: region, Zone: zone,
	}, dp.certs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// nodeTrace turns on the Node client's xDS traces, written to its log: checkNoNACK
// reads them.
var nodeTrace = []string{"GRPC_TRACE=xds_client,xds_resolver,cds_balancer,priority,xds_cluster_impl", "GRPC_VERBOSITY=DEBUG"}

// nodeClient starts a Node client named name (its files in a directory of that
// name), with its xDS traces in its log.
func (dp *dataPathNode) nodeClient(t *testing.T, name string, bootstrap []byte, sni string, noWait bool) *dataplane.NodeClient {
	t.Helper()
	c, err := dataplane.StartNodeClient(dataplane.NodeClientOptions{
		Root: "../..", Modules: dp.modules, Bootstrap: bootstrap, Dir: filepath.Join(dp.dir, "node-"+name),
		Target: helloHost + ":5000", SNI: sni, NoWaitForReady: noWait,
		Env: nodeTrace,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitEDS waits until the observer, in the client's group, holds helloworld's
// assignment with summary want (xdstest.PrioritySummary).
func (dp *dataPathNode) waitEDS(t *testing.T, want string) {
	t.Helper()
	kubetest.Eventually(t, 15*time.Second, func() error {
		if got := strings.Join(xdstest.PrioritySummary(dp.observer.CLA(helloCLA)), " | "); got != want {
			return fmt.Errorf("EDS %q, want %q", got, want)
		}
		return nil
	})
}

// waitVersions calls in batches of 10 until the versions answering so far satisfy
// done, and returns the calls made.
func waitVersions(t *testing.T, c *dataplane.NodeClient, timeout time.Duration, done func(map[string]int) bool) dataplane.NodeBatch {
	t.Helper()
	all := dataplane.NodeBatch{Versions: map[string]int{}}
	deadline := time.Now().Add(timeout)
	for {
		b, err := c.Calls(t.Context(), 10)
		if err != nil {
			t.Fatal(err)
		}
		all.Calls += b.Calls
		all.Failed += b.Failed
		all.Results = append(all.Results, b.Results...)
		for v, n := range b.Versions {
			all.Versions[v] += n
		}
		if done(all.Versions) {
			return all
		}
		if time.Now().After(deadline) {
			last := b.Results[len(b.Results)-1]
			t.Fatalf("after %d calls: versions %v, %d failed (last: %+v); client log:\n%s", all.Calls, all.Versions, all.Failed, last, tail(c.Log(), 60))
		}
	}
}

// nodeShare makes n calls and returns the fraction v2 answered; every call must
// succeed.
func nodeShare(t *testing.T, c *dataplane.NodeClient, n int) float64 {
	t.Helper()
	b, err := c.Calls(t.Context(), n)
	if err != nil {
		t.Fatal(err)
	}
	if b.Failed > 0 {
		t.Fatalf("%d of %d calls failed: %+v", b.Failed, n, b.Results)
	}
	return float64(b.Versions["v2"]) / float64(n)
}

// checkNoNACK fails t if the client refused a resource Horizon sent: its xds_client
// trace shows every discovery request, and a NACK carries "xDS response validation
// errors".
func checkNoNACK(t *testing.T, c *dataplane.NodeClient) {
	t.Helper()
	l := c.Log()
	if !strings.Contains(l, "Sending discovery request") {
		t.Fatalf("the Node client's log has no xds_client trace; is GRPC_TRACE set?\n%s", tail(l, 20))
	}
	for _, line := range strings.Split(l, "\n") {
		if strings.Contains(line, "xDS response validation errors") {
			t.Errorf("the Node client refused what Horizon sent: %s", line)
		}
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
