package xdsserver

import (
	"bytes"
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
		if !bytes.Equal(r.Bytes(), b) || cap(r.b) != len(r.b) {
			t.Errorf("%s: encoding %d bytes (%d capacity), want the %d given and no room to grow", host, len(r.b), cap(r.b), len(b))
		}
		res = append(res, r)
	}
	for _, n := range []int{0, 1, len(res)} {
		for _, shape := range []string{"sotw", "delta", "sotw whole type"} {
			delta := shape == "delta"
			o := &outgoing{delta: delta, typ: resourcev3.EndpointType, version: "7x", nonce: "42", res: res[:n]}
			if shape == "sotw whole type" {
				byName := map[string]*Resource{}
				for _, r := range res[:n] {
					byName[r.name] = r
				}
				o.all = NewResources(byName)
				o.res = nil
				for _, name := range o.all.Names() {
					o.res = append(o.res, o.all.Get(name))
				}
				if bufs := o.wire().bufs; n > 0 && len(bufs) != 2 {
					t.Errorf("%d resources, whole type: %d buffers, want the header and one for every resource", n, len(bufs))
				}
			}
			var want, got proto.Message = o.sotw(), &discoverygrpc.DiscoveryResponse{}
			if delta {
				o.removed = []string{"gone-1", "gone-2"}
				want, got = o.deltaMsg(), &discoverygrpc.DeltaDiscoveryResponse{}
			}
			if err := proto.Unmarshal(o.wire().bufs.Materialize(), got); err != nil {
				t.Fatalf("%d resources, %s: %v", n, shape, err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("%d resources, %s: wire form decodes to\n%v\nwant\n%v", n, shape, got, want)
			}
		}
	}
}
