// Package clusterregistry owns one Cluster per cluster ID — its client, informers and
// sync state — and the aggregated endpoint index built from all of them:
// service host → service port → cluster → endpoints.
//
// Each Cluster watches Services, EndpointSlices, Pods (trimmed to what Horizon needs),
// Nodes and Namespaces (trimmed to name and labels). With discovery selectors
// (SetDiscoverySelectors, SetClusterDiscoverySelectors) the first three are watched
// per selected namespace, the system namespace always included, and the watches
// follow selector edits and namespace labels (scope.go). Informer handlers only enqueue service keys; one
// worker goroutine per cluster rebuilds the shard of the affected service and, when it
// changed, tells the registry's subscribers which (host, cluster) changed.
//
// A handler finds the services an object affects through the informers' own indexes:
// EndpointSlices by service, by the pods their endpoints reference and by the nodes
// they name, and Pods by node. A pod event queues the services whose slices reference
// the pod; a node event those whose slices name the node or reference a pod on it.
// An informer updates its indexes before it calls a handler, and a key queued while
// the worker builds it is built again, so an event cannot be lost between the
// worker's reads and the end of its build.
//
// The files follow the jobs: registry.go holds the clusters and answers reads;
// cluster.go a Cluster's lifecycle and worker; watch.go its informers, indexes and
// event handlers; scope.go which namespaces it watches; shard.go the translation of a Service and a cluster's caches into
// a Shard, a pure function; stale.go what happens when a synced cluster stops
// answering; status.go what a Cluster reports; mcs.go Multi-Cluster Services mode
// (Options.MCS): ServiceExports, the clusterset hosts of exported services, and
// Exports / OnExportsChange, which give each cluster's export of a service to
// whoever resolves export conflicts. A Cluster is given its settings and a
// narrow sink (notify, changed) by the registry, not the registry itself.
//
// A cluster that synced and then stops answering (its list or watch calls fail, and a
// direct check of the server fails too; or, for a server that hangs without failing
// anything, Options.ProbeFailures periodic probes in a row fail) is stale: its last
// known endpoints are still
// served, for Options.StaleGrace, then withdrawn. It is probed until it answers; then
// it is listed again into fresh informers, every shard is rebuilt from them, and
// subscribers learn which hosts differ from what was served. Readiness does not
// change: a stale cluster had synced.
//
// Concurrency: Registry is safe for concurrent use. Values returned by its read methods
// are shared and must not be modified. Subscribers are called from cluster worker
// goroutines (and a cluster's health goroutine, when its endpoints are withdrawn),
// possibly concurrently, and must not block. Each watchSet has one goroutine that
// starts and stops its namespace scopes. Lock order: Registry.mu before
// Cluster.mu; a Cluster calls its sink without its own lock held.
package clusterregistry
