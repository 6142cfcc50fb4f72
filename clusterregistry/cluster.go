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
	"k8s.io/client-go/util/connrotation"
	"k8s.io/client-go/util/workqueue"

	"github.com/horizon-mesh/horizon/network"
)

const serviceIndex = "service"

// syncMarker is queued once the caches have synced; when the worker reaches it, every
// key queued during the initial list has been processed. No Service has an empty
// namespace, so it cannot collide with a real key.
var syncMarker = types.NamespacedName{}

// Cluster is one Kubernetes cluster: its client, informers and the shards of every
// service it has. Its shards are rebuilt by one worker goroutine.
type Cluster struct {
	id     network.ClusterID
	source string
	server string
	token  string // only to scrub it from error text; never logged
	reg    *Registry
	log    *slog.Logger

	httpClient     *http.Client
	dialer         *connrotation.Dialer
	factory        informers.SharedInformerFactory
	nsFactory      informers.SharedInformerFactory
	informers      []cache.SharedIndexInformer
	handlersSynced []cache.InformerSynced
	services       listersv1.ServiceLister
	pods           listersv1.PodLister
	nodes          listersv1.NodeLister
	namespaces     listersv1.NamespaceLister
	slices         cache.Indexer
	queue          workqueue.TypedRateLimitingInterface[types.NamespacedName]

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	synced chan struct{} // closed when the initial sync is done

	mu          sync.RWMutex
	shards      map[string]*Shard                                      // host → shard; guarded by mu
	podSvcs     map[types.NamespacedName]map[types.NamespacedName]bool // pod → services whose slices name it; guarded by mu
	nodeSvcs    map[string]map[types.NamespacedName]bool               // node → services with endpoints on it; guarded by mu
	deps        map[types.NamespacedName]deps                          // service → what its shard was built from; guarded by mu
	started     time.Time                                              // guarded by mu
	syncedAt    time.Time                                              // guarded by mu
	timedOut    bool                                                   // guarded by mu
	lastErr     string                                                 // guarded by mu
	lastErrAt   time.Time                                              // guarded by mu
	nsNetwork   network.NetworkID                                      // guarded by mu
	endpointCnt int                                                    // guarded by mu
}

func newCluster(reg *Registry, id network.ClusterID, source string, cfg *rest.Config) (*Cluster, error) {
	cfg = rest.CopyConfig(cfg)
	// A dialer of our own keeps client-go from handing us a shared, cached transport
	// and tracks every connection, so that stopping the cluster closes them all.
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	dialer := connrotation.NewDialer(dial)
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
		reg:        reg,
		log:        reg.log.With("cluster", id),
		httpClient: hc,
		dialer:     dialer,
		factory:    informers.NewSharedInformerFactory(client, 0),
		nsFactory: informers.NewSharedInformerFactoryWithOptions(client, 0,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", reg.opts.Namespace).String()
			})),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
			workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "cluster-" + string(id)}),
		synced:   make(chan struct{}),
		shards:   map[string]*Shard{},
		podSvcs:  map[types.NamespacedName]map[types.NamespacedName]bool{},
		nodeSvcs: map[string]map[types.NamespacedName]bool{},
		deps:     map[types.NamespacedName]deps{},
	}
	if err := c.setupInformers(); err != nil {
		return nil, fmt.Errorf("set up informers for cluster %q: %w", id, err)
	}
	return c, nil
}

func (c *Cluster) setupInformers() error {
	svc := c.factory.Core().V1().Services()
	pod := c.factory.Core().V1().Pods()
	node := c.factory.Core().V1().Nodes()
	slice := c.factory.Discovery().V1().EndpointSlices()
	ns := c.nsFactory.Core().V1().Namespaces()
	c.services, c.pods, c.nodes, c.namespaces = svc.Lister(), pod.Lister(), node.Lister(), ns.Lister()
	c.slices = slice.Informer().GetIndexer()

	if err := pod.Informer().SetTransform(trimPod); err != nil {
		return err
	}
	if err := slice.Informer().AddIndexers(cache.Indexers{serviceIndex: func(obj any) ([]string, error) {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return nil, nil
		}
		name := s.Labels[discoveryv1.LabelServiceName]
		if name == "" {
			return nil, nil
		}
		return []string{s.Namespace + "/" + name}, nil
	}}); err != nil {
		return err
	}

	handlers := []struct {
		inf cache.SharedIndexInformer
		fn  func(obj any)
	}{
		{svc.Informer(), func(obj any) {
			if s, ok := obj.(*corev1.Service); ok {
				c.queue.Add(types.NamespacedName{Namespace: s.Namespace, Name: s.Name})
			}
		}},
		{slice.Informer(), func(obj any) {
			if s, ok := obj.(*discoveryv1.EndpointSlice); ok && s.Labels[discoveryv1.LabelServiceName] != "" {
				c.queue.Add(types.NamespacedName{Namespace: s.Namespace, Name: s.Labels[discoveryv1.LabelServiceName]})
			}
		}},
		{pod.Informer(), func(obj any) {
			if p, ok := obj.(*corev1.Pod); ok {
				c.enqueueFor(func() map[types.NamespacedName]bool {
					return c.podSvcs[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}]
				})
			}
		}},
		{node.Informer(), func(obj any) {
			if n, ok := obj.(*corev1.Node); ok {
				c.enqueueFor(func() map[types.NamespacedName]bool { return c.nodeSvcs[n.Name] })
			}
		}},
		{ns.Informer(), func(any) { c.enqueueAll() }},
	}
	for _, h := range handlers {
		fn := h.fn
		reg, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: fn,
			UpdateFunc: func(old, cur any) {
				if o, ok := old.(metav1.Object); ok {
					if n, ok := cur.(metav1.Object); ok && o.GetResourceVersion() == n.GetResourceVersion() {
						return // resync with nothing changed
					}
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
		c.handlersSynced = append(c.handlersSynced, reg.HasSynced)
		if err := h.inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			c.recordError(err)
		}); err != nil {
			return err
		}
		c.informers = append(c.informers, h.inf)
	}
	return nil
}

// enqueueFor queues the services of the set that lookup returns under c.mu.
func (c *Cluster) enqueueFor(lookup func() map[types.NamespacedName]bool) {
	c.mu.RLock()
	set := lookup()
	keys := make([]types.NamespacedName, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	c.mu.RUnlock()
	for _, k := range keys {
		c.queue.Add(k)
	}
}

func (c *Cluster) enqueueAll() {
	svcs, _ := c.services.List(labels.Everything())
	for _, s := range svcs {
		c.queue.Add(types.NamespacedName{Namespace: s.Namespace, Name: s.Name})
	}
}

// start runs the informers and the worker until stop.
func (c *Cluster) start() {
	ctx := c.ctx
	c.mu.Lock()
	c.started = time.Now()
	c.mu.Unlock()
	c.factory.Start(ctx.Done())
	c.nsFactory.Start(ctx.Done())
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		if !cache.WaitForCacheSync(ctx.Done(), c.handlersSynced...) {
			return
		}
		c.queue.Add(syncMarker)
	}()
	go func() {
		defer c.wg.Done()
		for c.processNext() {
		}
	}()
	if t := c.reg.opts.SyncTimeout; t > 0 {
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
				c.reg.changed()
			}
		}()
	}
}

// stop stops the informers and the worker, waits for them and closes the cluster's
// connections.
func (c *Cluster) stop() {
	c.cancel()
	c.queue.ShutDown()
	c.factory.Shutdown()
	c.nsFactory.Shutdown()
	c.wg.Wait()
	c.httpClient.CloseIdleConnections()
	c.dialer.CloseAll()
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

func (c *Cluster) recordError(err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	msg := err.Error()
	if c.token != "" {
		msg = strings.ReplaceAll(msg, c.token, "[redacted]")
	}
	c.mu.Lock()
	first := c.lastErr != msg
	c.lastErr, c.lastErrAt = msg, time.Now()
	c.mu.Unlock()
	if first {
		c.log.Warn("list or watch failed", "error", msg)
	}
	c.reg.changed()
}

func (c *Cluster) processNext() bool {
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	if key == syncMarker {
		c.finishSync()
		return true
	}
	c.rebuild(key)
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
	c.reg.changed()
}

// rebuild recomputes the shard of one service and notifies the registry if it changed.
func (c *Cluster) rebuild(key types.NamespacedName) {
	host := c.reg.host(key)
	svc, err := c.services.Services(key.Namespace).Get(key.Name)
	var shard *Shard
	var pods map[types.NamespacedName]bool
	var nodes map[string]bool
	if err == nil && svc.Spec.Type != corev1.ServiceTypeExternalName {
		shard, pods, nodes = c.buildShard(host, svc)
	}

	c.mu.Lock()
	old := c.shards[host]
	c.updateIndex(key, pods, nodes)
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
	c.mu.Unlock()
	if changed {
		c.reg.notify(c, []string{host})
	}
}

// deps is what one service's shard was built from.
type deps struct {
	pods  map[types.NamespacedName]bool
	nodes map[string]bool
}

// updateIndex records which pods and nodes the service's endpoints depend on, so that
// a change to one of them re-queues the service. Called with c.mu held.
func (c *Cluster) updateIndex(key types.NamespacedName, pods map[types.NamespacedName]bool, nodes map[string]bool) {
	old := c.deps[key]
	for p := range old.pods {
		if !pods[p] {
			unlink(c.podSvcs, p, key)
		}
	}
	for n := range old.nodes {
		if !nodes[n] {
			unlink(c.nodeSvcs, n, key)
		}
	}
	for p := range pods {
		link(c.podSvcs, p, key)
	}
	for n := range nodes {
		link(c.nodeSvcs, n, key)
	}
	if len(pods) == 0 && len(nodes) == 0 {
		delete(c.deps, key)
	} else {
		c.deps[key] = deps{pods: pods, nodes: nodes}
	}
}

func link[K comparable](m map[K]map[types.NamespacedName]bool, k K, svc types.NamespacedName) {
	if m[k] == nil {
		m[k] = map[types.NamespacedName]bool{}
	}
	m[k][svc] = true
}

func unlink[K comparable](m map[K]map[types.NamespacedName]bool, k K, svc types.NamespacedName) {
	delete(m[k], svc)
	if len(m[k]) == 0 {
		delete(m, k)
	}
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

// buildShard computes what this cluster serves for svc, and which pods and nodes that
// depends on.
func (c *Cluster) buildShard(host string, svc *corev1.Service) (*Shard, map[types.NamespacedName]bool, map[string]bool) {
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
	nsNetwork := c.systemNamespaceNetwork()
	pods := map[types.NamespacedName]bool{}
	nodes := map[string]bool{}

	objs, _ := c.slices.ByIndex(serviceIndex, svc.Namespace+"/"+svc.Name)
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
			if ref := ep.TargetRef; ref != nil && ref.Kind == "Pod" {
				podKey := types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}
				if podKey.Namespace == "" {
					podKey.Namespace = slice.Namespace
				}
				pods[podKey] = true
				pod, err := c.pods.Pods(podKey.Namespace).Get(podKey.Name)
				if err != nil || pod.DeletionTimestamp != nil {
					// Not seen yet, gone, or terminating: not served. Its arrival
					// re-queues this service through the pod index.
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
				nodes[nodeName] = true
				if node, err := c.nodes.Get(nodeName); err == nil {
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
	return shard, pods, nodes
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

func (c *Cluster) systemNamespaceNetwork() network.NetworkID {
	ns, err := c.namespaces.Get(c.reg.opts.Namespace)
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
	}
	switch {
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

func (c *Cluster) shard(host string) *Shard {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.shards[host]
}

func (c *Cluster) hosts() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.shards))
	for h := range c.shards {
		out = append(out, h)
	}
	return out
}
