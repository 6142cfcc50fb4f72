package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/horizon-mesh/horizon/eds"
)

const (
	typeCLA     = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	typeCluster = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
)

// sig is what the tool checks of a ClusterLoadAssignment: how many endpoints it
// lists and their total weight. With one gateway per network every endpoint in the
// mesh carries weight 1, so a proxy on network n expects its own network's endpoints
// plus one gateway standing for each other network's, and a total weight equal to
// all endpoints of the service. Adding or removing a remote endpoint changes the
// count on the remote network and that network's gateway weight on the others.
type sig struct {
	endpoints int
	weight    uint64
}

func sigOf(cla *endpointv3.ClusterLoadAssignment) sig {
	var s sig
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			s.endpoints++
			w := uint64(1)
			if lw := e.GetLoadBalancingWeight(); lw != nil {
				w = uint64(lw.GetValue())
			}
			s.weight += w
		}
	}
	return s
}

// expected is what a sidecar on network n should be sent for a service with
// counts[c] endpoints in cluster c (cluster c is on network c).
func expected(n int, counts []int) sig {
	s := sig{endpoints: counts[n]}
	for c, count := range counts {
		s.weight += uint64(count)
		if c != n && count > 0 {
			s.endpoints++ // network c's gateway
		}
	}
	return s
}

// expectedAll is what a sidecar on each network should be sent for a service with
// counts[c] endpoints in cluster c, indexed by network.
func expectedAll(counts []int) []sig {
	out := make([]sig, len(counts))
	for n := range counts {
		out[n] = expected(n, counts)
	}
	return out
}

// truth is what every proxy should hold. Guarded by mu.
type truth struct {
	mu     sync.RWMutex
	want   map[string][]sig // by resource name, then by network
	change *change          // the change being timed, or nil
}

// change is one timed EndpointSlice write and who has seen its result.
type change struct {
	name   string
	want   []sig // by network
	wanted int   // proxies watching name
	at     time.Time

	mu   sync.Mutex
	seen map[int]arrival // by proxy index; guarded by mu
	size int             // bytes of the changed ClusterLoadAssignment as received; guarded by mu
	done chan struct{}   // closed when every watching proxy saw it
}

// arrival is when one proxy saw a change, after its write.
type arrival struct {
	latency time.Duration
	delta   bool // the proxy uses delta xDS
}

func (c *change) record(proxy int, delta bool, size int, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[proxy]; ok {
		return
	}
	c.seen[proxy] = arrival{latency: now.Sub(c.at), delta: delta}
	c.size = max(c.size, size)
	if len(c.seen) == c.wanted {
		close(c.done)
	}
}

// latencies returns the latency of every proxy that saw the change, state of the
// world and delta apart.
func (c *change) latencies() (sotw, delta []time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.seen {
		if a.delta {
			delta = append(delta, a.latency)
		} else {
			sotw = append(sotw, a.latency)
		}
	}
	return sotw, delta
}

// changedSize is the size of the changed ClusterLoadAssignment as a proxy received
// it (the largest over the networks).
func (c *change) changedSize() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

// proxySpec is one simulated sidecar.
type proxySpec struct {
	index   int
	network int // 0-based; network c holds cluster c
	delta   bool
	names   []string
	// cds: also subscribe to every cluster (CDS wildcard) first, as Envoy does;
	// state of the world only.
	cds bool
}

func (s proxySpec) node() *corev3.Node {
	ip := fmt.Sprintf("100.%d.%d.%d", 64+s.index>>16, (s.index>>8)&255, s.index&255)
	md, _ := structpb.NewStruct(map[string]any{eds.MetaNetwork: networkName(s.network)})
	return &corev3.Node{
		Id:       fmt.Sprintf("sidecar~%s~load-%d.loadtest~loadtest.svc.cluster.local", ip, s.index),
		Cluster:  "loadtest",
		Metadata: md,
	}
}

// proxy is the state of one simulated sidecar. Its stream goroutine owns the
// stream; the fields below are guarded by mu because the coordinator reads them.
type proxy struct {
	spec proxySpec
	pos  int // index in the fleet's proxies
	node *corev3.Node
	f    *fleet

	mu         sync.Mutex
	got        map[string]sig       // current state by resource name
	gotAt      map[string]time.Time // when the current state of each resource arrived
	versions   map[string]string    // delta: resource versions held, for reconnects
	servedAt   time.Time            // first time every watched resource was as expected
	responses  int
	resources  int
	bytes      int64 // of every response received (serialized size)
	cds        int   // CDS responses received
	reconnects int
	nacks      int
	lastErr    error
	// replica is the index of the replica the current (or next) stream is on;
	// firstAt is when that stream's first response arrived (zero: none yet).
	replica int
	firstAt time.Time
	// shrunk counts the assignments that arrived with fewer endpoints than the
	// proxy held (or were removed) while the fleet's watchShrink was set;
	// resentDelta counts the resources a delta stream was sent in its first
	// response after a reconnect.
	shrunk      int
	resentDelta int
}

// fleet is every simulated proxy of a run, on a few shared gRPC connections.
type fleet struct {
	truth   *truth
	proxies []*proxy
	// conns are the gRPC connections, by group of perConn proxies, then by
	// replica: each group knows every replica's address, as Envoy with several
	// xDS hosts does, starts on its home replica and moves to the next when its
	// stream fails.
	conns   [][]*grpc.ClientConn
	home    []int // by group
	perConn int   // proxies per connection
	// watchShrink: count assignments that lose endpoints (proxy.shrunk).
	watchShrink atomic.Bool
	started     time.Time
	served      atomic.Int64
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	// byName lists the proxies watching each resource.
	byName  map[string][]*proxy
	decoder *decoder
}

// envoyWindow is Envoy's default HTTP/2 stream and connection window.
const envoyWindow = 256 << 20

// newFleet makes, per perConn proxies, one gRPC connection to each of addrs (each
// dialled on first use) and prepares the proxies; start opens their streams. The
// groups are spread over the addresses in contiguous blocks, so that each replica
// gets a like mix of networks and protocols.
func newFleet(addrs []string, specs []proxySpec, perConn int, t *truth) (*fleet, error) {
	f := &fleet{truth: t, perConn: perConn, byName: map[string][]*proxy{}, decoder: &decoder{seen: map[string]decoded{}}}
	groups := (len(specs) + perConn - 1) / perConn
	for g := range groups {
		conns := make([]*grpc.ClientConn, 0, len(addrs))
		for _, addr := range addrs {
			// Static flow-control windows of Envoy's default size (256 MiB): Envoy does
			// not PING to estimate the bandwidth-delay product, as gRPC's dynamic windows
			// would after most responses (each PING costs Horizon a read and a write).
			// The write buffer (requests are small) goes back to a shared pool after
			// each write rather than staying with the connection: the tool's own
			// memory, not what Horizon sees.
			conn, err := grpc.NewClient("passthrough:///"+addr,
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithInitialWindowSize(envoyWindow), grpc.WithInitialConnWindowSize(envoyWindow),
				grpc.WithSharedWriteBuffer(true),
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
			if err != nil {
				f.conns = append(f.conns, conns)
				f.close()
				return nil, fmt.Errorf("dial horizon xDS at %s: %w", addr, err)
			}
			conns = append(conns, conn)
		}
		f.conns = append(f.conns, conns)
		f.home = append(f.home, g*len(addrs)/groups)
	}
	for _, s := range specs {
		p := &proxy{spec: s, pos: len(f.proxies), node: s.node(), f: f, got: map[string]sig{}, gotAt: map[string]time.Time{}, versions: map[string]string{}}
		p.replica = f.home[p.pos/perConn]
		f.proxies = append(f.proxies, p)
		for _, n := range s.names {
			f.byName[n] = append(f.byName[n], p)
		}
	}
	return f, nil
}

// start opens every proxy's stream at once.
func (f *fleet) start(ctx context.Context) {
	ctx, f.cancel = context.WithCancel(ctx)
	f.started = time.Now()
	for i, p := range f.proxies {
		conns := f.conns[i/f.perConn]
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			p.run(ctx, conns)
		}()
	}
}

// close ends every stream and connection and waits for the proxies to stop.
func (f *fleet) close() {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
	for _, cs := range f.conns {
		for _, c := range cs {
			c.Close()
		}
	}
}

// run keeps the proxy's stream open until ctx is done, reconnecting with jittered
// exponential backoff (100ms doubling to 5s) when it fails or is refused, to the
// next replica's connection when there are several.
func (p *proxy) run(ctx context.Context, conns []*grpc.ClientConn) {
	const base, ceiling = 100 * time.Millisecond, 5 * time.Second
	failures := 0
	for {
		p.mu.Lock()
		conn := conns[p.replica]
		p.firstAt = time.Time{}
		p.mu.Unlock()
		progressed, err := p.stream(ctx, conn)
		if ctx.Err() != nil {
			return
		}
		if progressed {
			failures = 0
		}
		p.mu.Lock()
		p.reconnects++
		p.lastErr = err
		p.replica = (p.replica + 1) % len(conns)
		p.mu.Unlock()
		backoff := min(ceiling, base<<min(failures, 10))
		failures++
		wait := backoff/2 + rand.N(backoff/2+1) // equal jitter
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// stream runs one ADS stream until it fails; progressed says a response arrived.
func (p *proxy) stream(ctx context.Context, conn *grpc.ClientConn) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if p.spec.delta {
		return p.deltaStream(ctx, discoveryv3.NewAggregatedDiscoveryServiceClient(conn))
	}
	return p.sotwStream(ctx, conn)
}

func (p *proxy) sotwStream(ctx context.Context, conn *grpc.ClientConn) (bool, error) {
	s, err := openSotw(ctx, conn)
	if err != nil {
		return false, err
	}
	if p.spec.cds {
		if err := s.Send(&discoveryv3.DiscoveryRequest{Node: p.node, TypeUrl: typeCluster}); err != nil {
			return false, err
		}
	}
	if err := s.Send(&discoveryv3.DiscoveryRequest{Node: p.node, TypeUrl: typeCLA, ResourceNames: p.spec.names}); err != nil {
		return false, err
	}
	ackedByType, progressed := map[string]string{}, false
	var resp sotwResponse
	for {
		if err := s.Recv(&resp); err != nil {
			return progressed, err
		}
		progressed = true
		now := time.Now()
		p.received(resp.size)
		req := &discoveryv3.DiscoveryRequest{TypeUrl: resp.typeURL, ResponseNonce: resp.nonce}
		var bad error
		switch resp.typeURL {
		case typeCLA:
			req.ResourceNames = p.spec.names
			bad = p.apply(resp.resources, nil, nil, now)
		case typeCluster:
			p.mu.Lock()
			p.cds++
			p.mu.Unlock()
		}
		if bad != nil {
			req.VersionInfo = ackedByType[resp.typeURL]
			req.ErrorDetail = status.New(codes.InvalidArgument, bad.Error()).Proto()
		} else {
			ackedByType[resp.typeURL] = resp.version
			req.VersionInfo = resp.version
		}
		resp.release() // nothing of it is kept
		if err := s.Send(req); err != nil {
			return progressed, err
		}
	}
}

func (p *proxy) deltaStream(ctx context.Context, client discoveryv3.AggregatedDiscoveryServiceClient) (bool, error) {
	s, err := client.DeltaAggregatedResources(ctx)
	if err != nil {
		return false, err
	}
	p.mu.Lock()
	initial := make(map[string]string, len(p.versions))
	for k, v := range p.versions {
		initial[k] = v
	}
	p.mu.Unlock()
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node: p.node, TypeUrl: typeCLA, ResourceNamesSubscribe: p.spec.names, InitialResourceVersions: initial,
	}); err != nil {
		return false, err
	}
	progressed, firstCLA := false, true
	for {
		resp, err := s.Recv()
		if err != nil {
			return progressed, err
		}
		progressed = true
		now := time.Now()
		p.received(proto.Size(resp))
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		if resp.GetTypeUrl() == typeCLA {
			res := make([]rawAny, len(resp.GetResources()))
			versions := make([]string, len(resp.GetResources()))
			for i, r := range resp.GetResources() {
				res[i] = rawAny{typeURL: r.GetResource().GetTypeUrl(), value: r.GetResource().GetValue()}
				versions[i] = r.GetVersion()
			}
			if len(initial) > 0 && firstCLA {
				p.mu.Lock()
				p.resentDelta += len(res)
				p.mu.Unlock()
			}
			firstCLA = false
			if bad := p.apply(res, versions, resp.GetRemovedResources(), now); bad != nil {
				req.ErrorDetail = status.New(codes.InvalidArgument, bad.Error()).Proto()
			}
		}
		if err := s.Send(req); err != nil {
			return progressed, err
		}
	}
}

// received counts a response's bytes, n: its serialized size, as gRPC carries it
// (without gRPC's 5-byte message header and HTTP/2 framing), and notes the first
// response on the stream.
func (p *proxy) received(n int) {
	p.mu.Lock()
	p.bytes += int64(n)
	if p.firstAt.IsZero() {
		p.firstAt = time.Now()
	}
	p.mu.Unlock()
}

// decoded is what the tool keeps of one received ClusterLoadAssignment.
type decoded struct {
	name string
	sig  sig
	err  error
}

// decoder unmarshals and validates ClusterLoadAssignments, memoized by their bytes:
// Horizon marshals deterministically and every proxy of one network is sent the same
// bytes, so each distinct resource is decoded and validated once, however many
// proxies receive it, and the tool's own CPU stays out of Horizon's way. Safe for
// concurrent use.
type decoder struct {
	mu   sync.Mutex
	seen map[string]decoded // by resource bytes; guarded by mu
}

const decoderEntries = 50_000

func (d *decoder) decode(a rawAny) decoded {
	if a.typeURL != typeCLA {
		return decoded{err: fmt.Errorf("resource of type %q in an EDS response", a.typeURL)}
	}
	d.mu.Lock()
	r, ok := d.seen[string(a.value)]
	d.mu.Unlock()
	if ok {
		return r
	}
	cla := &endpointv3.ClusterLoadAssignment{}
	if err := proto.Unmarshal(a.value, cla); err != nil {
		r.err = fmt.Errorf("decode ClusterLoadAssignment: %w", err)
	} else if err := cla.ValidateAll(); err != nil {
		r.err = fmt.Errorf("ClusterLoadAssignment %s: %w", cla.GetClusterName(), err)
	} else {
		r = decoded{name: cla.GetClusterName(), sig: sigOf(cla)}
	}
	d.mu.Lock()
	if len(d.seen) >= decoderEntries {
		clear(d.seen)
	}
	d.seen[string(a.value)] = r
	d.mu.Unlock()
	return r
}

// apply decodes and validates a response's ClusterLoadAssignments, records what they
// hold and when, and checks the proxy against the truth. An invalid resource makes
// the whole response rejected (NACKed), as Envoy does.
func (p *proxy) apply(res []rawAny, versions []string, removed []string, now time.Time) error {
	clas := make([]decoded, len(res))
	var errs []error
	for i, a := range res {
		clas[i] = p.f.decoder.decode(a)
		if clas[i].err != nil {
			errs = append(errs, clas[i].err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.responses++
	if len(errs) > 0 {
		p.nacks++
		return errors.Join(errs...)
	}
	p.resources += len(clas)
	watchShrink := p.f.watchShrink.Load()
	for i, cla := range clas {
		name, s := cla.name, cla.sig
		if cur, ok := p.got[name]; ok && watchShrink && s.endpoints < cur.endpoints {
			p.shrunk++
		}
		if cur, ok := p.got[name]; !ok || cur != s {
			p.got[name], p.gotAt[name] = s, now
		}
		if versions != nil {
			p.versions[name] = versions[i]
		}
	}
	for _, name := range removed {
		if _, ok := p.got[name]; ok && watchShrink {
			p.shrunk++
		}
		delete(p.got, name)
		delete(p.versions, name)
		p.gotAt[name] = now
	}

	t := p.f.truth
	t.mu.RLock()
	all := p.matchesLocked(t)
	ch := t.change
	t.mu.RUnlock()
	if all && p.servedAt.IsZero() {
		p.servedAt = now
		p.f.served.Add(1)
	}
	if ch != nil {
		if got, ok := p.got[ch.name]; ok && got == ch.want[p.spec.network] {
			for i, cla := range clas {
				if cla.name == ch.name {
					ch.record(p.spec.index, p.spec.delta, len(res[i].value), now)
					break
				}
			}
		}
	}
	return nil
}

// matchesLocked reports whether every watched resource is as the truth says. Called
// with p.mu and t.mu (read) held.
func (p *proxy) matchesLocked(t *truth) bool {
	for _, n := range p.spec.names {
		got, ok := p.got[n]
		if !ok || got != t.want[n][p.spec.network] {
			return false
		}
	}
	return true
}

// proxyState is a snapshot of one proxy for the report.
type proxyState struct {
	servedAt   time.Time
	consistent bool
	lastChange time.Time // latest arrival of a watched resource's current state
	responses  int
	resources  int
	reconnects int
	nacks      int
	lastErr    error
}

func (p *proxy) state() proxyState {
	t := p.f.truth
	p.mu.Lock()
	defer p.mu.Unlock()
	t.mu.RLock()
	ok := p.matchesLocked(t)
	t.mu.RUnlock()
	st := proxyState{servedAt: p.servedAt, consistent: ok, responses: p.responses, resources: p.resources,
		reconnects: p.reconnects, nacks: p.nacks, lastErr: p.lastErr}
	for _, n := range p.spec.names {
		if at := p.gotAt[n]; at.After(st.lastChange) {
			st.lastChange = at
		}
	}
	return st
}

// states snapshots every proxy.
func (f *fleet) states() []proxyState {
	out := make([]proxyState, len(f.proxies))
	for i, p := range f.proxies {
		out[i] = p.state()
	}
	return out
}

// received is the bytes and resources each proxy has received so far, by index.
func (f *fleet) received() (bytes []int64, resources []int) {
	bytes, resources = make([]int64, len(f.proxies)), make([]int, len(f.proxies))
	for i, p := range f.proxies {
		p.mu.Lock()
		bytes[i], resources[i] = p.bytes, p.resources
		p.mu.Unlock()
	}
	return bytes, resources
}

// cdsResponses counts the CDS responses the fleet received.
func (f *fleet) cdsResponses() (n int) {
	for _, p := range f.proxies {
		p.mu.Lock()
		n += p.cds
		p.mu.Unlock()
	}
	return n
}

// totals sums responses, resources, reconnects and NACKs over the fleet.
func (f *fleet) totals() (responses, resources, reconnects, nacks int) {
	for _, p := range f.proxies {
		p.mu.Lock()
		responses += p.responses
		resources += p.resources
		reconnects += p.reconnects
		nacks += p.nacks
		p.mu.Unlock()
	}
	return
}

// waitUntil polls cond every 10ms until it holds, ctx ends or timeout passes.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return cond()
		case <-t.C:
		}
	}
}

// specs lays out n proxies over networks networks, proxy i on network i%networks
// (with two: even indexes on network1, odd on network2); within each network an even
// spread of deltaFraction on delta xDS; proxy i watches k services starting at i*k,
// so that every service is watched once n*k >= services. With cds, the state of the
// world proxies subscribe to every cluster first.
func specs(n, k, services, networks int, deltaFraction float64, cds bool) []proxySpec {
	out := make([]proxySpec, n)
	for i := range n {
		rank := i / networks // index within its network
		delta := int(float64(rank+1)*deltaFraction) > int(float64(rank)*deltaFraction)
		names := make([]string, k)
		for w := range k {
			names[w] = claName((i*k + w) % services)
		}
		out[i] = proxySpec{index: i, network: i % networks, delta: delta, names: names, cds: cds && !delta}
	}
	return out
}
