package clusterregistry

import (
	"context"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/horizon-mesh/horizon/network"
)

// Discovery scope: which namespaces of a cluster are listed and watched.
//
// A scope is the Services, EndpointSlices and Pods informers (and in MCS mode the
// ServiceExports one, mcs.go) of one namespace, or of
// every namespace (""). With no discovery selectors a cluster has the one cluster-wide
// scope, as without the feature. With selectors it has one scope per selected
// namespace (and the system namespace, always), started when a namespace becomes
// selected and stopped when it no longer is: an unselected namespace costs neither
// memory nor list/watch traffic. Past Options.MaxNamespaceWatches selected namespaces, the
// watches would cost more than they save: the cluster-wide scope is used and the
// unselected namespaces' services are filtered out instead.
//
// A change of scopes starts the new ones, waits until they have synced, and only then
// stops the ones no longer wanted and re-queues their services, so that a service
// does not blink out while a selector edit moves it from one scope to another. The
// wait gives way to a newer edit (which is then brought in line instead), and after
// a change (not the first) ends after scopeSyncLimit: a namespace whose watches
// cannot sync (its objects forbidden to Horizon, say) holds up neither later edits
// nor the removal of the scopes no longer wanted.

// defaultMaxNamespaceWatches is Options.MaxNamespaceWatches' default.
const defaultMaxNamespaceWatches = 100

// scopeSyncLimit is how long a change of scopes waits for its new scopes to sync
// before it stops the scopes no longer wanted anyway.
const scopeSyncLimit = 30 * time.Second

// waitOutcome is how waitScopes ended.
type waitOutcome int

const (
	scopesSynced waitOutcome = iota
	scopesTimedOut
	scopesSuperseded // a newer change came: bring that one in line instead
	watchSetStopped
)

// waitScopes waits until synced report true, w stops, a new reconcile signal comes
// (taken), or limit passes (0: no limit).
func (w *watchSet) waitScopes(synced []cache.InformerSynced, limit time.Duration) waitOutcome {
	if len(synced) == 0 {
		return scopesSynced
	}
	stop, quit := make(chan struct{}), make(chan struct{})
	why := make(chan waitOutcome, 1)
	var timeout <-chan time.Time
	if limit > 0 {
		t := time.NewTimer(limit)
		defer t.Stop()
		timeout = t.C
	}
	go func() {
		defer close(stop)
		select {
		case <-w.ctx.Done():
			why <- watchSetStopped
		case <-w.reconcile:
			why <- scopesSuperseded
		case <-timeout:
			why <- scopesTimedOut
		case <-quit:
		}
	}()
	ok := cache.WaitForCacheSync(stop, synced...)
	close(quit)
	<-stop
	if ok {
		select {
		case r := <-why:
			if r == scopesSuperseded {
				w.poke() // taken while the scopes synced: keep it for the loop
			}
		default:
		}
		return scopesSynced
	}
	return <-why
}

type scope struct {
	ns      string
	ctx     context.Context
	cancel  context.CancelFunc
	factory informers.SharedInformerFactory

	handlersSynced []cache.InformerSynced
	services       listersv1.ServiceLister
	pods           podGetter
	podCache       cache.Indexer
	slices         cache.Indexer
	// exports watches the scope's ServiceExports in MCS mode (mcs.go); nil
	// otherwise.
	exports *exportWatch
}

func (s *scope) hasSynced() bool {
	for _, f := range s.handlersSynced {
		if !f() {
			return false
		}
	}
	return true
}

func (s *scope) stop() {
	s.cancel()
	s.factory.Shutdown()
	if s.exports != nil {
		s.exports.factory.Shutdown()
	}
}

// start starts the scope's informers.
func (s *scope) start() {
	s.factory.Start(s.ctx.Done())
	if s.exports != nil {
		s.exports.factory.Start(s.ctx.Done())
	}
}

// emptyScope stands for a namespace no scope covers: it has nothing.
var emptyScope = func() *scope {
	idx := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	return &scope{
		services: listersv1.NewServiceLister(idx()),
		pods:     podStore{cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})},
		podCache: idx(),
		slices:   idx(),
	}
}()

// newScope sets up (without starting) the informers of namespace ns ("" for all).
func (c *Cluster) newScope(w *watchSet, ns string) (*scope, error) {
	ctx, cancel := context.WithCancel(w.ctx)
	s := &scope{
		ns:      ns,
		ctx:     ctx,
		cancel:  cancel,
		factory: informers.NewSharedInformerFactoryWithOptions(c.client, 0, informers.WithNamespace(ns)),
	}
	if err := c.setupScope(w, s); err != nil {
		cancel()
		return nil, err
	}
	return s, nil
}

// poke asks the watchSet's goroutine to bring the scopes in line.
func (w *watchSet) poke() {
	select {
	case w.reconcile <- struct{}{}:
	default:
	}
}

// scopeFor returns the scope whose caches answer for namespace ns: its own once
// synced, else the cluster-wide one if any, else its own while it syncs.
func (w *watchSet) scopeFor(ns string) *scope {
	w.scopesMu.RLock()
	defer w.scopesMu.RUnlock()
	own := w.scopes[ns]
	if own != nil && own.hasSynced() {
		return own
	}
	if all := w.scopes[""]; all != nil {
		return all
	}
	if own != nil {
		return own
	}
	return emptyScope
}

// allScopes returns the scopes, cluster-wide one first.
func (w *watchSet) allScopes() []*scope {
	w.scopesMu.RLock()
	defer w.scopesMu.RUnlock()
	out := make([]*scope, 0, len(w.scopes))
	for _, s := range w.scopes {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ns < out[j].ns })
	return out
}

// selects reports whether namespace ns is selected; with no selectors, every one is.
func (w *watchSet) selects(ns string) bool {
	w.scopesMu.RLock()
	defer w.scopesMu.RUnlock()
	return w.selected == nil || w.selected[ns]
}

// reconcileScopes brings w's scopes in line with c's selectors and the namespaces'
// labels as w's Namespace cache has them. It returns false if w was stopped first,
// and superseded if a newer change came while the new scopes synced (the caller
// then calls it again). The first call (first) waits for its scopes without a
// limit: the cluster's sync timeout reports a cluster that does not sync. Only w's
// goroutine calls it.
func (c *Cluster) reconcileScopes(w *watchSet, first bool) (alive, superseded bool) {
	sel := c.discoverySelectors()
	var selected map[string]bool // nil: every namespace
	if !sel.All() {
		selected = map[string]bool{c.opts.namespace: true}
		nss, _ := w.namespaces.List(labels.Everything())
		for _, n := range nss {
			if sel.Selects(n.Labels) {
				selected[n.Name] = true
			}
		}
	}
	want := map[string]bool{"": true}
	if selected != nil && len(selected) <= c.opts.maxScopes {
		want = selected
	}

	w.scopesMu.Lock()
	previous := w.selected
	w.selected = selected
	var added []*scope
	for ns := range want {
		if w.scopes[ns] != nil {
			continue
		}
		s, err := c.newScope(w, ns)
		if err != nil {
			c.log.Error("cannot watch namespace", "namespace", ns, "error", err)
			continue
		}
		w.scopes[ns] = s
		added = append(added, s)
	}
	w.scopesMu.Unlock()

	// Services whose selection changed while their scope stays (the cluster-wide
	// scope past the bound) are re-queued here; those of stopped scopes
	// below.
	if _, ok := want[""]; ok {
		c.requeueChangedSelection(w, previous, selected)
	}

	for _, s := range added {
		s.start()
	}
	// Every wanted scope not synced yet, also those a superseded call started.
	var synced []cache.InformerSynced
	var waiting []*scope
	w.scopesMu.RLock()
	for ns := range want {
		if s := w.scopes[ns]; s != nil && !s.hasSynced() {
			synced = append(synced, s.handlersSynced...)
			waiting = append(waiting, s)
		}
	}
	w.scopesMu.RUnlock()
	limit := scopeSyncLimit
	if first {
		limit = 0
	}
	switch w.waitScopes(synced, limit) {
	case watchSetStopped:
		return false, false
	case scopesSuperseded:
		return true, true
	case scopesTimedOut:
		var stuck []*scope
		for _, s := range waiting {
			if !s.hasSynced() {
				stuck = append(stuck, s)
			}
		}
		c.log.Warn("namespace watches have not synced; applying the discovery scope change without them",
			"after", limit, "namespaces", scopeNames(stuck))
	}

	w.scopesMu.Lock()
	var removed []*scope
	for ns, s := range w.scopes {
		if !want[ns] {
			removed = append(removed, s)
			delete(w.scopes, ns)
		}
	}
	w.scopesMu.Unlock()
	for _, s := range removed {
		svcs, _ := s.services.List(labels.Everything())
		exports := s.exportKeys()
		s.stop()
		for _, svc := range svcs {
			c.queue.Add(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name})
		}
		// ServiceExports without a Service, which no Service key above covers.
		for _, k := range exports {
			c.queue.Add(k)
		}
	}
	if len(added) > 0 || len(removed) > 0 {
		c.log.Info("discovery scope changed", "selectors", sel.String(), "selectedNamespaces", selectedCount(selected),
			"namespaceWatches", len(want), "started", scopeNames(added), "stopped", scopeNames(removed))
		c.opts.sink.changed()
	}
	return true, false
}

// requeueChangedSelection re-queues the services (as the cluster-wide scope has them)
// of every namespace whose selection differs between before and after.
func (c *Cluster) requeueChangedSelection(w *watchSet, before, after map[string]bool) {
	if before == nil && after == nil {
		return
	}
	svcs, _ := w.services.List(labels.Everything())
	for _, s := range svcs {
		was := before == nil || before[s.Namespace]
		is := after == nil || after[s.Namespace]
		if was != is {
			c.queue.Add(types.NamespacedName{Namespace: s.Namespace, Name: s.Name})
		}
	}
}

func selectedCount(selected map[string]bool) any {
	if selected == nil {
		return "all"
	}
	return len(selected)
}

func scopeNames(ss []*scope) string {
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = s.ns
		if s.ns == "" {
			names[i] = "*"
		}
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

// scopeCounts counts the objects w's namespaced caches hold, across scopes.
func (w *watchSet) scopeCounts() (namespaces, services, slices, pods int) {
	for _, s := range w.allScopes() {
		if s.ns == "" {
			namespaces = -1
		} else if namespaces >= 0 {
			namespaces++
		}
		ss, _ := s.services.List(labels.Everything())
		services += len(ss)
		slices += len(s.slices.ListKeys())
		pods += len(s.podCache.ListKeys())
	}
	return namespaces, services, slices, pods
}

// scopedServices lists Services across w's scopes.
type scopedServices struct{ w *watchSet }

func (l scopedServices) List(sel labels.Selector) ([]*corev1.Service, error) {
	var out []*corev1.Service
	// By namespace and name: the trimmed caches keep no UID (trim.go).
	seen := map[types.NamespacedName]bool{}
	for _, s := range l.w.allScopes() {
		svcs, err := s.services.List(sel)
		if err != nil {
			return nil, err
		}
		for _, svc := range svcs {
			if key := (types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}); !seen[key] {
				seen[key] = true
				out = append(out, svc)
			}
		}
	}
	return out, nil
}

func (l scopedServices) Services(ns string) listersv1.ServiceNamespaceLister {
	return l.w.scopeFor(ns).services.Services(ns)
}

// scopedPods finds pods in the scope of their namespace.
type scopedPods struct{ w *watchSet }

func (l scopedPods) getPod(namespace, name string) *cachedPod {
	return l.w.scopeFor(namespace).pods.getPod(namespace, name)
}

// scopedIndex reads one index across w's scopes: a "namespace/name" value from the
// scope of its namespace, a node name from every scope.
type scopedIndex struct {
	w    *watchSet
	pick func(*scope) cache.Indexer
}

func (x scopedIndex) ByIndex(index, value string) ([]any, error) {
	if index == serviceIndex || index == podIndex {
		ns, _, _ := strings.Cut(value, "/")
		return x.pick(x.w.scopeFor(ns)).ByIndex(index, value)
	}
	var out []any
	for _, s := range x.w.allScopes() {
		objs, err := x.pick(s).ByIndex(index, value)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

// discoverySelectors returns the selectors in force for c.
func (c *Cluster) discoverySelectors() *network.DiscoverySelectors {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.selectors
}

// setDiscoverySelectors changes c's selectors; the scopes follow.
func (c *Cluster) setDiscoverySelectors(sel *network.DiscoverySelectors, override bool) {
	c.mu.Lock()
	c.selectorsOverride = override
	if c.selectors.Equal(sel) {
		c.mu.Unlock()
		return
	}
	c.selectors = sel
	ws, h := c.ws, c.handover
	c.mu.Unlock()
	ws.poke()
	if h != nil {
		h.ws.poke()
	}
}
