package clusterregistry

import (
	"reflect"
	"sort"
	"testing"

	"k8s.io/client-go/tools/cache"
)

// queued takes every key off c's queue, sorted.
func queued(c *Cluster) []string {
	var out []string
	for c.queue.Len() > 0 {
		k, _ := c.queue.Get()
		out = append(out, k.String())
		c.queue.Done(k)
	}
	sort.Strings(out)
	return out
}

// TestEventsQueueTheirServices checks which services each informer event queues,
// found through the caches' indexes as they are when the handler runs.
func TestEventsQueueTheirServices(t *testing.T) {
	moved := slice("web-x", "canary", podEndpoint("10.0.0.1", "web-1", ""))
	moved.ResourceVersion = "2"
	objs := []any{
		service("web"), service("canary"), service("other"),
		slice("web-x", "web", podEndpoint("10.0.0.1", "web-1", ""), podEndpoint("10.0.0.2", "web-2", "node-a")),
		slice("canary-x", "canary", podEndpoint("10.0.0.1", "web-1", "")),
		slice("other-x", "other", podEndpoint("10.0.0.3", "other-1", "node-b")),
		pod("web-1", "node-c", nil), pod("web-2", "", nil), pod("other-1", "", nil),
	}
	tests := []struct {
		name  string
		event func(c *Cluster, ws *watchSet)
		want  []string
	}{
		{
			name: "a pod queues every service whose slices reference it",
			event: func(c *Cluster, ws *watchSet) {
				eventHandler(func(obj any) { c.podEvent(ws, obj) }, false).OnAdd(cached(t, pod("web-1", "node-c", nil)), false)
			},
			want: []string{"sample/canary", "sample/web"},
		},
		{
			name: "a deleted pod, seen as a tombstone",
			event: func(c *Cluster, ws *watchSet) {
				eventHandler(func(obj any) { c.podEvent(ws, obj) }, false).OnDelete(
					cache.DeletedFinalStateUnknown{Key: "sample/other-1", Obj: cached(t, pod("other-1", "", nil))})
			},
			want: []string{"sample/other"},
		},
		{
			name:  "a node queues the services whose slices name it",
			event: func(c *Cluster, ws *watchSet) { c.nodeEvent(ws, node("node-a", "", "")) },
			want:  []string{"sample/web"},
		},
		{
			name:  "a node queues the services whose slices reference a pod on it",
			event: func(c *Cluster, ws *watchSet) { c.nodeEvent(ws, node("node-c", "", "")) },
			want:  []string{"sample/canary", "sample/web"},
		},
		{
			name:  "a node nothing runs on queues nothing",
			event: func(c *Cluster, ws *watchSet) { c.nodeEvent(ws, node("node-z", "", "")) },
		},
		{
			name: "a slice moved to another service queues both",
			event: func(c *Cluster, ws *watchSet) {
				eventHandler(func(obj any) { c.sliceEvent(ws, obj) }, true).OnUpdate(
					cachedSliceOf(t, slice("web-x", "web", podEndpoint("10.0.0.1", "web-1", ""))), cachedSliceOf(t, moved))
			},
			want: []string{"sample/canary", "sample/web"},
		},
		{
			name: "a resync that changed nothing queues nothing",
			event: func(c *Cluster, ws *watchSet) {
				s := cachedSliceOf(t, slice("web-x", "web"))
				eventHandler(func(obj any) { c.sliceEvent(ws, obj) }, true).OnUpdate(s, s)
			},
		},
		{
			name:  "the system namespace queues every service",
			event: func(c *Cluster, ws *watchSet) { c.namespaceEvent(ws, systemNamespace("net-1")) },
			want:  []string{"sample/canary", "sample/other", "sample/web"},
		},
		{
			name:  "a service queues itself",
			event: func(c *Cluster, ws *watchSet) { c.serviceEvent(ws, service("other")) },
			want:  []string{"sample/other"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStores()
			s.add(t, objs...)
			ws := s.watchSet()
			c := newTestCluster(t, ws)
			tt.event(c, ws)
			if got := queued(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("queued %v, want %v", got, tt.want)
			}
		})
	}
}

// TestPodIndexGroupsPods checks that the slice index by pod holds one value per
// group of pods (a ReplicaSet's), and that any pod of the group finds the slice.
func TestPodIndexGroupsPods(t *testing.T) {
	s := newStores()
	sl := slice("web-x", "web",
		podEndpoint("10.0.0.1", "web-5d8f-abcde", ""), podEndpoint("10.0.0.2", "web-5d8f-fghij", ""),
		podEndpoint("10.0.0.3", "web-77c1-klmno", ""), podEndpoint("10.0.0.4", "solo", ""))
	s.add(t, sl)
	if got, want := s.slices.ListIndexFuncValues(podIndex), []string{"sample/solo", "sample/web-5d8f", "sample/web-77c1"}; !reflect.DeepEqual(sortedCopy(got), want) {
		t.Errorf("index values %v, want %v", got, want)
	}
	for _, name := range []string{"web-5d8f-abcde", "web-5d8f-zzzzz", "web-77c1-klmno", "solo"} {
		objs, err := s.slices.ByIndex(podIndex, podGroup(testNS, name))
		if err != nil || len(objs) != 1 {
			t.Errorf("pod %s finds %d slices (%v), want web-x", name, len(objs), err)
		}
	}
}

func sortedCopy(in []string) []string {
	out := append([]string(nil), in...)
	sort.Strings(out)
	return out
}
