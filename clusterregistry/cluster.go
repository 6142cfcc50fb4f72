package clusterregistry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/horizon-mesh/horizon/network"
)

// Indexes of the informer caches. An event handler finds the services an object
// affects through them, and the informer updates them before it calls the handler:
// whatever a worker read before an event, the event re-queues every service that
// depends on the object as it is now, so the worker runs again after it.
const (
	// serviceIndex: EndpointSlices by "namespace/service".
	serviceIndex = "service"
	// podIndex: EndpointSlices by "namespace/name" of the pods their endpoints
	// reference.
	podIndex = "pod"
	// nodeIndex: EndpointSlices by the nodeName of their endpoints, and Pods by
	// spec.nodeName.
	nodeIndex = "node"
)

// syncMarker is queued once the caches have synced; when the worker reaches it, every
// key queued during the initial list has been processed. No Service has an empty
// namespace, so neither marker can collide with a real key.
var syncMarker = types.NamespacedName{}

// relistMarker tells the worker that a relisted watchSet waits in Cluster.handover.
var relistMarker = types.NamespacedName{Name: "relist"}

// clusterOptions is what a Cluster is given by the registry that owns it: its
// settings, and the sink it reports to. A Cluster knows nothing else of the registry.
type clusterOptions struct {
	// namespace is the system namespace; its network label names the network of the
	// cluster's endpoints.
	namespace string
	// syncTimeout is how long the initial sync may take before the cluster reports
	// that it timed out; zero: no limit.
	syncTimeout time.Duration
	// staleGrace is how long a stale cluster's shards are served before they are
	// withdrawn; zero: until it answers again.
	staleGrace time.Duration
	// probeInterval is how often a stale cluster is probed.
	probeInterval time.Duration
	// host names a service's host.
	host func(types.NamespacedName) string
	// log already names the cluster.
	log  *slog.Logger
	sink clusterSink
}

// clusterSink is where a Cluster reports. It is called from the cluster's worker and
// health goroutines, possibly concurrently, without the cluster's lock held; it must
// not block.
type clusterSink interface {
	// notify says that what c serves for hosts changed.
	notify(c *Cluster, hosts []string)
	// changed says that c's state changed: synced, timed out, failed, stale,
	// withdrawn or back.
	changed()
}

// Cluster is one Kubernetes cluster: its client, informers and the shards of every
// service it has. Its shards are rebuilt by one worker goroutine; one health
// goroutine marks it stale when it stops answering and relists it when it answers
// again (stale.go).
type Cluster struct {
	id     network.ClusterID
	source string
	server string
	token  string // only to scrub it from error text; never logged
	opts   clusterOptions
	log    *slog.Logger

	httpClient *http.Client
	dialer     *closingDialer
	client     kubernetes.Interface
	queue      workqueue.TypedRateLimitingInterface[types.NamespacedName]
	// suspect holds one signal that a dial or a list or watch failed; the health
	// goroutine then checks whether the cluster still answers.
	suspect chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	synced chan struct{} // closed when the initial sync is done

	mu sync.RWMutex
	// ws is the informers the worker reads; replaced only by the worker, when a relist
	// is handed over. Guarded by mu.
	ws *watchSet
	// handover is a relisted watchSet waiting for the worker; guarded by mu.
	handover    *handover
	stale       bool              // guarded by mu
	staleSince  time.Time         // guarded by mu
	withdrawn   bool              // guarded by mu; shards hidden
	shards      map[string]*Shard // host → shard; guarded by mu
	started     time.Time         // guarded by mu
	syncedAt    time.Time         // guarded by mu
	timedOut    bool              // guarded by mu
	lastErr     string            // guarded by mu
	lastErrAt   time.Time         // guarded by mu
	nsNetwork   network.NetworkID // guarded by mu
	endpointCnt int               // guarded by mu
}

func newCluster(opts clusterOptions, id network.ClusterID, source string, cfg *rest.Config) (*Cluster, error) {
	cfg = rest.CopyConfig(cfg)
	// A dialer of our own keeps client-go from handing us a shared, cached transport
	// and tracks every connection, so that stopping the cluster closes them all.
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	// A failed dial is the first sign of an unreachable server: client-go retries a
	// refused watch by itself without reporting it to the watch error handler.
	suspect := make(chan struct{}, 1)
	dialer := newClosingDialer(func(ctx context.Context, netw, address string) (net.Conn, error) {
		conn, err := dial(ctx, netw, address)
		if err != nil && ctx.Err() == nil {
			poke(suspect)
		}
		return conn, err
	})
	cfg.Dial = dialer.DialContext
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("build HTTP client for cluster %q: %w", id, err)
	}
	client, err := kubernetes.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("build client for cluster %q: %w", id, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cluster{
		ctx:        ctx,
		cancel:     cancel,
		id:         id,
		source:     source,
		server:     cfg.Host,
		token:      cfg.BearerToken,
		opts:       opts,
		log:        opts.log,
		httpClient: hc,
		dialer:     dialer,
		client:     client,
		suspect:    suspect,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
			workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "cluster-" + string(id)}),
		synced: make(chan struct{}),
		shards: map[string]*Shard{},
	}
	ws, err := c.newWatchSet()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("set up informers for cluster %q: %w", id, err)
	}
	c.ws = ws
	return c, nil
}

// watchSet is one generation of a cluster's informers and the listers over their
// caches. A cluster starts with one; when it answers again after being stale, it
// lists everything into a fresh one, whose caches cannot have missed anything, and
// drops the old one.
type watchSet struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	synced chan struct{} // closed once every handler has been given the initial list

	factory        informers.SharedInformerFactory
	nsFactory      informers.SharedInformerFactory
	handlersSynced []cache.InformerSynced
	services       listersv1.ServiceLister
	pods           listersv1.PodLister
	podCache       cache.Indexer // the pods, indexed by nodeIndex
	nodes          listersv1.NodeLister
	namespaces     listersv1.NamespaceLister
	slices         cache.Indexer
}

// newWatchSet sets up (without starting) informers whose handlers feed c's queue.
func (c *Cluster) newWatchSet() (*watchSet, error) {
	ctx, cancel := context.WithCancel(c.ctx)
	w := &watchSet{
		ctx:     ctx,
		cancel:  cancel,
		synced:  make(chan struct{}),
		factory: informers.NewSharedInformerFactory(c.client, 0),
		nsFactory: informers.NewSharedInformerFactoryWithOptions(c.client, 0,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", c.opts.namespace).String()
			})),
	}
	if err := c.setupInformers(w); err != nil {
		cancel()
		return nil, err
	}
	return w, nil
}

func (c *Cluster) setupInformers(w *watchSet) error {
	svc := w.factory.Core().V1().Services()
	pod := w.factory.Core().V1().Pods()
	node := w.factory.Core().V1().Nodes()
	slice := w.factory.Discovery().V1().EndpointSlices()
	ns := w.nsFactory.Core().V1().Namespaces()
	w.services, w.pods, w.nodes, w.namespaces = svc.Lister(), pod.Lister(), node.Lister(), ns.Lister()
	w.slices = slice.Informer().GetIndexer()
	w.podCache = pod.Informer().GetIndexer()

	if err := pod.Informer().SetTransform(trimPod); err != nil {
		return err
	}
	if err := pod.Informer().AddIndexers(podIndexers()); err != nil {
		return err
	}
	if err := slice.Informer().AddIndexers(sliceIndexers()); err != nil {
		return err
	}

	handlers := []struct {
		inf cache.SharedIndexInformer
		fn  func(w *watchSet, obj any)
		// old: an update also calls fn with the old object (it may have affected
		// other services than the new one).
		old bool
	}{
		{svc.Informer(), c.serviceEvent, false},
		{slice.Informer(), c.sliceEvent, true},
		{pod.Informer(), c.podEvent, false},
		{node.Informer(), c.nodeEvent, false},
		{ns.Informer(), c.namespaceEvent, false},
	}
	for _, h := range handlers {
		fn := func(obj any) { h.fn(w, obj) }
		reg, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: fn,
			UpdateFunc: func(old, cur any) {
				if o, ok := old.(metav1.Object); ok {
					if n, ok := cur.(metav1.Object); ok && o.GetResourceVersion() == n.GetResourceVersion() {
						return // resync with nothing changed
					}
				}
				if h.old {
					fn(old)
				}
				fn(cur)
			},
			DeleteFunc: func(obj any) {
				if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = t.Obj
				}
				fn(obj)
			},
		})
		if err != nil {
			return err
		}
		// The registration, not the informer, says when this handler has been given
		// every object of the initial list.
		w.handlersSynced = append(w.handlersSynced, reg.HasSynced)
		if err := h.inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			c.recordError(err)
		}); err != nil {
			return err
		}
	}
	return nil
}

// sliceIndexers index EndpointSlices by their service, the pods their endpoints
// reference and the nodes their endpoints name.
func sliceIndexers() cache.Indexers {
	return cache.Indexers{
		serviceIndex: func(obj any) ([]string, error) {
			s, ok := obj.(*discoveryv1.EndpointSlice)
			if !ok {
				return nil, nil
			}
			name := s.Labels[discoveryv1.LabelServiceName]
			if name == "" {
				return nil, nil
			}
			return []string{s.Namespace + "/" + name}, nil
		},
		podIndex: func(obj any) ([]string, error) {
			s, ok := obj.(*discoveryv1.EndpointSlice)
			if !ok {
				return nil, nil
			}
			var out []string
			for _, ep := range s.Endpoints {
				if key, ok := endpointPod(s, ep); ok {
					out = append(out, key.String())
				}
			}
			return out, nil
		},
		nodeIndex: func(obj any) ([]string, error) {
			s, ok := obj.(*discoveryv1.EndpointSlice)
			if !ok {
				return nil, nil
			}
			var out []string
			for _, ep := range s.Endpoints {
				if ep.NodeName != nil && *ep.NodeName != "" {
					out = append(out, *ep.NodeName)
				}
			}
			return out, nil
		},
	}
}

// podIndexers index pods by the node they run on.
func podIndexers() cache.Indexers {
	return cache.Indexers{nodeIndex: func(obj any) ([]string, error) {
		p, ok := obj.(*corev1.Pod)
		if !ok || p.Spec.NodeName == "" {
			return nil, nil
		}
		return []string{p.Spec.NodeName}, nil
	}}
}

// endpointPod returns the pod an endpoint of slice s references, if any.
func endpointPod(s *discoveryv1.EndpointSlice, ep discoveryv1.Endpoint) (types.NamespacedName, bool) {
	ref := ep.TargetRef
	if ref == nil || ref.Kind != "Pod" {
		return types.NamespacedName{}, false
	}
	key := types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}
	if key.Namespace == "" {
		key.Namespace = s.Namespace
	}
	return key, true
}

// The event handlers of w's informers; obj is never a tombstone.

func (c *Cluster) serviceEvent(_ *watchSet, obj any) {
	if s, ok := obj.(*corev1.Service); ok {
		c.queue.Add(types.NamespacedName{Namespace: s.Namespace, Name: s.Name})
	}
}

func (c *Cluster) sliceEvent(_ *watchSet, obj any) {
	if s, ok := obj.(*discoveryv1.EndpointSlice); ok && s.Labels[discoveryv1.LabelServiceName] != "" {
		c.queue.Add(types.NamespacedName{Namespace: s.Namespace, Name: s.Labels[discoveryv1.LabelServiceName]})
	}
}

// podEvent re-queues the services whose slices reference the pod.
func (c *Cluster) podEvent(w *watchSet, obj any) {
	if p, ok := obj.(*corev1.Pod); ok {
		c.enqueueSlices(w, podIndex, p.Namespace+"/"+p.Name)
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
		if p, ok := obj.(*corev1.Pod); ok {
			c.enqueueSlices(w, podIndex, p.Namespace+"/"+p.Name)
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

// namespaceEvent re-queues every service: the system namespace names their network.
func (c *Cluster) namespaceEvent(w *watchSet, _ any) {
	svcs, _ := w.services.List(labels.Everything())
	for _, s := range svcs {
		c.queue.Add(types.NamespacedName{Namespace: s.Namespace, Name: s.Name})
	}
}

// start runs the informers; synced is closed once they have synced.
func (w *watchSet) start() {
	w.factory.Start(w.ctx.Done())
	w.nsFactory.Start(w.ctx.Done())
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if cache.WaitForCacheSync(w.ctx.Done(), w.handlersSynced...) {
			close(w.synced)
		}
	}()
}

// stop stops the informers and waits for them.
func (w *watchSet) stop() {
	w.cancel()
	w.factory.Shutdown()
	w.nsFactory.Shutdown()
	w.wg.Wait()
}

// watches returns the informers the worker reads.
func (c *Cluster) watches() *watchSet {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.ws
}

// start runs the informers, the worker and the health check until stop.
func (c *Cluster) start() {
	ctx := c.ctx
	c.mu.Lock()
	c.started = time.Now()
	ws := c.ws
	c.mu.Unlock()
	ws.start()
	c.wg.Add(3)
	go func() {
		defer c.wg.Done()
		select {
		case <-ws.synced:
			c.queue.Add(syncMarker)
		case <-ctx.Done():
		}
	}()
	go func() {
		defer c.wg.Done()
		for c.processNext() {
		}
	}()
	go func() {
		defer c.wg.Done()
		c.watchHealth(ctx)
	}()
	if t := c.opts.syncTimeout; t > 0 {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			timer := time.NewTimer(t)
			defer timer.Stop()
			select {
			case <-ctx.Done():
			case <-c.synced:
			case <-timer.C:
				c.mu.Lock()
				c.timedOut = true
				lastErr := c.lastErr
				c.mu.Unlock()
				c.log.Warn("cluster did not sync in time; serving the others and retrying", "timeout", t, "lastError", lastErr)
				c.opts.sink.changed()
			}
		}()
	}
}

// stop stops the informers, the worker and the health check, waits for them and
// closes the cluster's connections.
func (c *Cluster) stop() {
	c.cancel()
	c.queue.ShutDown()
	c.wg.Wait()
	// Nothing else changes ws or handover now.
	c.mu.Lock()
	ws, h := c.ws, c.handover
	c.handover = nil
	c.mu.Unlock()
	ws.stop()
	if h != nil {
		h.ws.stop()
	}
	c.httpClient.CloseIdleConnections()
	c.dialer.Close()
}

// stopped is closed once stop has been called.
func (c *Cluster) stopped() <-chan struct{} { return c.ctx.Done() }

func (c *Cluster) hasSynced() bool {
	select {
	case <-c.synced:
		return true
	default:
		return false
	}
}

// recordError is the informers' watch error handler. It also asks the health
// goroutine to check a synced cluster. A stale cluster's informers fail until it
// answers again; the stale warning has said so once, so their errors are only
// recorded.
func (c *Cluster) recordError(err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	poke(c.suspect)
	msg := c.redact(err)
	c.mu.Lock()
	first := c.lastErr != msg
	stale := c.stale
	c.lastErr, c.lastErrAt = msg, time.Now()
	c.mu.Unlock()
	if stale {
		return
	}
	if first {
		c.log.Warn("list or watch failed", "error", msg)
	}
	c.opts.sink.changed()
}

// redact returns err's text without the cluster's token.
func (c *Cluster) redact(err error) string {
	msg := err.Error()
	if c.token != "" {
		msg = strings.ReplaceAll(msg, c.token, "[redacted]")
	}
	return msg
}

func (c *Cluster) processNext() bool {
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	switch key {
	case syncMarker:
		c.finishSync()
	case relistMarker:
		c.finishRelist()
	default:
		c.rebuild(key)
	}
	return true
}

func (c *Cluster) finishSync() {
	c.mu.Lock()
	c.syncedAt = time.Now()
	took := c.syncedAt.Sub(c.started)
	services := len(c.shards)
	c.mu.Unlock()
	close(c.synced)
	c.log.Info("cluster synced", "took", took.Round(time.Millisecond), "services", services)
	c.opts.sink.changed()
}

// rebuild recomputes the shard of one service and notifies the registry if what the
// cluster serves changed.
func (c *Cluster) rebuild(key types.NamespacedName) {
	if host, served := c.update(c.watches(), key); served {
		c.opts.sink.notify(c, []string{host})
	}
}

// update recomputes the shard of one service from ws. It returns the service's host
// and whether the change is served (it changed, and the cluster's shards are not
// withdrawn).
func (c *Cluster) update(ws *watchSet, key types.NamespacedName) (string, bool) {
	host := c.opts.host(key)
	svc, err := ws.services.Services(key.Namespace).Get(key.Name)
	var shard *Shard
	if err == nil && svc.Spec.Type != corev1.ServiceTypeExternalName {
		shard = c.buildShard(ws, host, svc)
	}

	c.mu.Lock()
	old := c.shards[host]
	changed := !reflect.DeepEqual(old, shard)
	if changed {
		if old != nil {
			c.endpointCnt -= countReady(old)
		}
		if shard == nil {
			delete(c.shards, host)
		} else {
			c.shards[host] = shard
			c.endpointCnt += countReady(shard)
		}
	}
	served := changed && !c.withdrawn
	c.mu.Unlock()
	return host, served
}

func countReady(s *Shard) int {
	n := 0
	for _, eps := range s.Endpoints {
		for _, ep := range eps {
			if ep.Ready {
				n++
			}
		}
	}
	return n
}

// buildShard computes what this cluster serves for svc.
func (c *Cluster) buildShard(ws *watchSet, host string, svc *corev1.Service) *Shard {
	shard := &Shard{
		Service: Service{
			Host:        host,
			Name:        svc.Name,
			Namespace:   svc.Namespace,
			Cluster:     c.id,
			Labels:      svc.Labels,
			Annotations: svc.Annotations,
			ExternalIPs: append([]string(nil), svc.Spec.ExternalIPs...),
		},
		Endpoints: map[int32][]Endpoint{},
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			shard.Service.LoadBalancer = append(shard.Service.LoadBalancer, in.IP)
		} else if in.Hostname != "" {
			shard.Service.LoadBalancer = append(shard.Service.LoadBalancer, in.Hostname)
		}
	}
	for _, p := range svc.Spec.Ports {
		shard.Service.Ports = append(shard.Service.Ports, ServicePort{Name: p.Name, Port: p.Port, Protocol: string(p.Protocol)})
	}
	nsNetwork := c.systemNamespaceNetwork(ws)

	objs, _ := ws.slices.ByIndex(serviceIndex, svc.Namespace+"/"+svc.Name)
	for _, obj := range objs {
		slice := obj.(*discoveryv1.EndpointSlice)
		if slice.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		for _, ep := range slice.Endpoints {
			if len(ep.Addresses) == 0 {
				continue
			}
			base := Endpoint{
				Ready:   ep.Conditions.Ready == nil || *ep.Conditions.Ready,
				Cluster: c.id,
				Network: nsNetwork,
			}
			if ep.Conditions.Terminating != nil && *ep.Conditions.Terminating {
				continue
			}
			nodeName := ""
			if ep.NodeName != nil {
				nodeName = *ep.NodeName
			}
			if podKey, ok := endpointPod(slice, ep); ok {
				pod, err := ws.pods.Pods(podKey.Namespace).Get(podKey.Name)
				if err != nil || pod.DeletionTimestamp != nil {
					// Not seen yet, gone, or terminating: not served. Its arrival
					// re-queues this service through the slices' pod index.
					continue
				}
				base.Pod = podKey.String()
				base.Labels = pod.Labels
				base.ServiceAccount = pod.Spec.ServiceAccountName
				base.TLSMode = pod.Labels[network.LabelTLSMode]
				if n := pod.Labels[network.LabelNetwork]; n != "" {
					base.Network = network.NetworkID(n)
				}
				if pod.Spec.NodeName != "" {
					nodeName = pod.Spec.NodeName
				}
				if podNotReady(pod) {
					base.Ready = false
				}
			}
			if nodeName != "" {
				if node, err := ws.nodes.Get(nodeName); err == nil {
					base.Locality = Locality{
						Region:  node.Labels[corev1.LabelTopologyRegion],
						Zone:    node.Labels[corev1.LabelTopologyZone],
						Subzone: node.Labels[network.LabelSubzone],
					}
				}
			}
			if base.Locality.Zone == "" && ep.Zone != nil {
				base.Locality.Zone = *ep.Zone
			}
			for _, sp := range svc.Spec.Ports {
				target, ok := slicePort(slice, sp)
				if !ok {
					continue
				}
				e := base
				e.Address = ep.Addresses[0]
				e.Port = uint32(target)
				shard.Endpoints[sp.Port] = append(shard.Endpoints[sp.Port], e)
			}
		}
	}
	for port, eps := range shard.Endpoints {
		shard.Endpoints[port] = dedupe(eps)
	}
	return shard
}

// slicePort finds the slice port serving service port sp: same name and protocol.
func slicePort(slice *discoveryv1.EndpointSlice, sp corev1.ServicePort) (int32, bool) {
	for _, p := range slice.Ports {
		name, proto := "", corev1.ProtocolTCP
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		spProto := sp.Protocol
		if spProto == "" {
			spProto = corev1.ProtocolTCP
		}
		if name == sp.Name && proto == spProto && p.Port != nil {
			return *p.Port, true
		}
	}
	return 0, false
}

// dedupe sorts endpoints by address and port and keeps one per pair, preferring a
// ready one: an address can sit in two slices while the endpoint moves between them.
func dedupe(eps []Endpoint) []Endpoint {
	sort.SliceStable(eps, func(i, j int) bool {
		if eps[i].Address != eps[j].Address {
			return eps[i].Address < eps[j].Address
		}
		if eps[i].Port != eps[j].Port {
			return eps[i].Port < eps[j].Port
		}
		return eps[i].Ready && !eps[j].Ready
	})
	out := eps[:0]
	for i, e := range eps {
		if i > 0 && e.Address == eps[i-1].Address && e.Port == eps[i-1].Port {
			continue
		}
		out = append(out, e)
	}
	return out
}

// podNotReady reports whether the pod says it is not ready. A pod without a Ready
// condition defers to the EndpointSlice.
func podNotReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status != corev1.ConditionTrue
		}
	}
	return false
}

func (c *Cluster) systemNamespaceNetwork(ws *watchSet) network.NetworkID {
	ns, err := ws.namespaces.Get(c.opts.namespace)
	n := network.NetworkID("")
	if err == nil {
		n = network.NetworkID(ns.Labels[network.LabelNetwork])
	}
	c.mu.Lock()
	c.nsNetwork = n
	c.mu.Unlock()
	return n
}

// trimPod keeps only what Horizon reads of a pod, so that the cache of a large cluster
// stays small.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:              p.Name,
			Namespace:         p.Namespace,
			UID:               p.UID,
			ResourceVersion:   p.ResourceVersion,
			Labels:            p.Labels,
			DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec: corev1.PodSpec{
			NodeName:           p.Spec.NodeName,
			ServiceAccountName: p.Spec.ServiceAccountName,
		},
		Status: corev1.PodStatus{
			Phase:  p.Status.Phase,
			PodIP:  p.Status.PodIP,
			PodIPs: p.Status.PodIPs,
		},
	}
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{{Type: cond.Type, Status: cond.Status}}
		}
	}
	return out, nil
}

// status describes the cluster. Called without c.mu held.
func (c *Cluster) status() ClusterStatus {
	synced := c.hasSynced()
	c.mu.RLock()
	defer c.mu.RUnlock()
	st := ClusterStatus{
		ID:          c.id,
		Source:      c.source,
		Server:      c.server,
		Services:    len(c.shards),
		Endpoints:   c.endpointCnt,
		Started:     c.started,
		SyncedAt:    c.syncedAt,
		LastError:   c.lastErr,
		LastErrorAt: c.lastErrAt,
		Network:     c.nsNetwork,
		Stale:       c.stale,
		StaleSince:  c.staleSince,
		Withdrawn:   c.withdrawn,
	}
	if c.withdrawn {
		st.Services, st.Endpoints = 0, 0
	}
	switch {
	case c.stale:
		st.State = StateStale
		st.SyncDuration = c.syncedAt.Sub(c.started)
	case synced:
		st.State = StateSynced
		st.SyncDuration = c.syncedAt.Sub(c.started)
	case c.timedOut:
		st.State = StateTimedOut
	case c.lastErr != "":
		st.State = StateError
	default:
		st.State = StatePending
	}
	return st
}

// shard returns what the cluster serves for host: nothing while withdrawn.
func (c *Cluster) shard(host string) *Shard {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.withdrawn {
		return nil
	}
	return c.shards[host]
}

// hosts returns the hosts the cluster serves: none while withdrawn.
func (c *Cluster) hosts() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.withdrawn {
		return nil
	}
	out := make([]string, 0, len(c.shards))
	for h := range c.shards {
		out = append(out, h)
	}
	return out
}
