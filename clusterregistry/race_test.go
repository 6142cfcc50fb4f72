package clusterregistry

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	listersv1 "k8s.io/client-go/listers/core/v1"
)

// The worker reads pods and nodes from the informers' caches while it builds a
// service's shard. An event for one of them that arrives after that read, while the
// shard is still being built, must still rebuild the service: otherwise the shard keeps
// what the worker read, for as long as nothing else touches the service.
//
// These tests drive that interleaving by hand. The worker reads stores filled by the
// test through listers that, right after one chosen read, change the store and call the
// handler the informer would call. Then the worker runs until its queue is empty, and
// the shard must show the change.
func TestEventDuringRebuildIsNotLost(t *testing.T) {
	const host = "web.sample.svc.cluster.local"
	ready, notReadyPod := pod("web-1", "node-a", nil), pod("web-1", "node-a", nil)
	notReadyPod.ResourceVersion = "2"
	notReadyPod.Status.Conditions[0].Status = corev1.ConditionFalse
	notReady := cached(t, notReadyPod)
	unscheduled := pod("web-1", "", nil)
	zoneB := node("node-a", "region-1", "zone-b")
	zoneB.ResourceVersion = "2"

	tests := []struct {
		name string
		objs []any
		// During the worker's read of this pod or node, event changes it.
		readPod, readNode string
		event             func(s *stores, c *Cluster, ws *watchSet)
		wantReady         bool
		wantZone          string
	}{
		{
			name:    "pod first seen",
			objs:    []any{slice("web-x", "web", podEndpoint("10.0.0.1", "web-1", "node-a")), node("node-a", "region-1", "zone-a")},
			readPod: "web-1",
			event: func(s *stores, c *Cluster, ws *watchSet) {
				p := cached(t, ready)
				s.pods.Add(p)
				c.podEvent(ws, p)
			},
			wantReady: true, wantZone: "zone-a",
		},
		{
			name:    "pod turns not ready",
			objs:    []any{slice("web-x", "web", podEndpoint("10.0.0.1", "web-1", "node-a")), ready, node("node-a", "region-1", "zone-a")},
			readPod: "web-1",
			event: func(s *stores, c *Cluster, ws *watchSet) {
				s.pods.Update(notReady)
				c.podEvent(ws, notReady)
			},
			wantReady: false, wantZone: "zone-a",
		},
		{
			name:     "node first seen, named by the slice",
			objs:     []any{slice("web-x", "web", podEndpoint("10.0.0.1", "web-1", "node-a")), unscheduled},
			readNode: "node-a",
			event: func(s *stores, c *Cluster, ws *watchSet) {
				n := node("node-a", "region-1", "zone-a")
				s.nodes.Add(n)
				c.nodeEvent(ws, n)
			},
			wantReady: true, wantZone: "zone-a",
		},
		{
			name:     "node first seen, named by the pod",
			objs:     []any{slice("web-x", "web", podEndpoint("10.0.0.1", "web-1", "")), ready},
			readNode: "node-a",
			event: func(s *stores, c *Cluster, ws *watchSet) {
				n := node("node-a", "region-1", "zone-a")
				s.nodes.Add(n)
				c.nodeEvent(ws, n)
			},
			wantReady: true, wantZone: "zone-a",
		},
		{
			name:     "node changes zone",
			objs:     []any{slice("web-x", "web", podEndpoint("10.0.0.1", "web-1", "")), ready, node("node-a", "region-1", "zone-a")},
			readNode: "node-a",
			event: func(s *stores, c *Cluster, ws *watchSet) {
				s.nodes.Update(zoneB)
				c.nodeEvent(ws, zoneB)
			},
			wantReady: true, wantZone: "zone-b",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStores()
			s.add(t, append([]any{service("web")}, tt.objs...)...)
			ws := s.watchSet()
			c := newTestCluster(t, ws)
			fired := false
			after := func(kind, name string) {
				if fired || (kind == "pod" && name != tt.readPod) || (kind == "node" && name != tt.readNode) {
					return
				}
				fired = true
				tt.event(s, c, ws)
			}
			ws.pods = hookedPods{ws.pods, after}
			ws.nodes = hookedNodes{ws.nodes, after}

			c.queue.Add(key("web"))
			drain(c)

			if !fired {
				t.Fatal("the worker never read what the event changes")
			}
			if err := oneEndpoint(c.shard(host), tt.wantReady, tt.wantZone); err != nil {
				t.Error(err)
			}
		})
	}
}

// oneEndpoint checks that shard serves one endpoint, 10.0.0.1, on port 80.
func oneEndpoint(shard *Shard, ready bool, zone string) error {
	if shard == nil {
		return fmt.Errorf("no shard")
	}
	eps := shard.Endpoints[80]
	if len(eps) != 1 || eps[0].Address != "10.0.0.1" {
		return fmt.Errorf("endpoints = %+v, want 10.0.0.1 only", eps)
	}
	if eps[0].Ready != ready || eps[0].Locality.Zone != zone {
		return fmt.Errorf("endpoint ready=%v zone=%q, want ready=%v zone=%q", eps[0].Ready, eps[0].Locality.Zone, ready, zone)
	}
	return nil
}

// hookedPods calls after once a Get of a pod has read the store.
type hookedPods struct {
	podGetter
	after func(kind, name string)
}

func (l hookedPods) getPod(namespace, name string) *cachedPod {
	p := l.podGetter.getPod(namespace, name)
	l.after("pod", name)
	return p
}

// hookedNodes calls after once a Get of a node has read the store.
type hookedNodes struct {
	listersv1.NodeLister
	after func(kind, name string)
}

func (l hookedNodes) Get(name string) (*corev1.Node, error) {
	n, err := l.NodeLister.Get(name)
	l.after("node", name)
	return n, err
}
