package network

import (
	"fmt"
	"net/netip"
	"sort"

	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
)

// Networks is the compiled, immutable form of a MeshNetworks configuration, used on
// hot paths. It is safe for concurrent use, and a nil *Networks behaves as an empty
// one.
type Networks struct {
	config   *meshv1alpha1.MeshNetworks // a private copy; never modified
	names    []NetworkID                // sorted
	registry map[ClusterID]NetworkID    // fromRegistry
	// cidrs is ordered longest prefix first, then by network name, so the first
	// match is the answer.
	cidrs    []cidrNetwork
	clusters map[NetworkID][]ClusterID // fromRegistry clusters of each network, sorted
	// awaiting holds the networks whose meshNetworks gateways are all placeholders.
	awaiting map[NetworkID]bool
}

type cidrNetwork struct {
	prefix  netip.Prefix
	network NetworkID
}

// Compile validates mn and compiles it. A nil mn compiles to an empty Networks, as
// does an empty configuration. mn is copied; later changes to it have no effect.
func Compile(mn *meshv1alpha1.MeshNetworks) (*Networks, error) {
	if err := ValidateMeshNetworks(mn); err != nil {
		return nil, fmt.Errorf("invalid meshNetworks: %w", err)
	}
	n := &Networks{
		config:   &meshv1alpha1.MeshNetworks{},
		registry: map[ClusterID]NetworkID{},
		clusters: map[NetworkID][]ClusterID{},
		awaiting: map[NetworkID]bool{},
	}
	if mn != nil {
		n.config = proto.Clone(mn).(*meshv1alpha1.MeshNetworks)
	}
	for _, name := range sortedNetworkNames(n.config) {
		id := NetworkID(name)
		n.names = append(n.names, id)
		for _, ep := range n.config.GetNetworks()[name].GetEndpoints() {
			if c := ep.GetFromRegistry(); c != "" {
				n.registry[ClusterID(c)] = id
				n.clusters[id] = appendUnique(n.clusters[id], ClusterID(c))
				continue
			}
			p, err := parseCIDR(ep.GetFromCidr())
			if err != nil { // unreachable after validation
				return nil, fmt.Errorf("network %q: %w", name, err)
			}
			n.cidrs = append(n.cidrs, cidrNetwork{prefix: p, network: id})
		}
		sort.Slice(n.clusters[id], func(i, j int) bool { return n.clusters[id][i] < n.clusters[id][j] })
		gws := n.config.GetNetworks()[name].GetGateways()
		placeholders := 0
		for _, gw := range gws {
			if IsPlaceholderGateway(gw.GetAddress()) {
				placeholders++
			}
		}
		n.awaiting[id] = len(gws) > 0 && placeholders == len(gws)
	}
	sort.SliceStable(n.cidrs, func(i, j int) bool {
		a, b := n.cidrs[i], n.cidrs[j]
		if a.prefix.Bits() != b.prefix.Bits() {
			return a.prefix.Bits() > b.prefix.Bits()
		}
		return a.network < b.network
	})
	return n, nil
}

func appendUnique(s []ClusterID, c ClusterID) []ClusterID {
	for _, x := range s {
		if x == c {
			return s
		}
	}
	return append(s, c)
}

// ClusterNetwork returns the network whose fromRegistry names cluster, or "".
func (n *Networks) ClusterNetwork(cluster ClusterID) NetworkID {
	if n == nil {
		return ""
	}
	return n.registry[cluster]
}

// EndpointNetwork resolves the network of an endpoint with address ip in cluster.
// label is the network already taken from the pod's topology.istio.io/network label
// or, failing that, from the same label on the cluster's system namespace; it is empty
// if neither has one. The first answer wins: label, then the network whose
// fromRegistry is cluster, then the network with the longest fromCidr prefix holding
// ip (ties go to the network whose name sorts first), then "" (no network).
func (n *Networks) EndpointNetwork(label NetworkID, cluster ClusterID, ip string) NetworkID {
	if label != "" {
		return label
	}
	if n == nil {
		return ""
	}
	if id, ok := n.registry[cluster]; ok {
		return id
	}
	if len(n.cidrs) == 0 {
		return ""
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	addr = addr.Unmap().WithZone("")
	for _, c := range n.cidrs {
		if c.prefix.Contains(addr) {
			return c.network
		}
	}
	return ""
}

// Names returns the networks named in the configuration, sorted.
func (n *Networks) Names() []NetworkID {
	if n == nil {
		return nil
	}
	return append([]NetworkID(nil), n.names...)
}

// MeshNetworks returns a copy of the configuration n was compiled from, for display.
func (n *Networks) MeshNetworks() *meshv1alpha1.MeshNetworks {
	return proto.Clone(n.configOrEmpty()).(*meshv1alpha1.MeshNetworks)
}

// Equal reports whether n and o were compiled from the same configuration.
func (n *Networks) Equal(o *Networks) bool {
	return proto.Equal(n.configOrEmpty(), o.configOrEmpty())
}

func (n *Networks) configOrEmpty() *meshv1alpha1.MeshNetworks {
	if n == nil {
		return &meshv1alpha1.MeshNetworks{}
	}
	return n.config
}
