package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	mcscrd "sigs.k8s.io/mcs-api/config/crd"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/cmd/localmesh/dataplane"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

const (
	helloSetHost = "helloworld.sample.svc.clusterset.local"
	helloSetCLA  = "outbound|5000||" + helloSetHost
	v3Addr       = "10.3.0.1" // cluster3's helloworld pod: in EDS only, never called
)

// TestMCS runs Multi-Cluster Services mode (--mcs) on real API servers with the
// mcs-api CRDs installed in clusters 1 and 2 (cluster 3 has none), helloworld v1 in
// cluster 1 (network1), v2 in cluster 2 (network2, behind its gateway) and v3 in
// cluster 3 (network1), exported in cluster 2 only:
//
//   - grpc-go's xDS client on network1 dials
//     xds:///helloworld.sample.svc.clusterset.local:5000 and every call is answered
//     by v2, through network2's gateway with the clusterset SNI; network1's proxies
//     are sent the gateway alone, network2's proxies and gateway v2 by pod IP; v1
//     (not exported) never;
//   - helloworld.sample.svc.cluster.local gives each proxy its own cluster's pods
//     only: v1 to cluster 1's grpc-go client, v2 to cluster 2's, v3 to cluster 3's;
//   - cluster 3, without the CRD, syncs and serves, /debug/clusterz says why it
//     exports nothing, and horizon status marks it;
//   - the ServiceExport deleted: v2 withdrawn from the clusterset host; exported in
//     cluster 1 instead: v1 by pod IP (network1 has no gateway, so to network2's
//     proxies too).
//
// Without --mcs, the same clusters give no clusterset host, and cluster.local spans
// the clusters as before.
func TestMCS(t *testing.T) {
	if kubetest.RunInNetns(t, "mcs_test.go", "GRPC_EXPERIMENTAL_XDS_SNI=true") {
		return
	}
	ctx := t.Context()
	dir := t.TempDir()
	certs, err := dataplane.NewCerts(dir, "sample", "sleep")
	if err != nil {
		t.Fatal(err)
	}
	startHelloPod(t, certs, dir, "helloworld-v1-0", "v1", v1Addr)
	startHelloPod(t, certs, dir, "helloworld-v2-0", "v2", v2aAddr)
	gw, err := dataplane.StartGateway(filepath.Join(dir, "gateway"), gwAddr+":15443", map[string][]string{
		"outbound_.5000_._." + helloSetHost: {v2aAddr + ":5000"},
		"outbound_.5000_._." + helloHost:    {v2aAddr + ":5000"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Stop)

	for _, c := range []*kubetest.Cluster{cluster1, cluster2} {
		for _, crd := range [][]byte{mcscrd.ServiceExportCRD, mcscrd.ServiceImportCRD} {
			if err := kubetest.Apply(ctx, c.Config, crd); err != nil {
				t.Fatal(err)
			}
		}
	}
	deploy := func(c *kubetest.Cluster, version, ip string) {
		t.Helper()
		s := kubetest.Service{
			Namespace: "sample", Name: "helloworld",
			Ports: []corev1.ServicePort{{Name: "grpc", Port: 5000, TargetPort: intstr.FromInt32(5000)}},
			Backends: []kubetest.Backend{{
				Pod: "helloworld-" + version + "-0", IP: ip, Ready: true, ServiceAccount: "helloworld-" + version,
				Labels: map[string]string{"version": version, network.LabelTLSMode: network.TLSModeIstio},
			}},
		}
		if err := kubetest.Deploy(ctx, c.Client, s); err != nil {
			t.Fatal(err)
		}
	}
	deploy(cluster1, "v1", v1Addr)
	deploy(cluster2, "v2", v2aAddr)
	deploy(cluster3, "v3", v3Addr)
	export(t, cluster2, true)
	writeMeshNetworks(t, fmt.Sprintf(`
networks:
  network1:
    endpoints: [{fromRegistry: cluster1}, {fromRegistry: cluster3}]
  network2:
    endpoints: [{fromRegistry: cluster2}]
    gateways: [{address: %s, port: 15443}]
`, gwAddr))
	writeRemoteSecret(t, "istio-remote-secret-mcs2", cluster2, "cluster2")
	writeRemoteSecret(t, "istio-remote-secret-mcs3", cluster3, "cluster3")

	t.Run("without --mcs", func(t *testing.T) {
		xdsAddr, _, _ := startServe(t)
		p := observe(t, xdsAddr, "network1", "cluster1")
		waitEDS(t, p, helloCLA, fmt.Sprintf("//(3): %s:5000*1+mtls %s:5000*1+mtls %s:15443*1+mtls", v3Addr, v1Addr, gwAddr))
		if p.Cluster(helloCLA) == nil {
			t.Fatalf("no cluster %s: clusters %v", helloCLA, p.Names(xdstest.TypeCluster))
		}
		if cla, c := p.CLA(helloSetCLA), p.Cluster(helloSetCLA); cla != nil || c != nil {
			t.Errorf("clusterset host served without --mcs: %v, %v", xdstest.Summary(cla), c)
		}
	})

	xdsAddr, httpAddr, _ := startServe(t, "--mcs")
	net1 := observe(t, xdsAddr, "network1", "cluster1")
	net2 := observe(t, xdsAddr, "network2", "cluster2")
	net3 := observe(t, xdsAddr, "network1", "cluster3")

	// The clusterset host: v2 alone, through the gateway for network1.
	viaGateway := fmt.Sprintf("//(1): %s:15443*1+mtls", gwAddr)
	waitEDS(t, net1, helloSetCLA, viaGateway)
	waitEDS(t, net3, helloSetCLA, viaGateway)
	waitEDS(t, net2, helloSetCLA, fmt.Sprintf("//(1): %s:5000*1+mtls", v2aAddr))
	// network2's gateway is sent v2 under the clusterset SNI, to forward network1's
	// calls to.
	router := xdstest.Connect(t, xdsAddr, xdstest.NodeWithMetadata(
		"router~192.0.2.20~eastwest-7c9b.istio-system~istio-system.svc.cluster.local",
		map[string]any{"NETWORK": "network2", "CLUSTER_ID": "cluster2"},
	), xdstest.Options{EDS: []string{"outbound_.5000_._." + helloSetHost}})
	waitEDS(t, router, "outbound_.5000_._."+helloSetHost, fmt.Sprintf("//(1): %s:5000*1+mtls", v2aAddr))
	// The cluster.local host: each proxy's own cluster's pod, even cluster 3's.
	waitEDS(t, net1, helloCLA, fmt.Sprintf("//(1): %s:5000*1+mtls", v1Addr))
	waitEDS(t, net2, helloCLA, fmt.Sprintf("//(1): %s:5000*1+mtls", v2aAddr))
	waitEDS(t, net3, helloCLA, fmt.Sprintf("//(1): %s:5000*1+mtls", v3Addr))

	// Cluster 3 has no ServiceExport CRD: synced, and saying so.
	var clusterz app.ClusterzResponse
	if err := getJSONPlain("http://"+httpAddr+"/debug/clusterz", &clusterz); err != nil {
		t.Fatal(err)
	}
	for _, c := range clusterz.Clusters {
		st := c.ServiceExports
		switch {
		case c.State != clusterregistry.StateSynced:
			t.Errorf("cluster %s is %s, want synced", c.ID, c.State)
		case st == nil:
			t.Errorf("cluster %s: no serviceExports status in MCS mode", c.ID)
		case c.ID == "cluster3" && !strings.Contains(st.Unavailable, "not served"):
			t.Errorf("cluster3: serviceExports %+v, want the missing CRD reported", st)
		case c.ID != "cluster3" && st.Unavailable != "":
			t.Errorf("cluster %s: serviceExports %+v, want watched", c.ID, st)
		}
	}

	var out bytes.Buffer
	if err := run(ctx, []string{"status", "--address", httpAddr}, &out, &out); err != nil {
		t.Fatalf("horizon status: %v\n%s", err, out.String())
	}
	var marked []string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, "(MCS: exports nothing") {
			marked = append(marked, strings.Fields(line)[0])
		}
	}
	if !slices.Equal(marked, []string{"cluster3"}) {
		t.Errorf("horizon status marks %v as exporting nothing, want [cluster3]:\n%s", marked, out.String())
	}

	// grpc-go dials the clusterset host and is answered by v2 every time.
	call := func(node dataplane.Node, host string, n int) map[string]int {
		t.Helper()
		client, err := dataplane.DialNode(xdsAddr, node, host+":5000", certs)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		got := map[string]int{}
		for range n {
			v, _, err := client.Call(ctx)
			if err != nil {
				t.Fatalf("call to %s as %s: %v", host, node.ID, err)
			}
			got[v]++
		}
		return got
	}
	sleep1 := dataplane.Node{ID: "sidecar~192.0.2.30~sleep.sample~sample.svc.cluster.local", Network: "network1", Cluster: "cluster1"}
	if got := call(sleep1, helloSetHost, 30); got["v2"] != 30 {
		t.Errorf("calls to %s from network1: %v, want all 30 answered by v2", helloSetHost, got)
	}
	kubetest.Eventually(t, 10*time.Second, func() error {
		if l := gw.Log(); !strings.Contains(l, "outbound_.5000_._."+helloSetHost+" "+v2aAddr+":5000") {
			return fmt.Errorf("gateway log has no connection routed by the clusterset SNI to v2:\n%s", l)
		}
		return nil
	})
	// cluster.local stays in the caller's cluster.
	if got := call(sleep1, helloHost, 20); got["v1"] != 20 {
		t.Errorf("calls to %s from cluster1: %v, want all 20 answered by v1", helloHost, got)
	}
	sleep2 := dataplane.Node{ID: "sidecar~192.0.2.32~sleep.sample~sample.svc.cluster.local", Network: "network2", Cluster: "cluster2"}
	if got := call(sleep2, helloHost, 20); got["v2"] != 20 {
		t.Errorf("calls to %s from cluster2: %v, want all 20 answered by v2", helloHost, got)
	}

	// Unexported in cluster 2: withdrawn. Exported in cluster 1: v1 by pod IP.
	export(t, cluster2, false)
	waitGone(t, net1, helloSetCLA)
	waitGone(t, net2, helloSetCLA)
	export(t, cluster1, true)
	waitEDS(t, net1, helloSetCLA, fmt.Sprintf("//(1): %s:5000*1+mtls", v1Addr))
	// network1 has no gateway: its pods are sent directly (split-horizon rule 1).
	waitEDS(t, net2, helloSetCLA, fmt.Sprintf("//(1): %s:5000*1+mtls", v1Addr))
	if got := call(sleep1, helloSetHost, 10); got["v1"] != 10 {
		t.Errorf("calls to %s after exporting in cluster1 only: %v, want all 10 answered by v1", helloSetHost, got)
	}
}

// observe connects a sidecar on network, naming cluster, subscribed to every
// cluster and to helloworld's cluster.local and clusterset assignments.
func observe(t *testing.T, xdsAddr, network, cluster string) *xdstest.Proxy {
	t.Helper()
	node := xdstest.NodeWithMetadata(fmt.Sprintf("sidecar~192.0.2.50~observer-%s.sample~sample.svc.cluster.local", cluster),
		map[string]any{"NETWORK": network, "CLUSTER_ID": cluster})
	return xdstest.Connect(t, xdsAddr, node, xdstest.Options{CDS: true, EDS: []string{helloCLA, helloSetCLA}})
}

// waitGone waits until p no longer has cluster name (a host with no endpoints left
// in any cluster is withdrawn with its cluster; its last assignment is not re-sent).
func waitGone(t *testing.T, p *xdstest.Proxy, name string) {
	t.Helper()
	kubetest.Eventually(t, 15*time.Second, func() error {
		if p.Cluster(name) != nil {
			return fmt.Errorf("cluster %s still sent; clusters %v", name, p.Names(xdstest.TypeCluster))
		}
		return nil
	})
}

// waitEDS waits until p holds assignment name with the summary want.
func waitEDS(t *testing.T, p *xdstest.Proxy, name, want string) {
	t.Helper()
	kubetest.Eventually(t, 15*time.Second, func() error {
		if got := strings.Join(xdstest.Summary(p.CLA(name)), " | "); got != want {
			return fmt.Errorf("%s: %q, want %q", name, got, want)
		}
		return nil
	})
}

// export creates (on) or deletes helloworld's ServiceExport in c.
func export(t *testing.T, c *kubetest.Cluster, on bool) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	res := dyn.Resource(clusterregistry.ServiceExportResource).Namespace("sample")
	if !on {
		if err := res.Delete(t.Context(), "helloworld", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		return
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
		"metadata": map[string]any{"name": "helloworld", "namespace": "sample"},
	}}
	kubetest.Eventually(t, 20*time.Second, func() error { // a new CRD may take a moment to be served
		_, err := res.Create(t.Context(), obj, metav1.CreateOptions{})
		return err
	})
}
