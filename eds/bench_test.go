package eds

import (
	"fmt"
	"testing"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/network"
)

// BenchmarkEndpointGeneration builds the ClusterLoadAssignments one proxy asks for,
// and encodes them as the server does (marshal): every service, seen from network1,
// with four networks of one gateway each and the endpoints spread over the networks
// round-robin. Every iteration builds and encodes every one afresh. make bench runs
// it with the vtprotobuf tag, like the binaries.
func BenchmarkEndpointGeneration(b *testing.B) {
	mn, err := network.ParseMeshNetworks([]byte(`
networks:
  network1: {endpoints: [{fromRegistry: cluster1}], gateways: [{address: 192.0.2.1, port: 15443}]}
  network2: {endpoints: [{fromRegistry: cluster2}], gateways: [{address: 192.0.2.2, port: 15443}]}
  network3: {endpoints: [{fromRegistry: cluster3}], gateways: [{address: 192.0.2.3, port: 15443}]}
  network4: {endpoints: [{fromRegistry: cluster4}], gateways: [{address: 192.0.2.4, port: 15443}]}
`))
	if err != nil {
		b.Fatal(err)
	}
	nets, err := network.Compile(mn)
	if err != nil {
		b.Fatal(err)
	}
	topo := NewTopology(nets, nets.Gateways(nil, nil))
	view := View{Role: RoleSidecar, Network: "network1"}
	for _, tc := range []struct{ endpoints, services int }{{1, 100}, {10, 10}, {100, 10}, {1000, 1}} {
		b.Run(fmt.Sprintf("%d/%d", tc.endpoints, tc.services), func(b *testing.B) {
			type svc struct {
				name string
				eps  map[network.ClusterID][]clusterregistry.Endpoint
			}
			svcs := make([]svc, tc.services)
			for s := range svcs {
				eps := map[network.ClusterID][]clusterregistry.Endpoint{}
				for e := range tc.endpoints {
					cluster := network.ClusterID(fmt.Sprintf("cluster%d", e%4+1))
					eps[cluster] = append(eps[cluster], clusterregistry.Endpoint{
						Address: fmt.Sprintf("10.%d.%d.%d", e%4+1, e/250, e%250+1), Port: 8080, Ready: true,
						Cluster: cluster, TLSMode: network.TLSModeIstio,
						Locality: clusterregistry.Locality{Region: "region", Zone: fmt.Sprintf("zone%d", e%3)},
					})
				}
				svcs[s] = svc{name: ClusterName(fmt.Sprintf("svc%d.ns.svc.cluster.local", s), 80), eps: eps}
			}
			var bytes int
			for b.Loop() {
				bytes = 0
				for _, s := range svcs {
					cla := BuildLoadAssignment(s.name, s.eps, topo, view)
					out, err := marshal(cla)
					if err != nil {
						b.Fatal(err)
					}
					bytes += len(out)
				}
			}
			b.ReportMetric(float64(bytes)/float64(tc.services), "bytes/msg")
		})
	}
}
