package xdsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
)

// Options configures a Server.
type Options struct {
	// Groups says which group each proxy belongs to. Required.
	Groups Groups
	// Metrics, if set, registers the server's Prometheus metrics.
	Metrics prometheus.Registerer
	// MaxNames caps the resource names one stream subscribes to, over all its
	// types: a request that would subscribe past it ends the stream with
	// ResourceExhausted. 0 means DefaultMaxNames.
	MaxNames int
	// Limits bounds streams and request rates; zero fields take DefaultLimits.
	Limits Limits
	Logger *slog.Logger
}

// DefaultMaxNames is Options.MaxNames when it is not set.
const DefaultMaxNames = 100_000

// maxTypesPerStream bounds the type URLs one stream may subscribe to: the four
// served, and a few more an ADS client may ask for and be sent nothing.
const maxTypesPerStream = 16

// Server serves the snapshots published on its groups' Feeds over xDS.
type Server struct {
	groups   Groups
	log      *slog.Logger
	metrics  *metrics
	maxNames int
	limits   *limiter
	wire     bool // responses go out pre-assembled (GRPCOptions)

	lastStream atomic.Int64 // the last stream ID handed out
	lastChange atomic.Int64 // unix nanoseconds of the change that started the last push

	streamsMu sync.Mutex
	streams   map[*stream]struct{} // guarded by streamsMu
}

// New returns a Server; Register adds it to a gRPC server.
func New(opts Options) (*Server, error) {
	if opts.Groups == nil {
		return nil, errors.New("xdsserver: Groups is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxNames < 0 {
		return nil, fmt.Errorf("xdsserver: MaxNames must not be negative, got %d", opts.MaxNames)
	}
	if opts.MaxNames == 0 {
		opts.MaxNames = DefaultMaxNames
	}
	if err := opts.Limits.Validate(); err != nil {
		return nil, fmt.Errorf("xdsserver: Limits: %w", err)
	}
	opts.Limits.setDefaults()
	return &Server{
		maxNames: opts.MaxNames,
		limits:   newLimiter(opts.Limits),
		groups:   opts.Groups,
		log:      opts.Logger,
		metrics:  newMetrics(opts.Metrics),
		streams:  map[*stream]struct{}{},
	}, nil
}

// GRPCOptions returns the options the gRPC server that Register is given should be
// created with: they let the server send responses without encoding them for each
// proxy, and count in horizon_xds_refused_requests_total the requests gRPC refuses
// (too large, not decodable) with a stats handler, which composes with any
// interceptors. A server created without them works too, encoding every response.
// Call it before the first stream.
func (s *Server) GRPCOptions() []grpc.ServerOption {
	s.wire = true
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(codec{encoding.GetCodecV2(protocodec.Name)}),
		grpc.StatsHandler(statsHandler{s.metrics}),
	}
}

// ChangeStarted records when the change that the snapshots about to be published
// carry was first seen: the push latency metric measures from it.
func (s *Server) ChangeStarted(at time.Time) {
	s.lastChange.Store(at.UnixNano())
}

// Register adds the ADS, EDS, CDS, LDS and RDS services to g.
func (s *Server) Register(g *grpc.Server) {
	x := &services{s: s}
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, x)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, x)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, x)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, x)
	routeservice.RegisterRouteDiscoveryServiceServer(g, x)
}

// services implements the gRPC discovery services on a Server.
type services struct {
	s *Server
	discoverygrpc.UnimplementedAggregatedDiscoveryServiceServer
	endpointservice.UnimplementedEndpointDiscoveryServiceServer
	clusterservice.UnimplementedClusterDiscoveryServiceServer
	listenerservice.UnimplementedListenerDiscoveryServiceServer
	routeservice.UnimplementedRouteDiscoveryServiceServer
}

func (x *services) StreamAggregatedResources(st discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return x.s.serveSotw(st, "")
}

func (x *services) DeltaAggregatedResources(st discoverygrpc.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return x.s.serveDelta(st, "")
}

func (x *services) StreamEndpoints(st endpointservice.EndpointDiscoveryService_StreamEndpointsServer) error {
	return x.s.serveSotw(st, resourcev3.EndpointType)
}

func (x *services) DeltaEndpoints(st endpointservice.EndpointDiscoveryService_DeltaEndpointsServer) error {
	return x.s.serveDelta(st, resourcev3.EndpointType)
}

func (x *services) FetchEndpoints(ctx context.Context, req *discoverygrpc.DiscoveryRequest) (*discoverygrpc.DiscoveryResponse, error) {
	return x.s.fetch(ctx, req, resourcev3.EndpointType)
}

func (x *services) StreamClusters(st clusterservice.ClusterDiscoveryService_StreamClustersServer) error {
	return x.s.serveSotw(st, resourcev3.ClusterType)
}

func (x *services) DeltaClusters(st clusterservice.ClusterDiscoveryService_DeltaClustersServer) error {
	return x.s.serveDelta(st, resourcev3.ClusterType)
}

func (x *services) FetchClusters(ctx context.Context, req *discoverygrpc.DiscoveryRequest) (*discoverygrpc.DiscoveryResponse, error) {
	return x.s.fetch(ctx, req, resourcev3.ClusterType)
}

func (x *services) StreamListeners(st listenerservice.ListenerDiscoveryService_StreamListenersServer) error {
	return x.s.serveSotw(st, resourcev3.ListenerType)
}

func (x *services) DeltaListeners(st listenerservice.ListenerDiscoveryService_DeltaListenersServer) error {
	return x.s.serveDelta(st, resourcev3.ListenerType)
}

func (x *services) FetchListeners(ctx context.Context, req *discoverygrpc.DiscoveryRequest) (*discoverygrpc.DiscoveryResponse, error) {
	return x.s.fetch(ctx, req, resourcev3.ListenerType)
}

func (x *services) StreamRoutes(st routeservice.RouteDiscoveryService_StreamRoutesServer) error {
	return x.s.serveSotw(st, resourcev3.RouteType)
}

func (x *services) DeltaRoutes(st routeservice.RouteDiscoveryService_DeltaRoutesServer) error {
	return x.s.serveDelta(st, resourcev3.RouteType)
}

func (x *services) FetchRoutes(ctx context.Context, req *discoverygrpc.DiscoveryRequest) (*discoverygrpc.DiscoveryResponse, error) {
	return x.s.fetch(ctx, req, resourcev3.RouteType)
}
