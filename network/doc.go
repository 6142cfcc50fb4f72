// Package network holds the identifiers and functions shared by every part of Horizon
// that reasons about clusters and networks: cluster and network IDs, the
// Istio-compatible label names, and the meshNetworks model.
//
// The meshNetworks model is Istio's MeshNetworks message (istio.io/api/mesh/v1alpha1),
// so that a file or ConfigMap written for Istio is read here unchanged.
// ParseMeshNetworks and ValidateMeshNetworks read and check it; Compile turns it into
// Networks, the immutable form used on hot paths to resolve which network an endpoint
// is on (EndpointNetwork) and which gateways lead into each network (Gateways).
//
// Concurrency: everything here is immutable data or pure functions and is safe for
// concurrent use, except Resolver, a DNS cache for gateway host names, whose methods
// are safe for concurrent use and whose state is guarded by its mutex. Its Lookup
// never waits on DNS; its Run resolves in the background with a bounded number of
// look-up goroutines, all ended before Run returns.
package network
