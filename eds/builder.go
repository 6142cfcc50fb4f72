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
	// ClusterNetworks is the network of each cluster from the topology.istio.io/network
	// label on its system namespace; set it before the Topology is used.
	ClusterNetworks map[network.ClusterID]network.NetworkID
}

// ProxyNetwork returns the network of a proxy with view v: its NETWORK metadata; else
// its cluster's network (the cluster's system-namespace label, then the meshNetworks
// network whose fromRegistry names it); else "", the unnamed network.
func (t *Topology) ProxyNetwork(v View) network.NetworkID {
	if v.Network != "" || v.Cluster == "" {
		return v.Network
	}
	return t.clusterNetwork(v.Cluster)
}

// clusterNetwork returns cluster c's network: its system-namespace label, else the
// meshNetworks network whose fromRegistry names it; "" if neither.
func (t *Topology) clusterNetwork(c network.ClusterID) network.NetworkID {
	if n := t.ClusterNetworks[c]; n != "" {
		return n
	}
	return t.Networks.ClusterNetwork(c)
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
}

// lbRow is one LbEndpoint to build: an endpoint sent as it is, or a gateway standing
// for endpoints of another network.
type lbRow struct {
	prio   uint32 // EDS priority; 0 without a traffic distribution
	loc    clusterregistry.Locality
	addr   string
	port   uint32
	weight uint64
	mtls   bool
}

// BuildLoadAssignment builds the ClusterLoadAssignment named clusterName for a proxy
// group with view v, from the ready endpoints of one service port in every cluster.
//
// Split horizon: the proxy's network is Topology.ProxyNetwork. Endpoints on the
// proxy's network, on a network without gateways, or whose own network is unknown are
// sent directly. Endpoints on another network with gateways are replaced by those
// gateways (the endpoint's own cluster's gateways when it has any) — for a proxy on
// the unnamed network too, as in Istio 1.1; endpoints that are not mTLS-capable are
// dropped there. Endpoints on a network whose only gateways are the placeholder
// 0.0.0.0 are unreachable from other networks and dropped. Every
// endpoint carries the same total weight: weights are scaled by the least common
// multiple of the gateway counts and each gateway gets its share. A gateway appears
// once, however many localities it stands for. A router sees only its own network's
// mTLS endpoints. Output is sorted: localities by region, zone, subzone; endpoints by
// address and port.
//
// The mTLS endpoints of every result share one Metadata message: treat results as
// immutable.
//
// It is BuildDistributed for a service without a traffic distribution: every
// endpoint in priority 0.
func BuildLoadAssignment(clusterName string, endpoints map[network.ClusterID][]clusterregistry.Endpoint, topo *Topology, v View) *endpointv3.ClusterLoadAssignment {
	return BuildDistributed(clusterName, endpoints, topo, v, network.DistributionUnset)
}

// BuildDistributed is BuildLoadAssignment for a service with traffic distribution
// d. With d set, each endpoint (or gateway) gets an EDS priority by its proximity
// to the proxy (proximity), so that clients use the closest ones while any of them
// is healthy and fail over to the next otherwise:
//
//   - PreferSameNode only: endpoints on the proxy's own node (View.Node, and
//     View.NodeCluster when the proxy named its cluster);
//   - endpoints on the proxy's network (or on no known network) in its region, zone
//     and subzone; then in its region and zone; in its region; anywhere;
//   - endpoints sent directly on another network (one without gateways), ranked
//     by locality the same way;
//   - other networks' gateways, ranked by their locality the same way.
//
// A level is dropped when nothing is in it, so priorities run from 0 without
// gaps, as gRPC requires. A proxy that sent no locality matches no locality: its
// network decides. Within a priority, localities and weights are as without d.
// Routers get no priorities.
func BuildDistributed(clusterName string, endpoints map[network.ClusterID][]clusterregistry.Endpoint, topo *Topology, v View, d network.TrafficDistribution) *endpointv3.ClusterLoadAssignment {
	if v.Role == RoleRouter {
		d = network.DistributionUnset
	}
	// Working slices start in buffers on the stack, which fit small services.
	var shardBuf [8][]clusterregistry.Endpoint
	shards, total := shardBuf[:0], 0
	for _, eps := range endpoints {
		shards = append(shards, eps)
		total += len(eps)
	}
	// picks holds the endpoints sent directly from the front, those behind gateways
	// from the back.
	type pick struct {
		ep  *clusterregistry.Endpoint
		gws []network.Gateway
		n   network.NetworkID // the endpoint's network
	}
	var pickBuf [16]pick
	picks := pickBuf[:]
	if total > len(picks) {
		picks = make([]pick, total)
	}
	nDirect, nRemote := 0, 0
	scale := uint64(1)
	pn := topo.ProxyNetwork(v)

	for _, eps := range shards {
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
				if mtls && (n == pn || n == "" || pn == "") {
					picks[nDirect] = pick{ep: ep}
					nDirect++
				}
				continue
			}
			var gws []network.Gateway
			if n != pn && n != "" {
				gws = topo.gatewaysFor(n, ep.Cluster)
				if len(gws) == 0 && topo.Networks.AwaitingGateway(n) {
					continue // its gateway's address is not set yet
				}
			}
			if len(gws) == 0 {
				picks[nDirect] = pick{ep: ep, n: n}
				nDirect++
				continue
			}
			if !mtls {
				continue // cannot cross a passthrough gateway
			}
			nRemote++
			picks[len(picks)-nRemote] = pick{ep: ep, gws: gws, n: n}
			if next := lcm(scale, uint64(len(gws))); next <= maxScale {
				scale = next
			}
		}
	}

	var shareBuf [4]gatewayShare
	shares := shareBuf[:0]
	var index map[gatewayKey]int // into shares
	if nRemote > 0 {
		index = map[gatewayKey]int{}
	}
	for _, r := range picks[len(picks)-nRemote:] {
		w := max(scale/uint64(len(r.gws)), 1)
		for _, gw := range r.gws {
			k := gatewayKey{gw.Address, gw.Port}
			i, ok := index[k]
			if !ok {
				i = len(shares)
				index[k] = i
				shares = append(shares, gatewayShare{gw: gw, locality: r.ep.GetLocality()})
			}
			s := &shares[i]
			s.weight += w
			if s.locality != r.ep.GetLocality() {
				s.mixed = true
			}
		}
	}

	var rowBuf [8]lbRow
	rows := rowBuf[:0]
	if n := nDirect + len(shares); n > len(rowBuf) {
		rows = make([]lbRow, 0, n)
	}
	for _, p := range picks[:nDirect] {
		ep := p.ep
		row := lbRow{loc: ep.GetLocality(), addr: ep.Address, port: ep.Port, weight: scale, mtls: ep.TLSMode == network.TLSModeIstio}
		if d != network.DistributionUnset {
			row.prio = proximity(v, d, ep, p.n == pn || p.n == "", false, &row.loc)
		}
		rows = append(rows, row)
	}
	for i := range shares {
		s := &shares[i]
		if s.gw.Locality != "" {
			s.locality = parseLocality(s.gw.Locality)
		} else if s.mixed {
			s.locality = clusterregistry.Locality{}
		}
		row := lbRow{loc: s.locality, addr: s.gw.Address, port: s.gw.Port, weight: s.weight, mtls: true}
		if d != network.DistributionUnset {
			row.prio = proximity(v, d, nil, false, true, &s.locality)
		}
		rows = append(rows, row)
	}
	slices.SortFunc(rows, compareRows)
	if d != network.DistributionUnset && len(rows) > 0 {
		compactPriorities(rows)
	}
	return assemble(clusterName, rows)
}

// Proximity levels (proximity): the same node, then four per class of endpoint
// (full locality match, region and zone, region, none) for the proxy's network,
// other networks sent directly, and other networks' gateways.
const (
	levelSameNode   = 0
	levelSameNet    = 1
	levelOtherNet   = levelSameNet + 4
	levelGateway    = levelOtherNet + 4
	fullLocalityHit = 3
)

// proximity returns the level of an endpoint ep (nil for a gateway) in locality l
// for a proxy with view v under distribution d; lower is closer. sameNet says the
// endpoint is on the proxy's network (or on none known).
func proximity(v View, d network.TrafficDistribution, ep *clusterregistry.Endpoint, sameNet, gateway bool, l *clusterregistry.Locality) uint32 {
	if d == network.DistributionPreferSameNode && ep != nil && sameNet && v.Node != "" &&
		ep.Node == v.Node && (v.NodeCluster == "" || network.ClusterID(v.NodeCluster) == ep.Cluster) {
		return levelSameNode
	}
	base := uint32(levelOtherNet)
	switch {
	case gateway:
		base = levelGateway
	case sameNet:
		base = levelSameNet
	}
	return base + uint32(fullLocalityHit-localityMatch(&v.Locality, l))
}

// localityMatch counts the levels of l that match the proxy's locality p, from the
// region down, stopping at the first that differs: 0 to 3. A proxy without a
// locality matches nothing.
func localityMatch(p, l *clusterregistry.Locality) int {
	switch {
	case *p == (clusterregistry.Locality{}) || p.Region != l.Region:
		return 0
	case p.Zone != l.Zone:
		return 1
	case p.Subzone != l.Subzone:
		return 2
	}
	return fullLocalityHit
}

// compactPriorities renumbers the levels of rows, sorted by level, to priorities
// 0, 1, 2… without gaps.
func compactPriorities(rows []lbRow) {
	var next uint32
	prev := rows[0].prio
	for i := range rows {
		if level := rows[i].prio; level != prev {
			next++
			prev = level
		}
		rows[i].prio = next
	}
}

// compareRows orders by priority, locality, address and port, then weight and mTLS
// so that the order is total.
func compareRows(a, b lbRow) int {
	if c := cmp.Compare(a.prio, b.prio); c != 0 {
		return c
	}
	if c := compareLocality(&a.loc, &b.loc); c != 0 {
		return c
	}
	if c := strings.Compare(a.addr, b.addr); c != 0 {
		return c
	}
	if c := cmp.Compare(a.port, b.port); c != 0 {
		return c
	}
	if c := cmp.Compare(a.weight, b.weight); c != 0 {
		return c
	}
	switch {
	case a.mtls == b.mtls:
		return 0
	case b.mtls:
		return -1
	}
	return 1
}

func compareLocality(a, b *clusterregistry.Locality) int {
	if c := strings.Compare(a.Region, b.Region); c != 0 {
		return c
	}
	if c := strings.Compare(a.Zone, b.Zone); c != 0 {
		return c
	}
	return strings.Compare(a.Subzone, b.Subzone)
}

// assemble builds the ClusterLoadAssignment of sorted rows, one LocalityLbEndpoints
// per run of rows in the same priority and locality. The messages of all endpoints are allocated
// together, and those of all localities, rather than eight per endpoint.
func assemble(clusterName string, rows []lbRow) *endpointv3.ClusterLoadAssignment {
	switch len(rows) {
	case 0:
		return &endpointv3.ClusterLoadAssignment{ClusterName: clusterName}
	case 1: // a common case, in one allocation
		m := new(oneEndpointCLA)
		r := &rows[0]
		m.lbs[0] = m.ep.build(r.addr, r.port, r.weight, r.mtls)
		m.lles[0] = m.loc.build(&r.loc, m.lbs[:], r.weight, r.prio)
		m.cla.ClusterName, m.cla.Endpoints = clusterName, m.lles[:]
		return &m.cla
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: clusterName}
	nloc := 1
	for i := 1; i < len(rows); i++ {
		if rows[i-1].loc != rows[i].loc || rows[i-1].prio != rows[i].prio {
			nloc++
		}
	}
	eps := make([]lbEndpointMsgs, len(rows))
	lbs := make([]*endpointv3.LbEndpoint, len(rows))
	locs := make([]localityMsgs, nloc)
	cla.Endpoints = make([]*endpointv3.LocalityLbEndpoints, nloc)
	first, l := 0, 0
	var weight uint64
	for i := range rows {
		r := &rows[i]
		lbs[i] = eps[i].build(r.addr, r.port, r.weight, r.mtls)
		weight += r.weight
		if i+1 == len(rows) || r.loc != rows[i+1].loc || r.prio != rows[i+1].prio {
			cla.Endpoints[l] = locs[l].build(&r.loc, lbs[first:i+1:i+1], weight, r.prio)
			first, weight = i+1, 0
			l++
		}
	}
	return cla
}

// tlsModeMetadata marks an endpoint that accepts Istio mTLS, for the cluster's
// transport socket match. Every such endpoint shares it.
var tlsModeMetadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
	"envoy.transport_socket_match": {Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue(network.TLSModeIstio)}},
}}

// oneEndpointCLA holds the messages of a ClusterLoadAssignment with one endpoint.
type oneEndpointCLA struct {
	cla  endpointv3.ClusterLoadAssignment
	lles [1]*endpointv3.LocalityLbEndpoints
	loc  localityMsgs
	lbs  [1]*endpointv3.LbEndpoint
	ep   lbEndpointMsgs
}

// lbEndpointMsgs holds the messages of one LbEndpoint.
type lbEndpointMsgs struct {
	lb       endpointv3.LbEndpoint
	host     endpointv3.LbEndpoint_Endpoint
	endpoint endpointv3.Endpoint
	address  corev3.Address
	socket   corev3.Address_SocketAddress
	sockAddr corev3.SocketAddress
	port     corev3.SocketAddress_PortValue
	weight   wrapperspb.UInt32Value
}

func (m *lbEndpointMsgs) build(addr string, port uint32, weight uint64, mtls bool) *endpointv3.LbEndpoint {
	m.port.PortValue = port
	m.sockAddr.Protocol = corev3.SocketAddress_TCP
	m.sockAddr.Address = addr
	m.sockAddr.PortSpecifier = &m.port
	m.socket.SocketAddress = &m.sockAddr
	m.address.Address = &m.socket
	m.endpoint.Address = &m.address
	m.host.Endpoint = &m.endpoint
	m.weight.Value = clampWeight(weight)
	m.lb.HostIdentifier = &m.host
	m.lb.HealthStatus = corev3.HealthStatus_HEALTHY
	m.lb.LoadBalancingWeight = &m.weight
	if mtls {
		m.lb.Metadata = tlsModeMetadata
	}
	return &m.lb
}

// localityMsgs holds the messages of one LocalityLbEndpoints but its endpoints.
type localityMsgs struct {
	lle      endpointv3.LocalityLbEndpoints
	locality corev3.Locality
	weight   wrapperspb.UInt32Value
}

func (m *localityMsgs) build(l *clusterregistry.Locality, eps []*endpointv3.LbEndpoint, weight uint64, prio uint32) *endpointv3.LocalityLbEndpoints {
	m.lle.Priority = prio
	m.locality.Region, m.locality.Zone, m.locality.SubZone = l.Region, l.Zone, l.Subzone
	m.weight.Value = clampWeight(weight)
	m.lle.Locality = &m.locality
	m.lle.LbEndpoints = eps
	m.lle.LoadBalancingWeight = &m.weight
	return &m.lle
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
