package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// failoverResult is what -kill-replica-after measured: one replica killed under
// load, and its proxies moving to the others.
type failoverResult struct {
	// Replica is the killed replica (1-based) of Replicas.
	Replica, Replicas int
	// Moving is how many proxies were on the killed replica, DeltaMoving of them on
	// delta xDS; Recovered is how many of them were served by another replica
	// within -serve-timeout.
	Moving, DeltaMoving, Recovered int
	// Times is, per recovered proxy, kill → served by another replica: a state of
	// the world proxy's first response there (holding every watched endpoint), a
	// delta proxy's stream listed in that replica's /debug/syncz (it holds every
	// resource, and is sent none it holds).
	Times stats
	// Shrunk counts the assignments any proxy received with fewer endpoints than
	// it held, or saw removed, from the kill until every proxy recovered: an
	// endpoint lost in the failover. Nothing changes in the clusters meanwhile.
	Shrunk int
	// ResentDelta counts the resources the moving delta proxies were sent in the
	// first response on their new stream, though they named what they hold in
	// initial_resource_versions.
	ResentDelta int
	// Change is a remote change made once every proxy recovered: it must reach
	// every watching proxy through the replicas left.
	Change *changeResult
}

func (r *failoverResult) ok() bool {
	return r.Recovered == r.Moving && r.Shrunk == 0 && r.ResentDelta == 0 &&
		r.Change != nil && r.Change.Reached == r.Change.Watchers
}

// failover waits -kill-replica-after, kills the last replica with SIGKILL and
// measures how long the proxies that were on it take to be served by the others
// (each moves to the next replica's address when its stream breaks), whether any
// proxy's assignment lost an endpoint meanwhile, and whether a change still
// reaches every proxy afterwards.
func (l *loadRun) failover(ctx context.Context) error {
	cfg, f := l.cfg, l.fleet
	victim := len(l.hs) - 1
	res := &failoverResult{Replica: victim + 1, Replicas: len(l.hs)}
	l.rep.Failover = res
	l.step("failover: killing replica %d of %d in %s", victim+1, len(l.hs), cfg.KillReplicaAfter)
	sleep(ctx, cfg.KillReplicaAfter)
	if ctx.Err() != nil {
		return nil
	}
	var moving []*proxy
	for _, p := range f.proxies {
		p.mu.Lock()
		if p.replica == victim {
			moving = append(moving, p)
			if p.spec.delta {
				res.DeltaMoving++
			}
		}
		p.mu.Unlock()
	}
	res.Moving = len(moving)
	shrunk0 := f.shrunk()
	f.watchShrink.Store(true)
	killedAt := time.Now()
	l.hs[victim].kill()

	recovered := map[int]time.Duration{} // by proxy position
	survivors := l.hs[:victim]
	deadline := time.Now().Add(cfg.ServeTimeout)
	for len(recovered) < len(moving) && time.Now().Before(deadline) && ctx.Err() == nil {
		listed := map[string]time.Time{}
		for _, h := range survivors {
			ids, err := h.syncz(ctx)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				return err
			}
			for id, at := range ids {
				listed[id] = at
			}
		}
		for _, p := range moving {
			if _, ok := recovered[p.pos]; ok {
				continue
			}
			st := p.state()
			p.mu.Lock()
			replica, first := p.replica, p.firstAt
			p.mu.Unlock()
			if replica == victim || !st.consistent {
				continue
			}
			if !p.spec.delta {
				if first.After(killedAt) {
					recovered[p.pos] = first.Sub(killedAt)
				}
			} else if at, ok := listed[p.node.Id]; ok && at.After(killedAt) {
				recovered[p.pos] = at.Sub(killedAt)
			}
		}
		sleep(ctx, 200*time.Millisecond)
	}
	f.watchShrink.Store(false)
	res.Shrunk = f.shrunk() - shrunk0
	res.Recovered = len(recovered)
	times := make([]time.Duration, 0, len(recovered))
	for _, d := range recovered {
		times = append(times, d)
	}
	res.Times = summarize(times)
	for _, p := range moving {
		p.mu.Lock()
		res.ResentDelta += p.resentDelta
		p.mu.Unlock()
	}
	l.step("failover: %d of %d proxies on replica %d served by another within p50 %s, max %s; %d assignments lost endpoints; %d resources re-sent to %d delta proxies",
		res.Recovered, res.Moving, victim+1, res.Times.P50, res.Times.Max, res.Shrunk, res.ResentDelta, res.DeltaMoving)
	if ctx.Err() != nil {
		return nil
	}
	cr, err := l.timeChange(ctx, changeService(0, 1, cfg.Services, f))
	if err != nil {
		return err
	}
	res.Change = cr
	if cr != nil {
		l.step("failover: a change after it reached %d/%d watching proxies in max %s", cr.Reached, cr.Watchers, cr.Latency.Max)
	}
	return nil
}

// shrunk sums the proxies' shrunk assignments.
func (f *fleet) shrunk() (n int) {
	for _, p := range f.proxies {
		p.mu.Lock()
		n += p.shrunk
		p.mu.Unlock()
	}
	return n
}

// syncz reads Horizon's /debug/syncz: the proxies whose stream has had its first
// request, by node ID, with when the stream opened.
func (h *horizonProc) syncz(ctx context.Context) (map[string]time.Time, error) {
	b, code, err := h.get(ctx, "/debug/syncz")
	if err != nil {
		return nil, fmt.Errorf("read horizon /debug/syncz: %w", err)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("read horizon /debug/syncz: status %d", code)
	}
	var streams []struct {
		ID        string    `json:"id"`
		Group     string    `json:"group"`
		Connected time.Time `json:"connected"`
	}
	if err := json.Unmarshal(b, &streams); err != nil {
		return nil, fmt.Errorf("decode horizon /debug/syncz: %w", err)
	}
	out := make(map[string]time.Time, len(streams))
	for _, s := range streams {
		if s.Group != "" {
			out[s.ID] = s.Connected
		}
	}
	return out, nil
}

// write prints the failover's figures.
func (r *failoverResult) write(w io.Writer, c config) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("")
	p("Failover (replica %d of %d killed with SIGKILL %s after the changes; its proxies move to the next replica's address):", r.Replica, r.Replicas, c.KillReplicaAfter)
	p("  recovered       %d of %d proxies (%d delta) served by another replica   (all: %s)", r.Recovered, r.Moving, r.DeltaMoving, verdict(r.Recovered == r.Moving))
	p("  kill → served   p50 %s  p90 %s  p99 %s  max %s", secs(r.Times.P50), secs(r.Times.P90), secs(r.Times.P99), secs(r.Times.Max))
	p("  endpoints lost  %d assignments shrank or were removed meanwhile   (0; %s)", r.Shrunk, verdict(r.Shrunk == 0))
	p("  re-sent         %d resources to the delta proxies, which named what they hold   (0; %s)", r.ResentDelta, verdict(r.ResentDelta == 0))
	if ch := r.Change; ch != nil {
		p("  change after    reached %d/%d watching proxies, max %s   (all; %s)", ch.Reached, ch.Watchers, secs(ch.Latency.Max), verdict(ch.Reached == ch.Watchers))
	}
}

// markdown adds the failover's rows to a results table.
func (r *failoverResult) markdown(b *strings.Builder, c config) {
	fmt.Fprintf(b, "| failover: replica %d of %d killed; proxies moved / served by another | %d / %d | all |\n", r.Replica, r.Replicas, r.Moving, r.Recovered)
	fmt.Fprintf(b, "| failover: kill → served by another, p50 / p99 / max | %s / %s / %s | seconds |\n", secs(r.Times.P50), secs(r.Times.P99), secs(r.Times.Max))
	fmt.Fprintf(b, "| failover: assignments that lost endpoints / resources re-sent to %d delta proxies | %d / %d | 0 / 0 |\n", r.DeltaMoving, r.Shrunk, r.ResentDelta)
	if ch := r.Change; ch != nil {
		fmt.Fprintf(b, "| failover: a change after it reached | %d / %d | all |\n", ch.Reached, ch.Watchers)
	}
}
