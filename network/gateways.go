package network

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
)

// LabelGatewayPort, as an annotation or a label on a gateway Service, is the port on
// which the gateway accepts traffic from other networks.
const LabelGatewayPort = "networking.istio.io/gatewayPort"

// DefaultGatewayPort is the gateway port of a labelled gateway Service that names
// none.
const DefaultGatewayPort = 15443

// Gateway is one resolved way into a network.
type Gateway struct {
	// Network is the network the gateway leads into.
	Network NetworkID
	// Cluster is set when the gateway belongs to one cluster (a registryServiceName
	// gateway or a labelled Service); it is "" for address gateways.
	Cluster ClusterID
	// Address is an IP address.
	Address string
	// Port is the port on which the gateway accepts cross-network traffic.
	Port uint32
	// Locality is the gateway's locality from meshNetworks, region/zone/subzone; it
	// may be "".
	Locality string
	// Source says where the gateway came from, for people: e.g.
	// "meshNetworks networks.network2.gateways[0]" or
	// "service istio-system/istio-ingressgateway in cluster2".
	Source string
}

// GatewayService is what gateway resolution needs to know about one Service in one
// cluster.
type GatewayService struct {
	Cluster               ClusterID
	Name, Namespace, Host string
	Labels, Annotations   map[string]string
	// Ports are the Service's port numbers.
	Ports []int32
	// Addresses are the Service's LoadBalancer ingress IPs and host names, then its
	// externalIPs.
	Addresses []string
}

// Gateways resolves every gateway of every network, sorted by network, cluster,
// address and port, without duplicates. The gateways come from:
//
//   - a meshNetworks gateway with an address: the address if it is an IP, else each IP
//     that lookup returns for it (none: no gateway); the placeholder 0.0.0.0 gives
//     none (see AwaitingGateway);
//   - a meshNetworks gateway with a registryServiceName: the Service with that Host in
//     each fromRegistry cluster of the network; each of its Addresses (host names
//     through lookup) is a gateway of that cluster, on the meshNetworks port;
//   - every Service labelled topology.istio.io/network=<network>: each of its
//     Addresses, on the port named by its networking.istio.io/gatewayPort annotation
//     or label (default 15443). When the Service lists its Ports and that port is not
//     among them, the Service is no gateway. An unparsable gatewayPort falls back to
//     the default, and Source says so.
//
// Loopback, link-local, multicast, broadcast and unspecified addresses, whether
// resolved or found on a Service, are never gateways.
//
// When the same (network, cluster, address, port) comes from several places, a
// meshNetworks gateway is kept over a labelled Service. lookup may be nil (no DNS
// names are resolved); it must return addresses, anything else is ignored. n may be
// nil: then only labelled Services give gateways.
func (n *Networks) Gateways(services []GatewayService, lookup func(host string) []string) []Gateway {
	var out []rankedGateway
	add := func(rank int, g Gateway, addr string) {
		if IsPlaceholderGateway(addr) {
			return // the address is not known yet: nothing can connect to it
		}
		ips := []string{addr}
		if !isIP(addr) {
			if lookup == nil {
				return
			}
			ips = lookup(addr)
		}
		for _, ip := range ips {
			a, err := netip.ParseAddr(ip)
			if err != nil || a.Zone() != "" || unusableGatewayIP(ip) != "" || a.Unmap().IsUnspecified() {
				continue // not an address other networks can reach
			}
			g.Address = a.Unmap().String()
			out = append(out, rankedGateway{Gateway: g, rank: rank})
		}
	}
	cfg := n.configOrEmpty()
	for _, name := range sortedNetworkNames(cfg) {
		id := NetworkID(name)
		for i, gw := range cfg.GetNetworks()[name].GetGateways() {
			src := fmt.Sprintf("meshNetworks networks.%s.gateways[%d]", name, i)
			g := Gateway{Network: id, Port: gw.GetPort(), Locality: gw.GetLocality(), Source: src}
			if a := gw.GetAddress(); a != "" {
				add(0, g, a)
				continue
			}
			host := gw.GetRegistryServiceName()
			for _, c := range n.clusters[id] {
				for _, s := range services {
					if s.Cluster != c || s.Host != host {
						continue
					}
					g := g
					g.Cluster = c
					g.Source = fmt.Sprintf("%s (service %s/%s in %s)", src, s.Namespace, s.Name, c)
					for _, a := range s.Addresses {
						add(0, g, a)
					}
				}
			}
		}
	}
	for _, s := range services {
		id := NetworkID(s.Labels[LabelNetwork])
		if id == "" {
			continue
		}
		port, note := gatewayPort(s)
		if len(s.Ports) > 0 && !slices.Contains(s.Ports, int32(port)) {
			continue
		}
		g := Gateway{
			Network: id, Cluster: s.Cluster, Port: port,
			Source: fmt.Sprintf("service %s/%s in %s%s", s.Namespace, s.Name, s.Cluster, note),
		}
		for _, a := range s.Addresses {
			add(1, g, a)
		}
	}
	slices.SortStableFunc(out, func(a, b rankedGateway) int {
		return cmp.Or(
			cmp.Compare(a.Network, b.Network),
			cmp.Compare(a.Cluster, b.Cluster),
			compareAddr(a.Address, b.Address),
			cmp.Compare(a.Port, b.Port),
			cmp.Compare(a.rank, b.rank),
			cmp.Compare(a.Source, b.Source),
			cmp.Compare(a.Locality, b.Locality),
		)
	})
	gws := make([]Gateway, 0, len(out))
	for i, g := range out {
		if i > 0 && sameGateway(out[i-1].Gateway, g.Gateway) {
			continue
		}
		gws = append(gws, g.Gateway)
	}
	return gws
}

type rankedGateway struct {
	Gateway
	rank int // lower wins among duplicates: 0 meshNetworks, 1 labelled Service
}

func sameGateway(a, b Gateway) bool {
	return a.Network == b.Network && a.Cluster == b.Cluster && a.Address == b.Address && a.Port == b.Port
}

// compareAddr orders IP addresses numerically (IPv4 before IPv6).
func compareAddr(a, b string) int {
	return netip.MustParseAddr(a).Compare(netip.MustParseAddr(b))
}

// gatewayPort returns the gateway port of a labelled Service and, when its
// gatewayPort could not be used, a note saying so.
func gatewayPort(s GatewayService) (uint32, string) {
	v, ok := s.Annotations[LabelGatewayPort]
	if !ok {
		v, ok = s.Labels[LabelGatewayPort]
	}
	if !ok {
		return DefaultGatewayPort, ""
	}
	p, err := strconv.ParseUint(v, 10, 16)
	if err != nil || p == 0 {
		return DefaultGatewayPort, fmt.Sprintf(" (invalid %s %q, using %d)", LabelGatewayPort, v, DefaultGatewayPort)
	}
	return uint32(p), ""
}

// AwaitingGateway reports whether network id declares gateways in meshNetworks and
// every one of them is the placeholder address (0.0.0.0 or ::): its gateway is not
// known yet, so its endpoints are unreachable from other networks.
func (n *Networks) AwaitingGateway(id NetworkID) bool {
	if n == nil {
		return false
	}
	return n.awaiting[id]
}

// Notes returns what people should know about the configuration in force, one line
// per network that needs it, sorted, e.g. "network2: gateway address not set yet; its
// endpoints are unreachable from other networks".
func (n *Networks) Notes() []string {
	var out []string
	for _, id := range n.Names() {
		if n.awaiting[id] {
			out = append(out, fmt.Sprintf("%s: gateway address not set yet; its endpoints are unreachable from other networks", id))
		}
	}
	return out
}
