// Package clusterregistry owns one Cluster per cluster ID — its client, informers and
// sync state — and the aggregated endpoint index built from all of them:
// service host → service port → cluster → endpoints.
//
// Each Cluster watches Services, EndpointSlices, Pods (trimmed to what Horizon needs),
// Nodes and its system Namespace. Informer handlers only enqueue service keys; one
// worker goroutine per cluster rebuilds the shard of the affected service and, when it
// changed, tells the registry's subscribers which (host, cluster) changed.
//
// Concurrency: Registry is safe for concurrent use. Values returned by its read methods
// are shared and must not be modified. Subscribers are called from cluster worker
// goroutines, possibly concurrently, and must not block.
package clusterregistry
