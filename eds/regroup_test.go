package eds

import (
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	dto "github.com/prometheus/client_model/go"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

// TestProxyFollowsItsClusterNetwork: a proxy that names only its cluster, connected
// while that cluster has no network, is moved to its cluster's view at the push
// after the cluster gains a network label, and back when it loses it, without
// reconnecting. The endpoints are in cluster c1 on network1, which has a gateway;
// they are not mTLS, so a proxy off network1 gets none of them and one on it gets
// the pod IP.
func TestProxyFollowsItsClusterNetwork(t *testing.T) {
	mn, err := network.ParseMeshNetworks([]byte(`networks: {network1: {endpoints: [{fromRegistry: c1}], gateways: [{address: 192.0.2.1, port: 15443}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	nets, err := network.Compile(mn)
	if err != nil {
		t.Fatal(err)
	}
	f := newXDSFixture(t, func(o *Options) { o.Networks = func() *network.Networks { return nets } })
	labels := map[network.ClusterID]network.NetworkID{} // clusters' namespace labels
	setLabels := func() {
		f.src.mu.Lock()
		f.src.nets = maps.Clone(labels)
		f.src.mu.Unlock()
		f.s.push(time.Now())
	}
	setLabels()

	nd := xdstest.NodeWithMetadata("sidecar~10.9.0.1~k9.ns~ns.svc.cluster.local", map[string]any{MetaClusterID: "k9"})
	st := sotwStreamFor(t, f)
	var resp *discoverygrpc.DiscoveryResponse
	request := func() {
		t.Helper()
		req := &discoverygrpc.DiscoveryRequest{Node: nd, TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA}}
		if resp != nil {
			req.VersionInfo, req.ResponseNonce = resp.GetVersionInfo(), resp.GetNonce()
		}
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(want ...string) {
		t.Helper()
		r, clas := recvSotw(t, st)
		resp = r
		if got := addresses(clas[claA]); !slices.Equal(got, want) {
			t.Fatalf("got %v, want %v", got, want)
		}
		request() // ACK
	}
	group := func(want string) {
		t.Helper()
		kubetest.Eventually(t, 10*time.Second, func() error {
			for _, p := range f.s.Proxies() {
				if p.Group != want {
					return fmt.Errorf("proxy in group %q, want %q", p.Group, want)
				}
			}
			return nil
		})
	}
	request()
	recv() // cluster k9 is not known: the unnamed network, off network1
	group(View{Role: RoleSidecar}.Key())

	labels["k9"] = "network1"
	setLabels()
	recv("10.0.0.1") // on network1 now
	group(View{Role: RoleSidecar, Cluster: "k9"}.Key())

	delete(labels, "k9")
	setLabels()
	recv() // k9 unknown again
	group(View{Role: RoleSidecar}.Key())
}

// TestRegroupKeepsRefusedViews: when a push makes a connected proxy's view one
// Horizon would refuse (its NETWORK is gone from meshNetworks), the proxy keeps its
// group and stream, and is not counted as a refused view.
func TestRegroupKeepsRefusedViews(t *testing.T) {
	compile := func(yaml string) *network.Networks {
		t.Helper()
		mn, err := network.ParseMeshNetworks([]byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		nets, err := network.Compile(mn)
		if err != nil {
			t.Fatal(err)
		}
		return nets
	}
	var nets atomic.Pointer[network.Networks]
	nets.Store(compile(`networks: {network1: {endpoints: [{fromRegistry: c1}]}}`))
	f := newXDSFixture(t, func(o *Options) { o.Networks = nets.Load })
	f.src.mu.Lock()
	f.src.nets = map[network.ClusterID]network.NetworkID{}
	f.src.mu.Unlock()
	f.s.ConfigChanged()
	f.s.push(time.Now())

	st := sotwStreamFor(t, f)
	nd := xdstest.NodeWithMetadata("sidecar~10.9.0.1~n1.ns~ns.svc.cluster.local", map[string]any{MetaNetwork: "network1"})
	if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: nd, TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA}}); err != nil {
		t.Fatal(err)
	}
	recvSotw(t, st)
	nets.Store(compile(`networks: {network2: {endpoints: [{fromRegistry: c2}]}}`))
	f.s.ConfigChanged()
	f.s.push(time.Now())
	var m dto.Metric
	if err := f.s.metrics.refused.WithLabelValues(refusedUnknownNetwork).Write(&m); err != nil || m.GetCounter().GetValue() != 0 {
		t.Fatalf("refused views %v (error %v), want 0: the connected proxy was not refused", m.GetCounter().GetValue(), err)
	}
	if ps := f.s.Proxies(); len(ps) != 1 || ps[0].Group != ViewOf(nd).Key() {
		t.Fatalf("proxies %+v, want the one in its group", ps)
	}
}

// TestProxyFollowsTrafficDistribution: a connected proxy's locality splits groups
// only while some service has a traffic distribution. When host A gets one, the
// proxy (in zone-a) moves to the group of its locality and is sent A's endpoints in
// priorities, its zone first; when A loses it, the proxy goes back to the shared
// group and one priority.
func TestProxyFollowsTrafficDistribution(t *testing.T) {
	f := newXDSFixture(t)
	setA := func(d network.TrafficDistribution) {
		sh := &clusterregistry.Shard{
			Service: clusterregistry.Service{Host: hostA, Name: "a", Namespace: "ns", Cluster: "c1",
				Ports: []clusterregistry.ServicePort{{Name: "http", Port: 80}}, TrafficDistribution: d},
			Endpoints: map[int32][]clusterregistry.Endpoint{80: {
				{Address: "10.0.0.1", Port: 8080, Ready: true, Cluster: "c1", Locality: &clusterregistry.Locality{Region: "r", Zone: "zone-a"}},
				{Address: "10.0.0.2", Port: 8080, Ready: true, Cluster: "c1", Locality: &clusterregistry.Locality{Region: "r", Zone: "zone-b"}},
			}},
		}
		f.src.setShard(hostA, "c1", sh)
		f.s.HostChanged(hostA)
		f.s.push(time.Now())
	}
	setA(network.DistributionUnset)

	nd := xdstest.NodeWithMetadata("sidecar~10.9.0.1~p.ns~ns.svc.cluster.local", map[string]any{MetaNodeName: "node-1"})
	nd.Locality = &corev3.Locality{Region: "r", Zone: "zone-a"}
	st := sotwStreamFor(t, f)
	var resp *discoverygrpc.DiscoveryResponse
	request := func() {
		t.Helper()
		req := &discoverygrpc.DiscoveryRequest{Node: nd, TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA}}
		if resp != nil {
			req.VersionInfo, req.ResponseNonce = resp.GetVersionInfo(), resp.GetNonce()
		}
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(want ...string) {
		t.Helper()
		r, clas := recvSotw(t, st)
		resp = r
		if got := xdstest.PrioritySummary(clas[claA]); !slices.Equal(got, want) {
			t.Fatalf("got %q, want %q", got, want)
		}
		request() // ACK
	}
	group := func(want string) {
		t.Helper()
		kubetest.Eventually(t, 10*time.Second, func() error {
			for _, p := range f.s.Proxies() {
				if p.Group != want {
					return fmt.Errorf("proxy in group %q, want %q", p.Group, want)
				}
			}
			return nil
		})
	}
	request()
	recv("p0 r/zone-a/(1): 10.0.0.1:8080*1", "p0 r/zone-b/(1): 10.0.0.2:8080*1")
	group("sidecar~")

	setA(network.DistributionPreferSameZone)
	recv("p0 r/zone-a/(1): 10.0.0.1:8080*1", "p1 r/zone-b/(1): 10.0.0.2:8080*1")
	group("sidecar~~loc:r/zone-a/") // no PreferSameNode: the node does not split groups

	setA(network.DistributionUnset)
	recv("p0 r/zone-a/(1): 10.0.0.1:8080*1", "p0 r/zone-b/(1): 10.0.0.2:8080*1")
	group("sidecar~")
}
