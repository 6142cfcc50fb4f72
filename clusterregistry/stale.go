package clusterregistry

import (
	"context"
	"fmt"
	"reflect"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
)

// A synced cluster whose server stops answering is stale: its last known shards are
// served for Options.StaleGrace, then withdrawn. Its informers keep retrying; the
// health goroutine probes the server, and once it answers lists everything into a
// fresh watchSet that the worker swaps in, rebuilding every shard from it.
//
// The health goroutine owns the transitions into stale and withdrawn; the worker owns
// the way out (finishRelist), while the health goroutine waits for it. Both write the
// fields under c.mu.

// A synced cluster is also probed every Options.ProbeInterval while it answers: a
// server that hangs (a frozen process, a black-holed load balancer) keeps its
// connections open and fails no request, so nothing else would tell for as long as
// the client's HTTP/2 health check takes (30s without a frame, then 15s for a ping).
// Options.ProbeFailures probes in a row failing, each after at most
// Options.ProbeTimeout, make it stale; one slow answer does not.
const (
	// defaultProbeInterval is how often a cluster is probed when
	// Options.ProbeInterval is zero.
	defaultProbeInterval = 5 * time.Second
	// defaultProbeTimeout bounds one probe when Options.ProbeTimeout is zero: a
	// server that answers at all answers this cheap request from its watch cache in
	// milliseconds.
	defaultProbeTimeout = 5 * time.Second
	// defaultProbeFailures is how many periodic probes in a row must fail before a
	// cluster that seemed fine is stale, when Options.ProbeFailures is zero.
	defaultProbeFailures = 3
)

// handover passes a relisted watchSet to the worker; done is closed once it serves.
type handover struct {
	ws   *watchSet
	done chan struct{}
}

// poke sends a signal on ch unless one is already waiting.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// watchHealth turns failures into staleness and staleness back into service; it runs
// until ctx ends.
func (c *Cluster) watchHealth(ctx context.Context) {
	tick := time.NewTicker(c.opts.probeInterval)
	defer tick.Stop()
	failures := 0
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-c.suspect:
			// Only a cluster that synced has endpoints to keep; one that never
			// did reports errors and times out instead.
			if !c.hasSynced() {
				continue
			}
			// One failed request is not an outage: ask the server directly. A
			// failed request and a failed probe together are.
			if err = c.probe(ctx); ctx.Err() != nil {
				return
			}
		case <-tick.C:
			if !c.hasSynced() {
				continue
			}
			if err = c.probe(ctx); ctx.Err() != nil {
				return
			}
			if err != nil {
				failures++
				c.notAnswering(err)
				if failures == 1 {
					c.log.Warn("cluster probe failed; the cluster turns stale if it keeps failing",
						"failuresToStale", c.opts.probeFailures, "error", c.redact(err))
				}
				if failures < c.opts.probeFailures {
					continue
				}
				err = fmt.Errorf("%d probes in a row failed, the last: %w", failures, err)
			}
		}
		if err == nil {
			failures = 0
			continue
		}
		failures = 0
		c.markStale(err)
		if !c.untilReachable(ctx) {
			return
		}
		tick.Reset(c.opts.probeInterval)
	}
}

// probe makes the cheapest request that proves the server answers and still lets
// this client list what its informers list: the system namespace, from the server's
// watch cache. It needs no permission beyond the informers' own, unlike /readyz or
// /version, which a cluster may restrict. It shares the informers' connections, so a
// connection that hangs is noticed, but not their rate limit: a probe queued behind a
// burst of lists would time out on a server that answers.
func (c *Cluster) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.probeTimeout)
	defer cancel()
	return c.probeClient.CoreV1().RESTClient().Get().
		Resource("namespaces").
		VersionedParams(&metav1.ListOptions{
			FieldSelector:   fields.OneTermEqualSelector("metadata.name", c.opts.namespace).String(),
			ResourceVersion: "0",
		}, scheme.ParameterCodec).
		MaxRetries(0).
		Do(ctx).
		Error()
}

// markStale records that the cluster stopped answering.
func (c *Cluster) markStale(err error) {
	msg := c.redact(err)
	now := time.Now()
	c.mu.Lock()
	c.stale, c.staleSince = true, now
	c.lastErr, c.lastErrAt = msg, now
	c.mu.Unlock()
	c.log.Warn("cluster unreachable; serving its last known endpoints", "grace", c.opts.staleGrace, "error", msg)
	c.opts.sink.changed()
}

// notAnswering records a failed probe of a stale cluster.
func (c *Cluster) notAnswering(err error) {
	msg := c.redact(err)
	c.mu.Lock()
	c.lastErr, c.lastErrAt = msg, time.Now()
	c.mu.Unlock()
}

// withdraw stops serving the stale cluster's shards and tells subscribers.
func (c *Cluster) withdraw() {
	c.mu.Lock()
	hosts := make([]string, 0, len(c.shards))
	for h := range c.shards {
		hosts = append(hosts, h)
	}
	c.withdrawn = true
	c.mu.Unlock()
	c.log.Warn("cluster unreachable past its grace; withdrawing its endpoints", "grace", c.opts.staleGrace, "services", len(hosts))
	c.opts.sink.notify(c, hosts)
	c.opts.sink.changed()
}

// untilReachable probes the stale cluster until it answers, withdrawing its shards if
// the grace passes first; then it lists everything again and hands the fresh
// informers to the worker. It returns false if ctx ended first.
func (c *Cluster) untilReachable(ctx context.Context) bool {
	var grace <-chan time.Time
	if g := c.opts.staleGrace; g > 0 {
		t := time.NewTimer(g)
		defer t.Stop()
		grace = t.C
	}
	tick := time.NewTicker(c.opts.probeInterval)
	defer tick.Stop()
	// The first probe goes out at once: a server that hung may answer again
	// while the failures that made it stale were counted, and one that is
	// down fails it at once.
	first := make(chan struct{}, 1)
	first <- struct{}{}

	// fresh is a watchSet listing the cluster after it answered; this goroutine owns
	// it until the handover.
	var fresh *watchSet
	var freshSynced <-chan struct{}
	defer func() {
		if fresh != nil {
			fresh.stop()
		}
	}()
	for {
		probeNow := false
		select {
		case <-ctx.Done():
			return false
		case <-grace:
			grace = nil
			c.withdraw()
		case <-freshSynced:
			h := &handover{ws: fresh, done: make(chan struct{})}
			fresh, freshSynced = nil, nil
			c.mu.Lock()
			c.handover = h // stop cleans it up if the worker never takes it
			c.mu.Unlock()
			c.queue.Add(relistMarker)
			select {
			case <-h.done:
			case <-ctx.Done():
				return false
			}
			// Failures seen while stale are answered; only new ones count.
			select {
			case <-c.suspect:
			default:
			}
			return true
		case <-first:
			probeNow = true
		case <-tick.C:
			probeNow = true
		}
		if probeNow {
			err := c.probe(ctx)
			switch {
			case ctx.Err() != nil:
				return false
			case err != nil:
				c.notAnswering(err)
				if fresh != nil {
					// Gone again before the list finished.
					fresh.stop()
					fresh, freshSynced = nil, nil
				}
			case fresh == nil:
				ws, err := c.newWatchSet()
				if err != nil {
					c.log.Error("cannot relist the cluster", "error", err)
					continue
				}
				c.log.Info("cluster answers again; listing it before serving it")
				ws.start(c)
				fresh, freshSynced = ws, ws.synced
			}
		}
	}
}

// finishRelist runs on the worker: it swaps in the relisted informers, rebuilds every
// shard from them, clears the stale state and tells subscribers which hosts changed
// from what was served.
func (c *Cluster) finishRelist() {
	c.mu.Lock()
	h := c.handover
	c.handover = nil
	if h == nil {
		c.mu.Unlock()
		return
	}
	old := c.ws
	c.ws = h.ws
	before := c.servedLocked()
	keys := map[types.NamespacedName]bool{}
	for _, s := range c.shards {
		keys[types.NamespacedName{Namespace: s.Service.Namespace, Name: s.Service.Name}] = true
	}
	for k := range c.exports {
		keys[k] = true
	}
	c.mu.Unlock()

	// Every service (and export) the cluster has now, and every one it had: gone
	// ones are dropped.
	svcs, _ := h.ws.services.List(labels.Everything())
	for _, s := range svcs {
		keys[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = true
	}
	for _, k := range h.ws.exportKeys() {
		keys[k] = true
	}
	var exportsChanged []types.NamespacedName
	for k := range keys {
		if _, changed := c.update(h.ws, k); changed {
			exportsChanged = append(exportsChanged, k)
		}
	}

	c.mu.Lock()
	staleFor := time.Since(c.staleSince)
	c.stale, c.staleSince, c.withdrawn = false, time.Time{}, false
	after := c.servedLocked()
	c.mu.Unlock()
	var changed []string
	for host := range before {
		if !reflect.DeepEqual(before[host], after[host]) {
			changed = append(changed, host)
		}
	}
	for host := range after {
		if _, ok := before[host]; !ok {
			changed = append(changed, host)
		}
	}
	c.log.Info("cluster reachable again", "staleFor", staleFor.Round(time.Millisecond), "services", len(after), "changedServices", len(changed))
	c.opts.sink.notify(c, changed)
	for _, k := range exportsChanged {
		c.opts.sink.exportsChanged(c, k)
	}
	c.opts.sink.changed()
	old.stop()
	close(h.done)
}

// servedLocked returns the shards the cluster serves, by host. Called with c.mu held.
func (c *Cluster) servedLocked() map[string]*Shard {
	if c.withdrawn {
		return map[string]*Shard{}
	}
	out := make(map[string]*Shard, len(c.shards))
	for h, s := range c.shards {
		out[h] = s
	}
	return out
}
