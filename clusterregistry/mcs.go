package clusterregistry

import (
	"context"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/horizon-mesh/horizon/network"
)

// Multi-Cluster Services (KEP-1645) mode, Options.MCS.
//
// Each scope (scope.go) also watches the ServiceExports of its namespaces, metadata
// only (name, namespace, creationTimestamp), so that discovery selectors scope them
// as they scope Services. A Service that a ServiceExport of the same namespace and
// name exports gets a second shard in its cluster, under its clusterset host
// <name>.<namespace>.svc.clusterset.local: the same endpoints, with Service.Host
// the clusterset host. The clusterset host's shards are therefore those of the
// exporting clusters, and an export's creation or deletion adds or withdraws its
// cluster's shard like any other change. A ServiceExport without a Service
// contributes no shard (but is listed by Registry.Exports).
//
// A cluster that does not serve the ServiceExport CRD (its list answers NotFound),
// or does not let Horizon list ServiceExports (Forbidden), exports nothing: its
// ServiceExport watches count as synced, so that they hold up neither its sync nor
// anyone's readiness; the reason is logged once and shown in its status
// (ClusterStatus.ServiceExports). The informers keep retrying with client-go's
// backoff, so a CRD installed later is picked up without a restart.

// ClustersetDomain is the domain of the clusterset hosts of MCS mode,
// <name>.<namespace>.svc.clusterset.local (KEP-1645).
const ClustersetDomain = "clusterset.local"

// ServiceExportResource is the resource Horizon watches ServiceExports through: the
// v1alpha1 version, which every released version of the CRD serves.
var ServiceExportResource = schema.GroupVersionResource{
	Group:    mcsv1alpha1.GroupName,
	Version:  mcsv1alpha1.GroupVersion.Version,
	Resource: "serviceexports",
}

// ClustersetHost returns the clusterset host of service name in namespace.
func ClustersetHost(namespace, name string) string {
	return name + "." + namespace + ".svc." + ClustersetDomain
}

// IsClustersetHost reports whether host is a clusterset host, <name>.<ns>.svc.clusterset.local.
func IsClustersetHost(host string) bool {
	return strings.HasSuffix(host, ".svc."+ClustersetDomain)
}

// clustersetKey returns the service of a clusterset host.
func clustersetKey(host string) (types.NamespacedName, bool) {
	rest, ok := strings.CutSuffix(host, ".svc."+ClustersetDomain)
	if !ok {
		return types.NamespacedName{}, false
	}
	name, ns, ok := strings.Cut(rest, ".")
	if !ok || name == "" || ns == "" || strings.Contains(ns, ".") {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: ns, Name: name}, true
}

// Export is one cluster's ServiceExport of one service, in MCS mode: what the KEP's
// conflict resolution needs of it.
type Export struct {
	Cluster   network.ClusterID `json:"cluster"`
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	// Created is the ServiceExport's creationTimestamp: the KEP resolves a conflict
	// in favour of the oldest export.
	Created time.Time `json:"created"`
	// HasService is set when the cluster has the Service the export names (in a
	// selected namespace); Ports are then its ports (name, port, protocol; the
	// target port is left out: it is the cluster's own business). Shared: do not
	// modify.
	HasService bool          `json:"hasService"`
	Ports      []ServicePort `json:"ports,omitempty"`
}

// ExportStatus says how a cluster's ServiceExports are watched, in MCS mode.
type ExportStatus struct {
	// Exports counts the ServiceExports the cluster's caches hold.
	Exports int `json:"exports"`
	// Unavailable says why the cluster's ServiceExports cannot be listed (the CRD is
	// not served, or Horizon may not list them); the cluster then exports nothing.
	Unavailable string `json:"unavailable,omitempty"`
}

// Exports returns every cluster's ServiceExport of namespace/name, in MCS mode,
// sorted by cluster. A withdrawn (stale past its grace) cluster has none.
//
// With OnExportsChange, this is the registry's API for export-conflict resolution
// and ServiceExport status: OnExportsChange says which service's exports may have
// changed, Exports says what they are now.
func (r *Registry) Exports(namespace, name string) []Export {
	key := types.NamespacedName{Namespace: namespace, Name: name}
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []Export
	for _, e := range r.clusters {
		if ex, ok := e.active.export(key); ok {
			out = append(out, ex)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cluster < out[j].Cluster })
	return out
}

// ExportedServices returns every namespace/name some cluster exports, sorted.
func (r *Registry) ExportedServices() []types.NamespacedName {
	r.mu.RLock()
	seen := map[types.NamespacedName]bool{}
	for _, e := range r.clusters {
		for _, k := range e.active.exportKeys() {
			seen[k] = true
		}
	}
	r.mu.RUnlock()
	out := make([]types.NamespacedName, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// OnExportsChange registers fn to learn that some cluster's export of a service
// (Exports) may have changed: created, deleted, its Service's ports changed, or its
// cluster added, removed, withdrawn or back. fn may be told of a service whose
// exports did not change. It runs on the registry's goroutines, possibly
// concurrently, and must not block.
func (r *Registry) OnExportsChange(fn func(types.NamespacedName)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exportSubs = append(r.exportSubs, fn)
}

// notifyExports tells export subscribers of keys.
func (r *Registry) notifyExports(keys []types.NamespacedName) {
	if len(keys) == 0 {
		return
	}
	r.mu.RLock()
	subs := r.exportSubs
	r.mu.RUnlock()
	for _, k := range keys {
		for _, fn := range subs {
			fn(k)
		}
	}
}

// export returns the cluster's export of key: none while withdrawn.
func (c *Cluster) export(key types.NamespacedName) (Export, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.withdrawn {
		return Export{}, false
	}
	ex, ok := c.exports[key]
	return ex, ok
}

// exportKeys returns the services the cluster exports: none while withdrawn.
func (c *Cluster) exportKeys() []types.NamespacedName {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.withdrawn {
		return nil
	}
	out := make([]types.NamespacedName, 0, len(c.exports))
	for k := range c.exports {
		out = append(out, k)
	}
	return out
}

// exportWatch is a scope's ServiceExport informer.
type exportWatch struct {
	factory metadatainformer.SharedInformerFactory
	store   cache.Store
	// handlerSynced says the scope's handler has been given the initial list.
	handlerSynced cache.InformerSynced
	// unavailable is set once a list failed NotFound or Forbidden: the watch then
	// counts as synced, with nothing exported.
	unavailable atomic.Bool
}

// synced says the scope's handler has been given the initial list, or that there is
// none to give.
func (x *exportWatch) synced() bool { return x.handlerSynced() || x.unavailable.Load() }

// missing says the ServiceExports cannot be listed: the last list failed NotFound
// or Forbidden and none has succeeded since.
func (x *exportWatch) missing() bool { return x.unavailable.Load() && !x.handlerSynced() }

// setupExports sets up the ServiceExport informer of scope s, in MCS mode.
func (c *Cluster) setupExports(s *scope) error {
	x := &exportWatch{factory: metadatainformer.NewFilteredSharedInformerFactory(c.meta, 0, s.ns, nil)}
	inf := x.factory.ForResource(ServiceExportResource).Informer()
	if err := inf.SetTransform(trimExport); err != nil {
		return err
	}
	reg, err := inf.AddEventHandler(eventHandler(func(obj any) { c.exportEvent(obj) }, false))
	if err != nil {
		return err
	}
	if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
			x.unavailable.Store(true)
			c.exportsUnavailable(err)
			return
		}
		c.recordError(err)
	}); err != nil {
		return err
	}
	x.store, x.handlerSynced = inf.GetStore(), reg.HasSynced
	s.exports = x
	s.handlersSynced = append(s.handlersSynced, x.synced)
	return nil
}

// exportsUnavailable records why ServiceExports cannot be listed; it is logged once
// per cluster and reason.
func (c *Cluster) exportsUnavailable(err error) {
	reason := "the ServiceExport CRD (" + ServiceExportResource.Resource + "." + ServiceExportResource.Group + "/" +
		ServiceExportResource.Version + ") is not served: the cluster exports nothing"
	if apierrors.IsForbidden(err) {
		reason = "Horizon may not list ServiceExports (" + ServiceExportResource.Resource + "." + ServiceExportResource.Group +
			"): the cluster exports nothing; grant list and watch on them"
	}
	c.mu.Lock()
	first := c.exportsErr != reason
	c.exportsErr = reason
	c.mu.Unlock()
	if first {
		c.log.Warn("ServiceExports unavailable", "reason", reason)
		c.opts.sink.changed()
	}
}

// exportEvent queues the service a ServiceExport names.
func (c *Cluster) exportEvent(obj any) {
	if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
		c.queue.Add(types.NamespacedName{Namespace: m.Namespace, Name: m.Name})
	}
}

// trimExport keeps what Horizon reads of a ServiceExport: its name, namespace and
// creation time.
func trimExport(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	return &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name:              m.Name,
		Namespace:         m.Namespace,
		ResourceVersion:   m.ResourceVersion,
		CreationTimestamp: m.CreationTimestamp,
	}}, nil
}

// exportOf returns the ServiceExport of key that w's caches hold, if any.
func (w *watchSet) exportOf(key types.NamespacedName) (*metav1.PartialObjectMetadata, bool) {
	s := w.scopeFor(key.Namespace)
	if s.exports == nil {
		return nil, false
	}
	obj, ok, _ := s.exports.store.GetByKey(key.Namespace + "/" + key.Name)
	if !ok {
		return nil, false
	}
	m, ok := obj.(*metav1.PartialObjectMetadata)
	return m, ok
}

// exportKeys returns the services of the ServiceExports w's caches hold.
func (w *watchSet) exportKeys() []types.NamespacedName {
	var out []types.NamespacedName
	for _, s := range w.allScopes() {
		out = append(out, s.exportKeys()...)
	}
	return out
}

// exportKeys returns the services of the ServiceExports s's cache holds.
func (s *scope) exportKeys() []types.NamespacedName {
	if s.exports == nil {
		return nil
	}
	var out []types.NamespacedName
	for _, k := range s.exports.store.ListKeys() {
		if ns, name, err := cache.SplitMetaNamespaceKey(k); err == nil {
			out = append(out, types.NamespacedName{Namespace: ns, Name: name})
		}
	}
	return out
}

// exportStatus describes how w watches ServiceExports; nil when not in MCS mode.
func (c *Cluster) exportStatus(w *watchSet) *ExportStatus {
	if !c.opts.mcs {
		return nil
	}
	st := &ExportStatus{}
	unavailable := false
	for _, s := range w.allScopes() {
		if s.exports == nil {
			continue
		}
		st.Exports += len(s.exports.store.ListKeys())
		if s.exports.missing() {
			unavailable = true
		}
	}
	if unavailable {
		c.mu.RLock()
		st.Unavailable = c.exportsErr
		c.mu.RUnlock()
	}
	return st
}
