package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/eds"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/network/gatewaysource"
	"github.com/horizon-mesh/horizon/network/meshsource"
	"github.com/horizon-mesh/horizon/secrets"
)

// serveOptions is everything `horizon serve` takes from its flags.
type serveOptions struct {
	kubeconfig  string
	context     string
	meshFile    string
	xdsAddress  string
	httpAddress string
	logLevel    string
	pprof       bool
	secrets     secrets.Options
	registry    clusterregistry.Options
	eds         eds.Options
	tls         xdsTLSOptions
}

func (o *serveOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the config cluster (empty: in-cluster config)")
	fs.StringVar(&o.context, "context", "", "kubeconfig context of the config cluster (empty: current context)")
	fs.StringVar(&o.meshFile, "mesh-networks", "", "meshNetworks file, reloaded when it changes (empty: the meshNetworks key of ConfigMap istio in --namespace)")
	fs.StringVar(&o.xdsAddress, "xds-address", ":15010", "address of the xDS (ADS) gRPC server")
	fs.StringVar(&o.httpAddress, "http-address", ":15014", "address of the HTTP server (/healthz, /readyz)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&o.pprof, "pprof", false, "serve net/http/pprof under /debug/pprof/ on --http-address")
	o.secrets.AddFlags(fs)
	o.registry.AddFlags(fs)
	o.eds.AddFlags(fs)
	o.tls.addFlags(fs)
}

func (o *serveOptions) validate() error {
	var errs []error
	for _, a := range []struct{ flag, addr string }{{"--xds-address", o.xdsAddress}, {"--http-address", o.httpAddress}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.flag, err))
		}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level: %w", err))
	}
	o.registry.Namespace = o.secrets.Namespace
	errs = append(errs, o.secrets.Validate(), o.registry.Validate(), o.eds.Validate(), o.tls.validate())
	return errors.Join(errs...)
}

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	var o serveOptions
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	o.addFlags(fs)
	if ok, err := parseFlags(fs, args); !ok {
		return err
	}
	if err := o.validate(); err != nil {
		return usageError{err}
	}
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(o.logLevel))
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	klog.SetSlogLogger(logger.With("component", "client-go"))

	cfg, err := configClusterConfig(o.kubeconfig, o.context)
	if err != nil {
		return usageError{err}
	}
	xdsLis, err := net.Listen("tcp", o.xdsAddress)
	if err != nil {
		return fmt.Errorf("listen on --xds-address: %w", err)
	}
	httpLis, err := net.Listen("tcp", o.httpAddress)
	if err != nil {
		xdsLis.Close()
		return fmt.Errorf("listen on --http-address: %w", err)
	}
	return runServer(ctx, o, cfg, xdsLis, httpLis, logger)
}

// configClusterConfig loads the config cluster's client config: a kubeconfig file and
// context, or the in-cluster config when no kubeconfig is given.
func configClusterConfig(kubeconfig, kctx string) (*rest.Config, error) {
	if kubeconfig == "" && kctx == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig given and not running in a cluster: %w", err)
		}
		return cfg, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kctx}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load --kubeconfig %q (context %q): %w", kubeconfig, kctx, err)
	}
	return cfg, nil
}

// runServer runs Horizon on the given listeners until ctx is done, then shuts down
// gracefully. Tests call it in-process.
func runServer(ctx context.Context, o serveOptions, cfg *rest.Config, xdsLis, httpLis net.Listener, logger *slog.Logger) error {
	defer xdsLis.Close()
	defer httpLis.Close()
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("build config-cluster client: %w", err)
	}
	o.registry.Namespace = o.secrets.Namespace
	o.registry.Logger = logger
	reg, err := clusterregistry.New(o.registry)
	if err != nil {
		return err
	}
	defer reg.Close()

	var srv *eds.Server
	resolver, err := network.NewResolver(network.ResolverOptions{OnChange: func() {
		if srv != nil {
			srv.ConfigChanged()
		}
	}})
	if err != nil {
		return err
	}
	mesh, err := meshsource.New(meshsource.Options{
		File: o.meshFile, Client: client, Namespace: o.secrets.Namespace, Logger: logger,
		OnChange: func(*network.Networks) {
			if srv != nil {
				srv.ConfigChanged()
			}
		},
	})
	if err != nil {
		return err
	}
	gateways, err := gatewaysource.New(gatewaysource.Options{
		Dynamic:   dynamic.NewForConfigOrDie(cfg),
		Discovery: discovery.NewDiscoveryClientForConfigOrDie(cfg),
		Logger:    logger,
		OnChange: func() {
			if srv != nil {
				srv.ConfigChanged()
			}
		},
	})
	if err != nil {
		return err
	}
	o.eds.Gateways = passthroughServers{gateways}
	metricsReg := newMetricsRegistry()
	o.eds.Metrics = metricsReg
	o.eds.Source = reg
	o.eds.Networks = mesh.Current
	o.eds.Lookup = resolver.Lookup
	o.eds.Logger = logger
	srv, err = eds.New(o.eds)
	if err != nil {
		return err
	}
	o.secrets.Client = client
	o.secrets.Handler = reg
	o.secrets.Logger = logger
	ctrl, err := secrets.New(o.secrets)
	if err != nil {
		return err
	}

	// The config cluster is a cluster like the others.
	reg.SetCluster(o.secrets.ClusterID, "config cluster", cfg)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, fn := range []func(context.Context){mesh.Run, gateways.Run, ctrl.Run, resolver.Run, srv.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(ctx)
		}()
	}

	creds, err := o.tls.serverOption(logger, xdsLis.Addr())
	if err != nil {
		cancel()
		wg.Wait()
		return err
	}
	g := grpc.NewServer(append([]grpc.ServerOption{creds,
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Most proxies hold one connection each and are idle between pushes: return
		// a connection's write buffer to a shared pool after each flush instead of
		// keeping 32 KiB per connection.
		grpc.SharedWriteBuffer(true),
	}, srv.GRPCOptions()...)...)
	srv.Register(g)
	ready := func() error {
		switch {
		case !ctrl.HasSynced():
			return errors.New("remote secrets not synced")
		case !mesh.HasSynced():
			return errors.New("meshNetworks not loaded")
		case !gateways.HasSynced():
			return errors.New("Gateway resources not synced")
		case !reg.HasSynced():
			return errors.New("clusters not synced")
		case srv.Pushes() == 0:
			return errors.New("no xDS push yet")
		}
		return nil
	}
	comps := components{registry: reg, secrets: ctrl, mesh: mesh, gateways: gateways, xds: srv, ready: ready}
	metricsReg.MustRegister(newStatusCollector(comps))
	mux := httpMux(comps, metricsReg, o.pprof)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	errc := make(chan error, 2)
	go func() { errc <- g.Serve(xdsLis) }()
	go func() { errc <- hs.Serve(httpLis) }()
	logger.Info("horizon serving", "xds", xdsLis.Addr().String(), "http", httpLis.Addr().String(),
		"clusterID", o.secrets.ClusterID, "namespace", o.secrets.Namespace)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	logger.Info("shutting down")
	shutdownCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	done := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-shutdownCtx.Done():
		g.Stop()
	}
	_ = hs.Shutdown(shutdownCtx)
	cancel()
	wg.Wait()
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) && !errors.Is(serveErr, grpc.ErrServerStopped) {
		return serveErr
	}
	return nil
}

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
