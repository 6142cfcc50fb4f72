package app

import (
	"reflect"
	"testing"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/network/mcs"
)

func TestResolveShards(t *testing.T) {
	ep := func(addr string, port uint32) clusterregistry.Endpoint {
		return clusterregistry.Endpoint{Address: addr, Port: port, Ready: true}
	}
	shard := func(ports ...clusterregistry.ServicePort) *clusterregistry.Shard {
		sh := &clusterregistry.Shard{Service: clusterregistry.Service{Name: "helloworld", Namespace: "sample", Ports: ports},
			Endpoints: map[int32][]clusterregistry.Endpoint{}}
		for _, p := range ports {
			sh.Endpoints[p.Port] = []clusterregistry.Endpoint{ep("10.0.0."+p.Name, uint32(p.TargetPort))}
		}
		return sh
	}
	http := func(port, target int32) clusterregistry.ServicePort {
		return clusterregistry.ServicePort{Name: "http", Port: port, Protocol: "TCP", TargetPort: target}
	}
	for _, tc := range []struct {
		name   string
		shards map[network.ClusterID]*clusterregistry.Shard
		ports  []mcs.Port
		want   map[network.ClusterID]*clusterregistry.Shard
	}{
		{
			name:   "agreeing exports are served as they are",
			shards: map[network.ClusterID]*clusterregistry.Shard{"c1": shard(http(5000, 5000)), "c2": shard(http(5000, 5000))},
			ports:  []mcs.Port{{Name: "http", Port: 5000, Protocol: "TCP"}},
			want:   map[network.ClusterID]*clusterregistry.Shard{"c1": shard(http(5000, 5000)), "c2": shard(http(5000, 5000))},
		},
		{
			name:   "a number that lost is served under the winner's",
			shards: map[network.ClusterID]*clusterregistry.Shard{"c1": shard(http(5000, 5000)), "c2": shard(http(5001, 8080))},
			ports:  []mcs.Port{{Name: "http", Port: 5000, Protocol: "TCP"}},
			want: map[network.ClusterID]*clusterregistry.Shard{"c1": shard(http(5000, 5000)), "c2": {
				Service:   clusterregistry.Service{Name: "helloworld", Namespace: "sample", Ports: []clusterregistry.ServicePort{http(5000, 8080)}},
				Endpoints: map[int32][]clusterregistry.Endpoint{5000: {ep("10.0.0.http", 8080)}},
			}},
		},
		{
			name: "a protocol or name that lost is not served from that cluster",
			shards: map[network.ClusterID]*clusterregistry.Shard{
				"c1": shard(http(5000, 5000)),
				"c2": shard(clusterregistry.ServicePort{Name: "http", Port: 5000, Protocol: "UDP", TargetPort: 5000}),
				"c3": shard(clusterregistry.ServicePort{Name: "web", Port: 5000, Protocol: "TCP", TargetPort: 5000}),
			},
			ports: []mcs.Port{{Name: "http", Port: 5000, Protocol: "TCP"}},
			want:  map[network.ClusterID]*clusterregistry.Shard{"c1": shard(http(5000, 5000))},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := map[network.ClusterID]clusterregistry.Shard{}
			for id, sh := range tc.shards {
				before[id] = *sh
			}
			got := resolveShards(tc.shards, tc.ports)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("resolveShards =")
				for id, sh := range got {
					t.Errorf("  %s: %+v", id, *sh)
				}
				t.Errorf("want")
				for id, sh := range tc.want {
					t.Errorf("  %s: %+v", id, *sh)
				}
			}
			for id, sh := range tc.shards {
				if !reflect.DeepEqual(*sh, before[id]) {
					t.Errorf("shard %s modified", id)
				}
			}
		})
	}
}
