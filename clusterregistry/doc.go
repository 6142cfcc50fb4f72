// Package clusterregistry owns one Cluster per cluster ID — its client, informers and
// sync state — and the aggregated endpoint index built from all of them:
// service host → service port → cluster → endpoints.
//
// Each Cluster watches Services, EndpointSlices, Pods (trimmed to what Horizon needs),
// Nodes and its system Namespace. Informer handlers only enqueue service keys; one
// worker goroutine per cluster rebuilds the shard of the affected service and, when it
// changed, tells the registry's subscribers which (host, cluster) changed.
//
// A cluster that synced and then stops answering (its list or watch calls fail, and a
// direct check of the server fails too) is stale: its last known endpoints are still
// served, for Options.StaleGrace, then withdrawn. It is probed until it answers; then
// it is listed again into fresh informers, every shard is rebuilt from them, and
// subscribers learn which hosts differ from what was served. Readiness does not
// change: a stale cluster had synced.
//
// Concurrency: Registry is safe for concurrent use. Values returned by its read methods
// are shared and must not be modified. Subscribers are called from cluster worker
// goroutines (and a cluster's health goroutine, when its endpoints are withdrawn),
// possibly concurrently, and must not block.
package clusterregistry
