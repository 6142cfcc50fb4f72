package clusterregistry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/client-go/util/workqueue"

	"github.com/horizon-mesh/horizon/network"
)

// syncMarker is queued once the caches have synced; when the worker reaches it, every
// key queued during the initial list has been processed. No Service has an empty
// namespace, so neither marker can collide with a real key.
var syncMarker = types.NamespacedName{}

// relistMarker tells the worker that a relisted watchSet waits in Cluster.handover.
var relistMarker = types.NamespacedName{Name: "relist"}

// clusterOptions is what a Cluster is given by the registry that owns it: its
// settings, and the sink it reports to. A Cluster knows nothing else of the registry.
type clusterOptions struct {
	// namespace is the system namespace; its network label names the network of the
	// cluster's endpoints.
	namespace string
	// syncTimeout is how long the initial sync may take before the cluster reports
	// that it timed out; zero: no limit.
	syncTimeout time.Duration
	// staleGrace is how long a stale cluster's shards are served before they are
	// withdrawn; zero: until it answers again.
	staleGrace time.Duration
	// probeInterval is how often a synced or stale cluster is probed; probeTimeout
	// bounds one probe; probeFailures periodic probes failing in a row make a synced
	// cluster stale.
	probeInterval time.Duration
	probeTimeout  time.Duration
	probeFailures int
	// selectors are the discovery selectors the cluster starts with; override says
	// they are the cluster's own rather than the mesh's.
	selectors *network.DiscoverySelectors
	override  bool
	// maxScopes bounds the namespaces watched one by one.
	maxScopes int
	// host names a service's host.
	host func(types.NamespacedName) string
	// mcs: watch ServiceExports and serve exported services under their clusterset
	// hosts too (mcs.go).
	mcs bool
	// qps and burst rate-limit the cluster's client unless its config sets QPS.
	qps   float32
	burst int
	// trim holds the informer transforms, shared by the registry's clusters (trim.go).
	trim *trimmer
	// requests counts the requests the cluster's client sends (requests.go); nil:
	// not counted.
	requests *requestCounts
	// log already names the cluster.
	log  *slog.Logger
	sink clusterSink
}

// clusterSink is where a Cluster reports. It is called from the cluster's worker and
// health goroutines, possibly concurrently, without the cluster's lock held; it must
// not block.
type clusterSink interface {
	// notify says that what c serves for hosts changed.
	notify(c *Cluster, hosts []string)
	// exportsChanged says that c's export of key changed (MCS mode).
	exportsChanged(c *Cluster, key types.NamespacedName)
	// changed says that c's state changed: synced, timed out, failed, stale,
	// withdrawn or back.
	changed()
}

// Cluster is one Kubernetes cluster: its client, informers and the shards of every
// service it has. Its shards are rebuilt by one worker goroutine, which translates
// (shard.go) what its informers cache (watch.go); one health goroutine marks it
// stale when it stops answering and relists it when it answers again (stale.go).
// What it reports of itself is in status.go.
type Cluster struct {
	id     network.ClusterID
	source string
	server string
	token  string // only to scrub it from error text; never logged
	opts   clusterOptions
	log    *slog.Logger

	httpClient *http.Client
	dialer     *closingDialer
	client     kubernetes.Interface
	// meta reads ServiceExports' metadata in MCS mode.
	meta metadata.Interface
	// probeClient shares client's connections without its rate limit (stale.go).
	probeClient kubernetes.Interface
	queue       workqueue.TypedRateLimitingInterface[types.NamespacedName]
	// suspect holds one signal that a dial or a list or watch failed; the health
	// goroutine then checks whether the cluster still answers.
	suspect chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	synced chan struct{} // closed when the initial sync is done

	mu sync.RWMutex
	// ws is the informers the worker reads; replaced only by the worker, when a relist
	// is handed over. Guarded by mu.
	ws *watchSet
	// handover is a relisted watchSet waiting for the worker; guarded by mu.
	handover   *handover
	stale      bool              // guarded by mu
	staleSince time.Time         // guarded by mu
	withdrawn  bool              // guarded by mu; shards hidden
	shards     map[string]*Shard // host → shard; guarded by mu
	// clustersetShards counts the shards of clusterset hosts among shards (MCS
	// mode); guarded by mu.
	clustersetShards int
	// exports are the cluster's ServiceExports in MCS mode, by the service they
	// name; exportsErr says why they cannot be listed. Guarded by mu.
	exports    map[types.NamespacedName]Export
	exportsErr string
	started    time.Time         // guarded by mu
	syncedAt   time.Time         // guarded by mu
	timedOut   bool              // guarded by mu
	lastErr    string            // guarded by mu
	lastErrAt  time.Time         // guarded by mu
	nsNetwork  network.NetworkID // guarded by mu
	// selectors say which namespaces are watched; guarded by mu.
	selectors *network.DiscoverySelectors
	// selectorsOverride: the selectors are the cluster's own; guarded by mu.
	selectorsOverride bool
	endpointCnt       int // guarded by mu
}

func newCluster(opts clusterOptions, id network.ClusterID, source string, cfg *rest.Config) (*Cluster, error) {
	cfg = rest.CopyConfig(cfg)
	// A dialer of our own tracks every connection, so that stopping the cluster closes
	// them all.
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	// A failed dial is the first sign of an unreachable server: client-go retries a
	// refused watch by itself without reporting it to the watch error handler.
	suspect := make(chan struct{}, 1)
	dialer := newClosingDialer(func(ctx context.Context, netw, address string) (net.Conn, error) {
		conn, err := dial(ctx, netw, address)
		if err != nil && ctx.Err() == nil {
			poke(suspect)
		}
		return conn, err
	})
	cfg.Dial = dialer.DialContext
	if opts.requests != nil {
		cfg.Wrap(opts.requests.wrap)
	}
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = opts.qps, opts.burst
	}
	// client-go keeps every transport it builds in a process-wide cache keyed by the
	// TLS options and the dialer; our dialer is a new key each time, so every client
	// built (each credential rotation) would stay cached, with its TLS state, for the
	// life of the process. A config with a proxy function is never cached: give it
	// the one client-go uses when none is set.
	if cfg.Proxy == nil {
		cfg.Proxy = http.ProxyFromEnvironment
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("build HTTP client for cluster %q: %w", id, err)
	}
	client, err := kubernetes.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("build client for cluster %q: %w", id, err)
	}
	meta, err := metadata.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("build metadata client for cluster %q: %w", id, err)
	}
	pcfg := rest.CopyConfig(cfg)
	pcfg.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	probeClient, err := kubernetes.NewForConfigAndClient(pcfg, hc)
	if err != nil {
		return nil, fmt.Errorf("build probe client for cluster %q: %w", id, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cluster{
		ctx:         ctx,
		cancel:      cancel,
		id:          id,
		source:      source,
		server:      network.RedactServer(cfg.Host),
		token:       cfg.BearerToken,
		opts:        opts,
		log:         opts.log,
		httpClient:  hc,
		dialer:      dialer,
		client:      client,
		meta:        meta,
		probeClient: probeClient,
		suspect:     suspect,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
			workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "cluster-" + string(id)}),
		synced:    make(chan struct{}),
		shards:    map[string]*Shard{},
		exports:   map[types.NamespacedName]Export{},
		selectors: opts.selectors,

		selectorsOverride: opts.override,
	}
	ws, err := c.newWatchSet()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("set up informers for cluster %q: %w", id, err)
	}
	c.ws = ws
	return c, nil
}

// start runs the informers, the worker and the health check until stop.
func (c *Cluster) start() {
	ctx := c.ctx
	c.mu.Lock()
	c.started = time.Now()
	ws := c.ws
	c.mu.Unlock()
	ws.start(c)
	c.wg.Add(3)
	go func() {
		defer c.wg.Done()
		select {
		case <-ws.synced:
			c.queue.Add(syncMarker)
		case <-ctx.Done():
		}
	}()
	go func() {
		defer c.wg.Done()
		for c.processNext() {
		}
	}()
	go func() {
		defer c.wg.Done()
		c.watchHealth(ctx)
	}()
	if t := c.opts.syncTimeout; t > 0 {
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
				c.opts.sink.changed()
			}
		}()
	}
}

// stop stops the informers, the worker and the health check, waits for them and
// closes the cluster's connections.
func (c *Cluster) stop() {
	c.cancel()
	c.queue.ShutDown()
	c.wg.Wait()
	// Nothing else changes ws or handover now.
	c.mu.Lock()
	ws, h := c.ws, c.handover
	c.handover = nil
	c.mu.Unlock()
	ws.stop()
	if h != nil {
		h.ws.stop()
	}
	c.httpClient.CloseIdleConnections()
	c.dialer.Close()
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

// recordError is the informers' watch error handler. It also asks the health
// goroutine to check a synced cluster. A stale cluster's informers fail until it
// answers again; the stale warning has said so once, so their errors are only
// recorded.
func (c *Cluster) recordError(err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	poke(c.suspect)
	msg := c.redact(err)
	c.mu.Lock()
	first := c.lastErr != msg
	stale := c.stale
	c.lastErr, c.lastErrAt = msg, time.Now()
	c.mu.Unlock()
	if stale {
		return
	}
	if first {
		c.log.Warn("list or watch failed", "error", msg)
	}
	c.opts.sink.changed()
}

// redact returns err's text fit to show: without the cluster's token or URL
// credentials, and without any response body of the remote (see errorText).
func (c *Cluster) redact(err error) string {
	return errorText(err, c.token)
}

func (c *Cluster) processNext() bool {
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	switch key {
	case syncMarker:
		c.finishSync()
	case relistMarker:
		c.finishRelist()
	default:
		c.rebuild(key)
	}
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
	c.opts.sink.changed()
}

// rebuild recomputes the shard of one service and tells the sink if what the cluster
// serves changed.
func (c *Cluster) rebuild(key types.NamespacedName) {
	if hosts, exportChanged := c.update(c.watches(), key); len(hosts) > 0 || exportChanged {
		c.opts.sink.notify(c, hosts)
		if exportChanged {
			c.opts.sink.exportsChanged(c, key)
		}
	}
}

// update recomputes the shard of one service from ws, and in MCS mode its
// clusterset shard and export. It returns the hosts whose served shard changed
// (none while the cluster's shards are withdrawn) and whether the export changed
// while served.
func (c *Cluster) update(ws *watchSet, key types.NamespacedName) (hosts []string, exportChanged bool) {
	host := c.opts.host(key)
	nsNetwork := namespaceNetwork(ws.namespaces, c.opts.namespace)
	var shard *Shard
	// An unselected namespace's service is only seen while a scope change is under
	// way, or with the cluster-wide scope past the bound: not served.
	if svc, err := ws.services.Services(key.Namespace).Get(key.Name); err == nil && ws.selects(key.Namespace) {
		shard = translate(shardSource{
			cluster:        c.id,
			slices:         ws.slices,
			pods:           ws.pods,
			nodes:          ws.nodes,
			network:        nsNetwork,
			nsDistribution: namespaceDistribution(ws.namespaces, key.Namespace),
			intern:         c.trimmer().in,
		}, host, svc)
	}

	var csHost string
	var csShard *Shard
	var export *Export
	if c.opts.mcs {
		csHost = ClustersetHost(key.Namespace, key.Name)
		csShard, export = clustersetOf(c.id, ws, key, shard)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	c.nsNetwork = nsNetwork
	old := c.shards[host]
	if !reflect.DeepEqual(old, shard) {
		if old != nil {
			c.endpointCnt -= countReady(old)
		}
		if shard == nil {
			delete(c.shards, host)
		} else {
			c.shards[host] = shard
			c.endpointCnt += countReady(shard)
		}
		hosts = append(hosts, host)
	}
	if csHost != "" {
		if old := c.shards[csHost]; !reflect.DeepEqual(old, csShard) {
			switch {
			case csShard == nil:
				delete(c.shards, csHost)
				c.clustersetShards--
			case old == nil:
				c.shards[csHost] = csShard
				c.clustersetShards++
			default:
				c.shards[csHost] = csShard
			}
			hosts = append(hosts, csHost)
		}
		old, had := c.exports[key]
		switch {
		case export == nil && had:
			delete(c.exports, key)
			exportChanged = true
		case export != nil && (!had || !reflect.DeepEqual(old, *export)):
			c.exports[key] = *export
			exportChanged = true
		}
	}
	if c.withdrawn {
		return nil, false
	}
	return hosts, exportChanged
}

// clustersetOf returns, in MCS mode, the clusterset shard of service key given its
// shard (nil: the cluster has no such Service in a selected namespace) and the
// cluster's export of it: both nil when ws holds no ServiceExport of key, and no
// shard without a Service.
func clustersetOf(id network.ClusterID, ws *watchSet, key types.NamespacedName, shard *Shard) (*Shard, *Export) {
	m, ok := ws.exportOf(key)
	if !ok || !ws.selects(key.Namespace) {
		return nil, nil
	}
	ex := &Export{Cluster: id, Namespace: key.Namespace, Name: key.Name, Created: m.CreationTimestamp.Time}
	if shard == nil {
		return nil, ex
	}
	ex.HasService = true
	ex.Ports = make([]ServicePort, len(shard.Service.Ports))
	for i, p := range shard.Service.Ports {
		ex.Ports[i] = ServicePort{Name: p.Name, Port: p.Port, Protocol: p.Protocol}
	}
	cs := *shard
	cs.Service.Host = ClustersetHost(key.Namespace, key.Name)
	return &cs, ex
}
