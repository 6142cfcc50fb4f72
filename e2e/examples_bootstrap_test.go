package e2e

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/eds"
)

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
			file: "envoy-sidecar-bootstrap.yaml",
			view: eds.View{Role: eds.RoleSidecar, Network: "network1",
				Locality: clusterregistry.Locality{Region: "us-east1", Zone: "us-east1-b"}},
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
			// Horizon ranks endpoints by the proxy's locality for traffic
			// distribution; a bootstrap without one is a proxy of nowhere.
			if loc := b.GetNode().GetLocality(); loc.GetRegion() == "" || loc.GetZone() == "" {
				t.Errorf("node locality = %v, want a region and a zone", loc)
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
				for _, name := range envoyGRPCClusters(t, eds.BuildCluster(helloHost, 5000, eds.PeerIdentities{IDs: []string{"spiffe://cluster.local/ns/sample/sa/default"}})) {
					if static[name] == nil {
						t.Errorf("Horizon's sidecar clusters use gRPC cluster %q, which the bootstrap lacks", name)
					}
				}
			}
		})
	}
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
