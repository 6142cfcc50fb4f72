package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/cmd/horizon/app/debugauth"
	"github.com/horizon-mesh/horizon/eds"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/network/gatewaysource"
	"github.com/horizon-mesh/horizon/network/meshsource"
	"github.com/horizon-mesh/horizon/secrets"
)

// shutdownTimeout bounds the graceful part of shutdown: open xDS streams and HTTP
// requests get this long to finish before they are cut.
const shutdownTimeout = 10 * time.Second

// Horizon is Horizon assembled: the remote-secret controller feeding the cluster
// registry, the meshNetworks and Gateway sources, the xDS server, and the gRPC and
// HTTP servers on their listeners. New builds it without starting anything; Run runs
// it until its context ends.
type Horizon struct {
	opts   Options
	log    *slog.Logger
	config *rest.Config // the config cluster's

	registry *clusterregistry.Registry
	secrets  *secrets.Controller
	mesh     *meshsource.Source
	meshCfg  *meshsource.MeshConfigSource
	gateways *gatewaysource.Source
	resolver *network.Resolver
	xds      *eds.Server
	identity *identityBinder // nil without a client CA

	xdsLis, httpLis net.Listener
	grpc            *grpc.Server
	http            *http.Server

	ran atomic.Bool
}

// New builds Horizon from opts, reading the config cluster through cfg (which is
// also the config cluster's own entry in the registry, under Secrets.ClusterID) and
// logging to logger. It listens on XDSAddress and HTTPAddress (port 0 picks a free
// port; see XDSAddr and HTTPAddr) but serves nothing and starts no goroutine before
// Run. Call Run once: it closes the listeners when it returns.
func New(opts Options, cfg *rest.Config, logger *slog.Logger) (*Horizon, error) {
	if cfg == nil {
		return nil, errors.New("the config cluster's client config is required")
	}
	if logger == nil {
		logger = slog.Default()
	}
	opts = opts.withNamespace()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("build config-cluster client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("build config-cluster dynamic client: %w", err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("build config-cluster discovery client: %w", err)
	}
	h := &Horizon{opts: opts, log: logger, config: cfg}
	if err := h.build(client, dyn, disc); err != nil {
		return nil, err
	}
	if err := h.listen(); err != nil {
		return nil, err
	}
	return h, nil
}

// build makes the components and connects them: secrets → registry → eds, with the
// meshNetworks and Gateway sources and the DNS resolver telling eds when its
// configuration changed.
func (h *Horizon) build(client kubernetes.Interface, dyn dynamic.Interface, disc discovery.DiscoveryInterface) error {
	o := h.opts
	var err error
	o.Registry.Logger = h.log
	if h.registry, err = clusterregistry.New(o.Registry); err != nil {
		return err
	}
	// The sources call back from their Run goroutines, which start after h.xds is
	// set; the check keeps an early call harmless all the same.
	configChanged := func() {
		if h.xds != nil {
			h.xds.ConfigChanged()
		}
	}
	// The resolver looks gateway names up off the push path; a changed answer pushes.
	o.Resolver.OnChange, o.Resolver.Logger = configChanged, h.log
	if h.resolver, err = network.NewResolver(o.Resolver); err != nil {
		return err
	}
	o.MeshNetworks.Client, o.MeshNetworks.Logger = client, h.log
	o.MeshNetworks.OnChange = func(*network.Networks) { configChanged() }
	if h.mesh, err = meshsource.New(o.MeshNetworks); err != nil {
		return err
	}
	// The mesh config's discoverySelectors scope what every cluster watches.
	o.MeshConfig.Client, o.MeshConfig.Logger = client, h.log
	o.MeshConfig.OnChange = func(mc *network.MeshConfig) { h.registry.SetDiscoverySelectors(mc.DiscoverySelectors) }
	if h.meshCfg, err = meshsource.NewMeshConfig(o.MeshConfig); err != nil {
		return err
	}
	o.Gateways.Dynamic, o.Gateways.Discovery, o.Gateways.Logger, o.Gateways.OnChange = dyn, disc, h.log, configChanged
	if h.gateways, err = gatewaysource.New(o.Gateways); err != nil {
		return err
	}
	metrics := newMetricsRegistry()
	o.EDS.Source, o.EDS.Networks, o.EDS.Lookup = h.registry, h.mesh.Current, h.resolver.Lookup
	o.EDS.Gateways, o.EDS.Metrics, o.EDS.Logger = passthroughServers{h.gateways}, metrics, h.log
	o.EDS.TrustDomain = o.TrustDomain // the identities the mTLS clusters accept
	if h.xds, err = eds.New(o.EDS); err != nil {
		return err
	}
	o.Secrets.Client, o.Secrets.Handler, o.Secrets.Logger = client, h.registry, h.log
	if h.secrets, err = secrets.New(o.Secrets); err != nil {
		return err
	}
	metrics.MustRegister(newStatusCollector(h))
	if o.TLS.ClientCAFile != "" {
		h.identity = newIdentityBinder(o.TrustDomain, metrics, h.log)
	}
	o.Debug.Client, o.Debug.Logger, o.Debug.Metrics = client, h.log, metrics
	debug, err := debugauth.New(o.Debug)
	if err != nil {
		return err
	}
	h.http = &http.Server{Handler: h.httpMux(metrics, debug, o.Pprof), ReadHeaderTimeout: 10 * time.Second}
	return nil
}

// listen opens the xDS and HTTP listeners and builds the gRPC server, whose
// credentials depend on where it listens. With a client CA, interceptors bind each
// proxy's node to its certificate's identity.
func (h *Horizon) listen() error {
	var err error
	if h.xdsLis, err = net.Listen("tcp", h.opts.XDSListenAddress()); err != nil {
		return fmt.Errorf("listen on --xds-address: %w", err)
	}
	// Validate allowed a loopback address or localhost: make sure of what it became.
	if !h.opts.TLS.enabled() && !h.opts.XDSAllowPlaintextRemote && !isLoopbackAddr(h.xdsLis.Addr()) {
		h.xdsLis.Close()
		return fmt.Errorf("--xds-address %q listens on %s, not a loopback address: plaintext xDS needs --xds-allow-plaintext-remote there",
			cut(h.opts.XDSListenAddress()), h.xdsLis.Addr())
	}
	if h.httpLis, err = net.Listen("tcp", h.opts.HTTPAddress); err != nil {
		h.xdsLis.Close()
		return fmt.Errorf("listen on --http-address: %w", err)
	}
	creds, err := h.opts.TLS.serverOption(h.log, h.xdsLis.Addr())
	if err != nil {
		h.xdsLis.Close()
		h.httpLis.Close()
		return err
	}
	opts := []grpc.ServerOption{creds,
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Most proxies hold one connection each and are idle between pushes: return
		// a connection's write buffer to a shared pool after each flush instead of
		// keeping 32 KiB per connection.
		grpc.SharedWriteBuffer(true),
	}
	if h.identity != nil {
		// Chained first: a call from a client with no usable identity goes no further.
		opts = append(opts, grpc.ChainStreamInterceptor(h.identity.stream), grpc.ChainUnaryInterceptor(h.identity.unary))
		h.log.Info("xDS client identities bound to their certificates' SPIFFE IDs", "trustDomain", h.opts.TrustDomain)
	}
	h.grpc = grpc.NewServer(append(opts, h.xds.GRPCOptions()...)...)
	h.xds.Register(h.grpc)
	return nil
}

// Run adds the config cluster to the registry, starts every component and serves xDS
// and HTTP until ctx is done or a server fails. Then it shuts down gracefully: open
// xDS streams and HTTP requests get shutdownTimeout to finish, every goroutine it
// started is joined, and every cluster is stopped. It returns the server's error, if
// one failed, and nil after ctx ended. Run may be called once.
func (h *Horizon) Run(ctx context.Context) error {
	if !h.ran.CompareAndSwap(false, true) {
		return errors.New("horizon: Run called twice")
	}
	defer h.registry.Close()
	defer h.httpLis.Close()
	defer h.xdsLis.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	// The mesh config is read before any cluster is added, so that a cluster lists
	// only the namespaces its discovery selectors select; one that cannot be read in
	// meshConfigWait is applied when it can.
	wg.Go(func() { h.meshCfg.Run(ctx) })
	waitMeshConfig(ctx, h.meshCfg.HasSynced)

	// The config cluster is a cluster like the others.
	h.registry.SetCluster(h.opts.Secrets.ClusterID, "config cluster", h.config)
	for _, run := range []func(context.Context){h.mesh.Run, h.gateways.Run, h.secrets.Run, h.resolver.Run, h.xds.Run} {
		wg.Go(func() { run(ctx) })
	}
	errc := make(chan error, 2)
	go func() { errc <- h.grpc.Serve(h.xdsLis) }()
	go func() { errc <- h.http.Serve(h.httpLis) }()
	serving := 2
	h.log.Info("horizon serving", "xds", h.xdsLis.Addr().String(), "http", h.httpLis.Addr().String(),
		"clusterID", h.opts.Secrets.ClusterID, "namespace", h.opts.Secrets.Namespace)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		serving--
	}
	h.log.Info("shutting down")
	shutdownCtx, stop := context.WithTimeout(context.Background(), shutdownTimeout)
	defer stop()
	stopped := make(chan struct{})
	go func() {
		h.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-shutdownCtx.Done():
		h.grpc.Stop()
		<-stopped
	}
	if err := h.http.Shutdown(shutdownCtx); err != nil {
		_ = h.http.Close()
	}
	for ; serving > 0; serving-- {
		if err := <-errc; serveErr == nil {
			serveErr = err
		}
	}
	cancel()
	wg.Wait()
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) && !errors.Is(serveErr, grpc.ErrServerStopped) {
		return serveErr
	}
	return nil
}

// meshConfigWait bounds how long Run waits for the mesh config before adding clusters.
const meshConfigWait = 10 * time.Second

// waitMeshConfig returns once synced reports true, ctx ends or meshConfigWait passed.
func waitMeshConfig(ctx context.Context, synced func() bool) {
	ctx, cancel := context.WithTimeout(ctx, meshConfigWait)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !synced() {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Ready says why Horizon is not ready, or nil once it is: remote Secrets listed, the
// meshNetworks loaded, Gateway resources synced, every known cluster synced or timed
// out, and a first xDS push made. /readyz answers with it.
func (h *Horizon) Ready() error {
	switch {
	case !h.secrets.HasSynced():
		return errors.New("remote secrets not synced")
	case !h.mesh.HasSynced():
		return errors.New("meshNetworks not loaded")
	case !h.meshCfg.HasSynced():
		return errors.New("mesh config not loaded")
	case !h.gateways.HasSynced():
		return errors.New("Gateway resources not synced")
	case !h.registry.HasSynced():
		return errors.New("clusters not synced")
	case h.xds.Pushes() == 0:
		return errors.New("no xDS push yet")
	}
	return nil
}

// XDSAddr is the address the xDS gRPC server listens on.
func (h *Horizon) XDSAddr() net.Addr { return h.xdsLis.Addr() }

// HTTPAddr is the address the HTTP server (health, metrics, debug) listens on.
func (h *Horizon) HTTPAddr() net.Addr { return h.httpLis.Addr() }

// Registry is the cluster registry: every cluster, its status and its endpoints.
func (h *Horizon) Registry() *clusterregistry.Registry { return h.registry }

// EDS is the xDS server.
func (h *Horizon) EDS() *eds.Server { return h.xds }

// Secrets is the remote-secret controller.
func (h *Horizon) Secrets() *secrets.Controller { return h.secrets }

// MeshNetworks is the meshNetworks source.
func (h *Horizon) MeshNetworks() *meshsource.Source { return h.mesh }

// MeshConfig returns the mesh config source.
func (h *Horizon) MeshConfig() *meshsource.MeshConfigSource { return h.meshCfg }

// Gateways is the source of the Gateway resources' AUTO_PASSTHROUGH servers.
func (h *Horizon) Gateways() *gatewaysource.Source { return h.gateways }

// passthroughServers hands the Gateway resources' AUTO_PASSTHROUGH servers to the
// xDS server.
type passthroughServers struct{ src *gatewaysource.Source }

func (p passthroughServers) PassthroughServers() []eds.PassthroughServer {
	servers := p.src.Servers()
	out := make([]eds.PassthroughServer, len(servers))
	for i, s := range servers {
		out[i] = eds.PassthroughServer{Gateway: s.Gateway, Selector: s.Selector, Port: s.Port, Hosts: s.Hosts}
	}
	return out
}
