package main

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// scriptedADS serves one ClusterLoadAssignment. Each stream's first response is an
// invalid resource (which must be NACKed), then the valid one (which must be
// ACKed). The first stream of each kind fails right after its first request, so that
// the proxy has to reconnect.
type scriptedADS struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	valid, invalid *anypb.Any
	name           string
	sotwStreams    atomic.Int32
	deltaStreams   atomic.Int32

	mu   sync.Mutex
	acks []string // "sotw nack", "sotw ack 2", "delta nack", "delta ack"; guarded by mu
}

func (s *scriptedADS) note(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acks = append(s.acks, what)
}

func (s *scriptedADS) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	req, err := st.Recv()
	if err != nil {
		return err
	}
	if s.sotwStreams.Add(1) == 1 {
		return status.Error(codes.Unavailable, "scripted failure")
	}
	if req.GetNode().GetId() == "" || len(req.GetResourceNames()) != 1 || req.GetResourceNames()[0] != s.name {
		return status.Errorf(codes.InvalidArgument, "unexpected first request %v", req)
	}
	for i, res := range []*anypb.Any{s.invalid, s.valid} {
		version, nonce := []string{"1", "2"}[i], []string{"n1", "n2"}[i]
		if err := st.Send(&discoveryv3.DiscoveryResponse{VersionInfo: version, Nonce: nonce, TypeUrl: typeCLA, Resources: []*anypb.Any{res}}); err != nil {
			return err
		}
		ack, err := st.Recv()
		if err != nil {
			return err
		}
		switch {
		case ack.GetResponseNonce() != nonce || len(ack.GetResourceNames()) != 1:
			s.note("sotw bad ack")
		case ack.GetErrorDetail() != nil && ack.GetVersionInfo() == "":
			s.note("sotw nack")
		case ack.GetErrorDetail() == nil && ack.GetVersionInfo() == version:
			s.note("sotw ack " + version)
		default:
			s.note("sotw bad ack")
		}
	}
	<-st.Context().Done()
	return nil
}

func (s *scriptedADS) DeltaAggregatedResources(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	req, err := st.Recv()
	if err != nil {
		return err
	}
	if s.deltaStreams.Add(1) == 1 {
		return status.Error(codes.Unavailable, "scripted failure")
	}
	if len(req.GetResourceNamesSubscribe()) != 1 || req.GetResourceNamesSubscribe()[0] != s.name {
		return status.Errorf(codes.InvalidArgument, "unexpected first request %v", req)
	}
	for i, res := range []*anypb.Any{s.invalid, s.valid} {
		nonce := []string{"n1", "n2"}[i]
		if err := st.Send(&discoveryv3.DeltaDiscoveryResponse{Nonce: nonce, TypeUrl: typeCLA,
			Resources: []*discoveryv3.Resource{{Name: s.name, Version: nonce, Resource: res}}}); err != nil {
			return err
		}
		ack, err := st.Recv()
		if err != nil {
			return err
		}
		switch {
		case ack.GetResponseNonce() != nonce:
			s.note("delta bad ack")
		case ack.GetErrorDetail() != nil:
			s.note("delta nack")
		default:
			s.note("delta ack")
		}
	}
	<-st.Context().Done()
	return nil
}

// TestProxyReconnectsAndAcks: proxies started before the server listens (refused),
// whose first stream then fails, reconnect with backoff; they NACK an invalid
// resource, ACK the valid one and count as served.
func TestProxyReconnectsAndAcks(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	name := claName(0)
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080}}}},
		}}}},
	}}}
	valid, err := anypb.New(cla)
	if err != nil {
		t.Fatal(err)
	}
	invalid, err := anypb.New(&endpointv3.ClusterLoadAssignment{}) // no cluster name
	if err != nil {
		t.Fatal(err)
	}
	srv := &scriptedADS{valid: valid, invalid: invalid, name: name}

	addrs, err := kubetest.FreeAddrs(1)
	if err != nil {
		t.Fatal(err)
	}
	tr := &truth{want: map[string][]sig{name: {{endpoints: 1, weight: 1}, {endpoints: 1, weight: 1}}}}
	f, err := newFleet(addrs[:1], []proxySpec{
		{index: 0, network: 0, names: []string{name}},
		{index: 1, network: 1, delta: true, names: []string{name}},
	}, 2, tr)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	f.start(t.Context())

	// The server is not there yet: wait until both proxies have been refused and
	// are backing off.
	if !waitUntil(t.Context(), 10*time.Second, func() bool {
		for _, st := range f.states() {
			if st.reconnects == 0 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("proxies never saw a refused stream")
	}
	lis, err := net.Listen("tcp", addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	go g.Serve(lis)
	defer g.Stop()

	if !waitUntil(t.Context(), 15*time.Second, func() bool { return f.served.Load() == 2 }) {
		t.Fatalf("%d of 2 proxies served", f.served.Load())
	}
	if !waitUntil(t.Context(), 5*time.Second, func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.acks) == 4
	}) {
		t.Fatal("not every response was answered")
	}
	srv.mu.Lock()
	got := map[string]int{}
	for _, a := range srv.acks {
		got[a]++
	}
	srv.mu.Unlock()
	want := map[string]int{"sotw nack": 1, "sotw ack 2": 1, "delta nack": 1, "delta ack": 1}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("server saw %v, want %v", got, want)
			break
		}
	}
	_, _, reconnects, nacks := f.totals()
	if reconnects < 2 || nacks != 2 {
		t.Errorf("%d reconnects, %d NACKs; want at least 2 (one failed stream each) and 2", reconnects, nacks)
	}
}
