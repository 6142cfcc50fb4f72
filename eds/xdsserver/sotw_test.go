package xdsserver

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/genproto/googleapis/rpc/status"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
)

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
		if ps := f.s.Streams(); len(ps) != 1 || ps[0].Types[resourcev3.EndpointType].Sent != resp.GetVersionInfo() {
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
	ps := f.s.Streams()
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
	if ps := f.s.Streams(); len(ps) != 1 || ps[0].UpToDate {
		t.Fatalf("before the ACK: %+v, want one proxy not up to date", ps)
	}
	if err := st.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA},
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 10*time.Second, func() error {
		ps := f.s.Streams()
		if len(ps) == 1 && ps[0].UpToDate && ps[0].Types[resourcev3.EndpointType].Acked == resp.GetVersionInfo() {
			return nil
		}
		return errors.New("not yet: the ACK to be recorded")
	})
	f.change(hostB, "10.0.1.9") // B is not watched: still up to date
	if ps := f.s.Streams(); !ps[0].UpToDate {
		t.Errorf("a change of a resource it does not watch made the proxy out of date: %+v", ps[0])
	}
	f.change(hostA, "10.0.0.9")
	recvSotw(t, st)
	if ps := f.s.Streams(); ps[0].UpToDate {
		t.Errorf("sent a change it has not ACKed, yet up to date: %+v", ps[0])
	}
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

// TestNacksOfMadeUpTypesAddNoSeries: NACKs naming made-up type URLs all count as
// "other" in horizon_xds_nacks_total, and a huge error detail is kept (and logged)
// truncated.
func TestNacksOfMadeUpTypesAddNoSeries(t *testing.T) {
	f := newXDSFixture(t)
	huge := strings.Repeat("x", 64<<10)
	for i := range 20 {
		st := sotwStreamFor(t, f)
		for j := range 10 {
			req := &discoverygrpc.DiscoveryRequest{TypeUrl: fmt.Sprintf("type.googleapis.com/made.up.T%d", i*10+j),
				ErrorDetail: &status.Status{Message: "rejected " + huge}}
			if j == 0 {
				req.Node = node(fmt.Sprintf("p%d", i))
			}
			if err := st.Send(req); err != nil {
				t.Fatal(err)
			}
		}
		req := &discoverygrpc.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA}}
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
		recvSotw(t, st) // every NACK before it was taken
	}
	ch := make(chan prometheus.Metric, 300)
	f.s.metrics.nacks.Collect(ch)
	close(ch)
	if n := len(ch); n != 1 {
		t.Errorf("horizon_xds_nacks_total has %d series after NACKs of 200 made-up types, want 1 (other)", n)
	}
	var m dto.Metric
	if err := f.s.metrics.nacks.WithLabelValues("other").Write(&m); err != nil || m.GetCounter().GetValue() != 200 {
		t.Errorf("other NACKs counted %v (error %v), want 200", m.GetCounter().GetValue(), err)
	}
	for _, p := range f.s.Streams() {
		for typ, ts := range p.Types {
			if len(ts.LastNack) > maxLogged+32 {
				t.Fatalf("%s: last NACK kept at %d bytes, want it truncated to %d", typ, len(ts.LastNack), maxLogged)
			}
		}
	}
}
