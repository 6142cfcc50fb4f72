package xdsserver

import (
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// TestWireResponsesDecode: a response assembled from shared bytes decodes to the
// message the server would otherwise encode, for state of the world and delta, with
// no, one and several resources.
func TestWireResponsesDecode(t *testing.T) {
	var res []*Resource
	for i, host := range []string{"a.ns.svc.cluster.local", "b.ns.svc.cluster.local", "long-" + string(make([]byte, 300)) + ".svc"} {
		cla := &endpointv3.ClusterLoadAssignment{ClusterName: clusterName(host), Endpoints: []*endpointv3.LocalityLbEndpoints{{}}}
		for j := range 40 * i {
			cla.Endpoints[0].LbEndpoints = append(cla.Endpoints[0].LbEndpoints, lbEndpoint("10.0.0."+string(rune('1'+j%9))))
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(cla)
		if err != nil {
			t.Fatal(err)
		}
		r := NewResource(resourcev3.EndpointType, cla.GetClusterName(), "v"+string(rune('a'+i)), b)
		if len(r.prefixes) != cap(r.prefixes) {
			t.Errorf("%s: prefixes of %d bytes in %d allocated, want them sized exactly", host, len(r.prefixes), cap(r.prefixes))
		}
		res = append(res, r)
	}
	for _, n := range []int{0, 1, len(res)} {
		for _, delta := range []bool{false, true} {
			o := &outgoing{delta: delta, typ: resourcev3.EndpointType, version: "7x", nonce: "42", res: res[:n]}
			var want, got proto.Message = o.sotw(), &discoverygrpc.DiscoveryResponse{}
			if delta {
				o.removed = []string{"gone-1", "gone-2"}
				want, got = o.deltaMsg(), &discoverygrpc.DeltaDiscoveryResponse{}
			}
			if err := proto.Unmarshal(o.wire().bufs.Materialize(), got); err != nil {
				t.Fatalf("%d resources, delta %v: %v", n, delta, err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("%d resources, delta %v: wire form decodes to\n%v\nwant\n%v", n, delta, got, want)
			}
		}
	}
}
