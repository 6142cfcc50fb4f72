package eds

import (
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
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
						Locality: &clusterregistry.Locality{Region: "region", Zone: fmt.Sprintf("zone%d", e%3)},
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

// BenchmarkBuiltEndpointsHeap measures the heap eds holds for the assignments it
// built: clusters clusters, each on its own network behind one gateway, with the
// same 1,000 services of 10 mTLS endpoints each, and a kept sidecar group on every
// network (as horizon-load's probes make them). It reports the heap held after the
// groups are built — the server, its shares, the cache of built assignments and the
// published snapshots, not the endpoint source — per endpoint of every cluster.
func BenchmarkBuiltEndpointsHeap(b *testing.B) {
	const services, endpoints = 1000, 10
	for _, clusters := range []int{2, 10} {
		b.Run(fmt.Sprintf("%dx%dx%d", clusters, services, endpoints), func(b *testing.B) {
			var mesh strings.Builder
			mesh.WriteString("networks:\n")
			src := &fakeSource{shards: map[string]map[network.ClusterID]*clusterregistry.Shard{}, nets: map[network.ClusterID]network.NetworkID{}}
			for c := 1; c <= clusters; c++ {
				fmt.Fprintf(&mesh, "  network%d: {endpoints: [{fromRegistry: cluster%d}], gateways: [{address: 192.0.2.%d, port: 15443}]}\n", c, c, c)
				src.nets[network.ClusterID(fmt.Sprintf("cluster%d", c))] = network.NetworkID(fmt.Sprintf("network%d", c))
			}
			mn, err := network.ParseMeshNetworks([]byte(mesh.String()))
			if err != nil {
				b.Fatal(err)
			}
			nets, err := network.Compile(mn)
			if err != nil {
				b.Fatal(err)
			}
			for s := range services {
				host := fmt.Sprintf("svc%d.ns%d.svc.cluster.local", s, s%10)
				shards := map[network.ClusterID]*clusterregistry.Shard{}
				for c := 1; c <= clusters; c++ {
					id := network.ClusterID(fmt.Sprintf("cluster%d", c))
					sh := &clusterregistry.Shard{
						Service: clusterregistry.Service{Host: host, Name: fmt.Sprintf("svc%d", s), Namespace: fmt.Sprintf("ns%d", s%10), Cluster: id,
							Ports: []clusterregistry.ServicePort{{Name: "http", Port: 8080}}},
						Endpoints: map[int32][]clusterregistry.Endpoint{},
					}
					for e := range endpoints {
						sh.Endpoints[8080] = append(sh.Endpoints[8080], clusterregistry.Endpoint{
							Address: fmt.Sprintf("10.%d.%d.%d", c, s/25, s%25*10+e), Port: 8080, Ready: true,
							Cluster: id, TLSMode: network.TLSModeIstio,
							Locality: &clusterregistry.Locality{Region: "region", Zone: fmt.Sprintf("zone%d", c)},
						})
					}
					shards[id] = sh
				}
				src.shards[host] = shards
			}
			total := clusters * services * endpoints
			var heap uint64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				s, err := New(Options{
					Source: src, Networks: func() *network.Networks { return nets },
					DebounceAfter: time.Millisecond, DebounceMax: time.Second, Logger: slog.New(slog.DiscardHandler),
				})
				if err != nil {
					b.Fatal(err)
				}
				s.push(time.Now())
				for c := 1; c <= clusters; c++ {
					n := xdstest.Node(fmt.Sprintf("sidecar~10.9.0.%d~probe.ns~ns.svc.cluster.local", c), fmt.Sprintf("network%d", c))
					if _, err := s.ensureGroup(n, keep); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				if got := s.groups[ViewOf(xdstest.Node("sidecar~10.9.0.1~probe.ns~ns.svc.cluster.local", "network1")).Key()].edsSent.Len(); got != services {
					b.Fatalf("a group holds %d assignments, want %d", got, services)
				}
				heap += after.HeapAlloc - before.HeapAlloc
				runtime.KeepAlive(s)
			}
			n := uint64(b.N)
			b.ReportMetric(float64(heap/n)/(1<<20), "heap-MiB")
			b.ReportMetric(float64(heap/n)/float64(total), "heap-B/endpoint")
		})
	}
}
