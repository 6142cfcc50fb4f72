package network_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/horizon-mesh/horizon/network"
)

// Constructors for MeshNetworks values in tests.
func cidr(s string) *meshv1alpha1.Network_NetworkEndpoints {
	return &meshv1alpha1.Network_NetworkEndpoints{Ne: &meshv1alpha1.Network_NetworkEndpoints_FromCidr{FromCidr: s}}
}

func registry(s string) *meshv1alpha1.Network_NetworkEndpoints {
	return &meshv1alpha1.Network_NetworkEndpoints{Ne: &meshv1alpha1.Network_NetworkEndpoints_FromRegistry{FromRegistry: s}}
}

func addrGW(addr string, port uint32) *meshv1alpha1.Network_IstioNetworkGateway {
	return &meshv1alpha1.Network_IstioNetworkGateway{Gw: &meshv1alpha1.Network_IstioNetworkGateway_Address{Address: addr}, Port: port}
}

func svcGW(host string, port uint32) *meshv1alpha1.Network_IstioNetworkGateway {
	return &meshv1alpha1.Network_IstioNetworkGateway{Gw: &meshv1alpha1.Network_IstioNetworkGateway_RegistryServiceName{RegistryServiceName: host}, Port: port}
}

type nets map[string]*meshv1alpha1.Network

func mesh(n nets) *meshv1alpha1.MeshNetworks { return &meshv1alpha1.MeshNetworks{Networks: n} }

func TestParseMeshNetworks(t *testing.T) {
	// The shape of the reference scenario: network2 is the remote cluster, reached
	// through its ingress gateway on 443.
	want := mesh(nets{
		"network1": {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("Kubernetes")}},
		"network2": {
			Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("remote_kubecfg"), cidr("192.168.100.0/22")},
			Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{
				{Gw: &meshv1alpha1.Network_IstioNetworkGateway_Address{Address: "203.0.113.7"}, Port: 443, Locality: "us-east/us-east-1a"},
				svcGW("istio-ingressgateway.istio-system.svc.cluster.local", 15443),
			},
		},
	})
	for _, tc := range []struct {
		name    string
		in      string
		want    *meshv1alpha1.MeshNetworks
		wantErr string // substring; "" means no error
	}{
		{name: "yaml", in: `
networks:
  network1:
    endpoints:
    - fromRegistry: Kubernetes
  network2:
    endpoints:
    - fromRegistry: remote_kubecfg
    - fromCidr: 192.168.100.0/22
    gateways:
    - address: 203.0.113.7
      port: 443
      locality: us-east/us-east-1a
    - registryServiceName: istio-ingressgateway.istio-system.svc.cluster.local
      port: 15443
`, want: want},
		{name: "json with proto field names", in: `{"networks": {
			"network1": {"endpoints": [{"from_registry": "Kubernetes"}]},
			"network2": {"endpoints": [{"fromRegistry": "remote_kubecfg"}, {"from_cidr": "192.168.100.0/22"}],
			  "gateways": [{"address": "203.0.113.7", "port": 443, "locality": "us-east/us-east-1a"},
			               {"registry_service_name": "istio-ingressgateway.istio-system.svc.cluster.local", "port": "15443"}]}}}`,
			want: want},
		{name: "empty", in: "", want: mesh(nil)},
		{name: "only whitespace and a comment", in: "\n  # nothing yet\n", want: mesh(nil)},
		{name: "null", in: "null", want: mesh(nil)},
		{name: "no networks", in: "networks: {}", want: mesh(nil)},
		{name: "unknown field", in: "networks:\n  net:\n    endpoint:\n    - fromRegistry: c1\n", wantErr: `parse meshNetworks: unknown field "endpoint"`},
		{name: "networks map pasted without the networks field", in: "network2:\n  endpoints:\n  - fromRegistry: c1\n",
			wantErr: `parse meshNetworks: unknown field "network2" (the top level must be the networks field`},
		{name: "duplicate network", in: "networks:\n  net: {}\n  net: {}\n", wantErr: `key "net" already set in map`},
		{name: "both address and registryServiceName", in: "networks:\n  net:\n    gateways:\n    - address: 1.2.3.4\n      registryServiceName: a.b.svc.cluster.local\n      port: 1\n",
			wantErr: `parse meshNetworks: error parsing "registryServiceName", oneof`},
		{name: "negative port", in: "networks:\n  net:\n    gateways:\n    - address: 1.2.3.4\n      port: -1\n", wantErr: `parse meshNetworks: invalid value for uint32 field port: -1`},
		{name: "not yaml", in: "networks: [", wantErr: `parse meshNetworks: `},
		{name: "invalid", in: "networks:\n  net:\n    gateways:\n    - address: 1.2.3.4\n",
			wantErr: "invalid meshNetworks: networks.net.gateways[0].port: must be 1-65535"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := network.ParseMeshNetworks([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				if got != nil {
					t.Errorf("got %v with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestValidateMeshNetworks(t *testing.T) {
	const host = "istio-ingressgateway.istio-system.svc.cluster.local"
	for _, tc := range []struct {
		name string
		in   *meshv1alpha1.MeshNetworks
		want []string // exact messages, in order
	}{
		{name: "nil", in: nil},
		{name: "empty", in: mesh(nil)},
		{name: "valid", in: mesh(nets{
			"network1": {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c1"), cidr("10.0.0.0/8"), cidr("10.1.2.3"), cidr("fd00::/8"), cidr("10.0.0.1/8")}},
			"network2": {
				Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("remote_kubecfg"), registry("remote_kubecfg")},
				Gateways:  []*meshv1alpha1.Network_IstioNetworkGateway{addrGW("0.0.0.0", 443), addrGW("2001:db8::1", 65535), addrGW("GW.Example.com.", 1), svcGW(host, 15443)},
			},
			"no-endpoints-gateway-only": {Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{addrGW("gw.example.com", 15443)}},
			"nil-network":               nil,
		})},
		{name: "port zero and too large", in: mesh(nets{
			"network2": {Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{addrGW("1.2.3.4", 0), addrGW("1.2.3.4", 65536)}},
		}), want: []string{
			"networks.network2.gateways[0].port: must be 1-65535",
			"networks.network2.gateways[1].port: must be 1-65535",
		}},
		{name: "bad CIDRs", in: mesh(nets{
			"network1": {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{cidr("10.0.0.0/8"), cidr("10.0.0/8"), cidr("10.0.0.0/33"), cidr("fe80::1%eth0"), cidr("any")}},
		}), want: []string{
			`networks.network1.endpoints[1].fromCidr: invalid CIDR "10.0.0/8"`,
			`networks.network1.endpoints[2].fromCidr: invalid CIDR "10.0.0.0/33"`,
			`networks.network1.endpoints[3].fromCidr: invalid CIDR "fe80::1%eth0"`,
			`networks.network1.endpoints[4].fromCidr: invalid CIDR "any"`,
		}},
		{name: "endpoints entry with neither", in: mesh(nets{
			"n": {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{{}, registry("")}},
		}), want: []string{
			"networks.n.endpoints[0]: exactly one of fromCidr or fromRegistry is required",
			"networks.n.endpoints[1]: exactly one of fromCidr or fromRegistry is required",
		}},
		{name: "gateway with neither", in: mesh(nets{
			"n": {Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{{Port: 443}, addrGW("", 443)}},
		}), want: []string{
			"networks.n.gateways[0]: exactly one of address or registryServiceName is required",
			"networks.n.gateways[1]: exactly one of address or registryServiceName is required",
		}},
		{name: "gateway addresses other networks cannot reach", in: mesh(nets{
			"n": {Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{
				addrGW("127.0.0.1", 443), addrGW("::1", 443), addrGW("169.254.169.254", 443), addrGW("fe80::1", 443),
				addrGW("224.0.0.1", 443), addrGW("ff02::1", 443), addrGW("255.255.255.255", 443), addrGW("::ffff:127.0.0.2", 443),
				addrGW("0.0.0.0", 443), addrGW("::", 443), addrGW("192.0.2.1", 443),
			}},
		}), want: []string{
			`networks.n.gateways[0].address: "127.0.0.1" is a loopback address; a gateway must be reachable from other networks`,
			`networks.n.gateways[1].address: "::1" is a loopback address; a gateway must be reachable from other networks`,
			`networks.n.gateways[2].address: "169.254.169.254" is a link-local address; a gateway must be reachable from other networks`,
			`networks.n.gateways[3].address: "fe80::1" is a link-local address; a gateway must be reachable from other networks`,
			`networks.n.gateways[4].address: "224.0.0.1" is a multicast address; a gateway must be reachable from other networks`,
			`networks.n.gateways[5].address: "ff02::1" is a multicast address; a gateway must be reachable from other networks`,
			`networks.n.gateways[6].address: "255.255.255.255" is the broadcast address; a gateway must be reachable from other networks`,
			`networks.n.gateways[7].address: "::ffff:127.0.0.2" is a loopback address; a gateway must be reachable from other networks`,
		}},
		{name: "bad gateway address", in: mesh(nets{
			"n": {Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{addrGW("gw_1.example.com", 443), addrGW("1.2.3.4:443", 443), addrGW("-gw.example.com", 443)}},
		}), want: []string{
			`networks.n.gateways[0].address: "gw_1.example.com" is neither an IP address nor a valid DNS name`,
			`networks.n.gateways[1].address: "1.2.3.4:443" is neither an IP address nor a valid DNS name`,
			`networks.n.gateways[2].address: "-gw.example.com" is neither an IP address nor a valid DNS name`,
		}},
		{name: "bad registryServiceName", in: mesh(nets{
			"n": {
				Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c1")},
				Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{
					svcGW("istio-ingressgateway", 443),
					svcGW("istio-ingressgateway.istio-system", 443),
					svcGW("istio-ingressgateway.istio-system.cluster.local", 443),
					svcGW("Istio-Ingressgateway.istio-system.svc.cluster.local", 443),
					svcGW("1gw.istio-system.svc.cluster.local", 443),
					svcGW("gw.istio-system.svc.example.com", 443),
				},
			},
		}), want: []string{
			`networks.n.gateways[0].registryServiceName: "istio-ingressgateway" must be a service host <name>.<namespace>.svc.<domain>`,
			`networks.n.gateways[1].registryServiceName: "istio-ingressgateway.istio-system" must be a service host <name>.<namespace>.svc.<domain>`,
			`networks.n.gateways[2].registryServiceName: "istio-ingressgateway.istio-system.cluster.local" must be a service host <name>.<namespace>.svc.<domain>`,
			`networks.n.gateways[3].registryServiceName: "Istio-Ingressgateway.istio-system.svc.cluster.local" must be a service host <name>.<namespace>.svc.<domain>`,
			`networks.n.gateways[4].registryServiceName: "1gw.istio-system.svc.cluster.local" must be a service host <name>.<namespace>.svc.<domain>`,
		}},
		{name: "registryServiceName without fromRegistry", in: mesh(nets{
			"n": {
				Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{cidr("10.0.0.0/8")},
				Gateways:  []*meshv1alpha1.Network_IstioNetworkGateway{svcGW(host, 443)},
			},
		}), want: []string{
			`networks.n.gateways[0].registryServiceName: network "n" has no fromRegistry endpoints to look the service up in`,
		}},
		{name: "cluster in two networks", in: mesh(nets{
			"a": {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c1")}},
			"b": {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c2"), registry("c1")}},
		}), want: []string{
			`networks.b.endpoints[1].fromRegistry: cluster "c1" is already in network "a"; a cluster can be in one network only`,
		}},
		{name: "empty network name", in: mesh(nets{
			"": {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{cidr("10.0.0/8")}},
		}), want: []string{
			`networks[""]: network name must be non-empty`,
			`networks[""].endpoints[0].fromCidr: invalid CIDR "10.0.0/8"`,
		}},
		{name: "every problem, networks in name order", in: mesh(nets{
			"network2": {Gateways: []*meshv1alpha1.Network_IstioNetworkGateway{{}}},
			"network1": {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c1"), cidr("10.0.0/8")}},
		}), want: []string{
			`networks.network1.endpoints[1].fromCidr: invalid CIDR "10.0.0/8"`,
			"networks.network2.gateways[0]: exactly one of address or registryServiceName is required",
			"networks.network2.gateways[0].port: must be 1-65535",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := network.ValidateMeshNetworks(tc.in)
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("errors:\n got  %q\n want %q", got, tc.want)
			}
			if _, cerr := network.Compile(tc.in); (cerr == nil) != (len(tc.want) == 0) {
				t.Errorf("Compile error = %v, want an error: %v", cerr, len(tc.want) > 0)
			}
		})
	}
}
