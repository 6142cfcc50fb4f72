// Command horizon-load measures Horizon the way an operator sizes it: how long a fleet
// of proxies takes to be served every endpoint it watches, how much memory Horizon
// holds per connected proxy, how fast one remote EndpointSlice change reaches every
// proxy that watches it, and whether Horizon converges and stays flat under churn.
//
// It starts one etcd and -clusters (2) API servers with cmd/localmesh (cluster1, the
// config cluster, on network1; cluster2, remote, on network2; and so on), writes
// services, pods and EndpointSlices into each, the meshNetworks ConfigMap (one gateway
// per network) and each remote cluster's remote Secret, then runs the horizon binary
// against cluster1 and connects simulated sidecars over ADS, spread evenly over the
// networks, some state of the world and some delta. Everything listens and connects
// on 127.0.0.1 only, and the run stops itself after -duration.
//
//	go run ./cmd/horizon-load -proxies 1000
//	go run ./cmd/horizon-load -clusters 3 -services 1000 -endpoints 10 -proxies 1000
//
// docs/load.md explains the measurements and the numbers to compare with.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "horizon-load:", err)
		os.Exit(2)
	}
	rep, err := run(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "horizon-load:", err)
		os.Exit(1)
	}
	if !rep.OK() {
		os.Exit(3)
	}
}

// config is everything a run takes from its flags.
type config struct {
	// Scenario is "fleet" (the default: serve -proxies, time changes, churn) or
	// "hostile" (one well-behaved proxy watches while hostile clients flood Horizon).
	Scenario string
	// HostileScale multiplies the sizes of the hostile floods.
	HostileScale float64
	// HostileFloods are the letters of the floods to run (allFloods: every one).
	HostileFloods string
	Clusters      int
	Services      int
	Endpoints     int
	Proxies       int
	Watch         int
	// FullMesh: every proxy subscribes to every service's EDS, and the state of the
	// world ones to every cluster (CDS wildcard) first, as Envoy without scoping does.
	FullMesh       bool
	DeltaFraction  float64
	ProxiesPerConn int
	Changes        int
	ChangeTimeout  time.Duration
	ServeTimeout   time.Duration
	ChurnRate      float64
	ChurnDuration  time.Duration
	Duration       time.Duration
	Settle         time.Duration
	Writers        int
	Markdown       string
	Horizon        string
	HorizonArgs    string
	ProfileDir     string
	ProfileSeconds int
	SelfProfile    string
	// Progress, if not nil, receives step-by-step progress lines.
	Progress io.Writer
}

func defaultConfig() config {
	return config{
		Clusters: 2, Services: 100, Endpoints: 10, Proxies: 1000, Watch: 20, DeltaFraction: 0, ProxiesPerConn: 1,
		Changes: 5, ChangeTimeout: 10 * time.Second, ServeTimeout: 2 * time.Minute,
		ChurnDuration: 30 * time.Second, Duration: 5 * time.Minute, Settle: 2 * time.Second,
		Writers: 32, ProfileSeconds: 10, Scenario: scenarioFleet, HostileScale: 1, HostileFloods: allFloods,
	}
}

const usageText = `horizon-load measures Horizon with simulated proxies against -clusters local
Kubernetes API servers (cluster1: config cluster, network1; cluster2…N: remote,
network2…N, one gateway each).

It writes -services services with -endpoints endpoints each into every cluster,
runs the horizon binary, connects -proxies sidecars (spread evenly over the networks,
each on its own gRPC connection, state of the world unless -delta-fraction puts some
on delta xDS) each watching -watch services' EDS (-full-mesh: every service's, after
CDS), and reports, for state-of-the-world and delta proxies apart:
  - Horizon's startup: time to ready, each cluster's sync, the time from the last
    cluster synced until ready and serving every endpoint, and its heap and RSS
    with no proxies connected;
  - time from connecting until every proxy holds all its watched endpoints;
  - Horizon's RSS and Go heap before and with the proxies, and the growth per proxy;
  - for -changes single-endpoint edits of a cluster2 EndpointSlice, the time from the
    API write until each watching proxy receives the changed ClusterLoadAssignment,
    and the bytes each watching proxy was sent for it;
  - with -churn-rate, convergence after a burst of changes and memory under churn;
  - Horizon's push and NACK counters.
With -scenario hostile it instead connects one well-behaved proxy (state of the
world, CDS and every service's EDS) and runs, one after the other, the floods of
hostile clients: Fetches with made-up NETWORK and REQUESTED_NETWORK_VIEW, router
label sets, a request with no node, NACKs of made-up types, made-up names on a
delta stream, many streams on one connection and oversized requests. After each it
reports Horizon's RSS and heap, its metric series and the gRPC statuses the flood
got; during each, the time a remote change takes to reach the well-behaved proxy.
Everything stays on 127.0.0.1; the run stops itself after -duration.

Usage: go run ./cmd/horizon-load [flags]

Flags:
`

func parseFlags(args []string, stderr io.Writer) (config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("horizon-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Scenario, "scenario", cfg.Scenario, "what to run: \"fleet\" (serve -proxies, time -changes, churn) or \"hostile\" (one well-behaved proxy watches while hostile clients flood Horizon; docs/load.md)")
	fs.Float64Var(&cfg.HostileScale, "hostile-scale", cfg.HostileScale, "with -scenario hostile: multiply every flood's size by this (1: 2,000 Fetches, 20,000 NACKs, 500,000 names, …; 0-10)")
	fs.StringVar(&cfg.HostileFloods, "hostile-floods", cfg.HostileFloods, "with -scenario hostile: the letters of the floods to run, in their order a-g (docs/load.md)")
	fs.IntVar(&cfg.Clusters, "clusters", cfg.Clusters, fmt.Sprintf("clusters, each on its own network: cluster1 the config cluster, the others remote (2-%d)", maxClusters))
	fs.IntVar(&cfg.Services, "services", cfg.Services, "services per cluster (the same names in every cluster)")
	fs.IntVar(&cfg.Endpoints, "endpoints", cfg.Endpoints, "endpoints (ready mTLS pods) per service per cluster")
	fs.IntVar(&cfg.Proxies, "proxies", cfg.Proxies, "simulated sidecars, spread evenly over the networks")
	fs.IntVar(&cfg.Watch, "watch", cfg.Watch, "services whose EDS each proxy subscribes to (spread so that every service is watched); not with -full-mesh")
	fs.BoolVar(&cfg.FullMesh, "full-mesh", cfg.FullMesh, "every proxy subscribes to every service's EDS, the state-of-the-world ones after a CDS wildcard request, as Envoy with no scoping does")
	fs.Float64Var(&cfg.DeltaFraction, "delta-fraction", cfg.DeltaFraction, "fraction of proxies on delta (incremental) xDS, reported apart; the rest use state of the world, as the example Envoy bootstrap does (0-1)")
	fs.IntVar(&cfg.ProxiesPerConn, "proxies-per-conn", cfg.ProxiesPerConn, "ADS streams sharing one gRPC connection (1: a connection per proxy, as Envoy connects; more multiplexes, which costs Horizon less than real proxies do)")
	fs.IntVar(&cfg.Changes, "changes", cfg.Changes, "single-endpoint EndpointSlice changes in cluster2 to time, one after the other")
	fs.DurationVar(&cfg.ChangeTimeout, "change-timeout", cfg.ChangeTimeout, "how long a change may take to reach every watching proxy before the rest count as failures")
	fs.DurationVar(&cfg.ServeTimeout, "serve-timeout", cfg.ServeTimeout, "how long the proxies may take to be served every watched endpoint")
	fs.Float64Var(&cfg.ChurnRate, "churn-rate", cfg.ChurnRate, "EndpointSlice changes per second in the churn phase (0: no churn phase)")
	fs.DurationVar(&cfg.ChurnDuration, "churn-duration", cfg.ChurnDuration, "length of the churn phase")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "cap on the whole run, setup included; the tool stops itself after it")
	fs.DurationVar(&cfg.Settle, "settle", cfg.Settle, "quiet time before each memory sample")
	fs.IntVar(&cfg.Writers, "writers", cfg.Writers, "concurrent writers per cluster used to create the services, pods and EndpointSlices")
	fs.StringVar(&cfg.Markdown, "markdown", "", "append a Markdown results table to this file")
	fs.StringVar(&cfg.Horizon, "horizon", "", "horizon binary (default: next to this program, else built with go build into a temporary directory)")
	fs.StringVar(&cfg.HorizonArgs, "horizon-args", "", "extra flags for horizon serve, space separated (e.g. \"--debounce-after=20ms\")")
	fs.StringVar(&cfg.ProfileDir, "profile", "", "write Horizon's CPU profiles of its startup and of the connect and change phases, and heap profiles before and with the proxies connected and after churn, into this directory")
	fs.IntVar(&cfg.ProfileSeconds, "profile-seconds", cfg.ProfileSeconds, "length of each CPU profile, from the start of its phase")
	fs.StringVar(&cfg.SelfProfile, "self-cpuprofile", "", "write this tool's own CPU profile (from connecting the proxies to the end) to this file")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	watchSet := false
	fs.Visit(func(f *flag.Flag) { watchSet = watchSet || f.Name == "watch" })
	if watchSet && cfg.FullMesh {
		return cfg, errors.New("-watch: not with -full-mesh, where every proxy watches every service")
	}
	return cfg, cfg.validate()
}

// Address plan limits: pod IPs are <10+cluster/8>.<32*(cluster%8) + service/256>.<service%256>.<1+endpoint>
// (cluster 1-20: 10.32.0.0 to 12.159.255.255, outside 127/8, 100.64/10 and
// 192.0.2/24), with one spare endpoint per service; proxy IPs are 100.64.0.0/10.
const (
	maxClusters  = 20
	maxServices  = 32 * 256
	maxEndpoints = 250
	maxProxies   = 1 << 22
)

func (c config) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Scenario == scenarioFleet || c.Scenario == scenarioHostile, "-scenario: must be %q or %q, got %q", scenarioFleet, scenarioHostile, c.Scenario)
	check(c.HostileScale > 0 && c.HostileScale <= 10, "-hostile-scale: must be above 0 and at most 10, got %g", c.HostileScale)
	check(c.HostileFloods != "" && strings.Trim(c.HostileFloods, allFloods) == "", "-hostile-floods: must be letters of %q, got %q", allFloods, c.HostileFloods)
	check(c.Clusters >= 2 && c.Clusters <= maxClusters, "-clusters: must be 2-%d, got %d", maxClusters, c.Clusters)
	check(c.Services >= 1 && c.Services <= maxServices, "-services: must be 1-%d, got %d", maxServices, c.Services)
	check(c.Endpoints >= 1 && c.Endpoints <= maxEndpoints, "-endpoints: must be 1-%d, got %d", maxEndpoints, c.Endpoints)
	check(c.Proxies >= 1 && c.Proxies <= maxProxies, "-proxies: must be 1-%d, got %d", maxProxies, c.Proxies)
	check(c.Watch >= 1, "-watch: must be at least 1, got %d", c.Watch)
	check(c.DeltaFraction >= 0 && c.DeltaFraction <= 1, "-delta-fraction: must be 0-1, got %g", c.DeltaFraction)
	check(c.ProxiesPerConn >= 1, "-proxies-per-conn: must be at least 1, got %d", c.ProxiesPerConn)
	check(c.Changes >= 0, "-changes: must not be negative, got %d", c.Changes)
	check(c.ChangeTimeout > 0, "-change-timeout: must be positive, got %s", c.ChangeTimeout)
	check(c.ServeTimeout > 0, "-serve-timeout: must be positive, got %s", c.ServeTimeout)
	check(c.ChurnRate >= 0, "-churn-rate: must not be negative, got %g", c.ChurnRate)
	check(c.ChurnRate == 0 || c.ChurnDuration > 0, "-churn-duration: must be positive with -churn-rate, got %s", c.ChurnDuration)
	check(c.Duration > 0, "-duration: must be positive, got %s", c.Duration)
	check(c.Settle >= 0, "-settle: must not be negative, got %s", c.Settle)
	check(c.Writers >= 1, "-writers: must be at least 1, got %d", c.Writers)
	check(c.ProfileSeconds >= 1, "-profile-seconds: must be at least 1, got %d", c.ProfileSeconds)
	return errors.Join(errs...)
}

// watchCount is how many services each proxy watches: -watch, at most every service;
// every service with -full-mesh.
func (c config) watchCount() int {
	if c.FullMesh {
		return c.Services
	}
	return min(c.Watch, c.Services)
}
