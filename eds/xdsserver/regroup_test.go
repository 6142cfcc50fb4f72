package xdsserver

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// TestRegroupMovesStreams: a stream whose group changes is moved by Regroup and
// sent only what differs between what it holds and its new group's snapshot:
// resources only the new group has, changed ones, and the removal of those it
// lacks; what is the same in both is not sent again. Its old group no longer
// wakes it.
func TestRegroupMovesStreams(t *testing.T) {
	f := newXDSFixture(t) // group A: hosts A and B
	groupB := &testGroup{}
	var inB atomic.Bool
	f.s.groups = GroupsFunc(func(_ *corev3.Node, attach func(Group)) (Group, error) {
		g := Group(f.group)
		if inB.Load() {
			g = groupB
		}
		if attach != nil {
			attach(g)
		}
		return g, nil
	})
	// Group B: A as in group A, B changed, C only there.
	const hostC = "c.ns.svc.cluster.local"
	claC := clusterName(hostC)
	cla := func(name, ip string) *Resource {
		return f.resource(resourcev3.EndpointType, name, &endpointv3.ClusterLoadAssignment{ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(ip)}}}})
	}
	groupB.feed.Publish(NewSnapshot(map[string]*Resources{resourcev3.EndpointType: NewResources(map[string]*Resource{
		claA: cla(claA, "10.0.0.1"), claB: cla(claB, "10.0.1.9"), claC: cla(claC, "10.0.2.1"),
	})}))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // a missing response fails, not hangs
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
	names := func(rs []*discoverygrpc.Resource) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.GetName())
		}
		return out
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node("g1"), TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{claA, claB, claC}}); err != nil {
		t.Fatal(err)
	}
	if resp := recv(); !slices.Equal(names(resp.GetResources()), []string{claA, claB}) || !slices.Equal(resp.GetRemovedResources(), []string{claC}) {
		t.Fatalf("in group A: %v removed %v, want A and B, C removed", names(resp.GetResources()), resp.GetRemovedResources())
	}
	inB.Store(true)
	if n := f.s.Regroup(nil); n != 1 {
		t.Fatalf("Regroup moved %d streams, want 1", n)
	}
	if resp := recv(); !slices.Equal(names(resp.GetResources()), []string{claB, claC}) || len(resp.GetRemovedResources()) != 0 {
		t.Fatalf("moved to group B: %v removed %v, want B (changed) and C (new) only", names(resp.GetResources()), resp.GetRemovedResources())
	}
	if f.group.feed.Streams() != 0 || groupB.feed.Streams() != 1 {
		t.Fatalf("streams on A's feed %d, on B's %d; want 0 and 1", f.group.feed.Streams(), groupB.feed.Streams())
	}
	// A change in group A does not reach the stream; one in B does, and is the
	// next response it reads.
	f.change(hostA, "10.0.0.5")
	groupB.feed.Publish(NewSnapshot(map[string]*Resources{resourcev3.EndpointType: NewResources(map[string]*Resource{
		claA: cla(claA, "10.0.0.1"), claB: cla(claB, "10.0.1.9"),
	})}))
	if resp := recv(); len(resp.GetResources()) != 0 || !slices.Equal(resp.GetRemovedResources(), []string{claC}) {
		t.Fatalf("after changes in both groups: %v removed %v, want only C removed (B's change)", names(resp.GetResources()), resp.GetRemovedResources())
	}
}
