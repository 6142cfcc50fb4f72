package eds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

// The xDS protocol tests below drive the server over real gRPC streams. A response
// that should not be sent is checked by order, not by waiting: after the change
// that must not reach a proxy, a second change that must reach it is made, and the
// next response the proxy reads has to be that second one.

const (
	hostA = "a.ns.svc.cluster.local"
	hostB = "b.ns.svc.cluster.local"
)

var (
	claA = ClusterName(hostA, 80)
	claB = ClusterName(hostB, 80)
)

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

type xdsFixture struct {
	t   *testing.T
	src *fakeSource
	s   *Server
	ads discoverygrpc.AggregatedDiscoveryServiceClient
	eds endpointservice.EndpointDiscoveryServiceClient
}

func newXDSFixture(t *testing.T) *xdsFixture {
	t.Helper()
	src := &fakeSource{shards: map[string]map[network.ClusterID]*clusterregistry.Shard{}}
	src.set(hostA, "10.0.0.1")
	src.set(hostB, "10.0.1.1")
	s := newTestServer(t, src)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if fixtureWire {
		opts = s.GRPCOptions()
	}
	g := grpc.NewServer(opts...)
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
	return &xdsFixture{t: t, src: src, s: s, ads: discoverygrpc.NewAggregatedDiscoveryServiceClient(conn),
		eds: endpointservice.NewEndpointDiscoveryServiceClient(conn)}
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

// change sets host's endpoints and pushes.
func (f *xdsFixture) change(host string, ips ...string) {
	f.src.set(host, ips...)
	f.s.HostChanged(host)
	f.s.push(time.Now())
}

func node(id string) *corev3.Node {
	return xdstest.Node("sidecar~10.9.0.1~"+id+".ns~ns.svc.cluster.local", "")
}

// recvCLAs reads one state-of-the-world response and decodes its assignments.
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

// TestSotwSendsOnlyWhatChangedForTheProxy: a state-of-the-world proxy watching A is
// not sent a response when only B changes, nor when it ACKs; it is when A changes.
func TestSotwSendsOnlyWhatChangedForTheProxy(t *testing.T) {
	bothEncodings(t, testSotwSendsOnlyWhatChangedForTheProxy)
}

func testSotwSendsOnlyWhatChangedForTheProxy(t *testing.T) {
	f := newXDSFixture(t)
	st := sotwStreamFor(t, f)
	send := func(req *discoverygrpc.DiscoveryRequest) {
		t.Helper()
		req.TypeUrl = resourcev3.EndpointType
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	send(&discoverygrpc.DiscoveryRequest{Node: node("p1"), ResourceNames: []string{claA}})
	resp, clas := recvSotw(t, st)
	if len(clas) != 1 || clas[claA] == nil {
		t.Fatalf("first response holds %v, want only %s", clas, claA)
	}
	send(&discoverygrpc.DiscoveryRequest{ResourceNames: []string{claA}, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})

	f.change(hostB, "10.0.1.1", "10.0.1.2") // not watched: no response
	// A stale request (an older nonce) changes nothing either.
	send(&discoverygrpc.DiscoveryRequest{ResourceNames: []string{claA, claB}, ResponseNonce: "stale"})
	kubetest.Consistently(t, 200*time.Millisecond, func() error {
		if ps := f.s.Proxies(); len(ps) != 1 || ps[0].Types[resourcev3.EndpointType].Sent != resp.GetVersionInfo() {
			return fmt.Errorf("proxy was sent a response it should not have been: %+v", ps)
		}
		return nil
	})
	f.change(hostA, "10.0.0.1", "10.0.0.2")

	resp2, clas := recvSotw(t, st)
	if got := addresses(clas[claA]); len(clas) != 1 || len(got) != 2 {
		t.Fatalf("after B then A changed, the next response holds %v (A at %v); want only A with 2 endpoints", clas, got)
	}
	if resp2.GetVersionInfo() == resp.GetVersionInfo() {
		t.Errorf("version %q did not move on", resp2.GetVersionInfo())
	}
	// A NACK is recorded and not answered; subscribing to B is, with both.
	send(&discoverygrpc.DiscoveryRequest{ResourceNames: []string{claA}, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp2.GetNonce(),
		ErrorDetail: &status.Status{Message: "bad endpoint"}})
	send(&discoverygrpc.DiscoveryRequest{ResourceNames: []string{claA, claB}, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp2.GetNonce()})
	_, clas = recvSotw(t, st)
	if len(clas) != 2 || len(addresses(clas[claB])) != 2 {
		t.Fatalf("after subscribing to B: %v, want A and B (2 endpoints)", clas)
	}
	ps := f.s.Proxies()
	if len(ps) != 1 || ps[0].Types[resourcev3.EndpointType].Nacks != 1 || ps[0].Types[resourcev3.EndpointType].LastNack != "bad endpoint" {
		t.Errorf("proxies = %+v, want one with one NACK recorded", ps)
	}
}

// TestSotwUpToDate: a proxy is up to date once it ACKed the last response.
func TestSotwUpToDate(t *testing.T) {
	f := newXDSFixture(t)
	st := sotwStreamFor(t, f)
	if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: node("p1"), TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA}}); err != nil {
		t.Fatal(err)
	}
	resp, _ := recvSotw(t, st)
	if ps := f.s.Proxies(); len(ps) != 1 || ps[0].UpToDate {
		t.Fatalf("before the ACK: %+v, want one proxy not up to date", ps)
	}
	if err := st.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA},
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 10*time.Second, func() error {
		ps := f.s.Proxies()
		if len(ps) == 1 && ps[0].UpToDate && ps[0].Types[resourcev3.EndpointType].Acked == resp.GetVersionInfo() {
			return nil
		}
		return errors.New("not yet: the ACK to be recorded")
	})
	f.change(hostB, "10.0.1.9") // B is not watched: still up to date
	if ps := f.s.Proxies(); !ps[0].UpToDate {
		t.Errorf("a change of a resource it does not watch made the proxy out of date: %+v", ps[0])
	}
	f.change(hostA, "10.0.0.9")
	recvSotw(t, st)
	if ps := f.s.Proxies(); ps[0].UpToDate {
		t.Errorf("sent a change it has not ACKed, yet up to date: %+v", ps[0])
	}
}

// TestDeltaProtocol: only changed resources are sent, removals are announced,
// unsubscribed resources are not sent, and a reconnecting proxy is not re-sent
// what it holds.
func TestDeltaProtocol(t *testing.T) { bothEncodings(t, testDeltaProtocol) }

func testDeltaProtocol(t *testing.T) {
	f := newXDSFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // a missing response fails, not hangs
	defer cancel()
	st := f.deltaStream(ctx)
	recv := func() *discoverygrpc.DeltaDiscoveryResponse {
		t.Helper()
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node("d1"), TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{claA, claB}}); err != nil {
		t.Fatal(err)
	}
	first := recv()
	if len(first.GetResources()) != 2 {
		t.Fatalf("first response: %d resources, want 2", len(first.GetResources()))
	}
	versions := map[string]string{}
	for _, r := range first.GetResources() {
		versions[r.GetName()] = r.GetVersion()
	}

	f.change(hostA, "10.0.0.1", "10.0.0.3")
	resp := recv()
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != claA || len(resp.GetRemovedResources()) != 0 {
		t.Fatalf("after A changed: %v removed %v, want only A", resp.GetResources(), resp.GetRemovedResources())
	}
	versions[claA] = resp.GetResources()[0].GetVersion()

	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesUnsubscribe: []string{claA}}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 10*time.Second, func() error {
		st, ok := f.s.streamFor("d1")
		if ok && len(st) == 1 {
			return nil
		}
		return errors.New("not yet: the unsubscription")
	})
	f.change(hostA, "10.0.0.1") // unsubscribed: not sent
	f.change(hostB)             // B removed
	resp = recv()
	if len(resp.GetResources()) != 0 || len(resp.GetRemovedResources()) != 1 || resp.GetRemovedResources()[0] != claB {
		t.Fatalf("after A (unsubscribed) changed and B went: %v removed %v, want B removed only", resp.GetResources(), resp.GetRemovedResources())
	}
	cancel()

	// Reconnect holding A at the version before its last change and B (gone).
	f.change(hostB, "10.0.1.1")
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	st = f.deltaStream(ctx2)
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node("d1"), TypeUrl: resourcev3.EndpointType,
		ResourceNamesSubscribe: []string{claA, claB}, InitialResourceVersions: versions}); err != nil {
		t.Fatal(err)
	}
	resp = recv()
	got := decodeCLAs(t, resourceValues(resp.GetResources()))
	if len(got) != 1 || got[claA] == nil || len(addresses(got[claA])) != 1 {
		t.Fatalf("on reconnect: %v, want only A (changed since; B is as the proxy holds it)", got)
	}
}

func resourceValues(rs []*discoverygrpc.Resource) []interface{ GetValue() []byte } {
	out := make([]interface{ GetValue() []byte }, len(rs))
	for i, r := range rs {
		out[i] = r.GetResource()
	}
	return out
}

// streamFor returns the explicit EDS subscriptions of proxy id's stream.
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
		}
		st.mu.Unlock()
		if match {
			return have, true
		}
	}
	return nil, false
}

// TestSotwWildcardStaysAfterACK: a proxy that asked for every cluster (no names)
// and ACKs with no names still gets every cluster, new ones included.
func TestSotwWildcardStaysAfterACK(t *testing.T) {
	f := newXDSFixture(t)
	st := sotwStreamFor(t, f)
	if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: node("w1"), TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetResources()); n != 2 {
		t.Fatalf("first CDS response: %d clusters, want 2", n)
	}
	if err := st.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	f.change("c.ns.svc.cluster.local", "10.0.2.1")
	if resp, err = st.Recv(); err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetResources()); n != 3 {
		t.Fatalf("after a service appeared: %d clusters, want 3", n)
	}
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

// TestSotwExplicitWildcardAndNackedNames: an ACK naming "*" is an ACK (not a new
// subscription to answer again), and names added in a NACK request count.
func TestSotwExplicitWildcardAndNackedNames(t *testing.T) {
	f := newXDSFixture(t)
	st := sotwStreamFor(t, f)
	send := func(req *discoverygrpc.DiscoveryRequest) {
		t.Helper()
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	send(&discoverygrpc.DiscoveryRequest{Node: node("p1"), TypeUrl: resourcev3.ClusterType, ResourceNames: []string{"*"}})
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 2 {
		t.Fatalf("CDS for \"*\": %d clusters, want 2", len(resp.GetResources()))
	}
	send(&discoverygrpc.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNames: []string{"*"}, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
	send(&discoverygrpc.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA}})
	resp, clas := recvSotw(t, st)
	if len(clas) != 1 || clas[claA] == nil {
		t.Fatalf("after the ACK naming \"*\", the next response is %s %v; want EDS of A", resp.GetTypeUrl(), clas)
	}
	kubetest.Consistently(t, 200*time.Millisecond, func() error {
		if n := responsesSent(f.s); n != 2 {
			return fmt.Errorf("%d responses sent, want 2: an ACK naming \"*\" was answered", n)
		}
		return nil
	})
	send(&discoverygrpc.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA, claB}, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &status.Status{Message: "rejected"}})
	if _, clas = recvSotw(t, st); len(clas) != 2 {
		t.Fatalf("after a NACK naming A and B: %v, want both", clas)
	}
}

// TestDeltaAnswersEverySubscription: a subscribed name that does not exist is
// answered as removed, and subscribing again to a name the proxy holds sends it
// again.
func TestDeltaAnswersEverySubscription(t *testing.T) {
	bothEncodings(t, testDeltaAnswersEverySubscription)
}

func testDeltaAnswersEverySubscription(t *testing.T) {
	f := newXDSFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // a missing response fails, not hangs
	defer cancel()
	st := f.deltaStream(ctx)
	const missing = "outbound|80||missing.ns.svc.cluster.local"
	recv := func() *discoverygrpc.DeltaDiscoveryResponse {
		t.Helper()
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node("d1"), TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{claA, missing}}); err != nil {
		t.Fatal(err)
	}
	resp := recv()
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != claA || !slices.Equal(resp.GetRemovedResources(), []string{missing}) {
		t.Fatalf("first response: %v removed %v; want A, and %s removed", resp.GetResources(), resp.GetRemovedResources(), missing)
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: resp.GetNonce(), ResourceNamesSubscribe: []string{claA}}); err != nil {
		t.Fatal(err)
	}
	resp = recv()
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != claA || len(resp.GetRemovedResources()) != 0 {
		t.Fatalf("after subscribing to A again: %v removed %v; want A", resp.GetResources(), resp.GetRemovedResources())
	}
}

// TestFetch: a unary fetch answers with the requested resources, and tells a
// client that already holds the current version that it is up to date.
func TestFetch(t *testing.T) {
	f := newXDSFixture(t)
	resp, err := f.eds.FetchEndpoints(t.Context(), &discoverygrpc.DiscoveryRequest{Node: node("f1"), ResourceNames: []string{claB}})
	if err != nil {
		t.Fatal(err)
	}
	if clas := decodeCLAs(t, resp.GetResources()); len(clas) != 1 || len(addresses(clas[claB])) != 1 {
		t.Fatalf("fetch of B: %v", clas)
	}
	_, err = f.eds.FetchEndpoints(t.Context(), &discoverygrpc.DiscoveryRequest{Node: node("f1"), ResourceNames: []string{claB}, VersionInfo: resp.GetVersionInfo()})
	if grpcstatus.Code(err) != codes.Unavailable {
		t.Fatalf("fetch at the current version: %v, want Unavailable (up to date)", err)
	}
	f.change(hostB, "10.0.1.1", "10.0.1.2")
	resp, err = f.eds.FetchEndpoints(t.Context(), &discoverygrpc.DiscoveryRequest{Node: node("f1"), ResourceNames: []string{claB}, VersionInfo: resp.GetVersionInfo()})
	if err != nil {
		t.Fatal(err)
	}
	if clas := decodeCLAs(t, resp.GetResources()); len(addresses(clas[claB])) != 2 {
		t.Fatalf("fetch after B changed: %v", clas)
	}
}

// TestSotwDuplicateNames: a request naming A twice, after A and B, unsubscribes B.
func TestSotwDuplicateNames(t *testing.T) {
	f := newXDSFixture(t)
	st := sotwStreamFor(t, f)
	if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: node("p1"), TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA, claB}}); err != nil {
		t.Fatal(err)
	}
	resp, _ := recvSotw(t, st)
	if err := st.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA, claA},
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 10*time.Second, func() error {
		have, ok := f.s.streamFor("p1")
		_, hasB := have[claB]
		if ok && len(have) == 1 && !hasB {
			return nil
		}
		return errors.New("not yet: B to be unsubscribed")
	})
}
