package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/cmd/localmesh/dataplane"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/eds"
	"github.com/horizon-mesh/horizon/network"
)

// Addresses in TestSeedFlow's private network namespace.
const (
	seedV1    = "192.0.2.11" // helloworld v1, local cluster
	seedV2    = "192.0.2.12" // helloworld v2, remote cluster
	seedGW2   = "192.0.2.20" // the remote cluster's ingress gateway (network2)
	seedGW1   = "192.0.2.21" // a network1 gateway, for the namespace-label case
	seedLocal = "Kubernetes" // the local cluster's ID: Istio 1.1's default
	seedKey   = "remote_kubecfg"
)

var seedAddrs = []string{seedV1, seedV2, seedGW2, seedGW1}

// seedMeshNetworks is the guide's meshNetworks: only network2, gateway address gw.
func seedMeshNetworks(gw string) string {
	return fmt.Sprintf(`networks:
  network2:
    endpoints:
    - fromRegistry: remote_kubecfg
    gateways:
    - address: %s
      port: 443
`, gw)
}

const seedGateway = `apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: helloworld-gateway
  namespace: sample
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 443
      name: tls
      protocol: TLS
    tls:
      mode: AUTO_PASSTHROUGH
    hosts:
    - "*"
`

// TestSeedFlow follows Istio 1.1's split-horizon guide (the reference scenario) step
// by step, in its order, on two real API servers that run the EndpointSlice
// controller: meshNetworks with only network2 and the 0.0.0.0 placeholder gateway in
// ConfigMap istio; Horizon as `horizon serve` runs it; the Secret iks made from the
// file remote_kubecfg, ignored until labelled; helloworld v2 in the remote cluster
// and v1 in the local one (the test sets only what a kubelet would); the v1alpha3
// Gateway; then the gateway address edited into the ConfigMap. A local sidecar with
// no network then gets v1's pod IP and network2's gateway, never v2's pod IP, and
// real mTLS calls from a local client with no network reach both versions, v2
// through an SNI-routing gateway; a network2 client reaches v2 directly.
//
// grpc-go sends the xDS SNI only with GRPC_EXPERIMENTAL_XDS_SNI=true, read at start,
// so the test re-executes itself, alone, in a network namespace of its own.
func TestSeedFlow(t *testing.T) {
	if kubetest.RunInNetns(t, "seedflow_test.go", "GRPC_EXPERIMENTAL_XDS_SNI=true") {
		return
	}
	ctx := t.Context()
	dir := t.TempDir()
	claName := eds.ClusterName(helloHost, 5000)
	sni := eds.SNIName(helloHost, 5000)

	// Configure the local cluster: meshNetworks with the placeholder gateway, the
	// Istio CRDs, the control plane.
	if err := kubetest.EnsureNamespace(ctx, config.Client, systemNamespace, nil); err != nil {
		t.Fatal(err)
	}
	cms := config.Client.CoreV1().ConfigMaps(systemNamespace)
	if _, err := cms.Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "istio", Namespace: systemNamespace},
		Data:       map[string]string{"meshNetworks": seedMeshNetworks("0.0.0.0")},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	applyExample(t, config, "gateway-crd.yaml")
	h := startSeedHorizon(t)
	kubetest.Eventually(t, 30*time.Second, h.Ready)
	if st := h.MeshNetworks().Status(); st.Rejected != "" {
		t.Fatalf("the placeholder meshNetworks was rejected: %s", st.Rejected)
	}

	// The remote_kubecfg file and the Secret iks, not labelled yet.
	kc, _, err := remote.MintKubeconfig(ctx, systemNamespace, "istio-multi")
	if err != nil {
		t.Fatal(err)
	}
	kcFile := filepath.Join(dir, seedKey)
	if err := os.WriteFile(kcFile, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile, err := os.ReadFile(kcFile)
	if err != nil {
		t.Fatal(err)
	}
	secrets := config.Client.CoreV1().Secrets(systemNamespace)
	iks, err := secrets.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "iks", Namespace: systemNamespace},
		Data:       map[string][]byte{filepath.Base(kcFile): fromFile},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kubetest.Consistently(t, 2*time.Second, func() error {
		if c, ok := seedCluster(h, seedKey); ok {
			return fmt.Errorf("the unlabelled Secret iks made cluster %+v", c)
		}
		for _, s := range h.Secrets().Status() {
			if s.Secret == systemNamespace+"/iks" {
				return fmt.Errorf("the unlabelled Secret iks is in the status: %+v", s)
			}
		}
		return nil
	})
	t.Logf("unlabelled Secret iks: ignored (clusters %v)", clusterIDs(h))

	// kubectl label secret iks istio/multiCluster=true
	iks.Labels = map[string]string{network.LabelMultiCluster: "true"}
	if _, err := secrets.Update(ctx, iks, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 30*time.Second, func() error {
		c, ok := seedCluster(h, seedKey)
		if !ok || c.State != clusterregistry.StateSynced || c.LastError != "" {
			return fmt.Errorf("cluster %s not synced: %+v (clusters %v)", seedKey, c, clusterIDs(h))
		}
		return nil
	})
	t.Logf("labelled Secret iks: clusters %v", clusterIDs(h))

	// helloworld v2 in the remote cluster, v1 in the local one, and the Gateway.
	deploySeedHelloworld(t, remote, "v2", seedV2)
	deploySeedHelloworld(t, config, "v1", seedV1)
	if err := kubetest.Apply(ctx, config.Config, []byte(seedGateway)); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 20*time.Second, func() error {
		for _, s := range h.Gateways().Servers() {
			if s.Gateway == "sample/helloworld-gateway" && s.Port == 443 {
				return nil
			}
		}
		return fmt.Errorf("Gateway servers %+v lack sample/helloworld-gateway:443 (problems %q)", h.Gateways().Servers(), h.Gateways().Problems())
	})

	// The proxies: the local sleep sidecar with no network metadata at all, and a
	// sidecar of the remote install (global.network=network2).
	xds := h.XDSAddr().String()
	local := xdstest.Connect(t, xds, xdstest.Node("sidecar~10.10.0.89~sleep-0.sample~sample.svc.cluster.local", ""),
		xdstest.Options{CDS: true, EDS: []string{claName}})
	net2 := xdstest.Connect(t, xds, xdstest.Node("sidecar~10.20.0.89~sleep-0.sample~sample.svc.cluster.local", "network2"),
		xdstest.Options{CDS: true, EDS: []string{claName}})

	// The placeholder: Horizon has v2's endpoint (network2's sidecar gets it by pod
	// IP, and v1's too: the local cluster has no network, so nothing better than
	// direct is possible), yet the local sidecar gets v1 only, as network2's gateway
	// address is not set.
	kubetest.Eventually(t, 30*time.Second, func() error {
		return wantAddresses(net2.CLA(claName), seedV1+":5000", seedV2+":5000")
	})
	kubetest.Eventually(t, 20*time.Second, func() error { return wantAddresses(local.CLA(claName), seedV1+":5000") })
	t.Logf("gateway 0.0.0.0: local sidecar %q; network2 sidecar %q", xdstest.Summary(local.CLA(claName)), xdstest.Summary(net2.CLA(claName)))

	// The remote gateway's address, as the guide reads it, edited into ConfigMap
	// istio.
	gwSvc := seedGatewayService(t, remote, "istio-ingressgateway", map[string]string{"app": "istio-ingressgateway", "istio": "ingressgateway"}, 443, seedGW2)
	addr := gwSvc.Status.LoadBalancer.Ingress[0].IP
	cm, err := cms.Get(ctx, "istio", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["meshNetworks"] = strings.Replace(cm.Data["meshNetworks"], "0.0.0.0", addr, 1)
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// (a) The EDS: v1 by pod IP and network2's gateway for the local sidecar; v2 by
	// pod IP for network2's.
	kubetest.Eventually(t, 20*time.Second, func() error {
		return wantAddresses(local.CLA(claName), seedV1+":5000", seedGW2+":443")
	})
	if err := wantAddresses(net2.CLA(claName), seedV1+":5000", seedV2+":5000"); err != nil {
		t.Error(err)
	}
	t.Logf("gateway %s: local sidecar %q; network2 sidecar %q", addr, xdstest.Summary(local.CLA(claName)), xdstest.Summary(net2.CLA(claName)))

	// (b) Real calls: the pods as gRPC servers with mTLS, network2's gateway routing
	// by SNI without terminating TLS.
	// The clients run as sleep, the pods as the default service account they are
	// deployed with: the identity Horizon tells clients to expect of them.
	certs, err := dataplane.NewCerts(dir, "sample", "sleep")
	if err != nil {
		t.Fatal(err)
	}
	podCerts, err := certs.Issue(filepath.Join(dir, "helloworld"), "sample", "default")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ name, version, ip string }{{"helloworld-v1-0", "v1", seedV1}, {"helloworld-v2-0", "v2", seedV2}} {
		pod, err := dataplane.StartPod(p.name, p.version, p.ip+":5000", podCerts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pod.Stop)
	}
	gw, err := dataplane.StartGateway(filepath.Join(dir, "gateway"), seedGW2+":443", map[string][]string{sni: {seedV2 + ":5000"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Stop)

	sleep, err := dataplane.Dial(xds, "sidecar~10.10.0.89~sleep-1.sample~sample.svc.cluster.local", "", helloHost+":5000", certs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleep.Close() })
	seen := map[string]int{}
	for i := 0; i < 200 && (seen["v1"] < 5 || seen["v2"] < 5); i++ {
		v, _, err := sleep.Call(ctx)
		if err != nil {
			t.Fatalf("call from the local client: %v", err)
		}
		seen[v]++
	}
	if seen["v1"] < 5 || seen["v2"] < 5 || len(seen) != 2 {
		t.Fatalf("local client with no network: answers %v, want both v1 and v2", seen)
	}
	t.Logf("local client with no network: answers %v", seen)

	// The local client goes away: its connection through the gateway ends, which
	// writes the gateway's access-log line.
	sleep.Close()
	kubetest.Eventually(t, 10*time.Second, func() error {
		if l := gw.Log(); !strings.Contains(l, sni+" "+seedV2+":5000") {
			return fmt.Errorf("gateway log has no connection routed by SNI %s to v2:\n%s", sni, l)
		}
		return nil
	})
	t.Logf("gateway log: %q", strings.TrimSpace(gw.Log()))

	// Then the gateway goes away too: network2's client does not need it.
	gw.Stop()
	client2, err := dataplane.Dial(xds, "sidecar~10.20.0.89~sleep-1.sample~sample.svc.cluster.local", "network2", helloHost+":5000", certs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client2.Close() })
	seen2 := map[string]int{}
	for i := 0; i < 200 && seen2["v2"] < 10; i++ {
		v, _, err := client2.Call(ctx)
		if err != nil {
			t.Fatalf("call from the network2 client with the gateway down: %v", err)
		}
		seen2[v]++
	}
	if seen2["v2"] < 10 {
		t.Fatalf("network2 client with the gateway down: answers %v, want v2 directly", seen2)
	}
	t.Logf("network2 client, gateway down: answers %v (v2 by pod IP; v1 too, its network unknown)", seen2)

	t.Run("local network from the namespace label", func(t *testing.T) {
		// The local cluster's network is named only by its istio-system label;
		// meshNetworks still declares network2 alone. network1 gets a gateway
		// (a labelled Service) so that where each proxy stands shows: a proxy on
		// the unnamed network would reach v1 through it.
		//
		// early names the local cluster before its label exists: the cluster is not
		// known then, so it starts on the unnamed network, and must be moved to its
		// cluster's network when the label comes, without reconnecting.
		early := xdstest.Connect(t, xds, xdstest.NodeWithMetadata("sidecar~10.30.0.2~sleep-early.sample~sample.svc.cluster.local",
			map[string]any{eds.MetaClusterID: seedLocal}), xdstest.Options{CDS: true, EDS: []string{claName}})
		kubetest.Eventually(t, 20*time.Second, func() error {
			if early.CLA(claName) == nil {
				return errors.New("early proxy: not served yet")
			}
			return nil
		})
		if err := kubetest.EnsureNamespace(ctx, config.Client, systemNamespace, map[string]string{network.LabelNetwork: "network1"}); err != nil {
			t.Fatal(err)
		}
		seedGatewayService(t, config, "eastwest-network1", map[string]string{network.LabelNetwork: "network1"}, 15443, seedGW1)
		byCluster := func(id string) *xdstest.Proxy {
			return xdstest.Connect(t, xds, xdstest.NodeWithMetadata("sidecar~10.30.0.1~sleep-"+strings.ToLower(id)+".sample~sample.svc.cluster.local",
				map[string]any{eds.MetaClusterID: id}), xdstest.Options{CDS: true, EDS: []string{claName}})
		}
		p1, p2 := byCluster(seedLocal), byCluster(seedKey)
		kubetest.Eventually(t, 20*time.Second, func() error {
			return wantAddresses(p1.CLA(claName), seedV1+":5000", seedGW2+":443")
		})
		kubetest.Eventually(t, 20*time.Second, func() error {
			return wantAddresses(p2.CLA(claName), seedV2+":5000", seedGW1+":15443")
		})
		kubetest.Eventually(t, 20*time.Second, func() error {
			return wantAddresses(early.CLA(claName), seedV1+":5000", seedGW2+":443")
		})
		// The proxy with neither NETWORK nor CLUSTER_ID stays on the unnamed
		// network: both versions through their gateways.
		kubetest.Eventually(t, 20*time.Second, func() error {
			return wantAddresses(local.CLA(claName), seedGW1+":15443", seedGW2+":443")
		})
		t.Logf("CLUSTER_ID=%s: %q; CLUSTER_ID=%s: %q; no metadata: %q", seedLocal, xdstest.Summary(p1.CLA(claName)),
			seedKey, xdstest.Summary(p2.CLA(claName)), xdstest.Summary(local.CLA(claName)))
	})
}

// startSeedHorizon runs Horizon as `horizon serve` does (package app) in the local
// cluster, its meshNetworks from ConfigMap istio, until the test ends.
func startSeedHorizon(t *testing.T) *app.Horizon {
	t.Helper()
	return startApp(t, seedLocal, config.Config)
}

// deploySeedHelloworld deploys helloworld <version> as the guide's manifest does —
// Service port 5000 "http" selecting app=helloworld, one pod labelled app, version
// and the sidecar's tlsMode — on a node of its own. The cluster's EndpointSlice
// controller makes the slice.
func deploySeedHelloworld(t *testing.T, c *kubetest.Cluster, version, ip string) {
	t.Helper()
	err := kubetest.DeployPods(t.Context(), c.Client, kubetest.Service{
		Namespace: "sample", Name: "helloworld",
		Labels: map[string]string{"app": "helloworld"},
		Ports:  []corev1.ServicePort{{Name: "http", Port: 5000, TargetPort: intstr.FromInt32(5000)}},
		Backends: []kubetest.Backend{{
			Pod: "helloworld-" + version + "-0", IP: ip, Node: c.Name + "-node", Ready: true,
			Labels: map[string]string{"version": version, network.LabelTLSMode: network.TLSModeIstio},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// seedGatewayService creates a LoadBalancer Service in istio-system of c with the
// address a cloud would give it, and returns it as read back.
func seedGatewayService(t *testing.T, c *kubetest.Cluster, name string, labels map[string]string, port int32, ip string) *corev1.Service {
	t.Helper()
	svcs := c.Client.CoreV1().Services(systemNamespace)
	svc, err := svcs.Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: systemNamespace, Labels: labels},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "tls", Port: port, TargetPort: intstr.FromInt32(port)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
	if _, err := svcs.UpdateStatus(t.Context(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// As `kubectl get svc -o jsonpath={.items[0].status.loadBalancer.ingress[0].ip}`.
	svc, err = svcs.Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Status.LoadBalancer.Ingress) == 0 {
		t.Fatalf("Service %s has no load-balancer address", name)
	}
	return svc
}

func seedCluster(h *app.Horizon, id network.ClusterID) (clusterregistry.ClusterStatus, bool) {
	for _, c := range h.Registry().Clusters() {
		if c.ID == id {
			return c, true
		}
	}
	return clusterregistry.ClusterStatus{}, false
}

func clusterIDs(h *app.Horizon) []network.ClusterID {
	var ids []network.ClusterID
	for _, c := range h.Registry().Clusters() {
		ids = append(ids, c.ID)
	}
	return ids
}
