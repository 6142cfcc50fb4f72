package eds

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// meshYAML: cluster c1 is network1, c2 and c3 are network2, c4 is network3 (no
// gateway), 10.9.0.0/16 is network4, and c6 is network5, whose gateway address is
// the placeholder 0.0.0.0 (not known yet).
const meshYAML = `
networks:
  network1:
    endpoints: [{fromRegistry: c1}]
  network2:
    endpoints: [{fromRegistry: c2}, {fromRegistry: c3}]
    gateways: [{address: 192.0.2.20, port: 15443}]
  network3:
    endpoints: [{fromRegistry: c4}]
  network4:
    endpoints: [{fromCidr: 10.9.0.0/16}]
  network5:
    endpoints: [{fromRegistry: c6}]
    gateways: [{address: 0.0.0.0, port: 443}]
`

func testNetworks(t *testing.T) *network.Networks {
	t.Helper()
	mn, err := network.ParseMeshNetworks([]byte(meshYAML))
	if err != nil {
		t.Fatal(err)
	}
	n, err := network.Compile(mn)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func gw(net, cluster, addr string, port uint32) network.Gateway {
	return network.Gateway{Network: network.NetworkID(net), Cluster: network.ClusterID(cluster), Address: addr, Port: port}
}

func ep(cluster, addr string, mtls bool, loc ...string) clusterregistry.Endpoint {
	e := clusterregistry.Endpoint{Address: addr, Port: 5000, Ready: true, Cluster: network.ClusterID(cluster)}
	if mtls {
		e.TLSMode = network.TLSModeIstio
	}
	if len(loc) > 0 {
		l := parseLocality(loc[0])
		e.Locality = &l
	}
	return e
}

func byCluster(eps ...clusterregistry.Endpoint) map[network.ClusterID][]clusterregistry.Endpoint {
	out := map[network.ClusterID][]clusterregistry.Endpoint{}
	for _, e := range eps {
		out[e.Cluster] = append(out[e.Cluster], e)
	}
	return out
}

func TestBuildLoadAssignment(t *testing.T) {
	nets := testNetworks(t)
	twoGateways := []network.Gateway{gw("network2", "", "192.0.2.20", 15443), gw("network2", "", "192.0.2.21", 15443)}
	tests := []struct {
		name     string
		eps      map[network.ClusterID][]clusterregistry.Endpoint
		gateways []network.Gateway
		view     View
		want     []string
	}{
		{
			name: "several networks, one with two gateways, one with none",
			eps: byCluster(
				ep("c1", "10.1.0.1", true),
				ep("c2", "10.2.0.1", true), ep("c2", "10.2.0.2", true),
				ep("c4", "10.4.0.1", false),
			),
			gateways: twoGateways,
			view:     View{Role: RoleSidecar, Network: "network1"},
			// Each endpoint weighs 2 (the lcm of gateway counts): network2's two
			// endpoints are split evenly over its two gateways.
			want: []string{"//(8): 10.1.0.1:5000*2+mtls 10.4.0.1:5000*2 192.0.2.20:15443*2+mtls 192.0.2.21:15443*2+mtls"},
		},
		{
			name: "the proxy's own network sees pod IPs, the other network's gateway stands in",
			eps: byCluster(
				ep("c1", "10.1.0.1", true),
				ep("c2", "10.2.0.1", true),
			),
			gateways: twoGateways[:1],
			view:     View{Role: RoleSidecar, Network: "network2"},
			want:     []string{"//(2): 10.1.0.1:5000*1+mtls 10.2.0.1:5000*1+mtls"},
		},
		{
			name: "per-cluster gateways inside one network",
			eps: byCluster(
				ep("c2", "10.2.0.1", true),
				ep("c3", "10.3.0.1", true), ep("c3", "10.3.0.2", true),
			),
			gateways: []network.Gateway{gw("network2", "c2", "192.0.2.2", 15443), gw("network2", "c3", "192.0.2.3", 15443)},
			view:     View{Role: RoleSidecar, Network: "network1"},
			want:     []string{"//(3): 192.0.2.2:15443*1+mtls 192.0.2.3:15443*2+mtls"},
		},
		{
			name: "a cluster without gateways of its own uses the network's",
			eps: byCluster(
				ep("c2", "10.2.0.1", true),
				ep("c3", "10.3.0.1", true),
			),
			gateways: []network.Gateway{gw("network2", "c2", "192.0.2.2", 15443), gw("network2", "", "192.0.2.20", 15443), gw("network2", "", "192.0.2.21", 15443)},
			view:     View{Role: RoleSidecar, Network: "network1"},
			// c2's endpoint goes through c2's gateway (weight 3); c3's is split over all
			// three of network2's gateways (1 each).
			want: []string{"//(6): 192.0.2.2:15443*4+mtls 192.0.2.20:15443*1+mtls 192.0.2.21:15443*1+mtls"},
		},
		{
			name: "mTLS-less endpoints are dropped across networks, kept on the same one",
			eps: byCluster(
				ep("c1", "10.1.0.1", false),
				ep("c2", "10.2.0.1", false), ep("c2", "10.2.0.2", true),
			),
			gateways: twoGateways[:1],
			view:     View{Role: RoleSidecar, Network: "network1"},
			want:     []string{"//(2): 10.1.0.1:5000*1 192.0.2.20:15443*1+mtls"},
		},
		{
			// Istio 1.1's rule, which the reference scenario relies on: the unnamed
			// network is a network like any other.
			name: "a proxy on the unnamed network reaches a gateway network through its gateways",
			eps: byCluster(
				ep("c1", "10.1.0.1", true),
				ep("c2", "10.2.0.1", true), ep("c2", "10.2.0.2", false),
				ep("c4", "10.4.0.1", false),
				ep("c9", "172.16.0.1", false), // in no network
				ep("c9", "10.9.0.1", true),    // network4 by CIDR, no gateway
			),
			gateways: twoGateways[:1],
			view:     View{Role: RoleSidecar},
			want:     []string{"//(5): 10.1.0.1:5000*1+mtls 10.4.0.1:5000*1 10.9.0.1:5000*1+mtls 172.16.0.1:5000*1 192.0.2.20:15443*1+mtls"},
		},
		{
			name: "a proxy with no NETWORK is on its cluster's meshNetworks network",
			eps: byCluster(
				ep("c1", "10.1.0.1", true),
				ep("c3", "10.3.0.1", true),
			),
			gateways: twoGateways[:1],
			view:     View{Role: RoleSidecar, Cluster: "c2"},
			want:     []string{"//(2): 10.1.0.1:5000*1+mtls 10.3.0.1:5000*1+mtls"},
		},
		{
			name: "a proxy's cluster with no network leaves it on the unnamed network",
			eps: byCluster(
				ep("c3", "10.3.0.1", true),
			),
			gateways: twoGateways[:1],
			view:     View{Role: RoleSidecar, Cluster: "c9"},
			want:     []string{"//(1): 192.0.2.20:15443*1+mtls"},
		},
		{
			name: "a network whose gateway address is the placeholder is unreachable from others",
			eps: byCluster(
				ep("c1", "10.1.0.1", true),
				ep("c6", "10.6.0.1", true),
			),
			view: View{Role: RoleSidecar, Network: "network1"},
			want: []string{"//(1): 10.1.0.1:5000*1+mtls"},
		},
		{
			name: "a network whose gateway address is the placeholder sees its own endpoints",
			eps: byCluster(
				ep("c1", "10.1.0.1", true),
				ep("c6", "10.6.0.1", true),
			),
			view: View{Role: RoleSidecar, Cluster: "c6"},
			want: []string{"//(2): 10.1.0.1:5000*1+mtls 10.6.0.1:5000*1+mtls"},
		},
		{
			name: "multiple localities: a gateway appears once with the summed weight",
			eps: byCluster(
				ep("c1", "10.1.0.1", true, "us/east-1a"), ep("c1", "10.1.0.2", true, "us/east-1b"),
				ep("c2", "10.2.0.1", true, "eu/west-1a"), ep("c2", "10.2.0.2", true, "eu/west-1b"),
			),
			gateways: twoGateways[:1],
			view:     View{Role: RoleSidecar, Network: "network1"},
			want: []string{
				"//(2): 192.0.2.20:15443*2+mtls",
				"us/east-1a/(1): 10.1.0.1:5000*1+mtls",
				"us/east-1b/(1): 10.1.0.2:5000*1+mtls",
			},
		},
		{
			name: "a gateway for one locality keeps it; a configured locality wins",
			eps: byCluster(
				ep("c2", "10.2.0.1", true, "eu/west-1a"), ep("c2", "10.2.0.2", true, "eu/west-1a"),
				ep("c4", "10.4.0.1", true, "ap/south-1"),
			),
			gateways: []network.Gateway{{Network: "network2", Address: "192.0.2.20", Port: 443, Locality: "eu/west-1z"}},
			view:     View{Role: RoleSidecar, Network: "network1"},
			want: []string{
				"ap/south-1/(1): 10.4.0.1:5000*1+mtls",
				"eu/west-1z/(2): 192.0.2.20:443*2+mtls",
			},
		},
		{
			name: "lcm of gateway counts keeps every endpoint's total weight equal",
			eps: byCluster(
				ep("c1", "10.1.0.1", true),
				ep("c2", "10.2.0.1", true),
				ep("c5", "10.9.0.1", true), // network4 by CIDR
			),
			gateways: append(append([]network.Gateway{}, twoGateways...),
				gw("network4", "", "192.0.2.41", 15443), gw("network4", "", "192.0.2.42", 15443), gw("network4", "", "192.0.2.43", 15443)),
			view: View{Role: RoleSidecar, Network: "network1"},
			want: []string{"//(18): 10.1.0.1:5000*6+mtls 192.0.2.20:15443*3+mtls 192.0.2.21:15443*3+mtls 192.0.2.41:15443*2+mtls 192.0.2.42:15443*2+mtls 192.0.2.43:15443*2+mtls"},
		},
		{
			name: "a pod label network wins over fromRegistry",
			eps: byCluster(
				func() clusterregistry.Endpoint { e := ep("c2", "10.2.0.9", true); e.Network = "network1"; return e }(),
			),
			gateways: twoGateways,
			view:     View{Role: RoleSidecar, Network: "network1"},
			want:     []string{"//(1): 10.2.0.9:5000*1+mtls"},
		},
		{
			name:     "an empty service",
			eps:      nil,
			gateways: twoGateways,
			view:     View{Role: RoleSidecar, Network: "network1"},
			want:     nil,
		},
		{
			name: "a router sees only its own network's mTLS endpoints",
			eps: byCluster(
				ep("c2", "10.2.0.1", true), ep("c2", "10.2.0.2", false),
				ep("c1", "10.1.0.1", true),
			),
			gateways: twoGateways,
			view:     View{Role: RoleRouter, Network: "network2"},
			want:     []string{"//(1): 10.2.0.1:5000*1+mtls"},
		},
		{
			name: "a requested network view hides other networks",
			eps: byCluster(
				ep("c1", "10.1.0.1", true),
				ep("c2", "10.2.0.1", true),
				ep("c4", "10.4.0.1", true),
			),
			gateways: twoGateways[:1],
			view:     View{Role: RoleSidecar, Network: "network1", NetworkView: []network.NetworkID{"network1", "network2"}},
			want:     []string{"//(2): 10.1.0.1:5000*1+mtls 192.0.2.20:15443*1+mtls"},
		},
		{
			name: "not-ready endpoints are left out",
			eps: byCluster(
				func() clusterregistry.Endpoint { e := ep("c1", "10.1.0.1", true); e.Ready = false; return e }(),
				ep("c1", "10.1.0.2", true),
			),
			view: View{Role: RoleSidecar, Network: "network1"},
			want: []string{"//(1): 10.1.0.2:5000*1+mtls"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topo := NewTopology(nets, tt.gateways)
			cla := BuildLoadAssignment("outbound|5000||helloworld.sample.svc.cluster.local", tt.eps, topo, tt.view)
			if err := cla.ValidateAll(); err != nil {
				t.Fatalf("invalid for Envoy: %v", err)
			}
			got := xdstest.Summary(cla)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
			// Deterministic: the same input gives byte-identical output.
			again := BuildLoadAssignment("outbound|5000||helloworld.sample.svc.cluster.local", tt.eps, topo, tt.view)
			a, _ := protojsonStable(cla)
			b, _ := protojsonStable(again)
			if !bytes.Equal(a, b) {
				t.Error("output is not deterministic")
			}
		})
	}
}

// TestBuildLoadAssignmentGolden pins the full resource of the reference scenario: v1
// in cluster 1 (network1), v2 in cluster 2 behind network2's gateway.
func TestBuildLoadAssignmentGolden(t *testing.T) {
	nets := testNetworks(t)
	topo := NewTopology(nets, []network.Gateway{gw("network2", "c2", "192.0.2.20", 443)})
	eps := byCluster(ep("c1", "10.1.0.5", true, "us/east-1a"), ep("c2", "10.2.0.7", true, "us/west-2b"))
	for _, net := range []string{"network1", "network2"} {
		t.Run(net, func(t *testing.T) {
			cla := BuildLoadAssignment(ClusterName("helloworld.sample.svc.cluster.local", 5000), eps, topo, View{Role: RoleSidecar, Network: network.NetworkID(net)})
			got, err := protojsonStable(cla)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", "helloworld-"+net+".json"), got)
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run with -update to accept):\n%s", path, got)
	}
}

// protojsonStable marshals m as indented JSON whose whitespace does not vary between
// runs.
func protojsonStable(m *endpointv3.ClusterLoadAssignment) ([]byte, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

func TestClusterNames(t *testing.T) {
	const host = "helloworld.sample.svc.cluster.local"
	if got := ClusterName(host, 5000); got != "outbound|5000||helloworld.sample.svc.cluster.local" {
		t.Errorf("ClusterName = %q", got)
	}
	if got := SNIName(host, 5000); got != "outbound_.5000_._.helloworld.sample.svc.cluster.local" {
		t.Errorf("SNIName = %q", got)
	}
	for _, name := range []string{ClusterName(host, 5000), SNIName(host, 5000)} {
		h, p, ok := ParseClusterName(name)
		if !ok || h != host || p != 5000 {
			t.Errorf("ParseClusterName(%q) = %q, %d, %v", name, h, p, ok)
		}
	}
	for _, bad := range []string{"", "outbound|x||h", "inbound|5000||h", "outbound_.5000_._.", "outbound|0||h"} {
		if _, _, ok := ParseClusterName(bad); ok {
			t.Errorf("ParseClusterName(%q) accepted", bad)
		}
	}
	c := BuildCluster(host, 5000, PeerIdentities{IDs: []string{"spiffe://cluster.local/ns/sample/sa/helloworld"}})
	if err := c.ValidateAll(); err != nil {
		t.Fatalf("cluster invalid for Envoy: %v", err)
	}
}
