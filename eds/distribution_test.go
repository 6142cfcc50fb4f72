package eds

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	dto "github.com/prometheus/client_model/go"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/network"
)

// prioritySummary is xdstest.Summary with each locality's priority in front.
func prioritySummary(cla *endpointv3.ClusterLoadAssignment) []string {
	var out []string
	for _, l := range cla.GetEndpoints() {
		loc := l.GetLocality()
		var eps []string
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			s := fmt.Sprintf("%s:%d*%d", sa.GetAddress(), sa.GetPortValue(), e.GetLoadBalancingWeight().GetValue())
			if e.GetMetadata() != nil {
				s += "+mtls"
			}
			eps = append(eps, s)
		}
		out = append(out, fmt.Sprintf("p%d %s/%s/%s(%d): %s", l.GetPriority(), loc.GetRegion(), loc.GetZone(), loc.GetSubZone(),
			l.GetLoadBalancingWeight().GetValue(), strings.Join(eps, " ")))
	}
	return out
}

// checkPriorities fails unless cla's priorities run from 0 without gaps, in order,
// with each locality at most once per priority: what gRPC's xDS client accepts.
func checkPriorities(t *testing.T, cla *endpointv3.ClusterLoadAssignment) {
	t.Helper()
	seen := map[string]bool{}
	var last uint32
	for i, l := range cla.GetEndpoints() {
		p := l.GetPriority()
		if i == 0 && p != 0 || i > 0 && p != last && p != last+1 {
			t.Errorf("priority %d after %d: priorities must run from 0 without gaps", p, last)
		}
		key := fmt.Sprint(p, l.GetLocality())
		if seen[key] {
			t.Errorf("locality %v twice in priority %d", l.GetLocality(), p)
		}
		seen[key] = true
		last = p
	}
}

func onNode(e clusterregistry.Endpoint, node string) clusterregistry.Endpoint {
	e.Node = node
	return e
}

func notReady(e clusterregistry.Endpoint) clusterregistry.Endpoint {
	e.Ready = false
	return e
}

func TestBuildDistributed(t *testing.T) {
	nets := testNetworks(t)
	netGW := []network.Gateway{gw("network2", "", "192.0.2.20", 15443)}
	// The proxy: network1 (cluster c1), us/east-1a/s1, on node n1.
	here := View{Role: RoleSidecar, Network: "network1",
		Locality: clusterregistry.Locality{Region: "us", Zone: "east-1a", Subzone: "s1"}, Node: "n1", NodeCluster: "c1"}
	spread := byCluster(
		ep("c1", "10.1.0.1", true, "us/east-1a/s1"),
		ep("c1", "10.1.0.2", true, "us/east-1a/s2"),
		ep("c1", "10.1.0.3", true, "us/east-1b"),
		ep("c1", "10.1.0.4", true, "us/west-2a"),
		ep("c1", "10.1.0.5", true, "eu/west-1z"),
		ep("c4", "10.4.0.1", false, "us/east-1a/s1"),
		ep("c2", "10.2.0.1", true, "us/east-1a/s1"),
	)
	tests := []struct {
		name     string
		dist     network.TrafficDistribution
		eps      map[network.ClusterID][]clusterregistry.Endpoint
		gateways []network.Gateway
		view     View
		want     []string
	}{
		{
			name: "PreferSameZone: subzone, zone, region, network, flat network, gateway",
			dist: network.DistributionPreferSameZone, eps: spread, gateways: netGW, view: here,
			want: []string{
				"p0 us/east-1a/s1(1): 10.1.0.1:5000*1+mtls",
				"p1 us/east-1a/s2(1): 10.1.0.2:5000*1+mtls",
				"p2 us/east-1b/(1): 10.1.0.3:5000*1+mtls",
				"p2 us/west-2a/(1): 10.1.0.4:5000*1+mtls",
				"p3 eu/west-1z/(1): 10.1.0.5:5000*1+mtls",
				// network3 has no gateway: sent directly, after the proxy's network.
				"p4 us/east-1a/s1(1): 10.4.0.1:5000*1",
				// network2's gateway stands for its endpoint, in its locality, last.
				"p5 us/east-1a/s1(1): 192.0.2.20:15443*1+mtls",
			},
		},
		{
			name: "unset: today's single priority",
			dist: network.DistributionUnset, eps: spread, gateways: netGW, view: here,
			want: []string{
				"p0 eu/west-1z/(1): 10.1.0.5:5000*1+mtls",
				"p0 us/east-1a/s1(3): 10.1.0.1:5000*1+mtls 10.4.0.1:5000*1 192.0.2.20:15443*1+mtls",
				"p0 us/east-1a/s2(1): 10.1.0.2:5000*1+mtls",
				"p0 us/east-1b/(1): 10.1.0.3:5000*1+mtls",
				"p0 us/west-2a/(1): 10.1.0.4:5000*1+mtls",
			},
		},
		{
			name: "levels nothing is in are skipped: priorities stay contiguous",
			dist: network.DistributionPreferSameZone, gateways: netGW, view: here,
			eps: byCluster(ep("c1", "10.1.0.5", true, "eu/west-1z"), ep("c2", "10.2.0.1", true, "eu/west-1z")),
			want: []string{
				"p0 eu/west-1z/(1): 10.1.0.5:5000*1+mtls",
				"p1 eu/west-1z/(1): 192.0.2.20:15443*1+mtls",
			},
		},
		{
			name: "PreferSameNode: the proxy's node first, then as PreferSameZone",
			dist: network.DistributionPreferSameNode, gateways: netGW, view: here,
			eps: byCluster(
				onNode(ep("c1", "10.1.0.1", true, "us/east-1a/s1"), "n1"),
				onNode(ep("c1", "10.1.0.2", true, "us/east-1a/s1"), "n2"),
				ep("c1", "10.1.0.3", true, "us/east-1b"),
				// A node of the same name in another cluster is another node.
				onNode(ep("c3", "10.3.0.1", true, "us/east-1a/s1"), "n1"),
			),
			want: []string{
				"p0 us/east-1a/s1(1): 10.1.0.1:5000*1+mtls",
				"p1 us/east-1a/s1(1): 10.1.0.2:5000*1+mtls",
				"p2 us/east-1b/(1): 10.1.0.3:5000*1+mtls",
				"p3 us/east-1a/s1(1): 192.0.2.20:15443*1+mtls",
			},
		},
		{
			name: "PreferSameZone ignores the node",
			dist: network.DistributionPreferSameZone, gateways: netGW, view: here,
			eps: byCluster(
				onNode(ep("c1", "10.1.0.1", true, "us/east-1a/s1"), "n1"),
				onNode(ep("c1", "10.1.0.2", true, "us/east-1a/s1"), "n2"),
			),
			want: []string{"p0 us/east-1a/s1(2): 10.1.0.1:5000*1+mtls 10.1.0.2:5000*1+mtls"},
		},
		{
			name: "a proxy without a locality: its network first, gateways next",
			dist: network.DistributionPreferSameZone, eps: spread, gateways: netGW,
			view: View{Role: RoleSidecar, Network: "network1"},
			want: []string{
				"p0 eu/west-1z/(1): 10.1.0.5:5000*1+mtls",
				"p0 us/east-1a/s1(1): 10.1.0.1:5000*1+mtls",
				"p0 us/east-1a/s2(1): 10.1.0.2:5000*1+mtls",
				"p0 us/east-1b/(1): 10.1.0.3:5000*1+mtls",
				"p0 us/west-2a/(1): 10.1.0.4:5000*1+mtls",
				"p1 us/east-1a/s1(1): 10.4.0.1:5000*1",
				"p2 us/east-1a/s1(1): 192.0.2.20:15443*1+mtls",
			},
		},
		{
			name: "the reference scenario: v1 local, v2 behind network2's gateway",
			dist: network.DistributionPreferSameZone, gateways: netGW,
			view: View{Role: RoleGRPC, Network: "network1"},
			eps:  byCluster(ep("c1", "10.1.0.5", true), ep("c2", "10.2.0.7", true)),
			want: []string{"p0 //(1): 10.1.0.5:5000*1+mtls", "p1 //(1): 192.0.2.20:15443*1+mtls"},
		},
		{
			name: "v1 not ready: the gateway alone, in priority 0",
			dist: network.DistributionPreferSameZone, gateways: netGW,
			view: View{Role: RoleGRPC, Network: "network1"},
			eps:  byCluster(notReady(ep("c1", "10.1.0.5", true)), ep("c2", "10.2.0.7", true)),
			want: []string{"p0 //(1): 192.0.2.20:15443*1+mtls"},
		},
		{
			name: "a network with no ready endpoint contributes no gateway",
			dist: network.DistributionPreferSameZone, gateways: netGW,
			view: View{Role: RoleGRPC, Network: "network1"},
			eps:  byCluster(ep("c1", "10.1.0.5", true), notReady(ep("c2", "10.2.0.7", true)), notReady(ep("c3", "10.3.0.7", true))),
			want: []string{"p0 //(1): 10.1.0.5:5000*1+mtls"},
		},
		{
			name: "only ready endpoints weigh on a gateway",
			dist: network.DistributionPreferSameZone,
			gateways: []network.Gateway{
				{Network: "network2", Cluster: "c2", Address: "192.0.2.2", Port: 15443},
				{Network: "network2", Cluster: "c3", Address: "192.0.2.3", Port: 15443},
			},
			view: View{Role: RoleGRPC, Network: "network1"},
			eps: byCluster(
				ep("c2", "10.2.0.1", true), notReady(ep("c2", "10.2.0.2", true)), notReady(ep("c2", "10.2.0.3", true)),
				ep("c3", "10.3.0.1", true), ep("c3", "10.3.0.2", true),
			),
			want: []string{"p0 //(3): 192.0.2.2:15443*1+mtls 192.0.2.3:15443*2+mtls"},
		},
		{
			name: "gateways carry their network's locality and are ranked by it",
			dist: network.DistributionPreferSameZone,
			gateways: []network.Gateway{
				{Network: "network2", Cluster: "c2", Address: "192.0.2.2", Port: 15443, Locality: "eu/west-1z"},
				{Network: "network2", Cluster: "c3", Address: "192.0.2.3", Port: 15443, Locality: "us/east-1a"},
			},
			view: here,
			// The endpoints' own localities are not the gateways': meshNetworks wins.
			eps: byCluster(ep("c2", "10.2.0.1", true, "us/east-1a/s1"), ep("c3", "10.3.0.1", true, "eu/west-1z")),
			want: []string{
				"p0 us/east-1a/(1): 192.0.2.3:15443*1+mtls",
				"p1 eu/west-1z/(1): 192.0.2.2:15443*1+mtls",
			},
		},
		{
			name: "a gateway without a locality takes its endpoints' shared one",
			dist: network.DistributionPreferSameZone, gateways: netGW, view: here,
			eps: byCluster(ep("c1", "10.1.0.5", true, "eu/west-1z"), ep("c2", "10.2.0.1", true, "us/east-1a/s1"), ep("c3", "10.3.0.1", true, "us/east-1a/s1")),
			want: []string{
				"p0 eu/west-1z/(1): 10.1.0.5:5000*1+mtls",
				"p1 us/east-1a/s1(2): 192.0.2.20:15443*2+mtls",
			},
		},
		{
			name: "routers get no priorities",
			dist: network.DistributionPreferSameNode, gateways: netGW,
			view: View{Role: RoleRouter, Network: "network2"},
			eps:  byCluster(ep("c2", "10.2.0.1", true, "us/east-1a/s1"), ep("c3", "10.3.0.1", true, "eu/west-1z")),
			want: []string{
				"p0 eu/west-1z/(1): 10.3.0.1:5000*1+mtls",
				"p0 us/east-1a/s1(1): 10.2.0.1:5000*1+mtls",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topo := NewTopology(nets, tt.gateways)
			const name = "outbound|5000||helloworld.sample.svc.cluster.local"
			cla := BuildDistributed(name, tt.eps, topo, tt.view, tt.dist)
			if err := cla.ValidateAll(); err != nil {
				t.Fatalf("invalid for Envoy: %v", err)
			}
			checkPriorities(t, cla)
			got := prioritySummary(cla)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
			again := BuildDistributed(name, tt.eps, topo, tt.view, tt.dist)
			a, _ := protojsonStable(cla)
			b, _ := protojsonStable(again)
			if !bytes.Equal(a, b) {
				t.Error("output is not deterministic")
			}
			if tt.dist == network.DistributionUnset {
				plain, _ := protojsonStable(BuildLoadAssignment(name, tt.eps, topo, tt.view))
				if !bytes.Equal(a, plain) {
					t.Error("unset differs from BuildLoadAssignment")
				}
			}
		})
	}
}

// TestBuildDistributedGolden pins the reference scenario's resource for a proxy on
// network1 in us/east-1a under each distribution; "unset" is the golden of
// TestBuildLoadAssignmentGolden, unchanged.
func TestBuildDistributedGolden(t *testing.T) {
	nets := testNetworks(t)
	topo := NewTopology(nets, []network.Gateway{gw("network2", "c2", "192.0.2.20", 443)})
	eps := byCluster(
		onNode(ep("c1", "10.1.0.5", true, "us/east-1a"), "node-a"),
		onNode(ep("c1", "10.1.0.6", true, "us/east-1a"), "node-b"),
		ep("c2", "10.2.0.7", true, "us/west-2b"),
	)
	v := View{Role: RoleSidecar, Network: "network1", Locality: clusterregistry.Locality{Region: "us", Zone: "east-1a"}, Node: "node-a", NodeCluster: "c1"}
	for _, tc := range []struct {
		dist   network.TrafficDistribution
		golden string
	}{
		{network.DistributionPreferSameZone, "helloworld-network1-PreferSameZone.json"},
		{network.DistributionPreferSameNode, "helloworld-network1-PreferSameNode.json"},
	} {
		t.Run(string(tc.dist), func(t *testing.T) {
			got, err := protojsonStable(BuildDistributed(ClusterName("helloworld.sample.svc.cluster.local", 5000), eps, topo, v, tc.dist))
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", tc.golden), got)
		})
	}
	// Unset, with the golden scenario's endpoints, is the existing golden byte for
	// byte, whatever the proxy's locality and node.
	ref := byCluster(ep("c1", "10.1.0.5", true, "us/east-1a"), ep("c2", "10.2.0.7", true, "us/west-2b"))
	got, err := protojsonStable(BuildDistributed(ClusterName("helloworld.sample.svc.cluster.local", 5000), ref, topo, v, network.DistributionUnset))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("testdata", "helloworld-network1.json"), got)
}

func TestParseTrafficDistribution(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want network.TrafficDistribution
		ok   bool
	}{
		{"", network.DistributionUnset, true},
		{"PreferClose", network.DistributionPreferSameZone, true},
		{"PreferSameZone", network.DistributionPreferSameZone, true},
		{"PreferSameNode", network.DistributionPreferSameNode, true},
		{"preferclose", network.DistributionUnset, false},
		{"Any", network.DistributionUnset, false},
	} {
		if got, ok := network.ParseTrafficDistribution(tc.in); got != tc.want || ok != tc.ok {
			t.Errorf("ParseTrafficDistribution(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestDistributionOf(t *testing.T) {
	shard := func(d network.TrafficDistribution, invalid string) *clusterregistry.Shard {
		return &clusterregistry.Shard{Service: clusterregistry.Service{TrafficDistribution: d, InvalidTrafficDistribution: invalid}}
	}
	for _, tc := range []struct {
		name        string
		shards      map[network.ClusterID]*clusterregistry.Shard
		def         network.TrafficDistribution
		want        network.TrafficDistribution
		wantInvalid string
	}{
		{name: "none set: unset", shards: map[network.ClusterID]*clusterregistry.Shard{"c1": shard("", "")}},
		{name: "none set: the mesh default", shards: map[network.ClusterID]*clusterregistry.Shard{"c1": shard("", "")},
			def: network.DistributionPreferSameNode, want: network.DistributionPreferSameNode},
		{name: "one cluster sets it: it applies everywhere",
			shards: map[network.ClusterID]*clusterregistry.Shard{"c1": shard("", ""), "c2": shard(network.DistributionPreferSameZone, "")},
			want:   network.DistributionPreferSameZone},
		{name: "a set value wins over the mesh default",
			shards: map[network.ClusterID]*clusterregistry.Shard{"c2": shard(network.DistributionPreferSameZone, "")},
			def:    network.DistributionPreferSameNode, want: network.DistributionPreferSameZone},
		{name: "clusters disagree: the lowest cluster ID that sets one",
			shards: map[network.ClusterID]*clusterregistry.Shard{"c0": shard("", ""), "c3": shard(network.DistributionPreferSameZone, ""), "c2": shard(network.DistributionPreferSameNode, "")},
			want:   network.DistributionPreferSameNode},
		{name: "an unrecognized value is reported with its cluster and counts as unset",
			shards:      map[network.ClusterID]*clusterregistry.Shard{"c2": shard("", `spec.trafficDistribution "Nearby"`), "c1": shard("", "")},
			wantInvalid: `cluster c2: spec.trafficDistribution "Nearby"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, invalid := distributionOf(tc.shards, tc.def)
			if got != tc.want || invalid != tc.wantInvalid {
				t.Errorf("distributionOf = %q, %q; want %q, %q", got, invalid, tc.want, tc.wantInvalid)
			}
		})
	}
}

// TestInvalidDistributionReportedOnce: an unrecognized value is counted (and
// logged) when a host first has it or it changes, not at every push.
func TestInvalidDistributionReportedOnce(t *testing.T) {
	f := newXDSFixture(t)
	set := func(invalid string) {
		f.src.setShard(hostA, "c1", &clusterregistry.Shard{
			Service: clusterregistry.Service{Host: hostA, Name: "a", Namespace: "ns", Cluster: "c1",
				Ports: []clusterregistry.ServicePort{{Name: "http", Port: 80}}, InvalidTrafficDistribution: invalid},
		})
		f.s.HostChanged(hostA)
		f.s.push(time.Now())
	}
	count := func() float64 {
		var m dto.Metric
		if err := f.s.metrics.invalidDist.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	set(`spec.trafficDistribution "Nearby"`)
	set(`spec.trafficDistribution "Nearby"`)
	if got := count(); got != 1 {
		t.Fatalf("counted %v times, want once", got)
	}
	set(`spec.trafficDistribution "Closest"`)
	if got := count(); got != 2 {
		t.Fatalf("counted %v times after the value changed, want 2", got)
	}
}
