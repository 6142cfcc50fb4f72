package app_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
)

// TestClusterLocalEndToEnd runs Horizon with the config cluster and a remote one,
// both serving web.cl-app, and makes the host cluster-local through the mesh key of
// ConfigMap istio: each cluster's proxy is then sent its own cluster's endpoint only,
// live, on the stream it holds; removing the setting brings both back.
func TestClusterLocalEndToEnd(t *testing.T) {
	ctx := t.Context()
	const (
		sys  = "clapp-system"
		ns   = "cl-app"
		host = "web." + ns + ".svc.cluster.local"
		name = "outbound|80||" + host
	)
	remote, err := env.StartCluster(ctx, "cl-remote")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remote.Kill)
	for i, c := range []*kubetest.Cluster{cluster, remote} {
		if err := kubetest.Deploy(ctx, c.Client, kubetest.Service{
			Namespace: ns, Name: "web",
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
			Backends: []kubetest.Backend{{Pod: "web-0", IP: fmt.Sprintf("10.8.%d.1", i), Ready: true}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := kubetest.EnsureNamespace(ctx, cluster.Client, sys, nil); err != nil {
		t.Fatal(err)
	}
	kubeconfig, _, err := remote.MintKubeconfig(ctx, "istio-system", "horizon-reader")
	if err != nil {
		t.Fatal(err)
	}
	putSecret(t, sys, "cl-remote", map[string][]byte{"remote1": kubeconfig})
	putConfigMap(t, sys, "istio", map[string]string{"mesh": "serviceSettings: []\n"})

	opts := testOptions()
	opts.Secrets.Namespace = sys
	h := runHorizon(t, opts, cluster.Config)
	kubetest.Eventually(t, 30*time.Second, h.Ready)

	proxy := func(clusterID string) *xdstest.Proxy {
		return xdstest.Connect(t, h.XDSAddr().String(), xdstest.NodeWithMetadata(
			"sidecar~10.0.0.1~sleep-0."+ns+"~"+ns+".svc.cluster.local", map[string]any{"CLUSTER_ID": clusterID}),
			xdstest.Options{EDS: []string{name}})
	}
	proxies := map[string]*xdstest.Proxy{"config": proxy("config"), "remote1": proxy("remote1")}
	want := func(byCluster map[string][]string) {
		t.Helper()
		kubetest.Eventually(t, 20*time.Second, func() error {
			for id, p := range proxies {
				got := addresses(p.CLA(name))
				if !slices.Equal(got, byCluster[id]) {
					return fmt.Errorf("proxy of cluster %s holds %v, want %v", id, got, byCluster[id])
				}
			}
			return nil
		})
	}
	both := []string{"10.8.0.1:8080", "10.8.1.1:8080"}
	want(map[string][]string{"config": both, "remote1": both})

	putConfigMap(t, sys, "istio", map[string]string{"mesh": "serviceSettings:\n- settings: {clusterLocal: true}\n  hosts: [\"*." + ns + ".svc.cluster.local\"]\n"})
	want(map[string][]string{"config": {"10.8.0.1:8080"}, "remote1": {"10.8.1.1:8080"}})

	putConfigMap(t, sys, "istio", map[string]string{"mesh": "serviceSettings: []\n"})
	want(map[string][]string{"config": both, "remote1": both})
}

// addresses lists an assignment's endpoint addresses, sorted.
func addresses(cla *endpointv3.ClusterLoadAssignment) []string {
	var out []string
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
		}
	}
	slices.Sort(out)
	return out
}
