package network_test

import (
	"fmt"

	"github.com/horizon-mesh/horizon/network"
)

// The reference scenario: the remote cluster's endpoints are on network2, reached
// through its ingress gateway on port 443; everything else is on network1.
func Example_meshNetworks() {
	mn, err := network.ParseMeshNetworks([]byte(`
networks:
  network1:
    endpoints:
    - fromRegistry: Kubernetes
  network2:
    endpoints:
    - fromRegistry: remote
    gateways:
    - registryServiceName: istio-ingressgateway.istio-system.svc.cluster.local
      port: 443
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	nets, err := network.Compile(mn)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(nets.Names())
	fmt.Println(nets.EndpointNetwork("", "remote", "10.2.0.7"))
	gws := nets.Gateways([]network.GatewayService{{
		Cluster: "remote", Name: "istio-ingressgateway", Namespace: "istio-system",
		Host:      "istio-ingressgateway.istio-system.svc.cluster.local",
		Ports:     []int32{80, 443},
		Addresses: []string{"192.0.2.80"},
	}}, nil)
	for _, g := range gws {
		fmt.Printf("%s via %s:%d (%s)\n", g.Network, g.Address, g.Port, g.Source)
	}
	// Output:
	// [network1 network2]
	// network2
	// network2 via 192.0.2.80:443 (meshNetworks networks.network2.gateways[0] (service istio-system/istio-ingressgateway in remote))
}

func ExampleValidateMeshNetworks() {
	_, err := network.ParseMeshNetworks([]byte(`
networks:
  network1:
    endpoints:
    - fromCidr: 10.0.0/8
  network2:
    gateways:
    - address: 192.0.2.80
`))
	fmt.Println(err)
	// Output:
	// invalid meshNetworks: networks.network1.endpoints[0].fromCidr: invalid CIDR "10.0.0/8"
	// networks.network2.gateways[0].port: must be 1-65535
}
