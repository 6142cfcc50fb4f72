package eds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/eds/xdsserver"
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
	// ClusterNetworks returns the network each cluster's system namespace is
	// labelled with (topology.istio.io/network); clusters without the label are left
	// out.
	ClusterNetworks() map[network.ClusterID]network.NetworkID
}

// Options configures a Server.
type Options struct {
	Source EndpointSource
	// Networks returns the meshNetworks in force.
	Networks func() *network.Networks
	// Lookup returns the cached addresses of a gateway DNS name; nil resolves nothing.
	// It is called during a push, under the push lock, so it must not wait on DNS
	// (network.Resolver.Lookup answers from its cache and resolves in the background;
	// its OnChange should call ConfigChanged).
	Lookup func(host string) []string
	// DebounceAfter: a change that follows this long without changes is pushed at
	// once; one that comes sooner after another is batched until this long passes
	// without a change. DebounceMax caps how long batching may delay a change.
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
	// TrustDomain is the SPIFFE trust domain of the mesh's workload identities
	// (spiffe://<trust domain>/ns/<namespace>/sa/<service account>): the mTLS
	// clusters sent to sidecars and proxyless clients accept only a server presenting
	// the identity of a pod behind the service (PeerIdentities). Empty means
	// DefaultTrustDomain.
	TrustDomain string
	// MaxGroups caps the proxy groups (distinct views) served at once: a proxy of a
	// new view past it is refused with ResourceExhausted until idle groups are
	// dropped. 0 means DefaultMaxGroups.
	MaxGroups int
	// MaxNamesPerStream caps the resource names one stream subscribes to
	// (xdsserver.Options.MaxNames); 0 means xdsserver.DefaultMaxNames.
	MaxNamesPerStream int
	// MaxStreamsPerConnection caps concurrent streams on one gRPC connection (HTTP/2
	// SETTINGS_MAX_CONCURRENT_STREAMS); 0 means DefaultMaxStreamsPerConnection.
	MaxStreamsPerConnection int
	// MaxMessageSize caps the size of a request gRPC accepts; a larger one ends the
	// stream with ResourceExhausted. 0 means DefaultMaxMessageSize.
	MaxMessageSize int
	// Limits bounds xDS streams over all connections and the rate of new streams
	// and of each stream's requests; zero fields take xdsserver.DefaultLimits.
	Limits xdsserver.Limits
	// TrafficDistribution is the mesh-wide default traffic distribution of services
	// that set none (spec.trafficDistribution, or the traffic-distribution
	// annotation on the Service or its Namespace, in any cluster): "" (none),
	// PreferClose, PreferSameZone or PreferSameNode.
	TrafficDistribution string
	Logger              *slog.Logger
}

// Defaults of the gRPC bounds in Options.
const (
	DefaultMaxStreamsPerConnection = 100
	DefaultMaxMessageSize          = 4 << 20
)

// DefaultMaxGroups is MaxGroups when it is not set.
const DefaultMaxGroups = 1000

// AddFlags binds the options that come from the command line.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&o.DebounceAfter, "debounce-after", 100*time.Millisecond, "a change that follows this long without changes is pushed at once; changes that keep coming closer together are batched until this long passes without one")
	fs.DurationVar(&o.DebounceMax, "debounce-max", time.Second, "longest batching may delay a change while changes keep coming")
	fs.BoolVar(&o.DefaultPassthrough, "default-passthrough", true, "give gateways that no AUTO_PASSTHROUGH Gateway resource selects a passthrough listener on 15443 for every service")
	fs.BoolVar(&o.ProxylessMTLS, "proxyless-mtls", true, "send proxyless gRPC clients mTLS clusters using their certificate provider instance \"default\"")
	fs.IntVar(&o.MaxNamesPerStream, "xds-max-names-per-stream", xdsserver.DefaultMaxNames, "most resource names one xDS stream may subscribe to; a request past it ends the stream with RESOURCE_EXHAUSTED")
	fs.IntVar(&o.MaxStreamsPerConnection, "xds-max-streams-per-connection", DefaultMaxStreamsPerConnection, "most concurrent xDS streams on one gRPC connection")
	fs.IntVar(&o.MaxMessageSize, "xds-max-message-size", DefaultMaxMessageSize, "largest xDS request accepted, in bytes; a larger one ends the stream with RESOURCE_EXHAUSTED")
	d := xdsserver.DefaultLimits()
	fs.IntVar(&o.Limits.MaxStreams, "xds-max-streams", d.MaxStreams, "most xDS streams (and unary Fetches) served at once over all connections; one past it is refused with RESOURCE_EXHAUSTED. The default is twice the 10,000-proxy fleet docs/load.md measures")
	fs.Float64Var(&o.Limits.NewStreamRate, "xds-new-stream-rate", d.NewStreamRate, "new xDS streams (and Fetches) accepted per second over all connections once --xds-new-stream-burst is spent (a token bucket, as istiod's PILOT_MAX_REQUESTS_PER_SECOND); one that gets no token within --xds-new-stream-wait is refused with RESOURCE_EXHAUSTED. 1,000 a second costs about a third of a core")
	fs.IntVar(&o.Limits.NewStreamBurst, "xds-new-stream-burst", d.NewStreamBurst, "new xDS streams accepted at once before --xds-new-stream-rate applies: a fleet of this many proxies (re)connecting together, as after a restart, is let in without waiting")
	fs.DurationVar(&o.Limits.NewStreamWait, "xds-new-stream-wait", d.NewStreamWait, "longest a new xDS stream waits for a token of --xds-new-stream-rate before it is refused")
	fs.Float64Var(&o.Limits.RequestRate, "xds-request-rate", d.RequestRate, "requests per second one xDS stream may send once --xds-request-burst is spent, not counting ACKs and NACKs of the responses it is sent (which never wait); a faster stream is read no faster. Changes are pushed at most about 10 times a second (--debounce-after), each needing a request or two to change a subscription")
	fs.IntVar(&o.Limits.RequestBurst, "xds-request-burst", d.RequestBurst, "requests one xDS stream may send at once before --xds-request-rate applies (ACKs and NACKs not counted)")
	fs.StringVar(&o.TrafficDistribution, "traffic-distribution", "", "traffic distribution of services that set none in spec.trafficDistribution or the "+network.AnnotationTrafficDistribution+" annotation (on the Service or its Namespace, in any cluster): empty for none (every endpoint in one priority), PreferClose or PreferSameZone (EDS priorities by network, region, zone and subzone, other networks' gateways last), or PreferSameNode (the proxy's own node first, then as PreferSameZone)")
	fs.IntVar(&o.MaxGroups, "xds-max-groups", DefaultMaxGroups, "most proxy groups (distinct role, network, network view and gateway labels) served at once; proxies of a new view past it are refused with RESOURCE_EXHAUSTED")
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
	for _, f := range []struct {
		flag string
		v    int
	}{{"--xds-max-names-per-stream", o.MaxNamesPerStream}, {"--xds-max-streams-per-connection", o.MaxStreamsPerConnection}, {"--xds-max-message-size", o.MaxMessageSize}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %d", f.flag, f.v))
		}
	}
	for _, f := range []struct {
		flag string
		bad  bool
		v    any
	}{
		{"--xds-max-streams", o.Limits.MaxStreams < 0, o.Limits.MaxStreams},
		{"--xds-new-stream-rate", o.Limits.NewStreamRate < 0, o.Limits.NewStreamRate},
		{"--xds-new-stream-burst", o.Limits.NewStreamBurst < 0, o.Limits.NewStreamBurst},
		{"--xds-new-stream-wait", o.Limits.NewStreamWait < 0, o.Limits.NewStreamWait},
		{"--xds-request-rate", o.Limits.RequestRate < 0, o.Limits.RequestRate},
		{"--xds-request-burst", o.Limits.RequestBurst < 0, o.Limits.RequestBurst},
	} {
		if f.bad {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %v", f.flag, f.v))
		}
	}
	if o.MaxGroups < 0 {
		errs = append(errs, fmt.Errorf("--xds-max-groups: must not be negative, got %d", o.MaxGroups))
	}
	if err := validTrustDomain(o.TrustDomain); err != nil {
		errs = append(errs, fmt.Errorf("--trust-domain: %w", err))
	}
	if _, ok := network.ParseTrafficDistribution(o.TrafficDistribution); !ok {
		errs = append(errs, fmt.Errorf("--traffic-distribution: must be empty, PreferClose, PreferSameZone or PreferSameNode, got %q", network.TruncateDistribution(o.TrafficDistribution)))
	}
	if o.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("eds: cache size must not be negative, got %d", o.CacheSize))
	}
	return errors.Join(errs...)
}

// Server serves split-horizon EDS (and the clusters that use it) over xDS: it
// groups proxies by view, builds and versions each group's resources, and
// publishes them as snapshots to its xDS protocol server.
type Server struct {
	opts    Options
	log     *slog.Logger
	built   *lru.Cache[cacheKey, builtCLA]
	metrics *metrics
	xds     *xdsserver.Server

	trigger chan struct{}
	now     func() time.Time // the debouncer's clock: time.Now, a fake in tests

	mu           sync.Mutex
	pendingHosts map[string]bool            // guarded by mu
	pendingFull  bool                       // guarded by mu
	pendingLocal *network.ClusterLocalHosts // guarded by mu: SetClusterLocal's, for the next push
	// clusterLocal is the cluster-local hosts in force (pendingLocal at the last
	// push). Owned by the push goroutine (under pushMu).
	clusterLocal *network.ClusterLocalHosts

	// Owned by the push goroutine (and by ensureGroup, which holds pushMu).
	pushMu       sync.Mutex
	groups       map[string]*group
	shares       map[string]*endpointShare // by View.endpointsKey, of the kept groups
	routerShares map[string]*routerShare   // by routerShare.key, of the kept routers
	routerGen    uint64                    // moves on when every router share is rebuilt
	known        *known                    // what views may name; nil before the first push
	idleTimeout  time.Duration             // groupIdleTimeout, shorter in tests
	hosts        map[string]*hostState
	hostGen      uint64
	topo         *Topology
	topoGen      uint64
	gateways     []network.Gateway
	clusters     []*xdsserver.Resource                                       // CDS, the same for every sidecar group
	grpc         struct{ listeners, routes, clusters []*xdsserver.Resource } // the same for every proxyless group
	version      uint64
	pushCount    uint64
	// distHosts and nodeHosts count the hosts with a traffic distribution, and with
	// PreferSameNode: while there are none, views leave out the proxies' locality
	// (node), so that it does not split groups (admit).
	distHosts, nodeHosts int
	// defaultDist is Options.TrafficDistribution, parsed.
	defaultDist network.TrafficDistribution
}

// New returns a Server; Run starts its push loop, Register adds it to a gRPC server.
func New(opts Options) (*Server, error) {
	if opts.CacheSize == 0 {
		opts.CacheSize = 100_000
	}
	if opts.MaxGroups == 0 {
		opts.MaxGroups = DefaultMaxGroups
	}
	if opts.MaxStreamsPerConnection == 0 {
		opts.MaxStreamsPerConnection = DefaultMaxStreamsPerConnection
	}
	if opts.MaxMessageSize == 0 {
		opts.MaxMessageSize = DefaultMaxMessageSize
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = DefaultTrustDomain
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
		now:          time.Now,
		pendingHosts: map[string]bool{},
		groups:       map[string]*group{},
		shares:       map[string]*endpointShare{},
		routerShares: map[string]*routerShare{},
		hosts:        map[string]*hostState{},
		idleTimeout:  groupIdleTimeout,
	}
	s.defaultDist, _ = network.ParseTrafficDistribution(opts.TrafficDistribution)
	s.metrics = newMetrics(opts.Metrics)
	s.xds, err = xdsserver.New(xdsserver.Options{
		Groups: xdsserver.GroupsFunc(func(node *corev3.Node, attach func(xdsserver.Group)) (xdsserver.Group, error) {
			g, err := s.ensureGroup(node, attach)
			if err != nil {
				return nil, err
			}
			return g, nil
		}),
		Metrics:  opts.Metrics,
		MaxNames: opts.MaxNamesPerStream,
		Limits:   opts.Limits,
		Logger:   s.log,
	})
	if err != nil {
		return nil, err
	}
	opts.Source.Subscribe(func(c clusterregistry.Change) { s.HostChanged(c.Host) })
	return s, nil
}

// Register adds the ADS, EDS, CDS, LDS and RDS services to g.
func (s *Server) Register(g *grpc.Server) { s.xds.Register(g) }

// GRPCOptions returns the options the gRPC server that Register is given should be
// created with: they let the server send responses without encoding them for each
// proxy, and bound streams per connection, request size (Options) and the data a
// client may have in flight. A server created without them works too, encoding
// every response, with gRPC's bounds.
//
// The flow-control windows are static (streamWindow, connWindow): with gRPC's
// default, dynamic windows, the server sends a proxy a PING to estimate the
// connection's bandwidth-delay product after most requests it receives — after
// the ACK of every push, on every connection — and reads the proxy's answer: a
// write and a read per proxy and push, a fifth of gRPC's system calls while a
// change reaches a fleet. xDS requests are small and arrive one at a time.
func (s *Server) GRPCOptions() []grpc.ServerOption {
	return append(s.xds.GRPCOptions(),
		grpc.MaxConcurrentStreams(uint32(min(s.opts.MaxStreamsPerConnection, math.MaxUint32))),
		grpc.MaxRecvMsgSize(s.opts.MaxMessageSize),
		grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow))
}

// The flow-control windows of GRPCOptions: what a client may send before the
// server reads it, on one stream and on one connection.
const (
	streamWindow = 1 << 20
	connWindow   = 1 << 20
)

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

// SetClusterLocal makes the hosts c matches cluster-local from the next push (nil:
// none): a proxy gets only the endpoints of its own cluster (node metadata
// CLUSTER_ID) of them, and none if that cluster is unknown, so that they are never
// reached through another network's gateway either.
func (s *Server) SetClusterLocal(c *network.ClusterLocalHosts) {
	s.mu.Lock()
	s.pendingLocal = c
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

// Run pushes debounced changes (debouncer) until ctx is done. The first push
// happens at once.
func (s *Server) Run(ctx context.Context) {
	s.ConfigChanged()
	d := debouncer{after: s.opts.DebounceAfter, max: s.opts.DebounceMax}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	sweep := time.NewTicker(max(s.idleTimeout/4, time.Millisecond))
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-sweep.C:
			s.pushMu.Lock()
			s.sweep(now)
			s.pushMu.Unlock()
		case <-s.trigger:
			wait := d.change(s.now())
			if s.version == 0 {
				wait = 0 // the first push is not debounced
			}
			timer.Reset(wait)
		case <-timer.C:
			first := d.pushed()
			s.metrics.debounce.Observe(time.Since(first).Seconds())
			s.push(first)
		}
	}
}

// Pushes returns how many pushes have completed.
func (s *Server) Pushes() uint64 {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	return s.pushCount
}
