// Package eds turns the aggregated endpoint index into Envoy xDS and serves it.
//
// BuildLoadAssignment (builder.go) is a pure function from one service port's
// endpoints, the networks and gateways, and a proxy group's view to a
// ClusterLoadAssignment. The Server (server.go) groups proxies by (role, network,
// network view), keeps one set of resources per group, rebuilds only what a change
// touched after debouncing, and encodes each changed resource once per group. Its
// own xDS server (xds.go) serves them over ADS and the per-type services, state of
// the world and delta: one goroutine per stream, and a response only to the streams
// that subscribe to a resource that changed. This is the only package that imports
// go-control-plane (for the Envoy API types).
//
// Concurrency: the builder is pure. The Server is safe for concurrent use; its pushes
// run on one goroutine, so groups are never rebuilt concurrently. Lock order:
// Server.pushMu, then group.mu, then xdsStream.mu; Server.streamsMu before
// xdsStream.mu.
package eds
