package network_test

import (
	"fmt"
	"strings"
	"testing"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/horizon-mesh/horizon/network"
)

// fakeDNS answers from a table; unknown names have no addresses.
func fakeDNS(table map[string][]string) func(string) []string {
	return func(host string) []string { return table[host] }
}

const ingressHost = "istio-ingressgateway.istio-system.svc.cluster.local"

func ingress(cluster network.ClusterID, addrs ...string) network.GatewayService {
	return network.GatewayService{
		Cluster: cluster, Name: "istio-ingressgateway", Namespace: "istio-system", Host: ingressHost,
		Ports: []int32{80, 443, 15443}, Addresses: addrs,
	}
}

func eastwest(cluster network.ClusterID, net string, labels, annotations map[string]string, ports []int32, addrs ...string) network.GatewayService {
	l := map[string]string{network.LabelNetwork: net}
	for k, v := range labels {
		l[k] = v
	}
	return network.GatewayService{
		Cluster: cluster, Name: "eastwest", Namespace: "istio-system", Host: "eastwest.istio-system.svc.cluster.local",
		Labels: l, Annotations: annotations, Ports: ports, Addresses: addrs,
	}
}

func TestGateways(t *testing.T) {
	dns := fakeDNS(map[string][]string{
		"gw.example.com":    {"203.0.113.9", "203.0.113.8", "not-an-ip"},
		"lb.example.com":    {"198.51.100.2"},
		"gw6.example.com":   {"2001:db8::5"},
		"local.example.com": {"127.0.0.1", "224.0.0.5"},
	})
	const src2 = "meshNetworks networks.network2.gateways"
	for _, tc := range []struct {
		name     string
		mn       *meshv1alpha1.MeshNetworks
		services []network.GatewayService
		want     []network.Gateway
	}{
		{name: "address IP", mn: mesh(nets{
			"network2": {Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{
				{Gw: &meshv1alpha1.Network_IstioNetworkGateway_Address{Address: "192.0.2.10"}, Port: 443, Locality: "us-east/us-east-1a"},
			}},
		}), want: []network.Gateway{
			{Network: "network2", Address: "192.0.2.10", Port: 443, Locality: "us-east/us-east-1a", Source: src2 + "[0]"},
		}},
		{name: "address DNS name, every IP, sorted", mn: mesh(nets{
			"network2": {Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{addrGW("gw.example.com", 15443), addrGW("gw6.example.com", 15443)}},
		}), want: []network.Gateway{
			{Network: "network2", Address: "203.0.113.8", Port: 15443, Source: src2 + "[0]"},
			{Network: "network2", Address: "203.0.113.9", Port: 15443, Source: src2 + "[0]"},
			{Network: "network2", Address: "2001:db8::5", Port: 15443, Source: src2 + "[1]"},
		}},
		{name: "placeholder address 0.0.0.0 or :: is no gateway", mn: mesh(nets{
			"network2": {Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{addrGW("0.0.0.0", 443), addrGW("::", 443)}},
			"network3": {Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{addrGW("0.0.0.0", 443), addrGW("192.0.2.30", 443)}},
		}), want: []network.Gateway{
			{Network: "network3", Address: "192.0.2.30", Port: 443, Source: "meshNetworks networks.network3.gateways[1]"},
		}},
		{name: "unreachable resolved and Service addresses are no gateways", mn: mesh(nets{
			"network2": {Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{addrGW("local.example.com", 443)}},
		}), services: []network.GatewayService{
			eastwest("c3", "network3", nil, nil, nil, "127.0.0.1", "169.254.169.254", "0.0.0.0", "192.0.2.33"),
		}, want: []network.Gateway{
			{Network: "network3", Cluster: "c3", Address: "192.0.2.33", Port: 15443, Source: "service istio-system/eastwest in c3"},
		}},
		{name: "address DNS name that does not resolve", mn: mesh(nets{
			"network2": {Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{addrGW("gone.example.com", 443)}},
		}), want: nil},
		{name: "registryServiceName: LB IP, LB host name, externalIPs of the network's clusters only", mn: mesh(nets{
			"network1": {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c1")}},
			"network2": {
				Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c2"), registry("c3")},
				Gateways:  []*meshv1alpha1.Network_IstioNetworkGateway{{Gw: &meshv1alpha1.Network_IstioNetworkGateway_RegistryServiceName{RegistryServiceName: ingressHost}, Port: 443, Locality: "eu"}},
			},
		}), services: []network.GatewayService{
			ingress("c1", "192.0.2.1"), // network1's cluster: not network2's gateway
			ingress("c2", "192.0.2.2", "lb.example.com", "192.0.2.200"),
			ingress("c3", "192.0.2.3"),
			ingress("c4", "192.0.2.4"), // in no network
			{Cluster: "c2", Name: "other", Namespace: "istio-system", Host: "other.istio-system.svc.cluster.local", Addresses: []string{"192.0.2.99"}},
		}, want: []network.Gateway{
			{Network: "network2", Cluster: "c2", Address: "192.0.2.2", Port: 443, Locality: "eu", Source: src2 + "[0] (service istio-system/istio-ingressgateway in c2)"},
			{Network: "network2", Cluster: "c2", Address: "192.0.2.200", Port: 443, Locality: "eu", Source: src2 + "[0] (service istio-system/istio-ingressgateway in c2)"},
			{Network: "network2", Cluster: "c2", Address: "198.51.100.2", Port: 443, Locality: "eu", Source: src2 + "[0] (service istio-system/istio-ingressgateway in c2)"},
			{Network: "network2", Cluster: "c3", Address: "192.0.2.3", Port: 443, Locality: "eu", Source: src2 + "[0] (service istio-system/istio-ingressgateway in c3)"},
		}},
		{name: "registryServiceName whose Service has no address yet", mn: mesh(nets{
			"network2": {
				Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c2")},
				Gateways:  []*meshv1alpha1.Network_IstioNetworkGateway{svcGW(ingressHost, 443)},
			},
		}), services: []network.GatewayService{ingress("c2")}, want: nil},
		{name: "labelled Services: annotation, label, default, annotation over label, invalid", mn: nil, services: []network.GatewayService{
			eastwest("c1", "net-a", nil, map[string]string{network.LabelGatewayPort: "35443"}, []int32{35443}, "192.0.2.1"),
			eastwest("c2", "net-b", map[string]string{network.LabelGatewayPort: "25443"}, nil, []int32{25443}, "192.0.2.2"),
			eastwest("c3", "net-c", nil, nil, []int32{15012, 15443}, "192.0.2.3", "gw.example.com"),
			eastwest("c4", "net-d", map[string]string{network.LabelGatewayPort: "1"}, map[string]string{network.LabelGatewayPort: "2"}, nil, "192.0.2.4"),
			eastwest("c5", "net-e", nil, map[string]string{network.LabelGatewayPort: "http"}, nil, "192.0.2.5"),
		}, want: []network.Gateway{
			{Network: "net-a", Cluster: "c1", Address: "192.0.2.1", Port: 35443, Source: "service istio-system/eastwest in c1"},
			{Network: "net-b", Cluster: "c2", Address: "192.0.2.2", Port: 25443, Source: "service istio-system/eastwest in c2"},
			{Network: "net-c", Cluster: "c3", Address: "192.0.2.3", Port: 15443, Source: "service istio-system/eastwest in c3"},
			{Network: "net-c", Cluster: "c3", Address: "203.0.113.8", Port: 15443, Source: "service istio-system/eastwest in c3"},
			{Network: "net-c", Cluster: "c3", Address: "203.0.113.9", Port: 15443, Source: "service istio-system/eastwest in c3"},
			{Network: "net-d", Cluster: "c4", Address: "192.0.2.4", Port: 2, Source: "service istio-system/eastwest in c4"},
			{Network: "net-e", Cluster: "c5", Address: "192.0.2.5", Port: 15443, Source: `service istio-system/eastwest in c5 (invalid networking.istio.io/gatewayPort "http", using 15443)`},
		}},
		{name: "labelled Service that does not expose the gateway port, or has an empty label", services: []network.GatewayService{
			eastwest("c1", "net-a", nil, nil, []int32{80, 443}, "192.0.2.1"),
			eastwest("c2", "", nil, nil, nil, "192.0.2.2"),
			ingress("c3", "192.0.2.3"), // no label at all
		}, want: nil},
		{name: "a network with two gateways and a network with none", mn: mesh(nets{
			"network1": {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c1")}},
			"network2": {
				Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c2")},
				Gateways:  []*meshv1alpha1.Network_IstioNetworkGateway{addrGW("192.0.2.20", 443), svcGW(ingressHost, 443)},
			},
		}), services: []network.GatewayService{ingress("c1", "192.0.2.1"), ingress("c2", "192.0.2.2")}, want: []network.Gateway{
			{Network: "network2", Address: "192.0.2.20", Port: 443, Source: src2 + "[0]"},
			{Network: "network2", Cluster: "c2", Address: "192.0.2.2", Port: 443, Source: src2 + "[1] (service istio-system/istio-ingressgateway in c2)"},
		}},
		{name: "duplicates removed, meshNetworks kept over a labelled Service", mn: mesh(nets{
			"network2": {
				Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c2")},
				Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{
					addrGW("203.0.113.8", 15443),
					addrGW("gw.example.com", 15443), // resolves to 203.0.113.8 again
					addrGW("::ffff:203.0.113.9", 15443),
					{Gw: &meshv1alpha1.Network_IstioNetworkGateway_RegistryServiceName{RegistryServiceName: ingressHost}, Port: 15443, Locality: "eu"},
				},
			},
		}), services: []network.GatewayService{
			func() network.GatewayService {
				s := ingress("c2", "192.0.2.2", "192.0.2.2")
				s.Labels = map[string]string{network.LabelNetwork: "network2"} // also a labelled gateway
				return s
			}(),
		}, want: []network.Gateway{
			{Network: "network2", Address: "203.0.113.8", Port: 15443, Source: src2 + "[0]"},
			{Network: "network2", Address: "203.0.113.9", Port: 15443, Source: src2 + "[1]"},
			{Network: "network2", Cluster: "c2", Address: "192.0.2.2", Port: 15443, Locality: "eu", Source: src2 + "[3] (service istio-system/istio-ingressgateway in c2)"},
		}},
		{name: "the same address on two ports is two gateways", mn: mesh(nets{
			"network2": {Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{addrGW("192.0.2.9", 15443), addrGW("192.0.2.9", 443)}},
		}), want: []network.Gateway{
			{Network: "network2", Address: "192.0.2.9", Port: 443, Source: src2 + "[1]"},
			{Network: "network2", Address: "192.0.2.9", Port: 15443, Source: src2 + "[0]"},
		}},
		{name: "addresses sort numerically", mn: mesh(nets{
			"network2": {Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{addrGW("192.0.2.10", 443), addrGW("192.0.2.9", 443)}},
		}), want: []network.Gateway{
			{Network: "network2", Address: "192.0.2.9", Port: 443, Source: src2 + "[1]"},
			{Network: "network2", Address: "192.0.2.10", Port: 443, Source: src2 + "[0]"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := compile(t, tc.mn).Gateways(tc.services, dns)
			if g, w := fmtGateways(got), fmtGateways(tc.want); g != w {
				t.Errorf("gateways:\n got\n%s\n want\n%s", g, w)
			}
		})
	}
}

func TestGatewaysWithoutLookupOrConfig(t *testing.T) {
	n := compile(t, mesh(nets{
		"network2": {Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{addrGW("gw.example.com", 443), addrGW("192.0.2.1", 443)}},
	}))
	got := n.Gateways([]network.GatewayService{eastwest("c1", "net-a", nil, nil, nil, "lb.example.com", "192.0.2.2")}, nil)
	want := []network.Gateway{
		{Network: "net-a", Cluster: "c1", Address: "192.0.2.2", Port: 15443, Source: "service istio-system/eastwest in c1"},
		{Network: "network2", Address: "192.0.2.1", Port: 443, Source: "meshNetworks networks.network2.gateways[1]"},
	}
	if g, w := fmtGateways(got), fmtGateways(want); g != w {
		t.Errorf("nil lookup:\n got\n%s\n want\n%s", g, w)
	}
	var none *network.Networks
	got = none.Gateways([]network.GatewayService{eastwest("c1", "net-a", nil, nil, nil, "192.0.2.2")}, nil)
	if g, w := fmtGateways(got), fmtGateways(want[:1]); g != w {
		t.Errorf("nil Networks:\n got\n%s\n want\n%s", g, w)
	}
}

func fmtGateways(gws []network.Gateway) string {
	var b strings.Builder
	for _, g := range gws {
		fmt.Fprintf(&b, "  %+v\n", g)
	}
	return b.String()
}

func TestAwaitingGateway(t *testing.T) {
	n, err := network.Compile(mesh(nets{
		"network1": {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c1")}},
		"network2": {
			Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("remote_kubecfg")},
			Gateways:  []*meshv1alpha1.Network_IstioNetworkGateway{addrGW("0.0.0.0", 443)},
		},
		"network3": {Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{addrGW("::", 443), addrGW("192.0.2.30", 443)}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[network.NetworkID]bool{"network1": false, "network2": true, "network3": false, "unknown": false} {
		if got := n.AwaitingGateway(id); got != want {
			t.Errorf("AwaitingGateway(%s) = %v, want %v", id, got, want)
		}
	}
	wantNotes := []string{"network2: gateway address not set yet; its endpoints are unreachable from other networks"}
	if got := n.Notes(); fmt.Sprint(got) != fmt.Sprint(wantNotes) {
		t.Errorf("Notes() = %q, want %q", got, wantNotes)
	}
	if got := n.ClusterNetwork("remote_kubecfg"); got != "network2" {
		t.Errorf("ClusterNetwork(remote_kubecfg) = %q, want network2", got)
	}
	if got := n.ClusterNetwork("c9"); got != "" {
		t.Errorf("ClusterNetwork(c9) = %q, want none", got)
	}
	var none *network.Networks
	if none.AwaitingGateway("network2") || none.Notes() != nil || none.ClusterNetwork("c1") != "" {
		t.Error("a nil Networks awaits nothing and knows no cluster")
	}
}
