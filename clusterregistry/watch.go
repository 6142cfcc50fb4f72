package clusterregistry

import (
	"context"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/horizon-mesh/horizon/network"
)

// Indexes of the informer caches. An event handler finds the services an object
// affects through them, and the informer updates them before it calls the handler:
// whatever a worker read before an event, the event re-queues every service that
// depends on the object as it is now, so the worker runs again after it.
const (
	// serviceIndex: EndpointSlices by "namespace/service".
	serviceIndex = "service"
	// podIndex: EndpointSlices by the podGroup of the pods their endpoints
	// reference.
	podIndex = "pod"
	// nodeIndex: EndpointSlices by the nodeName of their endpoints, and Pods by
	// spec.nodeName.
	nodeIndex = "node"
)

// watchSet is one generation of a cluster's informers and the listers over their
// caches. A cluster starts with one; when it answers again after being stale, it
// lists everything into a fresh one, whose caches cannot have missed anything, and
// drops the old one.
//
// Nodes and Namespaces are watched cluster-wide. Services, EndpointSlices and Pods
// are watched per scope (scope.go): one cluster-wide scope when the cluster's
// discovery selectors select everything, else one scope per selected namespace, so
// that an unselected namespace is neither listed nor watched.
type watchSet struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	synced chan struct{} // closed once every handler has been given the initial list

	factory        informers.SharedInformerFactory // Nodes and Namespaces
	handlersSynced []cache.InformerSynced
	nodes          listersv1.NodeLister
	namespaces     listersv1.NamespaceLister

	// The namespaced caches, across the scopes.
	services listersv1.ServiceLister
	pods     podGetter
	podCache indexReader // the pods (*cachedPod), indexed by nodeIndex
	slices   indexReader // the EndpointSlices (*cachedSlice), indexed by sliceIndexers

	// reconcile holds one signal that the scopes should be brought in line with the
	// selectors and the namespaces' labels.
	reconcile chan struct{}
	scopesMu  sync.RWMutex
	scopes    map[string]*scope // by namespace, "" for every namespace; guarded by scopesMu
	selected  map[string]bool   // the selected namespaces, nil for all; guarded by scopesMu
}

// indexReader is the part of a cache.Indexer the handlers and the translation read.
type indexReader interface {
	ByIndex(indexName, indexedValue string) ([]any, error)
}

// newWatchSet sets up (without starting) informers whose handlers feed c's queue.
func (c *Cluster) newWatchSet() (*watchSet, error) {
	ctx, cancel := context.WithCancel(c.ctx)
	w := &watchSet{
		ctx:       ctx,
		cancel:    cancel,
		synced:    make(chan struct{}),
		factory:   informers.NewSharedInformerFactory(c.client, 0),
		reconcile: make(chan struct{}, 1),
		scopes:    map[string]*scope{},
	}
	w.services = scopedServices{w}
	w.pods = scopedPods{w}
	w.podCache = scopedIndex{w, func(s *scope) cache.Indexer { return s.podCache }}
	w.slices = scopedIndex{w, func(s *scope) cache.Indexer { return s.slices }}
	if err := c.setupInformers(w); err != nil {
		cancel()
		return nil, err
	}
	return w, nil
}

// setupInformers sets up the cluster-wide informers of w.
func (c *Cluster) setupInformers(w *watchSet) error {
	node := w.factory.Core().V1().Nodes()
	ns := w.factory.Core().V1().Namespaces()
	w.nodes, w.namespaces = node.Lister(), ns.Lister()
	if err := ns.Informer().SetTransform(trimNamespace); err != nil {
		return err
	}
	if err := node.Informer().SetTransform(c.trimmer().node); err != nil {
		return err
	}
	return c.addHandlers(w, &w.handlersSynced, []informerHandler{
		{node.Informer(), c.nodeEvent, false},
		{ns.Informer(), c.namespaceEvent, true},
	})
}

// trimmer returns the registry's trimmer (trim.go), or a cluster's own in tests that
// build a Cluster without one.
func (c *Cluster) trimmer() *trimmer {
	if c.opts.trim != nil {
		return c.opts.trim
	}
	return newTrimmer(newInterner(0))
}

// setupScope sets up the namespaced informers of s.
func (c *Cluster) setupScope(w *watchSet, s *scope) error {
	svc := s.factory.Core().V1().Services()
	// Pods and slices are only looked up by key and by the indexes below, never
	// listed by namespace: their informers go without the factory's namespace
	// index, a set entry per object less.
	pod := s.factory.InformerFor(&corev1.Pod{}, func(cs kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return coreinformers.NewPodInformer(cs, s.ns, resync, podIndexers())
	})
	slice := s.factory.InformerFor(&discoveryv1.EndpointSlice{}, func(cs kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return discoveryinformers.NewEndpointSliceInformer(cs, s.ns, resync, sliceIndexers())
	})
	s.services = svc.Lister()
	s.slices = slice.GetIndexer()
	s.podCache = pod.GetIndexer()
	s.pods = podStore{s.podCache}

	trim := c.trimmer()
	for _, t := range []struct {
		inf cache.SharedIndexInformer
		fn  cache.TransformFunc
	}{{svc.Informer(), trim.service}, {slice, trim.slice}, {pod, trim.pod}} {
		if err := t.inf.SetTransform(t.fn); err != nil {
			return err
		}
	}
	if err := c.addHandlers(w, &s.handlersSynced, []informerHandler{
		{svc.Informer(), c.serviceEvent, false},
		{slice, c.sliceEvent, true},
		{pod, c.podEvent, false},
	}); err != nil {
		return err
	}
	if c.opts.mcs {
		return c.setupExports(s)
	}
	return nil
}

type informerHandler struct {
	inf cache.SharedIndexInformer
	fn  func(w *watchSet, obj any)
	// old: an update also calls fn with the old object (it may have affected
	// other services than the new one).
	old bool
}

// addHandlers registers the handlers and appends to synced what says each has been
// given every object of its informer's initial list.
func (c *Cluster) addHandlers(w *watchSet, synced *[]cache.InformerSynced, handlers []informerHandler) error {
	for _, h := range handlers {
		reg, err := h.inf.AddEventHandler(eventHandler(func(obj any) { h.fn(w, obj) }, h.old))
		if err != nil {
			return err
		}
		// The registration, not the informer, says when this handler has been given
		// every object of the initial list.
		*synced = append(*synced, reg.HasSynced)
		if err := h.inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			c.recordError(err)
		}); err != nil {
			return err
		}
	}
	return nil
}

// eventHandler calls fn with each object added, updated or deleted, unwrapping
// tombstones and skipping resyncs that changed nothing; with old, an update also
// calls fn with the old object.
func eventHandler(fn func(obj any), old bool) cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: fn,
		UpdateFunc: func(prev, cur any) {
			if o, n := resourceVersion(prev), resourceVersion(cur); o != "" && o == n {
				return // resync with nothing changed
			}
			if old {
				fn(prev)
			}
			fn(cur)
		},
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			fn(obj)
		},
	}
}

// resourceVersion returns the resource version of an informer's object; empty if it
// has none.
func resourceVersion(obj any) string {
	switch o := obj.(type) {
	case *cachedPod:
		return o.ResourceVersion
	case *cachedSlice:
		return o.ResourceVersion
	case metav1.Object:
		return o.GetResourceVersion()
	}
	return ""
}

// start runs the informers and the goroutine that keeps the scopes in line; synced
// is closed once the cluster-wide informers and the first scopes have synced.
func (w *watchSet) start(c *Cluster) {
	w.factory.Start(w.ctx.Done())
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if !cache.WaitForCacheSync(w.ctx.Done(), w.handlersSynced...) {
			return
		}
		first := true
		for {
			alive, superseded := c.reconcileScopes(w, first)
			if !alive {
				return
			}
			if superseded {
				continue // a newer change came while the scopes synced
			}
			if first {
				close(w.synced)
				first = false
			}
			select {
			case <-w.ctx.Done():
				return
			case <-w.reconcile:
			}
		}
	}()
}

// stop stops the informers and waits for them.
func (w *watchSet) stop() {
	w.cancel()
	w.wg.Wait()
	w.scopesMu.Lock()
	scopes := w.scopes
	w.scopes = map[string]*scope{}
	w.scopesMu.Unlock()
	for _, s := range scopes {
		s.stop()
	}
	w.factory.Shutdown()
}

// watches returns the informers the worker reads.
func (c *Cluster) watches() *watchSet {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.ws
}

// sliceIndexers index EndpointSlices by their service, the pods their endpoints
// reference and the nodes their endpoints name.
func sliceIndexers() cache.Indexers {
	return cache.Indexers{
		serviceIndex: func(obj any) ([]string, error) {
			s, ok := obj.(*cachedSlice)
			if !ok || s.Service == "" {
				return nil, nil
			}
			return []string{s.Namespace + "/" + s.Service}, nil
		},
		podIndex: func(obj any) ([]string, error) {
			s, ok := obj.(*cachedSlice)
			if !ok {
				return nil, nil
			}
			var out []string
			for _, ep := range s.Endpoints {
				if key, ok := ep.pod(); ok {
					if g := podGroup(key.Namespace, key.Name); len(out) == 0 || out[len(out)-1] != g {
						out = append(out, g)
					}
				}
			}
			return out, nil
		},
		nodeIndex: func(obj any) ([]string, error) {
			s, ok := obj.(*cachedSlice)
			if !ok {
				return nil, nil
			}
			var out []string
			for _, ep := range s.Endpoints {
				if ep.NodeName != "" {
					out = append(out, ep.NodeName)
				}
			}
			return out, nil
		},
	}
}

// podIndexers index pods by the node they run on.
func podIndexers() cache.Indexers {
	return cache.Indexers{nodeIndex: func(obj any) ([]string, error) {
		p, ok := obj.(*cachedPod)
		if !ok || p.NodeName == "" {
			return nil, nil
		}
		return []string{p.NodeName}, nil
	}}
}

// podGroup is the podIndex value of pod namespace/name: namespace and the name
// without its last "-" segment, which the pods of one ReplicaSet or StatefulSet
// share. The index then holds a set of slices per workload rather than one per pod,
// a few hundred bytes per pod less. A pod's lookup can also name slices that
// reference only other pods of its group; their services are queued as well, and
// their rebuild changes nothing.
func podGroup(namespace, name string) string {
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		name = name[:i]
	}
	return namespace + "/" + name
}

// The event handlers of w's informers; obj is never a tombstone.

func (c *Cluster) serviceEvent(_ *watchSet, obj any) {
	if s, ok := obj.(*corev1.Service); ok {
		c.queue.Add(types.NamespacedName{Namespace: s.Namespace, Name: s.Name})
	}
}

func (c *Cluster) sliceEvent(_ *watchSet, obj any) {
	if s, ok := obj.(*cachedSlice); ok && s.Service != "" {
		c.queue.Add(types.NamespacedName{Namespace: s.Namespace, Name: s.Service})
	}
}

// podEvent re-queues the services whose slices reference the pod.
func (c *Cluster) podEvent(w *watchSet, obj any) {
	if p, ok := obj.(*cachedPod); ok {
		c.enqueueSlices(w, podIndex, podGroup(p.namespace(), p.name()))
	}
}

// nodeEvent re-queues the services with endpoints on the node: those whose slices
// name it, and those whose slices reference a pod on it (an endpoint's node is its
// pod's, when the pod names one).
func (c *Cluster) nodeEvent(w *watchSet, obj any) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	c.enqueueSlices(w, nodeIndex, n.Name)
	pods, _ := w.podCache.ByIndex(nodeIndex, n.Name)
	for _, obj := range pods {
		if p, ok := obj.(*cachedPod); ok {
			c.enqueueSlices(w, podIndex, podGroup(p.namespace(), p.name()))
		}
	}
}

// enqueueSlices queues the services of the slices that w's slice index names value.
func (c *Cluster) enqueueSlices(w *watchSet, index, value string) {
	slices, _ := w.slices.ByIndex(index, value)
	for _, obj := range slices {
		c.sliceEvent(w, obj)
	}
}

// namespaceEvent re-queues every service when the system namespace changed (it names
// their network), and a namespace's services when it has (or, as the old object of
// an update, had) a traffic-distribution annotation, which they inherit; and it has
// the scopes brought in line with the namespaces' labels.
func (c *Cluster) namespaceEvent(w *watchSet, obj any) {
	w.poke()
	n, ok := obj.(*corev1.Namespace)
	if !ok {
		return
	}
	if n.Name != c.opts.namespace {
		if _, has := n.Annotations[network.AnnotationTrafficDistribution]; has {
			svcs, _ := w.services.Services(n.Name).List(labels.Everything())
			for _, s := range svcs {
				c.queue.Add(types.NamespacedName{Namespace: s.Namespace, Name: s.Name})
			}
		}
		return
	}
	svcs, _ := w.services.List(labels.Everything())
	for _, s := range svcs {
		c.queue.Add(types.NamespacedName{Namespace: s.Namespace, Name: s.Name})
	}
}

// trimNamespace keeps only what Horizon reads of a namespace: its name, labels and
// traffic-distribution annotation.
func trimNamespace(obj any) (any, error) {
	n, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj, nil
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:            n.Name,
		UID:             n.UID,
		ResourceVersion: n.ResourceVersion,
		Labels:          n.Labels,
		Annotations:     distributionAnnotation(n.Annotations),
	}}, nil
}

// distributionAnnotation returns the traffic-distribution annotation of m alone; nil
// when m has none.
func distributionAnnotation(m map[string]string) map[string]string {
	v, ok := m[network.AnnotationTrafficDistribution]
	if !ok {
		return nil
	}
	return map[string]string{network.AnnotationTrafficDistribution: network.TruncateDistribution(v)}
}
