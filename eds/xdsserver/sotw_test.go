package xdsserver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
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

// TestSotwPartialEDS: after a change, a state-of-the-world EDS response carries only
// the assignments that changed and those newly subscribed to; a resource that goes
// costs no response; after a NACK the next response carries every subscribed
// assignment again; a new stream is sent everything it asks for.
func TestSotwPartialEDS(t *testing.T) {
	bothEncodings(t, testSotwPartialEDS)
}

func testSotwPartialEDS(t *testing.T) {
	const hostC = "c.ns.svc.cluster.local"
	claC := clusterName(hostC)
	f := newXDSFixture(t)
	f.change(hostC, "10.0.2.1")
	st := sotwStreamFor(t, f)
	names := []string{claA, claB}
	send := func(req *discoverygrpc.DiscoveryRequest) {
		t.Helper()
		req.TypeUrl = resourcev3.EndpointType
		if req.ResourceNames == nil {
			req.ResourceNames = names
		}
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	ack := func(resp *discoverygrpc.DiscoveryResponse) {
		t.Helper()
		send(&discoverygrpc.DiscoveryRequest{VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
	}
	// want checks that the next response holds exactly the named assignments, with
	// the given number of endpoints each.
	want := func(step string, endpoints map[string]int) *discoverygrpc.DiscoveryResponse {
		t.Helper()
		resp, clas := recvSotw(t, st)
		got := map[string]int{}
		for n, cla := range clas {
			got[n] = len(addresses(cla))
		}
		if !maps.Equal(got, endpoints) {
			t.Fatalf("%s: response holds %v (name: endpoints), want %v", step, got, endpoints)
		}
		return resp
	}

	send(&discoverygrpc.DiscoveryRequest{Node: node("p1")})
	resp := want("first request", map[string]int{claA: 1, claB: 1})
	ack(resp)

	f.change(hostB, "10.0.1.1", "10.0.1.2")
	resp2 := want("B changed", map[string]int{claB: 2})
	if resp2.GetVersionInfo() == resp.GetVersionInfo() {
		t.Errorf("version %q did not move on", resp2.GetVersionInfo())
	}
	ack(resp2)

	// Subscribing to C is answered with C alone; A and B are held.
	names = []string{claA, claB, claC}
	ack(resp2)
	resp = want("C subscribed", map[string]int{claC: 1})
	ack(resp)

	// C going is not sent (the proxy keeps what a partial response leaves out, and
	// learns of it from CDS); the next change that is, carries A alone.
	f.change(hostC)
	f.change(hostA, "10.0.0.1", "10.0.0.2")
	resp = want("C went, then A changed", map[string]int{claA: 2})

	// A NACK is not answered; the fix that follows comes with every assignment
	// subscribed to, as the proxy may have dropped the rejected response whole.
	send(&discoverygrpc.DiscoveryRequest{VersionInfo: resp2.GetVersionInfo(), ResponseNonce: resp.GetNonce(),
		ErrorDetail: &status.Status{Message: "bad endpoint"}})
	kubetest.Eventually(t, 10*time.Second, func() error {
		if ps := f.s.Streams(); len(ps) != 1 || ps[0].Types[resourcev3.EndpointType].Nacks != 1 {
			return errors.New("not yet: the NACK to be taken")
		}
		return nil
	})
	f.change(hostA, "10.0.0.1", "10.0.0.3", "10.0.0.4")
	resp = want("the fix after a NACK", map[string]int{claA: 3, claB: 2})
	ack(resp)
	f.change(hostA, "10.0.0.1")
	resp = want("A changed after the fix was ACKed", map[string]int{claA: 1})
	ack(resp)
	kubetest.Eventually(t, 10*time.Second, func() error {
		if ps := f.s.Streams(); len(ps) != 1 || !ps[0].UpToDate || ps[0].Types[resourcev3.EndpointType].Acked != resp.GetVersionInfo() {
			return fmt.Errorf("not yet: the partial response's version to be ACKed: %+v", ps)
		}
		return nil
	})

	// A reconnecting proxy is sent everything it asks for, whatever version it held.
	st = sotwStreamFor(t, f)
	send(&discoverygrpc.DiscoveryRequest{Node: node("p1"), VersionInfo: resp.GetVersionInfo()})
	want("reconnected", map[string]int{claA: 1, claB: 2})
}

// TestSotwFullStateTypesStayComplete: a state-of-the-world response of clusters
// named one by one holds every one subscribed to, not only the one that changed.
func TestSotwFullStateTypesStayComplete(t *testing.T) {
	f := newXDSFixture(t)
	// The proxy holds A and B; then A changes.
	held := f.group.feed.Current().Resources(resourcev3.EndpointType)
	f.change(hostA, "10.0.0.1", "10.0.0.9")
	rs := f.group.feed.Current().Resources(resourcev3.EndpointType)
	for _, tc := range []struct {
		typ  string
		want []string
	}{
		{resourcev3.ClusterType, []string{claA, claB}},
		{resourcev3.ListenerType, []string{claA, claB}},
		{resourcev3.EndpointType, []string{claA}},
		{resourcev3.RouteType, []string{claA}},
	} {
		st := &stream{feed: &f.group.feed}
		sb := &sub{typ: tc.typ, set: st.feed.nameSet([]string{claA, claB}), held: held}
		out := &outgoing{}
		if !st.sotwResponse(sb, rs, nil, out) {
			t.Fatalf("%s: no response", tc.typ)
		}
		var got []string
		for _, r := range out.res {
			got = append(got, r.Name())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: response holds %v, want %v", tc.typ, got, tc.want)
		}
	}
}

// TestSotwStreamsShareNameSets: state-of-the-world streams of a group that
// subscribe to the same names, in any order, hold one shared set of them; a set is
// forgotten once no stream holds it.
func TestSotwStreamsShareNameSets(t *testing.T) {
	f := newXDSFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	subscribe := func(id string, names ...string) {
		t.Helper()
		st, err := f.ads.StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: node(id), TypeUrl: resourcev3.EndpointType, ResourceNames: names}); err != nil {
			t.Fatal(err)
		}
		recvSotw(t, st)
	}
	subscribe("p1", claA, claB)
	subscribe("p2", claB, claA)
	subscribe("p3", claA, claB, claA)
	subscribe("p4", claA)
	sets := func() map[string]*nameSet {
		f.s.streamsMu.Lock()
		defer f.s.streamsMu.Unlock()
		out := map[string]*nameSet{}
		for st := range f.s.streams {
			st.mu.Lock()
			if sb := st.subs[resourcev3.EndpointType]; sb != nil {
				out[st.proxyID] = sb.set
			}
			st.mu.Unlock()
		}
		return out
	}
	got := sets()
	p := func(id string) *nameSet { return got[node(id).GetId()] }
	if len(got) != 4 || p("p1") == nil || p("p1") != p("p2") || p("p1") != p("p3") {
		t.Errorf("streams naming A and B hold sets %p %p %p, want one shared set", p("p1"), p("p2"), p("p3"))
	}
	if p("p4") == p("p1") || !slices.Equal(p("p4").list(), []string{claA}) || !slices.Equal(p("p1").list(), []string{claA, claB}) {
		t.Errorf("sets: A and B %v, A %v", p("p1").list(), p("p4").list())
	}
	got = nil
	cancel()
	kubetest.Eventually(t, 10*time.Second, func() error {
		runtime.GC()
		f.group.feed.setsMu.Lock()
		defer f.group.feed.setsMu.Unlock()
		if n := len(f.group.feed.sets); n != 0 {
			return fmt.Errorf("not yet: %d name sets kept after every stream ended", n)
		}
		return nil
	})
}
