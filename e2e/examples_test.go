package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/grpc/credentials/tls/certprovider"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/eds"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/network/gatewaysource"
	"github.com/horizon-mesh/horizon/network/meshsource"
)

// examplesDir is the repository's examples/, seen from this package.
const examplesDir = "../examples"

// The reference scenario's names, as the examples spell them.
const (
	helloHost       = "helloworld.sample.svc.cluster.local"
	horizonSA       = "horizon"
	readerSA        = "horizon-reader-service-account"
	v1PodIP         = "10.10.0.90"    // helloworld v1 in cluster1, as in the scenario's proxy log
	v2PodIP         = "10.20.0.91"    // helloworld v2 in cluster2
	network2Gateway = "192.23.120.32" // cluster2's ingress gateway, as in the scenario's proxy log
)

// exampleApply is one Kubernetes manifest of examples/ and the cluster it goes to:
// "config" is cluster1, "remote" is cluster2.
type exampleApply struct {
	cluster string
	file    string
}

// exampleManifests are the Kubernetes manifests in examples/, in the order
// examples/README.md applies them.
var exampleManifests = []exampleApply{
	{"config", "gateway-crd.yaml"},
	{"config", "horizon.yaml"},
	{"config", "mesh-networks.yaml"},
	{"config", "helloworld-v1.yaml"},
	{"config", "cross-network-gateway.yaml"},
	{"remote", "remote-reader.yaml"},
	{"remote", "helloworld-v2.yaml"},
}

// exampleBootstraps are the Envoy bootstrap files in examples/.
var exampleBootstraps = []string{"envoy-sidecar-bootstrap.yaml", "envoy-gateway-bootstrap.yaml"}

func exampleCluster(name string) *kubetest.Cluster {
	switch name {
	case "config":
		return config
	case "remote":
		return remote
	}
	panic("unknown cluster " + name)
}

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
		objs := applyExample(t, exampleCluster(a.cluster), a.file)
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
	if want := []string{"serve", "--cluster-id", "cluster1", "--namespace", systemNamespace}; !slices.Equal(c.Args, want) {
		t.Errorf("Deployment horizon args = %q, want %q", c.Args, want)
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
	if want := []string{"grpc-xds:15010→15010", "http-monitoring:15014→15014"}; !slices.Equal(ports, want) {
		t.Errorf("Service horizon ports = %q, want %q", ports, want)
	}
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

// TestExamplesRBAC checks, as the service accounts themselves (impersonated), that
// horizon.yaml and remote-reader.yaml grant what Horizon reads and nothing more.
func TestExamplesRBAC(t *testing.T) {
	read := []string{"get", "list", "watch"}
	endpointSources := []groupResource{
		{"", "services"}, {"", "pods"}, {"", "nodes"}, {"", "namespaces"}, {"discovery.k8s.io", "endpointslices"},
	}
	t.Run("horizon in the config cluster", func(t *testing.T) {
		applyExample(t, config, "gateway-crd.yaml")
		applyExample(t, config, "horizon.yaml")
		as := impersonate(t, config, systemNamespace, horizonSA)
		clusterWide := append(slices.Clone(endpointSources), groupResource{"networking.istio.io", "gateways"})
		inSystem := append(slices.Clone(clusterWide), groupResource{"", "secrets"}, groupResource{"", "configmaps"})

		for _, gr := range clusterWide {
			as.mustListAndWatch(t, gr, "")
		}
		for _, gr := range []groupResource{{"", "secrets"}, {"", "configmaps"}} {
			as.mustListAndWatch(t, gr, systemNamespace)
			as.mustBeForbidden(t, "list", gr, "")
			as.mustBeForbidden(t, "list", gr, "default")
			as.mustBeForbidden(t, "list", gr, "kube-system")
			as.mustBeForbidden(t, "create", gr, systemNamespace)
		}
		for _, gr := range clusterWide {
			as.mustBeForbidden(t, "create", gr, "default")
		}
		as.mustHaveExactly(t, systemNamespace, inSystem, read)
		as.mustHaveExactly(t, "default", clusterWide, read)
	})
	t.Run("reader in the remote cluster", func(t *testing.T) {
		applyExample(t, remote, "remote-reader.yaml")
		as := impersonate(t, remote, systemNamespace, readerSA)
		for _, gr := range endpointSources {
			as.mustListAndWatch(t, gr, "")
			as.mustBeForbidden(t, "create", gr, systemNamespace)
		}
		for _, gr := range []groupResource{{"", "secrets"}, {"", "configmaps"}} {
			for _, ns := range []string{systemNamespace, "default", ""} {
				as.mustBeForbidden(t, "list", gr, ns)
			}
		}
		as.mustBeForbidden(t, "list", groupResource{"networking.istio.io", "gateways"}, "")
		as.mustHaveExactly(t, systemNamespace, endpointSources, read)
		as.mustHaveExactly(t, "default", endpointSources, read)
	})
}

// TestExamplesRemoteReaderMatchesCreateRemoteSecret runs `horizon create-remote-secret`
// against a cluster where remote-reader.yaml is applied: it must find every object in
// place and change nothing (it resets a ClusterRole whose rules differ, and creates
// objects it does not find under its names), and its Secret's token must be the
// reader's.
func TestExamplesRemoteReaderMatchesCreateRemoteSecret(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	bin := filepath.Join(dir, "horizon")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/horizon")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build horizon: %v\n%s", err, out)
	}
	applyExample(t, remote, "remote-reader.yaml")
	kc, err := remote.Kubeconfig(remote.Config.BearerToken)
	if err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(dir, "remote.kubeconfig")
	if err := os.WriteFile(kcPath, kc, 0o600); err != nil {
		t.Fatal(err)
	}

	before := readerObjects(t, remote)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "create-remote-secret", "--kubeconfig", kcPath, "--name", "cluster2", "--token-wait", "0s")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("create-remote-secret: %v\n%s", err, stderr.String())
	}
	after := readerObjects(t, remote)
	for k, v := range after {
		if before[k] != v {
			t.Errorf("create-remote-secret changed or created %s: examples/remote-reader.yaml does not match what it creates", k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			t.Errorf("%s disappeared", k)
		}
	}

	var secret corev1.Secret
	if err := yaml.UnmarshalStrict(stdout.Bytes(), &secret); err != nil {
		t.Fatalf("create-remote-secret output: %v\n%s", err, stdout.String())
	}
	if secret.Namespace != systemNamespace || secret.Labels[network.LabelMultiCluster] != "true" || secret.StringData["cluster2"] == "" {
		t.Fatalf("create-remote-secret printed %s/%s labels %v keys %v, want a labelled Secret in %s with key cluster2",
			secret.Namespace, secret.Name, secret.Labels, slices.Sorted(maps.Keys(secret.StringData)), systemNamespace)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig([]byte(secret.StringData["cluster2"]))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	who, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := who.Status.UserInfo.Username, serviceAccountUser(systemNamespace, readerSA); got != want {
		t.Errorf("the remote Secret authenticates as %q, want %q", got, want)
	}
}

// TestExamplesEnvoyBootstrap parses both Envoy bootstraps strictly, validates them
// with Envoy's own rules, and checks that Horizon sees their nodes as the walkthrough
// says and that they can use what Horizon sends.
func TestExamplesEnvoyBootstrap(t *testing.T) {
	xdsHost, xdsPort := horizonXDSService(t)
	for _, tc := range []struct {
		file     string
		view     eds.View
		clusters []string // static clusters
	}{
		{
			file:     "envoy-sidecar-bootstrap.yaml",
			view:     eds.View{Role: eds.RoleSidecar, Network: "network1"},
			clusters: []string{"xds-grpc", "sds-grpc"},
		},
		{
			file: "envoy-gateway-bootstrap.yaml",
			view: eds.View{Role: eds.RoleRouter, Network: "network2",
				Labels: map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"}},
			clusters: []string{"xds-grpc"},
		},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b := loadBootstrap(t, tc.file)
			if got := eds.ViewOf(b.GetNode()); !reflect.DeepEqual(got, tc.view) {
				t.Errorf("Horizon sees the node as %+v, want %+v", got, tc.view)
			}
			if addr := b.GetAdmin().GetAddress().GetSocketAddress(); addr.GetAddress() != "127.0.0.1" || addr.GetPortValue() != 15000 {
				t.Errorf("admin on %s:%d, want 127.0.0.1:15000", addr.GetAddress(), addr.GetPortValue())
			}

			dr := b.GetDynamicResources()
			ads := dr.GetAdsConfig()
			if ads.GetApiType() != corev3.ApiConfigSource_GRPC || ads.GetTransportApiVersion() != corev3.ApiVersion_V3 ||
				len(ads.GetGrpcServices()) != 1 || ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "xds-grpc" {
				t.Errorf("ads_config = %v, want GRPC v3 through cluster xds-grpc", ads)
			}
			for name, src := range map[string]*corev3.ConfigSource{"cds_config": dr.GetCdsConfig(), "lds_config": dr.GetLdsConfig()} {
				if src.GetAds() == nil || src.GetResourceApiVersion() != corev3.ApiVersion_V3 {
					t.Errorf("%s = %v, want ADS, v3", name, src)
				}
			}

			static := map[string]*clusterv3.Cluster{}
			var names []string
			for _, c := range b.GetStaticResources().GetClusters() {
				static[c.GetName()] = c
				names = append(names, c.GetName())
				if !usesHTTP2(t, c) {
					t.Errorf("static cluster %s does not speak HTTP/2, which gRPC needs", c.GetName())
				}
				if c.GetLoadAssignment().GetClusterName() != c.GetName() {
					t.Errorf("static cluster %s: load_assignment names %q", c.GetName(), c.GetLoadAssignment().GetClusterName())
				}
			}
			if !slices.Equal(names, tc.clusters) {
				t.Errorf("static clusters = %q, want %q", names, tc.clusters)
			}
			if got := soleAddress(static["xds-grpc"]).GetSocketAddress(); got.GetAddress() != xdsHost || got.GetPortValue() != xdsPort {
				t.Errorf("xds-grpc points at %s:%d, want Horizon's Service %s:%d (horizon.yaml)", got.GetAddress(), got.GetPortValue(), xdsHost, xdsPort)
			}
			if sds, ok := static["sds-grpc"]; ok {
				if got := soleAddress(sds).GetPipe().GetPath(); got != "./var/run/secrets/workload-spiffe-uds/socket" {
					t.Errorf("sds-grpc pipe = %q, want the node agent's socket", got)
				}
			}
			if tc.view.Role == eds.RoleSidecar {
				// The sidecar's clusters from Horizon fetch their certificates from
				// gRPC services that must be static clusters of the bootstrap.
				for _, name := range envoyGRPCClusters(t, eds.BuildCluster(helloHost, 5000)) {
					if static[name] == nil {
						t.Errorf("Horizon's sidecar clusters use gRPC cluster %q, which the bootstrap lacks", name)
					}
				}
			}
		})
	}
}

// TestExamplesReferenceScenario runs the walkthrough: every example applied, helloworld
// v1 and v2 running (the test plays the kubelet), cluster2's ingress gateway at the
// scenario's address, a remote Secret holding a real token of remote-reader.yaml's
// service account, and Horizon wired as `horizon serve` wires it, reading the config
// cluster as horizon.yaml's service account. The Envoy bootstraps' nodes then get
// what the walkthrough says: the sidecar on network1 the v1 pod IP and network2's
// gateway on 443, the gateway a 443 passthrough listener and the v2 pod IP.
func TestExamplesReferenceScenario(t *testing.T) {
	ctx := t.Context()
	for _, a := range exampleManifests {
		applyExample(t, exampleCluster(a.cluster), a.file)
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
		if port := l.GetAddress().GetSocketAddress().GetPortValue(); port != 443 {
			return fmt.Errorf("gateway listener %s on port %d, want 443", l.GetName(), port)
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

// TestExamplesReadme checks examples/README.md against the files: its table lists
// every file, the files it names exist, its YAML applies cleanly to a real API server
// and its proxyless gRPC bootstrap is one grpc-go accepts.
func TestExamplesReadme(t *testing.T) {
	readme := string(readExample(t, "README.md"))
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		if !strings.Contains(readme, "| [`"+name+"`]("+name+") |") {
			t.Errorf("the table of examples/README.md does not list %s", name)
		}
	}
	for _, m := range regexp.MustCompile(`examples/([a-z0-9-]+\.yaml)`).FindAllStringSubmatch(readme, -1) {
		if _, err := os.Stat(filepath.Join(examplesDir, m[1])); err != nil {
			t.Errorf("examples/README.md names %s: %v", m[0], err)
		}
	}

	blocks := map[string][]string{}
	for _, m := range regexp.MustCompile("(?s)```(yaml|json)\n(.*?)```").FindAllStringSubmatch(readme, -1) {
		blocks[m[1]] = append(blocks[m[1]], m[2])
	}
	if len(blocks["yaml"]) == 0 || len(blocks["json"]) != 1 {
		t.Fatalf("examples/README.md has %d YAML and %d JSON blocks, want some and one", len(blocks["yaml"]), len(blocks["json"]))
	}
	if err := kubetest.EnsureNamespace(t.Context(), third.Client, systemNamespace, nil); err != nil {
		t.Fatal(err)
	}
	for i, y := range blocks["yaml"] {
		applyManifest(t, third, fmt.Sprintf("YAML block %d of examples/README.md", i+1), []byte(y))
	}
	bootstrap := []byte(blocks["json"][0])
	if err := grpcAcceptsBootstrap(bootstrap); err != nil {
		t.Errorf("grpc-go refuses the proxyless bootstrap of examples/README.md: %v", err)
	}
	var b struct {
		Node                 json.RawMessage `json:"node"`
		CertificateProviders map[string]struct {
			Plugin string          `json:"plugin_name"`
			Config json.RawMessage `json:"config"`
		} `json:"certificate_providers"`
	}
	if err := json.Unmarshal(bootstrap, &b); err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{}
	if err := protojson.Unmarshal(b.Node, node); err != nil {
		t.Fatal(err)
	}
	if got, want := eds.ViewOf(node), (eds.View{Role: eds.RoleGRPC, Network: "network1"}); !reflect.DeepEqual(got, want) {
		t.Errorf("Horizon sees the proxyless client as %+v, want %+v", got, want)
	}
	// grpc-go skips a provider whose plugin it does not know: the instance must be
	// one it builds.
	if p, ok := b.CertificateProviders[eds.CertProviderInstance]; !ok {
		t.Errorf("the proxyless bootstrap has no certificate provider instance %q", eds.CertProviderInstance)
	} else if _, err := certprovider.ParseConfig(p.Plugin, p.Config); err != nil {
		t.Errorf("certificate provider instance %q: %v", eds.CertProviderInstance, err)
	}
}

// grpcAcceptsBootstrap builds grpc-go's xDS resolver from bootstrap, which parses
// and checks it as a client does when it dials xds:///, then closes it again.
func grpcAcceptsBootstrap(bootstrap []byte) error {
	builder, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		return err
	}
	r, err := builder.Build(resolver.Target{URL: url.URL{Scheme: "xds", Path: "/" + eds.GRPCTarget(helloHost, 5000)}},
		nopClientConn{}, resolver.BuildOptions{})
	if err != nil {
		return err
	}
	r.Close()
	return nil
}

// nopClientConn is a gRPC channel that ignores what its resolver tells it.
type nopClientConn struct{}

func (nopClientConn) UpdateState(resolver.State) error { return nil }
func (nopClientConn) ReportError(error)                {}
func (nopClientConn) NewAddress([]resolver.Address)    {}
func (nopClientConn) ParseServiceConfig(string) *serviceconfig.ParseResult {
	return &serviceconfig.ParseResult{Err: errors.New("no service config expected")}
}

// startLeastPrivilegeHorizon runs Horizon as `horizon serve` does (package app),
// reading the config cluster as the service account of horizon.yaml, until the test
// ends.
func startLeastPrivilegeHorizon(t *testing.T) *app.Horizon {
	t.Helper()
	cfg := impersonate(t, config, systemNamespace, horizonSA).cfg
	logs := &kubetest.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts := app.NewOptions()
	opts.XDSAddress, opts.HTTPAddress = "127.0.0.1:0", "127.0.0.1:0"
	opts.Secrets.Namespace, opts.Secrets.ClusterID = systemNamespace, "cluster1"
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

// playHelloworld does what the kubelet and the EndpointSlice controller would for
// the Deployment of helloworld-<version>: one ready pod at ip, with the Deployment's
// pod labels, in the helloworld Service's EndpointSlice.
func playHelloworld(t *testing.T, c *kubetest.Cluster, version, ip string) {
	t.Helper()
	dep, err := c.Client.AppsV1().Deployments("sample").Get(t.Context(), "helloworld-"+version, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := "helloworld-" + version + "-0"
	err = kubetest.Deploy(t.Context(), c.Client, kubetest.Service{
		Namespace: "sample", Name: "helloworld",
		Labels:   map[string]string{"app": "helloworld"},
		Ports:    []corev1.ServicePort{{Name: "http", Port: 5000, TargetPort: intstr.FromInt32(5000)}},
		Backends: []kubetest.Backend{{Pod: pod, IP: ip, Ready: true, Labels: dep.Spec.Template.Labels}},
	})
	t.Cleanup(func() {
		ctx := context.Background()
		zero := int64(0)
		if err := c.Client.CoreV1().Pods("sample").Delete(ctx, pod, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete pod %s: %v", pod, err)
		}
		if err := c.Client.DiscoveryV1().EndpointSlices("sample").Delete(ctx, "helloworld-test", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete EndpointSlice helloworld-test: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
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

func readExample(t *testing.T, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(examplesDir, file))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// applyExample applies examples/<file> to c as kubetest.Apply (kubectl apply) does,
// fails the test on an error or a server warning, and deletes the objects again when
// the test ends: other tests share the clusters. Namespaces stay (no controller
// would finish deleting them), as does what they hold that this file did not create.
func applyExample(t *testing.T, c *kubetest.Cluster, file string) []*unstructured.Unstructured {
	t.Helper()
	return applyManifest(t, c, "examples/"+file, readExample(t, file))
}

// applyManifest is applyExample for manifest data named name.
func applyManifest(t *testing.T, c *kubetest.Cluster, name string, data []byte) []*unstructured.Unstructured {
	t.Helper()
	objs, err := kubetest.ParseManifests(data)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(objs) == 0 {
		t.Fatalf("%s holds no object", name)
	}
	t.Cleanup(func() { deleteObjects(t, c, objs) })
	w := &warningRecorder{}
	cfg := rest.CopyConfig(c.Config)
	cfg.WarningHandler = w
	if err := kubetest.Apply(t.Context(), cfg, data); err != nil {
		t.Fatalf("apply %s to %s: %v", name, c.Name, err)
	}
	if got := w.list(); len(got) > 0 {
		t.Errorf("apply %s to %s: the server warned: %q", name, c.Name, got)
	}
	return objs
}

// deleteObjects deletes objs from c, last first, Namespaces excepted, and waits until
// a deleted CustomResourceDefinition is gone so that the next test can create it anew.
func deleteObjects(t *testing.T, c *kubetest.Cluster, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	mapper := restMapper(t, c.Config)
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Error(err)
		return
	}
	for _, o := range slices.Backward(objs) {
		gvk := o.GroupVersionKind()
		if gvk.Kind == "Namespace" {
			continue
		}
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Errorf("delete %s %s: %v", gvk.Kind, o.GetName(), err)
			continue
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		if err := ri.Delete(ctx, o.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete %s %s/%s from %s: %v", gvk.Kind, o.GetNamespace(), o.GetName(), c.Name, err)
			continue
		}
		if gvk.Kind == "CustomResourceDefinition" {
			kubetest.Eventually(t, 30*time.Second, func() error {
				if _, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					return fmt.Errorf("CustomResourceDefinition %s still there after deletion (%v)", o.GetName(), err)
				}
				return nil
			})
		}
	}
}

func restMapper(t *testing.T, cfg *rest.Config) meta.RESTMapper {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
}

// warningRecorder keeps the warnings an API server returns.
type warningRecorder struct {
	mu   sync.Mutex
	msgs []string // guarded by mu
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warningRecorder) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs)
}

type groupResource struct{ group, resource string }

func (gr groupResource) String() string {
	if gr.group == "" {
		return gr.resource
	}
	return gr.resource + "." + gr.group
}

// identity is a client acting as a service account, through impersonation by a
// cluster administrator.
type identity struct {
	name string
	cfg  *rest.Config
	cs   kubernetes.Interface
	dyn  dynamic.Interface
	gvr  func(groupResource) schema.GroupVersionResource
}

func serviceAccountUser(ns, name string) string { return "system:serviceaccount:" + ns + ":" + name }

// impersonate returns a client of c acting as service account ns/name, with the
// groups a real token of that account carries.
func impersonate(t *testing.T, c *kubetest.Cluster, ns, name string) *identity {
	t.Helper()
	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: serviceAccountUser(ns, name),
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	versions := map[string]string{"": "v1", "discovery.k8s.io": "v1", "networking.istio.io": "v1"}
	return &identity{name: ns + "/" + name, cfg: cfg, cs: cs, dyn: dyn, gvr: func(gr groupResource) schema.GroupVersionResource {
		return schema.GroupVersionResource{Group: gr.group, Version: versions[gr.group], Resource: gr.resource}
	}}
}

func where(ns string) string {
	if ns == "" {
		return "cluster-wide"
	}
	return "in " + ns
}

// mustListAndWatch lists and watches gr in ns ("" for every namespace), as an
// informer does.
func (id *identity) mustListAndWatch(t *testing.T, gr groupResource, ns string) {
	t.Helper()
	ri := id.dyn.Resource(id.gvr(gr)).Namespace(ns)
	if _, err := ri.List(t.Context(), metav1.ListOptions{Limit: 1}); err != nil {
		t.Errorf("%s cannot list %s %s: %v", id.name, gr, where(ns), err)
		return
	}
	timeout := int64(1)
	w, err := ri.Watch(t.Context(), metav1.ListOptions{TimeoutSeconds: &timeout})
	if err != nil {
		t.Errorf("%s cannot watch %s %s: %v", id.name, gr, where(ns), err)
		return
	}
	w.Stop()
}

// kinds of the resources used here.
var kinds = map[string]string{
	"services": "Service", "pods": "Pod", "nodes": "Node", "namespaces": "Namespace", "endpointslices": "EndpointSlice",
	"gateways": "Gateway", "secrets": "Secret", "configmaps": "ConfigMap",
}

// clusterScoped are the resources used here that belong to no namespace.
var clusterScoped = map[groupResource]bool{{"", "nodes"}: true, {"", "namespaces"}: true}

// mustBeForbidden tries verb ("list" or "create", the latter as a dry run) on gr in
// ns ("" for every namespace; ignored for cluster-scoped resources) and wants it
// refused.
func (id *identity) mustBeForbidden(t *testing.T, verb string, gr groupResource, ns string) {
	t.Helper()
	if clusterScoped[gr] {
		ns = ""
	}
	ri := id.dyn.Resource(id.gvr(gr)).Namespace(ns)
	var err error
	switch verb {
	case "list":
		_, err = ri.List(t.Context(), metav1.ListOptions{Limit: 1})
	case "create":
		// A refused request is never decoded; one let through fails the test whatever
		// its body.
		gvr := id.gvr(gr)
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": schema.GroupVersion{Group: gvr.Group, Version: gvr.Version}.String(),
			"kind":       kinds[gr.resource],
			"metadata":   map[string]any{"name": "examples-rbac-probe"},
		}}
		if ns != "" {
			obj.SetNamespace(ns)
		}
		_, err = ri.Create(t.Context(), obj, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	default:
		t.Fatalf("unknown verb %s", verb)
	}
	if !apierrors.IsForbidden(err) {
		t.Errorf("%s %s %s %s: got %v, want forbidden", id.name, verb, gr, where(ns), err)
	}
}

// selfReviewResources may be created by every authenticated user (the cluster's
// default system:basic-user role): asking what one may do is not a permission to
// grant or to refuse.
var selfReviewResources = []string{"selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"}

// mustHaveExactly asks the API server for every permission the identity has in ns
// and wants exactly verbs on exactly resources, besides asking about itself.
func (id *identity) mustHaveExactly(t *testing.T, ns string, resources []groupResource, verbs []string) {
	t.Helper()
	rr, err := id.cs.AuthorizationV1().SelfSubjectRulesReviews().Create(t.Context(), &authorizationv1.SelfSubjectRulesReview{
		Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rr.Status.Incomplete {
		t.Fatalf("rules review for %s in %s incomplete: %s", id.name, ns, rr.Status.EvaluationError)
	}
	got := map[string][]string{} // group/resource → verbs
	for _, r := range rr.Status.ResourceRules {
		if slices.Equal(r.Verbs, []string{"create"}) && allIn(r.Resources, selfReviewResources) &&
			allIn(r.APIGroups, []string{authorizationv1.GroupName, authenticationv1.GroupName}) {
			continue
		}
		if len(r.ResourceNames) > 0 {
			t.Errorf("%s in %s: unexpected rule limited to names %v: %+v", id.name, ns, r.ResourceNames, r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				k := groupResource{g, res}.String()
				got[k] = append(got[k], r.Verbs...)
			}
		}
	}
	want := map[string][]string{}
	for _, gr := range resources {
		want[gr.String()] = slices.Clone(verbs)
	}
	for k, v := range got {
		sort.Strings(v)
		got[k] = slices.Compact(v)
	}
	for k := range want {
		sort.Strings(want[k])
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s may, in %s:\n  %v\nwant exactly:\n  %v", id.name, ns, got, want)
	}
}

func allIn(items, set []string) bool {
	for _, i := range items {
		if !slices.Contains(set, i) {
			return false
		}
	}
	return len(items) > 0
}

// readerObjects returns the identity of every object create-remote-secret may create
// or change in c: kind/namespace/name → resourceVersion.
func readerObjects(t *testing.T, c *kubetest.Cluster) map[string]string {
	t.Helper()
	ctx := t.Context()
	out := map[string]string{}
	add := func(kind string, items []metav1.Object) {
		for _, o := range items {
			out[kind+"/"+o.GetNamespace()+"/"+o.GetName()] = o.GetResourceVersion()
		}
	}
	nss, err := c.Client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	add("Namespace", objectsOf(nss.Items))
	sas, err := c.Client.CoreV1().ServiceAccounts(systemNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	add("ServiceAccount", objectsOf(sas.Items))
	secrets, err := c.Client.CoreV1().Secrets(systemNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	add("Secret", objectsOf(secrets.Items))
	roles, err := c.Client.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	add("ClusterRole", objectsOf(roles.Items))
	bindings, err := c.Client.RbacV1().ClusterRoleBindings().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	add("ClusterRoleBinding", objectsOf(bindings.Items))
	return out
}

func objectsOf[T any, PT interface {
	*T
	metav1.Object
}](items []T) []metav1.Object {
	out := make([]metav1.Object, len(items))
	for i := range items {
		out[i] = PT(&items[i])
	}
	return out
}

// horizonXDSService returns where horizon.yaml's Service serves xDS:
// <name>.<namespace>.svc and the port named grpc-xds.
func horizonXDSService(t *testing.T) (string, uint32) {
	t.Helper()
	objs, err := kubetest.ParseManifests(readExample(t, "horizon.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() != "Service" {
			continue
		}
		var svc corev1.Service
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &svc); err != nil {
			t.Fatal(err)
		}
		for _, p := range svc.Spec.Ports {
			if p.Name == "grpc-xds" {
				return svc.Name + "." + svc.Namespace + ".svc", uint32(p.Port)
			}
		}
	}
	t.Fatal("horizon.yaml has no Service with a port named grpc-xds")
	return "", 0
}

// loadBootstrap parses examples/<file> as Envoy does (YAML, unknown fields refused)
// and validates it, with the typed extensions inside, by Envoy's own rules.
func loadBootstrap(t *testing.T, file string) *bootstrapv3.Bootstrap {
	t.Helper()
	js, err := yaml.YAMLToJSONStrict(readExample(t, file))
	if err != nil {
		t.Fatalf("examples/%s: %v", file, err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, b); err != nil {
		t.Fatalf("examples/%s is no Envoy v3 bootstrap: %v", file, err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("examples/%s: %v", file, err)
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		for name, a := range c.GetTypedExtensionProtocolOptions() {
			m, err := a.UnmarshalNew()
			if err != nil {
				t.Fatalf("examples/%s: cluster %s: %s: %v", file, c.GetName(), name, err)
			}
			if v, ok := m.(interface{ ValidateAll() error }); ok {
				if err := v.ValidateAll(); err != nil {
					t.Errorf("examples/%s: cluster %s: %s: %v", file, c.GetName(), name, err)
				}
			}
		}
	}
	return b
}

// usesHTTP2 reports whether cluster c speaks HTTP/2 to its upstream.
func usesHTTP2(t *testing.T, c *clusterv3.Cluster) bool {
	t.Helper()
	const key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	a, ok := c.GetTypedExtensionProtocolOptions()[key]
	if !ok {
		return false
	}
	var opts httpv3.HttpProtocolOptions
	if err := a.UnmarshalTo(&opts); err != nil {
		t.Errorf("cluster %s: %s: %v", c.GetName(), key, err)
		return false
	}
	return opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}

// soleAddress returns the address of a static cluster's one endpoint, or nil.
func soleAddress(c *clusterv3.Cluster) *corev3.Address {
	eps := c.GetLoadAssignment().GetEndpoints()
	if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
		return nil
	}
	return eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress()
}

// envoyGRPCClusters returns the clusters that m's gRPC services (SDS among them)
// name, looking inside its typed configs.
func envoyGRPCClusters(t *testing.T, m proto.Message) []string {
	t.Helper()
	js, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var tree any
	if err := json.Unmarshal(js, &tree); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if g, ok := v["envoyGrpc"].(map[string]any); ok {
				if name, ok := g["clusterName"].(string); ok {
					out = append(out, name)
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(tree)
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) == 0 {
		t.Fatal("no gRPC service found: the walk is looking in the wrong place")
	}
	return out
}
