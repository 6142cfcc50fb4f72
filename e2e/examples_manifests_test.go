package e2e

import (
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	mcscrd "sigs.k8s.io/mcs-api/config/crd"

	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/network/meshsource"
)

// TestExamplesApply applies every Kubernetes manifest in examples/ to a real API
// server, in the order the walkthrough does, and fails on any error or warning the
// server returns (unknown or duplicate fields, deprecated APIs).
func TestExamplesApply(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, a := range exampleManifests {
		known[a.file] = true
	}
	for _, b := range exampleBootstraps {
		known[b] = true
	}
	var found []string
	for _, f := range files {
		name := filepath.Base(f)
		found = append(found, name)
		if !known[name] {
			t.Errorf("examples/%s is covered by no test: add it to exampleManifests or exampleBootstraps", name)
		}
	}
	for name := range known {
		if !slices.Contains(found, name) {
			t.Errorf("examples/%s is missing", name)
		}
	}
	// A bootstrap is no Kubernetes manifest: kubectl apply would refuse it.
	for _, b := range exampleBootstraps {
		data := readExample(t, b)
		if _, err := kubetest.ParseManifests(data); err == nil {
			t.Errorf("examples/%s parses as a Kubernetes manifest; it should be an Envoy bootstrap", b)
		}
	}

	t.Run("warnings are caught", func(t *testing.T) {
		// The check below is only worth something if the server reports what it drops.
		w := &warningRecorder{}
		cfg := rest.CopyConfig(third.Config)
		cfg.WarningHandler = w
		dyn, err := dynamic.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		cm := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": "examples-warning-probe", "namespace": "default"},
			"date":     map[string]any{"misspelt": "data"},
		}}
		_, err = dyn.Resource(corev1.SchemeGroupVersion.WithResource("configmaps")).Namespace("default").
			Create(t.Context(), cm, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatal(err)
		}
		if got := w.list(); len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), "unknown field") {
			t.Fatalf("server warnings for an unknown field = %q, want one naming it", got)
		}
	})

	for _, a := range exampleManifests {
		objs := applyExampleStep(t, a)
		// The walkthrough applies files without -n: every namespaced object must say
		// where it goes.
		mapper := restMapper(t, exampleCluster(a.cluster).Config)
		for _, o := range objs {
			m, err := mapper.RESTMapping(o.GroupVersionKind().GroupKind(), o.GroupVersionKind().Version)
			if err != nil {
				t.Fatalf("examples/%s: %s %s: %v", a.file, o.GetKind(), o.GetName(), err)
			}
			if m.Scope.Name() == meta.RESTScopeNameNamespace && o.GetNamespace() == "" {
				t.Errorf("examples/%s: %s %s has no namespace", a.file, o.GetKind(), o.GetName())
			}
		}
	}

	// What the objects say is what Horizon and the walkthrough rely on.
	ctx := t.Context()
	dep, err := config.Client.AppsV1().Deployments(systemNamespace).Get(ctx, "horizon", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	if pod.ServiceAccountName != horizonSA {
		t.Errorf("Deployment horizon runs as service account %q, want %q", pod.ServiceAccountName, horizonSA)
	}
	if want := []string{"serve", "--cluster-id", "cluster1", "--namespace", systemNamespace,
		"--xds-address", ":15010", "--xds-allow-plaintext-remote"}; !slices.Equal(c.Args, want) {
		t.Errorf("Deployment horizon args = %q, want %q", c.Args, want)
	}
	// The args are valid, and xDS listens where the Service sends proxies: on every
	// interface, which plaintext xDS is only allowed to with the opt-in flag.
	opts := app.NewOptions()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	opts.AddFlags(fs)
	if err := fs.Parse(c.Args[1:]); err != nil {
		t.Errorf("Deployment horizon args: %v", err)
	} else if err := opts.Validate(); err != nil {
		t.Errorf("Deployment horizon args: %v", err)
	} else if addr := opts.XDSListenAddress(); addr != ":15010" {
		t.Errorf("Deployment horizon: xDS listens on %q, want :15010 (every interface)", addr)
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("Deployment horizon: container must run as non-root with a read-only root filesystem, got %+v", sc)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port != intstr.FromInt32(15014) {
			t.Errorf("Deployment horizon: %s probe = %+v, want GET %s on 15014", p.name, p.probe, p.path)
		}
	}
	svc, err := config.Client.CoreV1().Services(systemNamespace).Get(ctx, "horizon", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ports []string
	for _, p := range svc.Spec.Ports {
		ports = append(ports, fmt.Sprintf("%s:%d→%s", p.Name, p.Port, p.TargetPort.String()))
	}
	// The HTTP port (metrics, debug) is not published: probes and scraping reach the
	// pod directly.
	if want := []string{"grpc-xds:15010→15010"}; !slices.Equal(ports, want) {
		t.Errorf("Service horizon ports = %q, want %q", ports, want)
	}
	checkHorizonNetworkPolicy(t, pod)
	for _, cl := range []*kubetest.Cluster{config, remote} {
		deps, err := cl.Client.AppsV1().Deployments("sample").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(deps.Items) != 1 {
			t.Errorf("%d Deployments in %s/sample, want one", len(deps.Items), cl.Name)
		}
		for _, d := range deps.Items {
			if l := d.Spec.Template.Labels; l["app"] != "helloworld" || l[network.LabelTLSMode] != network.TLSModeIstio {
				t.Errorf("Deployment %s in %s: pod labels %v, want app=helloworld and %s=%s", d.Name, cl.Name, l, network.LabelTLSMode, network.TLSModeIstio)
			}
		}
	}
}

// checkHorizonNetworkPolicy checks NetworkPolicy istio-system/horizon as the API
// server holds it: it selects Horizon's pods, admits xDS (15010) from pods of every
// namespace and the HTTP port (15014) from namespace monitoring only, and leaves
// every container port of the pod covered by a rule.
func checkHorizonNetworkPolicy(t *testing.T, pod corev1.PodSpec) {
	t.Helper()
	ctx := t.Context()
	np, err := config.Client.NetworkingV1().NetworkPolicies(systemNamespace).Get(ctx, "horizon", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("examples/horizon.yaml: NetworkPolicy horizon: %v", err)
	}
	dep, err := config.Client.AppsV1().Deployments(systemNamespace).Get(ctx, "horizon", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		t.Fatal(err)
	}
	if len(np.Spec.PodSelector.MatchLabels)+len(np.Spec.PodSelector.MatchExpressions) == 0 || !sel.Matches(labels.Set(dep.Spec.Template.Labels)) {
		t.Errorf("NetworkPolicy horizon selects %v, want Horizon's pods (labels %v) and only them", sel, dep.Spec.Template.Labels)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Errorf("NetworkPolicy horizon policy types %v, want Ingress", np.Spec.PolicyTypes)
	}
	// port → who may connect, as "namespaces{selector}"; any other kind of peer shows
	// as such and fails the comparison.
	from := map[int32][]string{}
	for _, rule := range np.Spec.Ingress {
		var peers []string
		for _, p := range rule.From {
			switch {
			case p.NamespaceSelector != nil && p.PodSelector == nil && p.IPBlock == nil:
				peers = append(peers, "namespaces{"+metav1.FormatLabelSelector(p.NamespaceSelector)+"}")
			default:
				peers = append(peers, fmt.Sprintf("other peer %+v", p))
			}
		}
		if len(rule.From) == 0 {
			peers = append(peers, "anyone")
		}
		if len(rule.Ports) == 0 {
			t.Errorf("NetworkPolicy horizon: a rule admitting %q on every port", peers)
		}
		for _, p := range rule.Ports {
			if p.Port == nil || p.Port.Type != intstr.Int || p.EndPort != nil {
				t.Errorf("NetworkPolicy horizon: port %+v, want a number", p)
				continue
			}
			from[p.Port.IntVal] = append(from[p.Port.IntVal], peers...)
		}
	}
	want := map[int32][]string{
		15010: {"namespaces{<none>}"},
		15014: {"namespaces{kubernetes.io/metadata.name=monitoring}"},
	}
	if !reflect.DeepEqual(from, want) {
		t.Errorf("NetworkPolicy horizon admits %q, want %q", from, want)
	}
	for _, c := range pod.Containers {
		for _, p := range c.Ports {
			if _, ok := from[p.ContainerPort]; !ok {
				t.Errorf("NetworkPolicy horizon: no rule for container port %s (%d)", p.Name, p.ContainerPort)
			}
		}
	}
}

// TestExamplesMeshNetworks checks mesh-networks.yaml: the ConfigMap Horizon reads,
// a valid meshNetworks, and the reference scenario's networks: cluster1's endpoints
// on network1 with no gateway, cluster2's on network2 behind the istio-ingressgateway
// Service on 443.
func TestExamplesMeshNetworks(t *testing.T) {
	objs, err := kubetest.ParseManifests(readExample(t, "mesh-networks.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].GetKind() != "ConfigMap" || objs[0].GetName() != meshsource.ConfigMapName || objs[0].GetNamespace() != systemNamespace {
		t.Fatalf("mesh-networks.yaml must hold ConfigMap %s/%s alone", systemNamespace, meshsource.ConfigMapName)
	}
	data, found, err := unstructured.NestedString(objs[0].Object, "data", meshsource.ConfigMapKey)
	if err != nil || !found {
		t.Fatalf("ConfigMap %s has no key %s (%v)", meshsource.ConfigMapName, meshsource.ConfigMapKey, err)
	}
	mn, err := network.ParseMeshNetworks([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	nets, err := network.Compile(mn)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := nets.Names(), []network.NetworkID{"network1", "network2"}; !slices.Equal(got, want) {
		t.Errorf("networks = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		cluster network.ClusterID
		want    network.NetworkID
	}{{"cluster1", "network1"}, {"cluster2", "network2"}} {
		if got := nets.EndpointNetwork("", tc.cluster, "10.0.0.1"); got != tc.want {
			t.Errorf("endpoint in %s is on %q, want %q", tc.cluster, got, tc.want)
		}
	}
	// The ingress gateway Service as each cluster would report it: only cluster2's
	// is network2's gateway, on the meshNetworks port; network1 has none.
	gwService := func(cluster network.ClusterID, addr string) network.GatewayService {
		return network.GatewayService{
			Cluster: cluster, Name: "istio-ingressgateway", Namespace: systemNamespace,
			Host:      "istio-ingressgateway.istio-system.svc.cluster.local",
			Ports:     []int32{80, 443},
			Addresses: []string{addr},
		}
	}
	var got []string
	for _, g := range nets.Gateways([]network.GatewayService{gwService("cluster1", "192.0.2.1"), gwService("cluster2", network2Gateway)}, nil) {
		got = append(got, fmt.Sprintf("%s %s %s:%d", g.Network, g.Cluster, g.Address, g.Port))
	}
	if want := []string{"network2 cluster2 " + network2Gateway + ":443"}; !slices.Equal(got, want) {
		t.Errorf("gateways = %q, want %q", got, want)
	}
}

// applyExampleStep applies one of exampleManifests as the walkthrough does: the
// mcs-api ServiceExport CRD of the version Horizon is built with first, before the
// export.
func applyExampleStep(t *testing.T, a exampleApply) []*unstructured.Unstructured {
	t.Helper()
	if a.file == "helloworld-export.yaml" {
		applyManifest(t, exampleCluster(a.cluster), "the mcs-api ServiceExport CRD", mcscrd.ServiceExportCRD)
	}
	return applyExample(t, exampleCluster(a.cluster), a.file)
}
