package eds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

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
	fs.DurationVar(&o.DebounceMax, "debounce-max", 10*time.Second, "longest a stream of changes may delay a push")
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
}

// typeState is one resource type of a group's last snapshot.
type typeState struct {
	version  uint64
	items    map[string]types.Resource // by name
	versions map[string]string         // by name; handed to the cache, never modified
	encoded  map[string]types.Resource // by name: pre-encoded items (see preencode)
	list     []types.Resource          // the encoded items, as handed to the cache
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
	cache cachev3.SnapshotCache
	xds   serverv3.Server
	built *lru.Cache[cacheKey, builtCLA]

	metrics    *metrics
	tracker    *tracker
	lastChange atomic.Int64 // unix nanoseconds of the change that started the last push

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
	}
	s.metrics = newMetrics(opts.Metrics)
	s.tracker = &tracker{s: s, streams: map[int64]*stream{}}
	s.cache = cachev3.NewSnapshotCache(false, groupHash{}, nil)
	s.xds = serverv3.NewServer(context.Background(), s.cache, s.tracker.callbacks())
	opts.Source.Subscribe(func(c clusterregistry.Change) { s.HostChanged(c.Host) })
	return s, nil
}

// groupHash maps a proxy to its group.
type groupHash struct{}

func (groupHash) ID(node *corev3.Node) string { return ViewOf(node).Key() }

// Register adds the ADS, EDS, CDS, LDS and RDS services to g.
func (s *Server) Register(g *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
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
	for _, g := range s.groups {
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

// setSnapshot hands the group's resources to the cache. Each type's version, and
// each resource's version (for delta xDS), changes only when its content did, so
// unchanged types are not re-sent to state-of-the-world proxies and unchanged
// resources not to delta ones; and nothing is marshalled to compute them.
func (s *Server) setSnapshot(g *group) {
	clas := make([]types.Resource, 0, len(g.clas))
	for _, name := range slices.Sorted(maps.Keys(g.clas)) {
		clas = append(clas, g.clas[name])
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
	snap := &cachev3.Snapshot{VersionMap: map[string]map[string]string{}}
	for typ, items := range res {
		st := g.sent[typ]
		if st == nil {
			st = &typeState{items: map[string]types.Resource{}, versions: map[string]string{}}
			g.sent[typ] = st
		}
		s.versionType(st, items)
		snap.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(strconv.FormatUint(st.version, 10), st.list)
		snap.VersionMap[typ] = st.versions
	}
	if err := s.cache.SetSnapshot(context.Background(), g.view.Key(), snap); err != nil {
		s.log.Error("set snapshot", "group", g.view.Key(), "error", err)
	}
}

// versionType updates st to items: resources whose content changed get this push's
// version; if any changed, appeared or went, the type's version moves on. A rebuilt
// resource equal to the one before counts as unchanged.
func (s *Server) versionType(st *typeState, items []types.Resource) {
	changed := len(items) != len(st.items)
	next := make(map[string]types.Resource, len(items))
	for _, r := range items {
		name := cachev3.GetResourceName(r)
		prev, ok := st.items[name]
		if ok && prev != r && proto.Equal(prev, r) {
			r = prev
		}
		next[name] = r
		if prev != r {
			changed = true
		}
	}
	if !changed && st.list != nil {
		return
	}
	versions := make(map[string]string, len(items))
	encoded := make(map[string]types.Resource, len(items))
	list := make([]types.Resource, 0, len(items))
	v := strconv.FormatUint(s.version, 10)
	for _, name := range slices.Sorted(maps.Keys(next)) {
		r := next[name]
		if prev, ok := st.items[name]; ok && prev == r {
			versions[name], encoded[name] = st.versions[name], st.encoded[name]
		} else {
			versions[name], encoded[name] = v, preencode(r)
		}
		list = append(list, encoded[name])
	}
	st.version++
	st.items, st.versions, st.encoded, st.list = next, versions, encoded, list
}

// preencode returns a message of r's type that encodes to r's bytes but costs
// almost nothing to encode again: its name field, and the rest of r, already
// encoded, as unknown fields. The cache encodes every resource once per response,
// that is once per proxy; with this, the real encoding happens once per group.
// Field 1 is the name in every type served here (Cluster, Listener,
// RouteConfiguration, ClusterLoadAssignment); the cache reads it to index resources.
func preencode(r types.Resource) types.Resource {
	m := r.ProtoReflect()
	name := m.Descriptor().Fields().ByNumber(1)
	rest := proto.Clone(r).ProtoReflect()
	rest.Clear(name)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rest.Interface())
	if err != nil {
		return r // cannot happen for the messages built here; serve r as is
	}
	w := m.New()
	w.Set(name, m.Get(name))
	w.SetUnknown(b)
	return w.Interface().(types.Resource)
}

// decode turns a pre-encoded resource back into a plain message.
func decode(r types.Resource) (types.Resource, error) {
	b, err := proto.Marshal(r)
	if err != nil {
		return nil, err
	}
	m := r.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, err
	}
	return m.(types.Resource), nil
}

// ensureGroup creates the group of a newly seen view and gives it a snapshot before
// its first watch is created.
func (s *Server) ensureGroup(node *corev3.Node) {
	if node == nil {
		return
	}
	v := ViewOf(node)
	key := v.Key()
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	if _, ok := s.groups[key]; ok {
		return
	}
	g := &group{view: v, clas: map[string]*endpointv3.ClusterLoadAssignment{}}
	s.groups[key] = g
	if s.topo == nil {
		return // the first push builds it
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
}
