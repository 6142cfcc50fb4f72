package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/eds"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/network/gatewaysource"
)

// TestExamplesReferenceScenario runs the walkthrough: every example applied, helloworld
// v1 and v2 running (the test plays the kubelet), cluster2's ingress gateway at the
// scenario's address, a remote Secret holding a real token of remote-reader.yaml's
// service account, and Horizon wired as `horizon serve` wires it, reading the config
// cluster as horizon.yaml's service account. The Envoy bootstraps' nodes then get
// what the walkthrough says: the sidecar on network1 the v1 pod IP and network2's
// gateway on 443, the gateway a passthrough listener on 8443 (the targetPort behind
// its Service's 443) and the v2 pod IP.
func TestExamplesReferenceScenario(t *testing.T) {
	ctx := t.Context()
	for _, a := range exampleManifests {
		applyExampleStep(t, a)
	}
	playHelloworld(t, config, "v1", v1PodIP)
	playHelloworld(t, remote, "v2", v2PodIP)
	ingressGatewayAt(t, remote, network2Gateway)

	tr, err := remote.Client.CoreV1().ServiceAccounts(systemNamespace).CreateToken(ctx, readerSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kubetest.KubeconfigFor("cluster2", remote.Host, remote.CAData, tr.Status.Token)
	if err != nil {
		t.Fatal(err)
	}
	applySecret(t, remoteSecret("istio-remote-secret-cluster2", map[string][]byte{"cluster2": kc}))

	h := startLeastPrivilegeHorizon(t)
	kubetest.Eventually(t, 30*time.Second, func() error { return scenarioReady(h) })
	for _, c := range h.Registry().Clusters() {
		if c.State != clusterregistry.StateSynced || c.LastError != "" {
			t.Errorf("cluster %s: %s %s", c.ID, c.State, c.LastError)
		}
	}
	if got := len(h.Registry().Clusters()); got != 2 {
		t.Errorf("%d clusters, want cluster1 and cluster2", got)
	}
	if st := h.MeshNetworks().Status(); st.Rejected != "" {
		t.Errorf("meshNetworks rejected: %s", st.Rejected)
	}
	if p := h.Gateways().Problems(); len(p) > 0 {
		t.Errorf("Gateway resources not read: %q", p)
	}
	wantServers := []gatewaysource.Server{{Gateway: "sample/helloworld-gateway", Selector: map[string]string{"istio": "ingressgateway"}, Port: 443, Hosts: []string{"*"}}}
	if got := h.Gateways().Servers(); !reflect.DeepEqual(got, wantServers) {
		t.Errorf("Gateway servers = %+v, want %+v", got, wantServers)
	}

	sidecarBoot := loadBootstrap(t, "envoy-sidecar-bootstrap.yaml")
	claName := eds.ClusterName(helloHost, 5000)
	sidecar := xdstest.Connect(t, h.XDSAddr().String(), sidecarBoot.GetNode(), xdstest.Options{CDS: true, LDS: true, EDS: []string{claName}})
	kubetest.Eventually(t, 20*time.Second, func() error {
		return wantAddresses(sidecar.CLA(claName), v1PodIP+":5000", network2Gateway+":443")
	})
	t.Logf("sidecar on network1, %s: %q", claName, xdstest.Summary(sidecar.CLA(claName)))
	cluster := sidecar.Cluster(claName)
	if cluster == nil {
		t.Fatalf("the sidecar got no cluster %s; it has %q", claName, sidecar.Names(xdstest.TypeCluster))
	}
	static := map[string]bool{}
	for _, c := range sidecarBoot.GetStaticResources().GetClusters() {
		static[c.GetName()] = true
	}
	for _, name := range envoyGRPCClusters(t, cluster) {
		if !static[name] {
			t.Errorf("cluster %s uses gRPC cluster %q, which envoy-sidecar-bootstrap.yaml lacks", claName, name)
		}
	}

	sni := eds.SNIName(helloHost, 5000)
	gateway := xdstest.Connect(t, h.XDSAddr().String(), loadBootstrap(t, "envoy-gateway-bootstrap.yaml").GetNode(),
		xdstest.Options{CDS: true, LDS: true, EDS: []string{sni}})
	kubetest.Eventually(t, 20*time.Second, func() error {
		if err := wantAddresses(gateway.CLA(sni), v2PodIP+":5000"); err != nil {
			return err
		}
		names := gateway.Names(xdstest.TypeListener)
		if len(names) != 1 {
			return fmt.Errorf("gateway listeners %q, want one", names)
		}
		l := gateway.Listener(names[0])
		if port := l.GetAddress().GetSocketAddress().GetPortValue(); port != 8443 || l.GetName() != "0.0.0.0_8443" {
			return fmt.Errorf("gateway listener %s on port %d, want 0.0.0.0_8443 (the Service maps 443 to 8443)", l.GetName(), port)
		}
		for _, fc := range l.GetFilterChains() {
			if !slices.Contains(fc.GetFilterChainMatch().GetServerNames(), sni) {
				continue
			}
			var tp tcpproxyv3.TcpProxy
			if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(&tp); err != nil {
				return err
			}
			if tp.GetCluster() != sni {
				return fmt.Errorf("SNI %s goes to cluster %q", sni, tp.GetCluster())
			}
			if gateway.Cluster(sni) == nil {
				return fmt.Errorf("gateway has no cluster %s", sni)
			}
			return nil
		}
		return fmt.Errorf("gateway listener %s has no filter chain for SNI %s", l.GetName(), sni)
	})
	t.Logf("gateway on network2, %s: %q", sni, xdstest.Summary(gateway.CLA(sni)))
}

// startLeastPrivilegeHorizon runs Horizon as `horizon serve` does (package app),
// reading the config cluster as the service account of horizon.yaml, until the test
// ends.
func startLeastPrivilegeHorizon(t *testing.T) *app.Horizon {
	t.Helper()
	cfg := impersonate(t, config, systemNamespace, horizonSA).cfg
	return startApp(t, "cluster1", cfg)
}

// startApp runs Horizon as `horizon serve` does (package app) with cluster ID id,
// reading the config cluster through cfg, until the test ends; its logs are shown
// when the test fails.
func startApp(t *testing.T, id network.ClusterID, cfg *rest.Config) *app.Horizon {
	t.Helper()
	logs := &kubetest.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts := app.NewOptions()
	opts.XDSAddress, opts.HTTPAddress = "127.0.0.1:0", "127.0.0.1:0"
	opts.Secrets.Namespace, opts.Secrets.ClusterID = systemNamespace, id
	opts.EDS.DebounceAfter, opts.EDS.DebounceMax = 10*time.Millisecond, 200*time.Millisecond
	opts.EDS.DefaultPassthrough, opts.EDS.ProxylessMTLS = true, true
	opts.Gateways.Retry = time.Second
	h, err := app.New(opts, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("horizon: %v", err)
		}
		if t.Failed() {
			t.Logf("horizon logs:\n%s", logs.String())
		}
	})
	return h
}

// scenarioReady is nil once h is ready with both of the scenario's clusters.
func scenarioReady(h *app.Horizon) error {
	if err := h.Ready(); err != nil {
		return fmt.Errorf("%w: clusters %+v", err, h.Registry().Clusters())
	}
	if len(h.Registry().Clusters()) < 2 {
		return fmt.Errorf("clusters: %+v, want cluster1 and cluster2", h.Registry().Clusters())
	}
	return nil
}

// playHelloworld does what the Deployment's ReplicaSet, the scheduler and the kubelet
// would for the Deployment of helloworld-<version>: one pod from its template, on a
// node, running and ready at ip. The cluster's EndpointSlice controller puts it in
// the helloworld Service's slice; the pod is deleted when the test ends.
func playHelloworld(t *testing.T, c *kubetest.Cluster, version, ip string) {
	t.Helper()
	ctx := t.Context()
	dep, err := c.Client.AppsV1().Deployments("sample").Get(ctx, "helloworld-"+version, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: testNode}}
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: dep.Name + "-0", Namespace: dep.Namespace, Labels: dep.Spec.Template.Labels,
		},
		Spec: *dep.Spec.Template.Spec.DeepCopy(),
	}
	pod.Spec.NodeName = testNode
	pod, err = c.Client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deletePods(t, c, "sample", "helloworld", "app=helloworld,version="+version) })
	if err := kubetest.SetPodStatus(ctx, c.Client, pod, ip, true); err != nil {
		t.Fatal(err)
	}
	waitSlices(t, c, "sample", "helloworld", endpointState(ip, true))
}

// ingressGatewayAt creates the istio-ingressgateway Service that mesh-networks.yaml
// names for network2, with the load-balancer address a cloud would give it.
func ingressGatewayAt(t *testing.T, c *kubetest.Cluster, addr string) {
	t.Helper()
	svcs := c.Client.CoreV1().Services(systemNamespace)
	svc, err := svcs.Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-ingressgateway", Namespace: systemNamespace, Labels: map[string]string{"istio": "ingressgateway"}},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"istio": "ingressgateway"},
			Ports:    []corev1.ServicePort{{Name: "tls", Port: 443, TargetPort: intstr.FromInt32(8443)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := svcs.Delete(context.Background(), svc.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete Service %s: %v", svc.Name, err)
		}
	})
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: addr}}
	if _, err := svcs.UpdateStatus(t.Context(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// wantAddresses checks that cla holds exactly the endpoints want (address:port).
func wantAddresses(cla *endpointv3.ClusterLoadAssignment, want ...string) error {
	if cla == nil {
		return errors.New("no ClusterLoadAssignment yet")
	}
	var got []string
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			got = append(got, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
		}
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		return fmt.Errorf("%s has endpoints %q, want %q", cla.GetClusterName(), got, want)
	}
	return nil
}
