package eds

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/eds/xdsserver"
	"github.com/horizon-mesh/horizon/network"
)

// hostState is what the last push built for one host.
type hostState struct {
	gen       uint64
	namespace string
	// dist is the host's traffic distribution (distributionOf); invalid names an
	// unrecognized one, reported when it changes.
	dist    network.TrafficDistribution
	invalid string
	ports   []int32
	// selecting are the host's Services with a selector, by cluster: the candidates
	// for a router's gateway Service, whose ports its listeners bind (listenerPort).
	selecting []*clusterregistry.Service
	// peers are the identities behind each port (by index of ports).
	peers []PeerIdentities
	// The host's resources shared by every sidecar and every proxyless client, one of
	// each per port, encoded, rebuilt only when ports or peers change, so that a push
	// that leaves them alone hands out the same Resources.
	clusters, grpcListeners, grpcRoutes, grpcClusters []*xdsserver.Resource
}

// cacheKey names one built ClusterLoadAssignment; builtCLA says from which inputs
// it was built. Keying by name only (not by inputs) keeps one entry per resource, so
// a stream of changes replaces entries instead of piling up outdated ones.
type cacheKey struct {
	group string
	name  string
}

type builtCLA struct {
	gen  uint64              // host generation
	topo uint64              // topology generation
	res  *xdsserver.Resource // the assignment, encoded
}

// push rebuilds what changed since changedAt and hands every group its new
// snapshot. When the topology changed, the streams whose view it changes — a
// proxy that names only its cluster, whose network became known or went — are
// moved to their new view's group once the groups are pushed (Regroup).
func (s *Server) push(changedAt time.Time) {
	if s.applyClusterLocal() {
		// Views start or stop naming the proxies' clusters (Home). Move the
		// streams before anything is built: the groups they leave would build a
		// cluster-local host for a view without a cluster — no endpoints — and send
		// that to the proxies still in them.
		s.regroup()
	}
	if s.pushGroups(changedAt) {
		s.regroup()
	}
}

// regroup moves every stream whose view changed to its new view's group.
func (s *Server) regroup() {
	quiet := xdsserver.GroupsFunc(func(node *corev3.Node, attach func(xdsserver.Group)) (xdsserver.Group, error) {
		g, _, err := s.findGroup(node, attach)
		if err != nil {
			return nil, err
		}
		return g, nil
	})
	if n := s.xds.Regroup(quiet); n > 0 {
		s.log.Info("moved proxies to the group of their new view", "streams", n)
	}
}

// applyClusterLocal puts SetClusterLocal's hosts in force, for groups made from
// now on and, through a full rebuild, for the next push. It reports whether views
// start or stop naming the proxies' clusters.
func (s *Server) applyClusterLocal() (regroup bool) {
	s.mu.Lock()
	local := s.pendingLocal
	s.mu.Unlock()
	s.pushMu.Lock()
	if local.Equal(s.clusterLocal) {
		s.pushMu.Unlock()
		return false
	}
	wasEmpty := s.clusterLocal.Empty()
	s.clusterLocal = local
	s.topoGen++ // every assignment may change: bypass the built cache
	regroup = wasEmpty != local.Empty()
	if regroup {
		// Every proxy's view changes; a kept group of the old views, built before
		// the change, must not be found again by a proxy moving back to it. The
		// dropped groups keep serving their streams until Regroup moves them.
		for key, g := range s.groups {
			delete(s.groups, key)
			s.releaseShare(g.eds)
			s.releaseRouterShare(g.router)
		}
	}
	s.pushMu.Unlock()
	s.mu.Lock()
	s.pendingFull = true
	s.mu.Unlock()
	return regroup
}

// pushGroups is push without the regrouping; it reports whether the topology
// changed.
func (s *Server) pushGroups(changedAt time.Time) (topoChanged bool) {
	s.mu.Lock()
	pending, full := s.pendingHosts, s.pendingFull
	s.pendingHosts, s.pendingFull = map[string]bool{}, false
	s.mu.Unlock()

	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	start := time.Now()

	// A cluster's network label decides the network of proxies that name only their
	// cluster; it is read on every push (one lookup per cluster).
	if full || s.topo == nil || s.gatewayHostChanged(pending) ||
		!maps.Equal(s.opts.Source.ClusterNetworks(), s.topo.ClusterNetworks) {
		topo, gws := s.buildTopology()
		if s.topo == nil || !slices.Equal(gws, s.gateways) || topo.Networks != s.topo.Networks ||
			!maps.Equal(topo.ClusterNetworks, s.topo.ClusterNetworks) {
			s.topo, s.gateways = topo, gws
			s.known = knownOf(topo, gws)
			s.topoGen++
			full, topoChanged = true, true
		}
	}
	if full {
		for _, h := range s.opts.Source.Hosts() {
			pending[h] = true
		}
		for h := range s.hosts {
			pending[h] = true
		}
	}
	needLoc, needNode := s.distHosts > 0, s.nodeHosts > 0
	cdsChanged := false
	var rebound []*clusterregistry.Service // of hosts whose selecting Services changed
	for host := range pending {
		ports, selecting := s.updateHost(host)
		cdsChanged = cdsChanged || ports
		rebound = append(rebound, selecting...)
	}
	if cdsChanged || full || s.clusters == nil {
		s.rebuildShared()
		s.routerGen++ // the hosts' ports changed: no router share still holds
		for _, g := range s.groups {
			s.rebuildRouter(g, true)
		}
	} else if len(rebound) > 0 {
		// A Service's selector or ports changed: the routers it selected, or now
		// selects, may bind other ports.
		for _, g := range s.groups {
			if g.view.Role == RoleRouter && slices.ContainsFunc(rebound, func(svc *clusterregistry.Service) bool {
				return selectorSelects(svc.Selector, g.view.Labels)
			}) {
				s.rebuildRouter(g, true)
			}
		}
	}
	if needLoc != (s.distHosts > 0) || needNode != (s.nodeHosts > 0) {
		// Views start or stop naming the proxies' locality or node: move the
		// streams to the groups of their new views.
		topoChanged = true
	}
	s.version++
	s.xds.ChangeStarted(changedAt)
	s.sweep(start)
	for _, g := range s.groups {
		s.setSnapshot(g)
	}
	s.pushCount++
	s.metrics.pushes.Inc()
	s.metrics.build.Observe(time.Since(start).Seconds())
	s.log.Debug("pushed", "hosts", len(pending), "full", full, "groups", len(s.groups), "took", time.Since(start))
	return topoChanged
}

// gatewayHostChanged reports whether a changed host may be a gateway Service.
func (s *Server) gatewayHostChanged(hosts map[string]bool) bool {
	for h := range hosts {
		for _, shard := range s.opts.Source.Services(h) {
			if shard.Service.Labels[network.LabelNetwork] != "" {
				return true
			}
		}
		if s.topo != nil && s.topo.registryServices[h] {
			return true
		}
	}
	for _, gw := range s.gateways {
		if gw.Cluster != "" {
			return true // cannot tell cheaply whether a removed Service was a gateway
		}
	}
	return false
}

func (s *Server) buildTopology() (*Topology, []network.Gateway) {
	nets := s.opts.Networks()
	regSvcs := registryServices(nets)
	var svcs []network.GatewayService
	for _, h := range s.opts.Source.Hosts() {
		for id, shard := range s.opts.Source.Services(h) {
			if shard.Service.Labels[network.LabelNetwork] == "" && !regSvcs[h] {
				continue
			}
			gs := network.GatewayService{
				Cluster: id, Name: shard.Service.Name, Namespace: shard.Service.Namespace, Host: h,
				Labels: shard.Service.Labels, Annotations: shard.Service.Annotations,
			}
			for _, p := range shard.Service.Ports {
				gs.Ports = append(gs.Ports, p.Port)
			}
			gs.Addresses = append(append(gs.Addresses, shard.Service.LoadBalancer...), shard.Service.ExternalIPs...)
			svcs = append(svcs, gs)
		}
	}
	lookup := s.opts.Lookup
	if lookup == nil {
		lookup = func(string) []string { return nil }
	}
	gws := nets.Gateways(svcs, lookup)
	topo := NewTopology(nets, gws)
	topo.registryServices = regSvcs
	topo.ClusterNetworks = s.opts.Source.ClusterNetworks()
	return topo, gws
}

// registryServices returns the hosts named by meshNetworks registryServiceName
// gateways.
func registryServices(nets *network.Networks) map[string]bool {
	out := map[string]bool{}
	for _, n := range nets.MeshNetworks().GetNetworks() {
		for _, gw := range n.GetGateways() {
			if h := gw.GetRegistryServiceName(); h != "" {
				out[h] = true
			}
		}
	}
	return out
}

// updateHost rebuilds host's ClusterLoadAssignments in every group. It reports
// whether the host's set of ports, or the identities behind one, changed (so CDS
// must change), and, when its
// Services with a selector changed in what routers bind (listenerPort), those
// Services before and after.
func (s *Server) updateHost(host string) (cdsChanged bool, rebound []*clusterregistry.Service) {
	shards := s.opts.Source.Services(host)
	portSet := map[int32]bool{}
	var selecting []*clusterregistry.Service
	for _, sh := range shards {
		for _, p := range sh.Service.Ports {
			portSet[p.Port] = true
		}
		if len(sh.Service.Selector) > 0 {
			selecting = append(selecting, &sh.Service)
		}
	}
	if len(selecting) > 1 {
		slices.SortFunc(selecting, func(a, b *clusterregistry.Service) int { return cmp.Compare(a.Cluster, b.Cluster) })
	}
	ports := slices.Sorted(maps.Keys(portSet))
	old := s.hosts[host]
	s.hostGen++
	if old != nil {
		s.countDist(old.dist, -1)
	}
	if len(ports) == 0 {
		delete(s.hosts, host)
		selecting = nil
	} else {
		ns := ""
		for _, sh := range shards {
			ns = sh.Service.Namespace
		}
		hs := &hostState{gen: s.hostGen, namespace: ns, ports: ports, selecting: selecting}
		hs.dist, hs.invalid = distributionOf(shards, s.defaultDist)
		s.countDist(hs.dist, 1)
		if hs.invalid != "" && (old == nil || old.invalid != hs.invalid) {
			s.metrics.invalidDist.Inc()
			s.log.Warn("unrecognized traffic distribution, treated as unset", "host", host, "value", hs.invalid)
		}
		hs.peers = make([]PeerIdentities, len(ports))
		for i, p := range ports {
			hs.peers[i] = peerIdentitiesOf(s.opts.TrustDomain, ns, endpointsOf(shards, p))
		}
		if old != nil && slices.Equal(old.ports, ports) && slices.EqualFunc(old.peers, hs.peers, PeerIdentities.equal) {
			hs.clusters, hs.grpcListeners, hs.grpcRoutes, hs.grpcClusters = old.clusters, old.grpcListeners, old.grpcRoutes, old.grpcClusters
		} else {
			s.buildShared(host, hs)
			cdsChanged = true
		}
		s.hosts[host] = hs
	}
	var before []*clusterregistry.Service
	if old != nil {
		before = old.selecting
	}
	if !slices.EqualFunc(before, selecting, sameBinding) {
		rebound = append(slices.Clip(before), selecting...)
	}
	for _, sh := range s.shares {
		if old != nil {
			for _, p := range old.ports {
				name := s.claName(sh.view, host, p)
				delete(sh.clas, name)
				if !slices.Contains(ports, p) {
					s.built.Remove(cacheKey{group: sh.view.endpointsKey(), name: name})
				}
			}
		}
		for _, p := range ports {
			name := s.claName(sh.view, host, p)
			sh.set(name, s.build(sh.view, host, p, name, shards))
		}
	}
	return cdsChanged || old != nil && len(ports) == 0, rebound
}

// distributionOf returns the traffic distribution of a host from its shards: the
// first set (Service.TrafficDistribution) in the order of cluster IDs, so that
// clusters that disagree give one answer whichever pushed last; def when none is
// set. It also returns the first unrecognized value, with its cluster.
func distributionOf(shards map[network.ClusterID]*clusterregistry.Shard, def network.TrafficDistribution) (network.TrafficDistribution, string) {
	d, invalid := network.DistributionUnset, ""
	var best network.ClusterID
	found := false
	for id, sh := range shards {
		if sh.Service.TrafficDistribution != network.DistributionUnset && (!found || id < best) {
			d, best, found = sh.Service.TrafficDistribution, id, true
		}
	}
	var bad network.ClusterID
	for id, sh := range shards {
		if sh.Service.InvalidTrafficDistribution != "" && (invalid == "" || id < bad) {
			invalid, bad = sh.Service.InvalidTrafficDistribution, id
		}
	}
	if invalid != "" {
		invalid = "cluster " + string(bad) + ": " + invalid
	}
	if !found {
		d = def
	}
	return d, invalid
}

// countDist counts a host with distribution d in or out (delta) of distHosts and
// nodeHosts.
func (s *Server) countDist(d network.TrafficDistribution, delta int) {
	if d != network.DistributionUnset {
		s.distHosts += delta
	}
	if d == network.DistributionPreferSameNode {
		s.nodeHosts += delta
	}
}

// buildShared builds hs's shared resources for host, encoded.
func (s *Server) buildShared(host string, hs *hostState) {
	for i, p := range hs.ports {
		hs.clusters = s.appendEncoded(hs.clusters, resourcev3.ClusterType, BuildCluster(host, p, hs.peers[i]))
		hs.grpcListeners = s.appendEncoded(hs.grpcListeners, resourcev3.ListenerType, buildGRPCListener(host, p))
		hs.grpcRoutes = s.appendEncoded(hs.grpcRoutes, resourcev3.RouteType, buildGRPCRoute(host, p))
		hs.grpcClusters = s.appendEncoded(hs.grpcClusters, resourcev3.ClusterType, buildGRPCCluster(host, p, s.opts.ProxylessMTLS, hs.peers[i]))
	}
}

// sameBinding reports whether a and b are the same Service with the same selector
// and ports: whatever else changed, a router binds the same ports.
func sameBinding(a, b *clusterregistry.Service) bool {
	return a.Cluster == b.Cluster && a.Namespace == b.Namespace && a.Name == b.Name &&
		maps.Equal(a.Selector, b.Selector) && slices.Equal(a.Ports, b.Ports)
}

func (s *Server) claName(v View, host string, port int32) string {
	if v.Role == RoleRouter {
		return SNIName(host, port)
	}
	return ClusterName(host, port)
}

// build returns the encoded ClusterLoadAssignment for one group and service port,
// from the cache when neither the host nor the topology changed since it was
// built; nil if it cannot be encoded. A rebuilt assignment whose bytes equal the
// cached one's is the cached Resource, so that the push recognises it by pointer.
// A host without a traffic distribution is built once for views that differ only
// in locality and node.
func (s *Server) build(v View, host string, port int32, name string, shards map[network.ClusterID]*clusterregistry.Shard) *xdsserver.Resource {
	hs := s.hosts[host]
	if hs.dist == network.DistributionUnset {
		v = v.withoutPlace()
	} else if hs.dist != network.DistributionPreferSameNode {
		v.Node, v.NodeCluster = "", ""
	}
	key := cacheKey{group: v.endpointsKey(), name: name}
	gen := hs.gen
	b, ok := s.built.Get(key)
	if ok && b.gen == gen && b.topo == s.topoGen {
		s.metrics.cacheHits.Inc()
		return b.res
	}
	s.metrics.cacheMisses.Inc()
	res := s.encodeCLA(BuildDistributed(name, s.endpointsFor(v, host, shards, port), s.topo, v, hs.dist))
	if res == nil {
		s.built.Remove(key)
		return nil
	}
	if ok && sameResource(b.res, res) {
		res = b.res
	}
	s.built.Add(key, builtCLA{gen: gen, topo: s.topoGen, res: res})
	return res
}

// endpointsFor is endpointsOf for a proxy with view v: of a cluster-local host
// (SetClusterLocal), only the shard of the proxy's own cluster, v.Home; none if
// that is not known. pushMu is held.
func (s *Server) endpointsFor(v View, host string, shards map[network.ClusterID]*clusterregistry.Shard, port int32) map[network.ClusterID][]clusterregistry.Endpoint {
	if s.clusterLocal.Matches(host) {
		sh := shards[v.Home]
		if v.Home == "" || sh == nil {
			return nil
		}
		shards = map[network.ClusterID]*clusterregistry.Shard{v.Home: sh}
	}
	return endpointsOf(shards, port)
}

// endpointsOf picks one service port's endpoints out of each cluster's shard.
func endpointsOf(shards map[network.ClusterID]*clusterregistry.Shard, port int32) map[network.ClusterID][]clusterregistry.Endpoint {
	eps := make(map[network.ClusterID][]clusterregistry.Endpoint, len(shards))
	for id, sh := range shards {
		if e := sh.Endpoints[port]; len(e) > 0 {
			eps[id] = e
		}
	}
	return eps
}

// rebuildShared collects the resources every sidecar, and every proxyless client,
// shares: one cluster (and for gRPC one listener and route) per service port, as
// updateHost built them. Fresh slices each time: snapshots already handed out keep
// the old ones.
func (s *Server) rebuildShared() {
	hosts := slices.Sorted(maps.Keys(s.hosts))
	s.clusters = []*xdsserver.Resource{}
	s.grpc.listeners, s.grpc.routes, s.grpc.clusters = nil, nil, nil
	for _, h := range hosts {
		hs := s.hosts[h]
		s.clusters = append(s.clusters, hs.clusters...)
		s.grpc.listeners = append(s.grpc.listeners, hs.grpcListeners...)
		s.grpc.routes = append(s.grpc.routes, hs.grpcRoutes...)
		s.grpc.clusters = append(s.grpc.clusters, hs.grpcClusters...)
	}
}

// rebuildRouter rebuilds a router group's listeners and clusters from the
// passthrough servers that select it, on the ports its gateway Services bind them
// to (routerServices, listenerPort). A kept group takes them from the share of
// routers with the same inputs, built once.
func (s *Server) rebuildRouter(g *group, kept bool) {
	if g.view.Role != RoleRouter {
		return
	}
	var all []PassthroughServer
	if s.opts.Gateways != nil {
		all = s.opts.Gateways.PassthroughServers()
	}
	servers := routerServers(all, g.view.Labels, s.opts.DefaultPassthrough)
	var svcs []*clusterregistry.Service
	if len(servers) > 0 && len(g.view.Labels) > 0 {
		var candidates []*clusterregistry.Service
		for _, hs := range s.hosts {
			candidates = append(candidates, hs.selecting...)
		}
		svcs = routerServices(candidates, g.view, s.topo)
	}
	if !kept {
		g.router = s.newRouterShare("", servers, svcs)
		return
	}
	key := routerInputs(servers, svcs) + "#" + strconv.FormatUint(s.routerGen, 10)
	if g.router != nil && g.router.key == key {
		return
	}
	sh := s.routerShares[key]
	if sh == nil {
		sh = s.newRouterShare(key, servers, svcs)
		s.routerShares[key] = sh
	}
	sh.refs++
	s.releaseRouterShare(g.router)
	g.router = sh
}

// routerInputs identifies what buildRouterResources reads besides the hosts: the
// servers selecting a router and the Services binding its ports.
func routerInputs(servers []PassthroughServer, svcs []*clusterregistry.Service) string {
	var b strings.Builder
	for _, sv := range servers {
		fmt.Fprintf(&b, "%q:%d:%q;", sv.Gateway, sv.Port, sv.Hosts)
	}
	b.WriteByte('|')
	for _, svc := range svcs {
		fmt.Fprintf(&b, "%q/%q/%q:%v;", svc.Cluster, svc.Namespace, svc.Name, svc.Ports)
	}
	return b.String()
}
