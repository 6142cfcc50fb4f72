package clusterregistry

import "github.com/horizon-mesh/horizon/network"

// What a Cluster reports of itself, and the shards it serves.

// status describes the cluster. Called without c.mu held.
func (c *Cluster) status() ClusterStatus {
	synced := c.hasSynced()
	var scope ScopeStatus
	ws := c.watches()
	exports := c.exportStatus(ws)
	nss, svcs, slices, pods := ws.scopeCounts()
	scope.NamespaceWatches = max(nss, 0)
	scope.CachedServices, scope.CachedEndpointSlices, scope.CachedPods = svcs, slices, pods
	c.mu.RLock()
	defer c.mu.RUnlock()
	st := ClusterStatus{
		ID:             c.id,
		Source:         c.source,
		Server:         c.server,
		Services:       len(c.shards) - c.clustersetShards,
		Endpoints:      c.endpointCnt,
		Started:        c.started,
		SyncedAt:       c.syncedAt,
		LastError:      c.lastErr,
		LastErrorAt:    c.lastErrAt,
		Network:        c.nsNetwork,
		Stale:          c.stale,
		StaleSince:     c.staleSince,
		Withdrawn:      c.withdrawn,
		Scope:          scope,
		ServiceExports: exports,
	}
	st.Scope.Selectors = c.selectors.String()
	st.Scope.Override = c.selectorsOverride
	if c.withdrawn {
		st.Services, st.Endpoints = 0, 0
	}
	switch {
	case c.stale:
		st.State = StateStale
		st.SyncDuration = c.syncedAt.Sub(c.started)
	case synced:
		st.State = StateSynced
		st.SyncDuration = c.syncedAt.Sub(c.started)
	case c.timedOut:
		st.State = StateTimedOut
	case c.lastErr != "":
		st.State = StateError
	default:
		st.State = StatePending
	}
	return st
}

// shard returns what the cluster serves for host: nothing while withdrawn.
func (c *Cluster) shard(host string) *Shard {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.withdrawn {
		return nil
	}
	return c.shards[host]
}

// hosts returns the hosts the cluster serves: none while withdrawn.
func (c *Cluster) hosts() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.withdrawn {
		return nil
	}
	out := make([]string, 0, len(c.shards))
	for h := range c.shards {
		out = append(out, h)
	}
	return out
}

func countReady(s *Shard) int {
	n := 0
	for _, eps := range s.Endpoints {
		for _, ep := range eps {
			if ep.Ready {
				n++
			}
		}
	}
	return n
}

// network returns the network label on the cluster's system namespace, as its
// informer's cache holds it now.
func (c *Cluster) network() network.NetworkID {
	return namespaceNetwork(c.watches().namespaces, c.opts.namespace)
}
