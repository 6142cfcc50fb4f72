package xdsserver

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
)

// sentTo returns how many responses the stream of proxy id was sent.
func (s *Server) sentTo(id string) uint64 {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	for st := range s.streams {
		st.mu.Lock()
		n, match := st.nonce, st.proxyID == id
		st.mu.Unlock()
		if match {
			return n
		}
	}
	return 0
}

// TestPushReachesExactlyItsSubscribers: a change of one resource is sent to the
// streams subscribed to it — state of the world and delta, one name or many, in any
// order — and to no other stream.
func TestPushReachesExactlyItsSubscribers(t *testing.T) {
	f := newXDSFixture(t)
	// Names that do not exist pad the long subscriptions past what an ACK was
	// checked against without allocating before.
	var padding []string
	for i := range 100 {
		padding = append(padding, clusterName("pad"+strconv.Itoa(i)+".ns.svc.cluster.local"))
	}
	type proxy struct {
		id    string
		delta bool
		names []string
		wantA bool // subscribed to A
	}
	proxies := []proxy{
		{"sotw-a", false, []string{claA}, true},
		{"sotw-b", false, []string{claB}, false},
		{"sotw-long-a", false, append(slices.Clone(padding), claB, claA), true},
		{"sotw-long-b", false, append([]string{claB}, padding...), false},
		{"delta-a", true, []string{claA}, true},
		{"delta-b", true, []string{claB}, false},
		{"delta-long-ab", true, append(slices.Clone(padding), claA, claB), true},
	}
	type conn struct {
		sotw  discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient
		delta discoverygrpc.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
		nonce string
	}
	conns := make([]*conn, len(proxies))
	ack := func(p proxy, c *conn, version string) {
		t.Helper()
		var err error
		if p.delta {
			err = c.delta.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: c.nonce})
		} else {
			// The ACK names the same resources in another order.
			names := slices.Clone(p.names)
			slices.Reverse(names)
			err = c.sotw.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: names,
				VersionInfo: version, ResponseNonce: c.nonce})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// recv reads the next response and returns the names it carries.
	recv := func(p proxy, c *conn) []string {
		t.Helper()
		var names []string
		if p.delta {
			resp, err := c.delta.Recv()
			if err != nil {
				t.Fatalf("%s: %v", p.id, err)
			}
			for _, r := range resp.GetResources() {
				names = append(names, r.GetName())
			}
			c.nonce = resp.GetNonce()
		} else {
			resp, clas := recvSotw(t, c.sotw)
			for n := range clas {
				names = append(names, n)
			}
			c.nonce = resp.GetNonce()
			ack(p, c, resp.GetVersionInfo())
			return sorted(names)
		}
		ack(p, c, "")
		return sorted(names)
	}
	for i, p := range proxies {
		c := &conn{}
		if p.delta {
			c.delta = f.deltaStream(t.Context())
			if err := c.delta.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node(p.id), TypeUrl: resourcev3.EndpointType,
				ResourceNamesSubscribe: p.names}); err != nil {
				t.Fatal(err)
			}
		} else {
			c.sotw = sotwStreamFor(t, f)
			if err := c.sotw.Send(&discoverygrpc.DiscoveryRequest{Node: node(p.id), TypeUrl: resourcev3.EndpointType,
				ResourceNames: p.names}); err != nil {
				t.Fatal(err)
			}
		}
		conns[i] = c
		recv(p, c)
	}
	sent := func() map[string]uint64 {
		out := map[string]uint64{}
		for _, p := range proxies {
			out[p.id] = f.s.sentTo(node(p.id).GetId())
		}
		return out
	}
	// Every ACK is taken before the change.
	kubetest.Eventually(t, 10*time.Second, func() error {
		ps := f.s.Streams()
		for _, p := range ps {
			if !p.UpToDate {
				return fmt.Errorf("not yet: %s to ACK", p.ProxyID)
			}
		}
		if len(ps) != len(proxies) {
			return fmt.Errorf("%d streams, want %d", len(ps), len(proxies))
		}
		return nil
	})
	before := sent()

	f.change(hostA, "10.0.0.1", "10.0.0.2")
	for i, p := range proxies {
		if p.wantA {
			if got := recv(p, conns[i]); !slices.Equal(got, []string{claA}) {
				t.Errorf("%s: after A changed, sent %v, want only %s", p.id, got, claA)
			}
		}
	}
	kubetest.Eventually(t, 10*time.Second, func() error {
		after := sent()
		for _, p := range proxies {
			want := before[p.id]
			if p.wantA {
				want++
			}
			if after[p.id] != want {
				return fmt.Errorf("%s was sent %d responses for A's change, want %d", p.id, after[p.id]-before[p.id], want-before[p.id])
			}
		}
		return nil
	})
	// B changes: the next response of every proxy subscribed to B carries B, so
	// none of them was sent A's change.
	f.change(hostB, "10.0.1.1", "10.0.1.2")
	for i, p := range proxies {
		if slices.Contains(p.names, claB) {
			if got := recv(p, conns[i]); !slices.Equal(got, []string{claB}) {
				t.Errorf("%s: after B changed, sent %v, want only %s", p.id, got, claB)
			}
		}
	}
}

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}

// TestChangedNamesOnlyFromTheVersionBefore: a stream checks and sends only the
// names of the last change when it held the type at the version just before it;
// a stream further behind is compared, and sent, in full.
func TestChangedNamesOnlyFromTheVersionBefore(t *testing.T) {
	f := newXDSFixture(t)
	rs0 := f.group.feed.Current().Resources(resourcev3.EndpointType)
	f.change(hostA, "10.0.0.1", "10.0.0.2")
	rs1 := f.group.feed.Current().Resources(resourcev3.EndpointType)
	f.change(hostB, "10.0.1.1", "10.0.1.2")
	p := f.group.feed.cur.Load()
	rs2 := p.snap.Resources(resourcev3.EndpointType)
	d := p.diff(resourcev3.EndpointType, rs2)
	if d == nil || d.from != rs1.Version() || !slices.Equal(d.names, []string{claB}) {
		t.Fatalf("diff of the last change = %+v, want from %s: [%s]", d, rs1.Version(), claB)
	}
	for _, tc := range []struct {
		name  string
		held  *Resources
		names []string
		want  []string // nil: nothing pending
	}{
		{"held the version before", rs1, []string{claA, claB}, []string{claB}},
		{"held an older version", rs0, []string{claA, claB}, []string{claA, claB}},
		{"not subscribed to the change", rs1, []string{claA}, nil},
		{"older, not subscribed to the change", rs0, []string{claA}, []string{claA}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &stream{feed: &f.group.feed}
			sb := &sub{typ: resourcev3.EndpointType, set: st.feed.nameSet(tc.names), held: tc.held}
			if got := st.pending(sb, rs2, d); got != (tc.want != nil) {
				t.Fatalf("pending = %v, want %v", got, tc.want != nil)
			}
			if tc.want == nil {
				return
			}
			out := &outgoing{}
			st.sotwResponse(sb, rs2, d, out)
			var got []string
			for _, r := range out.res {
				got = append(got, r.Name())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("response holds %v, want %v", got, tc.want)
			}
		})
	}
	// Delta: up to date at the version before, or further behind.
	for _, tc := range []struct {
		name string
		seen *Resources
		have []string
		want bool
	}{
		{"seen the version before", rs1, []string{claA}, false},
		{"seen an older version", rs0, []string{claA}, true},
		{"seen the version before, subscribed to the change", rs1, []string{claB}, true},
	} {
		t.Run("delta "+tc.name, func(t *testing.T) {
			st := &stream{feed: &f.group.feed, delta: true}
			sb := &sub{typ: resourcev3.EndpointType, have: map[string]string{}, seen: tc.seen.Version()}
			for _, n := range tc.have {
				sb.have[n] = tc.seen.Get(n).Version()
			}
			if got := st.pending(sb, rs2, d); got != tc.want {
				t.Errorf("pending = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNameSetEqual(t *testing.T) {
	f := &Feed{}
	var long []string
	for i := range 1500 {
		long = append(long, fmt.Sprintf("n%04d", i))
	}
	longSet := f.nameSet(slices.Clone(long))
	set := f.nameSet([]string{"a", "b", "c"})
	for _, tc := range []struct {
		name  string
		set   *nameSet
		names []string
		want  bool
	}{
		{"same order", set, []string{"a", "b", "c"}, true},
		{"other order", set, []string{"c", "a", "b"}, true},
		{"with a wildcard", set, []string{"b", "*", "a", "c"}, true},
		{"one missing", set, []string{"a", "b"}, false},
		{"a duplicate for a missing one", set, []string{"a", "b", "b"}, false},
		{"one more", set, []string{"a", "b", "c", "d"}, false},
		{"a duplicate besides all", set, []string{"a", "b", "c", "a"}, false},
		{"empty set, no names", nil, nil, true},
		{"empty set, only a wildcard", nil, []string{"*"}, true},
		{"empty set, a name", nil, []string{"a"}, false},
		{"long, reversed", longSet, reversed(long), true},
		{"long, a duplicate", longSet, append(slices.Clone(long[:1499]), long[0]), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.set.equal(tc.names); got != tc.want {
				t.Errorf("equal(%.60v) = %v, want %v", tc.names, got, tc.want)
			}
		})
	}
}

func reversed(s []string) []string {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}
