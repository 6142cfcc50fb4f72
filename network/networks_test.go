package network_test

import (
	"slices"
	"testing"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/horizon-mesh/horizon/network"
)

func compile(t *testing.T, mn *meshv1alpha1.MeshNetworks) *network.Networks {
	t.Helper()
	n, err := network.Compile(mn)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEndpointNetwork(t *testing.T) {
	n := compile(t, mesh(nets{
		"net-registry": {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c1"), cidr("10.9.0.0/16")}},
		"net-wide":     {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{cidr("10.0.0.0/8"), cidr("2001:db8::/32")}},
		"net-narrow":   {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{cidr("10.1.0.0/16"), cidr("10.2.3.4")}},
		"b-tie":        {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{cidr("10.3.0.0/16")}},
		"a-tie":        {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{cidr("10.3.0.1/16")}}, // host bits ignored
	}))
	for _, tc := range []struct {
		name    string
		nets    *network.Networks
		label   network.NetworkID
		cluster network.ClusterID
		ip      string
		want    network.NetworkID
	}{
		{name: "label wins over registry and CIDR", nets: n, label: "net-label", cluster: "c1", ip: "10.1.0.1", want: "net-label"},
		{name: "registry wins over CIDR", nets: n, cluster: "c1", ip: "10.1.0.1", want: "net-registry"},
		{name: "longest prefix", nets: n, cluster: "c2", ip: "10.1.0.1", want: "net-narrow"},
		{name: "shorter prefix when the longer does not hold it", nets: n, cluster: "c2", ip: "10.200.0.1", want: "net-wide"},
		{name: "CIDR of a registry network", nets: n, cluster: "c2", ip: "10.9.0.1", want: "net-registry"},
		{name: "single address", nets: n, ip: "10.2.3.4", want: "net-narrow"},
		{name: "next to a single address", nets: n, ip: "10.2.3.5", want: "net-wide"},
		{name: "tie goes to the name that sorts first", nets: n, ip: "10.3.7.7", want: "a-tie"},
		{name: "IPv6", nets: n, ip: "2001:db8::42", want: "net-wide"},
		{name: "IPv4-mapped IPv6", nets: n, ip: "::ffff:10.1.0.1", want: "net-narrow"},
		{name: "no match", nets: n, cluster: "c2", ip: "192.168.1.1", want: ""},
		{name: "not an IP", nets: n, cluster: "c2", ip: "pod-a", want: ""},
		{name: "empty config", nets: compile(t, nil), cluster: "c1", ip: "10.1.0.1", want: ""},
		{name: "empty config keeps the label", nets: compile(t, nil), label: "net-label", want: "net-label"},
		{name: "nil Networks", nets: nil, cluster: "c1", ip: "10.1.0.1", want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.nets.EndpointNetwork(tc.label, tc.cluster, tc.ip); got != tc.want {
				t.Errorf("EndpointNetwork(%q, %q, %q) = %q, want %q", tc.label, tc.cluster, tc.ip, got, tc.want)
			}
		})
	}
}

func TestNamesAndCopies(t *testing.T) {
	mn := mesh(nets{
		"network2": {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c2")}},
		"network1": {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c1")}},
	})
	n := compile(t, mn)
	want := []network.NetworkID{"network1", "network2"}
	if got := n.Names(); !slices.Equal(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	// Compile copies its input: later edits of the message change nothing.
	mn.Networks["network3"] = &meshv1alpha1.Network{}
	mn.Networks["network1"].Endpoints[0] = registry("c9")
	if got := n.Names(); !slices.Equal(got, want) {
		t.Errorf("after editing the input, Names() = %v, want %v", got, want)
	}
	if got := n.EndpointNetwork("", "c1", ""); got != "network1" {
		t.Errorf("after editing the input, c1 is on %q", got)
	}
	// And so does MeshNetworks.
	n.MeshNetworks().Networks["network9"] = &meshv1alpha1.Network{}
	if len(n.MeshNetworks().GetNetworks()) != 2 {
		t.Errorf("MeshNetworks() is not a copy")
	}
	if !n.Equal(compile(t, mesh(nets{
		"network1": {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c1")}},
		"network2": {Endpoints: []*meshv1alpha1.Network_NetworkEndpoints{registry("c2")}},
	}))) {
		t.Error("equal configurations are not Equal")
	}
	if n.Equal(nil) || !compile(t, nil).Equal(nil) {
		t.Error("Equal against nil")
	}
	if got := (*network.Networks)(nil).Names(); len(got) != 0 {
		t.Errorf("nil Names() = %v", got)
	}
}
