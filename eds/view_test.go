package eds

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/horizon-mesh/horizon/network"
)

func TestViewOfNetworkAndCluster(t *testing.T) {
	for _, tc := range []struct {
		name    string
		meta    map[string]any
		want    View
		wantKey string
	}{
		{name: "NETWORK wins over CLUSTER_ID", meta: map[string]any{"NETWORK": "network2", "CLUSTER_ID": "cluster1"},
			want: View{Role: RoleSidecar, Network: "network2"}, wantKey: "sidecar~network2"},
		{name: "CLUSTER_ID alone", meta: map[string]any{"CLUSTER_ID": "cluster1"},
			want: View{Role: RoleSidecar, Cluster: "cluster1"}, wantKey: "sidecar~~cluster:cluster1"},
		{name: "neither", meta: map[string]any{},
			want: View{Role: RoleSidecar}, wantKey: "sidecar~"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md, err := structpb.NewStruct(tc.meta)
			if err != nil {
				t.Fatal(err)
			}
			got := ViewOf(&corev3.Node{Id: "sidecar~10.0.0.1~sleep.sample~sample.svc.cluster.local", Metadata: md})
			if got.Network != tc.want.Network || got.Cluster != tc.want.Cluster || got.Role != tc.want.Role {
				t.Errorf("ViewOf = %+v, want %+v", got, tc.want)
			}
			if got.Key() != tc.wantKey {
				t.Errorf("Key() = %q, want %q", got.Key(), tc.wantKey)
			}
		})
	}
}

func TestProxyNetwork(t *testing.T) {
	topo := NewTopology(testNetworks(t), nil)
	topo.ClusterNetworks = map[network.ClusterID]network.NetworkID{"c9": "network7", "c2": "network8"}
	for _, tc := range []struct {
		name string
		v    View
		want network.NetworkID
	}{
		{name: "NETWORK metadata", v: View{Network: "network3"}, want: "network3"},
		{name: "system-namespace label of the proxy's cluster", v: View{Cluster: "c9"}, want: "network7"},
		{name: "the label wins over fromRegistry", v: View{Cluster: "c2"}, want: "network8"},
		{name: "fromRegistry of the proxy's cluster", v: View{Cluster: "c4"}, want: "network3"},
		{name: "a cluster in no network: the unnamed network", v: View{Cluster: "c42"}, want: ""},
		{name: "nothing: the unnamed network", v: View{}, want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := topo.ProxyNetwork(tc.v); got != tc.want {
				t.Errorf("ProxyNetwork(%+v) = %q, want %q", tc.v, got, tc.want)
			}
		})
	}
}
