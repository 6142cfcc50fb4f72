package eds

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

// podEP is an endpoint of pod ns/name running as service account sa.
func podEP(cluster, addr, pod, sa string) clusterregistry.Endpoint {
	return clusterregistry.Endpoint{Address: addr, Port: 5000, Ready: true, Cluster: network.ClusterID(cluster), Pod: pod, ServiceAccount: sa, TLSMode: network.TLSModeIstio}
}

func TestPeerIdentitiesOf(t *testing.T) {
	const id = "spiffe://cluster.local/ns/sample/sa/"
	many := func(n int) []clusterregistry.Endpoint {
		var out []clusterregistry.Endpoint
		for i := range n {
			// Twice each: duplicates do not count towards the cap.
			for range 2 {
				out = append(out, podEP("c1", fmt.Sprintf("10.1.%d.%d", i/250, i%250), fmt.Sprintf("sample/p%d", i), fmt.Sprintf("sa%03d", i)))
			}
		}
		return out
	}
	manyIDs := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf(id+"sa%03d", i))
		}
		return out
	}
	tests := []struct {
		name string
		td   string
		eps  map[network.ClusterID][]clusterregistry.Endpoint
		want PeerIdentities
	}{
		{
			name: "sorted and deduplicated across clusters",
			eps: map[network.ClusterID][]clusterregistry.Endpoint{
				"c1": {podEP("c1", "10.1.0.1", "sample/v1-a", "helloworld-v1"), podEP("c1", "10.1.0.2", "sample/v1-b", "helloworld-v1")},
				"c2": {podEP("c2", "10.2.0.1", "sample/v2-a", "helloworld-v2"), podEP("c2", "10.2.0.2", "sample/v0", "bookinfo")},
			},
			want: PeerIdentities{IDs: []string{id + "bookinfo", id + "helloworld-v1", id + "helloworld-v2"}},
		},
		{
			name: "no service account is default",
			eps:  map[network.ClusterID][]clusterregistry.Endpoint{"c1": {podEP("c1", "10.1.0.1", "sample/a", "")}},
			want: PeerIdentities{IDs: []string{id + "default"}},
		},
		{
			name: "the trust domain",
			td:   "example.org",
			eps:  map[network.ClusterID][]clusterregistry.Endpoint{"c1": {podEP("c1", "10.1.0.1", "sample/a", "web")}},
			want: PeerIdentities{IDs: []string{"spiffe://example.org/ns/sample/sa/web"}},
		},
		{
			name: "endpoints without a pod have no identity",
			eps: map[network.ClusterID][]clusterregistry.Endpoint{"c1": {
				{Address: "192.0.2.1", Port: 5000, Cluster: "c1"}, podEP("c1", "10.1.0.1", "sample/a", "web"),
			}},
			want: PeerIdentities{IDs: []string{id + "web"}},
		},
		{
			name: "no pod at all: the service's namespace",
			eps:  map[network.ClusterID][]clusterregistry.Endpoint{"c1": {{Address: "192.0.2.1", Port: 5000, Cluster: "c1"}}},
			want: PeerIdentities{Prefix: id},
		},
		{
			name: "no endpoints: the service's namespace",
			want: PeerIdentities{Prefix: id},
		},
		{
			name: "at the cap",
			eps:  map[network.ClusterID][]clusterregistry.Endpoint{"c1": many(MaxPeerIdentities)},
			want: PeerIdentities{IDs: manyIDs(MaxPeerIdentities)},
		},
		{
			name: "past the cap: the service's namespace",
			eps:  map[network.ClusterID][]clusterregistry.Endpoint{"c1": many(MaxPeerIdentities + 1)},
			want: PeerIdentities{Prefix: id},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td := tt.td
			if td == "" {
				td = DefaultTrustDomain
			}
			got := peerIdentitiesOf(td, "sample", tt.eps)
			if !got.equal(tt.want) {
				t.Errorf("peerIdentitiesOf = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// sidecarSANs returns the typed SAN matchers of the tlsMode-istio transport socket
// of a sidecar cluster, checking that they come with the SDS root CA.
func sidecarSANs(t *testing.T, c *clusterv3.Cluster) []*tlsv3.SubjectAltNameMatcher {
	t.Helper()
	for _, m := range c.GetTransportSocketMatches() {
		if m.GetName() != "tlsMode-istio" {
			continue
		}
		tc := &tlsv3.UpstreamTlsContext{}
		if err := m.GetTransportSocket().GetTypedConfig().UnmarshalTo(tc); err != nil {
			t.Fatal(err)
		}
		combined := tc.GetCommonTlsContext().GetCombinedValidationContext()
		if combined.GetValidationContextSdsSecretConfig().GetName() != "ROOTCA" {
			t.Fatalf("cluster %s validates with %v, want the SDS secret ROOTCA", c.GetName(), combined)
		}
		return combined.GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
	}
	t.Fatalf("cluster %s has no tlsMode-istio transport socket", c.GetName())
	return nil
}

// grpcSANs returns the SAN matchers of a proxyless client's cluster, where grpc-go
// reads them (validation_context.match_subject_alt_names), checking that they come
// with the certificate provider's root CA.
func grpcSANs(t *testing.T, c *clusterv3.Cluster) []*matcherv3.StringMatcher {
	t.Helper()
	tc := &tlsv3.UpstreamTlsContext{}
	if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(tc); err != nil {
		t.Fatal(err)
	}
	vc := tc.GetCommonTlsContext().GetValidationContext()
	if vc.GetCaCertificateProviderInstance().GetCertificateName() != "ROOTCA" {
		t.Fatalf("cluster %s validates with %v, want the certificate provider's ROOTCA", c.GetName(), vc)
	}
	return vc.GetMatchSubjectAltNames()
}

func matcherStrings(ms []*matcherv3.StringMatcher) []string {
	var out []string
	for _, m := range ms {
		switch p := m.GetMatchPattern().(type) {
		case *matcherv3.StringMatcher_Exact:
			out = append(out, "exact:"+p.Exact)
		case *matcherv3.StringMatcher_Prefix:
			out = append(out, "prefix:"+p.Prefix)
		default:
			out = append(out, fmt.Sprintf("%T", p))
		}
	}
	return out
}

func sanStrings(t *testing.T, sans []*tlsv3.SubjectAltNameMatcher) []string {
	t.Helper()
	var ms []*matcherv3.StringMatcher
	for _, s := range sans {
		if s.GetSanType() != tlsv3.SubjectAltNameMatcher_URI {
			t.Errorf("SAN matcher of type %v, want URI", s.GetSanType())
		}
		ms = append(ms, s.GetMatcher())
	}
	return matcherStrings(ms)
}

// TestClusterPeerIdentities checks where the identities go in the sidecar's and the
// proxyless client's clusters, that both pass Envoy's validation, and keeps goldens
// of both.
func TestClusterPeerIdentities(t *testing.T) {
	const host = "helloworld.sample.svc.cluster.local"
	tests := []struct {
		name  string
		peers PeerIdentities
		want  []string
	}{
		{"exact", PeerIdentities{IDs: []string{"spiffe://cluster.local/ns/sample/sa/a", "spiffe://cluster.local/ns/sample/sa/b"}},
			[]string{"exact:spiffe://cluster.local/ns/sample/sa/a", "exact:spiffe://cluster.local/ns/sample/sa/b"}},
		{"namespace", PeerIdentities{Prefix: "spiffe://cluster.local/ns/sample/sa/"}, []string{"prefix:spiffe://cluster.local/ns/sample/sa/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sidecar, proxyless := BuildCluster(host, 5000, tt.peers), buildGRPCCluster(host, 5000, true, tt.peers)
			for _, c := range []*clusterv3.Cluster{sidecar, proxyless, buildGRPCCluster(host, 5000, false, tt.peers)} {
				if err := c.ValidateAll(); err != nil {
					t.Errorf("cluster invalid for Envoy: %v", err)
				}
			}
			if got := sanStrings(t, sidecarSANs(t, sidecar)); !slices.Equal(got, tt.want) {
				t.Errorf("sidecar SAN matchers %q, want %q", got, tt.want)
			}
			if got := matcherStrings(grpcSANs(t, proxyless)); !slices.Equal(got, tt.want) {
				t.Errorf("proxyless SAN matchers %q, want %q", got, tt.want)
			}
			if tt.name != "exact" {
				return
			}
			for name, c := range map[string]*clusterv3.Cluster{"sidecar": sidecar, "proxyless": proxyless} {
				b, err := protojson.Marshal(c)
				if err != nil {
					t.Fatal(err)
				}
				var out bytes.Buffer
				if err := json.Indent(&out, b, "", "  "); err != nil {
					t.Fatal(err)
				}
				out.WriteByte('\n')
				golden(t, filepath.Join("testdata", "helloworld-cluster-"+name+".json"), out.Bytes())
			}
		})
	}
}

func TestTrustDomainValidation(t *testing.T) {
	for _, td := range []string{"", "cluster.local", "example.org", "td_1-a"} {
		o := Options{TrustDomain: td}
		if err := o.Validate(); err != nil {
			t.Errorf("trust domain %q refused: %v", td, err)
		}
	}
	for _, td := range []string{"Cluster.local", "a/b", "spiffe://x", "a b", strings.Repeat("a", 256)} {
		o := Options{TrustDomain: td}
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), "--trust-domain") {
			t.Errorf("trust domain %q: err = %v, want an error naming --trust-domain", td, err)
		}
	}
}

// TestCDSFollowsPeerIdentities serves host A to a delta proxyless client and a
// delta sidecar: a change of the service accounts behind A re-sends A's cluster
// with the new identities; a change of endpoints that keeps them does not re-send
// it. Endpoints on a network reached only through a gateway count too.
func TestCDSFollowsPeerIdentities(t *testing.T) {
	// c2 is network2, which has a gateway (testNetworks): a client on network1
	// reaches its pods through it, and still checks their identities.
	f := newXDSFixture(t, func(o *Options) {
		o.ProxylessMTLS = true
		o.Networks = func() *network.Networks { return testNetworks(t) }
	})
	set := func(c1, c2 []clusterregistry.Endpoint) {
		for id, eps := range map[network.ClusterID][]clusterregistry.Endpoint{"c1": c1, "c2": c2} {
			f.src.setShard(hostA, id, &clusterregistry.Shard{
				Service:   clusterregistry.Service{Host: hostA, Name: "a", Namespace: "ns", Cluster: id, Ports: []clusterregistry.ServicePort{{Name: "grpc", Port: 80}}},
				Endpoints: map[int32][]clusterregistry.Endpoint{80: eps},
			})
		}
		f.s.HostChanged(hostA)
		f.s.push(time.Now())
	}
	const id = "spiffe://cluster.local/ns/ns/sa/"
	set([]clusterregistry.Endpoint{podEP("c1", "10.0.0.1", "ns/a-1", "a")}, []clusterregistry.Endpoint{podEP("c2", "10.2.0.1", "ns/a-2", "remote")})

	grpcClient := xdstest.Connect(t, f.addr, xdstest.NodeWithMetadata("sidecar~10.9.0.2~c.ns~ns.svc.cluster.local",
		map[string]any{"GENERATOR": "grpc", "NETWORK": "network1"}), xdstest.Options{Delta: true, CDS: true, EDS: []string{claA}})
	sidecar := xdstest.Connect(t, f.addr, xdstest.Node("sidecar~10.9.0.3~s.ns~ns.svc.cluster.local", "network1"),
		xdstest.Options{Delta: true, CDS: true, EDS: []string{claA}})
	want := func(ids ...string) {
		t.Helper()
		var exact []string
		for _, i := range ids {
			exact = append(exact, "exact:"+id+i)
		}
		kubetest.Eventually(t, 10*time.Second, func() error {
			c, s := grpcClient.Cluster(claA), sidecar.Cluster(claA)
			if c == nil || s == nil {
				return fmt.Errorf("cluster %s not received yet", claA)
			}
			if got := matcherStrings(grpcSANs(t, c)); !slices.Equal(got, exact) {
				return fmt.Errorf("proxyless client accepts %q, want %q", got, exact)
			}
			if got := sanStrings(t, sidecarSANs(t, s)); !slices.Equal(got, exact) {
				return fmt.Errorf("sidecar accepts %q, want %q", got, exact)
			}
			return nil
		})
	}
	wantCLA := func(p *xdstest.Proxy, addrs ...string) {
		t.Helper()
		kubetest.Eventually(t, 10*time.Second, func() error {
			if got := addresses(p.CLA(claA)); !slices.Equal(slices.Sorted(slices.Values(got)), addrs) {
				return fmt.Errorf("%s endpoints %q, want %q", claA, got, addrs)
			}
			return nil
		})
	}
	want("a", "remote")
	wantCLA(grpcClient, "10.0.0.1", "192.0.2.20")
	sent := func() [2]int {
		return [2]int{grpcClient.Received(xdstest.TypeCluster, claA), sidecar.Received(xdstest.TypeCluster, claA)}
	}
	before := sent()

	// Another pod of the same service account: new endpoints, same identities.
	set([]clusterregistry.Endpoint{podEP("c1", "10.0.0.1", "ns/a-1", "a"), podEP("c1", "10.0.0.3", "ns/a-3", "a")},
		[]clusterregistry.Endpoint{podEP("c2", "10.2.0.1", "ns/a-2", "remote")})
	wantCLA(grpcClient, "10.0.0.1", "10.0.0.3", "192.0.2.20")
	wantCLA(sidecar, "10.0.0.1", "10.0.0.3", "192.0.2.20")

	// The remote pod now runs as another service account (and one with none).
	set([]clusterregistry.Endpoint{podEP("c1", "10.0.0.1", "ns/a-1", "a"), podEP("c1", "10.0.0.3", "ns/a-3", "a")},
		[]clusterregistry.Endpoint{podEP("c2", "10.2.0.1", "ns/a-2", "remote-v2"), podEP("c2", "10.2.0.2", "ns/a-4", "")})
	want("a", "default", "remote-v2")
	// Each was sent A's cluster once more: for the new identities, not for the
	// endpoints before them (streams keep order, so that push was handled first).
	if got := sent(); got != [2]int{before[0] + 1, before[1] + 1} {
		t.Errorf("cluster %s sent %v times in all, want %v (once more each, for the new identities only)", claA, got, [2]int{before[0] + 1, before[1] + 1})
	}
}

// BenchmarkPeerIdentities measures what a push adds per changed service port:
// collecting the identities of 1,000 endpoints (in four clusters, ten service
// accounts), next to BenchmarkEndpointGeneration/1000/1's ClusterLoadAssignment,
// which is built once per proxy group.
func BenchmarkPeerIdentities(b *testing.B) {
	eps := map[network.ClusterID][]clusterregistry.Endpoint{}
	for e := range 1000 {
		c := network.ClusterID(fmt.Sprintf("cluster%d", e%4+1))
		eps[c] = append(eps[c], podEP(string(c), fmt.Sprintf("10.%d.%d.%d", e%4+1, e/250, e%250+1), fmt.Sprintf("ns/p%d", e), fmt.Sprintf("sa%d", e%10)))
	}
	for b.Loop() {
		if p := peerIdentitiesOf(DefaultTrustDomain, "ns", eps); len(p.IDs) != 10 {
			b.Fatalf("%d identities, want 10", len(p.IDs))
		}
	}
}
