package clusterregistry

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/horizon-mesh/horizon/network"
)

// Options configures a Registry.
type Options struct {
	// DomainSuffix completes service hosts: <name>.<namespace>.svc.<DomainSuffix>.
	DomainSuffix string
	// Namespace is the system namespace; its topology.istio.io/network label in each
	// cluster names the network of that cluster's endpoints.
	Namespace string
	// SyncTimeout is how long a cluster may take to sync before readiness stops
	// waiting for it. Zero means wait forever.
	SyncTimeout time.Duration
	// StaleGrace is how long a synced cluster that stopped answering keeps serving its
	// last known endpoints before they are withdrawn. Zero means keep them until it
	// answers again or is removed.
	StaleGrace time.Duration
	// MaxNamespaceWatches bounds the namespaces a cluster watches one by one when
	// discovery selectors are in force; past it, the cluster's Services,
	// EndpointSlices and Pods are watched cluster-wide and the unselected
	// namespaces' services filtered out. Default 100.
	MaxNamespaceWatches int
	// ClusterQPS and ClusterBurst limit the requests each cluster's client sends its
	// API server (client-go's token bucket: QPS sustained, Burst at once); 50 and 100
	// when zero. A client config that sets its own QPS keeps it.
	ClusterQPS   float32
	ClusterBurst int
	// ProbeInterval is how often each synced cluster's API server is probed: while
	// it answers, to notice that it hangs; while stale, to learn that it answers
	// again. 5s when zero.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe; 5s when zero.
	ProbeTimeout time.Duration
	// ProbeFailures is how many periodic probes in a row must fail (time out or
	// err) before a synced cluster is stale; 3 when zero. A failed list or watch
	// followed by one failed probe makes it stale at once.
	ProbeFailures int
	// MCS turns on Multi-Cluster Services mode (mcs.go): every cluster's
	// ServiceExports are watched, and an exported Service is also served under its
	// clusterset host, <name>.<namespace>.svc.clusterset.local, from every cluster
	// that exports it.
	MCS bool
	// Logger receives the registry's log lines; slog.Default() when nil.
	Logger *slog.Logger
}

// AddFlags binds the options that come from the command line. Namespace is shared with
// the remote-secret controller and bound there.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.DomainSuffix, "domain-suffix", "cluster.local", "DNS domain suffix of service hosts")
	fs.DurationVar(&o.SyncTimeout, "remote-cluster-timeout", 30*time.Second, "how long a cluster may take to sync before Horizon is ready without it")
	fs.IntVar(&o.MaxNamespaceWatches, "discovery-max-namespace-watches", defaultMaxNamespaceWatches, "with discoverySelectors, the most namespaces of one cluster watched one by one "+
		"(three watches each: Services, EndpointSlices, Pods; with --mcs a fourth, ServiceExports); past it the cluster is watched cluster-wide and unselected namespaces are filtered out")
	fs.Float32Var(&o.ClusterQPS, "remote-qps", defaultClusterQPS, "requests per second each watched cluster's API client may send on average (remote clusters and the config cluster alike; 0: the default)")
	fs.IntVar(&o.ClusterBurst, "remote-burst", defaultClusterBurst, "requests each watched cluster's API client may send at once above --remote-qps (0: the default)")
	fs.DurationVar(&o.StaleGrace, "stale-cluster-grace", 5*time.Minute, "how long a synced cluster that stopped answering keeps serving its last known endpoints (0: until it answers again)")
	fs.DurationVar(&o.ProbeInterval, "remote-probe-interval", defaultProbeInterval, "how often each synced cluster's API server is probed (a cheap GET of the system namespace): while it answers, to notice that it hangs; while stale, to notice that it is back")
	fs.DurationVar(&o.ProbeTimeout, "remote-probe-timeout", defaultProbeTimeout, "how long one probe of a cluster's API server may take before it counts as failed")
	fs.BoolVar(&o.MCS, "mcs", false, "Multi-Cluster Services mode (KEP-1645): watch ServiceExports (multicluster.x-k8s.io) in every cluster; "+
		"an exported Service is served as <name>.<namespace>.svc.clusterset.local with the endpoints of every cluster that exports it, "+
		"and <name>.<namespace>.svc.<domain-suffix> with the proxy's own cluster's endpoints only")
	fs.IntVar(&o.ProbeFailures, "remote-probe-failures", defaultProbeFailures, "periodic probes in a row that must fail before a cluster is shown stale; a hung server is stale after about interval + failures × max(interval, timeout)")
}

// Validate checks the options once, before New.
func (o *Options) Validate() error {
	var errs []error
	if o.DomainSuffix == "" {
		errs = append(errs, errors.New("--domain-suffix: must not be empty"))
	}
	if o.MCS && strings.EqualFold(strings.TrimSuffix(o.DomainSuffix, "."), ClustersetDomain) {
		errs = append(errs, fmt.Errorf("--domain-suffix: must not be the clusterset domain %q with --mcs: a service's two hosts would be one", ClustersetDomain))
	}
	if o.Namespace == "" {
		errs = append(errs, errors.New("--namespace: must not be empty"))
	}
	if o.SyncTimeout < 0 {
		errs = append(errs, fmt.Errorf("--remote-cluster-timeout: must not be negative, got %s", o.SyncTimeout))
	}
	if o.StaleGrace < 0 {
		errs = append(errs, fmt.Errorf("--stale-cluster-grace: must not be negative, got %s", o.StaleGrace))
	}
	if o.MaxNamespaceWatches < 0 || o.MaxNamespaceWatches > 10000 {
		errs = append(errs, fmt.Errorf("--discovery-max-namespace-watches: must be 0-10000, got %d", o.MaxNamespaceWatches))
	}
	if o.ClusterQPS < 0 {
		errs = append(errs, fmt.Errorf("--remote-qps: must not be negative, got %g", o.ClusterQPS))
	}
	if o.ClusterBurst < 0 {
		errs = append(errs, fmt.Errorf("--remote-burst: must not be negative, got %d", o.ClusterBurst))
	}
	if o.ProbeInterval < 0 || o.ProbeInterval > 10*time.Minute {
		errs = append(errs, fmt.Errorf("--remote-probe-interval: must be 0-10m (0: the default), got %s", o.ProbeInterval))
	}
	if o.ProbeTimeout < 0 || o.ProbeTimeout > time.Minute {
		errs = append(errs, fmt.Errorf("--remote-probe-timeout: must be 0-1m (0: the default), got %s", o.ProbeTimeout))
	}
	if o.ProbeFailures < 0 || o.ProbeFailures > 100 {
		errs = append(errs, fmt.Errorf("--remote-probe-failures: must be 0-100 (0: the default), got %d", o.ProbeFailures))
	}
	return errors.Join(errs...)
}

// The client rate limit of each cluster when Options leaves it zero: enough for the
// informers' lists and watches and the health probes, while a relist of many
// clusters at once cannot flood their API servers.
const (
	defaultClusterQPS   = 50
	defaultClusterBurst = 100
)

// entry is one cluster ID: the cluster that serves, and a replacement syncing to take
// its place after a credential change.
type entry struct {
	active  *Cluster
	pending *Cluster
	// requests counts what the cluster ID's clients (active and pending alike) send
	// their API server.
	requests *requestCounts
}

// Registry holds every cluster and the aggregated endpoint index.
type Registry struct {
	opts Options
	log  *slog.Logger
	trim *trimmer // informer transforms and the intern table every cluster shares

	mu       sync.RWMutex
	clusters map[network.ClusterID]*entry // guarded by mu
	subs     []func(Change)               // guarded by mu
	// exportSubs learn of changed exports (OnExportsChange); guarded by mu.
	exportSubs []func(types.NamespacedName)
	watchers   []func() // guarded by mu; told of status changes
	closed     bool     // guarded by mu
	// meshSelectors are the mesh config's discovery selectors; overrides the remote
	// Secrets' replacements of them, by cluster. Guarded by mu.
	meshSelectors *network.DiscoverySelectors
	overrides     map[network.ClusterID]*network.DiscoverySelectors
	wg            sync.WaitGroup // swap goroutines
}

// New returns an empty Registry.
func New(opts Options) (*Registry, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ProbeInterval == 0 {
		opts.ProbeInterval = defaultProbeInterval
	}
	if opts.ProbeTimeout == 0 {
		opts.ProbeTimeout = defaultProbeTimeout
	}
	if opts.ProbeFailures == 0 {
		opts.ProbeFailures = defaultProbeFailures
	}
	if opts.MaxNamespaceWatches == 0 {
		opts.MaxNamespaceWatches = defaultMaxNamespaceWatches
	}
	if opts.ClusterQPS == 0 {
		opts.ClusterQPS = defaultClusterQPS
	}
	if opts.ClusterBurst == 0 {
		opts.ClusterBurst = defaultClusterBurst
	}
	return &Registry{
		opts:      opts,
		log:       opts.Logger.With("component", "clusterregistry"),
		clusters:  map[network.ClusterID]*entry{},
		overrides: map[network.ClusterID]*network.DiscoverySelectors{},
		trim:      newTrimmer(newInterner(0)),
	}, nil
}

// Subscribe registers fn to learn of every (host, cluster) whose served shard changed,
// including shards withdrawn from a stale cluster and served again when it is back.
// fn runs on the registry's goroutines, possibly concurrently, and must not block.
func (r *Registry) Subscribe(fn func(Change)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subs = append(r.subs, fn)
}

// OnStatusChange registers fn to learn that some cluster's state changed (synced,
// timed out, failed, stale, withdrawn, back); it reads Clusters or HasSynced for the
// details. fn must not block.
func (r *Registry) OnStatusChange(fn func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watchers = append(r.watchers, fn)
}

// SetCluster adds cluster id, or gives it a new client config. A new config is
// connected and synced beside the old one, which keeps serving; once the new one has
// synced it is swapped in and the old one stopped, so endpoints never disappear during
// a credential rotation. A replacement that never syncs never takes over; its errors
// show in the cluster's Rotation status.
func (r *Registry) SetCluster(id network.ClusterID, source string, cfg *rest.Config) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	c, err := newCluster(r.clusterOptions(id), id, source, cfg)
	if err != nil {
		// Only a malformed rest.Config gets here; the loader has already checked it.
		r.log.Error("cluster not added", "cluster", id, "source", source, "error", err)
		return
	}
	e := r.clusters[id]
	if e == nil {
		r.clusters[id] = &entry{active: c, requests: c.opts.requests}
		c.start()
		r.log.Info("cluster added", "cluster", id, "source", source, "server", c.server)
		return
	}
	if e.pending != nil {
		pending := e.pending
		r.wg.Add(1)
		go func() { defer r.wg.Done(); pending.stop() }()
	}
	e.pending = c
	c.start()
	r.log.Info("cluster credentials changed; syncing the new client before swapping", "cluster", id, "source", source, "server", c.server)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		select {
		case <-c.synced:
		case <-c.stopped():
			return
		}
		r.mu.Lock()
		cur := r.clusters[id]
		if cur == nil || cur.pending != c {
			r.mu.Unlock()
			return
		}
		old := cur.active
		cur.active, cur.pending = c, nil
		r.mu.Unlock()
		r.log.Info("cluster swapped to new credentials", "cluster", id)
		r.notifyAll(old, c)
		old.stop()
	}()
}

// RemoveCluster stops cluster id and drops everything learned from it.
func (r *Registry) RemoveCluster(id network.ClusterID) {
	r.mu.Lock()
	e := r.clusters[id]
	delete(r.clusters, id)
	delete(r.overrides, id)
	r.mu.Unlock()
	if e == nil {
		return
	}
	if e.pending != nil {
		e.pending.stop()
	}
	e.active.stop()
	r.log.Info("cluster removed", "cluster", id)
	r.notifyAll(e.active, nil)
	r.changed()
}

// Close stops every cluster.
func (r *Registry) Close() {
	r.mu.Lock()
	r.closed = true
	ids := make([]network.ClusterID, 0, len(r.clusters))
	for id := range r.clusters {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	for _, id := range ids {
		r.RemoveCluster(id)
	}
	r.wg.Wait()
}

// HasSynced reports whether every known cluster has synced or timed out. A cluster
// that synced and then went stale still counts: readiness is about startup.
func (r *Registry) HasSynced() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, e := range r.clusters {
		if !e.active.hasSynced() {
			if st := e.active.status(); st.State != StateTimedOut {
				return false
			}
		}
	}
	return true
}

// Clusters describes every cluster, sorted by ID.
func (r *Registry) Clusters() []ClusterStatus {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]ClusterStatus, 0, len(r.clusters))
	for _, e := range r.clusters {
		st := e.active.status()
		st.APIRequests = e.requests.snapshot()
		if e.pending != nil {
			p := e.pending.status()
			st.Rotation = &p
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ClusterNetworks returns the network each cluster's system namespace is labelled
// with (topology.istio.io/network), read from its informer's cache; clusters without
// the label are left out.
func (r *Registry) ClusterNetworks() map[network.ClusterID]network.NetworkID {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := map[network.ClusterID]network.NetworkID{}
	for id, e := range r.clusters {
		if n := e.active.network(); n != "" {
			out[id] = n
		}
	}
	return out
}

// Services returns what each cluster knows of host.
func (r *Registry) Services(host string) map[network.ClusterID]*Shard {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := map[network.ClusterID]*Shard{}
	for id, e := range r.clusters {
		if s := e.active.shard(host); s != nil {
			out[id] = s
		}
	}
	return out
}

// Endpoints returns the ready endpoints of host's service port in each cluster that
// has any.
func (r *Registry) Endpoints(host string, port int32) map[network.ClusterID][]Endpoint {
	out := map[network.ClusterID][]Endpoint{}
	for id, s := range r.Services(host) {
		var ready []Endpoint
		for _, ep := range s.Endpoints[port] {
			if ep.Ready {
				ready = append(ready, ep)
			}
		}
		if len(ready) > 0 {
			out[id] = ready
		}
	}
	return out
}

// Hosts returns every service host known in any cluster, sorted.
func (r *Registry) Hosts() []string {
	r.mu.RLock()
	seen := map[string]bool{}
	for _, e := range r.clusters {
		for _, h := range e.active.hosts() {
			seen[h] = true
		}
	}
	r.mu.RUnlock()
	out := make([]string, 0, len(seen))
	for h := range seen {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

// SetDiscoverySelectors puts the mesh config's discovery selectors in force (nil or
// empty: every namespace) for every cluster without an override of its own. Clusters
// start and stop namespace watches to follow, and the services of namespaces that
// became selected or unselected are pushed as changes.
func (r *Registry) SetDiscoverySelectors(sel *network.DiscoverySelectors) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.meshSelectors = sel
	for id := range r.clusters {
		r.applySelectorsLocked(id)
	}
}

// SetClusterDiscoverySelectors gives cluster id discovery selectors of its own, in
// place of the mesh config's (sel nil and override false: the mesh config's again).
// It may be called before the cluster is added; RemoveCluster forgets it.
func (r *Registry) SetClusterDiscoverySelectors(id network.ClusterID, sel *network.DiscoverySelectors, override bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if override {
		r.overrides[id] = sel
	} else {
		delete(r.overrides, id)
	}
	r.applySelectorsLocked(id)
}

// selectorsLocked returns the selectors in force for cluster id. Called with r.mu
// held.
func (r *Registry) selectorsLocked(id network.ClusterID) (*network.DiscoverySelectors, bool) {
	if sel, ok := r.overrides[id]; ok {
		return sel, true
	}
	return r.meshSelectors, false
}

// applySelectorsLocked hands cluster id its selectors. Called with r.mu held.
func (r *Registry) applySelectorsLocked(id network.ClusterID) {
	e := r.clusters[id]
	if e == nil {
		return
	}
	sel, override := r.selectorsLocked(id)
	e.active.setDiscoverySelectors(sel, override)
	if e.pending != nil {
		e.pending.setDiscoverySelectors(sel, override)
	}
}

// clusterOptions is what the registry gives cluster id. Called with r.mu held.
func (r *Registry) clusterOptions(id network.ClusterID) clusterOptions {
	sel, override := r.selectorsLocked(id)
	requests := &requestCounts{}
	if e := r.clusters[id]; e != nil {
		requests = e.requests
	}
	return clusterOptions{
		requests:      requests,
		selectors:     sel,
		override:      override,
		maxScopes:     r.opts.MaxNamespaceWatches,
		namespace:     r.opts.Namespace,
		syncTimeout:   r.opts.SyncTimeout,
		staleGrace:    r.opts.StaleGrace,
		probeInterval: r.opts.ProbeInterval,
		probeTimeout:  r.opts.ProbeTimeout,
		probeFailures: r.opts.ProbeFailures,
		host:          r.host,
		mcs:           r.opts.MCS,
		trim:          r.trim,
		qps:           r.opts.ClusterQPS,
		burst:         r.opts.ClusterBurst,
		log:           r.log.With("cluster", id),
		sink:          r,
	}
}

// The registry is the sink of each of its clusters.
var _ clusterSink = (*Registry)(nil)

func (r *Registry) host(key types.NamespacedName) string {
	return key.Name + "." + key.Namespace + ".svc." + r.opts.DomainSuffix
}

// notify tells subscribers that c's shards of hosts changed, if c is the cluster that
// serves its ID (a pending replacement stays silent until it is swapped in).
func (r *Registry) notify(c *Cluster, hosts []string) {
	r.mu.RLock()
	e := r.clusters[c.id]
	active := e != nil && e.active == c
	subs := r.subs
	r.mu.RUnlock()
	if !active {
		return
	}
	for _, h := range hosts {
		for _, fn := range subs {
			fn(Change{Host: h, Cluster: c.id})
		}
	}
	r.notifyExports(clustersetKeys(hosts))
}

// exportsChanged tells export subscribers that c's export of key changed, if c is
// the cluster that serves its ID.
func (r *Registry) exportsChanged(c *Cluster, key types.NamespacedName) {
	r.mu.RLock()
	e := r.clusters[c.id]
	active := e != nil && e.active == c
	r.mu.RUnlock()
	if active {
		r.notifyExports([]types.NamespacedName{key})
	}
}

// clustersetKeys returns the services of the clusterset hosts among hosts.
func clustersetKeys(hosts []string) []types.NamespacedName {
	var out []types.NamespacedName
	for _, h := range hosts {
		if k, ok := clustersetKey(h); ok {
			out = append(out, k)
		}
	}
	return out
}

// notifyAll tells subscribers of every host whose shard differs between old and cur
// (either may be nil), after cur replaced old.
func (r *Registry) notifyAll(old, cur *Cluster) {
	id := old.id
	hosts := map[string]bool{}
	for _, h := range old.hosts() {
		hosts[h] = true
	}
	if cur != nil {
		for _, h := range cur.hosts() {
			hosts[h] = true
		}
	}
	r.mu.RLock()
	subs := r.subs
	r.mu.RUnlock()
	for h := range hosts {
		var a, b *Shard
		a = old.shard(h)
		if cur != nil {
			b = cur.shard(h)
		}
		if reflect.DeepEqual(a, b) {
			continue
		}
		for _, fn := range subs {
			fn(Change{Host: h, Cluster: id})
		}
	}
	// Every export either had: subscribers compare for themselves.
	keys := old.exportKeys()
	if cur != nil {
		keys = append(keys, cur.exportKeys()...)
	}
	slices.SortFunc(keys, func(a, b types.NamespacedName) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	r.notifyExports(slices.Compact(keys))
	r.changed()
}

// changed tells status watchers that some cluster's state changed.
func (r *Registry) changed() {
	r.mu.RLock()
	ws := r.watchers
	r.mu.RUnlock()
	for _, fn := range ws {
		fn()
	}
}
