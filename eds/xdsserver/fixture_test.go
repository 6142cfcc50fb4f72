package xdsserver

import (
	"context"
	"hash/fnv"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/horizon-mesh/horizon/e2e/xdstest"
)

// The protocol tests drive a Server over real gRPC streams. Every proxy belongs to
// one group, whose snapshot the fixture publishes: per host, an EDS cluster and its
// ClusterLoadAssignment, versioned by content as package eds versions them. A
// response that should not be sent is checked by order, not by waiting: after the
// change that must not reach a proxy, a second change that must reach it is made,
// and the next response the proxy reads has to be that second one.

const (
	hostA = "a.ns.svc.cluster.local"
	hostB = "b.ns.svc.cluster.local"
)

var (
	claA = clusterName(hostA)
	claB = clusterName(hostB)
)

// clusterName is the sidecar's cluster name for port 80 of host.
func clusterName(host string) string { return "outbound|80||" + host }

// fixtureWire: the fixture's server sends pre-assembled responses (GRPCOptions),
// as horizon serve does; bothEncodings runs a test with and without.
var fixtureWire = true

func bothEncodings(t *testing.T, test func(*testing.T)) {
	for _, wire := range []bool{true, false} {
		t.Run(map[bool]string{true: "wire", false: "encoded"}[wire], func(t *testing.T) {
			defer func() { fixtureWire = true }()
			fixtureWire = wire
			test(t)
		})
	}
}

// testGroup is the one group of every proxy in these tests.
type testGroup struct{ feed Feed }

func (g *testGroup) Feed() *Feed         { return &g.feed }
func (g *testGroup) MetricLabel() string { return "" }

type xdsFixture struct {
	t     *testing.T
	s     *Server
	group *testGroup
	conn  *grpc.ClientConn
	ads   discoverygrpc.AggregatedDiscoveryServiceClient
	eds   endpointservice.EndpointDiscoveryServiceClient

	mu    sync.Mutex
	hosts map[string][]string // endpoint addresses by host; guarded by mu
}

func newXDSFixture(t *testing.T, edits ...func(*Options)) *xdsFixture {
	t.Helper()
	return newXDSFixtureGRPC(t, nil, edits...)
}

// newXDSFixtureGRPC is newXDSFixture with extra gRPC server options.
func newXDSFixtureGRPC(t *testing.T, grpcOpts []grpc.ServerOption, edits ...func(*Options)) *xdsFixture {
	t.Helper()
	f := &xdsFixture{t: t, group: &testGroup{}, hosts: map[string][]string{}}
	xopts := Options{Groups: GroupsFunc(func(_ *corev3.Node, attach func(Group)) (Group, error) {
		if attach != nil {
			attach(f.group)
		}
		return f.group, nil
	})}
	for _, edit := range edits {
		edit(&xopts)
	}
	s, err := New(xopts)
	if err != nil {
		t.Fatal(err)
	}
	f.s = s
	f.change(hostA, "10.0.0.1")
	f.change(hostB, "10.0.1.1")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if fixtureWire {
		opts = s.GRPCOptions()
	}
	g := grpc.NewServer(append(opts, grpcOpts...)...)
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
	f.conn = conn
	f.ads = discoverygrpc.NewAggregatedDiscoveryServiceClient(conn)
	f.eds = endpointservice.NewEndpointDiscoveryServiceClient(conn)
	return f
}

// otherConnection returns an ADS client on a connection of its own.
func (f *xdsFixture) otherConnection() discoverygrpc.AggregatedDiscoveryServiceClient {
	f.t.Helper()
	conn, err := grpc.NewClient(f.conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { conn.Close() })
	return discoverygrpc.NewAggregatedDiscoveryServiceClient(conn)
}

// deltaStream opens a delta ADS stream that ends with ctx.
func (f *xdsFixture) deltaStream(ctx context.Context) discoverygrpc.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
	f.t.Helper()
	st, err := f.ads.DeltaAggregatedResources(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

// change sets host's endpoints (none: the host goes) and publishes the group's
// snapshot.
func (f *xdsFixture) change(host string, ips ...string) {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(ips) == 0 {
		delete(f.hosts, host)
	} else {
		f.hosts[host] = ips
	}
	clas, clusters := map[string]*Resource{}, map[string]*Resource{}
	for h, ips := range f.hosts {
		name := clusterName(h)
		cla := &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{}}}
		for _, ip := range ips {
			cla.Endpoints[0].LbEndpoints = append(cla.Endpoints[0].LbEndpoints, lbEndpoint(ip))
		}
		clas[name] = f.resource(resourcev3.EndpointType, name, cla)
		clusters[name] = f.resource(resourcev3.ClusterType, name, &clusterv3.Cluster{Name: name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}})
	}
	f.group.feed.Publish(NewSnapshot(map[string]*Resources{
		resourcev3.EndpointType: NewResources(clas),
		resourcev3.ClusterType:  NewResources(clusters),
		resourcev3.ListenerType: NewResources(map[string]*Resource{}),
		resourcev3.RouteType:    NewResources(map[string]*Resource{}),
	}))
}

// resource encodes m, versioned by a hash of its bytes.
func (f *xdsFixture) resource(typ, name string, m proto.Message) *Resource {
	f.t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		f.t.Fatal(err)
	}
	h := fnv.New64a()
	h.Write(b)
	return NewResource(typ, name, strconv.FormatUint(h.Sum64(), 36), b)
}

func lbEndpoint(ip string) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080},
		}}},
	}}}
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
	return resp, decodeCLAs(t, resp.GetResources())
}

func decodeCLAs[T interface{ GetValue() []byte }](t *testing.T, items []T) map[string]*endpointv3.ClusterLoadAssignment {
	t.Helper()
	out := map[string]*endpointv3.ClusterLoadAssignment{}
	for _, a := range items {
		cla := &endpointv3.ClusterLoadAssignment{}
		if err := proto.Unmarshal(a.GetValue(), cla); err != nil {
			t.Fatal(err)
		}
		out[cla.GetClusterName()] = cla
	}
	return out
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // a missing response fails, not hangs
	t.Cleanup(cancel)
	st, err := f.ads.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func resourceValues(rs []*discoverygrpc.Resource) []interface{ GetValue() []byte } {
	out := make([]interface{ GetValue() []byte }, len(rs))
	for i, r := range rs {
		out[i] = r.GetResource()
	}
	return out
}

// streamFor returns the explicit EDS subscriptions of proxy id's stream, with the
// version held of each.
func (s *Server) streamFor(id string) (map[string]string, bool) {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	for st := range s.streams {
		st.mu.Lock()
		sb := st.subs[resourcev3.EndpointType]
		match := st.proxyID != "" && sb != nil && strings.Contains(st.proxyID, id)
		var have map[string]string
		if match {
			have = map[string]string{}
			for k, v := range sb.have {
				have[k] = v
			}
			for _, k := range sb.set.list() { // state of the world
				have[k] = ""
				if r := sb.held.Get(k); r != nil {
					have[k] = r.version
				}
			}
		}
		st.mu.Unlock()
		if match {
			return have, true
		}
	}
	return nil, false
}

// responsesSent returns how many responses the only stream was sent.
func responsesSent(s *Server) uint64 {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	var n uint64
	for st := range s.streams {
		st.mu.Lock()
		n += st.nonce
		st.mu.Unlock()
	}
	return n
}
