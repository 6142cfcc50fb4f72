package eds

import (
	"bytes"
	"hash/fnv"
	"strconv"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/horizon-mesh/horizon/eds/xdsserver"
)

// setSnapshot publishes the group's resources. Each type's version, and each
// resource's version, changes only when its content did; a stream is woken only for
// resources it subscribes to; and a resource is encoded once, when it is built,
// however many groups and proxies are sent it.
func (s *Server) setSnapshot(g *group) {
	res := map[resourcev3.Type][]*xdsserver.Resource{}
	switch g.view.Role {
	case RoleRouter:
		// Below, from the group's router share.
	case RoleGRPC:
		res[resourcev3.ClusterType] = s.grpc.clusters
		res[resourcev3.ListenerType] = s.grpc.listeners
		res[resourcev3.RouteType] = s.grpc.routes
	default:
		res[resourcev3.ClusterType] = s.clusters
		// Sidecars get no listeners or routes from Horizon; an empty answer lets an
		// Envoy that asks for them finish starting without its fetch timeout.
		res[resourcev3.ListenerType] = nil
		res[resourcev3.RouteType] = nil
	}
	if g.sent == nil {
		g.sent = map[resourcev3.Type]*xdsserver.Resources{}
	}
	snap := make(map[string]*xdsserver.Resources, len(res)+1)
	changed := false
	if sh := g.eds; sh.at == 0 || sh.at != s.version {
		sh.sent = versionEncoded(sh.sent, sh.clas)
		sh.at = s.version
	}
	if g.edsSent != g.eds.sent {
		g.edsSent = g.eds.sent
		changed = true
	}
	snap[resourcev3.EndpointType] = g.edsSent
	if sh := g.router; sh != nil {
		if sh.at == 0 || sh.at != s.version {
			sh.sent[0], _ = versionList(sh.sent[0], sh.listeners)
			sh.sent[1], _ = versionList(sh.sent[1], sh.clusters)
			sh.at = s.version
		}
		for i, typ := range []string{resourcev3.ListenerType, resourcev3.ClusterType} {
			if g.routerSent[i] != sh.sent[i] {
				g.routerSent[i] = sh.sent[i]
				changed = true
			}
			snap[typ] = g.routerSent[i]
		}
	}
	for typ, items := range res {
		next, ch := versionList(g.sent[typ], items)
		g.sent[typ] = next
		changed = changed || ch
		snap[typ] = next
	}
	if changed {
		g.feed.Publish(xdsserver.NewSnapshot(snap))
	}
}

// versionList returns the snapshot of items, given the one published before (nil:
// none), and whether it changed: prev itself when no resource changed, appeared or
// went. A resource whose bytes equal the published one's keeps the published
// Resource, and so its version. A resource's version is a hash of its bytes, so it
// means the same after a restart (a delta proxy reconnecting is not re-sent what
// it holds); the type's version (xdsserver.NewResources) moves on when any resource
// changed, appeared or went.
func versionList(prev *xdsserver.Resources, items []*xdsserver.Resource) (*xdsserver.Resources, bool) {
	changed := prev == nil || prev.Len() != len(items)
	next := make(map[string]*xdsserver.Resource, len(items))
	for _, r := range items {
		name := r.Name()
		if old := prev.Get(name); old == r || old != nil && sameResource(old, r) {
			next[name] = old
			continue
		}
		changed = true
		next[name] = r
	}
	if !changed {
		return prev, false
	}
	return xdsserver.NewResources(next), true
}

// versionEncoded returns the snapshot of resources encoded when they were built
// (the endpoints, by name), given the one published before (nil: none): prev itself
// when nothing changed. A resource whose bytes equal the published one's keeps the
// published Resource, in clas too, so that the next push recognises it by pointer.
func versionEncoded(prev *xdsserver.Resources, clas map[string]*xdsserver.Resource) *xdsserver.Resources {
	changed := prev == nil || prev.Len() != len(clas)
	next := make(map[string]*xdsserver.Resource, len(clas))
	for name, r := range clas {
		if old := prev.Get(name); old == r {
			next[name] = r
			continue
		} else if old != nil && sameResource(old, r) {
			next[name], clas[name] = old, old
			continue
		}
		changed = true
		next[name] = r
	}
	if !changed {
		return prev
	}
	return xdsserver.NewResources(next)
}

// encodeCLA encodes a built assignment as it is published (encode).
func (s *Server) encodeCLA(cla *endpointv3.ClusterLoadAssignment) *xdsserver.Resource {
	return s.encode(resourcev3.EndpointType, cla)
}

// encode encodes a built resource of type typ as it is published. Only the
// encoding is kept: the messages of a resource are several times the size of its
// bytes. nil (logged) if it cannot be encoded.
func (s *Server) encode(typ string, r types.Resource) *xdsserver.Resource {
	name := resourceName(r)
	b, err := marshal(r)
	if err != nil {
		s.log.Error("cannot encode a resource; leaving it out", "type", typ, "name", name, "error", err)
		return nil
	}
	return xdsserver.NewResource(typ, name, versionOf(b), b)
}

// appendEncoded appends r, encoded, to list; if it cannot be encoded, it is left
// out.
func (s *Server) appendEncoded(list []*xdsserver.Resource, typ string, r types.Resource) []*xdsserver.Resource {
	if res := s.encode(typ, r); res != nil {
		list = append(list, res)
	}
	return list
}

// sameResource reports whether a and b encode the same resource.
func sameResource(a, b *xdsserver.Resource) bool {
	return a.Version() == b.Version() && bytes.Equal(a.Bytes(), b.Bytes())
}

// versionOf is the version of a resource encoded as b: a hash of its bytes.
func versionOf(b []byte) string {
	h := fnv.New64a()
	h.Write(b)
	return strconv.FormatUint(h.Sum64(), 36)
}

// resourceName is the name of any resource served here: field 1 of Cluster,
// Listener, RouteConfiguration and ClusterLoadAssignment.
func resourceName(r types.Resource) string {
	switch m := r.(type) {
	case interface{ GetName() string }:
		return m.GetName()
	case interface{ GetClusterName() string }:
		return m.GetClusterName()
	}
	return ""
}
