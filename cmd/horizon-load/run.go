package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/horizon-mesh/horizon/cmd/localmesh"
)

// run sets up the clusters and Horizon, runs every phase and writes the report to
// out (and to cfg.Markdown). The error is for a run that could not measure; a run
// that measured failures returns a report whose OK is false. When ctx ends (or
// -duration passes) the phases left are skipped and what was measured is reported.
func run(ctx context.Context, cfg config, out io.Writer) (*report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	progress := cfg.Progress
	if progress == nil {
		progress = out
	}
	l := &loadRun{cfg: cfg, progress: progress, rep: &report{Config: cfg, CPUs: runtime.NumCPU(), Started: time.Now()}}

	work, err := os.MkdirTemp("", "horizon-load-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	bin, err := findHorizon(ctx, cfg, work)
	if err != nil {
		return nil, err
	}
	env, c1, err := l.setup(ctx)
	if env != nil {
		defer env.Close()
	}
	if err != nil {
		return nil, err
	}
	stopAll := func() {
		for _, h := range l.hs {
			h.stop()
		}
	}
	if err := l.startHorizon(ctx, bin, work, c1); err != nil {
		stopAll()
		return nil, err
	}
	defer stopAll()
	defer func() {
		if l.fleet != nil {
			l.fleet.close()
		}
	}()
	if cfg.Scenario == scenarioHostile {
		if err := l.hostile(ctx); err != nil {
			return nil, err
		}
	} else if err := l.phases(ctx); err != nil {
		return nil, err
	}
	l.profiles.Wait()

	rep := l.rep
	m, err := l.h.metrics(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	rep.Pushes = m["horizon_xds_pushes_total"]
	rep.NACKs = m["horizon_xds_nacks_total"]
	rep.Refused = m["horizon_xds_refused_requests_total"]
	rep.Throttled = m["horizon_xds_throttled_requests_total"]
	if rep.ClustersAtEnd, err = l.h.clusters(context.WithoutCancel(ctx)); err != nil {
		return nil, err
	}
	if l.fleet != nil {
		rep.Responses, rep.Resources, rep.Reconnects, rep.ClientNACKs = l.fleet.totals()
		rep.CDSResponses = l.fleet.cdsResponses()
	}
	rep.TimedOut = ctx.Err() != nil
	rep.LoadAfter = loadAvg()
	rep.Elapsed = time.Since(rep.Started)

	rep.write(out)
	if cfg.Markdown != "" {
		if err := rep.appendMarkdown(cfg.Markdown); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// phases runs the fleet scenario: connect the proxies, time the changes, churn.
func (l *loadRun) phases(ctx context.Context) error {
	if err := l.connect(ctx); err != nil {
		return err
	}
	if err := l.timeChanges(ctx); err != nil {
		return err
	}
	if l.cfg.KillReplicaAfter > 0 && ctx.Err() == nil {
		if err := l.failover(ctx); err != nil {
			return err
		}
	}
	if l.cfg.ChurnRate > 0 && ctx.Err() == nil {
		var err error
		if l.rep.Churn, err = l.churn(ctx); err != nil {
			return err
		}
	}
	return nil
}

// loadRun is one run's state, shared by its phases. The phases run one after the
// other on the caller's goroutine.
type loadRun struct {
	cfg      config
	progress io.Writer
	rep      *report

	// hs are the horizon replicas (-replicas); h is the first, which the
	// measurements of memory, CPU and counters read.
	hs     []*horizonProc
	h      *horizonProc
	truth  *truth
	remote *remoteSlices
	fleet  *fleet
	// profiles joins the CPU profiles being taken.
	profiles sync.WaitGroup
	// atConnected is Horizon's metrics once the fleet was served.
	atConnected map[string]float64
}

func (l *loadRun) step(format string, args ...any) {
	fmt.Fprintf(l.progress, "==> "+format+"\n", args...)
}

// setup starts etcd and every cluster and writes the services, meshNetworks and the
// remote Secrets. The environment is returned even with an error, to be closed.
func (l *loadRun) setup(ctx context.Context) (*localmesh.Environment, *localmesh.Cluster, error) {
	cfg := l.cfg
	n := cfg.Clusters
	t0 := time.Now()
	l.step("starting etcd and %d kube-apiservers (%s), %d at a time, and writing %d services × %d endpoints into each (%d writers)",
		n, localmesh.BinDir(), cfg.StartParallel, cfg.Services, cfg.Endpoints, cfg.Writers)
	env, err := localmesh.Start()
	if err != nil {
		return nil, nil, err
	}
	// Each cluster is started and then written while holding one of StartParallel
	// slots: both are mostly the API server's CPU, and the peak memory of the setup
	// grows with the clusters busy at once.
	clusters := make([]*localmesh.Cluster, n)
	slices := make([][]*discoveryv1.EndpointSlice, n)
	errs := make([]error, n)
	slots := make(chan struct{}, cfg.StartParallel)
	var wg sync.WaitGroup
	for c := range clusters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				errs[c] = ctx.Err()
				return
			}
			defer func() { <-slots }()
			// A busy machine starting many API servers needs more than the default minute.
			if clusters[c], errs[c] = env.StartClusterWith(ctx, clusterName(c), localmesh.ClusterOptions{ReadyTimeout: 5 * time.Minute}); errs[c] != nil {
				return
			}
			cs, err := writeClient(clusters[c].Config)
			if err != nil {
				errs[c] = err
				return
			}
			slices[c], errs[c] = writeCluster(ctx, cs, c, cfg)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return env, nil, err
	}
	l.remote = &remoteSlices{cs: clusters[changedCluster].Client, slices: slices[changedCluster], spare: make([]bool, cfg.Services), n: cfg.Endpoints}
	if err := writeMeshConfig(ctx, clusters); err != nil {
		return env, nil, err
	}
	l.truth = &truth{want: map[string][]sig{}}
	for j := range cfg.Services {
		l.truth.want[claName(j)] = l.want(cfg.Endpoints)
	}
	l.rep.SetupTime = time.Since(t0)
	return env, clusters[0], nil
}

// want is what a sidecar on each network should hold for a service with changed
// endpoints in cluster2 and -endpoints in every other cluster.
func (l *loadRun) want(changed int) []sig {
	counts := make([]int, l.cfg.Clusters)
	for c := range counts {
		counts[c] = l.cfg.Endpoints
	}
	counts[changedCluster] = changed
	return expectedAll(counts)
}

// startHorizon runs -replicas horizon processes against cluster1 and waits until
// each is ready and a probe on each network holds every service from each: the
// fleet then measures serving, not Horizon's initial sync. It records when each
// cluster synced, as the first replica's /debug/clusterz says.
func (l *loadRun) startHorizon(ctx context.Context, bin, work string, c1 *localmesh.Cluster) error {
	kc := filepath.Join(work, "cluster1.kubeconfig")
	b, err := c1.Kubeconfig(c1.Config.BearerToken)
	if err == nil {
		err = os.WriteFile(kc, b, 0o600)
	}
	if err != nil {
		return err
	}
	if l.cfg.ProfileDir != "" {
		if err := os.MkdirAll(l.cfg.ProfileDir, 0o755); err != nil {
			return err
		}
	}
	l.step("starting horizon serve (%s), %d replica(s)", bin, l.cfg.Replicas)
	t0 := time.Now()
	for r := range l.cfg.Replicas {
		name := "horizon"
		if r > 0 {
			name = fmt.Sprintf("horizon-%d", r+1)
		}
		h, err := startHorizon(bin, kc, work, name, strings.Fields(l.cfg.HorizonArgs))
		if err != nil {
			return err
		}
		l.hs = append(l.hs, h)
	}
	l.h = l.hs[0]
	if l.cfg.ProfileDir != "" {
		// From the moment Horizon answers HTTP: its sync, readiness and the probes.
		if err := l.h.waitHTTP(ctx, time.Minute); err != nil {
			return err
		}
		l.profileCPU(ctx, "startup.cpu.pprof")
	}
	// Every cluster is listed at once: allow more with many clusters on a busy machine.
	startTimeout := time.Minute + time.Duration(l.cfg.Clusters)*10*time.Second
	for _, h := range l.hs {
		if err := h.waitReady(ctx, startTimeout); err != nil {
			return err
		}
	}
	readyAt := time.Now()
	l.rep.ReadyTime = readyAt.Sub(t0)

	all := make([]string, l.cfg.Services)
	for j := range all {
		all[j] = claName(j)
	}
	probeSpecs := make([]proxySpec, l.cfg.Clusters)
	for n := range probeSpecs {
		probeSpecs[n] = proxySpec{index: maxProxies - 1 - n, network: n, names: all}
	}
	for _, h := range l.hs {
		probes, err := newFleet([]string{h.xdsAddr}, probeSpecs, len(probeSpecs), l.truth)
		if err != nil {
			return err
		}
		probes.start(ctx)
		ok := waitUntil(ctx, startTimeout, func() bool { return probes.served.Load() == int64(len(probeSpecs)) })
		probes.close()
		if !ok {
			return fmt.Errorf("horizon did not serve every endpoint to a probe on each network within %s (log %s)", startTimeout, h.logPath)
		}
	}
	servedAt := time.Now()
	l.rep.ReadyToServed = servedAt.Sub(t0)

	syncs, err := l.h.clusters(ctx)
	if err != nil {
		return err
	}
	l.rep.HorizonStarted, l.rep.ClusterSyncs = t0, syncs
	var last time.Time
	for _, s := range syncs {
		if s.SyncedAt.IsZero() {
			return fmt.Errorf("horizon serves every endpoint but reports cluster %s %s, not synced (log %s)", s.ID, s.State, l.h.logPath)
		}
		if s.SyncedAt.After(last) {
			last = s.SyncedAt
		}
	}
	if len(syncs) != l.cfg.Clusters {
		return fmt.Errorf("horizon reports %d clusters, want %d (log %s)", len(syncs), l.cfg.Clusters, l.h.logPath)
	}
	l.rep.SyncToReady, l.rep.SyncToServed = readyAt.Sub(last), servedAt.Sub(last)
	l.step("horizon ready and serving %d services × %d clusters (setup %s, horizon ready %s)", l.cfg.Services, l.cfg.Clusters,
		l.rep.SetupTime.Round(time.Millisecond), l.rep.ReadyToServed.Round(time.Millisecond))
	return nil
}

// profileCPU takes a CPU profile of Horizon in the background, when -profile is set.
func (l *loadRun) profileCPU(ctx context.Context, name string) {
	if l.cfg.ProfileDir == "" {
		return
	}
	l.profiles.Add(1)
	go func() {
		defer l.profiles.Done()
		query := fmt.Sprintf("profile?seconds=%d", l.cfg.ProfileSeconds)
		if err := l.h.saveProfile(ctx, query, filepath.Join(l.cfg.ProfileDir, name)); err != nil {
			fmt.Fprintln(l.progress, "    profile:", err)
		}
	}()
	time.Sleep(20 * time.Millisecond) // let the profile start first
}

// connect measures Horizon's memory, connects the fleet, measures how long each
// proxy takes to hold every watched resource, and measures the memory again.
func (l *loadRun) connect(ctx context.Context) error {
	cfg, rep, h := l.cfg, l.rep, l.h
	mctx := context.WithoutCancel(ctx) // measurements still taken if ctx ends
	l.profiles.Wait()                  // the startup CPU profile: Horizon takes one at a time
	sleep(ctx, cfg.Settle)
	var err error
	if rep.MemBefore, err = h.memory(mctx); err != nil {
		return err
	}
	if cfg.ProfileDir != "" {
		if err := h.saveProfile(mctx, "heap", filepath.Join(cfg.ProfileDir, "startup.heap.pprof")); err != nil {
			fmt.Fprintln(l.progress, "    profile:", err)
		}
	}
	m0, err := h.metrics(mctx)
	if err != nil {
		return err
	}

	k := cfg.watchCount()
	sp := specs(cfg.Proxies, k, cfg.Services, cfg.Clusters, cfg.DeltaFraction, cfg.CDS || cfg.FullMesh)
	for _, s := range sp {
		if s.delta {
			rep.DeltaProxies++
		}
	}
	addrs := make([]string, len(l.hs))
	for r, h := range l.hs {
		addrs[r] = h.xdsAddr
	}
	if l.fleet, err = newFleet(addrs, sp, cfg.ProxiesPerConn, l.truth); err != nil {
		return err
	}
	f := l.fleet
	rep.Conns = len(f.conns)
	l.step("connecting %d proxies (%d state of the world, %d delta) on %d connections, each watching %d services%s",
		cfg.Proxies, cfg.Proxies-rep.DeltaProxies, rep.DeltaProxies, rep.Conns, k, map[bool]string{true: " after CDS (full mesh)"}[cfg.FullMesh])
	l.profileCPU(ctx, "connect.cpu.pprof")
	if cfg.SelfProfile != "" {
		stop, err := startSelfProfile(cfg.SelfProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	rep.LoadBefore = loadAvg()
	self0 := selfCPU()
	f.start(ctx)
	waitUntil(ctx, cfg.ServeTimeout, func() bool { return f.served.Load() == int64(cfg.Proxies) })
	rep.Served = int(f.served.Load())
	var served, servedSotW, servedDelta []time.Duration
	for i, st := range f.states() {
		if !st.servedAt.IsZero() {
			d := st.servedAt.Sub(f.started)
			served = append(served, d)
			if f.proxies[i].spec.delta {
				servedDelta = append(servedDelta, d)
			} else {
				servedSotW = append(servedSotW, d)
			}
		} else if st.lastErr != nil && rep.ServeError == "" {
			rep.ServeError = st.lastErr.Error()
		}
	}
	rep.ServeTimes, rep.ServeTimesSotW, rep.ServeTimesDelta = summarize(served), summarize(servedSotW), summarize(servedDelta)
	bytes, _ := f.received()
	rep.ServeBytes = perKind(f.proxies, func(p *proxy) float64 { return float64(bytes[p.pos]) })
	rep.SelfCPUConnect = selfCPU() - self0
	if err := h.exited(); err != nil {
		return err
	}
	l.step("%d of %d proxies served (p50 %s, max %s)", rep.Served, cfg.Proxies, rep.ServeTimes.P50, rep.ServeTimes.Max)

	sleep(ctx, cfg.Settle)
	if rep.MemWith, err = h.memory(mctx); err != nil {
		return err
	}
	if cfg.ProfileDir != "" {
		l.profiles.Wait()
		if err := h.saveProfile(mctx, "heap", filepath.Join(cfg.ProfileDir, "proxies.heap.pprof")); err != nil {
			fmt.Fprintln(l.progress, "    profile:", err)
		}
		l.step("profiles written to %s", cfg.ProfileDir)
	}
	if l.atConnected, err = h.metrics(mctx); err != nil {
		return err
	}
	rep.ConnectPushes = l.atConnected["horizon_xds_pushes_total"] - m0["horizon_xds_pushes_total"]
	rep.HorizonCPUConnect = cpuSeconds(l.atConnected) - cpuSeconds(m0)
	return nil
}

// timeChanges makes cfg.Changes single-endpoint changes to cluster2's
// EndpointSlices, one after the other, and times each until every proxy watching the
// service holds its new state, or cfg.ChangeTimeout.
func (l *loadRun) timeChanges(ctx context.Context) error {
	cfg, rep, f := l.cfg, l.rep, l.fleet
	if cfg.Changes == 0 || ctx.Err() != nil {
		return nil
	}
	l.step("timing %d single-endpoint changes of cluster2 EndpointSlices", cfg.Changes)
	l.profileCPU(ctx, "changes.cpu.pprof")
	self0 := selfCPU()
	push0, err := l.h.histogram(ctx, "horizon_xds_push_latency_seconds")
	if err != nil {
		return err
	}
	var firsts, spreads []time.Duration
	for c := range cfg.Changes {
		if ctx.Err() != nil {
			break
		}
		j := changeService(c, cfg.Changes, cfg.Services, f)
		cr, err := l.timeChange(ctx, j)
		if err != nil {
			return err
		}
		if cr == nil {
			break
		}
		if lat := cr.all; len(lat) > 0 {
			first, last := slices.Min(lat), slices.Max(lat)
			firsts, spreads = append(firsts, first), append(spreads, last-first)
		}
		l.step("change %d: %s an endpoint of %s: %d/%d watching proxies in p50 %s, max %s (write %s)",
			c+1, cr.Op, cr.Service, cr.Reached, cr.Watchers, cr.Latency.P50, cr.Latency.Max, cr.WriteLatency.Round(time.Microsecond))
		rep.Changes = append(rep.Changes, *cr)
		rep.ChangePairs += cr.Watchers
		rep.ChangeTimeouts += cr.Watchers - cr.Reached
	}
	var all, allSotW, allDelta []time.Duration
	for _, c := range rep.Changes {
		all = append(all, c.all...)
		allSotW = append(allSotW, c.sotw...)
		allDelta = append(allDelta, c.delta...)
	}
	rep.ChangeLatency, rep.ChangeLatencySotW, rep.ChangeLatencyDelta = summarize(all), summarize(allSotW), summarize(allDelta)
	rep.SelfCPUChanges = selfCPU() - self0
	rep.ChangeFirst, rep.ChangeSpread = summarize(firsts), summarize(spreads)
	push1, err := l.h.histogram(context.WithoutCancel(ctx), "horizon_xds_push_latency_seconds")
	if err != nil {
		return err
	}
	rep.HorizonPush = [2]time.Duration{push1.since(push0).quantile(0.5), push1.since(push0).quantile(0.99)}
	m, err := l.h.metrics(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	rep.HorizonCPUChanges = cpuSeconds(m) - cpuSeconds(l.atConnected)
	rep.ChangePushes = m["horizon_xds_pushes_total"] - l.atConnected["horizon_xds_pushes_total"]
	return nil
}

// timeChange adds or removes the spare endpoint of service j in cluster2 and times
// the change until every proxy watching the service holds its new state, or
// -change-timeout. It returns nil if ctx ended first.
func (l *loadRun) timeChange(ctx context.Context, j int) (*changeResult, error) {
	cfg, f, tr := l.cfg, l.fleet, l.truth
	name := claName(j)
	r0, _, _, _ := f.totals()
	bytes0, res0 := f.received()
	var ch *change
	count, _, took, err := l.remote.toggle(ctx, j, func(count int) {
		w := l.want(count)
		ch = &change{name: name, want: w, wanted: len(f.byName[name]), seen: map[int]arrival{}, done: make(chan struct{})}
		tr.mu.Lock()
		tr.want[name] = w
		ch.at = time.Now()
		tr.change = ch
		tr.mu.Unlock()
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil
		}
		return nil, err
	}
	select {
	case <-ch.done:
	case <-time.After(cfg.ChangeTimeout):
	case <-ctx.Done():
	}
	tr.mu.Lock()
	tr.change = nil
	tr.mu.Unlock()
	sotw, delta := ch.latencies()
	lat := append(slices.Clone(sotw), delta...)
	r1, _, _, _ := f.totals()
	op := "remove"
	if count > cfg.Endpoints {
		op = "add"
	}
	cr := &changeResult{Service: serviceName(j), Op: op, Watchers: ch.wanted, Reached: len(lat),
		WriteLatency: took, Latency: summarize(lat), Responses: r1 - r0, all: lat, sotw: sotw, delta: delta,
		ChangedSize: ch.changedSize()}
	// Bytes and resources until the next change: a push that comes late counts too.
	sleep(ctx, 300*time.Millisecond)
	bytes1, res1 := f.received()
	watchers := f.byName[name]
	cr.Bytes = perKind(watchers, func(p *proxy) float64 { return float64(bytes1[p.pos] - bytes0[p.pos]) })
	cr.Resources = perKind(watchers, func(p *proxy) float64 { return float64(res1[p.pos] - res0[p.pos]) })
	return cr, nil
}

// changeService picks the service of timed change c: spread over the services, and
// watched by at least one proxy.
func changeService(c, changes, services int, f *fleet) int {
	stride := max(1, services/max(changes, 1))
	j := (c * stride) % services
	for range services {
		if len(f.byName[claName(j)]) > 0 {
			return j
		}
		j = (j + 1) % services
	}
	return j
}

// churn writes cfg.ChurnRate changes per second for cfg.ChurnDuration, then measures
// how long after the last write every proxy holds the final state, and samples
// Horizon's memory throughout.
func (l *loadRun) churn(ctx context.Context) (*churnResult, error) {
	cfg, h, f, tr := l.cfg, l.h, l.fleet, l.truth
	mctx := context.WithoutCancel(ctx)
	res := &churnResult{}
	l.step("churn: %.3g changes/s for %s", cfg.ChurnRate, cfg.ChurnDuration)
	var err error
	if res.HeapBefore, err = h.memory(mctx); err != nil {
		return nil, err
	}
	m0, err := h.metrics(mctx)
	if err != nil {
		return nil, err
	}
	// RSS every 500ms, without forcing GCs.
	stopSampling := make(chan struct{})
	sampled := make(chan []uint64)
	go func() {
		var rss []uint64
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := h.rss(); err == nil {
				rss = append(rss, v)
			}
			select {
			case <-stopSampling:
				sampled <- rss
				return
			case <-t.C:
			}
		}
	}()
	stop := func() []uint64 {
		close(stopSampling)
		return <-sampled
	}

	// Services in a shuffled order, cycled: a service changes again only after every
	// other watched one did, so that no write undoes the one before within a debounce.
	var watched []int
	for _, j := range rand.Perm(cfg.Services) {
		if len(f.byName[claName(j)]) > 0 {
			watched = append(watched, j)
		}
	}
	interval := time.Duration(float64(time.Second) / cfg.ChurnRate)
	start := time.Now()
	end := start.Add(cfg.ChurnDuration)
	var last time.Time
	for next := start; next.Before(end) && ctx.Err() == nil; next = next.Add(interval) {
		if d := time.Until(next); d > 0 {
			sleep(ctx, d)
		}
		j := watched[res.Writes%len(watched)]
		_, started, _, err := l.remote.toggle(ctx, j, func(count int) {
			tr.mu.Lock()
			tr.want[claName(j)] = l.want(count)
			tr.mu.Unlock()
		})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			stop()
			return nil, err
		}
		last = started
		res.Writes++
	}
	res.Elapsed = time.Since(start)
	converged := waitUntil(ctx, cfg.ChangeTimeout+10*time.Second, func() bool {
		for _, p := range f.proxies {
			if !p.state().consistent {
				return false
			}
		}
		return true
	})
	for _, st := range f.states() {
		if !st.consistent {
			res.NotConverged++
			continue
		}
		if d := st.lastChange.Sub(last); res.Writes > 0 && d > res.Converge {
			res.Converge = d
		}
	}
	res.Converged = converged && res.NotConverged == 0
	sleep(ctx, cfg.Settle)
	res.RSS = stop()
	if res.HeapAfter, err = h.memory(mctx); err != nil {
		return nil, err
	}
	if cfg.ProfileDir != "" {
		if err := h.saveProfile(mctx, "heap", filepath.Join(cfg.ProfileDir, "churn.heap.pprof")); err != nil {
			fmt.Fprintln(l.progress, "    profile:", err)
		}
	}
	m1, err := h.metrics(mctx)
	if err != nil {
		return nil, err
	}
	res.Pushes = m1["horizon_xds_pushes_total"] - m0["horizon_xds_pushes_total"]
	l.step("churn: %d writes in %s; every proxy converged %s after the last write: %v", res.Writes,
		res.Elapsed.Round(time.Millisecond), res.Converge.Round(time.Millisecond), res.Converged)
	return res, nil
}

// kindMeans is a mean per proxy, state of the world and delta apart; NaN where a
// kind has no proxy.
type kindMeans struct{ SotW, Delta float64 }

// perKind averages v over ps, state of the world and delta apart.
func perKind(ps []*proxy, v func(*proxy) float64) kindMeans {
	var sum [2]float64
	var n [2]int
	for _, p := range ps {
		k := 0
		if p.spec.delta {
			k = 1
		}
		sum[k] += v(p)
		n[k]++
	}
	mean := func(k int) float64 {
		if n[k] == 0 {
			return math.NaN()
		}
		return sum[k] / float64(n[k])
	}
	return kindMeans{SotW: mean(0), Delta: mean(1)}
}

// cpuSeconds is the CPU time a process reported in its metrics.
func cpuSeconds(m map[string]float64) time.Duration {
	return time.Duration(m["process_cpu_seconds_total"] * float64(time.Second))
}

// selfCPU is this process's CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAvg is the machine's 1-minute load average ("" if unknown): what else competed
// for the CPUs.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return ""
}

// startSelfProfile profiles this process's CPU into path until the returned func runs.
func startSelfProfile(path string) (func(), error) {
	pf, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(pf); err != nil {
		pf.Close()
		return nil, fmt.Errorf("-self-cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		pf.Close()
	}, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// stats summarizes durations.
type stats struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

func summarize(ds []time.Duration) stats {
	if len(ds) == 0 {
		return stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	pct := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1 // nearest rank
		return s[min(max(i, 0), len(s)-1)]
	}
	return stats{N: len(s), P50: pct(0.50), P90: pct(0.90), P99: pct(0.99), Max: s[len(s)-1]}
}
