// Package eds turns the aggregated endpoint index into Envoy xDS and serves it.
//
// BuildLoadAssignment (builder.go) is a pure function from one service port's
// endpoints, the networks and gateways, and a proxy group's view to a
// ClusterLoadAssignment. The Server (server.go) groups proxies by (role, network,
// network view), keeps one set of resources per group, rebuilds only what a change
// touched after debouncing, and serves them over ADS (state of the world and delta)
// with go-control-plane. This is the only package that imports go-control-plane.
//
// Concurrency: the builder is pure. The Server is safe for concurrent use; its pushes
// run on one goroutine, so groups are never rebuilt concurrently.
package eds
