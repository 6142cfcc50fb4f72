package xdsserver

import (
	"context"
	"slices"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fetch answers a unary request with what the proxy's group holds now.
func (s *Server) fetch(ctx context.Context, req *discoverygrpc.DiscoveryRequest, typ string) (*discoverygrpc.DiscoveryResponse, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	defer s.end()
	if req.GetNode() == nil {
		s.metrics.refused.WithLabelValues(reasonNoNode).Inc()
		return nil, errNoNode
	}
	g, err := s.groups.Group(req.GetNode(), nil)
	if err != nil {
		return nil, err
	}
	rs := g.Feed().Current().Resources(typ)
	if rs == nil {
		return nil, status.Error(codes.Unavailable, "no configuration yet")
	}
	if req.GetVersionInfo() == rs.version {
		return nil, status.Error(codes.Unavailable, "up to date") // the protocol's "skip"
	}
	resp := &discoverygrpc.DiscoveryResponse{VersionInfo: rs.version, TypeUrl: typ}
	// No names asks for every resource of a type that allows it (clusters,
	// listeners); of the others (endpoints, routes) it names none.
	names := req.GetResourceNames()
	if len(names) == 0 && wildcardType(typ) || slices.Contains(names, "*") {
		names = rs.names
	}
	for _, n := range names {
		if r := rs.byName[n]; r != nil {
			resp.Resources = append(resp.Resources, r.Any())
		}
	}
	return resp, nil
}
