package xdsserver

import (
	"fmt"
	"runtime"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// BenchmarkSotwSubscriptionMemory reports the heap one state-of-the-world stream
// holds for its subscription to every one of 2,000 assignments, as Envoy with a
// wildcard CDS subscribes, when the group's streams all name the same ones.
func BenchmarkSotwSubscriptionMemory(b *testing.B) {
	const names, streams = 2000, 200
	f := &xdsFixture{t: &testing.T{}, group: &testGroup{}, hosts: map[string][]string{}}
	var all []string
	for i := range names {
		h := fmt.Sprintf("svc-%d.ns.svc.cluster.local", i)
		f.hosts[h] = []string{"10.0.0.1"}
		all = append(all, clusterName(h))
	}
	f.change(hostA, "10.0.0.1")
	s, err := New(Options{Groups: GroupsFunc(func(_ *corev3.Node, _ func(Group)) (Group, error) { return f.group, nil })})
	if err != nil {
		b.Fatal(err)
	}
	var perStream float64
	for b.Loop() {
		held := make([]*stream, 0, streams)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for range streams {
			st := s.openStream("ads", false, "")
			st.group, st.feed, st.flushing = f.group, &f.group.feed, true // no sender: next is called here
			// Each stream gets its own copy of the names, as each request decodes them.
			req := &discoverygrpc.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: append([]string(nil), all...)}
			st.sotwRequest(resourcev3.EndpointType, req)
			st.mu.Lock()
			st.next()
			st.mu.Unlock()
			held = append(held, st)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perStream = float64(after.HeapAlloc-before.HeapAlloc) / streams
		runtime.KeepAlive(held)
		for _, st := range held {
			s.streamsMu.Lock()
			delete(s.streams, st)
			s.streamsMu.Unlock()
		}
	}
	b.ReportMetric(perStream/1024, "KiB/stream")
}
