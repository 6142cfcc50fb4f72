package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/horizon-mesh/horizon/eds"
)

// The hostile scenario (-scenario hostile): one well-behaved state-of-the-world proxy
// (one gRPC connection, CDS and the EDS of every service) watches while clients that
// anyone able to reach the xDS port could run flood Horizon, one flood after the
// other. During each flood one remote EndpointSlice change is timed to the watcher;
// after each, Horizon's memory, its metric series and the gRPC statuses the flood
// was answered with are recorded. Any refusal is an expected outcome: the statuses
// are counted, not judged.

const (
	scenarioFleet   = "fleet"
	scenarioHostile = "hostile"
	// allFloods names every flood, in the order they run.
	allFloods = "abcdefg"
)

// Flood sizes at -hostile-scale 1: those the hardening issue tried.
const (
	hostileFetches      = 2000
	hostileLabelSets    = 2000
	hostileNACKs        = 20000
	hostileNames        = 500_000
	hostileStreams      = 1000
	hostileOversized    = 10
	hostileNameBatch    = 10_000   // names per delta request: ≈ 0.4 MiB
	hostileNACKMessage  = 16 << 10 // the error message of most NACKs
	hostileBigNACKEvery = 1000     // every so many NACKs, one with a 3 MiB message
	hostileBigNACK      = 3 << 20
	hostileOversize     = 5 << 20 // above gRPC's and Horizon's default 4 MiB
	streamsPerConn      = 50      // label-set streams per connection: under any sane per-connection cap
	answerTimeout       = 5 * time.Second
	floodTimeout        = 2 * time.Minute
)

// Targets from the hardening issue.
const (
	targetHostileGrowth = 256 << 20 // RSS growth over every flood together
	targetHostileChange = 2 * time.Second
	targetSeries        = 500 // "no metric grows past a few hundred series"
)

// noAnswer is the outcome of a stream that got neither a response nor a status
// within answerTimeout (e.g. queued behind the connection's stream limit).
const noAnswer = "no answer in 5s"

// hostileResult is what the hostile scenario measured.
type hostileResult struct {
	// Base is Horizon's memory with only the watcher connected; BaseSeries its
	// metric series then.
	Base       memSample
	BaseHWM    uint64
	BaseSeries seriesCount
	Floods     []floodResult
	// The watcher's own counters at the end.
	WatcherReconnects, WatcherNACKs int
	WatcherConsistent               bool
}

// floodResult is one flood and what Horizon looked like after it.
type floodResult struct {
	Name     string
	Requests int // units of the flood actually sent (requests, NACKs, names, streams)
	Planned  int
	Took     time.Duration
	// Outcomes counts how each request or stream was answered: a gRPC status code
	// name, or noAnswer.
	Outcomes outcomes
	// Resources is how many resources the flood's clients were sent.
	Resources int
	// Held is how many of the flood's streams were open and answered when memory
	// was measured.
	Held int
	Mem  memSample
	HWM  uint64 // VmHWM: peak RSS since Horizon started
	// Series is the metric series on /metrics after the flood; Groups Horizon's
	// proxy groups then (horizon_xds_groups, -1 if it has no such metric).
	Series   seriesCount
	Groups   int
	LogBytes int64 // growth of Horizon's log during the flood
	// Change is the time from a remote EndpointSlice write, made while the flood ran
	// (During) or right after it, until the watcher held the change; Reached false if
	// it did not within -change-timeout.
	Change  time.Duration
	Reached bool
	During  bool
}

// tally counts outcomes by name. Safe for concurrent use.
type tally struct {
	mu sync.Mutex
	n  map[string]int
}

func (t *tally) add(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == nil {
		t.n = map[string]int{}
	}
	t.n[key]++
}

func (t *tally) counts() outcomes {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.n)
}

// outcomes counts how a flood's requests or streams ended, by name.
type outcomes map[string]int

// String lists the outcomes, most frequent first: "InvalidArgument 2000, OK 1".
func (n outcomes) String() string {
	keys := slices.Collect(maps.Keys(n))
	slices.SortFunc(keys, func(a, b string) int {
		if n[a] != n[b] {
			return n[b] - n[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, n[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// outcome names how a call or stream ended: OK for no error or a clean end of
// stream, else its gRPC status code.
func outcome(err error) string {
	if err == nil || errors.Is(err, io.EOF) {
		return codes.OK.String()
	}
	return status.Code(err).String()
}

// seriesCount is how many series a /metrics page exposes, and its largest family.
type seriesCount struct {
	Total     int
	Top       string // the metric name with the most series
	TopSeries int
}

// countSeries counts the samples of a Prometheus text page: one per series. A
// histogram's buckets, sum and count are counted under their own names.
func countSeries(b []byte) seriesCount {
	per := map[string]int{}
	var sc seriesCount
	s := bufio.NewScanner(bytes.NewReader(b))
	s.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		sc.Total++
		per[name]++
	}
	for name, n := range per {
		if n > sc.TopSeries || n == sc.TopSeries && name < sc.Top {
			sc.Top, sc.TopSeries = name, n
		}
	}
	return sc
}

func (s seriesCount) String() string {
	if s.Total == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (most: %s %d)", s.Total, s.Top, s.TopSeries)
}

// floodRun is one flood in progress: its clients' connections, the streams it holds
// open until Horizon's memory is measured, and its progress.
type floodRun struct {
	addr  string
	total int
	// hold ends the streams the flood keeps open; conns are closed after it.
	hold   context.Context
	mu     sync.Mutex
	conns  []*grpc.ClientConn // guarded by mu
	wg     sync.WaitGroup     // the flood's stream goroutines
	done   atomic.Int64       // units sent (or streams decided)
	held   atomic.Int64       // answered streams still open
	res    atomic.Int64       // resources received
	tally  tally
	dialed error // first dial error; guarded by mu
}

// dial opens a gRPC connection for the flood's clients, closed when the flood is
// released. Large requests are the point of some floods: no send limit.
func (fr *floodRun) dial() *grpc.ClientConn {
	conn, err := grpc.NewClient("passthrough:///"+fr.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	fr.mu.Lock()
	defer fr.mu.Unlock()
	if err != nil {
		if fr.dialed == nil {
			fr.dialed = err
		}
		return nil
	}
	fr.conns = append(fr.conns, conn)
	return conn
}

func (fr *floodRun) closeConns() {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	for _, c := range fr.conns {
		c.Close()
	}
	fr.conns = nil
}

// parallel runs f(0…n-1) on workers goroutines until done or ctx ends.
func parallel(ctx context.Context, n, workers int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

// holdStream opens an ADS state-of-the-world stream on conn, sends req and waits
// for the first response. The stream's outcome is its first event: a response
// ("OK": the stream is then held open until the flood is released), a status, or
// nothing within answerTimeout (noAnswer).
func (fr *floodRun) holdStream(conn *grpc.ClientConn, req *discoveryv3.DiscoveryRequest) {
	fr.wg.Add(1)
	go func() {
		defer fr.wg.Done()
		var decided atomic.Bool
		decide := func(key string) bool {
			if !decided.CompareAndSwap(false, true) {
				return false
			}
			fr.tally.add(key)
			fr.done.Add(1)
			return true
		}
		timer := time.AfterFunc(answerTimeout, func() { decide(noAnswer) })
		defer timer.Stop()
		ctx, cancel := context.WithCancel(fr.hold)
		defer cancel()
		s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			decide(outcome(err))
			return
		}
		if err := s.Send(req); err != nil {
			_, err = s.Recv() // the status that ended the stream
			decide(outcome(err))
			return
		}
		resp, err := s.Recv()
		if err != nil {
			decide(outcome(err))
			return
		}
		fr.res.Add(int64(len(resp.GetResources())))
		if decide(codes.OK.String()) {
			fr.held.Add(1)
			defer fr.held.Add(-1)
		}
		for {
			if _, err := s.Recv(); err != nil {
				return
			}
		}
	}()
}

// hostileNode is a node with the given ID and metadata.
func hostileNode(id string, md map[string]any) *corev3.Node {
	s, err := structpb.NewStruct(md)
	if err != nil {
		panic(err) // only strings and string maps: cannot fail
	}
	return &corev3.Node{Id: id, Cluster: "hostile", Metadata: s}
}

func hostileSidecar(i int, md map[string]any) *corev3.Node {
	return hostileNode(fmt.Sprintf("sidecar~10.255.%d.%d~hostile-%d.hostile~hostile.svc.cluster.local", (i>>8)&255, i&255, i), md)
}

// flood is one hostile client's attack; run sends it on fr until done or ctx ends.
type flood struct {
	key   byte // its letter in -hostile-floods
	name  string
	total int
	run   func(ctx context.Context, fr *floodRun)
}

// floods are the attacks of the hardening issue, sized by scale.
func (l *loadRun) floods(scale float64) []flood {
	n := func(base int) int { return max(1, int(float64(base)*scale)) }
	services := l.cfg.Services
	known := networkName(0)
	fetches := func(md func(i int) map[string]any) func(ctx context.Context, fr *floodRun) {
		return func(ctx context.Context, fr *floodRun) {
			conn := fr.dial()
			if conn == nil {
				return
			}
			c := endpointservice.NewEndpointDiscoveryServiceClient(conn)
			parallel(ctx, fr.total, 16, func(i int) {
				rctx, cancel := context.WithTimeout(ctx, answerTimeout)
				resp, err := c.FetchEndpoints(rctx, &discoveryv3.DiscoveryRequest{
					Node: hostileSidecar(i, md(i)), TypeUrl: typeCLA, ResourceNames: []string{claName(i % services)},
				})
				cancel()
				fr.res.Add(int64(len(resp.GetResources())))
				fr.tally.add(outcome(err))
				fr.done.Add(1)
			})
		}
	}
	return []flood{
		{key: 'a', name: fmt.Sprintf("a. %d unary Fetches, each with a made-up NETWORK", n(hostileFetches)), total: n(hostileFetches),
			run: fetches(func(i int) map[string]any {
				return map[string]any{eds.MetaNetwork: fmt.Sprintf("made-up-network-%d", i)}
			})},
		{key: 'b', name: fmt.Sprintf("b. %d unary Fetches, each with a made-up REQUESTED_NETWORK_VIEW", n(hostileFetches)), total: n(hostileFetches),
			run: fetches(func(i int) map[string]any {
				return map[string]any{eds.MetaNetwork: known, eds.MetaNetworkView: fmt.Sprintf("made-up-view-%d", i)}
			})},
		{key: 'c', name: fmt.Sprintf("c. %d router label sets, one held stream each", n(hostileLabelSets)), total: n(hostileLabelSets),
			run: func(ctx context.Context, fr *floodRun) {
				var conn *grpc.ClientConn
				for i := range fr.total {
					if i%streamsPerConn == 0 {
						if conn = fr.dial(); conn == nil {
							return
						}
					}
					node := hostileNode(fmt.Sprintf("router~10.254.%d.%d~gw-%d.%s~%s.svc.cluster.local", (i>>8)&255, i&255, i, systemNamespace, systemNamespace),
						map[string]any{eds.MetaNetwork: known, eds.MetaLabels: map[string]any{"istio": "ingressgateway", "made-up": fmt.Sprintf("set-%d", i)}})
					fr.holdStream(conn, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typeCLA, ResourceNames: []string{claName(i % services)}})
				}
				waitUntil(ctx, floodTimeout, func() bool { return fr.done.Load() >= int64(fr.total) })
			}},
		{key: 'd', name: "d. requests with no node and no names (EDS and CDS Fetch, ADS stream)", total: 3,
			run: func(ctx context.Context, fr *floodRun) {
				conn := fr.dial()
				if conn == nil {
					return
				}
				rctx, cancel := context.WithTimeout(ctx, answerTimeout)
				defer cancel()
				resp, err := endpointservice.NewEndpointDiscoveryServiceClient(conn).FetchEndpoints(rctx, &discoveryv3.DiscoveryRequest{TypeUrl: typeCLA})
				fr.res.Add(int64(len(resp.GetResources())))
				fr.tally.add(outcome(err))
				fr.done.Add(1)
				resp, err = clusterservice.NewClusterDiscoveryServiceClient(conn).FetchClusters(rctx, &discoveryv3.DiscoveryRequest{TypeUrl: typeCluster})
				fr.res.Add(int64(len(resp.GetResources())))
				fr.tally.add(outcome(err))
				fr.done.Add(1)
				fr.holdStream(conn, &discoveryv3.DiscoveryRequest{TypeUrl: typeCLA})
				waitUntil(ctx, floodTimeout, func() bool { return fr.done.Load() >= int64(fr.total) })
			}},
		{key: 'e', name: fmt.Sprintf("e. %d NACKs with made-up type URLs, 16 KiB messages (3 MiB every %d)", n(hostileNACKs), hostileBigNACKEvery), total: n(hostileNACKs),
			run: func(ctx context.Context, fr *floodRun) {
				nackFlood(ctx, fr, hostileSidecar(0, map[string]any{eds.MetaNetwork: known}))
			}},
		{key: 'f', name: fmt.Sprintf("f. %d made-up names on one delta stream", n(hostileNames)), total: n(hostileNames),
			run: func(ctx context.Context, fr *floodRun) {
				namesFlood(ctx, fr, hostileSidecar(1, map[string]any{eds.MetaNetwork: known}))
			}},
		{key: 'g', name: fmt.Sprintf("g. %d streams on one connection, %d requests of %d MiB", n(hostileStreams), hostileOversized, hostileOversize>>20),
			total: n(hostileStreams) + hostileOversized,
			run: func(ctx context.Context, fr *floodRun) {
				conn := fr.dial()
				if conn == nil {
					return
				}
				for i := range fr.total - hostileOversized {
					fr.holdStream(conn, &discoveryv3.DiscoveryRequest{Node: hostileSidecar(2+i, map[string]any{eds.MetaNetwork: known}),
						TypeUrl: typeCLA, ResourceNames: []string{claName(i % services)}})
				}
				big := fr.dial() // the oversized requests on a connection of their own
				if big == nil {
					return
				}
				pad := strings.Repeat("p", hostileOversize)
				for i := range hostileOversized {
					fr.holdStream(big, &discoveryv3.DiscoveryRequest{TypeUrl: typeCLA, ResourceNames: []string{claName(0)},
						Node: hostileSidecar(i, map[string]any{eds.MetaNetwork: known, "MADE_UP_PADDING": pad})})
				}
				waitUntil(ctx, floodTimeout, func() bool { return fr.done.Load() >= int64(fr.total) })
			}},
	}
}

// nackFlood sends fr.total NACKs of made-up types with large error messages on one
// ADS stream, opening another when Horizon ends it. Each stream's end is an outcome.
func nackFlood(ctx context.Context, fr *floodRun, node *corev3.Node) {
	conn := fr.dial()
	if conn == nil {
		return
	}
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	small, big := strings.Repeat("n", hostileNACKMessage), strings.Repeat("N", hostileBigNACK)
	sent := 0
	for sent < fr.total && ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		s, err := ads.StreamAggregatedResources(sctx)
		if err != nil {
			cancel()
			fr.tally.add(outcome(err))
			sent++
			fr.done.Store(int64(sent))
			continue
		}
		ended := make(chan error, 1)
		go func() {
			for {
				if _, err := s.Recv(); err != nil {
					ended <- err
					return
				}
			}
		}()
		for first := true; sent < fr.total; first = false {
			msg := small
			if sent%hostileBigNACKEvery == hostileBigNACKEvery-1 {
				msg = big
			}
			req := &discoveryv3.DiscoveryRequest{
				TypeUrl:     fmt.Sprintf("type.googleapis.com/made.up.v1.Type%d", sent),
				VersionInfo: "made-up", ResponseNonce: fmt.Sprintf("nonce-%d", sent),
				ErrorDetail: status.New(codes.InvalidArgument, msg).Proto(),
			}
			if first {
				req.Node = node
			}
			err := s.Send(req)
			sent++
			fr.done.Store(int64(sent))
			if err != nil {
				break
			}
		}
		_ = s.CloseSend()
		select {
		case err = <-ended:
		case <-time.After(answerTimeout):
			err = nil // Horizon kept the stream open after the last NACK: not refused
		case <-ctx.Done():
			err = ctx.Err()
		}
		cancel()
		fr.tally.add(outcome(err))
	}
}

// namesFlood subscribes one delta stream to fr.total made-up names, in requests of
// hostileNameBatch names, and holds it open. Its outcome is how the stream ended, or
// OK if it was still open when the flood was released.
func namesFlood(ctx context.Context, fr *floodRun, node *corev3.Node) {
	conn := fr.dial()
	if conn == nil {
		return
	}
	sctx, cancel := context.WithCancel(fr.hold)
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx)
	if err != nil {
		cancel()
		fr.tally.add(outcome(err))
		return
	}
	fr.held.Add(1)
	ended := make(chan struct{})
	fr.wg.Add(1)
	go func() {
		defer fr.wg.Done()
		defer cancel()
		defer fr.held.Add(-1)
		defer close(ended)
		for {
			resp, err := s.Recv()
			if err != nil {
				if fr.hold.Err() != nil {
					err = nil // released by the tool: the stream was never refused
				}
				fr.tally.add(outcome(err))
				return
			}
			fr.res.Add(int64(len(resp.GetResources())))
		}
	}()
	// The stream outlives the flood, but a Send that Horizon never reads must not.
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	for sent := 0; sent < fr.total && ctx.Err() == nil; {
		names := make([]string, min(hostileNameBatch, fr.total-sent))
		for k := range names {
			names[k] = fmt.Sprintf("outbound|80||made-up-%d.hostile.svc.cluster.local", sent+k)
		}
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeCLA, ResourceNamesSubscribe: names}
		if sent == 0 {
			req.Node = node
		}
		if err := s.Send(req); err != nil {
			return // the stream ended: its status is the outcome
		}
		sent += len(names)
		fr.done.Store(int64(sent))
		select {
		case <-ended:
			return
		default:
		}
	}
}

// hostile runs the hostile scenario: the watcher connects and holds every service,
// then each flood runs with one timed remote change during it, and Horizon's memory
// and metrics are read after it.
func (l *loadRun) hostile(ctx context.Context) error {
	cfg, h := l.cfg, l.h
	mctx := context.WithoutCancel(ctx)
	all := make([]string, cfg.Services)
	for j := range all {
		all[j] = claName(j)
	}
	var err error
	l.fleet, err = newFleet([]string{h.xdsAddr}, []proxySpec{{index: maxProxies - 1 - maxClusters, network: 0, names: all, cds: true}}, 1, l.truth)
	if err != nil {
		return err
	}
	l.step("connecting the well-behaved proxy (state of the world, CDS and the EDS of %d services)", cfg.Services)
	l.fleet.start(ctx)
	if !waitUntil(ctx, cfg.ServeTimeout, func() bool { return l.fleet.served.Load() == 1 }) {
		return fmt.Errorf("the well-behaved proxy was not served every service within %s (log %s)", cfg.ServeTimeout, h.logPath)
	}
	res := &hostileResult{}
	l.rep.Hostile = res
	l.rep.LoadBefore = loadAvg()
	sleep(ctx, cfg.Settle)
	if res.Base, err = h.memory(mctx); err != nil {
		return err
	}
	res.BaseHWM, _ = h.status("VmHWM:")
	if res.BaseSeries, err = h.series(mctx); err != nil {
		return err
	}
	for i, fl := range l.floods(cfg.HostileScale) {
		if ctx.Err() != nil {
			break
		}
		if !strings.ContainsRune(cfg.HostileFloods, rune(fl.key)) {
			continue
		}
		l.step("flood %s", fl.name)
		fr, err := l.flood(ctx, fl, i)
		if err != nil {
			return err
		}
		res.Floods = append(res.Floods, fr)
		l.step("  %s in %s: %s; RSS %s, heap %s, %d series; remote change → watcher %s",
			plural(fr.Requests, "unit"), fr.Took.Round(time.Millisecond), fr.Outcomes.String(), mib(fr.Mem.RSS), mib(fr.Mem.Heap),
			fr.Series.Total, changeText(fr))
		if err := h.exited(); err != nil {
			return err
		}
	}
	st := l.fleet.states()[0]
	res.WatcherReconnects, res.WatcherNACKs, res.WatcherConsistent = st.reconnects, st.nacks, st.consistent
	return nil
}

// flood runs one flood, times a remote change once half of it is sent, measures
// Horizon after it, then releases what the flood held.
func (l *loadRun) flood(ctx context.Context, fl flood, i int) (floodResult, error) {
	h := l.h
	mctx := context.WithoutCancel(ctx)
	hold, release := context.WithCancel(ctx)
	fr := &floodRun{addr: h.xdsAddr, total: fl.total, hold: hold}
	defer func() {
		release()
		fr.closeConns()
		fr.wg.Wait()
	}()
	log0 := fileSize(h.logPath)
	fctx, cancel := context.WithTimeout(ctx, floodTimeout)
	defer cancel()
	t0 := time.Now()
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		fl.run(fctx, fr)
	}()
	isFinished := func() bool {
		select {
		case <-finished:
			return true
		default:
			return false
		}
	}
	waitUntil(fctx, floodTimeout, func() bool { return fr.done.Load() >= int64(fl.total/2) || isFinished() })
	// The change is made while the flood is sending, or while it holds its streams.
	out := floodResult{Name: fl.name, Planned: fl.total, During: !isFinished() || fr.held.Load() > 0}
	j := i % l.cfg.Services
	var err error
	if out.Change, out.Reached, err = l.watcherChange(ctx, j); err != nil {
		return out, err
	}
	<-finished // fctx bounds it
	out.Took = time.Since(t0)
	fr.mu.Lock()
	dialErr := fr.dialed
	fr.mu.Unlock()
	if dialErr != nil {
		return out, fmt.Errorf("dial horizon xDS at %s: %w", h.xdsAddr, dialErr)
	}
	sleep(ctx, l.cfg.Settle)
	if out.Mem, err = h.memory(mctx); err != nil {
		return out, err
	}
	out.HWM, _ = h.status("VmHWM:")
	// The kernel batches RSS counters per thread, so a peak read just after RSS can
	// be a few pages below it.
	out.HWM = max(out.HWM, out.Mem.RSS)
	if out.Series, err = h.series(mctx); err != nil {
		return out, err
	}
	out.Groups = -1
	if m, err := h.metrics(mctx); err != nil {
		return out, err
	} else if g, ok := m["horizon_xds_groups"]; ok {
		out.Groups = int(g)
	}
	out.LogBytes = fileSize(h.logPath) - log0
	out.Held = int(fr.held.Load())
	out.Requests = int(fr.done.Load())
	// Release the held streams, then read the outcomes they end with.
	release()
	fr.closeConns()
	fr.wg.Wait()
	out.Outcomes = fr.tally.counts()
	out.Resources = int(fr.res.Load())
	return out, nil
}

// watcherChange toggles the spare endpoint of service j in cluster2 and times it
// until the watcher holds the new state, or -change-timeout.
func (l *loadRun) watcherChange(ctx context.Context, j int) (time.Duration, bool, error) {
	tr, name := l.truth, claName(j)
	var ch *change
	_, _, _, err := l.remote.toggle(ctx, j, func(count int) {
		w := l.want(count)
		ch = &change{name: name, want: w, wanted: 1, seen: map[int]arrival{}, done: make(chan struct{})}
		tr.mu.Lock()
		tr.want[name] = w
		ch.at = time.Now()
		tr.change = ch
		tr.mu.Unlock()
	})
	if err != nil {
		if ctx.Err() != nil {
			return 0, false, nil
		}
		return 0, false, err
	}
	select {
	case <-ch.done:
	case <-time.After(l.cfg.ChangeTimeout):
	case <-ctx.Done():
	}
	tr.mu.Lock()
	tr.change = nil
	tr.mu.Unlock()
	lat, _ := ch.latencies() // the watcher uses state of the world
	if len(lat) == 0 {
		return 0, false, nil
	}
	return lat[0], true, nil
}

// series counts the series on Horizon's /metrics.
func (h *horizonProc) series(ctx context.Context) (seriesCount, error) {
	b, code, err := h.get(ctx, "/metrics")
	if err != nil {
		return seriesCount{}, fmt.Errorf("read horizon /metrics: %w", err)
	}
	if code != 200 {
		return seriesCount{}, fmt.Errorf("read horizon /metrics: status %d", code)
	}
	return countSeries(b), nil
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

func changeText(f floodResult) string {
	if !f.Reached {
		return "NOT RECEIVED"
	}
	when := "during the flood"
	if f.During && f.Held > 0 {
		when = "while its streams were held"
	} else if !f.During {
		when = "after the flood"
	}
	return fmt.Sprintf("%s (%s)", secs(f.Change), when)
}

// growth is the largest RSS and heap growth over the base after any flood.
func (r *hostileResult) growth() (rss, heap float64) {
	for _, f := range r.Floods {
		rss = max(rss, float64(f.Mem.RSS)-float64(r.Base.RSS))
		heap = max(heap, float64(f.Mem.Heap)-float64(r.Base.Heap))
	}
	return rss, heap
}

// slowest is the longest change → watcher time, and whether every change arrived.
func (r *hostileResult) slowest() (time.Duration, bool) {
	var d time.Duration
	all := len(r.Floods) > 0
	for _, f := range r.Floods {
		all = all && f.Reached
		d = max(d, f.Change)
	}
	return d, all
}

// maxSeries is the most series /metrics had after any flood.
func (r *hostileResult) maxSeries() int {
	n := r.BaseSeries.Total
	for _, f := range r.Floods {
		n = max(n, f.Series.Total)
	}
	return n
}

// ok: every change reached the watcher, which stayed connected, NACKed nothing and
// holds the final state.
func (r *hostileResult) ok() bool {
	_, all := r.slowest()
	return all && r.WatcherReconnects == 0 && r.WatcherNACKs == 0 && r.WatcherConsistent
}

// logGrowth is how much Horizon's log grew, in KiB below 1 MiB.
func logGrowth(b int64) string {
	if b < 1<<20 {
		return fmt.Sprintf("+%.1f KiB", float64(b)/1024)
	}
	return signedMiB(float64(b))
}

func signedMiB(b float64) string { return fmt.Sprintf("%+.1f MiB", b/(1<<20)) }

// write prints the hostile scenario's results.
func (r *hostileResult) write(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("Hostile clients (one after the other; a well-behaved state-of-the-world proxy on its own connection watches CDS and every service's EDS):")
	p("  %-75s RSS %s (peak %s; freed heap not yet returned to the OS %s)  heap %s  metric series %s", "only the watcher connected",
		mib(r.Base.RSS), mib(r.BaseHWM), mib(r.Base.FreeHeld), mib(r.Base.Heap), r.BaseSeries)
	for _, f := range r.Floods {
		p("")
		p("  %s", f.Name)
		p("    sent %d of %d in %s; outcomes: %s; resources sent back %d; streams held open %d", f.Requests, f.Planned, secs(f.Took), f.Outcomes.String(), f.Resources, f.Held)
		p("    after: RSS %s (%s; peak so far %s; freed heap not yet returned to the OS %s)  heap %s (%s)  goroutines %d  proxy groups %d  metric series %s  log %s",
			mib(f.Mem.RSS), signedMiB(float64(f.Mem.RSS)-float64(r.Base.RSS)), mib(f.HWM), mib(f.Mem.FreeHeld), mib(f.Mem.Heap),
			signedMiB(float64(f.Mem.Heap)-float64(r.Base.Heap)), f.Mem.Goroutines, f.Groups, f.Series, logGrowth(f.LogBytes))
		p("    remote EndpointSlice change → watcher: %s", changeText(f))
	}
	rss, heap := r.growth()
	slow, all := r.slowest()
	p("")
	p("  largest growth after a flood: RSS %s, heap %s   (target < %s; %s)", signedMiB(rss), signedMiB(heap), mib(targetHostileGrowth), verdict(rss < targetHostileGrowth))
	p("  slowest change → watcher      %s, all received: %v   (target < %s; %s)", secs(slow), all, secs(targetHostileChange), verdict(all && slow < targetHostileChange))
	p("  most metric series            %d   (target < %d; %s)", r.maxSeries(), targetSeries, verdict(r.maxSeries() < targetSeries))
	p("  watcher: %d reconnects, %d NACKs, holds the final state: %v", r.WatcherReconnects, r.WatcherNACKs, r.WatcherConsistent)
}

// markdown appends the hostile scenario's table.
func (r *hostileResult) markdown(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format+"\n", args...) }
	p("| flood | outcomes | RSS after (Δ) | heap after (Δ) | groups | metric series | log | remote change → watcher |")
	p("| --- | --- | --- | --- | --- | --- | --- | --- |")
	p("| only the watcher | | %s | %s | | %d | | |", mib(r.Base.RSS), mib(r.Base.Heap), r.BaseSeries.Total)
	for _, f := range r.Floods {
		p("| %s | %s | %s (%s) | %s (%s) | %d | %d | %s | %s |", f.Name, f.Outcomes.String(),
			mib(f.Mem.RSS), signedMiB(float64(f.Mem.RSS)-float64(r.Base.RSS)),
			mib(f.Mem.Heap), signedMiB(float64(f.Mem.Heap)-float64(r.Base.Heap)),
			f.Groups, f.Series.Total, logGrowth(f.LogBytes), changeText(f))
	}
}
