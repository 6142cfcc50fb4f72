package eds

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/horizon-mesh/horizon/eds/xdsserver"
)

// group is the resources shared by every proxy with one view. Its fields are owned
// by the push goroutine (under Server.pushMu); feed is safe for concurrent use.
type group struct {
	view View
	clas map[string]*endpointv3.ClusterLoadAssignment // by cluster name
	// A router's own listeners and clusters (they depend on its labels).
	listeners, clusters []types.Resource
	// What the last snapshot held per type URL, to version only what changed.
	sent map[resourcev3.Type]*typeState
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
// pushes) before it is dropped.
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
// that a push cannot drop the group before the stream is attached to its feed.
func (s *Server) ensureGroup(node *corev3.Node, attach func(xdsserver.Group)) *group {
	v := ViewOf(node)
	key := v.Key()
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	if g, ok := s.groups[key]; ok {
		if attach != nil {
			attach(g)
			g.emptySince = time.Time{}
		}
		return g
	}
	g := &group{view: v, clas: map[string]*endpointv3.ClusterLoadAssignment{}}
	s.groups[key] = g
	if attach != nil {
		attach(g)
	}
	if s.topo == nil {
		return g // the first push builds it
	}
	for host, hs := range s.hosts {
		shards := s.opts.Source.Services(host)
		for _, p := range hs.ports {
			name := s.claName(v, host, p)
			g.clas[name] = s.build(v, host, p, name, shards)
		}
	}
	s.rebuildRouter(g)
	s.setSnapshot(g)
	s.log.Info("new proxy group", "group", key)
	return g
}
