package eds

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/eds/xdsserver"
)

// group is the resources shared by every proxy with one view. Its fields are owned
// by the push goroutine (under Server.pushMu); feed is safe for concurrent use.
type group struct {
	view View
	// eds is the group's endpoints: shared by every kept group whose views differ
	// only in router labels (View.endpointsKey), so a thousand gateways' label
	// sets cost one set of assignments, encoded once.
	eds *endpointShare
	// edsSent is the endpoints snapshot the group last published.
	edsSent *xdsserver.Resources
	// router is a router's listeners and clusters: they depend on the Gateways
	// that select its labels and the Services that bind its ports, and are shared
	// by the kept routers for which those are equal.
	router *routerShare
	// routerSent is the listeners and clusters snapshots the group last published.
	routerSent [2]*xdsserver.Resources
	// What the last snapshot held per type URL, to version only what changed.
	sent map[resourcev3.Type]*xdsserver.Resources
	// emptySince is when the feed was last seen without streams (zero while it has
	// some).
	emptySince time.Time

	feed xdsserver.Feed // published snapshots, and the streams they wake
}

// Feed is where the group's snapshots are published (xdsserver.Group).
func (g *group) Feed() *xdsserver.Feed { return &g.feed }

// MetricLabel is the group's network, the network label of the connections metric
// (xdsserver.Group).
func (g *group) MetricLabel() string { return string(g.view.Network) }

// groupIdleTimeout is how long a group without streams is kept (and rebuilt on
// pushes) before it is dropped, by a push or by the sweep (Run) that looks every
// groupIdleTimeout/4.
const groupIdleTimeout = time.Minute

// idle returns how long the group has had no streams at now (0 if it has some).
// Server.pushMu is held.
func (g *group) idle(now time.Time) time.Duration {
	if g.feed.Streams() > 0 {
		g.emptySince = time.Time{}
		return 0
	}
	if g.emptySince.IsZero() {
		g.emptySince = now
	}
	return now.Sub(g.emptySince)
}

// ensureGroup returns the group of node's view, creating it, with a snapshot, if
// it is newly seen. attach, if not nil, is called with the group under pushMu, so
// that a push cannot drop the group before the stream is attached to its feed. With
// attach nil (a unary Fetch) no group is created: a view without a group gets one
// built for this call and not kept. A view Horizon cannot serve (admit, checkLabels),
// or a new view past Options.MaxGroups, is refused with a gRPC status, counted in
// horizon_xds_refused_views_total.
func (s *Server) ensureGroup(node *corev3.Node, attach func(xdsserver.Group)) (*group, error) {
	g, reason, err := s.findGroup(node, attach)
	if err != nil {
		s.metrics.refused.WithLabelValues(reason).Inc()
	}
	return g, err
}

// findGroup is ensureGroup without the metric: it returns the reason of a refusal.
// Regroup uses it directly, since a connected proxy that keeps its group is not
// refused.
func (s *Server) findGroup(node *corev3.Node, attach func(xdsserver.Group)) (*group, string, error) {
	if err := checkLabels(node); err != nil {
		return nil, refusedLabels, err
	}
	v := ViewOf(node)
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	if !s.clusterLocal.Empty() {
		v.Home = homeOf(node)
	}
	if err := admit(&v, s.known, s.distHosts > 0, s.nodeHosts > 0); err != nil {
		reason := refusedUnknownNetwork
		if s.known == nil {
			reason = refusedNotReady
		}
		return nil, reason, err
	}
	key := v.Key()
	if g, ok := s.groups[key]; ok {
		if attach != nil {
			attach(g)
			g.emptySince = time.Time{}
		}
		return g, "", nil
	}
	g := &group{view: v}
	if attach == nil {
		if s.topo == nil {
			return nil, refusedNotReady, status.Error(codes.Unavailable, "no configuration yet")
		}
		g.eds = newEndpointShare(v)
		s.fill(g, false)
		return g, "", nil
	}
	if len(s.groups) >= s.opts.MaxGroups {
		return nil, refusedGroupLimit, errGroupLimit(s.opts.MaxGroups)
	}
	g.eds = s.shareFor(v)
	s.groups[key] = g
	s.metrics.groups.Set(float64(len(s.groups)))
	attach(g)
	if s.topo == nil {
		return g, "", nil // the first push builds it
	}
	s.fill(g, true)
	s.log.Info("new proxy group", "group", key)
	return g, "", nil
}

// fill builds g's resources and publishes its first snapshot; cached says whether
// what it builds may go to (and come from) the cache of built assignments, which
// only kept groups use. pushMu is held.
func (s *Server) fill(g *group, cached bool) {
	if sh := g.eds; !sh.filled {
		for host, hs := range s.hosts {
			shards := s.opts.Source.Services(host)
			for _, p := range hs.ports {
				name := s.claName(g.view, host, p)
				var res *xdsserver.Resource
				if cached {
					res = s.build(g.view, host, p, name, shards)
				} else {
					res = s.encodeCLA(BuildDistributed(name, s.endpointsFor(g.view, host, shards, p), s.topo, g.view, hs.dist))
				}
				sh.set(name, res)
			}
		}
		sh.filled = true
	}
	s.rebuildRouter(g, cached)
	s.setSnapshot(g)
}

// sweep drops the groups that have had no streams for longer than
// s.idleTimeout. pushMu is held.
func (s *Server) sweep(now time.Time) {
	for key, g := range s.groups {
		if g.idle(now) > s.idleTimeout {
			delete(s.groups, key) // e.g. a router's pod labels from before a rollout
			s.releaseShare(g.eds)
			s.releaseRouterShare(g.router)
			s.log.Info("dropped idle proxy group", "group", key)
		}
	}
	s.metrics.groups.Set(float64(len(s.groups)))
}

// endpointShare is the endpoints of every kept group with one View.endpointsKey:
// their assignments, encoded when built, and the snapshot of them published. Owned
// by the push goroutine (under Server.pushMu).
type endpointShare struct {
	view   View                           // a view with this key (labels cleared)
	clas   map[string]*xdsserver.Resource // encoded assignments by name
	filled bool                           // clas holds every host's assignments
	sent   *xdsserver.Resources           // as last published
	at     uint64                         // Server.version when sent was versioned; 0: never
	refs   int                            // kept groups using it
}

func newEndpointShare(v View) *endpointShare {
	v.Labels = nil
	return &endpointShare{view: v, clas: map[string]*xdsserver.Resource{}}
}

// set makes res the assignment named name; nil (it could not be encoded) leaves
// it out.
func (sh *endpointShare) set(name string, res *xdsserver.Resource) {
	if res == nil {
		delete(sh.clas, name)
		return
	}
	sh.clas[name] = res
}

// shareFor returns the share of v's endpoints key, creating it, and counts one more
// group using it. pushMu is held.
func (s *Server) shareFor(v View) *endpointShare {
	key := v.endpointsKey()
	sh := s.shares[key]
	if sh == nil {
		sh = newEndpointShare(v)
		s.shares[key] = sh
	}
	sh.refs++
	return sh
}

// releaseShare counts one group fewer using sh and drops it with the last.
// pushMu is held.
func (s *Server) releaseShare(sh *endpointShare) {
	if sh.refs--; sh.refs <= 0 {
		delete(s.shares, sh.view.endpointsKey())
	}
}

// routerShare is the listeners and clusters of the kept routers whose inputs
// (routerInputs) are equal, encoded once per push. Owned by the push goroutine.
type routerShare struct {
	key                 string // routerInputs and Server.routerGen; "" if not kept in Server.routerShares
	listeners, clusters []*xdsserver.Resource
	sent                [2]*xdsserver.Resources // listeners, clusters as last versioned
	at                  uint64                  // Server.version when sent was versioned; 0: never
	refs                int
}

// newRouterShare builds, and encodes, the listeners and clusters of the routers
// that servers select and whose ports svcs bind (buildRouterResources).
func (s *Server) newRouterShare(key string, servers []PassthroughServer, svcs []*clusterregistry.Service) *routerShare {
	listeners, clusters := buildRouterResources(servers, s.hosts, svcs)
	sh := &routerShare{key: key}
	for _, l := range listeners {
		sh.listeners = s.appendEncoded(sh.listeners, resourcev3.ListenerType, l)
	}
	for _, c := range clusters {
		sh.clusters = s.appendEncoded(sh.clusters, resourcev3.ClusterType, c)
	}
	return sh
}

// releaseRouterShare counts one group fewer using sh (nil: none) and drops it with
// the last. pushMu is held.
func (s *Server) releaseRouterShare(sh *routerShare) {
	if sh == nil || sh.key == "" {
		return
	}
	if sh.refs--; sh.refs <= 0 {
		delete(s.routerShares, sh.key)
	}
}
