package main

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// Comparison targets (docs/load.md): Istio's numbers on a 2-core machine with this
// topology were 40s to serve every proxy, 112 KB per proxy and p99 0.41s per change.
// The startup targets are the performance issue's for 3 clusters × 1,000 services ×
// 10 endpoints: ready within 10s of the informers' sync, and a heap under 200 MB.

// targetServed and targetChangeP99 are the targets for a fleet of proxies: 2s and
// 0.2s up to 1,000 proxies (the performance issue's), 5s and 0.3s beyond (the scale
// issue's, set at 10,000 proxies with a connection each).
func targetServed(proxies int) time.Duration {
	if proxies <= 1000 {
		return 2 * time.Second
	}
	return 5 * time.Second
}

func targetChangeP99(proxies int) time.Duration {
	if proxies <= 1000 {
		return 200 * time.Millisecond
	}
	return 300 * time.Millisecond
}

const (
	targetPerProxy    = 20 << 10
	targetSyncToReady = 10 * time.Second
	targetStartupHeap = 200_000_000
)

// report is everything one run measured.
type report struct {
	Config  config
	CPUs    int
	Started time.Time
	Elapsed time.Duration
	// TimedOut: -duration ended the run early.
	TimedOut bool

	SetupTime     time.Duration // clusters, objects, meshNetworks and Secrets
	ReadyTime     time.Duration // horizon start → /readyz
	ReadyToServed time.Duration // horizon start → a probe on each network holds every endpoint
	// HorizonStarted is when horizon serve was started; ClusterSyncs is what it
	// reported of each cluster's sync once serving.
	HorizonStarted time.Time
	ClusterSyncs   []clusterSync
	// ClustersAtEnd is what Horizon reported of each cluster at the end of the run:
	// the cached objects and the API requests of the whole run.
	ClustersAtEnd []clusterSync
	// From the last cluster's sync (informers synced, startup backlog processed) to
	// /readyz and to a probe on each network holding every endpoint.
	SyncToReady, SyncToServed time.Duration

	DeltaProxies int
	Conns        int
	Served       int
	ServeTimes   stats // per proxy: fleet start → holds every watched endpoint
	// ServeTimesSotW and ServeTimesDelta are ServeTimes of each kind of proxy.
	ServeTimesSotW, ServeTimesDelta stats
	// ServeBytes is the bytes a proxy of each kind received until it was served
	// (until every proxy was served).
	ServeBytes kindMeans
	ServeError string

	MemBefore, MemWith memSample
	ConnectPushes      float64
	// CPU used while connecting (until every proxy was served or the timeout).
	HorizonCPUConnect, SelfCPUConnect time.Duration
	// Machine load average (1 minute) before connecting and at the end.
	LoadBefore, LoadAfter string

	Changes       []changeResult
	ChangeLatency stats // over every (proxy, change) pair that arrived
	// ChangeLatencySotW and ChangeLatencyDelta are ChangeLatency of each kind of proxy.
	ChangeLatencySotW, ChangeLatencyDelta stats
	ChangePairs                           int
	ChangeTimeouts                        int
	ChangePushes                          float64
	// HorizonCPUChanges is Horizon's CPU time over the timed changes.
	HorizonCPUChanges time.Duration
	// Where a change's time went: per change, the first watching proxy's receipt
	// and the time from it to the last one's; Horizon's own part, from a change
	// reaching its push loop to a response handed to gRPC (its push-latency
	// histogram over the changes, interpolated); this tool's CPU time over the
	// changes.
	ChangeFirst, ChangeSpread stats
	HorizonPush               [2]time.Duration // p50, p99
	SelfCPUChanges            time.Duration

	Churn *churnResult

	// Failover is the -kill-replica-after result, else nil.
	Failover *failoverResult

	// Hostile is the hostile scenario's result (-scenario hostile), else nil.
	Hostile *hostileResult

	Pushes, NACKs float64 // Horizon's counters at the end
	Responses     int     // received by the fleet
	CDSResponses  int     // of them CDS (with -full-mesh)
	Resources     int
	Reconnects    int
	ClientNACKs   int
	// Refused and Throttled are Horizon's xDS refusals (every reason) and requests
	// slowed by a stream's request rate: with the default limits, both 0.
	Refused, Throttled float64
}

type changeResult struct {
	Service      string
	Op           string
	Watchers     int
	Reached      int
	WriteLatency time.Duration
	Latency      stats
	Responses    int // responses the fleet received while the change was timed
	// Bytes and Resources are what a watching proxy of each kind received, on
	// average, from the write until 300ms after the last watcher got the change.
	Bytes, Resources kindMeans
	// ChangedSize is the size of the changed ClusterLoadAssignment as sent.
	ChangedSize      int
	all, sotw, delta []time.Duration
}

// changeBytes averages the bytes and resources a watching proxy of each kind
// received per change, and the changed assignment's size, over the changes.
func (r *report) changeBytes() (bytes, resources kindMeans, changed float64) {
	n := float64(len(r.Changes))
	for _, c := range r.Changes {
		bytes.SotW += c.Bytes.SotW / n
		bytes.Delta += c.Bytes.Delta / n
		resources.SotW += c.Resources.SotW / n
		resources.Delta += c.Resources.Delta / n
		changed += float64(c.ChangedSize) / n
	}
	return bytes, resources, changed
}

type churnResult struct {
	Writes                int
	Elapsed               time.Duration
	Converged             bool
	NotConverged          int
	Converge              time.Duration // last write → last proxy holds the final state
	HeapBefore, HeapAfter memSample     // after forced GCs
	RSS                   []uint64      // every 500ms
	Pushes                float64
}

// OK reports whether every proxy was served, every change reached every watcher,
// nothing was rejected and churn (if run) converged.
func (r *report) OK() bool {
	if r.Hostile != nil {
		// Horizon counts the hostile clients' NACKs too: only the watcher's count.
		return !r.TimedOut && r.Hostile.ok()
	}
	ok := !r.TimedOut && r.Served == r.Config.Proxies && r.ChangeTimeouts == 0 && r.NACKs == 0 && r.ClientNACKs == 0
	if r.Churn != nil {
		ok = ok && r.Churn.Converged
	}
	if r.Failover != nil {
		ok = ok && r.Failover.ok()
	}
	return ok
}

// kindName names the kinds of proxy: 0 state of the world, 1 delta.
var kindName = [2]string{"state of world", "delta"}

// kinds lists the kinds of proxy the fleet had (0 state of the world, 1 delta).
func (r *report) kinds() []int {
	var ks []int
	if r.DeltaProxies < r.Config.Proxies {
		ks = append(ks, 0)
	}
	if r.DeltaProxies > 0 {
		ks = append(ks, 1)
	}
	return ks
}

func (m kindMeans) get(kind int) float64 {
	if kind == 1 {
		return m.Delta
	}
	return m.SotW
}

// fullMeshNote says that the proxies subscribe to everything, with -full-mesh.
func fullMeshNote(c config) string {
	if c.FullMesh {
		return " (full mesh: every service, after CDS)"
	}
	if c.CDS {
		return " (after CDS)"
	}
	return ""
}

// perProxy is memory growth per connected proxy, in bytes (may be negative).
func (r *report) perProxy(before, with uint64) float64 {
	return (float64(with) - float64(before)) / float64(r.Config.Proxies)
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func kib(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }

func secs(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()) }

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}

// rssGrowing reports whether RSS in the last quarter of the churn phase stands more
// than 10% (and 4 MiB) above its level in the second quarter: memory still climbing
// once the churn has been going for a while.
func (c *churnResult) rssGrowing() (early, late uint64, growing bool) {
	n := len(c.RSS)
	if n < 4 {
		return 0, 0, false
	}
	avg := func(s []uint64) uint64 {
		var t uint64
		for _, v := range s {
			t += v
		}
		return t / uint64(len(s))
	}
	early, late = avg(c.RSS[n/4:n/2]), avg(c.RSS[n*3/4:])
	return early, late, float64(late) > float64(early)*1.10 && late-early > 4<<20
}

// heapPerWrite is the live heap's growth over the churn per EndpointSlice write.
func (c *churnResult) heapPerWrite() float64 {
	if c.Writes == 0 {
		return 0
	}
	return (float64(c.HeapAfter.Heap) - float64(c.HeapBefore.Heap)) / float64(c.Writes)
}

// startupOK reports whether Horizon was ready and served every endpoint within the
// target after the last cluster synced.
func (r *report) startupOK() bool {
	return len(r.ClusterSyncs) > 0 && r.SyncToServed < targetSyncToReady
}

func (r *report) write(w io.Writer) {
	c := r.Config
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("")
	p("Horizon load: %d services × %d endpoints per cluster, %d clusters on %d networks (one gateway each)", c.Services, c.Endpoints, c.Clusters, c.Clusters)
	if r.Hostile != nil {
		p("  one well-behaved proxy and hostile clients (-hostile-scale %g); %d CPUs shared by Horizon, the API servers, etcd and the clients", c.HostileScale, r.CPUs)
	} else {
		p("  %d proxies (%d state of the world, %d delta) on %d gRPC connections, each watching %d services%s; %d CPUs shared by Horizon, the API servers, etcd and the proxies",
			c.Proxies, c.Proxies-r.DeltaProxies, r.DeltaProxies, r.Conns, c.watchCount(), fullMeshNote(c), r.CPUs)
	}
	if c.Replicas > 1 {
		p("  %d horizon replicas, the proxies spread over them; memory, CPU and counters are the first replica's", c.Replicas)
	}
	p("  setup %s; horizon ready in %s, serving every endpoint in %s", secs(r.SetupTime), secs(r.ReadyTime), secs(r.ReadyToServed))
	p("")
	p("Horizon's startup (from starting horizon serve; a cluster is synced once its informers have synced and its startup backlog is processed):")
	rows, total := r.clusterRows()
	p("  %-15s %10s %10s %8s %9s  %-24s %12s  %s", "cluster", "synced at", "its sync", "services", "endpoints",
		"cached svc/slices/pods", "heap (est.)", "API requests: list/watch/get/other (not 2xx)")
	for _, row := range append(rows, total) {
		p("  %-15s %10s %10s %8d %9d  %-24s %12s  %s", row.ID, row.syncedAt, row.sync, row.Services, row.Endpoints, row.objects, row.heap, row.requests)
	}
	p("  last sync →     ready %s, serving every endpoint on every network %s   (target < %s; %s)",
		secs(r.SyncToReady), secs(r.SyncToServed), secs(targetSyncToReady), verdict(r.startupOK()))
	if r.Hostile != nil {
		p("")
		r.Hostile.write(w)
		r.writeEnd(w)
		return
	}
	p("  no proxies      heap %s (target < %.0f MB; %s)  RSS %s", mib(r.MemBefore.Heap), float64(targetStartupHeap)/1e6,
		verdict(r.MemBefore.Heap > 0 && r.MemBefore.Heap < targetStartupHeap), mib(r.MemBefore.RSS))
	p("                  peak RSS so far (VmHWM) %s; freed heap not yet returned to the OS %s", mib(r.MemBefore.HWM), mib(r.MemBefore.FreeHeld))
	p("")
	p("Serving the fleet (from opening the streams until a proxy holds every watched endpoint):")
	p("  served          %d of %d proxies", r.Served, c.Proxies)
	p("  per proxy       p50 %s  p90 %s  p99 %s", secs(r.ServeTimes.P50), secs(r.ServeTimes.P90), secs(r.ServeTimes.P99))
	for _, k := range r.kinds() {
		st := [2]stats{r.ServeTimesSotW, r.ServeTimesDelta}[k]
		p("    %-13s %d served  p50 %s  p99 %s  max %s; %s received per proxy", kindName[k], st.N, secs(st.P50), secs(st.P99), secs(st.Max),
			kib(r.ServeBytes.get(k)))
	}
	p("  all served      %s   (target < %s; %s)", secs(r.ServeTimes.Max), secs(targetServed(c.Proxies)), verdict(r.Served == c.Proxies && r.ServeTimes.Max < targetServed(c.Proxies)))
	if r.ServeError != "" {
		p("  last stream error of an unserved proxy: %s", r.ServeError)
	}
	p("  pushes while connecting: %.0f; CPU used while connecting: Horizon %s, this tool %s", r.ConnectPushes, secs(r.HorizonCPUConnect), secs(r.SelfCPUConnect))
	p("")
	p("Horizon's memory (heap and stacks right after two forced GCs):")
	for _, m := range []struct {
		label string
		s     memSample
	}{{"before proxies", r.MemBefore}, {"with proxies", r.MemWith}} {
		p("  %-15s RSS %s  heap %s  goroutine stacks %s (%d goroutines)  freed heap not yet returned to the OS %s", m.label, mib(m.s.RSS), mib(m.s.Heap), mib(m.s.Stacks), m.s.Goroutines, mib(m.s.FreeHeld))
	}
	rssPer, heapPer := r.perProxy(r.MemBefore.RSS, r.MemWith.RSS), r.perProxy(r.MemBefore.Heap, r.MemWith.Heap)
	stacksPer := r.perProxy(r.MemBefore.Stacks, r.MemWith.Stacks)
	p("  per proxy       RSS %s  heap %s  stacks %s  goroutines %.1f", kib(rssPer), kib(heapPer),
		kib(stacksPer), float64(r.MemWith.Goroutines-r.MemBefore.Goroutines)/float64(r.Config.Proxies))
	p("                  heap + stacks %s (target < %s; %s)", kib(heapPer+stacksPer), kib(targetPerProxy), verdict(heapPer+stacksPer < targetPerProxy))
	if rssPer <= 0 {
		p("                  RSS fell: the runtime returned startup memory meanwhile; RSS growth not measurable in this run")
	} else {
		p("                  RSS %s (target < %s; %s)", kib(rssPer), kib(targetPerProxy), verdict(rssPer < targetPerProxy))
	}
	if len(r.Changes) > 0 {
		p("")
		p("Remote EndpointSlice changes (API write → changed ClusterLoadAssignment received, every watching proxy):")
		for i, ch := range r.Changes {
			p("  %d. %-6s %-8s reached %d/%d  p50 %s  max %s  write %s  responses %d",
				i+1, ch.Op, ch.Service, ch.Reached, ch.Watchers, secs(ch.Latency.P50), secs(ch.Latency.Max), secs(ch.WriteLatency), ch.Responses)
		}
		l := r.ChangeLatency
		p("  all pairs       %d  p50 %s  p99 %s  max %s   (target p99 < %s; %s)", r.ChangePairs, secs(l.P50), secs(l.P99), secs(l.Max),
			secs(targetChangeP99(c.Proxies)), verdict(r.ChangeTimeouts == 0 && l.N > 0 && l.P99 < targetChangeP99(c.Proxies)))
		bytes, resources, changed := r.changeBytes()
		for _, k := range r.kinds() {
			l := [2]stats{r.ChangeLatencySotW, r.ChangeLatencyDelta}[k]
			p("    %-13s %d pairs  p50 %s  p99 %s  max %s; per watching proxy and change %s in %.1f resources (the changed assignment: %s)",
				kindName[k], l.N, secs(l.P50), secs(l.P99), secs(l.Max), kib(bytes.get(k)), resources.get(k), kib(changed))
		}
		p("  timeouts        %d (after %s); %.0f pushes; Horizon CPU over the changes %s", r.ChangeTimeouts, c.ChangeTimeout, r.ChangePushes, secs(r.HorizonCPUChanges))
		p("  breakdown       first watcher p50 %s p99 %s; first → last watcher p50 %s p99 %s; Horizon change → response to gRPC p50 %s p99 %s; CPU over the changes: this tool %s",
			secs(r.ChangeFirst.P50), secs(r.ChangeFirst.P99), secs(r.ChangeSpread.P50), secs(r.ChangeSpread.P99),
			secs(r.HorizonPush[0]), secs(r.HorizonPush[1]), secs(r.SelfCPUChanges))
	}
	if r.Failover != nil {
		r.Failover.write(w, c)
	}
	if ch := r.Churn; ch != nil {
		early, late, growing := ch.rssGrowing()
		p("")
		p("Churn (%.3g changes/s for %s):", c.ChurnRate, c.ChurnDuration)
		p("  writes          %d in %s, %.0f pushes", ch.Writes, secs(ch.Elapsed), ch.Pushes)
		if ch.Converged {
			p("  converged       every proxy %s after the last write", secs(ch.Converge))
		} else {
			why := fmt.Sprintf("after %s", c.ChangeTimeout+10*time.Second)
			if r.TimedOut {
				why = "when the run stopped"
			}
			p("  converged       NO: %d proxies still differ %s", ch.NotConverged, why)
		}
		p("  heap            %s before, %s after (%s per write)", mib(ch.HeapBefore.Heap), mib(ch.HeapAfter.Heap), kib(ch.heapPerWrite()))
		p("  RSS             %s before, %s after; second quarter avg %s, last quarter avg %s: %s",
			mib(ch.HeapBefore.RSS), mib(ch.HeapAfter.RSS), mib(early), mib(late), map[bool]string{true: "STILL GROWING", false: "flat"}[growing])
	}
	r.writeEnd(w)
}

// writeEnd prints the counters, the machine's load and the result.
func (r *report) writeEnd(w io.Writer) {
	c := r.Config
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("")
	p("Counters: horizon_xds_pushes_total %.0f, horizon_xds_nacks_total %.0f, horizon_xds_refused_requests_total %.0f, horizon_xds_throttled_requests_total %.0f; the fleet received %d responses (%d ClusterLoadAssignments; %d CDS responses), NACKed %d, reconnected %d times",
		r.Pushes, r.NACKs, r.Refused, r.Throttled, r.Responses, r.Resources, r.CDSResponses, r.ClientNACKs, r.Reconnects)
	p("Machine load average (1 min): %s before connecting, %s at the end, on %d CPUs", r.LoadBefore, r.LoadAfter, r.CPUs)
	if r.TimedOut {
		p("The run hit -duration (%s) or was interrupted, and stopped early.", c.Duration)
	}
	good := "every proxy converged and every change reached every watching proxy"
	if r.Hostile != nil {
		good = "every change reached the well-behaved proxy, which stayed connected and rejected nothing"
	}
	p("Result: %s (%s)", map[bool]string{true: good, false: "FAILURES above"}[r.OK()], secs(r.Elapsed))
}

// appendMarkdown appends a results table to path.
func (r *report) appendMarkdown(path string) error {
	c := r.Config
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("")
	p("### horizon-load %s", r.Started.UTC().Format("2006-01-02 15:04 MST"))
	p("")
	if r.Hostile != nil {
		p("%d services × %d endpoints per cluster, %d clusters / %d networks; one well-behaved proxy (CDS and every service's EDS) and hostile clients (-hostile-scale %g), one flood after the other; %d CPUs shared with the API servers and the clients (load average %s before the floods, %s at the end).",
			c.Services, c.Endpoints, c.Clusters, c.Clusters, c.HostileScale, r.CPUs, r.LoadBefore, r.LoadAfter)
		p("")
		r.Hostile.markdown(&b)
		return appendFile(path, b.String())
	}
	p("%d services × %d endpoints per cluster, %d clusters / %d networks; %d proxies (%d state of the world, %d delta) on %d gRPC connections watching %d services each%s; %d CPUs shared with the API servers and the proxies (load average %s before connecting, %s at the end).",
		c.Services, c.Endpoints, c.Clusters, c.Clusters, c.Proxies, c.Proxies-r.DeltaProxies, r.DeltaProxies, r.Conns, c.watchCount(), fullMeshNote(c), r.CPUs, r.LoadBefore, r.LoadAfter)
	if c.HorizonArgs != "" {
		p("Horizon flags: `%s`.", c.HorizonArgs)
	}
	if c.Replicas > 1 {
		p("%d horizon replicas, the proxies spread over them; memory, CPU and counters are the first replica's.", c.Replicas)
	}
	p("")
	p("| measure | value | target |")
	p("| --- | --- | --- |")
	p("| setup (clusters and objects) | %s | |", secs(r.SetupTime))
	p("| horizon start → ready / serving every endpoint | %s / %s | |", secs(r.ReadyTime), secs(r.ReadyToServed))
	p("| last cluster synced → ready / serving every endpoint | %s / %s | < %s |", secs(r.SyncToReady), secs(r.SyncToServed), secs(targetSyncToReady))
	p("| Go heap / RSS with no proxies | %s / %s | heap < %.0f MB |", mib(r.MemBefore.Heap), mib(r.MemBefore.RSS), float64(targetStartupHeap)/1e6)
	p("| peak RSS (VmHWM) before proxies | %s | |", mib(r.MemBefore.HWM))
	p("| proxies served | %d / %d | all |", r.Served, c.Proxies)
	p("| per-proxy time to all endpoints, p50 | %s | |", secs(r.ServeTimes.P50))
	p("| all proxies served | %s | < %s |", secs(r.ServeTimes.Max), secs(targetServed(c.Proxies)))
	p("| RSS before → with proxies | %s → %s | |", mib(r.MemBefore.RSS), mib(r.MemWith.RSS))
	p("| Go heap before → with proxies | %s → %s | |", mib(r.MemBefore.Heap), mib(r.MemWith.Heap))
	p("| growth per proxy: RSS / heap + goroutine stacks | %s / %s | < %s |", kib(r.perProxy(r.MemBefore.RSS, r.MemWith.RSS)),
		kib(r.perProxy(r.MemBefore.Heap, r.MemWith.Heap)+r.perProxy(r.MemBefore.Stacks, r.MemWith.Stacks)), kib(targetPerProxy))
	if len(r.Changes) > 0 {
		l := r.ChangeLatency
		p("| remote change → proxy, p50 / p99 / max (%d pairs) | %s / %s / %s | p99 < %s |", r.ChangePairs, secs(l.P50), secs(l.P99), secs(l.Max), secs(targetChangeP99(c.Proxies)))
		bytes, _, changed := r.changeBytes()
		for _, k := range r.kinds() {
			l := [2]stats{r.ChangeLatencySotW, r.ChangeLatencyDelta}[k]
			p("| %s: change → proxy p50 / p99; bytes per watching proxy and change (changed assignment) | %s / %s; %s (%s) | |",
				kindName[k], secs(l.P50), secs(l.P99), kib(bytes.get(k)), kib(changed))
		}
		p("| change timeouts | %d | 0 |", r.ChangeTimeouts)
	}
	if r.Failover != nil {
		r.Failover.markdown(&b, c)
	}
	if ch := r.Churn; ch != nil {
		_, _, growing := ch.rssGrowing()
		conv := secs(ch.Converge)
		if !ch.Converged {
			conv = fmt.Sprintf("not converged (%d proxies)", ch.NotConverged)
		}
		p("| churn %.3g/s for %s: convergence after last write | %s | |", c.ChurnRate, c.ChurnDuration, conv)
		p("| churn: heap before → after (per write); RSS | %s → %s (%s); %s | flat |", mib(ch.HeapBefore.Heap), mib(ch.HeapAfter.Heap),
			kib(ch.heapPerWrite()), map[bool]string{true: "still growing", false: "flat"}[growing])
	}
	p("| pushes / NACKs (Horizon) | %.0f / %.0f | / 0 |", r.Pushes, r.NACKs)
	r.clustersMarkdown(&b)
	return appendFile(path, b.String())
}

// clusterRow is one line of the per-cluster table.
type clusterRow struct {
	ID                  string
	Services, Endpoints int
	syncedAt, sync      string
	objects             string // cached services/slices/pods
	heap                string // the heap at rest apportioned by cached objects
	requests            string // list/watch/get/other (not 2xx)
}

// clusterRows describes each cluster's sync, cached objects, estimated memory and
// API requests, and their totals (sync: the last cluster's). Sync times are from
// when Horizon reported serving; objects and requests from the end of the run when
// it was read then. A cluster's memory is estimated as the heap at rest (no proxies)
// times its share of all cached objects: the caches hold most of the heap at rest,
// and objects of a kind cost about the same in every cluster of a run.
func (r *report) clusterRows() (rows []clusterRow, total clusterRow) {
	end := map[string]clusterSync{}
	for _, s := range r.ClustersAtEnd {
		end[s.ID] = s
	}
	all := 0
	for _, s := range r.ClusterSyncs {
		if e, ok := end[s.ID]; ok {
			s = e
		}
		all += s.objects()
	}
	verbs := []string{"list", "watch", "get", "other"}
	requests := func(s clusterSync) string {
		var b strings.Builder
		for i, v := range verbs {
			n, _ := s.requests(v)
			if i > 0 {
				b.WriteByte('/')
			}
			fmt.Fprint(&b, n)
		}
		_, failed := s.requests("")
		fmt.Fprintf(&b, " (%d)", failed)
		return b.String()
	}
	// cluster2 before cluster10.
	syncs := slices.Clone(r.ClusterSyncs)
	slices.SortStableFunc(syncs, func(a, b clusterSync) int { return cmp.Or(cmp.Compare(len(a.ID), len(b.ID)), cmp.Compare(a.ID, b.ID)) })
	var sum clusterSync
	sum.APIRequests = map[string]map[string]uint64{}
	var lastSync, lastSyncedAt time.Duration
	for _, s := range syncs {
		at, took := s.SyncedAt.Sub(r.HorizonStarted), s.SyncedAt.Sub(s.Started)
		lastSync, lastSyncedAt = max(lastSync, took), max(lastSyncedAt, at)
		if e, ok := end[s.ID]; ok {
			s.Scope, s.APIRequests = e.Scope, e.APIRequests
		}
		heap := "-"
		if all > 0 && r.MemBefore.Heap > 0 {
			heap = mib(uint64(float64(r.MemBefore.Heap) * float64(s.objects()) / float64(all)))
		}
		rows = append(rows, clusterRow{ID: s.ID, Services: s.Services, Endpoints: s.Endpoints, syncedAt: secs(at), sync: secs(took),
			objects: fmt.Sprintf("%d/%d/%d", s.Scope.Services, s.Scope.EndpointSlices, s.Scope.Pods), heap: heap, requests: requests(s)})
		sum.Services += s.Services
		sum.Endpoints += s.Endpoints
		sum.Scope.Services += s.Scope.Services
		sum.Scope.EndpointSlices += s.Scope.EndpointSlices
		sum.Scope.Pods += s.Scope.Pods
		for v, codes := range s.APIRequests {
			if sum.APIRequests[v] == nil {
				sum.APIRequests[v] = map[string]uint64{}
			}
			for code, n := range codes {
				sum.APIRequests[v][code] += n
			}
		}
	}
	heap := "-"
	if r.MemBefore.Heap > 0 {
		heap = mib(r.MemBefore.Heap)
	}
	total = clusterRow{ID: "total", Services: sum.Services, Endpoints: sum.Endpoints, syncedAt: secs(lastSyncedAt), sync: secs(lastSync),
		objects: fmt.Sprintf("%d/%d/%d", sum.Scope.Services, sum.Scope.EndpointSlices, sum.Scope.Pods), heap: heap, requests: requests(sum)}
	return rows, total
}

// clustersMarkdown writes the per-cluster table.
func (r *report) clustersMarkdown(b *strings.Builder) {
	if len(r.ClusterSyncs) == 0 {
		return
	}
	rows, total := r.clusterRows()
	p := func(format string, args ...any) { fmt.Fprintf(b, format+"\n", args...) }
	p("")
	p("Per cluster (synced at: from starting horizon serve; heap: the heap with no proxies apportioned by cached objects; API requests Horizon sent over the run):")
	p("")
	p("| cluster | synced at | its sync | services | ready endpoints | cached services / slices / pods | heap (est.) | API requests list / watch / get / other (not 2xx) |")
	p("| --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, row := range rows {
		p("| %s | %s | %s | %d | %d | %s | %s | %s |", row.ID, row.syncedAt, row.sync, row.Services, row.Endpoints, row.objects, row.heap, row.requests)
	}
	p("| **total** (sync: the last) | %s | %s | %d | %d | %s | %s | %s |", total.syncedAt, total.sync, total.Services, total.Endpoints, total.objects, total.heap, total.requests)
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
