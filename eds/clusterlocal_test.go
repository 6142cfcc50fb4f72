package eds

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

// clusterLocalFixture serves hosts A and B from clusters k1 (network1) and k2
// (network2, behind gateway 192.0.2.2), each with one mTLS endpoint per cluster.
func clusterLocalFixture(t *testing.T) *xdsFixture {
	t.Helper()
	mn, err := network.ParseMeshNetworks([]byte(`networks:
  network1: {endpoints: [{fromRegistry: k1}], gateways: [{address: 192.0.2.1, port: 15443}]}
  network2: {endpoints: [{fromRegistry: k2}], gateways: [{address: 192.0.2.2, port: 15443}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	nets, err := network.Compile(mn)
	if err != nil {
		t.Fatal(err)
	}
	f := newXDSFixture(t, func(o *Options) { o.Networks = func() *network.Networks { return nets } })
	f.src.setShard(hostA, "c1", nil)
	f.src.setShard(hostB, "c1", nil)
	for _, host := range []string{hostA, hostB} {
		for i, c := range []network.ClusterID{"k1", "k2"} {
			f.src.setShard(host, c, &clusterregistry.Shard{
				Service: clusterregistry.Service{Host: host, Name: "web", Namespace: "ns", Cluster: c, Ports: []clusterregistry.ServicePort{{Name: "http", Port: 80}}},
				Endpoints: map[int32][]clusterregistry.Endpoint{80: {{
					Address: fmt.Sprintf("10.0.%d.1", i+1), Port: 8080, Ready: true, Cluster: c,
					Network: network.NetworkID(fmt.Sprintf("network%d", i+1)), TLSMode: "istio",
				}}},
			})
		}
	}
	f.s.ConfigChanged()
	f.s.push(time.Now())
	return f
}

func clusterLocal(t *testing.T, yaml string) *network.ClusterLocalHosts {
	t.Helper()
	mc, err := network.ParseMeshConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return mc.ClusterLocal
}

var claB = ClusterName(hostB, 80)

// clusterLocalStream is a proxy with node metadata md subscribed to hosts A and B.
type clusterLocalStream struct {
	t    *testing.T
	st   discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	md   map[string]any
	resp *discoverygrpc.DiscoveryResponse
	clas map[string]*endpointv3.ClusterLoadAssignment // as last sent, by name
}

func openClusterLocalStream(t *testing.T, f *xdsFixture, md map[string]any) *clusterLocalStream {
	t.Helper()
	c := &clusterLocalStream{t: t, st: sotwStreamFor(t, f), md: md, clas: map[string]*endpointv3.ClusterLoadAssignment{}}
	c.request()
	return c
}

// request subscribes, or ACKs the last response.
func (c *clusterLocalStream) request() {
	c.t.Helper()
	req := &discoverygrpc.DiscoveryRequest{
		Node:    xdstest.NodeWithMetadata("sidecar~10.9.0.1~p.ns~ns.svc.cluster.local", c.md),
		TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA, claB},
	}
	if c.resp != nil {
		req.VersionInfo, req.ResponseNonce = c.resp.GetVersionInfo(), c.resp.GetNonce()
	}
	if err := c.st.Send(req); err != nil {
		c.t.Fatal(err)
	}
}

// recv receives a response, ACKs it, and checks the addresses of hosts A and B
// (an assignment the response leaves out is unchanged).
func (c *clusterLocalStream) recv(wantA, wantB []string) {
	c.t.Helper()
	r, clas := recvSotw(c.t, c.st)
	c.resp = r
	c.request()
	maps.Copy(c.clas, clas)
	gotA, gotB := addresses(c.clas[claA]), addresses(c.clas[claB])
	slices.Sort(gotA)
	slices.Sort(gotB)
	if !slices.Equal(gotA, wantA) || !slices.Equal(gotB, wantB) {
		c.t.Fatalf("%v: host A %v, host B %v; want %v, %v", c.md, gotA, gotB, wantA, wantB)
	}
}

// The mesh config of the tests: host A cluster-local, host B not.
const clusterLocalA = `serviceSettings:
- settings: {clusterLocal: true}
  hosts: [a.ns.svc.cluster.local, "*.other.svc.cluster.local"]
- settings: {clusterLocal: false}
  hosts: ["*"]
`

// TestClusterLocalHosts: a host the mesh config makes cluster-local is sent to a
// proxy with its own cluster's endpoints only (not the gateway to the other
// network), and with none to a proxy whose cluster is unknown or unnamed; another
// host keeps both clusters' (the other's through its network's gateway).
func TestClusterLocalHosts(t *testing.T) {
	f := clusterLocalFixture(t)
	f.s.SetClusterLocal(clusterLocal(t, clusterLocalA))
	f.s.push(time.Now())
	for _, tc := range []struct {
		name         string
		md           map[string]any
		wantA, wantB []string
	}{
		{name: "cluster1 proxy", md: map[string]any{MetaNetwork: "network1", MetaClusterID: "k1"},
			wantA: []string{"10.0.1.1"}, wantB: []string{"10.0.1.1", "192.0.2.2"}},
		{name: "cluster2 proxy", md: map[string]any{MetaNetwork: "network2", MetaClusterID: "k2"},
			wantA: []string{"10.0.2.1"}, wantB: []string{"10.0.2.1", "192.0.2.1"}},
		{name: "cluster2 proxy naming only its cluster", md: map[string]any{MetaClusterID: "k2"},
			wantA: []string{"10.0.2.1"}, wantB: []string{"10.0.2.1", "192.0.2.1"}},
		{name: "unknown cluster", md: map[string]any{MetaNetwork: "network1", MetaClusterID: "k9"},
			wantB: []string{"10.0.1.1", "192.0.2.2"}},
		{name: "no cluster", md: map[string]any{MetaNetwork: "network1"},
			wantB: []string{"10.0.1.1", "192.0.2.2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			openClusterLocalStream(t, f, tc.md).recv(tc.wantA, tc.wantB)
		})
	}
}

// TestClusterLocalReload: making host A cluster-local, and then not, changes what a
// connected cluster1 proxy is sent, without reconnecting; the proxy moves to the
// group of a view naming its cluster and back.
func TestClusterLocalReload(t *testing.T) {
	f := clusterLocalFixture(t)
	c := openClusterLocalStream(t, f, map[string]any{MetaNetwork: "network1", MetaClusterID: "k1"})
	both := []string{"10.0.1.1", "192.0.2.2"}
	group := func(want View) {
		t.Helper()
		kubetest.Eventually(t, 10*time.Second, func() error {
			for _, p := range f.s.Proxies() {
				if p.Group != want.Key() {
					return fmt.Errorf("proxy in group %q, want %q", p.Group, want.Key())
				}
			}
			return nil
		})
	}
	c.recv(both, both)
	group(View{Role: RoleSidecar, Network: "network1"})

	f.s.SetClusterLocal(clusterLocal(t, clusterLocalA))
	f.s.push(time.Now())
	c.recv([]string{"10.0.1.1"}, both)
	group(View{Role: RoleSidecar, Network: "network1", Home: "k1"})

	f.s.SetClusterLocal(clusterLocal(t, ""))
	f.s.push(time.Now())
	c.recv(both, both)
	group(View{Role: RoleSidecar, Network: "network1"})
}
