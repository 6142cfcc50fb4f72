package eds

import (
	"testing"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/network"
)

// TestWireResponsesDecode: a response assembled from shared bytes decodes to the
// message the server would otherwise encode, for state of the world and delta, with
// no, one and several resources.
func TestWireResponsesDecode(t *testing.T) {
	nets, err := network.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	var res []*resource
	for i, host := range []string{"a.ns.svc.cluster.local", "b.ns.svc.cluster.local", "long-" + string(make([]byte, 300)) + ".svc"} {
		var eps []clusterregistry.Endpoint
		for j := range 40 * i {
			eps = append(eps, clusterregistry.Endpoint{Address: "10.0.0." + string(rune('1'+j%9)), Port: 8080, Ready: true, Cluster: "c1"})
		}
		cla := BuildLoadAssignment(ClusterName(host, 80), map[network.ClusterID][]clusterregistry.Endpoint{"c1": eps}, NewTopology(nets, nil), View{Role: RoleSidecar})
		b, err := marshal(cla)
		if err != nil {
			t.Fatal(err)
		}
		res = append(res, newResource(resourcev3.EndpointType, cla.GetClusterName(), "v"+string(rune('a'+i)), cla, b))
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
