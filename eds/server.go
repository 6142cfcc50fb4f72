package eds

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/network"
)

// EndpointSource is what the server needs of the cluster registry.
type EndpointSource interface {
	// Services returns what each cluster knows of host.
	Services(host string) map[network.ClusterID]*clusterregistry.Shard
	// Hosts returns every known host.
	Hosts() []string
	// Subscribe registers fn to learn of changed (host, cluster) pairs.
	Subscribe(fn func(clusterregistry.Change))
}

// Options configures a Server.
type Options struct {
	Source EndpointSource
	// Networks returns the meshNetworks in force.
	Networks func() *network.Networks
	// Lookup resolves gateway DNS names (cached); nil resolves nothing.
	Lookup func(host string) []string
	// DebounceAfter is the quiet time after a change before a push; DebounceMax caps
	// how long a stream of changes may delay one.
	DebounceAfter time.Duration
	DebounceMax   time.Duration
	// CacheSize bounds the cache of built ClusterLoadAssignments.
	CacheSize int
	// Metrics, if set, registers the server's Prometheus metrics.
	Metrics prometheus.Registerer
	// Gateways supplies AUTO_PASSTHROUGH Gateway servers for router proxies; nil
	// means none.
	Gateways GatewayConfig
	// DefaultPassthrough gives a router that no Gateway resource selects a
	// passthrough listener on 15443 for every service.
	DefaultPassthrough bool
	// ProxylessMTLS sends proxyless gRPC clients mTLS clusters (certificate provider
	// instance "default"), which cross-network calls through a gateway need.
	ProxylessMTLS bool
	Logger        *slog.Logger
}

// AddFlags binds the options that come from the command line.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&o.DebounceAfter, "debounce-after", 100*time.Millisecond, "quiet time after an endpoint or config change before pushing")
	fs.DurationVar(&o.DebounceMax, "debounce-max", time.Second, "longest a stream of changes may delay a push")
	fs.BoolVar(&o.DefaultPassthrough, "default-passthrough", true, "give gateways that no AUTO_PASSTHROUGH Gateway resource selects a passthrough listener on 15443 for every service")
	fs.BoolVar(&o.ProxylessMTLS, "proxyless-mtls", true, "send proxyless gRPC clients mTLS clusters using their certificate provider instance \"default\"")
}

// Validate checks the values that come from flags; New also checks the wiring.
func (o *Options) Validate() error {
	var errs []error
	if o.DebounceAfter < 0 {
		errs = append(errs, fmt.Errorf("--debounce-after: must not be negative, got %s", o.DebounceAfter))
	}
	if o.DebounceMax < o.DebounceAfter {
		errs = append(errs, fmt.Errorf("--debounce-max: must be at least --debounce-after (%s), got %s", o.DebounceAfter, o.DebounceMax))
	}
	if o.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("eds: cache size must not be negative, got %d", o.CacheSize))
	}
	return errors.Join(errs...)
}

// group is the resources shared by every proxy with one view.
type group struct {
	view View
	clas map[string]*endpointv3.ClusterLoadAssignment // by cluster name
	// A router's own listeners and clusters (they depend on its labels).
	listeners, clusters []types.Resource
	// What the last snapshot held per type URL, to version only what changed.
	sent map[resourcev3.Type]*typeState

	snap       atomic.Pointer[groupSnapshot] // published resources
	mu         sync.Mutex
	streams    map[*xdsStream]struct{} // guarded by mu
	emptySince time.Time               // guarded by mu: when streams became empty
}

// current returns the group's published resources (nil before its first push).
func (g *group) current() groupSnapshot {
	if p := g.snap.Load(); p != nil {
		return *p
	}
	return nil
}

// groupIdleTimeout is how long a group without streams is kept (and rebuilt on
// pushes) before it is dropped.
const groupIdleTimeout = time.Minute

// attach adds st to the group; callers hold Server.pushMu, so that a push cannot
// drop the group in between.
func (g *group) attach(st *xdsStream) {
	g.mu.Lock()
	g.streams[st] = struct{}{}
	g.emptySince = time.Time{}
	g.mu.Unlock()
}

// idle returns how long the group has had no streams at now (0 if it has some).
func (g *group) idle(now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.streams) > 0 {
		g.emptySince = time.Time{}
		return 0
	}
	if g.emptySince.IsZero() {
		g.emptySince = now
	}
	return now.Sub(g.emptySince)
}

func (g *group) detach(st *xdsStream) {
	g.mu.Lock()
	delete(g.streams, st)
	g.mu.Unlock()
}

// publish makes snap the group's resources and wakes the streams it concerns.
func (g *group) publish(snap groupSnapshot) {
	g.mu.Lock()
	g.snap.Store(&snap)
	streams := make([]*xdsStream, 0, len(g.streams))
	for st := range g.streams {
		streams = append(streams, st)
	}
	g.mu.Unlock()
	for _, st := range streams {
		st.wake(snap)
	}
}

// typeState is one resource type of a group's last snapshot.
type typeState struct {
	items map[string]types.Resource // by name: the messages published
	snap  *typeSnapshot             // as published
}

// hostState is what the last push built for one host.
type hostState struct {
	gen       uint64
	namespace string
	ports     []int32
}

// cacheKey names one built ClusterLoadAssignment; builtCLA says from which inputs
// it was built. Keying by name only (not by inputs) keeps one entry per resource, so
// a stream of changes replaces entries instead of piling up outdated ones.
type cacheKey struct {
	group string
	name  string
}

type builtCLA struct {
	gen  uint64 // host generation
	topo uint64 // topology generation
	cla  *endpointv3.ClusterLoadAssignment
}

// Server serves split-horizon EDS (and the clusters that use it) over xDS.
type Server struct {
	opts  Options
	log   *slog.Logger
	built *lru.Cache[cacheKey, builtCLA]

	metrics    *metrics
	wire       bool // responses go out pre-assembled (GRPCOptions)
	streamsMu  sync.Mutex
	streams    map[*xdsStream]struct{} // guarded by streamsMu
	lastChange atomic.Int64            // unix nanoseconds of the change that started the last push

	trigger chan struct{}

	mu           sync.Mutex
	pendingHosts map[string]bool // guarded by mu
	pendingFull  bool            // guarded by mu

	// Owned by the push goroutine (and by ensureGroup, which holds pushMu).
	pushMu    sync.Mutex
	groups    map[string]*group
	hosts     map[string]*hostState
	hostGen   uint64
	topo      *Topology
	topoGen   uint64
	gateways  []network.Gateway
	clusters  []types.Resource                                       // CDS, the same for every sidecar group
	grpc      struct{ listeners, routes, clusters []types.Resource } // the same for every proxyless group
	version   uint64
	pushCount uint64
}

// New returns a Server; Run starts its push loop, Register adds it to a gRPC server.
func New(opts Options) (*Server, error) {
	if opts.CacheSize == 0 {
		opts.CacheSize = 100_000
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Source == nil || opts.Networks == nil {
		return nil, errors.New("eds: an endpoint source and a networks source are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	built, err := lru.New[cacheKey, builtCLA](opts.CacheSize)
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:         opts,
		log:          opts.Logger.With("component", "eds"),
		built:        built,
		trigger:      make(chan struct{}, 1),
		pendingHosts: map[string]bool{},
		groups:       map[string]*group{},
		hosts:        map[string]*hostState{},
		streams:      map[*xdsStream]struct{}{},
	}
	s.metrics = newMetrics(opts.Metrics)
	opts.Source.Subscribe(func(c clusterregistry.Change) { s.HostChanged(c.Host) })
	return s, nil
}

// HostChanged schedules a push of host's resources.
func (s *Server) HostChanged(host string) {
	s.mu.Lock()
	s.pendingHosts[host] = true
	s.mu.Unlock()
	s.kick()
}

// ConfigChanged schedules a push of everything: networks or gateways changed.
func (s *Server) ConfigChanged() {
	s.mu.Lock()
	s.pendingFull = true
	s.mu.Unlock()
	s.kick()
}

func (s *Server) kick() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Run pushes debounced changes until ctx is done. The first push happens at once.
func (s *Server) Run(ctx context.Context) {
	s.ConfigChanged()
	var first time.Time // first change not yet pushed
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.trigger:
			now := time.Now()
			if first.IsZero() {
				first = now
			}
			wait := s.opts.DebounceAfter
			if left := first.Add(s.opts.DebounceMax).Sub(now); left < wait {
				wait = left
			}
			if s.version == 0 {
				wait = 0 // the first push is not debounced
			}
			timer.Reset(max(wait, 0))
		case <-timer.C:
			s.metrics.debounce.Observe(time.Since(first).Seconds())
			s.push(first)
			first = time.Time{}
		}
	}
}

// Pushes returns how many pushes have completed.
func (s *Server) Pushes() uint64 {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	return s.pushCount
}

// push rebuilds what changed since changedAt and hands every group its new
// snapshot.
func (s *Server) push(changedAt time.Time) {
	s.mu.Lock()
	pending, full := s.pendingHosts, s.pendingFull
	s.pendingHosts, s.pendingFull = map[string]bool{}, false
	s.mu.Unlock()

	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	start := time.Now()

	if full || s.topo == nil || s.gatewayHostChanged(pending) {
		topo, gws := s.buildTopology()
		if s.topo == nil || !slices.Equal(gws, s.gateways) || topo.Networks != s.topo.Networks {
			s.topo, s.gateways = topo, gws
			s.topoGen++
			full = true
		}
	}
	if full {
		for _, h := range s.opts.Source.Hosts() {
			pending[h] = true
		}
		for h := range s.hosts {
			pending[h] = true
		}
	}
	cdsChanged := false
	for host := range pending {
		if s.updateHost(host) {
			cdsChanged = true
		}
	}
	if cdsChanged || full || s.clusters == nil {
		s.rebuildShared()
		for _, g := range s.groups {
			s.rebuildRouter(g)
		}
	}
	s.version++
	s.lastChange.Store(changedAt.UnixNano())
	for key, g := range s.groups {
		if g.idle(start) > groupIdleTimeout {
			delete(s.groups, key) // e.g. a router's pod labels from before a rollout
			s.log.Info("dropped idle proxy group", "group", key)
			continue
		}
		s.setSnapshot(g)
	}
	s.pushCount++
	s.metrics.pushes.Inc()
	s.metrics.build.Observe(time.Since(start).Seconds())
	s.log.Debug("pushed", "hosts", len(pending), "full", full, "groups", len(s.groups), "took", time.Since(start))
}

// gatewayHostChanged reports whether a changed host may be a gateway Service.
func (s *Server) gatewayHostChanged(hosts map[string]bool) bool {
	for h := range hosts {
		for _, shard := range s.opts.Source.Services(h) {
			if shard.Service.Labels[network.LabelNetwork] != "" {
				return true
			}
		}
		if s.topo != nil && s.topo.registryServices[h] {
			return true
		}
	}
	for _, gw := range s.gateways {
		if gw.Cluster != "" {
			return true // cannot tell cheaply whether a removed Service was a gateway
		}
	}
	return false
}

func (s *Server) buildTopology() (*Topology, []network.Gateway) {
	nets := s.opts.Networks()
	regSvcs := registryServices(nets)
	var svcs []network.GatewayService
	for _, h := range s.opts.Source.Hosts() {
		for id, shard := range s.opts.Source.Services(h) {
			if shard.Service.Labels[network.LabelNetwork] == "" && !regSvcs[h] {
				continue
			}
			gs := network.GatewayService{
				Cluster: id, Name: shard.Service.Name, Namespace: shard.Service.Namespace, Host: h,
				Labels: shard.Service.Labels, Annotations: shard.Service.Annotations,
			}
			for _, p := range shard.Service.Ports {
				gs.Ports = append(gs.Ports, p.Port)
			}
			gs.Addresses = append(append(gs.Addresses, shard.Service.LoadBalancer...), shard.Service.ExternalIPs...)
			svcs = append(svcs, gs)
		}
	}
	lookup := s.opts.Lookup
	if lookup == nil {
		lookup = func(string) []string { return nil }
	}
	gws := nets.Gateways(svcs, lookup)
	topo := NewTopology(nets, gws)
	topo.registryServices = regSvcs
	return topo, gws
}

// registryServices returns the hosts named by meshNetworks registryServiceName
// gateways.
func registryServices(nets *network.Networks) map[string]bool {
	out := map[string]bool{}
	for _, n := range nets.MeshNetworks().GetNetworks() {
		for _, gw := range n.GetGateways() {
			if h := gw.GetRegistryServiceName(); h != "" {
				out[h] = true
			}
		}
	}
	return out
}

// updateHost rebuilds host's ClusterLoadAssignments in every group. It reports
// whether the host's set of ports changed (so CDS must change).
func (s *Server) updateHost(host string) bool {
	shards := s.opts.Source.Services(host)
	portSet := map[int32]bool{}
	for _, sh := range shards {
		for _, p := range sh.Service.Ports {
			portSet[p.Port] = true
		}
	}
	ports := slices.Sorted(maps.Keys(portSet))
	old := s.hosts[host]
	s.hostGen++
	if len(ports) == 0 {
		delete(s.hosts, host)
	} else {
		ns := ""
		for _, sh := range shards {
			ns = sh.Service.Namespace
		}
		s.hosts[host] = &hostState{gen: s.hostGen, namespace: ns, ports: ports}
	}
	for _, g := range s.groups {
		if old != nil {
			for _, p := range old.ports {
				name := s.claName(g.view, host, p)
				delete(g.clas, name)
				if !slices.Contains(ports, p) {
					s.built.Remove(cacheKey{group: g.view.Key(), name: name})
				}
			}
		}
		for _, p := range ports {
			name := s.claName(g.view, host, p)
			g.clas[name] = s.build(g.view, host, p, name, shards)
		}
	}
	return old == nil || !slices.Equal(old.ports, ports)
}

func (s *Server) claName(v View, host string, port int32) string {
	if v.Role == RoleRouter {
		return SNIName(host, port)
	}
	return ClusterName(host, port)
}

// build returns the ClusterLoadAssignment for one group and service port, from the
// cache when neither the host nor the topology changed since it was built.
func (s *Server) build(v View, host string, port int32, name string, shards map[network.ClusterID]*clusterregistry.Shard) *endpointv3.ClusterLoadAssignment {
	key := cacheKey{group: v.Key(), name: name}
	gen := s.hosts[host].gen
	if b, ok := s.built.Get(key); ok && b.gen == gen && b.topo == s.topoGen {
		s.metrics.cacheHits.Inc()
		return b.cla
	}
	s.metrics.cacheMisses.Inc()
	cla := BuildLoadAssignment(name, endpointsOf(shards, port), s.topo, v)
	s.built.Add(key, builtCLA{gen: gen, topo: s.topoGen, cla: cla})
	return cla
}

// endpointsOf picks one service port's endpoints out of each cluster's shard.
func endpointsOf(shards map[network.ClusterID]*clusterregistry.Shard, port int32) map[network.ClusterID][]clusterregistry.Endpoint {
	eps := make(map[network.ClusterID][]clusterregistry.Endpoint, len(shards))
	for id, sh := range shards {
		if e := sh.Endpoints[port]; len(e) > 0 {
			eps[id] = e
		}
	}
	return eps
}

// rebuildShared rebuilds the resources every sidecar, and every proxyless client,
// shares: one cluster (and for gRPC one listener and route) per service port. Fresh
// slices each time: snapshots already handed out keep the old ones.
func (s *Server) rebuildShared() {
	hosts := slices.Sorted(maps.Keys(s.hosts))
	s.clusters = []types.Resource{}
	s.grpc.listeners, s.grpc.routes, s.grpc.clusters = nil, nil, nil
	for _, h := range hosts {
		for _, p := range s.hosts[h].ports {
			s.clusters = append(s.clusters, BuildCluster(h, p))
			s.grpc.listeners = append(s.grpc.listeners, buildGRPCListener(h, p))
			s.grpc.routes = append(s.grpc.routes, buildGRPCRoute(h, p))
			s.grpc.clusters = append(s.grpc.clusters, buildGRPCCluster(h, p, s.opts.ProxylessMTLS))
		}
	}
}

// rebuildRouter rebuilds a router group's listeners and clusters from the
// passthrough servers that select it.
func (s *Server) rebuildRouter(g *group) {
	if g.view.Role != RoleRouter {
		return
	}
	var all []PassthroughServer
	if s.opts.Gateways != nil {
		all = s.opts.Gateways.PassthroughServers()
	}
	servers := routerServers(all, g.view.Labels, s.opts.DefaultPassthrough)
	g.listeners, g.clusters = buildRouterResources(servers, s.hosts)
}

// setSnapshot publishes the group's resources. Each type's version, and each
// resource's version, changes only when its content did; a stream is woken only for
// resources it subscribes to; and a resource is encoded once per group and change,
// however many proxies are sent it.
func (s *Server) setSnapshot(g *group) {
	clas := make([]types.Resource, 0, len(g.clas)) // any order: versionType sorts names
	for _, cla := range g.clas {
		clas = append(clas, cla)
	}
	res := map[resourcev3.Type][]types.Resource{resourcev3.EndpointType: clas}
	switch g.view.Role {
	case RoleRouter:
		res[resourcev3.ClusterType] = g.clusters
		res[resourcev3.ListenerType] = g.listeners
	case RoleGRPC:
		res[resourcev3.ClusterType] = s.grpc.clusters
		res[resourcev3.ListenerType] = s.grpc.listeners
		res[resourcev3.RouteType] = s.grpc.routes
	default:
		res[resourcev3.ClusterType] = s.clusters
		// Sidecars get no listeners or routes from Horizon; an empty answer lets an
		// Envoy that asks for them finish starting without its fetch timeout.
		res[resourcev3.ListenerType] = nil
		res[resourcev3.RouteType] = nil
	}
	if g.sent == nil {
		g.sent = map[resourcev3.Type]*typeState{}
	}
	snap := groupSnapshot{}
	changed := false
	for typ, items := range res {
		st := g.sent[typ]
		if st == nil {
			st = &typeState{items: map[string]types.Resource{}}
			g.sent[typ] = st
		}
		if s.versionType(typ, st, items) {
			changed = true
		}
		snap[typ] = st.snap
	}
	if changed {
		g.publish(snap)
	}
}

// versionType updates st to items and reports whether anything changed. Only a
// resource that is new or was rebuilt is encoded; one whose bytes equal those
// before keeps its version. A resource's version is a hash of its bytes, so it
// means the same after a restart (a delta proxy reconnecting is not re-sent what
// it holds); the type's version moves on when any resource changed, appeared or
// went.
func (s *Server) versionType(typ string, st *typeState, items []types.Resource) bool {
	prev := st.snap
	changed := prev == nil
	next := &typeSnapshot{byName: make(map[string]*resource, len(items)), names: make([]string, 0, len(items))}
	nextItems := make(map[string]types.Resource, len(items))
	for _, r := range items {
		name := resourceName(r)
		nextItems[name] = r
		var old *resource
		if prev != nil {
			old = prev.byName[name]
		}
		if old != nil && st.items[name] == r {
			next.byName[name] = old
			continue
		}
		b, err := marshal(r)
		if err != nil {
			s.log.Error("cannot encode a resource; leaving it out", "type", typ, "name", name, "error", err)
			continue
		}
		if old != nil && bytes.Equal(old.any.Value, b) {
			next.byName[name] = old
			continue
		}
		changed = true
		next.byName[name] = newResource(typ, name, strconv.FormatUint(fnvHash(b), 36), r, b)
	}
	st.items = nextItems
	if !changed && len(next.byName) == len(prev.byName) {
		return false
	}
	next.names = slices.Sorted(maps.Keys(next.byName))
	// The type's version is a hash of its names and versions: equal contents,
	// equal versions, here and after a restart.
	h := fnv.New64a()
	for _, n := range next.names {
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write([]byte(next.byName[n].version))
		h.Write([]byte{0})
	}
	next.version = strconv.FormatUint(h.Sum64(), 36)
	st.snap = next
	return true
}

func fnvHash(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

// resourceName is the name of any resource served here: field 1 of Cluster,
// Listener, RouteConfiguration and ClusterLoadAssignment.
func resourceName(r types.Resource) string {
	switch m := r.(type) {
	case interface{ GetName() string }:
		return m.GetName()
	case interface{ GetClusterName() string }:
		return m.GetClusterName()
	}
	return ""
}

// ensureGroup creates the group of a newly seen view and gives it a snapshot before
// its first watch is created.
// st, if not nil, joins the group.
func (s *Server) ensureGroup(node *corev3.Node, st *xdsStream) *group {
	v := ViewOf(node)
	key := v.Key()
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	if g, ok := s.groups[key]; ok {
		if st != nil {
			g.attach(st)
		}
		return g
	}
	g := &group{view: v, clas: map[string]*endpointv3.ClusterLoadAssignment{}, streams: map[*xdsStream]struct{}{}}
	s.groups[key] = g
	if st != nil {
		g.attach(st)
	}
	if s.topo == nil {
		return g // the first push builds it
	}
	for host, hs := range s.hosts {
		shards := s.opts.Source.Services(host)
		for _, p := range hs.ports {
			name := s.claName(v, host, p)
			g.clas[name] = s.build(v, host, p, name, shards)
		}
	}
	s.rebuildRouter(g)
	s.setSnapshot(g)
	s.log.Info("new proxy group", "group", key)
	return g
}
