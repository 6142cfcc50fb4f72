package dataplane

import (
	"context"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
)

// FetchCLA asks Horizon at xdsAddr, as a proxy with node ID id and the given node
// metadata, for one ClusterLoadAssignment over ADS and returns the first answer.
func FetchCLA(ctx context.Context, xdsAddr, id string, metadata map[string]any, name string) (*endpointv3.ClusterLoadAssignment, error) {
	md, err := structpb.NewStruct(metadata)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	const typeURL = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	if err := stream.Send(&discoveryv3.DiscoveryRequest{
		Node: &corev3.Node{Id: id, Metadata: md}, TypeUrl: typeURL, ResourceNames: []string{name},
	}); err != nil {
		return nil, err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		for _, r := range resp.GetResources() {
			var cla endpointv3.ClusterLoadAssignment
			if err := r.UnmarshalTo(&cla); err != nil {
				return nil, err
			}
			if cla.GetClusterName() == name {
				if err := cla.ValidateAll(); err != nil {
					return nil, fmt.Errorf("invalid ClusterLoadAssignment: %w", err)
				}
				return &cla, nil
			}
		}
	}
}
