package eds

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/horizon-mesh/horizon/clusterregistry"
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

func TestViewOfPlace(t *testing.T) {
	md, err := structpb.NewStruct(map[string]any{"NETWORK": "network1", "CLUSTER_ID": "c1", "NODE_NAME": "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	loc := &corev3.Locality{Region: "us", Zone: "east-1a", SubZone: "s1"}
	v := ViewOf(&corev3.Node{Id: "sidecar~10.0.0.1~sleep.sample~sample.svc.cluster.local", Metadata: md, Locality: loc})
	want := View{Role: RoleSidecar, Network: "network1", Locality: clusterregistry.Locality{Region: "us", Zone: "east-1a", Subzone: "s1"}, Node: "node-a", NodeCluster: "c1"}
	if v.Locality != want.Locality || v.Node != want.Node || v.NodeCluster != want.NodeCluster {
		t.Errorf("ViewOf = %+v, want %+v", v, want)
	}
	if got, wantKey := v.Key(), "sidecar~network1~loc:us/east-1a/s1~node:c1/node-a"; got != wantKey {
		t.Errorf("Key() = %q, want %q", got, wantKey)
	}
	// A router serves its own network's endpoints without priorities: its place is
	// not read.
	r := ViewOf(&corev3.Node{Id: "router~10.0.0.2~gw.istio-system~istio-system.svc.cluster.local", Metadata: md, Locality: loc})
	if r.Locality != (clusterregistry.Locality{}) || r.Node != "" {
		t.Errorf("router view %+v has a place", r)
	}

	kn := &known{networks: map[network.NetworkID]bool{"network1": true}, clusters: map[network.ClusterID]bool{"c1": true}}
	for _, tc := range []struct {
		name              string
		needLoc, needNode bool
		wantKey           string
	}{
		{"no service has a traffic distribution: one group per network as before", false, false, "sidecar~network1"},
		{"some service has one: the locality splits groups", true, false, "sidecar~network1~loc:us/east-1a/s1"},
		{"some service has PreferSameNode: the node too", true, true, "sidecar~network1~loc:us/east-1a/s1~node:c1/node-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := v
			if err := admit(&a, kn, tc.needLoc, tc.needNode); err != nil {
				t.Fatal(err)
			}
			if a.Key() != tc.wantKey {
				t.Errorf("admitted key %q, want %q", a.Key(), tc.wantKey)
			}
		})
	}
}

func TestAdmitRefusesBadPlace(t *testing.T) {
	kn := &known{networks: map[network.NetworkID]bool{}, clusters: map[network.ClusterID]bool{}}
	for _, tc := range []struct {
		name string
		v    View
		want string
	}{
		{"long zone", View{Locality: clusterregistry.Locality{Zone: strings.Repeat("z", maxLocalityLen+1)}}, "locality zone has 129 bytes"},
		{"long node name", View{Node: strings.Repeat("n", maxNodeNameLen+1)}, "NODE_NAME has 254 bytes"},
		{"separator in region", View{Locality: clusterregistry.Locality{Region: "us/east"}}, "locality region"},
		{"separator in node", View{Node: "a~b"}, "NODE_NAME"},
		{"long home cluster", View{Home: network.ClusterID(strings.Repeat("c", maxNodeNameLen+1))}, "CLUSTER_ID has 254 bytes"},
		{"separator in home cluster", View{Home: "k1~x"}, "CLUSTER_ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.v
			err := admit(&v, kn, true, true)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("admit = %v, want InvalidArgument naming %q", err, tc.want)
			}
		})
	}
}
