package eds

import (
	"cmp"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/network"
)

// maxScale bounds the weight scale factor: with more distinct gateway counts than
// that allows, weights are rounded instead of exact.
const maxScale = 720720 // lcm(1..16)

// Topology is the networks and gateways one push builds against. Build it once per
// push with NewTopology; it is immutable.
type Topology struct {
	Networks *network.Networks
	// gateways by network, sorted; and by network and cluster.
	byNetwork map[network.NetworkID][]network.Gateway
	byCluster map[network.NetworkID]map[network.ClusterID][]network.Gateway
	// registryServices are the hosts of registryServiceName gateways.
	registryServices map[string]bool
}

// NewTopology indexes gateways by network and by cluster.
func NewTopology(nets *network.Networks, gateways []network.Gateway) *Topology {
	t := &Topology{
		Networks:  nets,
		byNetwork: map[network.NetworkID][]network.Gateway{},
		byCluster: map[network.NetworkID]map[network.ClusterID][]network.Gateway{},
	}
	for _, gw := range gateways {
		t.byNetwork[gw.Network] = append(t.byNetwork[gw.Network], gw)
		if gw.Cluster != "" {
			if t.byCluster[gw.Network] == nil {
				t.byCluster[gw.Network] = map[network.ClusterID][]network.Gateway{}
			}
			t.byCluster[gw.Network][gw.Cluster] = append(t.byCluster[gw.Network][gw.Cluster], gw)
		}
	}
	return t
}

// gatewaysFor returns the gateways that stand for an endpoint of cluster c on
// network n: the cluster's own gateways in n if it has any, else all of n's.
func (t *Topology) gatewaysFor(n network.NetworkID, c network.ClusterID) []network.Gateway {
	if gws := t.byCluster[n][c]; len(gws) > 0 {
		return gws
	}
	return t.byNetwork[n]
}

type gatewayKey struct {
	address string
	port    uint32
}

// gatewayShare accumulates the endpoints one gateway stands for.
type gatewayShare struct {
	gw       network.Gateway
	weight   uint64
	locality clusterregistry.Locality
	mixed    bool // stands for endpoints in more than one locality
	seen     bool
}

// BuildLoadAssignment builds the ClusterLoadAssignment named clusterName for a proxy
// group with view v, from the ready endpoints of one service port in every cluster.
//
// Split horizon: endpoints on the proxy's network, or on a network without gateways,
// or where either network is unknown, are sent directly. Endpoints on another network
// with gateways are replaced by those gateways (the endpoint's own cluster's gateways
// when it has any); endpoints that are not mTLS-capable are dropped there. Every
// endpoint carries the same total weight: weights are scaled by the least common
// multiple of the gateway counts and each gateway gets its share. A gateway appears
// once, however many localities it stands for. A router sees only its own network's
// mTLS endpoints. Output is sorted: localities by region, zone, subzone; endpoints by
// address and port.
func BuildLoadAssignment(clusterName string, endpoints map[network.ClusterID][]clusterregistry.Endpoint, topo *Topology, v View) *endpointv3.ClusterLoadAssignment {
	type direct struct {
		ep *clusterregistry.Endpoint
	}
	var directs []direct
	type remote struct {
		ep  *clusterregistry.Endpoint
		gws []network.Gateway
	}
	var remotes []remote
	scale := uint64(1)

	for _, eps := range endpoints {
		for i := range eps {
			ep := &eps[i]
			if !ep.Ready {
				continue
			}
			n := topo.Networks.EndpointNetwork(ep.Network, ep.Cluster, ep.Address)
			if !v.sees(n) {
				continue
			}
			mtls := ep.TLSMode == network.TLSModeIstio
			if v.Role == RoleRouter {
				if mtls && (n == v.Network || n == "" || v.Network == "") {
					directs = append(directs, direct{ep})
				}
				continue
			}
			if n == v.Network || n == "" || v.Network == "" {
				directs = append(directs, direct{ep})
				continue
			}
			gws := topo.gatewaysFor(n, ep.Cluster)
			if len(gws) == 0 {
				directs = append(directs, direct{ep})
				continue
			}
			if !mtls {
				continue // cannot cross a passthrough gateway
			}
			remotes = append(remotes, remote{ep, gws})
			if next := lcm(scale, uint64(len(gws))); next <= maxScale {
				scale = next
			}
		}
	}

	type lbKey = clusterregistry.Locality
	groups := map[lbKey][]*endpointv3.LbEndpoint{}
	weights := map[lbKey]uint64{}
	for _, d := range directs {
		groups[d.ep.Locality] = append(groups[d.ep.Locality], lbEndpoint(d.ep.Address, d.ep.Port, scale, d.ep.TLSMode == network.TLSModeIstio))
		weights[d.ep.Locality] += scale
	}
	shares := map[gatewayKey]*gatewayShare{}
	for _, r := range remotes {
		w := scale / uint64(len(r.gws))
		if w == 0 {
			w = 1
		}
		for _, gw := range r.gws {
			k := gatewayKey{gw.Address, gw.Port}
			s := shares[k]
			if s == nil {
				s = &gatewayShare{gw: gw}
				shares[k] = s
			}
			s.weight += w
			if !s.seen {
				s.locality, s.seen = r.ep.Locality, true
			} else if s.locality != r.ep.Locality {
				s.mixed = true
			}
		}
	}
	for _, s := range shares {
		loc := s.locality
		if s.gw.Locality != "" {
			loc = parseLocality(s.gw.Locality)
		} else if s.mixed {
			loc = clusterregistry.Locality{}
		}
		groups[loc] = append(groups[loc], lbEndpoint(s.gw.Address, s.gw.Port, s.weight, true))
		weights[loc] += s.weight
	}

	cla := &endpointv3.ClusterLoadAssignment{ClusterName: clusterName}
	locs := make([]lbKey, 0, len(groups))
	for l := range groups {
		locs = append(locs, l)
	}
	slices.SortFunc(locs, func(a, b lbKey) int {
		return cmp.Or(cmp.Compare(a.Region, b.Region), cmp.Compare(a.Zone, b.Zone), cmp.Compare(a.Subzone, b.Subzone))
	})
	for _, l := range locs {
		eps := groups[l]
		slices.SortFunc(eps, func(a, b *endpointv3.LbEndpoint) int {
			sa, sb := a.GetEndpoint().GetAddress().GetSocketAddress(), b.GetEndpoint().GetAddress().GetSocketAddress()
			return cmp.Or(cmp.Compare(sa.GetAddress(), sb.GetAddress()), cmp.Compare(sa.GetPortValue(), sb.GetPortValue()))
		})
		cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
			Locality:            &corev3.Locality{Region: l.Region, Zone: l.Zone, SubZone: l.Subzone},
			LbEndpoints:         eps,
			LoadBalancingWeight: wrapperspb.UInt32(clampWeight(weights[l])),
		})
	}
	return cla
}

// tlsModeMetadata marks an endpoint that accepts Istio mTLS, for the cluster's
// transport socket match.
var tlsModeMetadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
	"envoy.transport_socket_match": {Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue(network.TLSModeIstio)}},
}}

func lbEndpoint(addr string, port uint32, weight uint64, mtls bool) *endpointv3.LbEndpoint {
	ep := &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Protocol:      corev3.SocketAddress_TCP,
				Address:       addr,
				PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
			}}},
		}},
		HealthStatus:        corev3.HealthStatus_HEALTHY,
		LoadBalancingWeight: wrapperspb.UInt32(clampWeight(weight)),
	}
	if mtls {
		ep.Metadata = tlsModeMetadata
	}
	return ep
}

func clampWeight(w uint64) uint32 {
	if w > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(w)
}

// parseLocality reads "region/zone/subzone" (any suffix may be missing).
func parseLocality(s string) clusterregistry.Locality {
	parts := strings.SplitN(s, "/", 3)
	var l clusterregistry.Locality
	l.Region = parts[0]
	if len(parts) > 1 {
		l.Zone = parts[1]
	}
	if len(parts) > 2 {
		l.Subzone = parts[2]
	}
	return l
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func lcm(a, b uint64) uint64 { return a / gcd(a, b) * b }
