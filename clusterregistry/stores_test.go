package clusterregistry

import (
	"log/slog"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// stores are informer caches that a test fills by hand. A test stands in for the
// informer: it changes a store, then calls the handler the informer would call.
type stores struct {
	services, slices, pods, nodes, namespaces cache.Indexer
	// trim, when set, transforms objects as the informers do before they are stored.
	trim *trimmer
}

func newStores() *stores {
	return &stores{
		services:   cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
		slices:     cache.NewIndexer(cache.MetaNamespaceKeyFunc, sliceIndexers()),
		pods:       cache.NewIndexer(cache.MetaNamespaceKeyFunc, podIndexers()),
		nodes:      cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
		namespaces: cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
	}
}

// watchSet returns a watchSet reading the stores, with no informers behind it.
func (s *stores) watchSet() *watchSet {
	return &watchSet{
		services:   listersv1.NewServiceLister(s.services),
		pods:       podStore{s.pods},
		podCache:   s.pods,
		nodes:      listersv1.NewNodeLister(s.nodes),
		namespaces: listersv1.NewNamespaceLister(s.namespaces),
		slices:     s.slices,
	}
}

// add puts objects in their stores, as an informer's initial list would, without
// calling handlers.
func (s *stores) add(t *testing.T, objs ...any) {
	t.Helper()
	for _, obj := range objs {
		var store cache.Indexer
		var transform cache.TransformFunc
		switch obj.(type) {
		case *corev1.Service:
			store = s.services
			if s.trim != nil {
				transform = s.trim.service
			}
		case *discoveryv1.EndpointSlice:
			// The slice informer's cache only ever holds slices as cachedSlice.
			store, transform = s.slices, trimmerOf(s.trim).slice
		case *corev1.Pod:
			// The pod informer's cache only ever holds pods as cachedPod.
			store, transform = s.pods, trimmerOf(s.trim).pod
		case *corev1.Node:
			store = s.nodes
			if s.trim != nil {
				transform = s.trim.node
			}
		case *corev1.Namespace:
			store = s.namespaces
		default:
			t.Fatalf("no store for %T", obj)
		}
		if transform != nil {
			var err error
			if obj, err = transform(obj); err != nil {
				t.Fatal(err)
			}
		}
		if err := store.Update(obj); err != nil {
			t.Fatal(err)
		}
	}
}

// trimmerOf returns trim, or a trimmer of its own if trim is nil.
func trimmerOf(trim *trimmer) *trimmer {
	if trim == nil {
		return newTrimmer(newInterner(0))
	}
	return trim
}

// cached returns p as the pod informer caches it.
func cached(t *testing.T, p *corev1.Pod) *cachedPod {
	t.Helper()
	out, err := trimmerOf(nil).pod(p)
	if err != nil {
		t.Fatal(err)
	}
	return out.(*cachedPod)
}

// cachedSliceOf returns s as the slice informer caches it.
func cachedSliceOf(t *testing.T, s *discoveryv1.EndpointSlice) *cachedSlice {
	t.Helper()
	out, err := trimmerOf(nil).slice(s)
	if err != nil {
		t.Fatal(err)
	}
	return out.(*cachedSlice)
}

// newTestCluster returns a cluster whose worker reads ws and whose steps the test
// runs by hand: nothing runs in the background.
func newTestCluster(t *testing.T, ws *watchSet) *Cluster {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	c := &Cluster{
		id: "c1",
		opts: clusterOptions{
			namespace: "istio-system",
			host: func(k types.NamespacedName) string {
				return k.Name + "." + k.Namespace + ".svc.cluster.local"
			},
			log:  log,
			sink: &recordingSink{},
		},
		log: log,
		queue: workqueue.NewTypedRateLimitingQueue(
			workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName]()),
		ws:      ws,
		synced:  make(chan struct{}),
		shards:  map[string]*Shard{},
		exports: map[types.NamespacedName]Export{},
	}
	t.Cleanup(c.queue.ShutDown)
	return c
}

// recordingSink records what a cluster reports.
type recordingSink struct {
	mu       sync.Mutex
	notified []string // hosts, in the order notified
	changes  int
}

func (s *recordingSink) notify(_ *Cluster, hosts []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notified = append(s.notified, hosts...)
}

func (*recordingSink) exportsChanged(*Cluster, types.NamespacedName) {}

func (s *recordingSink) changed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.changes++
}

// drain runs the worker until the queue is empty.
func drain(c *Cluster) {
	for c.queue.Len() > 0 {
		c.processNext()
	}
}
