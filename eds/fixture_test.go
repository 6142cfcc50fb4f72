package eds

import (
	"context"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

// The tests of the Server with proxies connected drive it over real gRPC streams,
// as horizon serve runs it. The protocol itself is tested in package xdsserver.

const (
	hostA = "a.ns.svc.cluster.local"
	hostB = "b.ns.svc.cluster.local"
)

var claA = ClusterName(hostA, 80)

type xdsFixture struct {
	t    *testing.T
	src  *fakeSource
	s    *Server
	addr string // the gRPC server's
	ads  discoverygrpc.AggregatedDiscoveryServiceClient
}

// newXDSFixture serves hosts A and B over gRPC; edits change the Server's options.
func newXDSFixture(t *testing.T, edits ...func(*Options)) *xdsFixture {
	t.Helper()
	src := &fakeSource{shards: map[string]map[network.ClusterID]*clusterregistry.Shard{}}
	src.set(hostA, "10.0.0.1")
	src.set(hostB, "10.0.1.1")
	s := newTestServer(t, src, edits...)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(s.GRPCOptions()...)
	s.Register(g)
	go g.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		g.Stop()
	})
	return &xdsFixture{t: t, src: src, s: s, addr: lis.Addr().String(), ads: discoverygrpc.NewAggregatedDiscoveryServiceClient(conn)}
}

// change sets host's endpoints and pushes.
func (f *xdsFixture) change(host string, ips ...string) {
	f.src.set(host, ips...)
	f.s.HostChanged(host)
	f.s.push(time.Now())
}

func node(id string) *corev3.Node {
	return xdstest.Node("sidecar~10.9.0.1~"+id+".ns~ns.svc.cluster.local", "")
}

// recvSotw reads one state-of-the-world response and decodes its assignments.
func recvSotw(t *testing.T, st discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient) (*discoverygrpc.DiscoveryResponse, map[string]*endpointv3.ClusterLoadAssignment) {
	t.Helper()
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*endpointv3.ClusterLoadAssignment{}
	for _, a := range resp.GetResources() {
		cla := &endpointv3.ClusterLoadAssignment{}
		if err := proto.Unmarshal(a.GetValue(), cla); err != nil {
			t.Fatal(err)
		}
		out[cla.GetClusterName()] = cla
	}
	return resp, out
}

func addresses(cla *endpointv3.ClusterLoadAssignment) []string {
	var out []string
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			out = append(out, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
		}
	}
	return out
}

func sotwStreamFor(t *testing.T, f *xdsFixture) discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // a missing response fails, not hangs
	t.Cleanup(cancel)
	st, err := f.ads.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
