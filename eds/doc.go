// Package eds decides what each proxy is sent: it turns the aggregated endpoint
// index into Envoy resources, per group of proxies, and publishes them to its xDS
// protocol server, package xdsserver.
//
// BuildLoadAssignment (builder.go) is a pure function from one service port's
// endpoints, the networks and gateways, and a proxy group's view (view.go) to a
// ClusterLoadAssignment; clusters.go, gateway.go and grpc.go build the clusters,
// listeners and routes that go with it. The Server (server.go) takes changes and
// debounces them; a push (push.go) rebuilds only what a change touched, for every
// group. A group (group.go) is every proxy with one view — (role, network, network
// view, and a router's labels) — and holds one set of resources. Every resource
// is encoded when it is built (marshal.go) and kept only as its bytes, shared by
// every group that holds it; snapshot.go versions resources by their bytes and
// publishes the group's immutable xdsserver.Snapshot on the group's Feed.
// The Server tells xdsserver which group a node belongs to through
// xdsserver.Groups; xdsserver streams the snapshots and knows nothing of networks.
// proxies.go reports connected proxies and what their groups hold.
//
// Peer identity (identity.go): the mTLS clusters of sidecars and proxyless clients
// accept only a server presenting the SPIFFE identity of a pod behind the service
// port, in any cluster (PeerIdentities, at most MaxPeerIdentities, else the
// service's namespace). A host's clusters are rebuilt when its ports or identities
// change, so that a change of the identities is pushed and nothing else re-sends
// them.
//
// Bounds (admit.go): a group is made only for a view Horizon can serve. NETWORK and
// REQUESTED_NETWORK_VIEW must name known networks (meshNetworks networks, clusters'
// namespace labels, gateways' networks), else the proxy is refused with
// InvalidArgument naming the unknown network — never mapped to another view, which
// would serve it wrong endpoints; before the first push, views naming a network or
// cluster get Unavailable. A CLUSTER_ID naming no known cluster is dropped from the
// view (the unnamed network). A router's LABELS are bounded in number and size
// (InvalidArgument). Options.MaxGroups caps the groups (ResourceExhausted for a new
// view past it); groups without streams are swept by Run's timer as well as by
// pushes. A unary Fetch of a view without a group is answered from a group built
// for it and not kept.
//
// eds and its sub-packages are the only packages that import go-control-plane (for
// the Envoy API types).
//
// Concurrency: the builder is pure. The Server is safe for concurrent use; its pushes
// run on one goroutine (Run), so groups are never rebuilt concurrently; a group's
// fields are guarded by Server.pushMu, and new groups are made under it when a
// proxy of a new view connects. Lock order: Server.mu and Server.pushMu are never
// held together; Server.pushMu, then xdsserver's locks (a Feed's, then a
// stream's).
package eds
